"""Where messages go and what happens when Slack says no: private channels, DMs, rate limits, server errors, and the
routed delivery of unattended reports."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bot.config import SlackRoute, resolve_server
from bot.engine.playbook import load_playbook
from bot.engine.runner import run_playbooks
from bot.sim.server import SimServer
from bot.slack.client import make_web_client
from bot.slack.delivery import deliver_run
from bot.slack.outbox import Outbox
from bot.slack.routing import Router
from tests.e2e.conftest import HttpBot, sim_settings
from tests.fakes.slack_api import FakeSlack


def text_of(args: dict) -> str:
    return str(args.get("text", "")) + json.dumps(args.get("blocks") or [])


def test_a_private_channel_without_the_bot_gets_a_private_answer_naming_it(http_bot: HttpBot) -> None:
    secret = http_bot.slack.add_channel("ml-secret", private=True, member=False)
    http_bot.command("queues", channel_id=secret.id)
    replies = http_bot.slack.wait_for("response_url", count=2)
    note, result = replies[0].args, replies[1].args
    assert note["response_type"] == "ephemeral" and result["response_type"] == "ephemeral"
    assert f"<#{secret.id}>" in text_of(note) and "/invite @clearml-chatops" in text_of(note)
    assert "Queues on prod" in result["text"]  # the answer still arrives, privately
    assert http_bot.slack.calls_to("chat.update") == []


def test_a_dm_or_unknown_channel_gets_a_private_answer(http_bot: HttpBot) -> None:
    http_bot.command("agents", channel_id="D0SOMEDM01")
    replies = http_bot.slack.wait_for("response_url", count=2)
    assert "does not exist" in text_of(replies[0].args) and "D0SOMEDM01" in text_of(replies[0].args)
    assert "Agents on prod" in replies[1].args["text"]


def test_once_invited_a_private_channel_works(http_bot: HttpBot) -> None:
    private = http_bot.slack.add_channel("ml-private", private=True, member=True)
    http_bot.command("queues", channel_id=private.id)
    update = http_bot.slack.wait_for("chat.update")[0]
    assert update.args["channel"] == private.id
    assert http_bot.slack.responses == []


def test_rate_limits_and_server_errors_are_retried(http_bot: HttpBot) -> None:
    http_bot.slack.fail("chat.postMessage", status=429, retry_after=1, times=1)
    http_bot.slack.fail("chat.update", status=500, times=1)
    start = time.monotonic()
    resp, _ = http_bot.command("agents")
    assert resp.status_code == 200
    posts = http_bot.slack.wait_for("chat.postMessage", count=2)
    assert [c.status for c in posts[:2]] == [429, 200]
    assert posts[1].at - posts[0].at >= 0.9  # Retry-After honoured
    updates = http_bot.slack.wait_for("chat.update", count=2)
    assert [c.status for c in updates] == [500, 200]
    assert "Agents on prod" in updates[-1].args["text"]
    assert time.monotonic() - start < 15


def test_routed_delivery_of_an_unattended_report(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    alerts = fake_slack.add_channel("ml-alerts", member=False)  # public: chat:write.public, no join needed
    oncall = fake_slack.add_channel("ml-oncall", private=True, member=False)  # not invited yet
    settings = sim_settings(
        basic_sim,
        fake_slack,
        tmp_path,
        clean_env,
        routes=[SlackRoute(channel="#ml-oncall", check="queues.*")],
    )
    clean_env.setenv("SLACK_DEFAULT_CHANNEL", "ml-alerts")
    playbook = load_playbook(Path(settings.playbooks or "") / "health.yaml")
    server = resolve_server(settings, "prod")
    result = asyncio.run(run_playbooks([playbook], settings, server, trigger="schedule"))
    outbox = Outbox(make_web_client(fake_slack.bot_token, settings))
    deliveries = deliver_run(outbox, Router(settings.slack), result, playbook)
    by_channel = {d.channel: d for d in deliveries}
    assert set(by_channel) == {"#ml-alerts", "#ml-oncall"}
    assert by_channel["#ml-alerts"].posted is not None and by_channel["#ml-alerts"].posted.channel == alerts.id
    failed = by_channel["#ml-oncall"]
    assert failed.posted is None and failed.error is not None and failed.error.error == "not_in_channel"
    assert "#ml-oncall" in failed.problem and "/invite" in failed.problem
    # once invited, the same delivery reaches it, with only the routed findings
    oncall.member = True
    deliveries = deliver_run(outbox, Router(settings.slack), result, playbook)
    routed = next(d for d in deliveries if d.channel == "#ml-oncall")
    assert routed.posted is not None
    message = fake_slack.message(oncall.id, routed.posted.ts)
    assert message is not None and "queues.backlog" in text_of(message) and "agents.stale" not in text_of(message)
