"""`clearml-chatops doctor`: every part of the bot's own set-up checked against the fake Slack API and the ClearML
simulator; a table with a fix for every failure; exit code 0 when all is well, 1 otherwise."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main
from bot.sim.server import SimServer
from tests.fakes.slack_api import FakeSlack

GOOD_PLAYBOOK = """
name: health
schedule: {every: 5m}
channel: "#ml-alerts"
checks:
  - check: agents.stale
"""
SCOPES = ["commands", "chat:write", "chat:write.public", "usergroups:read", "channels:history", "groups:history",
          "channels:read", "groups:read", "files:write", "users:read.email", "im:write"]


def setup(tmp_path: Path, sim: SimServer, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch, **config: Any) -> Path:
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir(exist_ok=True)
    (playbooks / "health.yaml").write_text(GOOD_PLAYBOOK.lstrip())
    key, secret = sim.keys[0]
    monkeypatch.setenv("DOC_KEY", key)
    monkeypatch.setenv("DOC_SECRET", secret)
    doc: dict[str, Any] = {
        "servers": {"prod": {"api": sim.api_url, "web": sim.web_url, "files": sim.files_url,
                             "credentials_env": ["DOC_KEY", "DOC_SECRET"], "timeout": 3, "retries": 0}},
        "storage": [f"{sim.files_url}/probes/"],
        "store": str(tmp_path / "state" / "store.db"),
        "playbooks": str(playbooks),
        "slack": {"api_url": slack.base_url, "default_channel": "#ml-alerts",
                  "routes": [{"severity": "critical", "channel": "#ml-oncall"}]},
    }
    doc.update(config)
    path = tmp_path / "bot.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def doctor(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    code = main(["doctor", "--config", str(config), "--format", "json", "--timeout", "20", *extra])
    out = json.loads(capsys.readouterr().out)
    rows = {r["check"]: r for r in out["checks"]}
    assert out["ok"] == (code == 0)
    return code, rows


@pytest.fixture
def env(clean_env: pytest.MonkeyPatch, fake_slack: FakeSlack) -> pytest.MonkeyPatch:
    clean_env.setenv("SLACK_BOT_TOKEN", fake_slack.bot_token)
    clean_env.setenv("SLACK_APP_TOKEN", fake_slack.app_token)
    fake_slack.start_socket_mode()
    fake_slack.scopes = SCOPES
    return clean_env


def test_a_good_setup_passes_every_check(
    sim_factory: Callable[..., SimServer], fake_slack: FakeSlack, tmp_path: Path, env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_slack.add_channel("ml-alerts")
    fake_slack.add_channel("ml-oncall", private=True, member=True)
    config = setup(tmp_path, sim_factory("basic"), fake_slack, env)
    code, rows = doctor(config, capsys)
    assert code == 0, [r for r in rows.values() if r["status"] == "FAIL"]
    for name in ("config", "slack.token", "slack.scopes", "slack.app_token", "slack.channel #ml-alerts",
                 "slack.channel #ml-oncall", "clearml prod: server.reachable", "clearml prod: server.credentials",
                 "clearml prod: storage.fileserver", "store", "schedule health"):
        assert rows[name]["status"] == "ok", rows[name]
    assert any(k.startswith("storage ") and v["status"] == "ok" for k, v in rows.items())
    # the text table says the same
    assert main(["doctor", "--config", str(config)]) == 0
    assert "All good" in capsys.readouterr().out


def test_every_failure_has_a_fix_and_exits_1(
    sim_factory: Callable[..., SimServer], fake_slack: FakeSlack, tmp_path: Path, env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = sim_factory("basic")
    fake_slack.add_channel("ml-alerts", archived=True)
    fake_slack.add_channel("ml-oncall", private=True, member=False)
    fake_slack.scopes = ["commands", "chat:write"]  # chat:write.public and the rest missing
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    config = setup(tmp_path, sim, fake_slack, env, store=str(blocker / "store.db"),
                   storage=["http://127.0.0.1:9/probes/"])  # nothing listens on the discard port
    (tmp_path / "playbooks" / "broken.yaml").write_text("name: broken\nschedule: {every: 5m, timezone: Mars/Base}\n"
                                                        "checks: [{check: agents.stale}]\n")
    env.setenv("DOC_SECRET", "wrong-secret")
    code, rows = doctor(config, capsys)
    assert code == 1
    failed = {k: v for k, v in rows.items() if v["status"] == "FAIL"}
    assert all(v["fix"] for v in failed.values()), failed
    assert {"slack.scopes", "slack.channel #ml-alerts", "slack.channel #ml-oncall", "store",
            "clearml prod: server.credentials", "playbook broken.yaml"} <= set(failed)
    assert "archived" in failed["slack.channel #ml-alerts"]["detail"]
    assert "/invite" in failed["slack.channel #ml-oncall"]["fix"]
    assert "chat:write.public" in failed["slack.scopes"]["detail"]
    assert "Mars/Base" in failed["playbook broken.yaml"]["detail"]
    assert any(k.startswith("storage ") for k in failed)
    assert "wrong-secret" not in json.dumps(rows)

    # a refused bot token, and a Socket Mode token Slack does not accept
    env.setenv("SLACK_BOT_TOKEN", "xoxb-0000-revoked")
    env.setenv("SLACK_APP_TOKEN", "xapp-1-revoked")
    code, rows = doctor(config, capsys)
    assert code == 1 and rows["slack.token"]["status"] == "FAIL" and "invalid_auth" in rows["slack.token"]["detail"]
    assert "reinstall" in rows["slack.token"]["fix"]
    assert "xoxb-0000-revoked" not in json.dumps(rows)


def test_no_slack_and_a_broken_config_are_reported_not_raised(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers: [oops\n")
    code, rows = doctor(bad, capsys, "--playbooks", str(tmp_path))
    assert code == 1
    assert rows["config"]["status"] == "FAIL" and "not valid YAML" in rows["config"]["detail"]
    assert rows["slack.token"]["status"] == "FAIL" and "SLACK_BOT_TOKEN" in rows["slack.token"]["detail"]
    assert rows["clearml default"]["status"] == "FAIL" and "CLEARML_API_HOST" in rows["clearml default"]["fix"] + \
        rows["clearml default"]["detail"]


def test_a_misspelt_actions_allow_key_fails_with_the_keys_it_could_be(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bot.yaml"
    config.write_text("actions:\n  allow:\n    resolv: {users: [U0ONCALL]}\n")
    code, rows = doctor(config, capsys, "--playbooks", str(tmp_path), "--no-slack")
    assert code == 1
    row = rows["actions.allow"]
    assert row["status"] == "FAIL" and "resolv is not an action" in row["detail"] and "resolve" in row["detail"]
    assert "config file" in row["fix"]


def test_a_missing_files_write_scope_is_a_warning_that_says_charts_are_off(
    sim_factory: Callable[..., SimServer], fake_slack: FakeSlack, tmp_path: Path, env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_slack.add_channel("ml-alerts")
    fake_slack.add_channel("ml-oncall", private=True, member=True)
    fake_slack.scopes = [s for s in SCOPES if s != "files:write"]
    config = setup(tmp_path, sim_factory("basic"), fake_slack, env)
    code, rows = doctor(config, capsys)
    assert code == 0  # the bot works without it: digests go out with text trends only
    assert rows["slack.scopes"]["status"] == "ok"
    row = rows["slack.scope files:write"]
    assert row["status"] == "warn"
    assert "charts are not uploaded" in row["detail"] and "text trends" in row["detail"]
    assert "files:write" in row["fix"] and "reinstall" in row["fix"]
