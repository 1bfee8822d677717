"""Shared ClearML reads: one in-flight request per collection and server, and a short freshness window.

People type the same thing at the same moment (`/clearml status` in an outage), scheduled runs and look-ups ask for
the same collections within seconds of each other, and the ClearML server (Elasticsearch, MongoDB behind it) is
often the fragile part of the platform. A `ReadWindow` (one per process, owned by the Slack app) sits between the
snapshots of all commands and runs and the ClearML client:

- a read of a collection (workers, queues, a task list with given filters, one task, ...) that is already in flight
  for the same server and credentials is not sent again: every asker awaits the one request, whatever event loop
  it runs on (commands run on the work pool's loop, scheduled runs each on a loop of their own);
- a result fetched no earlier than `window_s` before the asker's own request serves it without a call. The asker
  states how old is acceptable (`not_before`): a command accepts what was fetched at most `window_s` before it was
  typed, a scheduled run only what is fresh enough for its checks' thresholds (bot/engine/snapshot.py);
- results are never shared across servers or credentials: the key holds the API URL, the TLS setting and a hash of
  the key pair (never the keys themselves), so a snapshot taken with one identity can never answer another;
- `window_s == 0` turns the whole thing off (snapshots then fetch on their own, memoized per run only).

Errors are shared only while in flight (everybody waiting for a request that failed hears why); a failed read is
forgotten at once, so the next command asks again. All ClearML I/O still goes through bot/clearml/client.py: the
window only decides whether a snapshot's fetch function runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from bot.clearml.client import SharedLogins, credential_key
from bot.errors import BotError

if TYPE_CHECKING:
    from bot.config import ServerSettings

T = TypeVar("T")

# Done entries are pruned once there are more than this many (task look-ups and logs are keyed per task).
_PRUNE_ABOVE = 256


def server_identity(server: ServerSettings) -> str:
    """Who is asking whom: API URL, TLS verification and the key pair (hashed: the window never holds a secret).
    Two configured names for the same server and keys share; anything else never does."""
    return credential_key(server)


class _Abandoned(BotError):
    """The request's owner went away before it finished (its event loop ended): askers fetch on their own."""


@dataclass
class _Entry:
    future: concurrent.futures.Future[Any]
    sent_at: float  # monotonic: when the request was sent (the data is at least this recent)


@dataclass(frozen=True)
class Served:
    """A read's value and when it was fetched (monotonic seconds); `shared` when another asker's request made it."""

    value: Any
    sent_at: float
    shared: bool


class ReadWindow:
    """Thread-safe: entries are shared across threads and event loops through concurrent futures."""

    def __init__(self, window_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = max(0.0, float(window_s))
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, Hashable], _Entry] = {}
        self._clocks: dict[str, tuple[datetime, float]] = {}  # identity -> (server time, monotonic) of the last answer
        # What the window saved (for /metrics-minded readers and the benchmarks): requests sent, reads served.
        self.requests = 0
        self.shared = 0
        # ClearML tokens shared by the clients of commands and runs (none when the window is off: as before)
        self.logins: SharedLogins | None = SharedLogins() if self.window_s > 0 else None

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def not_before(self, max_age_s: float | None = None, *, asked_at: float | None = None) -> float:
        """The oldest send time acceptable to someone who asked at `asked_at` (default: now) and accepts data up
        to `max_age_s` old (default and ceiling: the window)."""
        age = self.window_s if max_age_s is None else max(0.0, min(max_age_s, self.window_s))
        return (self.clock() if asked_at is None else asked_at) - age

    def server_time(self, identity: str) -> datetime | None:
        """The server's clock as of now, from the last answer any snapshot of this identity got through the window:
        a command served entirely from the window has no response of its own to read the Date header from."""
        with self._lock:
            mark = self._clocks.get(identity)
        if mark is None:
            return None
        return mark[0] + timedelta(seconds=self.clock() - mark[1])

    async def read(
        self,
        identity: str,
        key: Hashable,
        fetch: Callable[[], Awaitable[T]],
        *,
        not_before: float,
        server_time: Callable[[], datetime | None] | None = None,
        data_time: Callable[[T], float | None] | None = None,
        keep: Callable[[T], bool] | None = None,
    ) -> Served:
        """`fetch()`'s value, from a request sent no earlier than `not_before` (monotonic): an answered one, one in
        flight, or a new one made here. `server_time` reads the fetching client's clock after a new request.

        `data_time(value)`: for values computed from other shared reads (a whole `status` view), the send time of
        the oldest data in it; the entry then counts as that old. (An asker joining such a computation while it
        runs accepts it by its start; the age it reports is still the data's true age.) `keep(value)` False: the
        value went to everyone waiting for it, but is not kept for later askers (a view that reports a failure)."""
        full_key = (identity, key)
        while True:
            with self._lock:
                entry = self._entries.get(full_key)
                usable = entry is not None and entry.sent_at >= not_before and not _failed(entry.future)
                if not usable:
                    entry = _Entry(concurrent.futures.Future(), self.clock())
                    # running: an asker that gives up (cancelled) can never cancel the request for the others
                    entry.future.set_running_or_notify_cancel()
                    self._entries[full_key] = entry
                    self.requests += 1
                    self._prune_locked()
                else:
                    self.shared += 1
            assert entry is not None
            if usable:
                try:
                    if entry.future.done():
                        value = entry.future.result()
                    else:
                        value = await asyncio.shield(asyncio.wrap_future(entry.future))
                except _Abandoned:
                    continue  # its owner is gone: ask again (this time perhaps as the owner)
                return Served(value, entry.sent_at, shared=True)
            value = await self._lead(identity, full_key, entry, fetch, server_time, data_time)
            if keep is not None and not keep(value):
                with self._lock:
                    if self._entries.get(full_key) is entry:
                        del self._entries[full_key]
            return Served(value, entry.sent_at, shared=False)

    async def _lead(
        self,
        identity: str,
        full_key: tuple[str, Hashable],
        entry: _Entry,
        fetch: Callable[[], Awaitable[T]],
        server_time: Callable[[], datetime | None] | None,
        data_time: Callable[[T], float | None] | None = None,
    ) -> T:
        try:
            value = await fetch()
        except BaseException as exc:
            with self._lock:
                if self._entries.get(full_key) is entry:
                    del self._entries[full_key]  # a failure is never served from the window
            entry.future.set_exception(_Abandoned() if isinstance(exc, asyncio.CancelledError) else exc)
            raise
        now = server_time() if server_time is not None else None
        if now is not None:
            with self._lock:
                self._clocks[identity] = (now, self.clock())
        oldest = data_time(value) if data_time is not None else None
        if oldest is not None:
            entry.sent_at = min(entry.sent_at, oldest)  # before the result: askers read it once it is set
        entry.future.set_result(value)
        return value

    def _prune_locked(self) -> None:
        if len(self._entries) <= _PRUNE_ABOVE:
            return
        oldest = self.clock() - self.window_s
        for k in [k for k, e in self._entries.items() if e.future.done() and e.sent_at < oldest]:
            del self._entries[k]

    def clear(self, match: Callable[[Hashable], bool] | None = None) -> None:
        """Forget answered reads (all, or those whose key `match`es): the next asker fetches. E.g. after an action
        changed the fleet."""
        with self._lock:
            self._entries = {
                k: e for k, e in self._entries.items()
                if not e.future.done() or (match is not None and not match(k[1]))
            }


def _failed(future: concurrent.futures.Future[Any]) -> bool:
    return future.done() and future.exception() is not None
