"""Where messages go and what happens when Slack says no: private channels, DMs, rate limits, server errors, and the
routed delivery of unattended reports."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.config import SlackRoute, resolve_server
from bot.engine.playbook import load_playbook
from bot.engine.runner import run_playbooks
from bot.routing import Router
from bot.sim.server import SimServer
from bot.slack.client import make_web_client
from bot.slack.delivery import Outbox as DurableOutbox
from bot.slack.delivery import WebClientSender
from bot.slack.delivery.reports import queue_run_report
from bot.slack.delivery.sink import SlackSink
from bot.store import Store
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
    # `serve`'s way for an unattended report: queued in the durable outbox, drained by its worker
    store = Store(tmp_path / "delivery.db")
    outbox = SlackSink(make_web_client(fake_slack.bot_token, settings))
    outbox.durable = DurableOutbox(store)
    sender = WebClientSender(WebClient(token=fake_slack.bot_token, base_url=fake_slack.base_url, retry_handlers=[]))
    queued = queue_run_report(outbox, Router(settings.slack), result, playbook, key="run-1")
    assert set(queued) == {"#ml-alerts", "#ml-oncall"}
    outbox.durable.drain(sender)
    sent = outbox.durable.get("report:run-1:#ml-alerts")
    assert sent is not None and sent["status"] == "sent" and sent["channel_id"] == alerts.id
    failed = outbox.durable.get("report:run-1:#ml-oncall")
    assert failed is not None and failed["status"] == "failed" and failed["ts"] is None
    problem = str(failed["last_error"])
    assert problem.startswith("not_in_channel") and "#ml-oncall" in problem and "/invite" in problem
    # once invited, the same delivery reaches it, with only the routed findings
    oncall.member = True
    assert outbox.durable.retry_failed(channel="#ml-oncall") == 1
    outbox.durable.drain(sender)
    routed = outbox.durable.get("report:run-1:#ml-oncall")
    assert routed is not None and routed["status"] == "sent" and routed["ts"]
    message = fake_slack.message(oncall.id, routed["ts"])
    assert message is not None and "queues.backlog" in text_of(message) and "agents.stale" not in text_of(message)
    store.close()
