"""The outbox against a fake Slack Web API over real HTTP, through a real slack_sdk WebClient.

Slack answers 429 with Retry-After and 500 for a while, then recovers: exactly one root message per incident,
every thread reply once and in order, every root edit in order, the last one showing the final state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.config import Settings
from bot.incidents.pipeline import IncidentPipeline
from bot.slack.delivery import Outbox, WebClientSender
from bot.store import Store
from tests.fakes.slack_api import Call
from tests.fakes.slack_history import HistoryFakeSlack
from tests.unit._incidents_support import at, backlog, dead_worker, orphaned_task, run, storage_down, upload_failure


@pytest.fixture
def slack() -> Iterator[HistoryFakeSlack]:
    with HistoryFakeSlack() as fake:
        fake.add_channel("ml-alerts", channel_id="C0MLALERTS")
        fake.add_channel("secret-ops", private=True, member=False)
        yield fake


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.db")
    yield s
    s.close()


def client(slack: HistoryFakeSlack, timeout: float = 5) -> WebClient:
    # No retry handlers: the outbox owns retries (see WebClientSender).
    return WebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[], timeout=timeout)  # type: ignore[arg-type]


def key_of(call: Call) -> str | None:
    metadata = call.args.get("metadata") or {}
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return (metadata.get("event_payload") or {}).get("outbox_key")


def seq_of(key: str) -> int:
    return int(key.split(":")[2])


def drain_until_empty(box: Outbox, sender: WebClientSender, now: datetime, step_s: float = 5) -> datetime:
    for _ in range(500):
        report = box.drain(sender, now)
        if report.pending == 0:
            return now
        now = max(now + timedelta(seconds=step_s), report.next_due or now)
    raise AssertionError(f"outbox did not drain: {box.depth()} left")


def test_incidents_survive_a_429_and_500_storm(slack: HistoryFakeSlack, store: Store) -> None:
    box = Outbox(store)
    sender = WebClientSender(client(slack))
    pipe = IncidentPipeline(store, outbox=box, settings=Settings.model_validate(
        {"slack": {"default_channel": "#ml-alerts"}}))

    # Slack is in a bad way from the start: rate limited, then erroring.
    slack.fail("chat.postMessage", status=429, retry_after=20, times=2)
    slack.fail("*", status=500, times=6)

    t0 = at(0)
    scenario = [
        [dead_worker(), orphaned_task(), backlog(length=60), storage_down(), upload_failure("t-7")],
        [dead_worker(), orphaned_task(), backlog(length=70), storage_down(), upload_failure("t-7")],
        [dead_worker(), orphaned_task(), backlog(length=400), storage_down(), upload_failure("t-7"),
         upload_failure("t-8")],
        [dead_worker(), orphaned_task(), backlog(length=400, severity="critical"), storage_down()],
        [backlog(length=900, severity="critical")],  # worker and storage fixed
        [],  # all clear
    ]
    now = t0
    calls_before_pause = None
    for minute, findings in enumerate(scenario):
        now = t0 + timedelta(minutes=minute)
        pipe.handle_run(run(*findings, started=now), now)
        report = box.drain(sender, now)
        if report.paused_until is not None and calls_before_pause is None:
            # Retry-After is honoured: nothing at all is sent before it has passed.
            calls_before_pause = len(slack.calls)
            assert report.paused_until == now + timedelta(seconds=20)
            box.drain(sender, now + timedelta(seconds=19))
            assert len(slack.calls) == calls_before_pause
        # a few more attempts within the minute, as the worker thread would make
        for second in (10, 25, 40):
            box.drain(sender, now + timedelta(seconds=second))
    assert calls_before_pause is not None
    drain_until_empty(box, sender, now + timedelta(minutes=1))
    assert box.failed() == []
    assert any(c.status == 429 for c in slack.calls) and any(c.status == 500 for c in slack.calls)

    incidents = pipe.tracker.list_incidents("all")
    assert sorted(i.anchor.kind for i in incidents) == ["queue", "storage", "worker"]
    assert all(i.status == "resolved" for i in incidents)

    posted = [c for c in slack.calls_to("chat.postMessage") if c.ok]
    roots = [key_of(c) for c in posted if not c.args.get("thread_ts")]
    assert sorted(roots) == sorted(f"incident:{i.id}:root" for i in incidents), "exactly one root per incident"
    top_level = [m for m in slack.channel_messages("C0MLALERTS") if not m.get("thread_ts")]
    assert len(top_level) == len(incidents)

    for incident in incidents:
        root_ts = box.get(f"incident:{incident.id}:root")["ts"]  # type: ignore[index]
        prefix = f"incident:{incident.id}:"
        replies = [c for c in posted if (key_of(c) or "").startswith(prefix) and c.args.get("thread_ts")]
        assert all(c.args["thread_ts"] == root_ts for c in replies)
        reply_keys = [key_of(c) for c in replies]
        assert len(reply_keys) == len(set(reply_keys)), "no thread reply twice"
        assert [seq_of(k) for k in reply_keys] == sorted(seq_of(k) for k in reply_keys), "replies in order"
        expected_replies = [
            r[0] for r in store.db.execute(
                "SELECT key FROM outbox WHERE kind = 'reply' AND key LIKE ? ORDER BY id", (prefix + "%",)
            ).fetchall()
        ]
        assert reply_keys == expected_replies, "every reply delivered"
        edits = [c for c in slack.calls_to("chat.update") if c.ok and c.args.get("ts") == root_ts]
        assert edits, "the root was edited"
        texts = [c.args["text"] for c in edits]
        assert texts[-1].startswith("✅ [RESOLVED]"), "the last edit shows the final state"
        assert all(c.args["channel"] == "C0MLALERTS" for c in edits)  # chat.update needs the id
        final = slack.message("C0MLALERTS", root_ts)
        assert final is not None and final["text"] == texts[-1]

    # The worker's thread tells its story in order: opened, also affected, ..., resolved.
    worker = next(i for i in incidents if i.anchor.kind == "worker")
    thread = [m["text"] for m in slack.channel_messages("C0MLALERTS")
              if m.get("thread_ts") == box.get(f"incident:{worker.id}:root")["ts"]]  # type: ignore[index]
    assert thread[0].startswith("Opened") and thread[-1].endswith("Resolved after 4m (1 clean run)")


def test_a_timed_out_post_that_reached_slack_is_not_posted_again(slack: HistoryFakeSlack, store: Store) -> None:
    box = Outbox(store)
    sender = WebClientSender(client(slack, timeout=0.3))
    box.enqueue("note-1", "#ml-alerts", "post", {"text": "hello"}, now=at(0))
    slack.latency["chat.postMessage"] = 0.6  # Slack posts it, but answers too late
    report = box.drain(sender, at(0))
    assert report.retried == 1 and "TimeoutError" in report.errors[0]
    slack.wait_for("chat.postMessage", 1)
    slack.latency.clear()
    report = box.drain(sender, at(10))
    assert report.sent == 1 and report.reconciled == 1
    assert len([m for m in slack.channel_messages("C0MLALERTS")]) == 1
    assert box.get("note-1")["ts"] == slack.channel_messages("C0MLALERTS")[0]["ts"]  # type: ignore[index]
    assert [c.method for c in slack.calls] == ["chat.postMessage", "conversations.list", "conversations.history"]


def test_channel_problems_fail_with_a_clear_reason_and_others_go_on(slack: HistoryFakeSlack, store: Store) -> None:
    box = Outbox(store)
    sender = WebClientSender(client(slack))
    box.enqueue("a", "#no-such-channel", "post", {"text": "a"}, now=at(0))
    box.enqueue("a-reply", "#no-such-channel", "reply", {"text": "a2"}, root_key="a", now=at(0))
    box.enqueue("b", "#secret-ops", "post", {"text": "b"}, now=at(0))
    box.enqueue("c", "#ml-alerts", "post", {"text": "c"}, now=at(0))
    report = box.drain(sender, at(0))
    assert report.sent == 1 and report.failed == 3
    failed = {r["key"]: r["last_error"] for r in box.failed()}
    assert failed["a"].startswith("channel_not_found: channel #no-such-channel was not found")
    assert failed["b"].startswith("not_in_channel: the bot is not a member of #secret-ops: invite it")
    assert "its root message a failed" in failed["a-reply"]
    # The bot is invited; a retry delivers.
    slack.channels[next(cid for cid, ch in slack.channels.items() if ch.name == "secret-ops")].member = True
    assert box.retry_failed(channel="#secret-ops", now=at(1)) == 1
    assert box.drain(sender, at(1)).sent == 1


def test_updates_and_ephemeral_messages(slack: HistoryFakeSlack, store: Store) -> None:
    box = Outbox(store)
    sender = WebClientSender(client(slack))
    box.enqueue("run:1", "#ml-alerts", "post", {"text": "running…"}, now=at(0))
    box.enqueue("run:1:done", "#ml-alerts", "update", {"text": "done", "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*done*"}}]}, root_key="run:1", now=at(0))
    box.enqueue("eph", "#ml-alerts", "ephemeral", {"text": "only you", "user": "U0ALICE"}, now=at(0))
    box.drain(sender, at(0))
    (message,) = slack.channel_messages("C0MLALERTS")
    assert message["text"] == "done" and message["blocks"][0]["text"]["text"] == "*done*"
    (eph,) = slack.calls_to("chat.postEphemeral")
    assert eph.args["user"] == "U0ALICE" and box.get("eph")["status"] == "sent"  # type: ignore[index]


def test_secrets_never_reach_slack_nor_the_outbox_table(slack: HistoryFakeSlack, store: Store) -> None:
    """Redaction happens once, where the row is written: neither SQLite nor Slack ever holds the secret (a known
    one, and a credential-looking one), whether the message came from the incident pipeline or was queued as is."""
    secret = "SIMSECRET-planted-0f9e8d"
    box = Outbox(store, secrets=lambda: [secret])
    pipe = IncidentPipeline(store, outbox=box, settings=Settings.model_validate(
        {"slack": {"default_channel": "#ml-alerts"}}))
    leaky = dead_worker().model_copy(update={"title": f"Worker gpu-3 silent, its key {secret}",
                                             "remediation": "Rotate it: see s3://AKIA:hunter2-0f9e8d@bucket/x"})
    pipe.handle_run(run(leaky, started=at(0)), at(0))
    box.enqueue("leak", "#ml-alerts", "post", {"text": f"key {secret}", "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"see s3://AKIA:{secret}@bucket/x"}}]}, now=at(0))
    rows = [r[0] for r in store.db.execute("SELECT payload FROM outbox")]
    assert len(rows) >= 2 and not [r for r in rows if secret in r or "hunter2" in r]
    drain_until_empty(box, WebClientSender(client(slack)), at(0))
    calls = slack.calls_to("chat.postMessage")
    blob = "\n".join(c.text_blob for c in calls)
    assert secret not in blob and "hunter2" not in blob and "[REDACTED]" in blob
    assert "Worker gpu-3 silent" in blob  # the message itself went out
    assert [key_of(c) for c in calls if key_of(c) == "leak"] == ["leak"]  # the dedupe key in the metadata is kept
