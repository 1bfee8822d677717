"""queues.canary with a real clearml-agent: the canary (a standalone script, no repository, no requirements) is
pulled, run and completed by the agent, and the next run reports pickup and run time; server.compatibility reads
the agent's version from the banner it printed at the top of the canary's log."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.config import Settings
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import run_playbooks
from bot.sim.server import SimServer
from tests.helpers import server_settings
from tests.live.conftest import AGENT_A, needs_agent, start_agent, task_log, wait_for


def check(sim: SimServer, check_id: str, **params: Any) -> list[Any]:
    book = Playbook(name="live", checks=[CheckEntry(check=check_id, params=params)])
    result = asyncio.run(run_playbooks([book], Settings(), server_settings(sim), trigger="test"))
    return [f for f in result.findings if f.check == check_id]


@needs_agent
def test_a_real_agent_runs_the_queue_canary(live_sim: SimServer, fleet: Any) -> None:
    sim = live_sim
    start_agent(fleet, sim, AGENT_A, "cpu-b")
    [sent] = check(sim, "queues.canary", queues=["cpu-b"])
    assert sent.severity == "ok" and "canary sent" in sent.title
    canary_id = sent.evidence["canary"]["id"]

    def done() -> bool:
        with sim.state.lock:
            return sim.state.tasks[canary_id]["status"] in ("completed", "failed")

    wait_for("the agent to run the canary", done, 120, fleet)
    [result] = check(sim, "queues.canary", queues=["cpu-b"])
    assert result.severity == "ok", (result.title, result.evidence)
    assert f"by {AGENT_A}" in result.title and result.evidence["run_s"] is not None
    assert result.evidence["pickup_s"] is not None and result.evidence["pickup_s"] < 120
    assert "clearml-chatops queue canary: python" in task_log(sim, canary_id)

    [compat] = check(sim, "server.compatibility")
    versions = compat.evidence.get("agent_versions") or compat.evidence.get("inventory", {}).get("agent_versions")
    assert versions, compat.evidence  # the banner "clearml_agent vX.Y.Z" was found in the canary's log
