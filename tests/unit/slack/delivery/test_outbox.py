"""The durable outbox with a scripted sender and a controlled clock: order, retries, Retry-After, permanent
errors, roots before replies, superseded updates, and crash recovery without double posts."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.slack_response import SlackResponse

from bot.slack.delivery import Outbox, OutboxError, OutboxMessage, OutboxWorker, SendResult
from bot.store import Store
from tests.unit._incidents_support import T0


def slack_error(error: str, status: int = 200, headers: dict[str, str] | None = None) -> SlackApiError:
    response = SlackResponse(client=None, http_verb="POST", api_url="http://fake/api/chat.postMessage", req_args={},
                             data={"ok": False, "error": error}, headers=headers or {}, status_code=status)
    return SlackApiError("The request to the Slack API failed.", response)


class ScriptedSender:
    """Answers like Slack (fresh ts per post, channel ids for names) unless a failure is scripted."""

    def __init__(self) -> None:
        self.calls: list[OutboxMessage] = []
        self.failures: dict[str, list[Exception]] = {}  # channel -> exceptions to raise next, in order
        self.on_slack: dict[str, str] = {}  # outbox key -> ts of what "Slack" has (for find_posted)
        self.lookups = 0
        self._n = 0

    def fail(self, channel: str, *errors: Exception) -> None:
        self.failures.setdefault(channel, []).extend(errors)

    def __call__(self, message: OutboxMessage) -> SendResult:
        self.calls.append(message)
        queue = self.failures.get(message.channel)
        if queue:
            raise queue.pop(0)
        if message.kind == "update":
            return SendResult(ts=message.target_ts, channel=message.channel_id)
        self._n += 1
        ts = f"1700000000.{self._n:06d}"
        self.on_slack[message.key] = ts
        return SendResult(ts=ts, channel="C0" + message.channel.lstrip("#").upper().replace("-", ""))

    def find_posted(self, message: OutboxMessage, since: datetime) -> SendResult | None:
        self.lookups += 1
        ts = self.on_slack.get(message.key)
        return SendResult(ts=ts, channel="C0FOUND") if ts else None

    def sent(self) -> list[tuple[str, str, str]]:
        return [(m.kind, m.channel, m.text) for m in self.calls]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store.db")
    yield s  # type: ignore[misc]
    s.close()


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def text(s: str) -> dict[str, Any]:
    return {"text": s}


def test_dedupe_key_makes_enqueue_idempotent(store: Store) -> None:
    box = Outbox(store)
    assert box.enqueue("k1", "#ml-alerts", "post", text("hello"), now=t(0)) is True
    assert box.enqueue("k1", "#ml-alerts", "post", text("hello again"), now=t(1)) is False
    sender = ScriptedSender()
    box.drain(sender, t(2))
    box.drain(sender, t(3))
    assert sender.sent() == [("post", "#ml-alerts", "hello")]
    assert box.enqueue("k1", "#ml-alerts", "post", text("after it was sent"), now=t(4)) is False


def test_bad_messages_are_refused_at_enqueue(store: Store) -> None:
    box = Outbox(store)
    with pytest.raises(OutboxError, match="text"):
        box.enqueue("a", "#c", "post", {"text": " "})
    with pytest.raises(OutboxError, match="root_key"):
        box.enqueue("b", "#c", "update", text("x"))
    with pytest.raises(OutboxError, match="user"):
        box.enqueue("c", "#c", "ephemeral", text("x"))
    with pytest.raises(OutboxError, match="kind"):
        box.enqueue("d", "#c", "shout", text("x"))  # type: ignore[arg-type]


def test_replies_and_updates_use_the_roots_ts_and_channel_id(store: Store) -> None:
    box = Outbox(store)
    # Queued before the root is even attempted: they wait for it.
    box.enqueue("root", "#ml-alerts", "post", text("root"), now=t(0))
    box.enqueue("r1", "#ml-alerts", "reply", text("reply"), root_key="root", now=t(0))
    box.enqueue("u1", "#ml-alerts", "update", text("root v2"), root_key="root", now=t(0))
    sender = ScriptedSender()
    sender.fail("#ml-alerts", slack_error("internal_error", 500))
    report = box.drain(sender, t(0))
    assert report.retried == 1 and report.sent == 0 and report.next_due == t(1)
    report = box.drain(sender, t(1))
    assert report.sent == 3 and report.pending == 0
    _root, reply, upd = sender.calls[1:]
    assert reply.thread_ts == root_ts(box, "root") and reply.channel_id == "C0MLALERTS"
    assert upd.target_ts == root_ts(box, "root") and upd.channel_id == "C0MLALERTS"
    assert box.message_ref("root") == ("C0MLALERTS", "1700000000.000001")


def root_ts(box: Outbox, key: str) -> str:
    row = box.get(key)
    assert row is not None
    return str(row["ts"])


def test_order_per_channel_and_exponential_backoff(store: Store) -> None:
    box = Outbox(store)
    for i in range(3):
        box.enqueue(f"a{i}", "#a", "post", text(f"a{i}"), now=t(0))
        box.enqueue(f"b{i}", "#b", "post", text(f"b{i}"), now=t(0))
    sender = ScriptedSender()
    sender.fail("#a", slack_error("internal_error", 500), slack_error("http_503", 503), TimeoutError("read timed out"))
    box.drain(sender, t(0))
    # #b is not held up by #a's trouble; #a's later messages wait behind its first.
    assert [m.text for m in sender.calls if m.channel == "#b"] == ["b0", "b1", "b2"]
    waits = []
    now = t(0)
    for _ in range(3):
        row = box.get("a0")
        assert row is not None
        due = datetime.fromisoformat(row["next_attempt_at"])
        waits.append((due - now).total_seconds())
        assert box.drain(sender, due - timedelta(milliseconds=1)).sent == 0  # not before it is due
        now = due
        box.drain(sender, now)
    assert waits == [1.0, 2.0, 4.0]  # 1s, 2s, 4s: doubling
    assert [m.text for m in sender.calls if m.channel == "#a"][-3:] == ["a0", "a1", "a2"]
    assert box.get("a0")["attempts"] == 4 and box.get("a2")["attempts"] == 1


def test_429_honours_retry_after_for_the_whole_outbox(store: Store) -> None:
    box = Outbox(store)
    box.enqueue("a", "#a", "post", text("a"), now=t(0))
    box.enqueue("b", "#b", "post", text("b"), now=t(0))
    sender = ScriptedSender()
    sender.fail("#a", slack_error("ratelimited", 429, {"Retry-After": "30"}))
    report = box.drain(sender, t(0))
    assert report.sent == 0 and report.paused_until == t(30) and report.next_due == t(30)
    # Slack's limits are per method and workspace: nothing goes out before Retry-After, #b included.
    assert box.drain(sender, t(29)).sent == 0
    assert len(sender.calls) == 1
    assert box.drain(sender, t(30)).sent == 2


def test_permanent_errors_fail_with_a_reason_and_take_their_thread_along(store: Store) -> None:
    box = Outbox(store)
    box.enqueue("root", "#gone", "post", text("root"), now=t(0))
    box.enqueue("reply", "#gone", "reply", text("reply"), root_key="root", now=t(0))
    box.enqueue("other", "#fine", "post", text("other"), now=t(0))
    sender = ScriptedSender()
    sender.fail("#gone", slack_error("channel_not_found"))
    report = box.drain(sender, t(0))
    assert report.failed == 2 and report.sent == 1
    root, reply = box.get("root"), box.get("reply")
    assert root is not None and reply is not None
    assert root["status"] == "failed" and "channel #gone was not found" in root["last_error"]
    assert reply["status"] == "failed" and "its root message root failed: channel_not_found" in reply["last_error"]
    assert [r["key"] for r in box.failed()] == ["reply", "root"]
    # Fixed (bot invited): a retry sends them, in order.
    assert box.retry_failed(channel="#gone", now=t(10)) == 2
    box.drain(sender, t(10))
    assert [m.key for m in sender.calls[-2:]] == ["root", "reply"]


def test_invalid_auth_pauses_the_outbox(store: Store) -> None:
    box = Outbox(store, auth_pause_s=300)
    box.enqueue("a", "#a", "post", text("a"), now=t(0))
    box.enqueue("b", "#b", "post", text("b"), now=t(0))
    sender = ScriptedSender()
    sender.fail("#a", slack_error("invalid_auth"))
    report = box.drain(sender, t(0))
    assert report.failed == 0 and report.paused_until == t(300)
    assert box.get("a")["status"] == "failed" and "SLACK_BOT_TOKEN" in box.get("a")["last_error"]
    assert box.get("b")["status"] == "pending" and box.last_auth_error is not None


def test_unknown_errors_give_up_after_some_attempts_and_transient_ones_after_max_age(store: Store) -> None:
    box = Outbox(store, max_unknown_attempts=2, max_age_s=60)
    box.enqueue("odd", "#a", "post", text("a"), now=t(0))
    box.enqueue("flaky", "#b", "post", text("b"), now=t(0))
    sender = ScriptedSender()
    sender.fail("#a", *[slack_error("something_new")] * 5)
    sender.fail("#b", *[slack_error("internal_error", 500)] * 50)
    now = t(0)
    for _ in range(12):
        box.drain(sender, now)
        now += timedelta(seconds=16)
    assert box.get("odd")["status"] == "failed" and "after 2 attempts" in box.get("odd")["last_error"]
    assert box.get("flaky")["status"] == "failed" and "gave up after" in box.get("flaky")["last_error"]


def test_a_newer_update_supersedes_a_queued_one(store: Store) -> None:
    box = Outbox(store)
    sender = ScriptedSender()
    box.enqueue("root", "#a", "post", text("v1"), now=t(0))
    box.drain(sender, t(0))
    sender.fail("#a", slack_error("ratelimited", 429, {"Retry-After": "10"}))
    box.enqueue("u2", "#a", "update", text("v2"), root_key="root", supersede=True, now=t(1))
    box.drain(sender, t(1))  # attempted, rate limited: may be on Slack, is not superseded
    box.enqueue("u3", "#a", "update", text("v3"), root_key="root", supersede=True, now=t(2))
    box.enqueue("u4", "#a", "update", text("v4"), root_key="root", supersede=True, now=t(3))
    assert box.get("u3")["status"] == "superseded" and box.get("u2")["status"] == "pending"
    box.drain(sender, t(11))
    assert [m.text for m in sender.calls] == ["v1", "v2", "v2", "v4"]


def test_crash_after_slack_accepted_is_reconciled_not_reposted(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store(path)
    box = Outbox(store)
    box.enqueue("root", "#a", "post", text("root"), now=t(0))
    box.enqueue("reply", "#a", "reply", text("reply"), root_key="root", now=t(0))
    box.enqueue("eph", "#b", "ephemeral", {"text": "just for you", "user": "U1"}, now=t(0))
    sender = ScriptedSender()

    class Killed(BaseException):
        """Stands in for kill -9 between Slack's answer and our commit."""

    def dying(message: OutboxMessage) -> SendResult:
        sender(message)
        raise Killed

    with pytest.raises(Killed):
        box.drain(dying, t(0))
    store2 = Store(path)  # the restarted process (the old connection is simply abandoned)
    box2 = Outbox(store2)
    assert box2.get("root")["uncertain"] == 1 or box2.get("eph")["uncertain"] == 1
    report = box2.drain(sender, t(5))
    posts = [m for m in sender.calls if m.key == "root"]
    assert len(posts) == 1, "the root was posted once, before the crash, and only found afterwards"
    assert report.reconciled == 1
    assert box2.get("root")["status"] == "sent" and box2.get("root")["ts"] == sender.on_slack["root"]
    assert box2.get("reply")["status"] == "sent"
    store2.close()


def test_crash_before_slack_got_it_sends_once(store: Store) -> None:
    box = Outbox(store)
    box.enqueue("root", "#a", "post", text("root"), now=t(0))
    store.db.execute("UPDATE outbox SET status = 'sending', attempts = 1")  # died during the call, nothing posted
    box2 = Outbox(store)
    sender = ScriptedSender()
    assert box2.drain(sender, t(1)).sent == 1
    assert sender.lookups == 1 and len(sender.calls) == 1


def test_uncertain_ephemeral_is_dropped_and_unverifiable_can_fail(store: Store) -> None:
    box = Outbox(store, unverifiable="fail")
    box.enqueue("eph", "#a", "ephemeral", {"text": "x", "user": "U1"}, now=t(0))
    box.enqueue("post", "#b", "post", text("y"), now=t(0))
    store.db.execute("UPDATE outbox SET status = 'sending'")
    box2 = Outbox(store, unverifiable="fail")

    def no_lookup(message: OutboxMessage) -> SendResult:
        raise AssertionError("must not send")

    report = box2.drain(no_lookup, t(1))
    assert report.failed == 2
    assert "ephemeral" in box2.get("eph")["last_error"] and "restart" in box2.get("post")["last_error"]


def test_worker_thread_drains_on_enqueue(store: Store) -> None:
    box = Outbox(store)
    done = threading.Event()
    sender = ScriptedSender()

    def signalling(message: OutboxMessage) -> SendResult:
        result = sender(message)
        done.set()
        return result

    worker = OutboxWorker(box, signalling, idle_s=30)
    worker.start()
    try:
        box.enqueue("k", "#a", "post", text("hi"))
        assert done.wait(5), "the enqueue should wake the worker at once, not after idle_s"
    finally:
        worker.stop()
    assert box.depth() == 0 and sender.sent() == [("post", "#a", "hi")]
