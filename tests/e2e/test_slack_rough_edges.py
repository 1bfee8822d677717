"""Rough edges a new user hit (issue #16), over real HTTP: signed slash commands into the bot, ClearML answered by
the simulator, Slack's side recorded by the fake Web API."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bot.actions import audit as audit_mod
from bot.config import ActionAllow, Settings
from bot.sim.server import SimServer
from bot.slack.serve import BotServer
from bot.store import Store
from tests.e2e.conftest import USER, HttpBot, bot_env, sim_settings
from tests.fakes.slack_api import FakeSlack


def test_unsilence_is_written_to_the_audit_log(http_bot: HttpBot) -> None:
    http_bot.command("silence agents.* 1h agent upgrade")
    http_bot.slack.wait_for("chat.update", predicate=lambda c: "agents.*" in json.dumps(c.args))
    listed = json.dumps(http_bot.command("silences")[0].json())
    assert "#1" in listed and "agents.*" in listed

    body = http_bot.command("unsilence 1")[0].json()
    assert "Silence #1" in json.dumps(body) and "ended" in json.dumps(body)
    missing = http_bot.command("unsilence 7")[0].json()
    assert "no active silence #7" in json.dumps(missing)

    store = Store(http_bot.settings.store_path)
    try:
        rows = audit_mod.recent(store, 10)
    finally:
        store.close()
    by_action = [(r["action"], r["subject"], r["outcome"], r["actor_id"], r["via"]) for r in reversed(rows)]
    assert by_action == [
        ("silence", "agents.*", "ok", USER, "slack"),
        ("unsilence", "agents.*", "ok", USER, "slack"),
        ("unsilence", "#7", "refused", USER, "slack"),
    ]
    unsilenced = next(r for r in rows if r["action"] == "unsilence" and r["outcome"] == "ok")
    assert unsilenced["params"]["id"] == 1
    # and `/clearml audit` shows it to people
    audit = json.dumps(http_bot.command("audit")[0].json())
    assert "unsilence" in audit


def test_digest_on_demand_here_and_in_another_channel(http_bot: HttpBot) -> None:
    http_bot.command("digest")
    update = http_bot.slack.wait_for("chat.update", predicate=lambda c: "Digest" in str(c.args.get("text")))[0]
    assert update.args["channel"] == "C0GENERAL" and str(update.args["text"]).startswith("Digest: All clear")

    http_bot.slack.add_channel("ml-platform", channel_id="C0PLATFORM")
    http_bot.command("digest #ml-platform")
    posted = http_bot.slack.wait_for("chat.postMessage", predicate=lambda c: c.args.get("channel") in (
        "#ml-platform", "C0PLATFORM") and "Digest" in str(c.args.get("text")))[0]
    assert posted.response["ok"] and posted.response["channel"] == "C0PLATFORM"
    note = http_bot.slack.wait_for("chat.update", predicate=lambda c: "sent to" in json.dumps(c.args))[0]
    assert "#ml-platform" in json.dumps(note.args) and note.args["channel"] == "C0GENERAL"

    assert _audited(http_bot.settings, "digest") == [("digest", "#ml-platform", "ok", USER)]

    http_bot.command("digest ml!platform")
    deadline = time.monotonic() + 10
    while "is not a channel" not in json.dumps([c.args for c in http_bot.slack.responses]):
        assert time.monotonic() < deadline, "no private answer to a bad channel"
        time.sleep(0.05)
    assert http_bot.slack.violations == []


def _audited(settings: Settings, action: str) -> list[tuple[str, str, str, str]]:
    store = Store(settings.store_path)
    try:
        rows = audit_mod.recent(store, 20)
    finally:
        store.close()
    return [(r["action"], r["subject"], r["outcome"], r["actor_id"]) for r in reversed(rows) if r["action"] == action]


def test_a_digest_into_another_channel_can_be_restricted(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    settings = sim_settings(basic_sim, fake_slack, tmp_path, clean_env)
    settings.actions.allow["digest"] = ActionAllow(users=["U0ONCALL"])
    fake_slack.add_channel("ml-platform", channel_id="C0PLATFORM")
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack))
    server.start()
    try:
        bot = HttpBot(server, fake_slack, basic_sim, settings)
        bot.command("digest #ml-platform")
        deadline = time.monotonic() + 10
        while "Not allowed" not in json.dumps([c.args for c in fake_slack.responses]):
            assert time.monotonic() < deadline, "no private refusal"
            time.sleep(0.05)
        assert "actions.allow.digest" in json.dumps([c.args for c in fake_slack.responses])
        # here, for whoever asked, it is still fine
        bot.command("digest")
        fake_slack.wait_for("chat.update", predicate=lambda c: str(c.args.get("text")).startswith("Digest"))
    finally:
        server.stop()
    assert not fake_slack.calls_to("chat.postMessage", lambda c: c.args.get("channel") in ("#ml-platform",
                                                                                         "C0PLATFORM"))
    assert _audited(settings, "digest") == [("digest", "#ml-platform", "denied", USER)]


def test_slack_playbooks_says_where_they_come_from(http_bot: HttpBot) -> None:
    shown = json.dumps(http_bot.command("playbooks")[0].json())
    assert "your own directory" in shown and str(http_bot.settings.playbooks) in shown
