"""Calling a listener function directly, as Slack's Bolt starter template tests its listeners: a fake `ack` that
records what it was called with, the real BotServices of `create_app` on a fake Slack and the simulator, and a work
pool that holds what a listener hands over until the test releases it (so a test sees that the listener returned
without doing the slow half, then what the slow half does)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.actions import audit
from bot.config import Settings
from bot.slack.services import BotServices
from bot.slack.workpool import PoolBusyError, WorkPool
from tests.e2e.conftest import USER
from tests.fakes.slack_api import Call, FakeSlack
from tests.helpers import block_actions_body

T = TypeVar("T")
ServicesFactory = Callable[[Settings], BotServices]  # the `services_for` fixture (tests/unit/slack/conftest.py)


@dataclass
class FakeAck:
    """Bolt's `ack`: records every call; `body` is what the user sees at once (None for a bare `ack()`)."""

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))

    @property
    def body(self) -> dict[str, Any] | None:
        assert len(self.calls) == 1, f"acked {len(self.calls)} times"
        args, kwargs = self.calls[0]
        if not args and not kwargs:
            return None
        if args and isinstance(args[0], dict):
            return {**args[0], **kwargs}
        return {"text": args[0], **kwargs} if args else dict(kwargs)

    def text(self) -> str:
        """Everything the user can read in the ack's body."""
        import json

        body = self.body or {}
        return str(body.get("text", "")) + "\n" + json.dumps(body.get("blocks") or [], ensure_ascii=False)


@dataclass
class Held:
    name: str
    job: Callable[[], Awaitable[Any]]
    limited: bool
    future: concurrent.futures.Future[Any]


class HeldPool(WorkPool):
    """The real work pool (loop thread, I/O threads, slots), except that `submit` only records the job: `release()`
    runs what was handed over, and what that hands over in turn. `refuse` makes the next submits raise
    PoolBusyError, as a full pool does."""

    def __init__(self) -> None:
        super().__init__(quiet_s=0.0)
        self.held: list[Held] = []
        self.refuse = 0
        self._held_lock = threading.Lock()

    def submit(
        self, job: Callable[[], Awaitable[T]], *, name: str = "job", limited: bool = True
    ) -> concurrent.futures.Future[T]:
        with self._held_lock:
            if self.refuse > 0:
                self.refuse -= 1
                raise PoolBusyError(self.max_waiting)
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            self.held.append(Held(name, job, limited, future))
            return future

    def names(self) -> list[str]:
        with self._held_lock:
            return [h.name for h in self.held]

    def release(self, timeout: float = 30.0) -> list[str]:
        """Run every held job to its end (a job's failure fails the test); returns the names of the jobs run."""
        ran: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            with self._held_lock:
                batch, self.held = self.held, []
            if not batch:
                return ran
            for held in batch:
                real = super().submit(held.job, name=held.name, limited=held.limited)
                held.future.set_result(real.result(max(0.1, deadline - time.monotonic())))
                ran.append(held.name)


def button_body(
    action_id: str,
    value: str,
    *,
    user: str = USER,
    channel: str = "C0GENERAL",
    message_ts: str = "1700000000.000100",
    block_id: str = "b1",
    response_url: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A `block_actions` payload as Slack sends it for a button in a channel message, and its one action."""
    body = block_actions_body(
        action_id, value, user=user, channel=channel, message_ts=message_ts, block_id=block_id,
        response_url=response_url or "", action_ts="1700000001.000200",
        blocks=blocks if blocks is not None else [
            {"type": "actions", "block_id": block_id,
             "elements": [{"type": "button", "action_id": action_id, "value": value,
                           "text": {"type": "plain_text", "text": "Do it"}}]}],
    )
    return body, body["actions"][0]


def private_notes(slack: FakeSlack, response_url: str) -> list[Call]:
    """What reached the clicking user alone through the click's `response_url` (ephemeral), in order."""
    url_id = response_url.rsplit("/", 1)[-1]
    return [c for c in slack.responses
            if c.args.get("_url_id") == url_id and c.args.get("response_type") == "ephemeral"]


def channel_writes(slack: FakeSlack) -> list[Call]:
    """Messages everybody in a channel could see (posted or edited by the bot)."""
    return slack.calls_to("chat.postMessage") + slack.calls_to("chat.update")


def audit_rows(services: BotServices, n: int = 10) -> list[dict[str, Any]]:
    """Newest first, read on the work pool's loop thread (the one that owns the actions' store connection)."""
    store = services.action_store or services.store
    return services.on_loop(lambda: audit.recent(store, n))  # type: ignore[no-any-return]
