"""Simulated tasks.* endpoints, with clearml-server's status state machine (bll/task/utils.py) and the
semantics of enqueue/dequeue/reset/stop/clone (bll/task/task_operations.py, task_bll.py)."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from bot.sim.api import Call, endpoint
from bot.sim.ep_misc import get_all
from bot.sim.errors import ApiError, required, validation
from bot.sim.query import QuerySpec, id_list
from bot.sim.state import TASK_STATUSES, TASK_UPDATE_TIMEOUT_S, SimState, get_path, new_id

TASK_QUERY = QuerySpec(
    list_fields=(
        "id", "user", "tags", "system_tags", "type", "status", "project", "parent",
        "execution.queue", "models.input.model",
    ),
    pattern_fields=("name", "comment", "report"),
    datetime_fields=("status_changed", "last_update", "last_change"),
    range_fields=("created", "started", "active_duration", "last_iteration"),
    range_prefixes=("last_metrics.",),
    eq_prefixes=("runtime.",),
)

STATE_MACHINE: dict[str, set[str]] = {
    "created": {"queued", "in_progress"},
    "queued": {"created", "in_progress", "stopped"},
    "in_progress": {"stopped", "failed", "created", "completed"},
    "stopped": {"closed", "created", "failed", "queued", "in_progress", "published", "publishing", "completed"},
    "closed": {"created", "failed", "published", "publishing", "stopped"},
    "failed": {"created", "stopped", "published", "queued"},
    "publishing": {"published"},
    "published": set(),
    "completed": {"published", "in_progress", "created"},
    "unknown": set(),
}


# ------------------------------------------------------------------------------------------------ helpers
def task_for_write(call: Call, task_id: Any) -> dict[str, Any]:
    """The task, or 400/101 worded like get_task_with_write_access."""
    doc = call.state.tasks.get(task_id) if isinstance(task_id, str) else None
    if doc is None:
        raise ApiError(400, 101, id=task_id, company=call.company)
    return doc


def validate_transition(current: str, new: str) -> None:
    if new not in STATE_MACHINE.get(current, set()):
        raise ApiError(400, 110, "Invalid status change", current_status=current, new_status=new)


def change_status(
    call: Call,
    task_id: str,
    new_status: str,
    *,
    status_reason: str = "",
    status_message: str = "",
    force: bool = False,
    current: str | None = None,
    extra: dict[str, Any] | None = None,
    unset: tuple[str, ...] = (),
) -> dict[str, Any]:
    """ChangeStatusRequest.execute: validate the transition, stamp the times, return {updated, fields}."""
    state = call.state
    doc = state.tasks[task_id]
    current = current or doc.get("status", "created")
    if not force and new_status != current:
        validate_transition(current, new_status)
    now = call.now()
    fields: dict[str, Any] = {
        "status": new_status,
        "status_reason": status_reason or "",
        "status_message": status_message or "",
        "status_changed": now,
        "last_update": now,
        "last_change": now,
        "last_changed_by": call.user,
    }
    updates = dict(fields)
    remove = list(unset)
    for key, value in (extra or {}).items():
        if value is None:  # an unset: reported only for enqueue_status, which the server sets to null
            remove.append(key)
            if key == "enqueue_status":
                fields[key] = None
        else:
            updates[key] = value
            fields[key] = value
    if new_status == "queued" and "development" in (doc.get("system_tags") or []):
        updates["system_tags"] = [t for t in doc["system_tags"] if t != "development"]
    state.update_task(task_id, updates, remove)
    return {"updated": 1, "fields": fields}


def touch(call: Call, task_id: str) -> None:
    """set_last_update: bump last_update/last_change and, while running, active_duration."""
    state = call.state
    doc = state.tasks[task_id]
    now = call.now()
    updates: dict[str, Any] = {"last_update": now, "last_change": now, "last_changed_by": call.user}
    if doc.get("status") == "in_progress" and doc.get("started"):
        updates["active_duration"] = int((now - doc["started"]).total_seconds())
    state.update_task(task_id, updates)


def add_to_queue(call: Call, queue_id: str, task_id: str) -> None:
    state = call.state
    queue = state.queues.get(queue_id)
    if queue is None:
        raise ApiError(400, 701, id=queue_id, company=call.company)
    if any(e["task"] == task_id for e in queue["entries"]):
        raise ApiError(400, 706, task=task_id)
    now = call.now()
    queue["entries"] = [*queue["entries"], {"task": task_id, "added": now}]
    queue["last_update"] = now


def remove_from_queue(call: Call, queue_id: str, task_id: str) -> int:
    """queues.remove_task semantics: 400/703 when the task is not in that queue."""
    queue = call.state.queues.get(queue_id)
    if queue is None or not any(e["task"] == task_id for e in queue["entries"]):
        raise ApiError(400, 703, task=task_id, id=queue_id, company=call.company)
    before = len(queue["entries"])
    queue["entries"] = [e for e in queue["entries"] if e["task"] != task_id]
    queue["last_update"] = call.now()
    return before - len(queue["entries"])


def dequeue_silently(call: Call, task_id: str) -> dict[str, Any]:
    """TaskBLL.dequeue(silent_fail=True): remove a queued task from its execution queue, if it is there."""
    doc = call.state.tasks[task_id]
    queue_id = get_path(doc, "execution.queue")
    if doc.get("status") != "queued" or not queue_id:
        return {}
    try:
        return {"removed": remove_from_queue(call, queue_id, task_id)}
    except ApiError:
        return {}


def default_queue(state: SimState, company: str) -> dict[str, Any]:
    defaults = [q for q in state.queues.values() if "default" in (q.get("system_tags") or [])]
    if not defaults:
        raise ApiError(400, 707)
    if len(defaults) > 1:
        raise ApiError(400, 708, queues=tuple(q["id"] for q in defaults))
    return defaults[0]


def create_queue(call: Call, name: str, **fields: Any) -> dict[str, Any]:
    now = call.now()
    queue = {
        "id": new_id(),
        "name": name,
        "user": call.user,
        "company": call.company,
        "created": now,
        "tags": list(fields.get("tags") or []),
        "system_tags": list(fields.get("system_tags") or []),
        "entries": [],
        "metadata": {},
        "last_update": now,
    }
    if fields.get("display_name"):
        queue["display_name"] = fields["display_name"]
    call.state.queues[queue["id"]] = queue
    return queue


def run_by_live_worker(call: Call, doc: dict[str, Any]) -> bool:
    last_update = doc.get("last_update")
    return bool(
        doc.get("last_worker")
        and last_update
        and call.state.clock.now() - last_update < timedelta(seconds=TASK_UPDATE_TIMEOUT_S)
    )


def _plain_values(value: Any) -> list[str] | None:
    """Values usable with an index: plain strings only (no operators, exclusions or nulls)."""
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v and not v.startswith(("-", "__$")) for v in values):
        return None
    return values


def _candidates(call: Call) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The tasks worth testing: the smallest matching index bucket, in insertion (natural) order; and the
    filter field that bucket already satisfies."""
    state, data = call.state, call.data
    filters = data.get("filters") or {}
    options: list[tuple[list[str], str]] = []
    if "id" in data and "id" not in filters:
        ids = _plain_values(data["id"])
        if ids is not None:
            options.append(([i for i in dict.fromkeys(ids) if i in state.tasks], "id"))
    for name in ("status", "type", "project"):
        if name in data and name not in filters:
            values = _plain_values(data[name])
            if values is not None:
                options.append((state.task_ids_for(name, values), name))
    satisfied: tuple[str, ...] = ()
    if not options:
        docs = list(state.tasks.values())
    else:
        ids, field = min(options, key=lambda o: len(o[0]))
        docs = [state.tasks[i] for i in state.natural_order(ids)]
        # Ids never change; other fields are re-checked (a test may have edited a document in place).
        satisfied = (field,) if field == "id" else ()
    if not (data.get("search_hidden") or data.get("id")):
        docs = [d for d in docs if "hidden" not in (d.get("system_tags") or ())]
    return docs, satisfied


def _with_subprojects(state: SimState, project_ids: list[str]) -> list[str]:
    names = [state.projects[p]["name"] for p in project_ids if p in state.projects]
    extra = [p["id"] for p in state.projects.values() if any(p["name"].startswith(n + "/") for n in names)]
    return list(dict.fromkeys([*project_ids, *extra]))


# ------------------------------------------------------------------------------------------------ reads
@endpoint("tasks.get_all")
def tasks_get_all(call: Call) -> dict[str, Any]:
    data = call.data
    if data.get("include_subprojects") and data.get("project") and _plain_values(data["project"]) is not None:
        data["project"] = _with_subprojects(call.state, id_list(data["project"]))
    docs, satisfied = _candidates(call)
    return get_all(call, docs, TASK_QUERY, "tasks", call.state.render_task, skip=satisfied)


@endpoint("tasks.get_all_ex")
def tasks_get_all_ex(call: Call) -> dict[str, Any]:
    """get_all plus the UI's joins: asking for `project.name` returns project as {id, name}."""
    only = call.data.get("only_fields") or []
    join = isinstance(only, list) and any(isinstance(f, str) and f.startswith("project.") for f in only)
    if not join:
        return tasks_get_all(call)
    data = dict(call.data)
    data["only_fields"] = [f for f in only if not (isinstance(f, str) and f.startswith("project."))] + ["project"]
    call.data = data
    result = tasks_get_all(call)
    for task in result["tasks"]:
        project = call.state.projects.get(task.get("project") or "")
        if project is not None:
            task["project"] = {"id": project["id"], "name": project["name"]}
    return result


@endpoint("tasks.get_by_id")
def tasks_get_by_id(call: Call) -> dict[str, Any]:
    required(call.data, "task")
    doc = call.state.tasks.get(call.data["task"])
    if doc is None:
        raise ApiError(400, 101, ids=[call.data["task"]])
    return {"task": call.state.render_task(doc)}


# ------------------------------------------------------------------------------------------------ clone
@endpoint("tasks.clone", ("1.0",))
def tasks_clone(call: Call) -> dict[str, Any]:
    state, data = call.state, call.data
    required(data, "task")
    source = state.tasks.get(data["task"])
    if source is None:
        raise ApiError(400, 101, id=data["task"], company=call.company)
    src = state.render_task(source)
    validate_refs = bool(data.get("validate_references"))

    new_project = None
    project_id = data.get("new_task_project")
    if not project_id and data.get("new_project_name"):
        name = str(data["new_project_name"])
        found = next((p for p in state.projects.values() if p["name"] == name), None)
        if found is None:
            found = _create_project(call, name)
        project_id = found["id"]
        new_project = {"id": found["id"], "name": name}
    if data.get("new_task_project") and data["new_task_project"] not in state.projects:
        raise ApiError(400, 401, id=data["new_task_project"])

    parent = data.get("new_task_parent")
    if parent and parent not in state.tasks:
        raise ApiError(400, 101, "invalid parent", parent=parent)
    if not parent:
        src_parent = src.get("parent")
        parent = src_parent if src_parent and not src_parent.startswith("__DELETED__") else src["id"]
    if validate_refs and parent not in state.tasks:
        raise ApiError(400, 101, "invalid parent", parent=parent)

    now = call.now()
    execution = copy.deepcopy(src.get("execution") or {})
    overrides = copy.deepcopy(data.get("execution_overrides") or {})
    input_models = data.get("new_task_input_models")
    container = data.get("new_task_container")
    if overrides:
        model = overrides.pop("model", None)
        if not input_models and model:
            input_models = [{"model": model, "name": "input", "updated": now}]
        docker_cmd = overrides.pop("docker_cmd", None)
        if not container and docker_cmd:
            image, _, arguments = str(docker_cmd).partition(" ")
            container = {"image": image, "arguments": arguments}
        execution.update(overrides)
    artifacts = execution.get("artifacts") or []
    if isinstance(artifacts, dict):
        artifacts = list(artifacts.values())
    execution["artifacts"] = [a for a in artifacts if a.get("mode", "output") != "output"]
    execution.pop("queue", None)

    hyperparams = data.get("new_task_hyperparams") or src.get("hyperparams") or {}
    configuration = data.get("new_task_configuration") or src.get("configuration") or {}
    system_tags = data.get("new_task_system_tags") or [
        t for t in (src.get("system_tags") or []) if t not in ("development", "archived")
    ]
    new = {
        "id": new_id(),
        "name": data.get("new_task_name") or src["name"],
        "user": call.user,
        "company": call.company,
        "project": project_id or src.get("project"),
        "parent": parent,
        "type": src.get("type", "training"),
        "status": "created",
        "comment": data.get("new_task_comment") or src.get("comment", ""),
        "created": now,
        "last_update": now,
        "last_change": now,
        "last_changed_by": call.user,
        "tags": list(data.get("new_task_tags") or src.get("tags") or []),
        "system_tags": list(system_tags),
        "script": copy.deepcopy(src.get("script") or {}),
        "execution": execution,
        "models": {"input": list(input_models or get_path(src, "models.input") or []), "output": []},
        "container": dict(container or src.get("container") or {}),
        "hyperparams": copy.deepcopy(hyperparams),
        "configuration": copy.deepcopy(configuration),
    }
    destination = get_path(src, "output.destination")
    new["output"] = {"destination": destination} if destination else {}
    state.add_task(new)
    out: dict[str, Any] = {"id": new["id"]}
    if new_project:
        out["new_project"] = new_project
    return out


def _create_project(call: Call, name: str) -> dict[str, Any]:
    now = call.now()
    proj = {
        "id": new_id(), "name": name, "basename": name.rsplit("/", 1)[-1], "description": "",
        "user": call.user, "company": call.company, "created": now, "tags": [], "system_tags": [],
        "last_update": now,
    }
    call.state.projects[proj["id"]] = proj
    return proj


# ------------------------------------------------------------------------------------------------ enqueue & co
@endpoint("tasks.enqueue")
def tasks_enqueue(call: Call) -> dict[str, Any]:
    state, data = call.state, call.data
    required(data, "task")
    update_execution_queue = data.get("update_execution_queue", True) is not False
    if data.get("verify_watched_queue") and not update_execution_queue:
        raise validation("verify_watched_queue cannot be used with update_execution_queue=False")
    queue_id, queue_name = data.get("queue"), data.get("queue_name")
    if queue_id and queue_name:
        raise validation("Either queue id or queue name should be provided")
    task_id = data["task"]
    doc = task_for_write(call, task_id)
    if not update_execution_queue and not (doc.get("status") == "queued" and get_path(doc, "execution.queue")):
        raise validation(
            "Cannot skip setting execution queue for a task that is not enqueued or does not have execution queue set"
        )
    if queue_name:
        queue = state.queue_by_name(str(queue_name)) or create_queue(call, str(queue_name))
        queue_id = queue["id"]
    if not queue_id:
        queue_id = default_queue(state, call.company)["id"]

    old_status = doc.get("status", "created")
    before = old_status
    if old_status == "queued" and doc.get("enqueue_status"):
        before = doc["enqueue_status"]
    res = change_status(
        call, task_id, "queued",
        status_reason=data.get("status_reason", ""), status_message=data.get("status_message", ""),
        force=bool(data.get("force")), extra={"enqueue_status": before},
    )
    try:
        add_to_queue(call, queue_id, task_id)
    except ApiError:
        # The server reverts the status change when the queue refuses the task.
        change_status(call, task_id, old_status, force=True, status_reason="failed enqueueing",
                      current="queued", extra={"enqueue_status": None})
        raise
    if update_execution_queue:
        state.update_task(task_id, {"execution.queue": queue_id})
        res["fields"]["execution.queue"] = queue_id
    state.remove_from_queues(task_id, exclude=queue_id)
    out: dict[str, Any] = {"queued": 1, **res}
    if data.get("verify_watched_queue"):
        out["queue_watched"] = any(queue_id in (w.get("queues") or []) for w in state.live_workers())
    return out


@endpoint("tasks.dequeue", ("1.0",))
def tasks_dequeue(call: Call) -> dict[str, Any]:
    state, data = call.state, call.data
    required(data, "task")
    new_status = data.get("new_status")
    if new_status and new_status not in TASK_STATUSES:
        raise validation(f"Invalid task status: {new_status}")
    task_id = data["task"]
    if task_id not in state.tasks:
        state.remove_from_queues(task_id)
        return {"dequeued": 1, "updated": 0}
    doc = state.tasks[task_id]
    dequeue_silently(call, task_id)
    if data.get("remove_from_all_queues"):
        state.remove_from_queues(task_id)
    if doc.get("status") not in ("queued", "in_progress"):
        return {"dequeued": 1, "updated": 0}
    res = change_status(
        call, task_id, new_status or doc.get("enqueue_status") or "created",
        status_reason=data.get("status_reason", ""), status_message=data.get("status_message", ""),
        force=True, extra={"enqueue_status": None},
    )
    return {"dequeued": 1, **res}


@endpoint("tasks.reset", ("1.0",))
def tasks_reset(call: Call) -> dict[str, Any]:
    state, data = call.state, call.data
    required(data, "task")
    task_id = data["task"]
    doc = task_for_write(call, task_id)
    force = bool(data.get("force"))
    if not force and doc.get("status") == "published":
        raise ApiError(400, 110, task_id=task_id, status="published")
    dequeued = dequeue_silently(call, task_id)
    state.remove_from_queues(task_id)
    updates: dict[str, Any] = {
        "last_iteration": 0,
        "last_metrics": {},
        "models.output": [],
        "runtime": {},
    }
    unset = [
        "output.result", "output.error", "last_worker", "last_worker_report", "started", "completed",
        "published", "active_duration", "enqueue_status",
    ]
    if data.get("clear_all"):
        updates["execution"] = {"parameters": {}, "artifacts": []}
        unset.append("script")
    else:
        unset.append("execution.queue")
        artifacts = get_path(doc, "execution.artifacts") or []
        updates["execution.artifacts"] = [a for a in artifacts if a.get("mode", "output") == "input"]
    res = change_status(call, task_id, "created", status_reason="reset", status_message="reset", force=force,
                        extra=updates, unset=tuple(unset))
    deleted_events = len(state.events.pop(task_id, [])) + len(state.scalar_events.pop(task_id, []))
    out: dict[str, Any] = {**res, "dequeued": dequeued, "deleted_models": 0, "events": {"deleted": deleted_events}}
    if data.get("return_file_urls"):
        out["urls"] = {"model_urls": [], "event_urls": [], "artifact_urls": []}
    return out


@endpoint("tasks.stop", ("1.0",))
def tasks_stop(call: Call) -> dict[str, Any]:
    data = call.data
    required(data, "task")
    task_id = data["task"]
    doc = task_for_write(call, task_id)
    is_queued = doc.get("status") == "queued"
    set_stopped = (
        is_queued or "development" in (doc.get("system_tags") or []) or not run_by_live_worker(call, doc)
    )
    if set_stopped:
        if is_queued:
            dequeue_silently(call, task_id)
        new_status = "stopped"
        user_name = call.identity.user_name if call.identity else call.user
        message = f"Stopped by {user_name}"
    else:
        new_status = doc.get("status", "created")
        message = "stopping"
    return change_status(call, task_id, new_status, status_reason=data.get("status_reason", ""),
                         status_message=message, force=bool(data.get("force")))


def _status_update(call: Call, new_status: str, **extra: Any) -> dict[str, Any]:
    data = call.data
    required(data, "task")
    task_id = data["task"]
    task_for_write(call, task_id)
    return change_status(call, task_id, new_status, status_reason=data.get("status_reason", ""),
                         status_message=data.get("status_message", ""), force=bool(data.get("force")),
                         extra=extra or None)


@endpoint("tasks.started")
def tasks_started(call: Call) -> dict[str, Any]:
    required(call.data, "task")
    doc = task_for_write(call, call.data["task"])
    now = call.now()
    if doc.get("status") == "in_progress" and doc.get("started"):
        res = _status_update(call, "in_progress")
        if now < doc["started"]:
            call.state.update_task(doc["id"], {"started": now})
    else:
        res = _status_update(call, "in_progress", started=now, completed=None, active_duration=None)
    return {"started": res["updated"], **res}


@endpoint("tasks.stopped")
def tasks_stopped(call: Call) -> dict[str, Any]:
    return _status_update(call, "stopped", completed=call.now())


@endpoint("tasks.failed")
def tasks_failed(call: Call) -> dict[str, Any]:
    return _status_update(call, "failed", completed=call.now())


@endpoint("tasks.close")
def tasks_close(call: Call) -> dict[str, Any]:
    return _status_update(call, "closed")


@endpoint("tasks.completed", ("2.2",))
def tasks_completed(call: Call) -> dict[str, Any]:
    res = _status_update(call, "completed", completed=call.now())
    if call.data.get("publish"):
        published = change_status(call, call.data["task"], "published", force=bool(call.data.get("force")),
                                  extra={"published": call.now()})
        res["published"] = published["updated"]
        res["fields"]["status"] = "published"
    return res


@endpoint("tasks.publish")
def tasks_publish(call: Call) -> dict[str, Any]:
    return _status_update(call, "published", published=call.now())


@endpoint("tasks.ping")
def tasks_ping(call: Call) -> dict[str, Any]:
    required(call.data, "task")
    task_for_write(call, call.data["task"])
    touch(call, call.data["task"])
    return {}


_EDITABLE = (
    "name", "tags", "system_tags", "type", "comment", "parent", "project", "execution", "script",
    "hyperparams", "configuration", "container", "models", "runtime", "output", "status", "status_message",
)
_MERGED = ("execution", "script", "container", "output", "models")


@endpoint("tasks.edit", ("1.0",))
def tasks_edit(call: Call) -> dict[str, Any]:
    state, data = call.state, call.data
    required(data, "task")
    task_id = data["task"]
    doc = task_for_write(call, task_id)
    if not data.get("force") and doc.get("status") != "created":
        raise ApiError(400, 110, expected="created", status=doc.get("status"))
    fields: dict[str, Any] = {}
    for key in _EDITABLE:
        if key not in data:
            continue
        value = data[key]
        if key in _MERGED and isinstance(value, dict) and isinstance(doc.get(key), dict):
            value = {**doc[key], **value}
        fields[key] = value
    if "project" in fields and fields["project"] and fields["project"] not in state.projects:
        raise ApiError(400, 401, id=fields["project"])
    if not fields:
        return {"updated": 0}
    now = call.now()
    fields.update(last_change=now, last_changed_by=call.user, last_update=now)
    state.update_task(task_id, fields)
    return {"updated": 1, "fields": fields}


@endpoint("tasks.set_requirements")
def tasks_set_requirements(call: Call) -> dict[str, Any]:
    data = call.data
    required(data, "task", "requirements")
    doc = task_for_write(call, data["task"])
    if not doc.get("script"):
        raise ApiError(400, 122, "Task has no script field", task=data["task"])
    now = call.now()
    call.state.update_task(data["task"], {"script.requirements": data["requirements"], "last_update": now,
                                          "last_change": now, "last_changed_by": call.user})
    return {"updated": 1, "fields": {"script.requirements": data["requirements"]}}


@endpoint("tasks.add_or_update_artifacts", ("2.10",))
def tasks_add_or_update_artifacts(call: Call) -> dict[str, Any]:
    """Artifacts matched by (key, mode) are replaced, others appended; like the server, only a draft task's unless
    `force` (what the SDK sends from a running task)."""
    data = call.data
    required(data, "task", "artifacts")
    doc = task_for_write(call, data["task"])
    if not data.get("force") and doc.get("status") != "created":
        raise ApiError(400, 110, expected="created", status=doc.get("status"))
    artifacts = data["artifacts"]
    if not isinstance(artifacts, list) or not all(isinstance(a, dict) and a.get("key") and a.get("type")
                                                  for a in artifacts):
        raise ApiError(400, 12, replacement="Validation error (artifacts: each needs `key` and `type`)")
    current = [dict(a) for a in get_path(doc, "execution.artifacts") or []]
    for artifact in artifacts:
        new = {"mode": "output", **artifact}
        current = [a for a in current if (a.get("key"), a.get("mode", "output")) != (new["key"], new["mode"])]
        current.append(new)
    now = call.now()
    call.state.update_task(data["task"], {"execution.artifacts": sorted(current, key=lambda a: str(a["key"])),
                                          "last_update": now, "last_change": now, "last_changed_by": call.user})
    return {"updated": len(artifacts)}
