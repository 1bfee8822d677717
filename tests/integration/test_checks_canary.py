"""canary.events over the simulator: the write path (a bot-owned task, events.add_batch, read back) and each backend's
failure named: Elasticsearch read-only (clearml#201) or accepting but not storing, MongoDB, Redis."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.config import Settings
from bot.engine.findings import Finding
from bot.engine.playbook import CheckEntry, Playbook, load_playbook
from bot.engine.runner import RunResult, run_playbooks
from tests.helpers import server_settings, sim_data

CHECK = "canary.events"


def run(sim: Any, params: dict[str, Any] | None = None, playbooks: list[Playbook] | None = None) -> RunResult:
    books = playbooks or [Playbook(name="t", checks=[CheckEntry(check=CHECK, params=params or {})])]
    return asyncio.run(run_playbooks(books, Settings(), server_settings(sim)))


def canary(result: RunResult) -> Finding:
    [finding] = [f for f in result.findings if f.check == CHECK]
    return finding


def canary_tasks(sim: Any) -> list[dict[str, Any]]:
    return [t for t in sim.iter_tasks() if "clearml-chatops-canary" in (t.get("tags") or [])]


def test_healthy_write_path_round_trip_reuses_one_hidden_task(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    first = canary(run(sim))
    assert first.severity == "ok" and "written and read back" in first.title
    [task] = canary_tasks(sim)
    project = sim.state.projects[task["project"]]
    assert project["name"] == "clearml-chatops/canaries" and "hidden" in project["system_tags"]
    log = sim_data(sim, "events.get_task_log", {"task": task["id"]})["events"]
    assert any("clearml-chatops canary" in e["msg"] for e in log)
    second = canary(run(sim))
    assert second.severity == "ok" and len(canary_tasks(sim)) == 1  # the same task, not one per run
    assert second.evidence["events_held"] == 4  # two runs, a line and a scalar each
    assert len(sim.calls_to("tasks.create")) == 1 and len(sim.calls_to("projects.create")) == 1


def test_elasticsearch_read_only_is_named_with_the_fix(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    sim.state.faults.events_read_only = True
    finding = canary(run(sim))
    assert finding.severity == "critical" and finding.evidence["backend"] == "elasticsearch"
    assert finding.evidence["failure"] == "read_only" and "read-only" in finding.title
    assert "cluster_block_exception" in finding.evidence["server_said"]
    assert finding.evidence["response"]["code"] == 500 and finding.evidence["response"]["subcode"] == 100
    assert "read_only_allow_delete" in finding.remediation and "flood-stage" in finding.remediation
    # the rest of the API answers: the canary task was created (MongoDB fine) and the workers listed (Redis fine)
    assert len(canary_tasks(sim)) == 1
    sim.clear_faults()
    assert canary(run(sim)).severity == "ok"


def test_accepted_but_never_readable(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    sim.state.faults.events_drop_writes = True
    finding = canary(run(sim, {"read_timeout": "1s"}))
    assert finding.severity == "critical" and finding.evidence["failure"] == "not_readable"
    assert "accepted 2 events, but the log line and the scalar could not be read back" in finding.detail


def test_mongodb_and_redis_failures_name_their_backend(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    message = "General data error (ServerSelectionTimeoutError: mongo:27017: [Errno 111] Connection refused)"
    sim.set_fault("tasks.create", status=500, subcode=100, message=message)
    mongo = canary(run(sim))
    assert mongo.evidence["backend"] == "mongodb" and mongo.evidence["step"] == "create the canary task"
    assert "clearml-mongo" in mongo.remediation and "ServerSelectionTimeoutError" in mongo.detail
    sim.clear_faults()
    sim.set_fault("workers.get_all", status=500, subcode=0,
                  message="General server error (Error 111 connecting to redis:6379. Connection refused.)")
    redis = canary(run(sim))
    assert redis.evidence["backend"] == "redis" and "clearml-redis" in redis.remediation
    assert redis.fingerprint != mongo.fingerprint  # one incident per backend


def test_read_only_zoo_and_shipped_playbook(sim_factory: Any) -> None:
    zoo = sim_factory(scenario="incident-zoo")
    shipped = run(zoo, playbooks=[load_playbook("playbooks/agents.yaml")])
    finding = canary(shipped)
    assert finding.severity == "critical" and finding.evidence["failure"] == "read_only"
    healthy = run(sim_factory(scenario="healthy"), playbooks=[load_playbook("playbooks/agents.yaml")])
    assert canary(healthy).severity == "ok"
