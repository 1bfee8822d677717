"""`clearml-chatops act …` / `audit` as an operator runs them: a real process against the simulator, and the
interactive prompt in-process with a fake terminal."""

from __future__ import annotations

import argparse
import copy
import getpass
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.actions import cli as act_cli
from bot.clearml.client import is_read_endpoint
from bot.sim.server import SimServer
from tests.integration.test_actions_sim import METRICS, scenario

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(scenario=scenario()) as server:
        yield server


@pytest.fixture
def env(sim: SimServer, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config.yaml"
    config.write_text(f"store: {tmp_path / 'store.db'}\n")
    out = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML", "SLACK"))}
    out.update(sim.env(), HOME=str(tmp_path), CLEARML_CHATOPS_CONFIG=str(config), CLEARML_API_HOST_VERIFY_CERT="0")
    return out


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def writes(sim: SimServer) -> list[str]:
    return [n for n, _ in sim.calls if n != "auth.login" and not is_read_endpoint(n)]


def status(sim: SimServer, name: str) -> str:
    with sim.state.lock:
        return str(sim.state.tasks[sim.task_id(name)]["status"])


def test_act_with_yes_executes_and_is_audited_as_the_os_user(sim: SimServer, env: dict[str, str]) -> None:
    tid = sim.task_id("failed-task")
    proc = run(env, "act", "requeue", tid, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "Requeue task?" in proc.stdout and "1. tasks.enqueue(task=" + tid in proc.stdout
    assert f"Requeued by {getpass.getuser()} at " in proc.stdout
    assert status(sim, "failed-task") == "queued"
    audit = run(env, "audit", "5")
    assert audit.returncode == 0 and f"ok        requeue    {tid} by {getpass.getuser()} (terminal)" in audit.stdout


def test_act_without_a_terminal_and_without_yes_refuses(sim: SimServer, env: dict[str, str]) -> None:
    proc = run(env, "act", "abort", sim.task_id("running-live"))
    assert proc.returncode == 2
    assert "stdin is not a terminal" in proc.stderr and "--yes" in proc.stderr
    assert "tasks.stop(task=" in proc.stdout  # the plan is still shown
    assert writes(sim) == [] and status(sim, "running-live") == "in_progress"


def test_act_dry_run_shows_calls_and_makes_none(sim: SimServer, env: dict[str, str]) -> None:
    proc = run(env, "act", "requeue", sim.task_id("orphan-recent"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "Dry run, nothing done" in proc.stdout and "tasks.reset(" in proc.stdout
    assert writes(sim) == [] and status(sim, "orphan-recent") == "in_progress"


def test_act_refusal_exit_1_with_the_alternative(sim: SimServer, env: dict[str, str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    tid = sim.task_id("completed-task")
    _in_process(monkeypatch, env, "")
    assert act_cli.act_main(_args("requeue", tid, "--yes", "--format", "json")) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "refused"
    assert f"try: clearml-chatops act clone {tid}" in err
    assert writes(sim) == []


def test_usage_errors_exit_2(sim: SimServer, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    tid = sim.task_id("completed-task")
    _in_process(monkeypatch, env, "")
    assert act_cli.act_main(_args("requeue", tid, "--param", "bogus=1", "--yes")) == 2
    assert "bogus" in capsys.readouterr().err
    assert act_cli.act_main(_args("abort", tid, "--queue", "gpu", "--yes")) == 2  # abort takes no queue
    assert "--queue does not apply to abort" in capsys.readouterr().err
    monkeypatch.setenv("CLEARML_CHATOPS_CONFIG", str(Path(env["HOME"]) / "missing.yaml"))
    assert act_cli.act_main(_args("abort", tid, "--yes")) == 2
    from bot.cli import main as chatops_main

    with pytest.raises(SystemExit) as exc:
        chatops_main(["act", "explode", tid])
    assert exc.value.code == 2
    assert writes(sim) == []


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    act_cli.add_act_arguments(parser)
    return parser.parse_args(list(argv))


def _in_process(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], answer: str) -> None:
    for key in [k for k in os.environ if k.startswith("CLEARML")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("CLEARML"):
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "stdin", FakeTTY(answer))


def test_prompt_no_cancels_and_yes_executes(sim: SimServer, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    tid = sim.task_id("q3")
    _in_process(monkeypatch, env, "n\n")
    assert act_cli.act_main(_args("prioritize", tid)) == 1
    assert "Proceed? [y/N]" in capsys.readouterr().out and writes(sim) == []
    _in_process(monkeypatch, env, "y\n")
    assert act_cli.act_main(_args("prioritize", tid)) == 0
    assert "Moved to the front by" in capsys.readouterr().out
    with sim.state.lock:
        assert sim.state.queue_by_name("gpu")["entries"][0]["task"] == tid
    monkeypatch.setattr(sys, "stdin", FakeTTY(""))
    rows = act_cli.audit_main(argparse.Namespace(config=None, n=5, action=None, subject=None, outcome=None,
                                                 format="json"))
    assert rows == 0
    assert [r["outcome"] for r in json.loads(capsys.readouterr().out)] == ["ok", "cancelled"]


def test_reproduce_wait_prints_the_comparison(sim: SimServer, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    original = sim.task_id("completed-task")
    _in_process(monkeypatch, env, "")

    def agent() -> None:  # plays the agent: picks up the clone and completes it with the same metrics
        while True:
            with sim.state.lock:
                clones = [t for t in sim.state.tasks.values() if t.get("parent") == original]
                if clones and clones[0]["status"] == "queued":
                    sim.state.remove_from_queues(clones[0]["id"])
                    sim.state.update_task(clones[0]["id"], {"status": "completed", "active_duration": 3550,
                                                            "last_metrics": copy.deepcopy(METRICS)})
                    return
            threading.Event().wait(0.02)

    thread = threading.Thread(target=agent, daemon=True)
    thread.start()
    code = act_cli.act_main(_args("reproduce", original, "--yes", "--wait", "--poll", "0.05s"))
    thread.join(timeout=5)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Reproduction started by" in out and "reproduced ✓" in out and "2 of 2 within tolerance" in out
