"""server.events_canary over the simulator: the write path (a bot-owned task, events.add_batch, read back) and each
backend's failure named: Elasticsearch read-only (clearml#201) or accepting but not storing, MongoDB, Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from bot.config import Settings
from bot.engine.findings import Finding
from bot.engine.playbook import CheckEntry, Playbook, load_playbook
from bot.engine.runner import RunResult, run_playbooks
from tests.helpers import server_settings, sim_data, sim_request

CHECK = "server.events_canary"


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


# ================================================================================================ queues.canary

QCHECK = "queues.canary"


def qrun(sim: Any, **params: Any) -> dict[str, Finding]:
    book = Playbook(name="t", checks=[CheckEntry(check=QCHECK, params={"queues": ["cpu-preprocess"], **params})])
    result = asyncio.run(run_playbooks([book], Settings(), server_settings(sim)))
    assert not [f for f in result.findings if f.severity == "error"], [f.detail for f in result.findings]
    return {f.subject.name: f for f in result.findings if f.check == QCHECK}


def agent_runs_next(sim: Any, queue: str, worker: str, lines: list[str], *, fail: bool = False,
                    seconds: float = 5) -> str:
    """What a clearml-agent does with the next entry of `queue`: pull it, start it, log, finish or fail it."""
    entry = sim_data(sim, "queues.get_next_task", {"queue": sim.queue_id(queue)})["entry"]
    task = entry["task"]
    sim_request(sim, "tasks.started", {"task": task}, headers={"X-ClearML-Worker": worker}).raise_for_status()
    # its next report carries the task: the server records the task's last_worker from it
    sim_data(sim, "workers.status_report", {"worker": worker, "timestamp": int(sim.clock.time() * 1000),
                                            "task": task, "queue": sim.queue_id(queue)})
    body = "\n".join(json.dumps({"type": "log", "task": task, "msg": line, "worker": worker}) for line in lines)
    httpx.post(f"{sim.api_url}/events.add_batch", content=body.encode(),
               headers={"Authorization": f"Bearer {sim.issue_token()}"}, timeout=10).raise_for_status()
    sim.clock.advance(seconds)
    if fail:
        sim_data(sim, "tasks.failed", {"task": task, "status_reason": "worker execution exit code 1"})
    else:
        sim_data(sim, "tasks.completed", {"task": task})
    return task


def test_queue_canary_round_trip_on_a_served_queue(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    first = qrun(sim)
    sent = first["cpu-preprocess"]
    assert sent.severity == "ok" and "canary sent" in sent.title
    [task] = [t for t in sim.iter_tasks() if t["name"] == "queue canary: cpu-preprocess"]
    assert task["status"] == "queued" and task["script"]["diff"].startswith("import platform")
    assert "clearml-chatops-queue-canary" in task["tags"] and not task["script"].get("repository")
    assert qrun(sim)["cpu-preprocess"].title.endswith("canary waiting for an agent")  # never two in flight
    assert len(sim.calls_to("tasks.enqueue")) == 1

    sim.clock.advance(20)
    worker = "cpu-node-01:cpu:0"
    agent_runs_next(sim, "cpu-preprocess", worker, ["clearml-chatops queue canary: python 3.10.12 on cpu-node-01"],
                    seconds=7)
    done = qrun(sim)["cpu-preprocess"]
    assert done.severity == "ok" and f"by {worker}" in done.title
    assert 19 <= done.evidence["pickup_s"] <= 25 and 6 <= done.evidence["run_s"] <= 8
    # the next round waits `every` after completion, then reuses the same task (reset), not a new one
    sim.clock.advance(3601)
    assert "canary picked up" in qrun(sim)["cpu-preprocess"].title
    assert len(sim.calls_to("tasks.create")) == 1 and len(sim.calls_to("tasks.reset")) == 1
    assert [t["status"] for t in sim.iter_tasks() if t["name"] == "queue canary: cpu-preprocess"] == ["queued"]


def test_queue_canary_not_picked_up_or_failing_is_critical_with_the_agent_log(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    qrun(sim)
    sim.clock.advance(11 * 60)  # nobody pulls it (the simulator's agents are not real): pickup timeout passed
    stuck = qrun(sim)["cpu-preprocess"]
    assert stuck.severity == "critical" and "no agent picked up the canary in 11 min" in stuck.title
    assert stuck.evidence["waited_s"] >= 660

    failed_on = "cpu-node-01:cpu:1"
    agent_runs_next(sim, "cpu-preprocess", failed_on, [
        "Collecting numpy==1.26.4",
        "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device",
        "clearml_agent: ERROR: Could not install task requirements!",
    ], fail=True)
    failed = qrun(sim)["cpu-preprocess"]
    assert failed.severity == "critical" and failed.evidence["cause"] == "disk_full"
    assert failed.evidence["worker"] == failed_on and "No space left on device" in failed.detail
    assert any("Errno 28" in line for line in failed.evidence["log_tail"])
    assert "docker system prune" in failed.remediation
    # the failure stays reported (no flapping) until retry_after, then a new round starts
    assert qrun(sim)["cpu-preprocess"].severity == "critical"
    sim.clock.advance(31 * 60)
    qrun(sim)
    assert [t["status"] for t in sim.iter_tasks() if t["name"] == "queue canary: cpu-preprocess"] == ["queued"]


def test_queue_canary_skips_a_busy_queue_and_is_off_by_default(sim_factory: Any) -> None:
    sim = sim_factory(scenario="zoo-fleet")  # gpu-train holds three waiting tasks
    busy = qrun(sim, queues=["gpu-train"])["gpu-train"]
    assert busy.severity == "ok" and "skipped: 3 task(s) waiting" in busy.title
    assert sim.calls_to("tasks.enqueue") == [] and sim.calls_to("tasks.create") == []
    book = Playbook(name="t", checks=[CheckEntry(check=QCHECK)])
    result = asyncio.run(run_playbooks([book], Settings(), server_settings(sim)))
    assert [f for f in result.findings if f.check == QCHECK] == [] and sim.calls_to("tasks.create") == []


def test_zoo_canary_waits_on_idle_agents_that_do_not_pull(sim_factory: Any) -> None:
    zoo = sim_factory(scenario="incident-zoo")
    stuck = qrun(zoo, queues=["cpu-batch"])["cpu-batch"]
    assert stuck.severity == "critical" and "no agent picked up the canary in 20 min" in stuck.title
    assert "2 live agent(s) listen to it (cpu-box-4:cpu:0, cpu-box-4:cpu:1)" in stuck.detail
    assert "clearml-agent#241" in stuck.detail
    # the shipped playbook sends no canary until queues are listed
    shipped = run(zoo, playbooks=[load_playbook("playbooks/agents.yaml")])
    assert [f for f in shipped.findings if f.check == QCHECK] == []


def test_the_events_canary_stays_small(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    held = [canary(run(sim, {"max_events": 10})).evidence["events_held"] for _ in range(7)]
    # two events per run; once the task holds 10, the next run resets it (tasks.reset drops its events) first
    assert held[:5] == [2, 4, 6, 8, 10] and held[5] == 2 and held[6] == 4
    assert len(sim.calls_to("tasks.reset")) == 1
