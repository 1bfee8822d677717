"""Socket Mode: `apps.connections.open` hands out a local websocket URL; envelopes pushed over it are acked over it,
and the answers go through the Web API as in HTTP mode."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from bot.sim.server import SimServer
from bot.slack.serve import BotServer
from tests.e2e.conftest import bot_env, command_form, sim_settings
from tests.fakes.slack_api import FakeSlack


def test_socket_mode_slash_command(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    socket = fake_slack.start_socket_mode()
    settings = sim_settings(basic_sim, fake_slack, tmp_path, clean_env)
    env = bot_env(fake_slack)
    env.pop("SLACK_SIGNING_SECRET")  # Socket Mode does not need it
    server = BotServer(settings, http=False, host="127.0.0.1", port=0, env=env, socket_ping_interval=1).start()
    try:
        socket.wait_connected()
        opened = fake_slack.calls_to("apps.connections.open")
        assert opened and opened[0].token == fake_slack.app_token
        health = httpx.get(f"{server.url}/healthz", timeout=5)
        assert health.status_code == 200 and "connected" in health.json()["slack"]["detail"]
        # /slack/events is not served in Socket Mode
        assert httpx.post(f"{server.url}/slack/events", content=b"x", timeout=5).status_code in (404, 405)

        # an instant subcommand: the answer is the ack's payload
        envelope = socket.push_envelope(command_form("help", response_url=fake_slack.response_url()))
        ack = socket.wait_ack(envelope)
        assert ack["payload"]["response_type"] == "ephemeral" and "run <playbook>" in str(ack["payload"])

        # a slow one: an empty ack at once, then placeholder and result through the Web API
        start = time.monotonic()
        envelope = socket.push_envelope(command_form("queues", response_url=fake_slack.response_url()))
        ack = socket.wait_ack(envelope)
        assert time.monotonic() - start < 3.0
        assert not (ack.get("payload") or {}).get("text")
        post = fake_slack.wait_for("chat.postMessage")[0]
        update = fake_slack.wait_for("chat.update")[0]
        assert post.args["channel"] == "C0GENERAL" and update.args["ts"] == post.response["ts"]
        assert "Queues on prod" in update.args["text"]

        # the connection drops: health says so until the client reconnects
        socket.drop_connections()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and socket.connected == 0:
            time.sleep(0.1)
        assert socket.connected >= 1, "the Socket Mode client did not reconnect"
    finally:
        server.stop()


def test_socket_mode_home_tab(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """`app_home_opened` over Socket Mode (an `events_api` envelope): acked at once, the view published."""
    from tests.fakes.slack_api import validate_view

    socket = fake_slack.start_socket_mode()
    settings = sim_settings(basic_sim, fake_slack, tmp_path, clean_env)
    env = bot_env(fake_slack)
    env.pop("SLACK_SIGNING_SECRET")
    server = BotServer(settings, http=False, host="127.0.0.1", port=0, env=env, socket_ping_interval=1).start()
    try:
        socket.wait_connected()
        event = {"token": "legacy", "team_id": "T0FAKETEAM", "api_app_id": "A0FAKE", "type": "event_callback",
                 "event_id": "Ev0HOME", "event_time": int(time.time()),
                 "event": {"type": "app_home_opened", "user": "U0SOCKET", "channel": "D0HOME", "tab": "home",
                           "event_ts": f"{time.time():.6f}"}}
        envelope = socket.push_envelope(event, envelope_type="events_api", accepts_response_payload=False)
        socket.wait_ack(envelope)
        [call] = fake_slack.wait_for("views.publish", predicate=lambda c: c.args.get("user_id") == "U0SOCKET")
        assert validate_view(call.args["view"]) == []
        assert "prod" in str(call.args["view"]["blocks"][0]["text"]["text"])
    finally:
        server.stop()
