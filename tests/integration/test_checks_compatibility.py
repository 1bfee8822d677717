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
    shipped = run(sim, playbooks=[load_playbook("playbooks/versions.yaml")])
    assert CHECK in {c.id for c in shipped.checks}
    assert not [f for f in shipped.problems if f.check == CHECK]


# -- cost on a schedule: versions per worker are remembered between runs (the store), log reads are capped -------


def fleet_with_agents(version: str, workers: int = 12) -> dict[str, Any]:
    from bot.sim.fleet import apply_faults, generate_healthy_fleet

    fleet = generate_healthy_fleet(workers=workers, queues=3, tasks=60, seed=7)
    apply_faults(fleet, [{"agent_version": {"version": version}}])
    return fleet


def run_recorded(sim: Any, store: Any, params: dict[str, Any] | None = None) -> tuple[RunResult, Finding]:
    book = Playbook(name="versions", checks=[CheckEntry(check=CHECK, params=params or {})])
    server = server_settings(sim)
    result = asyncio.run(run_playbooks([book], Settings(), server,
                                       agent_versions=lambda: store.agent_versions(server.api_url)))
    store.record_run(result)
    [finding] = [f for f in result.findings if f.check == CHECK]
    return result, finding


def test_agent_versions_are_read_a_few_logs_per_run_and_remembered(sim_factory: Any, tmp_path: Any) -> None:
    from bot.store import Store

    sim = sim_factory(scenario=fleet_with_agents("2.0.0"))
    store = Store(tmp_path / "store.db")
    try:
        reads, known, found = [], [], []
        for _ in range(4):
            result, finding = run_recorded(sim, store, {"agent_logs": 5})
            reads.append(result.calls_by_endpoint.get("events.get_task_log", 0))
            known.append(finding.evidence["inventory"]["agents_identified"])
            found.append(finding.evidence.get("entry"))
        # 12 agents, 5 logs a run: 5, 5, 2, then none; what earlier runs read keeps counting
        assert reads == [5, 5, 2, 0]
        assert known == [5, 10, 12, 12]
        # agent 2.0.0 on an open-source server is named from the first run on, and stays named
        assert found == ["agent-2.0.0-open-source-server"] * 4
        assert len(store.agent_versions(server_settings(sim).api_url)) == 12
        # an idle agent that ran another task since: its known version stands (no read) until it re-registers
        # (an upgrade restarts the agent), then that one log is read again
        idle = sorted((doc["id"], key) for key, doc in sim.state.workers.items() if not doc.get("task"))[0]
        with sim.state.lock:
            now = sim.state.clock.now()
            donor = next(t for t in sim.state.tasks.values()
                         if t.get("status") == "completed" and t.get("last_worker") != idle[0])
            sim.state.update_task(donor["id"], {"last_worker": idle[0], "last_update": now})
        result, finding = run_recorded(sim, store, {"agent_logs": 5})
        assert finding.severity == "critical"
        assert result.calls_by_endpoint.get("events.get_task_log", 0) == 0
        with sim.state.lock:
            sim.state.workers[idle[1]]["register_time"] = sim.state.clock.now()
        result, finding = run_recorded(sim, store, {"agent_logs": 5})
        assert result.calls_by_endpoint.get("events.get_task_log", 0) == 1
        assert finding.evidence["inventory"]["agents_known_from_earlier_runs"] == 11
    finally:
        store.close()


def test_without_a_store_a_run_reads_only_up_to_the_cap_and_says_so(sim_factory: Any) -> None:
    sim = sim_factory(scenario=fleet_with_agents("1.9.3"))
    result = run(sim, {"agent_logs": 3})
    [finding] = [f for f in result.findings if f.check == CHECK]
    assert finding.severity == "ok"
    assert result.calls_by_endpoint.get("events.get_task_log", 0) == 3
    assert finding.evidence["agents_not_read_yet"] == 9
    assert "9 agent(s) not identified yet" in finding.detail
