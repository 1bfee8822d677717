"""`clearml-chatops serve`: the health endpoint, set-up errors with exit code 2, and the real command in a
subprocess."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
import yaml

from bot.sim.server import SimServer
from bot.slack import serve
from bot.slack.serve import BotServer
from tests.e2e.conftest import (
    SIGNING_SECRET,
    HttpBot,
    bot_env,
    command_form,
    signed_headers,
    sim_settings,
    write_playbooks,
)
from tests.fakes.slack_api import FakeSlack

REPO = Path(__file__).resolve().parents[2]


def test_healthz_is_200_when_slack_and_the_store_are_fine(http_bot: HttpBot) -> None:
    resp = httpx.get(f"{http_bot.server.url}/healthz", timeout=5)
    assert resp.status_code == 200
    body = resp.json()
    assert body["ok"] and body["slack"]["ok"] and body["store"]["ok"]
    assert "auth.test ok" in body["slack"]["detail"]


def test_healthz_is_503_when_slack_refuses_the_token(http_bot: HttpBot) -> None:
    http_bot.slack.fail("auth.test", error="token_revoked", times=None)
    resp = httpx.get(f"{http_bot.server.url}/healthz", timeout=5)
    assert resp.status_code == 503
    assert resp.json()["slack"] == {"ok": False, "detail": "auth.test: token_revoked"}
    assert http_bot.slack.bot_token not in resp.text


def test_healthz_is_503_when_the_store_is_not_writable(http_bot: HttpBot) -> None:
    store = http_bot.server.store
    assert store is not None
    state_dir = store.path.parent
    state_dir.rename(state_dir.with_name("moved-away"))
    resp = httpx.get(f"{http_bot.server.url}/healthz", timeout=5)
    assert resp.status_code == 503
    assert resp.json()["store"]["ok"] is False and "store.db" in resp.json()["store"]["detail"]


def _args(**kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    parser.add_argument("--config")
    return parser.parse_args([f"--{k.replace('_', '-')}={v}" if v is not True else f"--{k}" for k, v in kw.items()])


def _config(path: Path, sim: SimServer, slack: FakeSlack, tmp_path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "servers": {
                    "prod": {
                        "api": sim.api_url,
                        "web": sim.web_url,
                        "files": sim.files_url,
                        "credentials_env": ["E2E_SIM_KEY", "E2E_SIM_SECRET"],
                    }
                },
                "store": str(tmp_path / "state" / "store.db"),
                "playbooks": str(write_playbooks(tmp_path / "playbooks")),
                "slack": {"api_url": slack.base_url},
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("mode", "env_change", "expected"),
    [
        ("--http", {"SLACK_BOT_TOKEN": None}, "SLACK_BOT_TOKEN is not set"),
        ("--http", {"SLACK_SIGNING_SECRET": None}, "SLACK_SIGNING_SECRET is not set"),
        ("--http", {"SLACK_BOT_TOKEN": "xoxb-0000-wrong-token"}, "Slack refused SLACK_BOT_TOKEN (invalid_auth)"),
        ("--http", {"SLACK_BOT_TOKEN": "not-a-token"}, "does not look like a xoxb-"),
        ("socket", {"SLACK_APP_TOKEN": None}, "SLACK_APP_TOKEN is not set"),
        ("socket", {"SLACK_APP_TOKEN": "xapp-1-wrong"}, "Slack refused SLACK_APP_TOKEN (invalid_auth)"),
    ],
)
def test_missing_or_refused_tokens_exit_2_with_a_clear_message(
    mode: str,
    env_change: dict[str, str | None],
    expected: str,
    fake_slack: FakeSlack,
    basic_sim: SimServer,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_slack.start_socket_mode()
    key, secret = basic_sim.keys[0]
    env = {**bot_env(fake_slack), "E2E_SIM_KEY": key, "E2E_SIM_SECRET": secret, **env_change}
    for name, value in env.items():
        if value is None:
            clean_env.delenv(name, raising=False)
        else:
            clean_env.setenv(name, value)
    config = _config(tmp_path / "bot.yaml", basic_sim, fake_slack, tmp_path)
    kwargs: dict[str, object] = {"config": config, "host": "127.0.0.1", "port": 0}
    if mode == "--http":
        kwargs["http"] = True
    code = serve.main(_args(**kwargs))
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    for token in (fake_slack.bot_token, fake_slack.app_token, SIGNING_SECRET):
        assert token not in err
    assert fake_slack.calls_to("chat.postMessage") == []


def test_a_taken_port_exits_2(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    settings = sim_settings(basic_sim, fake_slack, tmp_path, clean_env)
    first = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack)).start()
    try:
        second = BotServer(settings, http=True, host="127.0.0.1", port=first.port, env=bot_env(fake_slack))
        with pytest.raises(serve.SetupError, match="cannot listen on"):
            second.setup()
    finally:
        first.stop()


def test_the_real_command_serves_http_and_stops_on_sigterm(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path
) -> None:
    key, secret = basic_sim.keys[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CLEARML_"))}
    env.update(bot_env(fake_slack), E2E_SIM_KEY=key, E2E_SIM_SECRET=secret, HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    config = _config(tmp_path / "bot.yaml", basic_sim, fake_slack, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1", "--port", "0", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            match = re.search(r"health: (http://[0-9.]+:\d+)/healthz", line)
            if match:
                url = match.group(1)
                break
        assert url, f"serve did not start (exit {proc.poll()})"
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        body = urllib.parse.urlencode(command_form("agents", response_url=fake_slack.response_url()))
        resp = httpx.post(f"{url}/slack/events", content=body.encode(), headers=signed_headers(body), timeout=5)
        assert resp.status_code == 200
        update = fake_slack.wait_for("chat.update", timeout=20)[0]
        assert "Agents on prod" in update.args["text"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
        if proc.stdout is not None:
            proc.stdout.close()
