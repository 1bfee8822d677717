"""Signal, not noise, as the channel sees it: the real pipeline, outbox and sender against the fake Slack over HTTP.

One root message per root cause (a cascade arriving over two runs, with a restart in between, is one post after the
settle time; two unrelated faults are two), no thread reply for a volatile change (the file-server probe's random
object name), a storm is one root, and every message fits Slack's limits (block count, section and total text)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from bot.config import Settings
from bot.incidents.pipeline import IncidentPipeline
from bot.slack.delivery import Outbox, WebClientSender
from bot.slack.incidents.messages import SlackIncidentRenderer
from bot.slack.messages.common import MAX_MESSAGE_TEXT, block_text_length
from bot.store import Store
from tests.fakes.slack_api import validate_message
from tests.fakes.slack_history import HistoryFakeSlack
from tests.unit._incidents_support import T0, backlog, dead_worker, fileserver_down, orphaned_task, run

CHANNEL = "C0MLALERTS"


@pytest.fixture
def slack() -> Iterator[HistoryFakeSlack]:
    with HistoryFakeSlack() as fake:
        fake.add_channel("ml-alerts", channel_id=CHANNEL)
        yield fake
    assert fake.violations == []


def settings(**incidents: Any) -> Settings:
    return Settings.model_validate({"slack": {"default_channel": "#ml-alerts"}, "incidents": incidents})


def bot(db: Path, s: Settings) -> tuple[Store, Outbox, IncidentPipeline]:
    store = Store(db)
    box = Outbox(store)
    return store, box, IncidentPipeline(store, outbox=box, settings=s, renderer=SlackIncidentRenderer(),
                                        policy=s.incidents.policy())


def sender(slack: HistoryFakeSlack) -> WebClientSender:
    return WebClientSender(WebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[]))


def roots(slack: HistoryFakeSlack) -> list[dict[str, Any]]:
    return [m for m in slack.channel_messages(CHANNEL) if not m.get("thread_ts")]


def replies(slack: HistoryFakeSlack, root: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in slack.channel_messages(CHANNEL) if m.get("thread_ts") == root["ts"]]


def at_s(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def test_a_cascade_over_two_runs_and_a_restart_is_one_root_and_unrelated_faults_two(
    tmp_path: Path, slack: HistoryFakeSlack
) -> None:
    s = settings(settle="60s")
    db = tmp_path / "store.db"
    store, box, pipe = bot(db, s)
    pipe.handle_run(run(dead_worker(), started=at_s(0)), at_s(0))  # the agent dies
    box.drain(sender(slack), at_s(0))
    assert roots(slack) == []  # settling
    store.close()

    store, box, pipe = bot(db, s)  # restarted; one run later its orphaned task shows up, and an unrelated backlog
    pipe.handle_run(run(dead_worker(), orphaned_task(), backlog(), started=at_s(30)), at_s(30))
    pipe.tick(at_s(45))
    box.drain(sender(slack), at_s(45))
    assert roots(slack) == []
    pipe.tick(at_s(61))  # the agent's incident is due; the backlog's (opened at 30 s) is not yet
    box.drain(sender(slack), at_s(61))
    (agent,) = roots(slack)
    assert "Consequences (1)" in str(agent["blocks"]) and "train-t-1" in str(agent["blocks"])
    pipe.tick(at_s(91))
    box.drain(sender(slack), at_s(91))
    assert len(roots(slack)) == 2
    assert [r for r in replies(slack, agent) if "also affected" in str(r["blocks"])] == []  # no churn: one post
    store.close()


def test_a_volatile_change_earns_no_thread_reply(tmp_path: Path, slack: HistoryFakeSlack) -> None:
    """38 runs of a failing file server, each with a new random probe object and latency: 12.5 minutes without a
    single thread reply after the opening one (before: one reply per run)."""
    import uuid

    store, box, pipe = bot(tmp_path / "store.db", settings(settle="0s"))
    for i in range(38):
        now = at_s(20 * i)
        pipe.handle_run(run(fileserver_down(uuid.uuid4().hex, 400 + 13 * i), checks=("storage.fileserver",),
                            started=now), now)
        box.drain(sender(slack), now)
    (root,) = roots(slack)
    assert len(replies(slack, root)) == 1  # "Opened ... What the checks found"
    assert len(slack.calls_to("chat.update")) == 37  # the root still shows the latest evidence
    store.close()


def test_a_storm_is_one_root_and_every_message_fits(tmp_path: Path, slack: HistoryFakeSlack) -> None:
    store, box, pipe = bot(tmp_path / "store.db", settings(settle="0s", storm_threshold=10))
    workers = [dead_worker(f"gpu-node-{i:03d}:gpu{i % 8}") for i in range(101)]
    orphans = [orphaned_task(task=f"t-{i}", worker=w.subject.id) for i, w in enumerate(workers)]
    pipe.handle_run(run(*workers, *orphans, started=at_s(0)), at_s(0))
    box.drain(sender(slack), at_s(0), max_sends=1000)
    (root,) = roots(slack)
    assert str(root["text"]).startswith("🔴 [CRITICAL] Storm on prod: 202 problems started at once (101 likely causes")
    for call in slack.calls_to("chat.postMessage") + slack.calls_to("chat.update"):
        assert call.response.get("ok"), call.response
        assert validate_message(call.args) == []
        assert block_text_length(call.args.get("blocks") or []) <= MAX_MESSAGE_TEXT
    store.close()
