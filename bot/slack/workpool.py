"""The bot's own work pool: slow work (ClearML look-ups, playbook runs, Slack posts) runs here, after the ack.

Bolt acknowledges a request only when the listener calls `ack()`; if listeners did slow work, Bolt's thread pool
(5 threads) would fill up with 30 people typing at once and later requests would miss Slack's 3-second deadline.
So listeners only parse, ack and `submit()`; the work runs on one asyncio loop in a dedicated thread (the ClearML
client is async), at most `max_concurrent` jobs at a time, and blocking Slack writes go to a small thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from bot.errors import BotError

log = logging.getLogger(__name__)
T = TypeVar("T")


class PoolBusyError(BotError):
    """Too many jobs waiting: the caller tells the user to retry rather than queueing without bound."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} jobs waiting")
        self.waiting = waiting


class WorkPool:
    def __init__(
        self,
        *,
        max_concurrent: int = 16,
        max_waiting: int = 200,
        io_threads: int = 8,
        quiet_s: float = 0.0,
        max_defer_s: float = 0.1,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        # Acks first: a job starts once no other job was submitted for `quiet_s` (at most `max_defer_s` after its
        # own submission), so in a burst of commands the listeners' acks do not share the CPU with the jobs'
        # work (Slack posts, parsing, rendering). 0: start at once.
        self.quiet_s = quiet_s
        self.max_defer_s = max_defer_s
        self._last_submit = 0.0
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="slack-io")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sem: asyncio.Semaphore | None = None
        self._lock = threading.Lock()
        self._pending = 0  # submitted and not finished (running + waiting for the semaphore)
        self._futures: set[concurrent.futures.Future[Any]] = set()

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> WorkPool:
        if self._thread is not None:
            return self
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._sem = asyncio.Semaphore(self.max_concurrent)
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="bot-work-loop", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Let running jobs finish for up to `timeout` seconds, then cancel the rest and stop the loop."""
        if self._loop is None or self._thread is None:
            return
        with self._lock:
            futures = list(self._futures)
        if futures:
            concurrent.futures.wait(futures, timeout=timeout)
        for fut in futures:
            fut.cancel()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._io.shutdown(wait=False, cancel_futures=True)
        self._loop, self._thread = None, None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pending(self) -> int:
        return self._pending

    # -- work -------------------------------------------------------------------------------------------------
    def slot(self) -> asyncio.Semaphore:
        """One of the `max_concurrent` slots, for a job submitted with `limited=False` to hold only around the part
        that asks ClearML (`async with pool.slot(): ...`): its Slack posts then never wait for a slot."""
        assert self._sem is not None, "WorkPool.start() was not called"
        return self._sem

    def submit(
        self, job: Callable[[], Awaitable[T]], *, name: str = "job", limited: bool = True
    ) -> concurrent.futures.Future[T]:
        """Schedule `job()` on the loop; returns at once. Raises PoolBusyError when too much is waiting. A `limited`
        job holds one of the `max_concurrent` slots while it runs; others take one themselves (`slot()`)."""
        if self._loop is None:
            raise RuntimeError("WorkPool.start() was not called")
        with self._lock:
            if self._pending >= self.max_concurrent + self.max_waiting:
                raise PoolBusyError(self._pending - self.max_concurrent)
            self._pending += 1
            submitted = self._last_submit = time.monotonic()

        async def guarded() -> T:
            assert self._sem is not None
            try:
                await self._quiet(submitted)
                if not limited:
                    return await job()
                async with self._sem:
                    return await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", name)
                raise

        fut = asyncio.run_coroutine_threadsafe(guarded(), self._loop)
        with self._lock:
            self._futures.add(fut)

        def done(f: concurrent.futures.Future[T]) -> None:
            with self._lock:
                self._pending -= 1
                self._futures.discard(f)

        fut.add_done_callback(done)
        return fut

    async def _quiet(self, submitted: float) -> None:
        """Wait until submissions paused for `quiet_s`, or `max_defer_s` passed since `submitted`."""
        while self.quiet_s > 0:
            now = time.monotonic()
            wait = min(self._last_submit + self.quiet_s, submitted + self.max_defer_s) - now
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (a Slack write with its retry sleeps) off the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: fn(*args, **kwargs))

    def run_sync(self, job: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None) -> T:
        """Run a job and wait for it (for callers on other threads that need the result, e.g. health checks)."""
        if self._loop is None:
            raise RuntimeError("WorkPool.start() was not called")
        return asyncio.run_coroutine_threadsafe(job(), self._loop).result(timeout)
