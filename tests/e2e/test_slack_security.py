"""HTTP mode accepts only correctly signed, fresh requests, and nothing secret reaches Slack."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import bot.sim.scenario as sim_scenario
from bot.sim.server import SimServer
from bot.slack.serve import BotServer
from tests.e2e.conftest import (
    FAILED_TASK,
    SIGNING_SECRET,
    HttpBot,
    bot_env,
    command_form,
    signed_headers,
    sim_settings,
)
from tests.fakes.slack_api import FakeSlack


def _body(text: str = "status") -> str:
    return urllib.parse.urlencode(command_form(text))


def test_a_forged_signature_gets_401_and_causes_no_slack_call(http_bot: HttpBot) -> None:
    calls_before = len(http_bot.slack.calls)
    body = _body()
    resp = http_bot.post(body, signed_headers(body, secret="not-the-signing-secret"))
    assert resp.status_code == 401
    # a valid signature for another body (the text was changed in flight)
    headers = signed_headers(body)
    resp = http_bot.post(_body("run health"), headers)
    assert resp.status_code == 401
    # no signature at all
    resp = http_bot.post(body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 401
    time.sleep(0.5)  # a wrongly accepted request would have started its work by now
    assert len(http_bot.slack.calls) == calls_before
    assert http_bot.slack.responses == []


def test_a_replay_older_than_five_minutes_gets_401(http_bot: HttpBot) -> None:
    calls_before = len(http_bot.slack.calls)
    body = _body()
    resp = http_bot.post(body, signed_headers(body, timestamp=int(time.time()) - 301))
    assert resp.status_code == 401
    resp = http_bot.post(body, signed_headers(body, timestamp=int(time.time()) + 3600))  # from the future
    assert resp.status_code == 401
    time.sleep(0.5)
    assert len(http_bot.slack.calls) == calls_before
    # the same request, signed now, is accepted (the 401s were about the signature, not the content)
    resp = http_bot.post(body, signed_headers(body))
    assert resp.status_code == 200


def test_a_forged_button_click_gets_401(http_bot: HttpBot) -> None:
    body = urllib.parse.urlencode({"payload": json.dumps({"type": "block_actions", "actions": []})})
    resp = http_bot.post(body, signed_headers(body, secret="guess"))
    assert resp.status_code == 401


def _scenario_with_secrets(tmp_path: Path, planted: list[str]) -> Path:
    """The basic scenario, with credentials planted in the failed task's status and console log."""
    data: dict[str, Any] = yaml.safe_load((Path(sim_scenario.__file__).parent / "scenarios" / "basic.yaml").read_text())
    for task in data["tasks"]:
        if task.get("id") == FAILED_TASK:
            task["status_message"] = f"upload failed: aws_secret_access_key={planted[0]}"
            task["log"] = [
                {"msg": f"connecting with token {planted[1]}", "at": "-4h52m"},
                {"msg": f"boto3 error: AccessDenied for AKIAABCDEFGHIJKLMNOP password={planted[2]}", "at": "-4h51m"},
                {"msg": "ModuleNotFoundError: No module named 'timm'", "at": "-4h51m", "level": "error"},
            ]
    path = tmp_path / "secret-scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_no_secret_reaches_slack(
    fake_slack: FakeSlack, sim_factory: Callable[..., SimServer], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    planted = ["wJalrXUtnFEMIK7MDENGbPxRfiCYPLANTED01", "xoxb-123456789012-planted-token-abc", "hunter2planted"]
    sim = sim_factory(scenario=str(_scenario_with_secrets(tmp_path, planted)))
    settings = sim_settings(sim, fake_slack, tmp_path, clean_env)
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack)).start()
    try:
        bot = HttpBot(server, fake_slack, sim, settings)
        _, sim_secret = sim.keys[0]
        # a user pastes the ClearML secret key as an argument: it must not be echoed back
        resp, _ = bot.command(f"agents {sim_secret}")
        bot.command(f"task {FAILED_TASK}")
        bot.command("run health")
        fake_slack.wait_for("chat.update", count=3, timeout=30)
    finally:
        server.stop()
    everything = (
        json.dumps([c.args for c in fake_slack.calls]) + json.dumps([c.args for c in fake_slack.responses]) + resp.text
    )
    secrets = [*planted, sim_secret, fake_slack.bot_token, fake_slack.app_token, SIGNING_SECRET, "AKIAABCDEFGHIJKLMNOP"]
    for secret in secrets:
        assert secret not in everything, secret
    assert "REDACTED" in everything  # the lines were shown, with the secrets blanked
