"""Edge cases of the server / agents / queues checks over a real Snapshot fed by an in-memory fake client.

The fake answers the few endpoints these checks read (workers.get_all, queues.get_all, tasks.get_all,
queues.get_queue_metrics, server.info) from plain dicts, so each test states the fleet it needs and the clock.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from bot.checks import agents, common, queues, server
from bot.clearml.errors import ServerUnavailableError
from bot.config import ServerSettings
from bot.engine.findings import Finding, Subject
from bot.engine.registry import REGISTRY, load_builtin_checks
from bot.engine.snapshot import Snapshot

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat()


class FakeClient:
    """Just enough of ClearMLClient for the Snapshot: call, get_all, server_time; counts calls per endpoint."""

    def __init__(
        self,
        workers: list[dict[str, Any]] | None = None,
        queues: list[dict[str, Any]] | None = None,
        tasks: list[dict[str, Any]] | None = None,
        metrics: list[dict[str, Any]] | Exception | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.workers = workers or []
        self.queues = queues or []
        self.tasks = tasks or []
        self.metrics = metrics if metrics is not None else []
        self.info = info or {"version": "2.0.0", "api_version": "2.31"}
        self.calls: dict[str, int] = {}
        self.payloads: list[tuple[str, dict[str, Any]]] = []

    def server_time(self) -> datetime:
        return NOW

    async def call(self, endpoint: str, payload: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
        self.payloads.append((endpoint, payload or {}))
        if endpoint == "workers.get_all":
            return {"workers": self.workers}
        if endpoint == "server.info":
            return self.info
        if endpoint == "queues.get_queue_metrics":
            if isinstance(self.metrics, Exception):
                raise self.metrics
            return {"queues": self.metrics}
        raise AssertionError(f"unexpected call {endpoint}")

    async def get_all(self, endpoint: str, payload: dict[str, Any], *, key: str, **_: Any) -> list[dict[str, Any]]:
        self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
        self.payloads.append((endpoint, payload))
        if endpoint == "queues.get_all":
            return self.queues
        assert endpoint == "tasks.get_all", endpoint
        docs = self.tasks
        if "id" in payload:
            docs = [t for t in docs if t["id"] in payload["id"]]
        if "status" in payload:
            docs = [t for t in docs if t["status"] in payload["status"]]
        for cond in payload.get("status_changed") or []:
            assert cond.startswith("<"), cond
            limit = datetime.fromisoformat(cond[1:]).replace(tzinfo=UTC)
            docs = [t for t in docs if datetime.fromisoformat(t["status_changed"]) < limit]
        return docs


def snapshot(client: FakeClient) -> Snapshot:
    settings = ServerSettings(
        name="test", api_url="http://clearml.test:8008", web_url="http://clearml.test:8080",
        files_url="http://clearml.test:8081",
    )
    return Snapshot(client, settings, clock=lambda: NOW)  # type: ignore[arg-type]


def run(check_id: str, client: FakeClient, **params: Any) -> list[Finding]:
    load_builtin_checks()
    spec = REGISTRY[check_id]
    return asyncio.run(spec.func(snapshot(client), spec.params_model.model_validate(params)))


def worker(wid: str, seen_s: float, queues: list[str] = (), task: str | None = None) -> dict[str, Any]:  # type: ignore[assignment]
    doc: dict[str, Any] = {
        "id": wid, "ip": "10.0.0.9", "register_time": ago(86400),
        "last_activity_time": ago(seen_s), "last_report_time": ago(seen_s),
        "queues": [{"id": f"q-{q}", "name": q} for q in queues],
    }
    if task:
        doc["task"] = {"id": task, "name": f"name-{task}"}
    return doc


def queue(name: str, entries: list[tuple[str, float | None]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "id": f"q-{name}", "name": name,
        "entries": [{"task": tid, **({"added": ago(age)} if age is not None else {})} for tid, age in entries],
    }


def task(tid: str, status: str, *, last_update_s: float = 10, worker_id: str = "", changed_s: float = 60,
         **extra: Any) -> dict[str, Any]:
    return {
        "id": tid, "name": f"name-{tid}", "status": status, "project": "p1",
        "last_update": ago(last_update_s), "status_changed": ago(changed_s), "started": ago(changed_s),
        "last_worker": worker_id, **extra,
    }


# -- common ------------------------------------------------------------------------------------------


def test_duration_params_accept_units_and_numbers_and_reject_garbage() -> None:
    params = agents.StaleParams.model_validate({"stale_after": "90s", "dead_after": "1h30m"})
    assert (params.stale_after, params.dead_after) == (90.0, 5400.0)
    assert agents.StaleParams.model_validate({"stale_after": 30, "dead_after": 60}).stale_after == 30.0
    with pytest.raises(ValidationError, match="not a duration"):
        agents.StaleParams.model_validate({"stale_after": "soon"})
    with pytest.raises(ValidationError, match="dead_after must not be shorter"):
        agents.StaleParams.model_validate({"stale_after": "10m", "dead_after": "5m"})
    with pytest.raises(ValidationError, match="extra"):
        agents.StaleParams.model_validate({"stale_afterr": "2m"})
    assert queues.StuckParams.model_validate({"critical_after": "off"}).critical_after is None


def test_patterns_accept_a_single_string_and_match_case_sensitively() -> None:
    assert queues.BacklogParams.model_validate({"queues": "gpu-*"}).queues == ["gpu-*"]
    assert common.matches_any("gpu-box-1:gpu0", ["gpu-*"])
    assert not common.matches_any("GPU-box-1", ["gpu-*"])
    assert common.selected(("", "q-1"), ["q-*"])


def test_severity_for_two_thresholds() -> None:
    assert common.severity_for(None, 1, 2) is None
    assert common.severity_for(1, 2, 3) is None
    assert common.severity_for(2, 2, 3) == "warning"
    assert common.severity_for(3, 2, 3) == "critical"
    assert common.severity_for(99, None, None) is None


# -- agents.stale ------------------------------------------------------------------------------------


def test_stale_uses_server_clock_thresholds_and_filters() -> None:
    client = FakeClient(workers=[
        worker("gpu-box-1:gpu0", 30, ["gpu"]),
        worker("gpu-box-2:gpu0", 200, ["gpu"], task="t1"),
        worker("dynamic_worker:gpu-a10:g5.xlarge:i-0abc", 500, ["gpu-a10"]),
        worker("laptop:0", 3000),
    ])
    found = {f.subject.id: f for f in run("agents.stale", client, ignore=["laptop*"])}
    assert set(found) == {"gpu-box-2:gpu0", "dynamic_worker:gpu-a10:g5.xlarge:i-0abc"}
    stale = found["gpu-box-2:gpu0"]
    assert stale.severity == "warning" and stale.actions == ["rotate"]
    assert stale.evidence["running_task"] == {"id": "t1", "name": "name-t1"}
    assert stale.evidence["last_activity"]["age_s"] == 200
    assert stale.evidence["last_activity"]["at"] == ago(200)
    assert stale.evidence["queues"] == [{"id": "q-gpu", "name": "gpu"}]
    dead = found["dynamic_worker:gpu-a10:g5.xlarge:i-0abc"]
    assert dead.severity == "critical"
    assert "i-0abc" in dead.remediation and "autoscal" in dead.remediation


def test_stale_worker_without_any_timestamp_is_skipped_not_crashing() -> None:
    client = FakeClient(workers=[{"id": "odd:0"}])
    assert run("agents.stale", client) == []


# -- agents.missing ----------------------------------------------------------------------------------


def test_missing_counts_per_pattern_and_only_live_when_asked() -> None:
    client = FakeClient(workers=[
        worker("gpu-1:gpu0", 10), worker("gpu-2:gpu0", 10), worker("gpu-3:gpu0", 400), worker("cpu-1:cpu:0", 10),
    ])
    expected = [{"pattern": "gpu-*", "min": 3}, {"pattern": "tpu-*", "min": 1}, {"pattern": "cpu-*", "min": 1}]
    found = {f.subject.id: f for f in run("agents.missing", client, expected=expected)}
    assert set(found) == {"tpu-*"}
    assert found["tpu-*"].severity == "critical" and found["tpu-*"].subject.kind == "worker"
    live = {f.subject.id: f for f in run("agents.missing", client, expected=expected, live_within="2m")}
    assert live["gpu-*"].severity == "warning"
    assert live["gpu-*"].evidence["found"] == 2 and live["gpu-*"].evidence["missing"] == 1
    assert live["gpu-*"].evidence["registered_but_silent"] == ["gpu-3:gpu0"]
    assert run("agents.missing", client) == []


# -- agents.orphaned_tasks ---------------------------------------------------------------------------


def test_orphaned_reasons_and_grace() -> None:
    client = FakeClient(
        workers=[
            worker("alive:0", 10, task="ok1"),
            worker("dead:0", 600, task="t-dead"),
            worker("restarted:0", 10),  # idle again after a restart: its old task is lost
        ],
        tasks=[
            task("ok1", "in_progress", last_update_s=20, worker_id="alive:0"),
            task("t-gone", "in_progress", last_update_s=300, worker_id="vanished:gpu0",
                 execution={"queue": "q-gpu"}),
            task("t-fresh", "in_progress", last_update_s=30, worker_id="vanished:gpu1"),  # within grace
            task("t-dead", "in_progress", last_update_s=600, worker_id="dead:0"),
            task("t-moved", "in_progress", last_update_s=400, worker_id="restarted:0"),
            task("t-dev", "in_progress", last_update_s=3600, system_tags=["development"]),
            task("t-hung", "in_progress", last_update_s=1200, worker_id="alive:0"),
            task("done", "completed", last_update_s=9999, worker_id="vanished:gpu0"),
            # a dataset upload that died: datasets.incomplete's business unless asked for
            task("t-ds", "in_progress", last_update_s=9000, type="data_processing", system_tags=["dataset"]),
        ],
        queues=[queue("gpu")],
    )
    # t-hung is "alive:0"'s task in our fake only by last_worker; the worker reports ok1: moved on wins
    found = {f.subject.id: f for f in run("agents.orphaned_tasks", client)}
    assert set(found) == {"t-gone", "t-dead", "t-moved", "t-dev", "t-hung"}
    gone = found["t-gone"]
    assert gone.severity == "critical" and gone.actions == ["requeue", "abort"]
    assert gone.evidence["reasons"] == ["worker_gone"]
    assert gone.related == [Subject(kind="worker", id="vanished:gpu0")]
    assert gone.evidence["queue"] == {"id": "q-gpu", "name": "gpu"}
    assert found["t-dead"].evidence["reasons"] == ["worker_dead"]
    assert found["t-moved"].evidence["reasons"] == ["worker_moved_on"]
    assert "idle" in found["t-moved"].evidence["worker_state"]
    dev = found["t-dev"]
    assert dev.severity == "warning" and dev.evidence["reasons"] == ["silent"] and dev.related == []
    assert found["t-hung"].evidence["reasons"] == ["worker_moved_on", "silent"]
    assert "t-ds" in {f.subject.id for f in run("agents.orphaned_tasks", client, include_datasets=True)}
    # one tasks.get_all with a status filter, never an unfiltered task listing
    task_calls = [p for e, p in client.payloads if e == "tasks.get_all"]
    assert task_calls and all(p.get("status") == ["in_progress"] for p in task_calls)


def test_orphaned_silent_task_of_live_worker_is_a_warning() -> None:
    client = FakeClient(
        workers=[worker("gpu-box:gpu0", 10, task="t1")],
        tasks=[task("t1", "in_progress", last_update_s=1000, worker_id="gpu-box:gpu0")],
    )
    [finding] = run("agents.orphaned_tasks", client)
    assert finding.severity == "warning" and finding.evidence["reasons"] == ["silent"]
    assert run("agents.orphaned_tasks", client, max_silence="20m") == []


# -- agents.unserved_queues --------------------------------------------------------------------------


def test_unserved_queue_related_workers_and_fallback_time() -> None:
    client = FakeClient(
        workers=[worker("old:0", 400, ["cpu"]), worker("live:0", 10, ["gpu"])],
        queues=[
            queue("cpu", [("a", 3600), ("b", 60)]),
            queue("gpu", [("c", 9000)]),  # served
            queue("nobody", [("d", None)]),  # no `added`: falls back to status_changed
            queue("empty"),
        ],
        tasks=[task("a", "queued"), task("d", "queued", changed_s=120)],
    )
    found = {f.subject.name: f for f in run("agents.unserved_queues", client)}
    assert set(found) == {"cpu", "nobody"}
    cpu = found["cpu"]
    assert cpu.severity == "critical"  # waited 1 h > 30 m
    assert cpu.related == [Subject(kind="worker", id="old:0")]
    assert cpu.evidence["oldest_entry"]["task"] == {"id": "a", "name": "name-a"}
    assert found["nobody"].severity == "warning" and found["nobody"].evidence["oldest_entry"]["age_s"] == 120
    assert set(f.subject.name for f in run("agents.unserved_queues", client, min_wait="10m")) == {"cpu"}
    assert run("agents.unserved_queues", client, queues=["gpu*"]) == []


# -- queues.backlog ----------------------------------------------------------------------------------


def test_backlog_thresholds_factor_and_prioritize_only_when_served() -> None:
    long_queue = [(f"t{i}", 60) for i in range(25)]
    client = FakeClient(
        workers=[worker("w:0", 10, ["long"], task="x")],
        queues=[queue("long", long_queue), queue("old", [("o", 7200)]), queue("fine", [("f", 60)])],
        tasks=[task(t, "queued") for t, _ in long_queue] + [task("o", "queued")],
    )
    found = {f.subject.name: f for f in run("queues.backlog", client)}
    assert set(found) == {"long", "old"}
    assert found["long"].severity == "warning" and found["long"].actions == ["prioritize"]
    assert found["long"].evidence["length"] == 25 and len(found["long"].evidence["entries"]) == 5
    assert found["old"].severity == "critical"  # 2 h >= 3 x 30 m
    assert found["old"].actions == []  # nobody serves it: moving a task to the front changes nothing
    assert run("queues.backlog", client, max_length=10, critical_factor=2)[0].severity == "critical"
    assert run("queues.backlog", client, queues=["fine"]) == []


# -- queues.wait_time --------------------------------------------------------------------------------


def metrics(qid: str, waits: list[float | None], lengths: list[int] | None = None) -> dict[str, Any]:
    n = len(waits)
    dates = [int((NOW - timedelta(seconds=300 * (n - 1 - i))).timestamp() * 1000) for i in range(n)]
    return {"queue": qid, "dates": dates, "avg_waiting_times": waits, "queue_lengths": lengths or [1] * n}


def test_wait_time_spike_over_median_and_floor() -> None:
    client = FakeClient(
        queues=[queue("spiky"), queue("calm"), queue("tiny"), queue("cold"), queue("short")],
        metrics=[
            metrics("q-spiky", [100, 120, None, 90, 110, 2400]),
            metrics("q-calm", [600, 700, 650, 800]),
            metrics("q-tiny", [1, 2, 1, 200]),  # 100x but under the 5 min floor
            metrics("q-cold", [0, 0, 0, 900]),  # median 0: anything above the floor warns
            metrics("q-short", [10, 5000]),  # not enough history
        ],
    )
    found = {f.subject.name: f for f in run("queues.wait_time", client)}
    assert set(found) == {"spiky", "cold"}
    spiky = found["spiky"]
    assert spiky.severity == "warning" and spiky.evidence["ratio"] == pytest.approx(22.9, abs=0.1)
    assert spiky.evidence["median_avg_wait_s"] == 105.0 and spiky.evidence["points"] == 5
    assert found["cold"].evidence["ratio"] is None
    [payload] = [p for e, p in client.payloads if e == "queues.get_queue_metrics"]
    assert payload["interval"] == 300 and payload["to_date"] - payload["from_date"] == 6 * 3600


def test_wait_time_odd_shape_raises_a_clear_error() -> None:
    client = FakeClient(queues=[queue("q")], metrics=[{"queue": "q-q", "avg_waiting_times": "lots"}])
    with pytest.raises(common.CheckError, match="avg_waiting_times"):
        run("queues.wait_time", client)


# -- queues.capacity ---------------------------------------------------------------------------------


def test_capacity_scale_out_when_all_busy_and_growing() -> None:
    client = FakeClient(
        workers=[worker("a:0", 10, ["train"], task="x"), worker("a:1", 10, ["train"], task="y")],
        queues=[queue("train", [("t1", 120), ("t2", 60)])],
        tasks=[task("t1", "queued")],
        metrics=[metrics("q-train", [0] * 8, [0, 0, 0, 0, 0, 0, 1, 2])],
    )
    [finding] = run("queues.capacity", client)
    assert finding.severity == "warning" and finding.evidence["hint"] == "scale_out"
    assert finding.evidence["busy_ratio"] == 1.0 and finding.evidence["trend"]["to"] == 2
    # without a growing trend and with a fresh backlog, nothing is starving
    client.metrics = [metrics("q-train", [0] * 8, [2] * 8)]
    assert run("queues.capacity", client) == []


def test_capacity_rebalance_names_idle_workers_and_survives_metrics_failure() -> None:
    client = FakeClient(
        workers=[
            worker("a:0", 10, ["train"], task="x"),
            worker("idle:0", 10, ["debug"]),
            worker("idle:1", 10, ["debug", "other"]),
            worker("busyq:0", 10, ["backed"]),  # idle but its queue has work: not spare capacity
            worker("stale:0", 900, ["debug"]),
        ],
        queues=[queue("train", [("t1", 1200)]), queue("debug"), queue("other"), queue("backed", [("b", 5)])],
        tasks=[task("t1", "queued")],
        metrics=ServerUnavailableError("queues.get_queue_metrics", "http_5xx", "metrics backend down", 502),
    )
    found = {f.subject.name: f for f in run("queues.capacity", client)}
    assert set(found) == {"train"}
    train = found["train"]
    assert train.evidence["hint"] == "rebalance"
    assert [w["worker"] for w in train.evidence["idle_elsewhere"]] == ["idle:0", "idle:1"]
    assert "metrics backend down" in train.evidence["trend_error"]
    assert "idle:0" in train.remediation


# -- queues.stuck_queued -----------------------------------------------------------------------------


def test_stuck_queued_listed_and_unlisted() -> None:
    client = FakeClient(
        workers=[worker("w:0", 10, ["gpu"], task="z")],
        queues=[queue("gpu", [("fresh", 600), ("old", 8 * 3600), ("undated", None)])],
        tasks=[
            task("fresh", "queued"), task("old", "queued"),
            task("undated", "queued", changed_s=30 * 3600),
            task("ghost", "queued", changed_s=7 * 3600, execution={"queue": "deleted-queue-id"}),
        ],
    )
    found = {f.subject.id: f for f in run("queues.stuck_queued", client)}
    assert set(found) == {"old", "undated", "ghost"}
    old = found["old"]
    assert old.severity == "warning" and old.actions == ["prioritize"]
    assert old.evidence["position"] == 1 and old.evidence["time_source"] == "entry.added"
    assert old.related == [Subject(kind="queue", id="q-gpu", name="gpu")]
    assert found["undated"].severity == "critical" and found["undated"].evidence["time_source"] == "status_changed"
    ghost = found["ghost"]
    assert ghost.actions == ["requeue"] and ghost.evidence["in_visible_queue"] is False
    assert ghost.subject.name == "name-ghost"
    assert set(f.subject.id for f in run("queues.stuck_queued", client, include_unlisted=False)) == {"old", "undated"}


# -- server.version ----------------------------------------------------------------------------------


def test_version_against_sdk_and_minimums() -> None:
    sdk = server.bundled_api_versions("clearml")
    assert sdk and sdk[-1] >= (2, 20)  # the installed SDK bundles v2_* service modules
    newest = ".".join(map(str, sdk[-1]))
    [ok] = run("server.version", FakeClient(info={"version": "2.0.0", "api_version": "2.31"}))
    assert ok.severity == "ok" and newest in ok.evidence["sdk"]["api_versions"]
    [old] = run("server.version", FakeClient(info={"version": "1.9.2-317", "api_version": "2.13"}))
    assert old.severity == "warning" and f"newest bundled API {newest}" in old.detail
    [pinned] = run("server.version", FakeClient(info={"version": "2.0.0", "api_version": "2.31"}),
                   min_server_version="2.1.0")
    assert pinned.severity == "warning" and "older than the required 2.1.0" in pinned.detail
    [unknown] = run("server.version", FakeClient(info={"version": "1.0.0"}))
    assert unknown.severity == "warning" and "does not report its API version" in unknown.detail


def test_every_fleet_check_is_registered_with_a_summary() -> None:
    load_builtin_checks()
    ids = {
        "server.reachable", "server.credentials", "server.tls", "server.version", "agents.stale",
        "agents.missing", "agents.orphaned_tasks", "agents.unserved_queues", "queues.backlog",
        "queues.wait_time", "queues.capacity", "queues.stuck_queued",
    }
    assert ids <= set(REGISTRY)
    for check_id in ids:
        assert REGISTRY[check_id].summary, check_id
