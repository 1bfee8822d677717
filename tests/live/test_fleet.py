"""AgentFleet and the rotate launcher without starting any agent (these run even without clearml-agent): the
generated clearml.conf is valid HOCON with what the agent needs, unknown workers are refused, and a pid file whose
process is not the one it recorded (a reused pid) is never signalled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from clearml.utilities.pyhocon import ConfigFactory

from bot.live import launcher
from bot.live.agents import AgentError, AgentFleet, AgentSpec, ServerRef

SERVER = ServerRef("http://127.0.0.1:18008", "http://127.0.0.1:18008", "http://127.0.0.1:18081", "KEY1", "SECRET1")


def test_agent_home_has_a_clearml_conf_the_agent_can_read(tmp_path: Path) -> None:
    fleet = AgentFleet(tmp_path / "agents")
    directory = fleet.add(AgentSpec("gpu-box:0", ("cpu-a", "cpu-b"), report_interval_s=5), SERVER)
    conf_path = directory / "home" / "clearml.conf"
    conf = ConfigFactory.parse_file(str(conf_path))
    assert conf["api.api_server"] == SERVER.api_url and conf["api.files_server"] == SERVER.files_url
    assert conf["api.credentials.access_key"] == "KEY1" and conf["api.credentials.secret_key"] == "SECRET1"
    assert conf["agent.worker_id"] == "gpu-box:0"
    assert conf["agent.venvs_dir"] == str(directory / "home" / "venvs")
    assert conf_path.stat().st_mode & 0o077 == 0  # credentials: owner only
    assert fleet.argv("gpu-box:0")[1:] == ["-m", "clearml_agent", "daemon", "--queue", "cpu-a", "cpu-b",
                                           "--foreground"]
    registry = json.loads((tmp_path / "agents" / "agents.json").read_text())
    env = registry["gpu-box:0"]["env"]
    assert env["CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL"] == "1" and env["CLEARML_AGENT_STATUS_REPORT_FREQ_SEC"] == "5"
    assert "SECRET1" not in json.dumps(registry)  # only clearml.conf holds the credentials
    assert fleet.pid("gpu-box:0") is None  # added, not started
    with pytest.raises(AgentError, match="at least one queue"):
        fleet.add(AgentSpec("x:0", ()), SERVER)


def test_launcher_refuses_an_unknown_worker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    AgentFleet(tmp_path).add(AgentSpec("live-a:0", ("cpu-a",)), SERVER)
    assert launcher.main(["restart", "--state", str(tmp_path), "--worker", "live-z:0"]) == 2
    err = capsys.readouterr().err
    assert "no agent 'live-z:0'" in err and "known: live-a:0" in err
    assert AgentFleet(tmp_path).pid("live-a:0") is None  # nothing was started


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    fleet = AgentFleet(tmp_path)
    directory = fleet.add(AgentSpec("live-a:0", ("cpu-a",)), SERVER)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        # The pid file names a live process, but not the one it recorded (another start time).
        (directory / "agent.pid").write_text(json.dumps({"pid": bystander.pid, "create_time": 1.0}))
        assert fleet.pid("live-a:0") is None
        assert fleet.kill("live-a:0") is None and fleet.stop("live-a:0") is None
        assert bystander.poll() is None  # untouched
    finally:
        os.killpg(bystander.pid, signal.SIGKILL)
        bystander.wait(10)
