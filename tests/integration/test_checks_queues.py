"""queues.* checks over the simulator through the real HTTP client: the zoo's backed-up queues, the healthy fleet,
small inline fleets for scale-out, and a metrics endpoint that fails."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.config import Settings
from bot.engine.findings import Finding
from bot.engine.playbook import CheckEntry, Playbook, load_playbook
from bot.engine.runner import RunResult, run_playbooks
from tests.helpers import server_settings

QUEUE_CHECKS = ("queues.backlog", "queues.wait_time", "queues.capacity", "queues.stuck_queued")


def run(sim: Any, *checks: str | tuple[str, dict[str, Any]], playbooks: list[Playbook] | None = None) -> RunResult:
    entries = [CheckEntry(check=c) if isinstance(c, str) else CheckEntry(check=c[0], params=c[1]) for c in checks]
    books = playbooks if playbooks is not None else [Playbook(name="test", checks=entries)]
    return asyncio.run(run_playbooks(books, Settings(), server_settings(sim)))


def named(result: RunResult, check_id: str) -> dict[str, Finding]:
    """Findings of one check by subject name; asserts one finding per subject."""
    found: dict[str, Finding] = {}
    for f in result.findings:
        if f.check == check_id:
            assert f.subject.name not in found, f"two findings for {f.subject.name}"
            found[f.subject.name] = f
    return found


def test_zoo_backlog_and_wait_time(sim_factory: Any) -> None:
    sim = sim_factory(scenario="zoo-fleet")
    result = run(sim, *QUEUE_CHECKS)
    assert not [f for f in result.findings if f.severity == "error"], [f.detail for f in result.findings]
    backlog = named(result, "queues.backlog")
    assert set(backlog) == {"gpu-train", "cpu-preprocess"}
    train = backlog["gpu-train"]
    assert train.severity == "warning" and train.actions == ["prioritize"]  # served: prioritizing helps
    assert train.evidence["length"] == 3 and train.evidence["oldest_entry"]["task"]["name"] == "train-yolov8x-p6-1280"
    assert 2950 <= train.evidence["oldest_entry"]["age_s"] <= 3100
    assert [e["task"]["name"] for e in train.evidence["entries"]] == [
        "train-yolov8x-p6-1280", "train-yolov8m-seg", "ablation-no-mosaic"]
    assert train.subject.id == sim.queue_id("gpu-train") and train.links
    cpu = backlog["cpu-preprocess"]
    assert cpu.severity == "critical" and cpu.actions == []  # 9 h >= 3 x 30 m; nobody serves it
    assert "agents.unserved_queues" in cpu.remediation

    [wait] = named(result, "queues.wait_time").values()
    assert wait.subject.name == "gpu-train" and wait.severity == "warning"
    assert wait.evidence["latest_avg_wait_s"] == 2100 and wait.evidence["ratio"] > 10


def test_zoo_capacity_and_stuck_tasks(sim_factory: Any) -> None:
    sim = sim_factory(scenario="zoo-fleet")
    result = run(sim, *QUEUE_CHECKS)
    capacity = named(result, "queues.capacity")
    train = capacity["gpu-train"]
    assert train.severity == "warning" and train.evidence["hint"] == "rebalance"
    assert train.evidence["busy_ratio"] == 1.0 and train.evidence["trend"]["from"] < train.evidence["trend"]["to"]
    assert {w["worker"] for w in train.evidence["idle_elsewhere"]} == {"gpu-box-3:gpu0", "gpu-box-3:gpu1"}
    assert "gpu-box-3:gpu0" in train.remediation
    assert "gpu-debug" not in capacity  # an empty queue never starves

    stuck = named(result, "queues.stuck_queued")
    assert set(stuck) == {"tokenize-wiki-shard-07", "export-onnx-int8"}
    shard = stuck["tokenize-wiki-shard-07"]
    assert shard.severity == "warning" and shard.actions == ["prioritize"]
    assert shard.evidence["queue"]["name"] == "cpu-preprocess" and shard.evidence["position"] == 0
    assert shard.evidence["time_source"] == "entry.added" and shard.evidence["live_workers"] == 0
    assert shard.related[0].kind == "queue"
    onnx = stuck["export-onnx-int8"]
    assert onnx.severity == "critical" and onnx.actions == ["requeue"]  # 30 h > 24 h, in the hidden glue queue
    assert onnx.evidence["in_visible_queue"] is False and onnx.evidence["status_reason"] == "k8s pending scheduler"


def test_healthy_fleet_is_quiet_with_defaults_and_the_shipped_playbook(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy-fleet")
    result = run(sim, *QUEUE_CHECKS)
    assert not result.problems, [f.title for f in result.problems]
    shipped = run(sim, playbooks=[load_playbook("playbooks/queues.yaml")])
    assert not shipped.problems, [f.title for f in shipped.problems]


def _busy_fleet(entries: list[dict[str, Any]], metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    tasks = [
        {"name": "run-a", "project": "p", "status": "in_progress", "last_worker": "gpu-9:gpu0",
         "last_update": "-10s", "started": "-1h", "execution": {"queue": "gpu"}},
        {"name": "run-b", "project": "p", "status": "in_progress", "last_worker": "gpu-9:gpu1",
         "last_update": "-10s", "started": "-1h", "execution": {"queue": "gpu"}},
    ]
    tasks += [{"name": e["task"], "project": "p", "status": "queued", "status_changed": e["added"],
               "execution": {"queue": "gpu"}} for e in entries]
    scenario: dict[str, Any] = {
        "name": "busy",
        "projects": [{"name": "p"}],
        "queues": [{"name": "gpu", "entries": entries}, {"name": "cpu", "entries": []}],
        "workers": [
            # a long registration timeout keeps them listed when a test moves the clock on
            {"id": "gpu-9:gpu0", "queues": ["gpu"], "last_activity": "-5s", "last_report": "-5s", "task": "run-a",
             "register_timeout": 3600},
            {"id": "gpu-9:gpu1", "queues": ["gpu"], "last_activity": "-5s", "last_report": "-5s", "task": "run-b",
             "register_timeout": 3600},
        ],
        "tasks": tasks,
    }
    if metrics:
        scenario["queue_metrics"] = metrics
    return scenario


def test_all_busy_with_a_growing_backlog_hints_scale_out(sim_factory: Any) -> None:
    entries = [{"task": f"sweep-{i}", "added": f"-{4 - i}m"} for i in range(4)]
    metrics = {"gpu": {"interval": 300, "avg_waiting_times": [30, 40, 35, 50, 60, 90, 120, 150],
                       "queue_lengths": [0, 0, 1, 1, 1, 2, 3, 4]}}
    sim = sim_factory(scenario=_busy_fleet(entries, metrics))
    result = run(sim, "queues.capacity", ("queues.backlog", {"max_length": 3, "critical_factor": 2}))
    [capacity] = named(result, "queues.capacity").values()
    assert capacity.evidence["hint"] == "scale_out" and capacity.evidence["idle_elsewhere"] == []
    assert capacity.evidence["busy_workers"] == ["gpu-9:gpu0", "gpu-9:gpu1"]
    assert "Scale out" in capacity.remediation
    [backlog] = named(result, "queues.backlog").values()
    assert backlog.severity == "warning" and backlog.evidence["length"] == 4  # over 3, under 2 x 3


def test_a_fresh_backlog_on_busy_agents_is_not_starving(sim_factory: Any) -> None:
    sim = sim_factory(scenario=_busy_fleet([{"task": "sweep-0", "added": "-2m"}]))
    assert named(run(sim, "queues.capacity"), "queues.capacity") == {}
    sim.clock.advance(11 * 60)  # the same entry, now waiting 13 minutes; count the agents as live all along
    result = run(sim, ("queues.capacity", {"stale_after": "1h"}),
                 ("queues.stuck_queued", {"threshold": "10m", "stale_after": "1h"}))
    [capacity] = named(result, "queues.capacity").values()
    assert capacity.evidence["hint"] == "scale_out" and capacity.evidence["oldest_wait_s"] >= 13 * 60 - 5
    [stuck] = named(result, "queues.stuck_queued").values()
    assert stuck.subject.name == "sweep-0" and stuck.evidence["live_workers"] == 2


def test_failing_metrics_endpoint_is_an_error_only_for_the_check_that_needs_it(sim_factory: Any) -> None:
    sim = sim_factory(scenario="zoo-fleet")
    sim.set_fault("queues.get_queue_metrics", html=True, status=502)
    result = run(sim, *QUEUE_CHECKS)
    [error] = [f for f in result.findings if f.severity == "error"]
    assert error.check == "queues.wait_time" and "not_json" in error.detail
    assert named(result, "queues.backlog") and named(result, "queues.stuck_queued")
    capacity = named(result, "queues.capacity")["gpu-train"]  # falls back to the oldest entry's wait
    assert capacity.evidence["trend"] is None and capacity.evidence["trend_error"]
