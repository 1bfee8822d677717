"""Simulated workers.* endpoints (bll/workers): registration in a TTL store keyed by company, user and worker
id, status reports that keep the worker alive and stamp its task, and the get_all listing."""

from __future__ import annotations

import fnmatch
from datetime import timedelta
from typing import Any

from bot.sim.api import Call, endpoint
from bot.sim.errors import ApiError, required
from bot.sim.state import DEFAULT_WORKER_TIMEOUT_S


def _filter_tags(worker: dict[str, Any], tags: list[str] | None, field: str) -> bool:
    if not tags:
        return True
    have = set(worker.get(field) or ())
    include = [t for t in tags if not t.startswith("-")]
    exclude = [t[1:] for t in tags if t.startswith("-")]
    if include and not have & set(include):
        return False
    return not have & set(exclude)


def _listed(call: Call, last_seen_default: int) -> list[dict[str, Any]]:
    data = call.data
    now = call.state.clock.now()
    workers = call.state.live_workers(now)
    last_seen = data.get("last_seen", last_seen_default)
    if last_seen:
        since = now - timedelta(seconds=max(1, int(last_seen)))
        workers = [w for w in workers if w["last_activity_time"] >= since]
    workers = [
        w for w in workers
        if _filter_tags(w, data.get("tags"), "tags") and _filter_tags(w, data.get("system_tags"), "system_tags")
    ]
    pattern = data.get("worker_pattern")
    if pattern:
        workers = [w for w in workers if fnmatch.fnmatchcase(w["id"], str(pattern))]
    return sorted(workers, key=lambda w: w["id"])


@endpoint("workers.get_all", ("2.4",))
def workers_get_all(call: Call) -> dict[str, Any]:
    return {"workers": [call.state.render_worker(w) for w in _listed(call, 3600)]}


@endpoint("workers.get_count", ("2.26",))
def workers_get_count(call: Call) -> dict[str, Any]:
    return {"count": len(_listed(call, 0))}


def _check_queues(call: Call, queues: Any) -> list[str]:
    queue_ids = [str(q) for q in (queues or [])]
    missing = [q for q in queue_ids if q not in call.state.queues]
    if missing:
        raise ApiError(400, 701, ids=missing)
    return queue_ids


def register(call: Call, worker_id: str, *, timeout: int = 0, queues: list[str] | None = None,
             tags: list[str] | None = None, system_tags: list[str] | None = None) -> dict[str, Any]:
    now = call.state.clock.now()
    worker = {
        "id": worker_id,
        "key": call.state.worker_key(call.user, worker_id),
        "user": call.user,
        "ip": call.client_ip,
        "register_time": now,
        "register_timeout": int(timeout or DEFAULT_WORKER_TIMEOUT_S),
        "last_activity_time": now,
        "last_report_time": None,
        "queues": list(queues or []),
        "tags": list(tags or []),
        "system_tags": list(system_tags or []),
    }
    call.state.workers[(call.user, worker_id)] = worker
    return worker


@endpoint("workers.register", ("2.4",))
def workers_register(call: Call) -> dict[str, Any]:
    data = call.data
    required(data, "worker")
    queues = _check_queues(call, data.get("queues"))
    register(call, str(data["worker"]), timeout=int(data.get("timeout") or 0), queues=queues,
             tags=data.get("tags"), system_tags=data.get("system_tags"))
    return {}


@endpoint("workers.unregister", ("2.4",))
def workers_unregister(call: Call) -> dict[str, Any]:
    required(call.data, "worker")
    # Only the caller's own registration goes (auto_unregister: a silent no-op otherwise), like the server.
    call.state.workers.pop((call.user, str(call.data["worker"])), None)
    return {}


@endpoint("workers.status_report", ("2.4",))
def workers_status_report(call: Call) -> dict[str, Any]:
    data = call.data
    required(data, "worker", "timestamp")
    state = call.state
    worker_id = str(data["worker"])
    state.live_workers()  # expire stale registrations first, so a dead worker re-registers fresh
    worker = state.workers.get((call.user, worker_id)) or register(call, worker_id)
    now = state.clock.now()
    worker["ip"] = call.client_ip
    if data.get("tags") is not None:
        worker["tags"] = list(data["tags"])
    if data.get("system_tags") is not None:
        worker["system_tags"] = list(data["system_tags"])
    if data.get("machine_stats"):
        worker["machine_stats"] = data["machine_stats"]
    worker["last_activity_time"] = now
    worker["queue"] = data.get("queue")
    if data.get("queues"):
        worker["queues"] = [str(q) for q in data["queues"]]
    task_id = data.get("task")
    if not task_id:
        worker["task"] = None
    else:
        doc = state.tasks.get(task_id)
        if doc is None:
            raise ApiError(400, 101, id=task_id, company=call.company)
        stamp = call.now()
        state.update_task(task_id, {"last_worker": worker_id, "last_worker_report": stamp, "last_update": stamp,
                                    "last_change": stamp, "last_changed_by": call.user})
        worker["task"] = task_id
    worker["last_report_time"] = now
    return {}
