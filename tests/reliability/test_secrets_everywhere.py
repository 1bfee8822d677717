"""Planted secrets appear nowhere: ClearML keys, Slack tokens, AWS keys and credential-looking strings, put in task
logs, status messages, a server error message and a user's command, are searched for in every output: the Slack
calls (Web API and response_url), the HTTP answers, the log lines, the report and JSON of `run`, the store file's
bytes, and `doctor`'s output."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import bot.sim.scenario as sim_scenario
from bot.logs import setup_logging
from bot.sim.server import SimServer
from bot.slack.serve import BotServer
from tests.e2e.conftest import FAILED_TASK, SIGNING_SECRET, HttpBot, bot_env, sim_settings
from tests.fakes.slack_api import FakeSlack

REPO = Path(__file__).resolve().parents[2]
AWS_KEY_ID = "AKIAPLANTEDKEY123456"
AWS_SECRET = "pLaNtEdAwSsEcReT/0123456789abcdefGHIJKLm"
PASSWORD = "hunter2-planted-pw"
API_TOKEN = "tok_planted_0123456789abcdef"
REPRO_PLAYBOOK = """
name: repro
checks:
  - check: repro.failure_causes
  - check: storage.upload_failures
"""


def planted_scenario(tmp_path: Path) -> Path:
    data: dict[str, Any] = yaml.safe_load((Path(sim_scenario.__file__).parent / "scenarios" / "basic.yaml")
                                          .read_text())
    key, secret = "PLANTEDCLEARMLKEY0001", "planted-clearml-secret-0123456789abcdefXYZ"
    data["server"]["keys"] = [{"key": key, "secret": secret, "user": "u-alice"}]
    for task in data["tasks"]:
        if task.get("id") == FAILED_TASK:
            task["status_message"] = f"upload failed: aws_secret_access_key={AWS_SECRET}"
            task["log"] = [
                {"msg": f"export CLEARML_API_ACCESS_KEY={key} CLEARML_API_SECRET_KEY={secret}", "at": "-4h53m"},
                {"msg": f"connecting to slack with {FakeSlack().bot_token}", "at": "-4h52m"},
                {"msg": f"botocore.exceptions.ClientError: AccessDenied for {AWS_KEY_ID} password={PASSWORD}",
                 "at": "-4h51m", "level": "error"},
                {"msg": f"Authorization: Bearer {API_TOKEN} rejected; api_key: {API_TOKEN}", "at": "-4h51m"},
                {"msg": "Failed uploading to s3://ml-artifacts/vision: AccessDenied", "at": "-4h51m",
                 "level": "error"},
            ]
    path = tmp_path / "planted.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The bot's structured logging at DEBUG into a buffer (as `serve` sets it up), restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.StringIO()
    setup_logging(level="DEBUG", fmt="json", stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def store_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def test_planted_secrets_appear_in_no_output(
    fake_slack: FakeSlack, sim_factory: Callable[..., SimServer], tmp_path: Path, clean_env: pytest.MonkeyPatch,
    log_lines: io.StringIO,
) -> None:
    clean_env.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    sim = sim_factory(scenario=str(planted_scenario(tmp_path)))
    sim_key, sim_secret = sim.keys[0]
    settings = sim_settings(sim, fake_slack, tmp_path, clean_env)
    assert settings.playbooks
    (Path(settings.playbooks) / "repro.yaml").write_text(REPRO_PLAYBOOK.lstrip())
    secrets = [sim_key, sim_secret, fake_slack.bot_token, fake_slack.app_token, SIGNING_SECRET, AWS_KEY_ID, AWS_SECRET,
               PASSWORD, API_TOKEN]

    # -- the Slack bot: commands over signed HTTP, answers through the fake Web API and response_url --------------
    outputs: dict[str, str] = {}
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack)).start()
    try:
        bot = HttpBot(server, fake_slack, sim, settings)
        acks = [bot.command(text)[0].text for text in (f"agents {sim_secret}", f"task {FAILED_TASK}", "run health",
                                                        "run repro --all", f"diff {FAILED_TASK} password={PASSWORD}")]
        fake_slack.wait_for("chat.update", count=3, timeout=30)
        sim.set_fault("workers.get_all", status=500, traceback=True,
                      message=f"mongo auth failed: password={PASSWORD} key={sim_secret}")
        acks.append(bot.command("agents")[0].text)
        fake_slack.wait_for("chat.update", count=5, timeout=30)
    finally:
        server.stop()
    outputs["slack web api"] = json.dumps([c.args for c in fake_slack.calls])
    outputs["slack response_url"] = json.dumps([c.args for c in fake_slack.responses])
    outputs["http acks"] = "\n".join(acks)
    outputs["log lines"] = log_lines.getvalue()
    outputs["bot store"] = store_bytes(Path(settings.store_path)).decode("latin-1")

    # -- the terminal: `run` (text and JSON), its store, and `doctor` ---------------------------------------------
    cli_store = tmp_path / "cli" / "store.db"
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"store": str(cli_store), "slack": {"api_url": fake_slack.base_url}}))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "SLACK_"))}, **sim.env(),
           "PYTHONPATH": str(REPO), "CLEARML_CHATOPS_CONFIG": str(config), "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
           "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "SLACK_BOT_TOKEN": fake_slack.bot_token,
           "SLACK_APP_TOKEN": fake_slack.app_token, "LOG_LEVEL": "DEBUG"}
    sim.clear_faults()
    playbooks = str(settings.playbooks)
    for fmt in ("text", "json"):
        done = subprocess.run([sys.executable, "-m", "bot", "run", "health", "repro", "--format", fmt,
                               "--playbooks-dir", playbooks, "-v"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        outputs[f"run {fmt} stdout"], outputs[f"run {fmt} stderr"] = done.stdout, done.stderr
    outputs["cli store"] = store_bytes(cli_store).decode("latin-1")
    doctor = subprocess.run([sys.executable, "-m", "bot", "doctor", "--playbooks", playbooks, "--format", "json"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    outputs["doctor"] = doctor.stdout + doctor.stderr

    # The lines were shown (the outputs are not empty), with the secrets blanked out.
    assert "REDACTED" in outputs["slack web api"] and "REDACTED" in outputs["run json stdout"]
    assert "AccessDenied" in outputs["run text stdout"]
    assert "train-vit-failed" in outputs["bot store"] and outputs["log lines"].count("\n") > 10
    leaks = [(where, secret) for where, text in outputs.items() for secret in secrets if secret in text]
    assert leaks == [], leaks
