"""API calls of server.compatibility per run (`python -m bench.versions_cost`): issue 15's cost question.

The agents playbook against the incident zoo and a generated 40-agent fleet, with and without
server.compatibility, then the versions playbook run after run with a store (agent versions remembered per
worker, `agent_logs` log reads at most per run)."""

from __future__ import annotations

import asyncio
import functools
import tempfile
from pathlib import Path
from typing import Any

from bench.signal import _server_settings
from bot.config import Settings
from bot.engine.playbook import CheckEntry, load_playbook
from bot.engine.runner import RunResult, run_playbooks
from bot.sim.fleet import generate_healthy_fleet
from bot.sim.server import SimServer
from bot.store import Store

REPO = Path(__file__).resolve().parents[1]


def _logs(result: RunResult) -> int:
    return result.calls_by_endpoint.get("events.get_task_log", 0)


def measure() -> list[str]:
    agents = load_playbook(REPO / "playbooks" / "agents.yaml")
    versions = load_playbook(REPO / "playbooks" / "versions.yaml")
    # agents.yaml as it was before the move: server.compatibility inside, reading up to 30 logs a run
    old_agents = agents.model_copy(update={"checks": [
        *agents.checks, CheckEntry(check="server.compatibility", params={"agent_logs": 30})]})
    fleets: list[tuple[str, Any]] = [
        ("incident-zoo", "incident-zoo"),
        ("generated 40 agents", generate_healthy_fleet(workers=40, queues=6, tasks=200, seed=5)),
    ]
    out = []
    for label, scenario in fleets:
        sim = SimServer(scenario=scenario).start()
        try:
            server = _server_settings(sim)
            before = asyncio.run(run_playbooks([old_agents], Settings(), server))
            now = asyncio.run(run_playbooks([agents], Settings(), server))
            out.append(f"{label}: agents.yaml with server.compatibility (agent_logs 30, no memory) {before.api_calls} "
                       f"calls ({_logs(before)} log reads); agents.yaml now {now.api_calls} calls")
            with tempfile.TemporaryDirectory() as tmp:
                store = Store(Path(tmp) / "store.db")
                known = functools.partial(store.agent_versions, server.api_url)
                calls = []
                for _ in range(10):
                    result = asyncio.run(run_playbooks([versions], Settings(), server, agent_versions=known))
                    store.record_run(result)
                    calls.append(f"{result.api_calls}/{_logs(result)}")
                store.close()
            out.append(f"{label}: versions.yaml runs 1-10 with a store, calls/log reads: {', '.join(calls)}")
        finally:
            sim.stop()
    return out


if __name__ == "__main__":
    print("\n".join(measure()))
