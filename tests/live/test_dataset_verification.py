"""datasets.integrity with `on_agent`, end to end with a real clearml-agent: the bot dispatches the verification
task, the agent (PyPI's clearml-agent, not ours) pulls it and runs the shipped standalone script, which downloads
the dataset's state and chunks from the simulator's file server, re-hashes every file and uploads its JSON result
as a task artifact; the bot's next run reports the planted hash mismatch with the agent's task in the evidence."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.config import Settings
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import run_playbooks
from bot.sim.server import SimServer
from tests.helpers import cityscapes_datasets, server_settings
from tests.live.conftest import AGENT_A, needs_agent, start_agent, task_log, wait_for

QUEUE = "storage-side"


def scenario() -> dict[str, Any]:
    return {
        "name": "live-verification",
        "users": [{"id": "u-ops", "name": "Ops", "role": "admin"}],
        "projects": [{"name": "perception"}],
        "queues": [{"name": QUEUE}, {"name": "default", "system_tags": ["default"]}],
        "datasets": [
            *cityscapes_datasets(),
        ],
    }


def integrity(sim: SimServer) -> dict[str, Any]:
    book = Playbook(name="live", checks=[CheckEntry(check="datasets.integrity", params={"on_agent": QUEUE})])
    result = asyncio.run(run_playbooks([book], Settings(), server_settings(sim), trigger="test"))
    return {f.subject.name: f for f in result.findings if f.check == "datasets.integrity"}


@needs_agent
def test_a_real_agent_verifies_a_dataset_and_the_bot_reports_the_mismatch(sim_factory: Any, fleet: Any) -> None:
    sim = sim_factory(scenario())
    start_agent(fleet, sim, AGENT_A, QUEUE)
    first = integrity(sim)
    assert {f.severity for f in first.values()} == {"info"}
    task_id = first["cityscapes-seg 1.2.0"].evidence["verification_task"]

    def finished() -> bool:
        with sim.state.lock:
            return sim.state.tasks[task_id]["status"] in ("completed", "failed", "stopped")

    wait_for("the agent to run the verification", finished, 180, fleet)
    log = task_log(sim, task_id)
    assert "result uploaded" in log, log[-3000:]
    # the agent gave the task its own configuration file (JSON), as in production
    assert "(JSON)" in log and f"server {sim.api_url}" in log, log[-3000:]
    found = integrity(sim)
    broken = found["cityscapes-seg 1.2.0"]
    assert broken.severity == "critical", (broken.title, broken.evidence)
    assert [m["path"] for m in broken.evidence["mismatched"]] == ["gtFine/bochum_labelIds.png"]
    assert broken.evidence["on_agent"]["worker"] == AGENT_A and broken.evidence["on_agent"]["task"] == task_id
    assert found["cityscapes-seg 1.1.0"].severity == "ok"
