"""agents.* checks over the simulator through the real HTTP client: the zoo's broken fleet, the healthy fleet,
and a healthy fleet whose agents die as the simulator's clock moves on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bot.config import Settings
from bot.engine.findings import Finding, Subject
from bot.engine.playbook import CheckEntry, Playbook, load_playbook
from bot.engine.runner import RunResult, run_playbooks
from tests.helpers import server_settings

AGENT_CHECKS = ("agents.stale", "agents.missing", "agents.orphaned_tasks", "agents.unserved_queues")
EXPECTED = [{"pattern": "gpu-*", "min": 4}, {"pattern": "dynamic_worker:gpu-a10:*", "min": 2}]
SPOT = "dynamic_worker:gpu-a10:g5.xlarge:i-0abc12de34f567890"


def run(sim: Any, *checks: str | tuple[str, dict[str, Any]], playbooks: list[Playbook] | None = None) -> RunResult:
    entries = [CheckEntry(check=c) if isinstance(c, str) else CheckEntry(check=c[0], params=c[1]) for c in checks]
    books = playbooks if playbooks is not None else [Playbook(name="test", checks=entries)]
    return asyncio.run(run_playbooks(books, Settings(), server_settings(sim)))


def by_subject(result: RunResult, check_id: str) -> dict[str, Finding]:
    found: dict[str, Finding] = {}
    for f in result.findings:
        if f.check == check_id:
            assert f.subject.id not in found, f"two findings for one subject: {f.subject.id}"
            found[f.subject.id] = f
    return found


def all_agent_checks(sim: Any) -> RunResult:
    return run(sim, "agents.stale", ("agents.missing", {"expected": EXPECTED}), "agents.orphaned_tasks",
               "agents.unserved_queues")


def test_zoo_stale_and_dead_agents(sim_factory: Any) -> None:
    result = all_agent_checks(sim_factory(scenario="zoo-fleet"))
    assert not [f for f in result.findings if f.severity == "error"], [f.detail for f in result.findings]
    stale = by_subject(result, "agents.stale")
    assert set(stale) == {"gpu-box-2:gpu0", "cpu-box-1:cpu:0", SPOT}
    box2 = stale["gpu-box-2:gpu0"]
    assert box2.severity == "warning" and box2.actions == ["rotate"]
    assert box2.evidence["running_task"]["name"] == "finetune-llama3-8b-lora"
    assert [q["name"] for q in box2.evidence["queues"]] == ["gpu-train"]
    assert 170 <= box2.evidence["last_activity"]["age_s"] <= 200 and box2.evidence["last_activity"]["at"]
    assert any("workers-and-queues/workers" in link for link in box2.links)
    spot = stale[SPOT]
    assert spot.severity == "critical" and "i-0abc12de34f567890" in spot.remediation
    # every evidence object is plain JSON (ISO strings, not datetimes)
    json.dumps([f.model_dump(mode="json") for f in result.findings])


def test_zoo_missing_orphaned_and_unserved(sim_factory: Any) -> None:
    result = all_agent_checks(sim_factory(scenario="zoo-fleet"))
    missing = by_subject(result, "agents.missing")
    assert set(missing) == {"dynamic_worker:gpu-a10:*"}
    assert missing["dynamic_worker:gpu-a10:*"].severity == "warning"
    assert missing["dynamic_worker:gpu-a10:*"].evidence["found"] == 1
    assert missing["dynamic_worker:gpu-a10:*"].subject.kind == "worker"

    orphaned = {f.subject.name: f for f in by_subject(result, "agents.orphaned_tasks").values()}
    assert set(orphaned) == {"eval-detector-nightly", "sweep-lr-trial-17", "notebook-anchor-tuning"}
    nightly = orphaned["eval-detector-nightly"]
    assert nightly.severity == "critical" and nightly.actions == ["requeue", "abort"]
    assert nightly.related == [Subject(kind="worker", id=SPOT)]
    assert nightly.evidence["queue"]["name"] == "gpu-a10-spot"
    sweep = orphaned["sweep-lr-trial-17"]
    assert sweep.evidence["reasons"] == ["worker_gone", "silent"] and "no longer registered" in sweep.title
    assert orphaned["notebook-anchor-tuning"].severity == "warning"  # a laptop run: only silent

    unserved = {f.subject.name: f for f in by_subject(result, "agents.unserved_queues").values()}
    assert set(unserved) == {"cpu-preprocess", "gpu-a10-spot"}
    assert unserved["cpu-preprocess"].severity == "critical"  # waiting 9 h > 30 m
    assert unserved["cpu-preprocess"].related == [Subject(kind="worker", id="cpu-box-1:cpu:0")]
    assert unserved["cpu-preprocess"].evidence["oldest_entry"]["task"]["name"] == "tokenize-wiki-shard-07"
    assert unserved["gpu-a10-spot"].severity == "warning"
    assert unserved["gpu-a10-spot"].related == [Subject(kind="worker", id=SPOT)]


def test_healthy_fleet_is_quiet_with_defaults_and_shipped_playbooks(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy-fleet")
    result = all_agent_checks(sim)
    assert not result.problems, [f.title for f in result.problems]
    shipped = run(sim, playbooks=[load_playbook("playbooks/health.yaml"), load_playbook("playbooks/agents.yaml")])
    assert not [f for f in shipped.problems if f.area in ("agents",)], [f.title for f in shipped.problems]


def test_agents_going_silent_as_time_passes(sim_factory: Any) -> None:
    # Every agent of this fleet falls silent at once (the clock moves, nobody reports): since issue 13 that is one
    # fleet-wide finding whose folded members carry the per-agent severities, not eight findings.
    sim = sim_factory(scenario="healthy-fleet")
    sim.clock.advance(65)  # two missed reports (65-90 s of silence): named at once, but only as info
    [early] = by_subject(run(sim, "agents.stale"), "agents.stale").values()
    assert early.severity == "info" and early.suppressed_total == 8
    assert all("missed its last reports" in s.title and s.severity == "info" for s in early.suppressed)
    sim.clock.advance(85)  # every agent's last report is now 150-175 s old
    [stale] = by_subject(run(sim, "agents.stale"), "agents.stale").values()
    assert stale.severity == "warning" and {s.severity for s in stale.suppressed} == {"warning"}
    assert len(stale.suppressed) == 8
    sim.clock.advance(350)  # 500-525 s: past dead_after, still listed (the server drops them at 600 s)
    result = run(sim, ("agents.stale", {"dead_after": "8m"}), "agents.orphaned_tasks")
    [dead] = by_subject(result, "agents.stale").values()
    assert dead.severity == "critical" and {s.severity for s in dead.suppressed} == {"critical"}
    orphaned = [s for s in dead.suppressed if s.check == "agents.orphaned_tasks"]
    assert len(orphaned) == 4 and not by_subject(result, "agents.orphaned_tasks")


def test_vanished_agents_orphan_their_tasks_and_leave_queues_unserved(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy-fleet")
    sim.clock.advance(11 * 60)  # past the 600 s registration timeout: the server forgets every agent
    result = all_agent_checks(sim)
    assert by_subject(result, "agents.stale") == {}  # nothing left to be stale
    missing = by_subject(result, "agents.missing")
    assert {f.severity for f in missing.values()} == {"critical"} and len(missing) == 2
    orphaned = {f.subject.name: f for f in by_subject(result, "agents.orphaned_tasks").values()}
    assert set(orphaned) == {"train-yolov8m-coco-ft", "train-detr-r50", "finetune-mistral-7b-qlora",
                             "AWS Autoscaler gpu-a10"}
    assert all(f.severity == "critical" and f.evidence["reasons"][0] == "worker_gone" for f in orphaned.values())
    [unserved] = by_subject(result, "agents.unserved_queues").values()
    assert unserved.subject.name == "gpu-train" and unserved.severity == "warning"
    assert unserved.related == []  # the server no longer lists the agents that served it


def test_filters_and_thresholds_from_params(sim_factory: Any) -> None:
    sim = sim_factory(scenario="zoo-fleet")
    result = run(sim, ("agents.stale", {"stale_after": "5m", "dead_after": "10m", "ignore": ["cpu-*"]}),
                 ("agents.unserved_queues", {"queues": ["gpu-*"], "critical_wait": "10m"}))
    stale = by_subject(result, "agents.stale")
    assert stale.pop("gpu-box-2:gpu0").severity == "info"  # 3 m: under the raised stale_after, only noted
    assert set(stale) == {SPOT} and stale[SPOT].severity == "warning"  # 9 m: stale, not yet dead at 10 m
    [unserved] = by_subject(result, "agents.unserved_queues").values()
    assert unserved.subject.name == "gpu-a10-spot" and unserved.severity == "critical"


def test_a_forbidden_endpoint_is_an_error_finding_and_others_still_report(sim_factory: Any) -> None:
    sim = sim_factory(scenario="zoo-fleet")
    sim.set_fault("workers.get_all", status=403, subcode=20, message="Forbidden (not allowed for role)")
    result = run(sim, "agents.stale", "agents.orphaned_tasks", "queues.stuck_queued")
    errors = [f for f in result.findings if f.severity == "error"]
    assert {f.check for f in errors} == {"agents.stale", "agents.orphaned_tasks", "queues.stuck_queued"}
    assert all("Forbidden" in f.detail and "workers.get_all" in f.detail for f in errors)
    sim.clear_faults()
    sim.set_fault("tasks.get_all", status=403, subcode=20, message="Forbidden (not allowed for role)")
    result = run(sim, "agents.stale", "agents.orphaned_tasks")
    assert by_subject(result, "agents.stale")  # still reports the stale agents
    assert [f.severity for f in result.findings if f.check == "agents.orphaned_tasks"] == ["error"]
