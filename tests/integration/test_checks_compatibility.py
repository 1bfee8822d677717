"""server.compatibility over the simulator: versions read from server.info, tasks' installed packages and the agent
banner at the top of task logs, matched against bot/checks/data/compatibility.yaml."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.config import Settings
from bot.engine.findings import Finding
from bot.engine.playbook import CheckEntry, Playbook, load_playbook
from bot.engine.runner import RunResult, run_playbooks
from tests.helpers import server_settings

CHECK = "server.compatibility"


def run(sim: Any, params: dict[str, Any] | None = None, playbooks: list[Playbook] | None = None) -> RunResult:
    books = playbooks or [Playbook(name="test", checks=[CheckEntry(check=CHECK, params=params or {})])]
    return asyncio.run(run_playbooks(books, Settings(), server_settings(sim)))


def entries(result: RunResult) -> dict[str, Finding]:
    assert not [f for f in result.findings if f.severity == "error"], [f.detail for f in result.findings]
    return {f.evidence.get("entry", "none"): f for f in result.findings if f.check == CHECK}


def banner(version: str) -> str:
    return f"Current configuration (clearml_agent v{version}, location: /tmp/.clearml_agent.x1y2z3.cfg):"


def k8s_scenario(agent_version: str, server_version: str = "2.0.0") -> dict[str, Any]:
    """A server with the Kubernetes glue: finished pods' tasks carry the agent banner; one agent is on gpu-box-1."""
    return {
        "name": "k8s",
        "server": {"version": server_version, "api_version": "2.31"},
        "queues": [{"name": "k8s-gpu"}],
        "workers": [{"id": "gpu-box-1:gpu0", "queues": ["k8s-gpu"], "last_activity": "-10s", "last_report": "-10s"}],
        "tasks": [
            {"name": "train-pod-1", "status": "completed", "started": "-5h", "completed": "-4h",
             "last_worker": "clearml-id-4f2c9e", "execution": {"queue": "k8s-gpu"},
             "script": {"requirements": {"pip": "clearml==1.16.2\ntorch==2.3.0\n"}},
             "log": ["task 4f2c9e pulled from k8s-gpu", banner(agent_version), "agent.worker_id = clearml-id-4f2c9e"]},
            {"name": "train-laptop", "status": "completed", "started": "-3h", "completed": "-2h",
             "last_worker": "gpu-box-1:gpu0",
             "script": {"requirements": {"pip": "clearml==1.16.2\n"}},
             "log": [banner("1.9.3")]},
        ],
    }


def test_k8s_glue_agent_on_server_2_is_named_with_its_source(sim_factory: Any) -> None:
    found = entries(run(sim_factory(scenario=k8s_scenario("1.9.3"))))
    assert set(found) == {"k8s-glue-requeue-400"}
    glue = found["k8s-glue-requeue-400"]
    assert glue.severity == "critical" and glue.subject.kind == "server"
    # only the glue's pod counts: gpu-box-1 runs 1.9.3 too, but is a plain agent
    assert [a["worker"] for a in glue.evidence["agents"]] == ["clearml-id-4f2c9e"]
    assert glue.evidence["agents"][0]["task"]["name"] == "train-pod-1"
    assert "https://github.com/clearml/clearml-agent/issues/223" in glue.links
    assert "Cannot skip setting execution queue" in glue.detail and "1.9.2" in glue.remediation
    assert glue.evidence["inventory"]["agent_versions"] == {"1.9.3": 2}
    assert glue.evidence["inventory"]["sdk_versions"] == {"1.16.2": 2}


def test_same_versions_on_an_older_server_or_a_fixed_agent_are_quiet(sim_factory: Any) -> None:
    older = entries(run(sim_factory(scenario=k8s_scenario("1.9.3", server_version="1.17.1"))))
    assert set(older) == {"none"} and older["none"].severity == "ok"
    fixed = entries(run(sim_factory(scenario=k8s_scenario("1.9.2"))))
    assert set(fixed) == {"none"}
    assert fixed["none"].evidence["agent_versions"] == {"1.9.2": 1, "1.9.3": 1}


def test_zoo_pipeline_pins_sdk_and_agent_that_cannot_coexist_and_old_server_gets_its_upgrade_path(
    sim_factory: Any,
) -> None:
    sim = sim_factory(scenario="incident-zoo")
    found = entries(run(sim))
    assert set(found) == {"sdk-2.0-with-agent-1.9.3-requests-pin", "server-2.0-via-1.17"}
    pin = found["sdk-2.0-with-agent-1.9.3-requests-pin"]
    assert pin.severity == "warning"
    assert pin.evidence["tasks"] == [{"id": sim.task_id("pipeline-nightly-retrain"), "name": "pipeline-nightly-retrain",
                                      "sdk": "2.0.1", "agent": "1.9.3"}]
    path = found["server-2.0-via-1.17"]
    assert path.severity == "info" and "must go through 1.17" in path.title  # a note, not a problem
    planned = entries(run(sim, {"planned_upgrade": "2.1.0"}))["server-2.0-via-1.17"]
    assert planned.severity == "warning" and "1.7.0 -> 2.1.0 skips 1.17" in planned.title
    assert "https://github.com/clearml/clearml-server/issues/267" in planned.links


def test_healthy_fleet_and_shipped_playbook_are_quiet(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    found = entries(run(sim))
    assert set(found) == {"none"} and found["none"].severity == "ok"
    shipped = run(sim, playbooks=[load_playbook("playbooks/agents.yaml")])
    assert CHECK in {c.id for c in shipped.checks}
    assert not [f for f in shipped.problems if f.check == CHECK]
