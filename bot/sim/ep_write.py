"""Simulated endpoints for the server's write path, as the canaries use it: projects.create, tasks.create and
events.get_task_events (reading back what events.add_batch stored), plus the Elasticsearch read-only fault.

Elasticsearch turns its indices read-only when its disk passes the flood-stage watermark (95 % by default). From then
on clearml-server's events.add_batch fails with 500/100 "General data error" carrying the bulk errors (clearml#201),
the SDK only logs a warning, and task logs and scalars are lost while the rest of the API keeps answering. The
`events_read_only` fault reproduces that answer; `events_drop_writes` acknowledges writes and stores nothing (a write
that is accepted but never readable).
"""

from __future__ import annotations

from typing import Any

from bot.sim.api import Call, endpoint
from bot.sim.errors import ApiError, required
from bot.sim.state import TASK_TYPES, new_id

# ES 7.4+ wording of the flood-stage block (the server runs ES 7.17)
READ_ONLY_REASON = (
    "index [{index}] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, "
    "index has read-only-allow-delete block];"
)


def read_only_error(call: Call, events: list[Any]) -> ApiError:
    """The answer of clearml-server when the events indices are read-only: the bulk's per-document errors."""
    company = call.state.company["id"]
    kinds = sorted({str(e.get("type", "log")) for e in events if isinstance(e, dict)}) or ["log"]
    index = f"events-{kinds[0]}-{company}"
    reason = READ_ONLY_REASON.format(index=index)
    detail = (
        f"err=('{len(events)} document(s) failed to index.', [{{'index': {{'_index': '{index}', 'status': 429, "
        f"'error': {{'type': 'cluster_block_exception', 'reason': '{reason}'}}}}}}])"
    )
    return ApiError(500, 100, replacement=f"General data error: {detail}")


@endpoint("projects.create")
def projects_create(call: Call) -> dict[str, Any]:
    data = call.data
    required(data, "name")
    name = str(data["name"]).strip()
    state = call.state
    if any(p["name"] == name for p in state.projects.values()):
        raise ApiError(400, 0, replacement=f"Value combination already exists (unique indices: name): name={name}")
    now = call.now()
    # like the server, "a/b" needs its parent "a": create the missing ancestors first
    parts = name.split("/")
    for depth in range(1, len(parts) + 1):
        path = "/".join(parts[:depth])
        if depth < len(parts) and any(p["name"] == path for p in state.projects.values()):
            continue
        pid = new_id()
        state.projects[pid] = {
            "id": pid, "name": path, "basename": parts[depth - 1], "description": "", "user": call.user,
            "company": state.company["id"], "created": now, "last_update": now, "tags": [],
            "system_tags": list(data.get("system_tags") or []) if depth == len(parts) else [],
        }
        if depth == len(parts):
            state.projects[pid].update(description=str(data.get("description") or ""),
                                       tags=list(data.get("tags") or []))
            return {"id": pid}
    raise AssertionError("unreachable")


@endpoint("tasks.create")
def tasks_create(call: Call) -> dict[str, Any]:
    data = call.data
    required(data, "name", "type")
    if data["type"] not in TASK_TYPES:
        raise ApiError(400, 12, replacement=f"Validation error (invalid task type: {data['type']})")
    project = data.get("project")
    if project and project not in call.state.projects:
        raise ApiError(400, 401, id=project)
    now = call.now()
    task_id = new_id()
    doc: dict[str, Any] = {
        "id": task_id, "name": str(data["name"]), "type": data["type"], "status": "created",
        "project": project or None, "user": call.user, "created": now, "status_changed": now,
        "last_update": now, "last_change": now, "last_changed_by": call.user,
        "tags": list(data.get("tags") or []), "system_tags": list(data.get("system_tags") or []),
        "comment": str(data.get("comment") or ""),
    }
    for key in ("script", "execution", "container", "hyperparams", "configuration", "output"):
        if isinstance(data.get(key), dict):
            doc[key] = data[key]
    call.state.add_task(doc)
    return {"id": task_id}


@endpoint("events.get_task_events", ("1.0", "2.1"))
def events_get_task_events(call: Call) -> dict[str, Any]:
    data = call.data
    required(data, "task")
    task_id = data["task"]
    if task_id not in call.state.tasks:
        raise ApiError(400, 101, ids=[task_id])
    event_type = data.get("event_type")
    events: list[dict[str, Any]] = []
    if event_type in (None, "log"):
        events += call.state.events.get(task_id, [])
    if event_type in (None, "training_stats_scalar"):
        events += call.state.scalar_events.get(task_id, [])
    events.sort(key=lambda e: (e.get("timestamp") or 0, e.get("iter") or 0))
    if data.get("order") == "desc":
        events.reverse()
    batch = int(data.get("batch_size") or 500)
    page = events[:batch]
    return {"events": page, "returned": len(page), "total": len(events), "scroll_id": new_id()}
