"""`clearml-chatops run/validate/checks/history/demo` as a user runs them: a real process, a real server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "tests" / "data" / "run-output.schema.json").read_text())
SECRET = "SIMSECRET-planted-0f9e8d"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML", "SLACK"))}
    env["HOME"] = str(tmp_path)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    return env


def env_for(sim: Any, tmp_path: Path, key: str | None = None, secret: str | None = None) -> dict[str, str]:
    env = base_env(tmp_path)
    sim_key, sim_secret = sim.keys[0]
    env.update(
        CLEARML_API_HOST=sim.api_url,
        CLEARML_WEB_HOST=sim.web_url,
        CLEARML_FILES_HOST=sim.files_url,
        CLEARML_API_ACCESS_KEY=key or sim_key,
        CLEARML_API_SECRET_KEY=secret or sim_secret,
    )
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_json_output_follows_the_contract_and_exit_code_reflects_problems(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(scenario="incident-zoo")
    proc = cli("run", "health", "--format", "json", env=env_for(sim, tmp_path))
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)  # exactly one JSON object on stdout
    jsonschema.validate(doc, SCHEMA)
    assert doc["playbooks"] == ["health"]
    assert doc["api_calls"] > 0
    stale = [f for f in doc["findings"] if f["check"] == "agents.stale"]
    assert stale and all(f["subject"]["kind"] == "worker" for f in stale)
    assert {c["id"] for c in doc["checks"]} >= {"server.reachable", "agents.stale", "queues.backlog"}
    # correlation: a consequence names its root (`caused_by`), which lists it in `consequences`; the subjects a
    # finding is tied to are `related` subject objects (the dead agent an orphaned task ran on), not evidence
    by_fingerprint = {f["fingerprint"]: f for f in doc["findings"]}
    caused = [f for f in doc["findings"] if f["caused_by"]]
    assert caused and all(f["fingerprint"] in by_fingerprint[f["caused_by"]]["consequences"] for f in caused)
    orphaned = [f for f in doc["findings"] if f["check"] == "agents.orphaned_tasks" and f["evidence"]["last_worker"]]
    assert orphaned and all(
        f["related"] == [{"kind": "worker", "id": f["evidence"]["last_worker"], "name": ""}] for f in orphaned
    )
    assert not [f for f in doc["findings"] if "related" in f["evidence"]]


def test_healthy_fleet_exits_zero_and_run_is_recorded(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(scenario="healthy")
    env = env_for(sim, tmp_path)
    proc = cli("run", "health", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all clear" in proc.stdout
    history = cli("history", "--since", "1h", "--format", "json", env=env)
    assert history.returncode == 0
    rows = json.loads(history.stdout)
    assert any(r["check_id"] == "server.reachable" and r["severity"] == "ok" for r in rows)


def test_wrong_keys_give_a_finding_and_a_clear_message_not_a_traceback(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(scenario="healthy")
    proc = cli("run", "health", "--format", "json", env=env_for(sim, tmp_path, key="WRONGKEY", secret=SECRET))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    cred = [f for f in doc["findings"] if f["check"] == "server.credentials"]
    assert cred and cred[0]["severity"] == "critical"
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_down_server_is_reported_not_raised(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    env.update(CLEARML_API_HOST=f"http://127.0.0.1:{free_port()}", CLEARML_API_ACCESS_KEY="k",
               CLEARML_API_SECRET_KEY=SECRET)
    proc = cli("run", "health", "--format", "json", env=env)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    reach = [f for f in doc["findings"] if f["check"] == "server.reachable"]
    assert reach and reach[0]["severity"] == "critical"
    assert "Traceback" not in proc.stderr and SECRET not in proc.stdout + proc.stderr


def test_html_error_page_and_500_traceback_are_findings(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(scenario="healthy")
    sim.set_fault("workers.get_all", status=502, html=True)
    sim.set_fault("queues.get_all", status=500, message="General data error", traceback=True)
    proc = cli("run", "health", "--format", "json", env=env_for(sim, tmp_path))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    errors = {f["check"]: f["detail"] for f in doc["findings"] if f["severity"] == "error"}
    assert "agents.stale" in errors and "not_json" in errors["agents.stale"]
    assert "queues.backlog" in errors and "General data error" in errors["queues.backlog"]
    assert "Traceback" not in json.dumps(doc)


def test_usage_and_configuration_errors_exit_2(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    proc = cli("run", "health", env=env)
    assert proc.returncode == 2 and "CLEARML_API_HOST" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nchecks:\n  - check: agents.stal\n")
    proc = cli("validate", str(bad), env=env)
    assert proc.returncode == 2 and "did you mean `agents.stale`" in proc.stdout
    proc = cli("run", "no-such-playbook", env=env)
    assert proc.returncode == 2 and "available:" in proc.stderr
    proc = cli("validate", "playbooks/health.yaml", env=env)
    assert proc.returncode == 0


def test_checks_lists_every_check_with_parameters(tmp_path: Path) -> None:
    proc = cli("checks", "--format", "json", env=base_env(tmp_path))
    assert proc.returncode == 0
    checks = {c["id"]: c for c in json.loads(proc.stdout)}
    assert checks["agents.stale"]["params"]["stale_after"]["default"]
    for cid, spec in checks.items():
        assert spec["summary"], f"{cid} has no summary"


def test_demo_shows_findings_in_every_area(tmp_path: Path) -> None:
    proc = cli("demo", "--format", "json", env=base_env(tmp_path), timeout=180)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, SCHEMA)
    areas = {f["check"].split(".")[0] for f in doc["findings"] if f["severity"] in ("warning", "critical")}
    assert {"agents", "queues", "storage", "repro", "datasets"} <= areas


@pytest.mark.parametrize("scenario", ["healthy"])
def test_demo_on_the_healthy_scenario_is_silent(scenario: str, tmp_path: Path) -> None:
    proc = cli("demo", "--scenario", scenario, "--format", "json", env=base_env(tmp_path), timeout=180)
    doc = json.loads(proc.stdout)
    loud = [(f["check"], f["subject"]["id"], f["title"]) for f in doc["findings"]
            if f["severity"] in ("warning", "critical", "error")]
    assert loud == []
    assert proc.returncode == 0
