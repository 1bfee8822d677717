"""Simulated queues.* endpoints (services/queues.py, bll/queue/queue_bll.py, queue_metrics.py)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from bot.sim.api import Call, endpoint
from bot.sim.ep_misc import get_all
from bot.sim.ep_tasks import add_to_queue, change_status, create_queue, default_queue, remove_from_queue
from bot.sim.errors import ApiError, required, validation
from bot.sim.query import QuerySpec
from bot.sim.state import get_path

QUEUE_QUERY = QuerySpec(list_fields=("id", "tags", "system_tags", "user"), pattern_fields=("name", "display_name"))
HIDDEN_QUEUE_TAGS = ("k8s-glue",)  # services.queues.hidden_tags default
MAX_METRIC_BUCKETS = 20000


def _queue(call: Call, queue_id: Any) -> dict[str, Any]:
    queue = call.state.queues.get(queue_id) if isinstance(queue_id, str) else None
    if queue is None:
        raise ApiError(400, 701, id=queue_id, company=call.company)
    return queue


def _visible(call: Call) -> list[dict[str, Any]]:
    data = call.data
    docs = list(call.state.queues.values())
    if not (data.get("search_hidden") or data.get("id") or data.get("name")):
        docs = [q for q in docs if not set(q.get("system_tags") or ()) & set(HIDDEN_QUEUE_TAGS)]
    return docs


def _limit_entries(queue: dict[str, Any], max_entries: Any) -> dict[str, Any]:
    if isinstance(max_entries, int) and max_entries > 0:
        queue = dict(queue)
        queue["entries"] = queue["entries"][:max_entries]
    return queue


@endpoint("queues.get_all", ("2.4",))
def queues_get_all(call: Call) -> dict[str, Any]:
    max_entries = call.data.get("max_task_entries")
    return get_all(call, _visible(call), QUEUE_QUERY, "queues",
                   lambda q: _limit_entries(call.state.render_queue(q), max_entries))


@endpoint("queues.get_all_ex", ("2.4",))
def queues_get_all_ex(call: Call) -> dict[str, Any]:
    max_entries = call.data.get("max_task_entries")
    workers = call.state.queue_workers()

    def render(queue: dict[str, Any]) -> dict[str, Any]:
        out = _limit_entries(call.state.render_queue(queue, expanded=True), max_entries)
        out["workers"] = workers.get(queue["id"], [])
        return out

    return get_all(call, _visible(call), QUEUE_QUERY, "queues", render)


@endpoint("queues.get_by_id", ("2.4",))
def queues_get_by_id(call: Call) -> dict[str, Any]:
    required(call.data, "queue")
    queue = _queue(call, call.data["queue"])
    return {"queue": _limit_entries(call.state.render_queue(queue), call.data.get("max_task_entries"))}


@endpoint("queues.get_default", ("2.4",))
def queues_get_default(call: Call) -> dict[str, Any]:
    queue = default_queue(call.state, call.company)
    return {"id": queue["id"], "name": queue["name"]}


@endpoint("queues.get_num_entries", ("2.15",))
def queues_get_num_entries(call: Call) -> dict[str, Any]:
    required(call.data, "queue")
    return {"num": len(_queue(call, call.data["queue"])["entries"])}


@endpoint("queues.peek_task", ("2.15",))
def queues_peek_task(call: Call) -> dict[str, Any]:
    required(call.data, "queue")
    entries = _queue(call, call.data["queue"])["entries"]
    return {"task": entries[0]["task"] if entries else None}


@endpoint("queues.create", ("2.4",))
def queues_create(call: Call) -> dict[str, Any]:
    required(call.data, "name")
    name = str(call.data["name"])
    if call.state.queue_by_name(name):
        raise ApiError(400, 801, replacement="Value combination already exists (unique field already contains "
                       "this value)", name=name)
    queue = create_queue(call, name, tags=call.data.get("tags"), system_tags=call.data.get("system_tags"),
                         display_name=call.data.get("display_name"))
    return {"id": queue["id"]}


@endpoint("queues.delete", ("2.4",))
def queues_delete(call: Call) -> dict[str, Any]:
    required(call.data, "queue")
    queue = _queue(call, call.data["queue"])
    if queue["entries"]:
        if not call.data.get("force"):
            raise ApiError(400, 702, "use force=true to delete", id=queue["id"])
        _release_entries(call, queue, f"Queue {queue['id']} was deleted")
    del call.state.queues[queue["id"]]
    return {"deleted": 1}


def _release_entries(call: Call, queue: dict[str, Any], reason: str) -> list[str]:
    """Tasks leaving a deleted/cleared queue go back to their pre-enqueue status."""
    released = []
    for entry in queue["entries"]:
        doc = call.state.tasks.get(entry["task"])
        if doc is None or get_path(doc, "execution.queue") != queue["id"]:
            continue
        change_status(call, doc["id"], doc.get("enqueue_status") or "created", status_reason=reason,
                      force=True, extra={"enqueue_status": None}, unset=("execution.queue",))
        released.append(doc["id"])
    return released


@endpoint("queues.clear_queue")
def queues_clear_queue(call: Call) -> dict[str, Any]:
    required(call.data, "queue")
    queue = _queue(call, call.data["queue"])
    removed = _release_entries(call, queue, f"Queue {queue['id']} was cleared")
    queue["entries"] = []
    queue["last_update"] = call.now()
    return {"removed_tasks": removed}


@endpoint("queues.add_task", ("2.4",))
def queues_add_task(call: Call) -> dict[str, Any]:
    required(call.data, "queue", "task")
    queue_id, task_id = call.data["queue"], call.data["task"]
    _queue(call, queue_id)
    add_to_queue(call, queue_id, task_id)
    if call.data.get("update_execution_queue") and task_id in call.state.tasks:
        call.state.update_task(task_id, {"execution.queue": queue_id})
    return {"added": 1}


@endpoint("queues.remove_task", ("2.4",))
def queues_remove_task(call: Call) -> dict[str, Any]:
    required(call.data, "queue", "task")
    queue_id, task_id = call.data["queue"], call.data["task"]
    removed = remove_from_queue(call, queue_id, task_id)
    doc = call.state.tasks.get(task_id)
    if removed and call.data.get("update_task_status") and doc and get_path(doc, "execution.queue") == queue_id:
        change_status(call, task_id, doc.get("enqueue_status") or "created",
                      status_reason=f"Task was removed from the queue {queue_id}", force=True,
                      extra={"enqueue_status": None}, unset=("execution.queue",))
    return {"removed": removed}


@endpoint("queues.get_next_task")
def queues_get_next_task(call: Call) -> dict[str, Any]:
    required(call.data, "queue")
    queue = _queue(call, call.data["queue"])
    wanted = call.data.get("task")
    if not queue["entries"] or (wanted and queue["entries"][0]["task"] != wanted):
        return {}
    entry = queue["entries"][0]
    queue["entries"] = queue["entries"][1:]
    queue["last_update"] = call.now()
    out: dict[str, Any] = {"entry": dict(entry)}
    doc = call.state.tasks.get(entry["task"])
    if doc is not None:
        # The server's race fix: a task aborted while it sat in the queue is handed out as queued again.
        if doc.get("status") == "stopped":
            call.state.update_task(doc["id"], {"status": "queued"})
        if call.data.get("get_task_info"):
            out["task_info"] = {"company": call.company, "user": doc.get("user")}
    return out


def _reposition(call: Call, where: str) -> dict[str, Any]:
    required(call.data, "queue", "task")
    queue_id, task_id = call.data["queue"], call.data["task"]
    queue = call.state.queues.get(queue_id)
    if queue is None or not any(e["task"] == task_id for e in queue["entries"]):
        raise ApiError(400, 703, task=task_id, id=queue_id, company=call.company)
    entries = queue["entries"]
    position = next(i for i, e in enumerate(entries) if e["task"] == task_id)
    count = int(call.data.get("count") or 1)
    target = {"front": 0, "back": len(entries) - 1, "forward": position - count,
              "backward": position + count}[where]
    target = max(0, min(len(entries) - 1, target))
    if target != position:
        entry = entries[position]
        rest = [e for e in entries if e is not entry]
        rest.insert(target, entry)
        queue["entries"] = rest
        queue["last_update"] = call.now()
    return {"position": target}


@endpoint("queues.move_task_to_front", ("2.4",))
def queues_move_task_to_front(call: Call) -> dict[str, Any]:
    return _reposition(call, "front")


@endpoint("queues.move_task_to_back", ("2.4",))
def queues_move_task_to_back(call: Call) -> dict[str, Any]:
    return _reposition(call, "back")


@endpoint("queues.move_task_forward", ("2.4",))
def queues_move_task_forward(call: Call) -> dict[str, Any]:
    return _reposition(call, "forward")


@endpoint("queues.move_task_backward", ("2.4",))
def queues_move_task_backward(call: Call) -> dict[str, Any]:
    return _reposition(call, "backward")


# ------------------------------------------------------------------------------------------------ metrics
def _epoch(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise validation(f"error for field '{name}'. field is required!")
    try:
        return float(value)
    except ValueError:
        raise ApiError(400, 16, f"{name} must be a number") from None


def _sample(call: Call, queue: dict[str, Any], at: float) -> tuple[float, int] | None:
    """(avg waiting seconds, length) of a queue at epoch `at`: the scenario's series, else its entries."""
    series = call.state.queue_metrics.get(queue["id"])
    if series:
        anchor = series["anchor"]
        interval = series["interval"]
        count = len(series["queue_lengths"])
        start = anchor - (count - 1) * interval
        if at < start:
            return None
        if at <= anchor + interval / 2:
            idx = min(count - 1, max(0, round((at - start) / interval)))
            return float(series["avg_waiting_times"][idx]), int(series["queue_lengths"][idx])
    created = queue.get("created")
    if isinstance(created, datetime) and at < created.timestamp():
        return None
    waits = [at - e["added"].timestamp() for e in queue["entries"] if e["added"].timestamp() <= at]
    return (sum(waits) / len(waits) if waits else 0.0), len(waits)


@endpoint("queues.get_queue_metrics", ("2.4",))
def queues_get_queue_metrics(call: Call) -> dict[str, Any]:
    data = call.data
    required(data, "from_date", "to_date", "interval")
    from_date = _epoch(data["from_date"], "from_date")
    to_date = _epoch(data["to_date"], "to_date")
    interval = int(_epoch(data["interval"], "interval"))
    if interval < 1:
        raise validation("interval must be >= 1", field="interval")
    if from_date >= to_date:
        raise ApiError(400, 16, "from_date must be less than to_date")
    queue_ids = data.get("queue_ids") or []
    hidden = set(HIDDEN_QUEUE_TAGS)
    queues = [q for q in call.state.queues.values() if not set(q.get("system_tags") or ()) & hidden]
    if queue_ids:
        queues = [q for q in queues if q["id"] in queue_ids]
    if not queues:
        return {"queues": []}
    now = call.state.clock.time()
    first = math.floor(from_date / interval) * interval
    buckets = []
    t = first
    while t <= to_date:
        buckets.append(t)
        t += interval
    if len(buckets) > MAX_METRIC_BUCKETS:
        raise ApiError(400, 16, "too many histogram buckets, increase the interval", interval=interval)

    def series(queue: dict[str, Any]) -> list[tuple[int, float, int]]:
        points = []
        for start in buckets:
            at = min(start + interval, to_date, now)
            if at < start:
                continue
            sample = _sample(call, queue, at)
            if sample is not None:
                points.append((int(start * 1000), round(sample[0], 3), sample[1]))
        return points

    if queue_ids:
        out = []
        for queue in queues:
            points = series(queue)
            out.append({"queue": queue["id"], "dates": [p[0] for p in points],
                        "avg_waiting_times": [p[1] for p in points], "queue_lengths": [p[2] for p in points]})
        return {"queues": out}
    totals: dict[int, list[tuple[float, int]]] = {}
    for queue in queues:
        for date, wait, length in series(queue):
            totals.setdefault(date, []).append((wait, length))
    dates = sorted(totals)
    waits, lengths = [], []
    for date in dates:
        items = totals[date]
        total_len = sum(length for _, length in items)
        waits.append(round(sum(w * n for w, n in items) / total_len, 3) if total_len else 0.0)
        lengths.append(total_len)
    return {"queues": [{"queue": "total", "dates": dates, "avg_waiting_times": waits, "queue_lengths": lengths}]}
