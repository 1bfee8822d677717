"""Fixtures for the live tests: real clearml-agent processes against the simulator.

Every agent a test starts belongs to an AgentFleet whose state directory is under the test's tmp_path; the
fixture stops all of them by pid (SIGTERM, then SIGKILL of the process group) when the test ends, passed or not,
including agents the rotate launcher started from another process.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.clearml.client import ClearMLClient
from bot.config import Settings
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import RunResult, run_playbooks
from bot.live.agents import AgentFleet, AgentSpec, ServerRef, agent_missing_reason
from bot.sim.server import SimServer
from tests.helpers import server_settings

T = TypeVar("T")
AGENT_A, AGENT_B = "live-a:0", "live-b:0"
needs_agent = pytest.mark.skipif(
    agent_missing_reason() is not None,
    reason=f"{agent_missing_reason()} (CI installs it: .ci/run installs .[test,live])",
)


def inline_task(name: str, program: str, **extra: Any) -> dict[str, Any]:
    """A draft task whose script is a small inline program: script.diff with an entry point, no repository."""
    return {
        "name": name, "project": "live", "type": "training", "status": "created",
        "script": {"entry_point": f"{name}.py", "working_dir": ".", "binary": "python3", "requirements": {},
                   "diff": textwrap.dedent(program)},
        **extra,
    }


def gated_program(gate: Path) -> str:
    """Runs until `gate` exists: the test decides when the task may finish (no sleeps to tune)."""
    return f"""
        import os, time
        print("waiting for the gate", flush=True)
        while not os.path.exists({str(gate)!r}):
            time.sleep(0.1)
        print("gate open: finished", flush=True)
    """


HELLO = """
    import sys
    print("hello from an inline task", flush=True)
    for step in range(3):
        print(f"step {step}", flush=True)
    print("python", sys.version_info[0], flush=True)
"""
CRASH = """
    import sys
    print("about to fail", flush=True)
    sys.exit(3)
"""


def live_scenario(gate: Path) -> dict[str, Any]:
    return {
        "name": "live-test",
        "users": [{"id": "u-ops", "name": "Ops", "role": "admin"}],
        "projects": [{"name": "live"}],
        "queues": [{"name": "cpu-a", "system_tags": ["default"]}, {"name": "cpu-b"}],
        "tasks": [
            inline_task("hello", HELLO, id="1e000000000000000000000000000001"),
            inline_task("crash", CRASH, id="1e000000000000000000000000000002"),
            inline_task("gated", gated_program(gate), id="1e000000000000000000000000000003"),
        ],
    }


HELLO_ID = "1e000000000000000000000000000001"
CRASH_ID = "1e000000000000000000000000000002"
GATED_ID = "1e000000000000000000000000000003"


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    return tmp_path / "gate"


@pytest.fixture
def live_sim(sim_factory: Callable[..., SimServer], gate: Path) -> SimServer:
    return sim_factory(live_scenario(gate))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[AgentFleet]:
    agents = AgentFleet(tmp_path / "agents")
    try:
        yield agents
    finally:
        agents.close(timeout=5)


def start_agent(fleet: AgentFleet, sim: SimServer, worker_id: str, queue: str, report_s: float = 1.0) -> int:
    fleet.add(AgentSpec(worker_id, (queue,), report_interval_s=report_s), ServerRef.of_sim(sim))
    return fleet.start(worker_id)


def wait_for(what: str, probe: Callable[[], T], timeout: float, fleet: AgentFleet | None = None) -> T:
    """Poll `probe` until it returns something truthy; on timeout fail with the agents' logs."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = ""
            if fleet is not None:
                logs = "\n".join(f"--- {w}:\n{fleet.log_tail(w, 15)}" for w in fleet.workers())
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}\n{logs}")
        time.sleep(0.1)


def api(sim: SimServer, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One call through the bot's own ClearML client."""

    async def go() -> dict[str, Any]:
        async with ClearMLClient(server_settings(sim)) as client:
            return await client.call(endpoint, payload)

    return asyncio.run(go())


def listed_workers(sim: SimServer) -> dict[str, dict[str, Any]]:
    return {w["id"]: w for w in api(sim, "workers.get_all", {}).get("workers", [])}


def task_status(sim: SimServer, task_id: str) -> str:
    return str(api(sim, "tasks.get_by_id", {"task": task_id})["task"]["status"])


def task_log(sim: SimServer, task_id: str) -> str:
    events = api(sim, "events.get_task_log", {"task": task_id, "navigate_earlier": False, "batch_size": 500})
    return "".join(str(e.get("msg", "")) for e in events["events"])


def run_checks(sim: SimServer, *checks: str) -> RunResult:
    """The bot's engine, checks at their DEFAULT parameters, against the simulator."""
    playbook = Playbook(name="live", checks=[CheckEntry(check=c) for c in checks])
    return asyncio.run(run_playbooks([playbook], Settings(), server_settings(sim), trigger="test"))


def problems(result: RunResult) -> list[Any]:
    return [f for f in result.findings if f.severity in ("warning", "critical", "error")]


def wait_reported_since(sim: SimServer, worker_id: str, sim_time: float, timeout: float, fleet: AgentFleet) -> None:
    """Wait until `worker_id` has reported after simulated time `sim_time` (e.g. after the clock jumped)."""

    def fresh() -> bool:
        with sim.state.lock:
            for worker in sim.state.workers.values():
                if worker["id"] == worker_id and worker["last_activity_time"].timestamp() >= sim_time:
                    return True
        return False

    wait_for(f"{worker_id} to report again", fresh, timeout, fleet)
