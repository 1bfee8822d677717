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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
# issue #14's shapes: each value carries a marker that must appear nowhere
HF_TOKEN = "hf_PlantedHfMarker0123456789abcdefgh"
GH_TOKEN = "ghp_PlantedGhMarker0123456789abcdefghijk"
DB_PASSWORD = "PlantedDbPwMarker-a/b"
OPENAI_KEY = "sk-proj-PlantedOpenaiMarker0123456789"
REDIS_PW = "PlantedRedisMarker99"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJQbGFudGVkIn0.PlantedJwtMarkerSig"
AZURE_KEY = "PlantedAzureMarker" + "a" * 70 + "=="
ISSUE_SECRETS = [HF_TOKEN, GH_TOKEN, DB_PASSWORD, OPENAI_KEY, REDIS_PW, JWT, AZURE_KEY]
OTHER_TASK = "a1000000000000000000000000000001"  # train-resnet in the basic scenario
REPRO_PLAYBOOK = f"""
name: repro
checks:
  - check: repro.failure_causes
  - check: storage.upload_failures
  - check: repro.compare
    params: {{task_a: "{OTHER_TASK}", task_b: "{FAILED_TASK}"}}
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
                {"msg": f"HF_TOKEN={HF_TOKEN} GITHUB_TOKEN={GH_TOKEN} OPENAI_API_KEY={OPENAI_KEY}", "at": "-4h51m",
                 "level": "error"},
                {"msg": f"redis://:{REDIS_PW}@cache:6379/0 AccountKey={AZURE_KEY}; {JWT} failed", "at": "-4h51m",
                 "level": "error"},
            ]
            task["status_reason"] = f"Failed: --password {DB_PASSWORD} rejected"
            task["container"] = {"image": "nvidia/cuda:12.1-runtime", "arguments": f"-e HF_TOKEN={HF_TOKEN}",
                                 "setup_shell_script": f"export GITHUB_TOKEN={GH_TOKEN}"}
            task["hyperparams"] = {"Args": {
                "db_password": {"section": "Args", "name": "db_password", "value": DB_PASSWORD, "type": "str"},
                "HF_TOKEN": {"section": "Args", "name": "HF_TOKEN", "value": HF_TOKEN, "type": "str"},
                "lr": {"section": "Args", "name": "lr", "value": "0.02", "type": "float"}}}
        if task.get("id") == OTHER_TASK:
            task["hyperparams"] = {"Args": {
                "db_password": {"section": "Args", "name": "db_password", "value": "Other" + DB_PASSWORD,
                                "type": "str"},
                "lr": {"section": "Args", "name": "lr", "value": "0.01", "type": "float"}}}
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
               PASSWORD, API_TOKEN, *ISSUE_SECRETS, "Other" + DB_PASSWORD]

    # -- the Slack bot: commands over signed HTTP, answers through the fake Web API and response_url --------------
    outputs: dict[str, str] = {}
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack)).start()
    try:
        bot = HttpBot(server, fake_slack, sim, settings)
        acks = [bot.command(text)[0].text for text in (f"agents {sim_secret}", f"task {FAILED_TASK}", "run health",
                                                        "run repro --all", f"diff {FAILED_TASK} password={PASSWORD}",
                                                        f"diff {OTHER_TASK} {FAILED_TASK}")]
        fake_slack.wait_for("chat.update", count=4, timeout=30)
        sim.set_fault("workers.get_all", status=500, traceback=True,
                      message=f"mongo auth failed: password={PASSWORD} key={sim_secret}")
        acks.append(bot.command("agents")[0].text)
        fake_slack.wait_for("chat.update", count=6, timeout=30)
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
    # the diff was shown (lr differs), with the secret-named parameter on both sides blanked
    assert "Args/lr" in outputs["slack web api"] and "Args/db_password" in outputs["slack web api"]
    assert "Args/lr" in outputs["run json stdout"]
    leaks = [(where, secret) for where, text in outputs.items() for secret in secrets if secret in text]
    assert leaks == [], leaks


# -- issue #14: every planted shape, drawn at random, through every output ---------------------------------------

# Each shape puts the marker M (random) where the secret is. Names of env vars, hyperparameters and config keys
# from the issue, and provider token shapes (GitHub, GitLab, Hugging Face, OpenAI, Google, Slack webhooks, Azure,
# PEM, JWT), URL passwords, CLI flags and HTTP headers.
SECRET_NAMES = ["CLEARML_API_SECRET_KEY", "HF_TOKEN", "WANDB_API_KEY", "OPENAI_API_KEY", "GITHUB_TOKEN",
                "AWS_SESSION_TOKEN", "PGPASSWORD", "DJANGO_SECRET_KEY", "db_password", "client_secret",
                "Args/db_password", "Args/HF_TOKEN", "x-api-key", "private_key", "AZURE_CREDENTIALS"]
SHAPES = [
    "{name}={M}", "{name}: {M}", "export {name}='{M}'", '"{name}": "{M}"', "--{lname} {M}", "{name} = {M} -> {M}x",
    "ghp_{M}{pad36}", "gho_{M}{pad36}", "glpat-{M}{pad20}", "hf_{M}{pad30}", "sk-proj-{M}{pad20}",
    "sk-{M}T3BlbkFJ{M}{pad20}", "AIza{M}{pad35}", "https://hooks.slack.com/services/T0001/B0001/{M}",
    "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={M}{pad88}==;EndpointSuffix=core.windows.net",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow{M}{pad40}\n-----END RSA PRIVATE KEY-----",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ{M}.{M}sig", "redis://:{M}@cache:6379/0", "https://user:{M}/x@host/path",
    "postgres://svc:{M}@db.internal:5432/app", "Authorization: Token {M}", "Authorization: Bearer {M}",
    "Authorization: Basic {M}==", "x-api-key: {M}", "xoxb-1234-5678-{M}", "AKIA{MU16}",
]


def _planted_line(shape: str, name: str, marker: str, prefix: str, suffix: str) -> str:
    pads = {f"pad{n}": ("a1B2c3D4" * 12)[:n] for n in (20, 30, 35, 36, 40, 88)}
    body = shape.format(M=marker, MU16=marker.upper()[:16].ljust(16, "Q"), name=name,
                        lname=name.lower().replace("_", "-").replace("/", "-"), **pads)
    return f"{prefix} {body} {suffix}".strip()


@pytest.fixture(scope="module")
def planted_check() -> Iterator[dict[str, Any]]:
    """A check (registered for these tests only) that reports whatever the example planted, the way real checks
    quote ClearML data: in the title, detail, subject name, evidence lines, hyperparameter diffs and task fields."""
    from bot.engine.findings import Finding, Subject
    from bot.engine.registry import REGISTRY, check

    planted: dict[str, Any] = {}

    @check("repro.planted_secrets_test")
    async def planted_secrets(snap: Any, params: Any) -> list[Finding]:
        line, name, value = planted["line"], planted["name"], planted["value"]
        return [Finding(
            check="repro.planted_secrets_test", severity="warning",
            title=f"Task failed: {line}", detail=f"last log line: {line}",
            subject=Subject(kind="task", id="a" * 32, name=f"train {line}"),
            evidence={"lines": [line], "status_message": line, "status_reason": line,
                      "container": {"arguments": [line, line], "setup_shell_script": [f"export {line}", None]},
                      "diff": {"hyperparams": {"changed": {name: [value, value + "2"]}, "added": {name: value}}},
                      name: value},
            remediation=f"Rotate the credential seen in: {line}",
        )]

    try:
        yield planted
    finally:
        REGISTRY.pop("repro.planted_secrets_test", None)


@pytest.fixture(scope="module")
def planted_sim() -> Iterator[SimServer]:
    with SimServer(scenario="basic") as sim:
        yield sim


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.sampled_from(SHAPES),
    name=st.one_of(st.sampled_from(SECRET_NAMES), st.builds(
        lambda pre, word, post: f"{pre}{word}{post}",
        st.from_regex(r"[A-Za-z0-9_]{0,8}", fullmatch=True),
        st.sampled_from(["SECRET", "TOKEN", "PASSWORD", "passwd", "API_KEY", "apikey", "ACCESS_KEY", "PRIVATE",
                         "Credential"]),
        st.from_regex(r"[A-Za-z0-9_]{0,6}", fullmatch=True))),
    marker=st.from_regex(r"[A-Za-z0-9]{6}Mk[A-Za-z0-9]{8}", fullmatch=True),
    prefix=st.text(alphabet="abcdefghij klmnop:,()[]0123456789", max_size=30),
    suffix=st.text(alphabet="abcdefghij klmnop:,()[]0123456789", max_size=30),
)
def test_random_secret_bearing_lines_and_names_leave_no_marker_in_any_output(
    planted_check: dict[str, Any], planted_sim: SimServer, tmp_path_factory: pytest.TempPathFactory,
    shape: str, name: str, marker: str, prefix: str, suffix: str,
) -> None:
    """Hypothesis draws a secret shape, a secret-looking name, a random marker inside the secret and random text
    around it; the finding that quotes them goes through the real run (runner boundary) into `run --format json`,
    the terminal report, the Slack report payload and the store file (with its WAL). The marker is in none."""
    import asyncio

    from slack_sdk import WebClient

    from bot.config import Settings
    from bot.engine.playbook import CheckEntry, Playbook
    from bot.engine.runner import run_playbooks
    from bot.report import render_text
    from bot.slack.delivery.sink import SlackSink
    from bot.slack.messages.report import render_run
    from bot.store import Store
    from tests.helpers import server_settings

    line = _planted_line(shape, name, marker, prefix, suffix)
    planted_check.update(line=line, name=name, value=marker)
    playbook = Playbook(name="planted", checks=[CheckEntry(check="repro.planted_secrets_test")])
    result = asyncio.run(run_playbooks([playbook], Settings(), server_settings(planted_sim), deadline_s=30))
    [finding] = [f for f in result.findings if f.check == "repro.planted_secrets_test"]

    text_out = io.StringIO()
    render_text(result, stream=text_out, verbose=True)
    slack = SlackSink(WebClient(token="xoxb-0-0-unused", base_url="http://127.0.0.1:9/api/"))
    store_path = tmp_path_factory.mktemp("store") / "store.db"
    store = Store(store_path)
    try:
        store.record_run(result)
    finally:
        store.close()
    outputs = {
        "run --format json": json.dumps(result.to_json()),
        "run text": text_out.getvalue(),
        "slack payload": json.dumps(slack._payload(render_run(result))),
        "store": store_bytes(store_path).decode("latin-1"),
    }
    leaks = [where for where, out in outputs.items() if marker in out]
    assert leaks == [], (line, name, leaks)
    assert "REDACTED" in outputs["run --format json"] and finding.title.startswith("Task failed")


def test_the_store_and_its_wal_are_private(tmp_path: Path) -> None:
    """Findings quote logs and the audit names people: the store file, its WAL and SHM are 0600, also when an
    older version left them 0644."""
    from bot.store import Store

    path = tmp_path / "state" / "store.db"
    store = Store(path)
    store.db["t"].insert({"a": 1})
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in path.parent.iterdir()}
    store.close()
    assert modes == {"store.db": "0o600", "store.db-wal": "0o600", "store.db-shm": "0o600"}, modes
    path.chmod(0o644)
    Store(path).close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
