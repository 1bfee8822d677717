"""Slack misbehaving while the bot serves: the Socket Mode connection dropping and coming back, and a storm of 429s
(with Retry-After) and 500s on every write. Commands are still answered, nothing is lost or doubled, and the rate
limits show on /metrics."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from bot.sim.server import SimServer
from bot.slack.serve import BotServer
from tests.e2e.conftest import HttpBot, bot_env, command_form, sim_settings
from tests.fakes.slack_api import FakeSlack


def test_socket_mode_dropping_and_coming_back_keeps_answering(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    socket = fake_slack.start_socket_mode()
    env = bot_env(fake_slack)
    env.pop("SLACK_SIGNING_SECRET")
    settings = sim_settings(basic_sim, fake_slack, tmp_path, clean_env)
    server = BotServer(settings, http=False, host="127.0.0.1", port=0, env=env, socket_ping_interval=1).start()
    try:
        socket.wait_connected()
        for round_ in range(2):  # the connection drops twice; each time the bot reconnects by itself
            opened = len(fake_slack.calls_to("apps.connections.open"))
            socket.drop_connections()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (len(fake_slack.calls_to("apps.connections.open")) <= opened
                                                   or socket.connected == 0):
                time.sleep(0.05)
            assert socket.connected >= 1, "the Socket Mode client did not reconnect"
            # commands work on the new connection: the ack over the socket, the answer through the Web API
            updates = len(fake_slack.calls_to("chat.update"))
            envelope = socket.push_envelope(command_form("queues", response_url=fake_slack.response_url()))
            socket.wait_ack(envelope, timeout=10)
            update = fake_slack.wait_for("chat.update", count=updates + 1, timeout=30)[-1]
            assert "Queues on prod" in str(update.args.get("text")), round_
        health = httpx.get(f"{server.url}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["slack"]["detail"] == "socket mode: connected"
    finally:
        server.stop()


def test_a_storm_of_429s_and_500s_delays_answers_but_loses_none(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    settings = sim_settings(basic_sim, fake_slack, tmp_path, clean_env)
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack)).start()
    try:
        bot = HttpBot(server, fake_slack, basic_sim, settings)
        # every write method: rate-limited twice (Retry-After 1 s), then a server error, then fine
        for method in ("chat.postMessage", "chat.update"):
            fake_slack.fail(method, status=429, retry_after=1, times=2)
            fake_slack.fail(method, status=500, times=1)
        commands = ["status", "queues", "agents"]
        for text in commands:
            assert bot.command(text)[0].status_code == 200  # acked at once, whatever Slack does meanwhile
        answered = fake_slack.wait_for("chat.update", count=len(commands), timeout=60,
                                       predicate=lambda c: c.ok)
        assert len(answered) == len(commands)
        # exactly one placeholder per command in the channel, each replaced by its answer
        placeholders = [m for m in fake_slack.channel_messages("C0GENERAL") if not m.get("thread_ts")]
        assert len(placeholders) == len(commands)
        assert all("running" not in str(m.get("text")).lower() for m in placeholders)
        scraped = httpx.get(f"{server.url}/metrics", timeout=10).text
        limited = sum(float(v) for v in re.findall(
            r'^clearml_chatops_slack_rate_limited_total\{method="chat\.(?:postMessage|update)"\} ([0-9.]+)$',
            scraped, re.M))
        assert limited >= 4
    finally:
        server.stop()
