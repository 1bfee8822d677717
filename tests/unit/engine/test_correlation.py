"""Root-cause correlation as a pure function (bot/engine/correlation.py): what folds, what links, what stays."""

from __future__ import annotations

from typing import Any

from bot.engine.correlation import correlate
from bot.engine.findings import Finding, Subject

API = "https://api.clearml.example.com"
FILES = "https://files.clearml.example.com"


def f(check: str, severity: str, kind: str, sid: str, **extra: Any) -> Finding:
    return Finding(check=check, severity=severity, title=extra.pop("title", f"{check} on {sid}"),  # type: ignore[arg-type]
                   subject=Subject(kind=kind, id=sid, name=extra.pop("name", sid)), **extra)  # type: ignore[arg-type]


def error(check: str, detail: str) -> Finding:
    return f(check, "error", "server", API, title=f"Check {check} could not run", detail=detail,
             fingerprint=f"{check}|error|{API}")


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {x.check: x for x in findings}


def test_a_slow_server_explains_checks_that_ran_out_of_time_but_not_a_checks_own_bug() -> None:
    slow = f("server.reachable", "warning", "server", API, title="ClearML API server is slow")
    timeout = error("queues.backlog", "did not finish within the run deadline of 60s")
    bug = error("repro.compare", "KeyError: 'script' (at repro.py:12)")
    out = by_check(correlate([slow, timeout, bug], api_url=API, files_url=FILES))
    assert set(out) == {"server.reachable", "repro.compare"}
    assert out["server.reachable"].evidence["not_run"] == ["queues.backlog"]
    assert out["server.reachable"].severity == "warning"  # an error folded in does not make the fleet worse


def test_unrelated_findings_are_untouched() -> None:
    stale = f("agents.stale", "warning", "worker", "gpu-1:gpu0", evidence={"silent_s": 200})
    env = f("repro.environment", "warning", "task", "t1")
    out = correlate([stale, env], api_url=API, files_url=FILES)
    assert out == [stale, env]
    assert all(x.caused_by is None and not x.consequences and not x.suppressed for x in out)


def test_a_queue_folded_into_a_fleet_event_brings_its_waiting_tasks() -> None:
    workers = [f"gpu-{i}:gpu0" for i in range(6)]
    stale = [f("agents.stale", "warning", "worker", w, evidence={"silent_s": 200 + i, "ip": f"10.0.0.{i}"})
             for i, w in enumerate(workers)]
    queue = f("agents.unserved_queues", "warning", "queue", "q1", evidence={
        "silent_workers": [{"id": w} for w in workers[:2]], "queue": {"id": "q1", "name": "gpu"}})
    waiting = [f("queues.stuck_queued", "warning", "task", f"t{i}", evidence={"queue": {"id": "q1"}, "position": i})
               for i in range(3)]
    [fleet] = correlate([*stale, queue, *waiting], api_url=API, files_url=FILES, registered_agents=10)
    assert fleet.subject.kind == "server" and fleet.evidence["count"] == 6 and fleet.evidence["share"] == 0.6
    assert fleet.evidence["common_subnet"] == "10.0.0.0/24"  # a shared network is named in the causes
    assert "10.0.0.0/24" in fleet.detail
    assert fleet.suppressed_total == 6 + 1 + 3  # the agents, the queue, and the queue's waiting tasks


def test_under_the_share_or_the_count_agents_stay_individual() -> None:
    stale = [f("agents.stale", "warning", "worker", f"gpu-{i}:gpu0", evidence={"silent_s": 200}) for i in range(5)]
    assert len(correlate(stale, api_url=API, registered_agents=20)) == 5  # 25 % of the fleet
    assert len(correlate(stale[:4], api_url=API, registered_agents=4)) == 4  # fewer than five


def test_consequences_chain_to_the_root_not_to_an_intermediate() -> None:
    agent = f("agents.stale", "critical", "worker", "gpu-1:gpu0", evidence={"silent_s": 540})
    orphan = f("agents.orphaned_tasks", "critical", "task", "t1",
               evidence={"last_worker": "gpu-1:gpu0", "reasons": ["worker_dead"], "queue": {"id": "q1"}})
    queue = f("agents.unserved_queues", "warning", "queue", "q1", evidence={"silent_workers": [{"id": "gpu-1:gpu0"}]})
    out = by_check(correlate([queue, orphan, agent], api_url=API))
    root = out["agents.stale"]
    assert out["agents.orphaned_tasks"].caused_by == root.fingerprint
    assert out["agents.unserved_queues"].caused_by == root.fingerprint
    assert root.caused_by is None and len(root.consequences) == 2


def test_a_task_near_the_watchdog_is_one_finding_and_a_dead_agents_consequence() -> None:
    risk = f("agents.watchdog_risk", "critical", "task", "t1", evidence={"last_worker": None, "silent_s": 6600})
    orphan = f("agents.orphaned_tasks", "warning", "task", "t1", evidence={"reasons": ["silent"]})
    [only] = correlate([orphan, risk], api_url=API)
    assert only.check == "agents.watchdog_risk" and [s.check for s in only.suppressed] == ["agents.orphaned_tasks"]

    agent = f("agents.stale", "critical", "worker", "gpu-1:gpu0", evidence={"silent_s": 6700})
    left = f("agents.watchdog_risk", "critical", "task", "t2", evidence={"last_worker": "gpu-1:gpu0"})
    other = f("agents.orphaned_tasks", "warning", "task", "t3", evidence={"reasons": ["silent"]})
    out = {x.subject.id: x for x in correlate([left, other, agent], api_url=API)}
    assert out["t2"].caused_by == out["gpu-1:gpu0"].fingerprint
    assert out["t3"].caused_by is None  # another task's silence is not folded
