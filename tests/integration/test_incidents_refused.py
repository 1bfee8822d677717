"""A channel that refuses an incident's root (`not_in_channel`: a private channel the bot was not invited to):
the root goes to the default channel meanwhile, saying why, and moves to the routed channel once the bot is invited
(also across a restart). Against the fake Slack over HTTP, through the real outbox and sender."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.config import Settings
from bot.incidents.pipeline import IncidentPipeline, incident_router
from bot.slack.delivery import Outbox, WebClientSender
from bot.slack.incidents.messages import SlackIncidentRenderer
from bot.slack.incidents.service import bot_is_member
from bot.store import Store
from tests.fakes.slack_history import HistoryFakeSlack
from tests.unit._incidents_support import at, backlog, run

ALERTS = "C0MLALERTS"
SETTINGS = Settings.model_validate({"slack": {"default_channel": "#ml-alerts",
                                              "routes": [{"severity": "critical", "channel": "#ml-oncall"}]}})


@pytest.fixture
def slack() -> Iterator[HistoryFakeSlack]:
    with HistoryFakeSlack() as fake:
        fake.add_channel("ml-alerts", channel_id=ALERTS)
        yield fake


def text(message: dict[str, object]) -> str:
    return f"{message.get('text')}\n{json.dumps(message.get('blocks'), ensure_ascii=False)}"


def test_a_refused_root_falls_back_then_moves_after_the_invite(tmp_path: Path, slack: HistoryFakeSlack) -> None:
    oncall = slack.add_channel("ml-oncall", private=True, member=False, channel_id="G0MLONCALL")
    client = WebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[])
    sender = WebClientSender(client)

    def can_post(channel: str) -> bool:
        return bot_is_member(client, sender, channel)

    def bot(db: Path) -> tuple[Store, Outbox, IncidentPipeline]:
        store = Store(db)
        box = Outbox(store)
        pipe = IncidentPipeline(store, outbox=box, settings=SETTINGS, router=incident_router(SETTINGS),
                                renderer=SlackIncidentRenderer())
        return store, box, pipe

    db = tmp_path / "store.db"
    store, box, pipe = bot(db)
    pipe.handle_run(run(backlog(severity="critical"), started=at(0)), at(0))
    report = box.drain(sender, at(0))
    assert report.failed == 2 and "not_in_channel" in report.errors[0]  # the root, and its thread reply with it
    assert slack.channel_messages(oncall.id) == [] and slack.channel_messages(ALERTS) == []

    # the next tick: posted in the default channel, saying why, with its thread
    pipe.tick(at(0.5), can_post=can_post)
    box.drain(sender, at(0.5))
    (root,) = [m for m in slack.channel_messages(ALERTS) if not m.get("thread_ts")]
    assert "cannot post in #ml-oncall" in text(root) and "not_in_channel" in text(root) and "/invite" in text(root)
    thread = [m for m in slack.channel_messages(ALERTS) if m.get("thread_ts") == root["ts"]]
    assert len(thread) == 1 and "Opened" in text(thread[0])
    view = pipe.tracker.get(1)
    assert view is not None and view.channel == "#ml-alerts" and view.refused_channel == "#ml-oncall"

    # not invited yet: nothing moves, and the check is not repeated every tick
    pipe.tick(at(6), can_post=can_post)
    box.drain(sender, at(6))
    assert slack.channel_messages(oncall.id) == []
    infos = len(slack.calls_to("conversations.info"))
    pipe.tick(at(7), can_post=can_post)
    assert len(slack.calls_to("conversations.info")) == infos
    store.close()

    # someone invites the bot; the bot restarted meanwhile
    oncall.member = True
    store, box, pipe = bot(db)
    pipe.tick(at(12), can_post=can_post)
    box.drain(sender, at(12))
    (moved,) = [m for m in slack.channel_messages(oncall.id) if not m.get("thread_ts")]
    assert "[CRITICAL]" in str(moved["text"]) and "cannot post" not in text(moved)
    moved_thread = [m for m in slack.channel_messages(oncall.id) if m.get("thread_ts") == moved["ts"]]
    assert moved_thread and "Moved here from #ml-alerts" in text(moved_thread[0])
    old = slack.message(ALERTS, root["ts"])
    assert old is not None and "moved to #ml-oncall" in text(old) and "actions" not in json.dumps(old["blocks"])
    assert any("moved to #ml-oncall" in text(m) for m in slack.channel_messages(ALERTS) if m.get("thread_ts"))

    # from now on the incident lives in #ml-oncall: edits and the resolution go to the new root
    pipe.handle_run(run(backlog(severity="critical", length=600), started=at(13)), at(13))
    pipe.handle_run(run(started=at(14)), at(14))
    box.drain(sender, at(14) + timedelta(seconds=1))
    assert str(slack.message(oncall.id, moved["ts"])["text"]).startswith("✅ [RESOLVED]")  # type: ignore[index]
    assert len([m for m in slack.channel_messages(oncall.id) if not m.get("thread_ts")]) == 1
    assert len([m for m in slack.channel_messages(ALERTS) if not m.get("thread_ts")]) == 1
    # the only failure left is the refused attempt itself, kept under its retired key
    failed = store.db.execute("SELECT key FROM outbox WHERE status = 'failed'").fetchall()
    assert [k for (k,) in failed] == [f"incident:1:root:refused:{1}"]
    assert slack.violations == []
    store.close()


def test_no_default_channel_leaves_the_refused_root_failed_and_says_so(tmp_path: Path, slack: HistoryFakeSlack
                                                                       ) -> None:
    slack.add_channel("ml-oncall", private=True, member=False)
    settings = Settings.model_validate({"slack": {"routes": [{"channel": "#ml-oncall"}]}})
    store = Store(tmp_path / "store.db")
    box = Outbox(store)
    pipe = IncidentPipeline(store, outbox=box, settings=settings, router=incident_router(settings),
                            fallback=lambda: None)
    pipe.handle_run(run(backlog(), started=at(0)), at(0))
    sender = WebClientSender(WebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[]))
    box.drain(sender, at(0))
    pipe.tick(at(1))
    row = box.get("incident:1:root")
    assert row is not None and row["status"] == "failed" and "invite it there" in row["last_error"]
    store.close()


def test_many_incidents_waiting_for_one_channel_ask_slack_once_per_check(tmp_path: Path,
                                                                         slack: HistoryFakeSlack) -> None:
    slack.add_channel("ml-oncall", private=True, member=False)
    client = WebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[])
    sender = WebClientSender(client)
    store = Store(tmp_path / "store.db")
    box = Outbox(store)
    pipe = IncidentPipeline(store, outbox=box, settings=SETTINGS, router=incident_router(SETTINGS))
    pipe.handle_run(run(*[backlog(queue=f"q-{i}", severity="critical") for i in range(5)], started=at(0)), at(0))
    box.drain(sender, at(0))
    pipe.tick(at(0.5), can_post=lambda ch: bot_is_member(client, sender, ch))
    box.drain(sender, at(0.5))
    assert len([m for m in slack.channel_messages(ALERTS) if not m.get("thread_ts")]) == 5
    pipe.tick(at(6), can_post=lambda ch: bot_is_member(client, sender, ch))
    assert len(slack.calls_to("conversations.info")) == 1
    store.close()
