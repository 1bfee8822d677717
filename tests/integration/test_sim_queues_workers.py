"""queues.* and workers.* against the simulator: listings, registration lifetime, the agent protocol."""

from __future__ import annotations

import time
from typing import Any

from bot.sim.server import SimServer
from tests.helpers import sim_data, sim_request

FAILED = "a1000000000000000000000000000002"
QUEUED = "a1000000000000000000000000000004"
DRAFT = "a1000000000000000000000000000005"


def worker_ids(sim: SimServer, **payload: Any) -> set[str]:
    return {w["id"] for w in sim_data(sim, "workers.get_all", payload)["workers"]}


def test_worker_objects_have_the_real_field_names(sim: SimServer) -> None:
    workers = {w["id"]: w for w in sim_data(sim, "workers.get_all", {"last_seen": 600})["workers"]}
    busy, idle = workers["gpu-box-1:gpu0"], workers["cpu-box-1:0"]
    assert busy["task"]["id"] == "a1000000000000000000000000000001" and busy["task"]["running_time"] > 0
    assert busy["project"]["name"] == "vision" and busy["queue"]["name"] == "gpu"
    assert busy["key"] == "worker_d1bd92a3b039400cbafc60a7a5b1e52b_u-alice_gpu-box-1:gpu0"
    assert busy["user"] == {"id": "u-alice", "name": "Alice"} and busy["register_timeout"] == 600
    for missing in ("task", "project", "queue"):
        assert missing not in idle
    default = next(q for q in idle["queues"] if q["name"] == "default")
    assert default["num_tasks"] == 1 and default["next_task"] == {"id": QUEUED, "name": "train-bert-queued"}
    assert idle["last_activity_time"].endswith("+00:00") and "last_report_time" in idle


def test_workers_vanish_after_their_registration_timeout(sim: SimServer) -> None:
    assert worker_ids(sim) == {"gpu-box-1:gpu0", "cpu-box-1:0"}
    sim.clock.advance(100)
    assert worker_ids(sim, last_seen=60) == set()  # both silent for more than a minute
    assert len(worker_ids(sim)) == 2  # but still registered
    sim.clock.advance(500)  # 600 s + 10..20 s since their last activity
    assert worker_ids(sim) == set()


def test_agent_protocol_register_report_unregister(sim: SimServer) -> None:
    gpu = sim.queue_id("gpu")
    assert sim_data(sim, "workers.register", {"worker": "agent-1:0", "queues": [gpu]}) == {}
    fresh = next(w for w in sim_data(sim, "workers.get_all", {})["workers"] if w["id"] == "agent-1:0")
    assert "last_report_time" not in fresh and fresh["queues"][0]["id"] == gpu
    bad = sim_request(sim, "workers.register", {"worker": "agent-1:0", "queues": ["nope"]})
    assert bad.status_code == 400 and bad.json()["meta"]["result_subcode"] == 701

    entry = sim_data(sim, "queues.get_next_task", {"queue": sim.queue_id("default"), "get_task_info": True})
    assert entry["entry"]["task"] == QUEUED and entry["task_info"]["user"] == "u-bob"
    assert sim_data(sim, "queues.get_next_task", {"queue": sim.queue_id("default")}) == {}
    sim_data(sim, "tasks.started", {"task": QUEUED})
    sim.clock.advance(30)
    report = {"worker": "agent-1:0", "timestamp": int(time.time() * 1000), "task": QUEUED, "queue": gpu,
              "machine_stats": {"cpu_usage": [12.0], "memory_used": 1024}}
    assert sim_data(sim, "workers.status_report", report) == {}
    listed = next(w for w in sim_data(sim, "workers.get_all", {})["workers"] if w["id"] == "agent-1:0")
    assert listed["task"]["name"] == "train-bert-queued" and "last_report_time" in listed
    task = sim_data(sim, "tasks.get_by_id", {"task": QUEUED})["task"]
    assert task["last_worker"] == "agent-1:0" and task["last_worker_report"] == task["last_update"]
    missing = sim_request(sim, "workers.status_report", {**report, "task": "nope"})
    assert missing.status_code == 400 and missing.json()["meta"]["result_subcode"] == 101

    # a status report from an unknown worker registers it (auto_register)
    sim_data(sim, "workers.status_report", {"worker": "agent-2:0", "timestamp": 1})
    assert "agent-2:0" in worker_ids(sim)
    # unregister only removes the caller's own registration
    bob = sim.issue_token(user="u-bob")
    sim_request(sim, "workers.unregister", {"worker": "agent-1:0"}, auth=None,
                headers={"Authorization": f"Bearer {bob}"})
    assert "agent-1:0" in worker_ids(sim)
    sim_data(sim, "workers.unregister", {"worker": "agent-1:0"})
    assert "agent-1:0" not in worker_ids(sim)
    assert sim_data(sim, "workers.get_count", {})["count"] == 3


def test_queue_listings(sim: SimServer) -> None:
    queues = {q["name"]: q for q in sim_data(sim, "queues.get_all", {})["queues"]}
    assert set(queues) == {"default", "gpu", "services"}
    default = queues["default"]
    assert default["system_tags"] == ["default"] and default["entries"][0]["task"] == QUEUED
    assert default["entries"][0]["added"].endswith("+00:00")
    ex = {q["name"]: q for q in sim_data(sim, "queues.get_all_ex", {})["queues"]}
    assert ex["default"]["entries"][0]["task"] == {"id": QUEUED, "name": "train-bert-queued"}
    assert [w["name"] for w in ex["gpu"]["workers"]] == ["gpu-box-1:gpu0"]
    assert ex["gpu"]["workers"][0]["task"]["name"] == "train-resnet"
    assert ex["services"]["workers"][0]["task"] is None
    only = sim_data(sim, "queues.get_all", {"name": "^gpu$", "only_fields": ["id"]})["queues"]
    assert only == [{"id": sim.queue_id("gpu")}]
    assert [q["name"] for q in sim_data(sim, "queues.get_all", {"system_tags": ["-default"],
                                                               "order_by": ["name"]})["queues"]] == ["gpu", "services"]
    assert sim_data(sim, "queues.get_default", {}) == {"id": sim.queue_id("default"), "name": "default"}
    assert sim_data(sim, "queues.get_num_entries", {"queue": sim.queue_id("default")}) == {"num": 1}
    assert sim_data(sim, "queues.peek_task", {"queue": sim.queue_id("gpu")}) == {"task": None}
    missing = sim_request(sim, "queues.get_by_id", {"queue": "nope"})
    assert missing.status_code == 400 and missing.json()["meta"]["result_msg"] == (
        "Invalid queue id: id=nope, company=d1bd92a3b039400cbafc60a7a5b1e52b")


def test_hidden_queues(sim_factory: Any) -> None:
    sim = sim_factory({"queues": [{"name": "gpu"}, {"name": "k8s_scheduler", "system_tags": ["k8s-glue"]}]})
    assert [q["name"] for q in sim_data(sim, "queues.get_all", {})["queues"]] == ["gpu"]
    assert len(sim_data(sim, "queues.get_all", {"search_hidden": True})["queues"]) == 2
    assert len(sim_data(sim, "queues.get_all", {"name": "k8s"})["queues"]) == 1
    none = sim_request(sim, "queues.get_default", {})
    assert none.status_code == 400 and none.json()["meta"]["result_subcode"] == 707


def test_reordering_and_removing_entries(sim: SimServer) -> None:
    gpu = sim.queue_id("gpu")
    for task in (FAILED, DRAFT):
        sim_data(sim, "tasks.enqueue", {"task": task, "queue": gpu})
    assert sim_data(sim, "queues.move_task_to_front", {"queue": gpu, "task": DRAFT}) == {"position": 0}
    assert [e["task"] for e in sim_data(sim, "queues.get_by_id", {"queue": gpu})["queue"]["entries"]] == [DRAFT, FAILED]
    assert sim_data(sim, "queues.remove_task", {"queue": gpu, "task": DRAFT}) == {"removed": 1}
    not_there = sim_request(sim, "queues.move_task_to_front", {"queue": gpu, "task": DRAFT})
    assert not_there.status_code == 400 and not_there.json()["meta"]["result_subcode"] == 703


def test_queue_metrics_explicit_and_computed(sim_factory: Any) -> None:
    sim = sim_factory({
        "queues": [{"name": "gpu", "created": "-1d"}, {"name": "cpu", "created": "-1d"}],
        "tasks": [{"name": "waiting", "status": "queued", "status_changed": "-30m", "execution": {"queue": "cpu"}}],
        "queue_metrics": {"gpu": {"interval": 300, "avg_waiting_times": [10, 20, 600],
                                  "queue_lengths": [1, 2, 9]}},
    })
    now = time.time()
    gpu, cpu = sim.queue_id("gpu"), sim.queue_id("cpu")
    data = sim_data(sim, "queues.get_queue_metrics", {"from_date": now - 900, "to_date": now, "interval": 300,
                                                       "queue_ids": [gpu, cpu]})
    series = {q["queue"]: q for q in data["queues"]}
    assert series[gpu]["queue_lengths"][-1] == 9 and series[gpu]["avg_waiting_times"][-1] == 600
    assert all(d % 300000 == 0 for d in series[gpu]["dates"])  # epoch ms bucket keys
    assert series[cpu]["queue_lengths"][-1] == 1 and 1700 < series[cpu]["avg_waiting_times"][-1] < 2000
    total = sim_data(sim, "queues.get_queue_metrics", {"from_date": now - 600, "to_date": now, "interval": 600})
    assert [q["queue"] for q in total["queues"]] == ["total"]
    bad = sim_request(sim, "queues.get_queue_metrics", {"from_date": now, "to_date": now - 1, "interval": 60})
    assert bad.status_code == 400 and bad.json()["meta"]["result_subcode"] == 16
