"""Mass events (issue 13): many agents falling silent in the same minute or two are one fleet-wide finding naming
the likely shared cause; a burst of failed tasks with one cause is one finding listing the tasks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.engine.findings import Finding, is_problem
from bot.engine.playbook import find_playbooks, load_playbook
from bot.engine.runner import RunResult, run_playbooks
from bot.sim.fleet import apply_faults, generate_healthy_fleet
from tests.helpers import server_settings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [load_playbook(p) for p in find_playbooks(REPO / "playbooks")]


def run_fleet(sim_factory: Any, faults: list[dict[str, Any]], *, workers: int = 12, queues: int = 4,
              correlation: bool = True) -> RunResult:
    fleet = generate_healthy_fleet(workers=workers, queues=queues, tasks=60, naming="host", seed=3)
    apply_faults(fleet, faults, seed=3)
    sim = sim_factory(scenario=fleet)
    return asyncio.run(run_playbooks(SHIPPED, Settings(), server_settings(sim), correlation=correlation))


def problems(result: RunResult) -> list[Finding]:
    return [f for f in result.findings if is_problem(f.severity)]


def test_two_thousand_agents_stopping_at_once_are_one_finding(sim_factory: Any) -> None:
    result = run_fleet(sim_factory, [{"mass_silence": {"share": 1.0, "silent": 200}}], workers=2000, queues=20)
    # before: one finding per agent, 2,000 of them (only agent findings are counted: on a loaded machine the
    # simulator serving 2,000 workers may also answer slower than server.reachable's slow_after)
    [fleet] = [f for f in problems(result) if f.area == "agents"]
    assert fleet.check == "agents.stale" and fleet.subject.kind == "server"
    assert fleet.evidence["count"] == 2000 and fleet.evidence["registered"] == 2000
    assert len(fleet.evidence["workers"]) == 200 and fleet.evidence["workers_omitted"] == 1800
    assert fleet.suppressed_total >= 2000 and len(fleet.suppressed) == 50
    assert "2000 of 2000 agents stopped reporting at the same time" in fleet.title
    for cause in ("API server", "Redis", "network", "credentials rotation"):
        assert cause in fleet.detail
    assert fleet.evidence["likely_causes"] == ["api_server", "redis", "network", "credentials_rotation"]


def test_a_third_of_the_fleet_with_their_tasks_and_queues_fold_into_the_fleet_finding(sim_factory: Any) -> None:
    result = run_fleet(sim_factory, [{"mass_silence": {"share": 0.5, "silent": 560}}], workers=20, queues=4)
    [fleet] = problems(result)
    assert fleet.severity == "critical" and fleet.evidence["count"] == 10 and fleet.evidence["share"] == 0.5
    folded = {s.check for s in fleet.suppressed}
    assert folded >= {"agents.stale", "agents.orphaned_tasks"}  # their agents likely still run them
    uncorrelated = problems(run_fleet(sim_factory, [{"mass_silence": {"share": 0.5, "silent": 560}}], workers=20,
                                      queues=4, correlation=False))
    assert len([f for f in uncorrelated if f.check == "agents.stale"]) == 10


def test_a_few_agents_or_agents_silent_at_different_times_stay_individual(sim_factory: Any) -> None:
    few = run_fleet(sim_factory, [{"dead_agent": {"worker": i, "silent": 300}} for i in range(4)])
    assert len([f for f in problems(few) if f.check == "agents.stale" and f.subject.kind == "worker"]) == 4
    # six of twelve, but their silences began minutes apart: six separate failures, not one shared cause
    spread = run_fleet(sim_factory, [{"dead_agent": {"worker": i, "silent": 150 + 60 * i}} for i in range(6)])
    stale = [f for f in problems(spread) if f.check == "agents.stale"]
    assert len(stale) == 6 and all(f.subject.kind == "worker" for f in stale)


def test_a_burst_of_failures_with_one_cause_is_one_finding_listing_the_tasks(sim_factory: Any) -> None:
    result = run_fleet(sim_factory, [{"failure_burst": {"tasks": 260}}])
    [burst] = problems(result)
    assert burst.check == "repro.failure_causes" and burst.severity == "critical"
    assert burst.evidence["cause"] == "missing_module" and burst.evidence["count"] == 200
    assert len(burst.evidence["tasks"]) > 5 and "torchmetrics" in burst.detail
    # the 60 failures beyond max_tasks (not read) are the same burst, not a second finding
    assert [s.title for s in burst.suppressed] == [
        "60 more failed tasks in the window, not classified (max_tasks=200)"
    ]


def test_a_burst_of_upload_failures_on_one_bucket_is_one_finding(sim_factory: Any) -> None:
    line = ("clearml.storage - ERROR - Failed uploading: An error occurred (AccessDenied) when calling the PutObject "
            "operation: Access Denied s3://ml-artifacts-prod/models/model.pt")
    result = run_fleet(sim_factory, [{"failure_burst": {"tasks": 30, "line": line}}])
    [burst] = problems(result)  # before: 30 storage.upload_failures findings and the cause finding
    assert burst.check == "repro.failure_causes" and burst.evidence["cause"] == "storage"
    assert burst.suppressed_total == 30 and {s.check for s in burst.suppressed} == {"storage.upload_failures"}
