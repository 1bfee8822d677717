"""Root-cause suppression (issue 13): one cause, one finding, with its consequences folded into it or linked to it
by `caused_by`, over the simulator through the real HTTP client, every shipped playbook at once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
from pydantic import SecretStr

from bot.config import Settings
from bot.engine.findings import Finding, is_problem
from bot.engine.playbook import find_playbooks, load_playbook
from bot.engine.runner import RunResult, run_playbooks
from bot.report import render_text
from bot.sim.fleet import apply_faults, generate_healthy_fleet
from bot.slack.messages.report import render_run
from tests.helpers import server_settings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [load_playbook(p) for p in find_playbooks(REPO / "playbooks")]
SCHEMA = json.loads((REPO / "tests" / "data" / "run-output.schema.json").read_text())


def run_all(sim: Any, **overrides: Any) -> RunResult:
    result = asyncio.run(run_playbooks(SHIPPED, Settings(), server_settings(sim, **overrides)))
    jsonschema.validate(json.loads(json.dumps(result.to_json())), SCHEMA)  # the contract holds with the new keys
    return result


def problems(result: RunResult) -> list[Finding]:
    return [f for f in result.findings if is_problem(f.severity)]


def broken_fleet(*faults: dict[str, Any], workers: int = 12, queues: int = 4) -> dict[str, Any]:
    fleet = generate_healthy_fleet(workers=workers, queues=queues, tasks=60, naming="host", seed=workers)
    apply_faults(fleet, list(faults))
    return fleet


def test_rejected_keys_are_one_finding_listing_the_checks_that_could_not_run(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    result = run_all(sim, access_key=SecretStr("WRONGKEY"), secret_key=SecretStr("WRONGSECRET"))
    [root] = problems(result)  # before: 18 (credentials, the file server's refused token, 16 "could not run")
    assert root.check == "server.credentials" and root.severity == "critical"
    not_run = root.evidence["not_run"]
    assert len(not_run) >= 15 and {"agents.stale", "queues.backlog", "repro.environment"} <= set(not_run)
    assert f"Not run: {len(not_run)} checks" in root.detail
    folded = {s.check for s in root.suppressed}
    assert "storage.fileserver" in folded and root.suppressed_total == len(not_run) + 1
    # the checks that could not run still say so in the run's check list
    assert {c.id for c in result.checks if c.status == "error"} >= set(not_run)


def test_unreachable_server_is_one_finding(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    settings = server_settings(sim)
    sim.stop()
    result = asyncio.run(run_playbooks(SHIPPED, Settings(), settings.model_copy(update={"retries": 0})))
    [root] = problems(result)
    assert root.check == "server.reachable" and "server.credentials" in {s.check for s in root.suppressed}
    assert "storage.fileserver" in {s.check for s in root.suppressed}  # same host: the machine is gone
    assert len(root.evidence["not_run"]) >= 15


def test_file_server_down_folds_the_dataset_findings_that_restate_it(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    sim.fileserver_enabled = False
    [root] = problems(run_all(sim))  # before: the file server plus every dataset "state unreadable"
    assert root.check == "storage.fileserver" and root.severity == "critical"
    folded = {s.check for s in root.suppressed}
    assert folded >= {"datasets.incomplete", "datasets.integrity"}
    assert all(s.subject.kind == "dataset" for s in root.suppressed)


def test_a_missing_file_is_not_folded_into_a_file_server_that_only_refuses_deletes(sim_factory: Any) -> None:
    sim = sim_factory(scenario="incident-zoo")  # delete refused on the file server, and damaged datasets
    result = run_all(sim)
    [fs] = [f for f in result.findings if f.check == "storage.fileserver"]
    assert fs.suppressed_total == 0
    damaged = [f for f in result.findings if f.check == "datasets.integrity" and "cannot be found" in f.title]
    assert len(damaged) >= 3 and all(f.caused_by is None for f in damaged)


def test_unserved_queue_waiting_tasks_are_evidence_not_findings(sim_factory: Any) -> None:
    fleet = broken_fleet({"unserved_queue": {"name": "nobody-serves-me", "tasks": 1300, "waited": 30 * 3600}},
                         {"stuck_at_head": {"queue": 1, "waited": 9 * 3600}})
    result = run_all(sim_factory(scenario=fleet))
    found = problems(result)
    [queue] = [f for f in found if f.check == "agents.unserved_queues"]
    assert queue.subject.name == "nobody-serves-me" and queue.evidence["length"] == 1300
    assert queue.suppressed_total >= 1000 and {s.check for s in queue.suppressed} >= {"queues.stuck_queued"}
    assert len(queue.suppressed) == 50  # listed up to a bound; the total counts them all
    # queues.stuck_queued stays for what it is for: the head of a queue that agents do serve
    stuck = [f for f in found if f.check == "queues.stuck_queued"]
    assert [f.subject.name for f in stuck] == ["waiting-1-0000"] and stuck[0].evidence["position"] == 0
    assert not any("showing the worst" in f.title for f in found)
    roots = [f for f in found if f.caused_by is None]
    assert {f.check for f in roots} == {"agents.unserved_queues", "queues.stuck_queued"}  # before: 100 + summary
    # the served queue with one task stuck at its head waits because of that task
    assert {f.check: f.caused_by for f in found if f.caused_by} == {"queues.backlog": stuck[0].fingerprint}


def test_dead_agent_orphan_and_unserved_queue_are_one_group(sim_factory: Any) -> None:
    fleet = broken_fleet({"dead_agent": {"worker": 0, "silent": 540, "sole_agent": True, "waiting": 3}})
    result = run_all(sim_factory(scenario=fleet))
    found = {f.check: f for f in problems(result)}
    assert set(found) == {"agents.stale", "agents.orphaned_tasks", "agents.unserved_queues"}
    agent = found["agents.stale"]
    assert agent.caused_by is None and agent.subject.id == fleet["workers"][0]["id"]
    for consequence in (found["agents.orphaned_tasks"], found["agents.unserved_queues"]):
        assert consequence.caused_by == agent.fingerprint
    assert sorted(agent.consequences) == sorted(
        (found["agents.orphaned_tasks"].fingerprint, found["agents.unserved_queues"].fingerprint)
    )
    # the queue's waiting tasks fold into the queue, not into findings of their own
    assert found["agents.unserved_queues"].evidence["length"] == 3

    # the reports show the consequences under their root, once
    text = render_text(result, stream=_Sink())
    assert text.count(found["agents.orphaned_tasks"].title) == 1
    root_at = text.index(agent.title)
    assert text.index("↳ critical: " + found["agents.orphaned_tasks"].title) > root_at
    blocks = json.dumps([b.to_dict() for b in render_run(result).blocks], ensure_ascii=False)
    assert blocks.count(found["agents.unserved_queues"].title[:60]) == 1 and "↳" in blocks


class _Sink:
    def write(self, text: str) -> None:
        pass

    def isatty(self) -> bool:
        return False
