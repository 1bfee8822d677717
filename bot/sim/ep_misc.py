"""Simulated endpoints: auth, debug, server, users, projects, events and models."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bot.sim.api import Call, endpoint
from bot.sim.errors import ApiError, required
from bot.sim.query import (
    QuerySpec,
    compile_query,
    matches,
    order_items,
    project,
    select_page,
    split_only_fields,
)
from bot.sim.state import new_id

PROJECT_QUERY = QuerySpec(list_fields=("id", "tags", "system_tags", "user"), pattern_fields=("name", "basename"))
MODEL_QUERY = QuerySpec(
    list_fields=("id", "tags", "system_tags", "user", "project", "task", "framework"),
    pattern_fields=("name", "comment"),
    datetime_fields=("last_update", "last_change"),
    eq_prefixes=("ready", "uri"),
)


def get_all(
    call: Call,
    docs: list[dict[str, Any]],
    spec: QuerySpec,
    key: str,
    render: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    skip: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Shared get_all: filter, order, page or scroll, then render and project only the returned page."""
    preds = compile_query(call.data, spec, skip)
    matched = [d for d in docs if matches(d, preds)] if preds else list(docs)
    if call.data.get("order_by"):
        matched = order_items(matched, call.data["order_by"])
    page, extra = select_page(matched, call.data, call.state.scrolls, new_id)
    include, exclude = split_only_fields(call.data.get("only_fields"))
    if render is not None:
        page = [render(d) for d in page]
    return {key: [project(d, include, exclude) for d in page], **extra}


# ------------------------------------------------------------------------------------------------ auth
@endpoint("auth.login")
def auth_login(call: Call) -> dict[str, Any]:
    assert call.identity is not None
    expiration = call.data.get("expiration_sec")
    return {"token": call.app.issue_token(call.identity, int(expiration) if expiration else None)}


@endpoint("auth.fixed_users_mode", auth=False)
def auth_fixed_users_mode(call: Call) -> dict[str, Any]:
    return {"enabled": False, "migration_warning": False, "guest": {"enabled": False}}


@endpoint("auth.validate_token")
def auth_validate_token(call: Call) -> dict[str, Any]:
    required(call.data, "token")
    try:
        ident = call.app.identity_from_token(call.data["token"])
    except ApiError as exc:
        return {"valid": False, "msg": exc.message}
    return {"valid": True, "msg": "", "user": ident.user, "company": ident.company}


# ------------------------------------------------------------------------------------------------ debug/server
@endpoint("debug.ping", auth=False)
def debug_ping(call: Call) -> dict[str, Any]:
    return {"msg": "ClearML server", **call.data}


@endpoint("server.info", ("1.0", "2.8", "2.12"), auth=False)
def server_info(call: Call) -> dict[str, Any]:
    server = call.state.server
    out: dict[str, Any] = {"version": server["version"], "build": server["build"], "commit": server["commit"]}
    version = tuple(int(p) for p in call.requested_version.split(".") if p.isdigit())
    if version >= (2, 8):
        out["uid"] = server["uid"]
    if version >= (2, 12):
        out["api_version"] = server["api_version"]
    return out


# ------------------------------------------------------------------------------------------------ users
@endpoint("users.get_current_user")
def users_get_current_user(call: Call) -> dict[str, Any]:
    user = call.state.users.get(call.user)
    if user is None:
        raise ApiError(400, 300, replacement="Invalid user (failed loading user)")
    out = {
        "id": user["id"],
        "name": user["name"],
        "given_name": user.get("given_name", user["name"].split(" ")[0]),
        "family_name": user.get("family_name", ""),
        "email": user.get("email", ""),
        "created": user.get("created", call.state.loaded_at),
        "company": dict(call.state.company),
        "role": call.identity.role if call.identity else user.get("role", "user"),
        "preferences": {},
    }
    return {"user": out, "getting_started": None, "settings": {"max_download_items": 1000}}


@endpoint("users.get_all")
def users_get_all(call: Call) -> dict[str, Any]:
    users = [
        {"id": u["id"], "name": u["name"], "company": call.company, "role": u.get("role", "user")}
        for u in call.state.users.values()
    ]
    return get_all(call, users, QuerySpec(list_fields=("id",), pattern_fields=("name",)), "users")


# ------------------------------------------------------------------------------------------------ projects
@endpoint("projects.get_all")
def projects_get_all(call: Call) -> dict[str, Any]:
    docs = list(call.state.projects.values())
    if not (call.data.get("search_hidden") or call.data.get("id")):
        docs = [p for p in docs if "hidden" not in (p.get("system_tags") or [])]
    return get_all(call, docs, PROJECT_QUERY, "projects")


@endpoint("projects.get_by_id")
def projects_get_by_id(call: Call) -> dict[str, Any]:
    required(call.data, "project")
    proj = call.state.projects.get(call.data["project"])
    if proj is None:
        raise ApiError(400, 401, id=call.data["project"], company=call.company)
    return {"project": proj}


# ------------------------------------------------------------------------------------------------ models
@endpoint("models.get_all", ("1.0",))
def models_get_all(call: Call) -> dict[str, Any]:
    docs = list(call.state.models.values())
    return get_all(call, docs, MODEL_QUERY, "models")


@endpoint("models.get_by_id")
def models_get_by_id(call: Call) -> dict[str, Any]:
    required(call.data, "model")
    model = call.state.models.get(call.data["model"])
    if model is None:
        raise ApiError(400, 201, id=call.data["model"], company=call.company)
    return {"model": model}


# ------------------------------------------------------------------------------------------------ events
def log_event(task_id: str, timestamp_ms: int, msg: str, level: str = "info", worker: str = "",
              iteration: int = 0) -> dict[str, Any]:
    """A console-log event as the server stores it in Elasticsearch."""
    return {
        "timestamp": timestamp_ms,
        "type": "log",
        "task": task_id,
        "iter": iteration,
        "worker": worker,
        "level": level,
        "msg": msg,
        "metric": "",
        "variant": "",
        "@timestamp": datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(),
    }


@endpoint("events.get_task_log", ("1.0", "1.7", "2.9"))
def events_get_task_log(call: Call) -> dict[str, Any]:
    required(call.data, "task")
    task_id = call.data["task"]
    if task_id not in call.state.tasks:
        raise ApiError(400, 101, ids=[task_id])
    events = call.state.events.get(task_id, [])
    batch_size = int(call.data.get("batch_size") or 5000)
    earlier = call.data.get("navigate_earlier", True) is not False
    from_ts = call.data.get("from_timestamp")
    if earlier:
        candidates = [e for e in reversed(events) if from_ts is None or e["timestamp"] < from_ts]
    else:
        candidates = [e for e in events if from_ts is None or e["timestamp"] > from_ts]
    page = candidates[:batch_size]
    # Like the server: events sharing the last timestamp are all returned, so paging loses none of them.
    if page and len(candidates) > len(page):
        last = page[-1]["timestamp"]
        for extra in candidates[len(page):]:
            if extra["timestamp"] != last:
                break
            page.append(extra)
    order = call.data.get("order")
    if order and ((earlier and order == "asc") or (not earlier and order == "desc")):
        page = list(reversed(page))
    return {"events": page, "returned": len(page), "total": len(events)}


def _metric_hash(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


@endpoint("events.add_batch", batched=True)
def events_add_batch(call: Call) -> dict[str, Any]:
    events = call.batched or []
    if not events:
        raise ApiError(400, 17)
    state = call.state
    if state.faults.events_read_only:
        from bot.sim.ep_write import read_only_error

        raise read_only_error(call, events)
    if state.faults.events_drop_writes:
        return {"added": len(events), "errors": 0, "errors_info": {}}
    added, errors = 0, 0
    errors_info: dict[str, int] = {}
    now = call.now()
    touched: set[str] = set()
    for event in events:
        task_id = event.get("task") if isinstance(event, dict) else None
        if not task_id or task_id not in state.tasks:
            errors += 1
            errors_info["Invalid task id"] = errors_info.get("Invalid task id", 0) + 1
            continue
        etype = event.get("type", "log")
        ts = int(event.get("timestamp") or now.timestamp() * 1000)
        if etype == "log":
            ev = log_event(task_id, ts, str(event.get("msg", "")), str(event.get("level", "info")),
                           str(event.get("worker") or call.worker_header or ""), int(event.get("iter") or 0))
            log = state.events.setdefault(task_id, [])
            if log and log[-1]["timestamp"] > ts:
                log.append(ev)
                log.sort(key=lambda e: e["timestamp"])
            else:
                log.append(ev)
        elif etype == "training_stats_scalar":
            task = state.tasks[task_id]
            metric, variant = str(event.get("metric", "")), str(event.get("variant", ""))
            value = event.get("value")
            mh, vh = _metric_hash(metric), _metric_hash(variant)
            prev = (task.get("last_metrics") or {}).get(mh, {}).get(vh, {})
            entry = {
                "metric": metric, "variant": variant, "value": value,
                "min_value": min(prev.get("min_value", value), value) if value is not None else None,
                "max_value": max(prev.get("max_value", value), value) if value is not None else None,
            }
            updates: dict[str, Any] = {f"last_metrics.{mh}.{vh}": entry}
            iteration = event.get("iter")
            if isinstance(iteration, int) and iteration > int(task.get("last_iteration") or 0):
                updates["last_iteration"] = iteration
            state.update_task(task_id, updates)
            state.scalar_events.setdefault(task_id, []).append({
                "timestamp": ts, "type": etype, "task": task_id, "iter": int(iteration or 0),
                "metric": metric, "variant": variant, "value": value,
                "worker": str(event.get("worker") or call.worker_header or ""),
            })
        added += 1
        touched.add(task_id)
    for task_id in touched:
        state.update_task(task_id, {"last_update": now})
    return {"added": added, "errors": errors, "errors_info": errors_info}
