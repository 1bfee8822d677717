"""Fixtures for the Slack bot end to end: the fake Slack API, the ClearML simulator, and the bot serving HTTP on a
free loopback port in this process (uvicorn in a thread), all stopped after each test, also on failure."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier

from bot.config import ServerConfig, Settings, SlackSettings
from bot.sim.server import SimServer
from bot.slack.client import METHOD_SCOPES
from bot.slack.serve import BotServer
from tests.fakes.slack_api import FakeSlack

SIGNING_SECRET = "fake-signing-secret-0123456789abcdef"
USER = "U0ALICE"

# Task and dataset ids of the simulator's `basic` scenario (bot/sim/scenarios/basic.yaml).
RUNNING_TASK = "a1000000000000000000000000000001"
FAILED_TASK = "a1000000000000000000000000000002"
QUEUED_TASK = "a1000000000000000000000000000004"
UNKNOWN_TASK = "0123456789abcdef0123456789abcdef"

PLAYBOOKS = {
    "health.yaml": """
name: health
description: Cheap checks of the whole fleet.
checks:
  - check: server.reachable
  - check: agents.stale
  - check: queues.backlog
""",
    "agents.yaml": """
name: agents
description: Agent liveness.
checks:
  - check: agents.stale
  - check: agents.orphaned_tasks
""",
    "broken.yaml": """
name: broken
checks:
  - check: agents.stael
""",
}


def write_playbooks(directory: Path, extra: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in {**PLAYBOOKS, **(extra or {})}.items():
        (directory / name).write_text(text.lstrip(), encoding="utf-8")
    return directory


def command_form(
    text: str,
    *,
    command: str = "/clearml",
    user_id: str = USER,
    channel_id: str = "C0GENERAL",
    response_url: str = "",
) -> dict[str, str]:
    return {
        "token": "legacy-verification-token",
        "team_id": "T0FAKETEAM",
        "team_domain": "fake",
        "channel_id": channel_id,
        "channel_name": "general",
        "user_id": user_id,
        "user_name": "alice",
        "command": command,
        "text": text,
        "api_app_id": "A0FAKE",
        "response_url": response_url,
        "trigger_id": "1.2.3",
    }


def signed_headers(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body) or ""
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


@dataclass
class HttpBot:
    server: BotServer
    slack: FakeSlack
    sim: SimServer
    settings: Settings

    @property
    def events_url(self) -> str:
        return f"{self.server.url}/slack/events"

    def post(self, body: str, headers: dict[str, str], timeout: float = 10.0) -> httpx.Response:
        return httpx.post(self.events_url, content=body.encode(), headers=headers, timeout=timeout)

    def command(self, text: str, *, response_url: str | None = None, **fields: Any) -> tuple[httpx.Response, str]:
        """A signed `/clearml <text>`; returns the HTTP response and the response_url used."""
        url = response_url or self.slack.response_url()
        body = urllib.parse.urlencode(command_form(text, response_url=url, **fields))
        return self.post(body, signed_headers(body)), url

    def action(self, payload: dict[str, Any]) -> httpx.Response:
        import json

        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return self.post(body, signed_headers(body))


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        yield slack


@pytest.fixture
def basic_sim(sim_factory: Callable[..., SimServer]) -> SimServer:
    """The simulator with its `basic` scenario (tests/conftest.py stops it)."""
    return sim_factory("basic")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No Slack or ClearML settings from the machine running the tests."""
    import os

    for name in list(os.environ):
        if name.startswith(("SLACK_", "CLEARML_")):
            monkeypatch.delenv(name, raising=False)
    return monkeypatch


def sim_settings(
    sim: SimServer, slack: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **slack_overrides: Any
) -> Settings:
    key, secret = sim.keys[0]
    monkeypatch.setenv("E2E_SIM_KEY", key)
    monkeypatch.setenv("E2E_SIM_SECRET", secret)
    return Settings(
        servers={
            "prod": ServerConfig(
                api=sim.api_url,
                web=sim.web_url,
                files=sim.files_url,
                credentials_env=["E2E_SIM_KEY", "E2E_SIM_SECRET"],
                retries=0,
                timeout=5,
            )
        },
        store=str(tmp_path / "state" / "store.db"),
        playbooks=str(write_playbooks(tmp_path / "playbooks")),
        slack=SlackSettings(api_url=slack.base_url, **slack_overrides),
    )


def bot_env(slack: FakeSlack) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_APP_TOKEN": slack.app_token,
    }


@pytest.fixture
def http_bot(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> Iterator[HttpBot]:
    settings = sim_settings(basic_sim, fake_slack, tmp_path, clean_env)
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack))
    server.start()
    try:
        yield HttpBot(server, fake_slack, basic_sim, settings)
    finally:
        server.stop()
    # every Web API method the bot called is in the scope table the manifest is checked against
    assert fake_slack.web_api_methods() <= set(METHOD_SCOPES), fake_slack.web_api_methods() - set(METHOD_SCOPES)
