"""Baseline A of benchmark 1: the health playbook's detections written the way a user would with the clearml SDK
alone, as well as the SDK allows. Sequential, as the SDK is.

    python -m bench.workers.sdk_health [--tasks-api query_tasks|get_tasks]

What it does (the same thresholds as playbooks/health.yaml):
- server reachable: `Session.send_request("debug", "ping")` and `("server", "info")` (the SDK has no typed
  service for either); credentials: creating the `APIClient` logs in, then `("users", "get_current_user")`;
- agents: `APIClient().workers.get_all(last_seen=0)`; stale after 2 min, dead after 8 min;
- queues: `APIClient().queues.get_all(only_fields=..., page=N, page_size=500)` until a short page (the SDK's
  APIClient does not page by itself);
- in-progress tasks: `Task.query_tasks(task_filter={"status": ["in_progress"]}, additional_return_fields=[...])`,
  the SDK's own paging (500 per page, `only_fields` from `additional_return_fields`). With `--tasks-api
  get_tasks`: `Task.get_tasks(task_filter={"status": ["in_progress"]})`, which is what the SDK documents first:
  it returns at most 500 tasks (with a warning) and builds each `Task` object with its own `tasks.get_by_id`;
- orphaned tasks, unserved queues and backlog: computed from those lists as the bot's checks do; the names of
  the oldest waiting tasks with one more `Task.query_tasks` by id.

Calls and bytes are counted by wrapping `requests.Session.send` (the SDK's transport); nothing else is changed.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from bench.common import COUNTS, count_requests, cpu_s, emit, peak_rss_mb

# playbooks/health.yaml
STALE_AFTER, DEAD_AFTER = 120.0, 480.0
MAX_SILENCE, GRACE, WORKER_DEAD_AFTER = 900.0, 120.0, 480.0
MAX_LENGTH, MAX_WAIT = 20, 1800.0

TASK_FIELDS = ["name", "status", "project", "last_update", "status_changed", "started", "last_worker",
               "system_tags", "execution.queue"]


def aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def age_s(now: datetime, value: Any) -> float | None:
    when = aware(value)
    return None if when is None else max(0.0, (now - when).total_seconds())


def in_progress_tasks(api: str) -> list[dict[str, Any]]:
    from clearml import Task

    if api == "get_tasks":
        out = []
        for task in Task.get_tasks(task_filter={"status": ["in_progress"]}):
            data = task.data
            out.append({
                "id": task.id, "name": data.name, "last_update": data.last_update,
                "status_changed": data.status_changed, "started": data.started,
                "last_worker": data.last_worker, "system_tags": data.system_tags or [],
            })
        return out
    return list(Task.query_tasks(task_filter={"status": ["in_progress"]}, additional_return_fields=TASK_FIELDS))


def run(api: str) -> dict[str, Any]:
    count_requests()
    from clearml import Task
    from clearml.backend_api.session.client import APIClient

    cpu0 = cpu_s()
    started = time.perf_counter()
    client = APIClient()  # logs in (auth.login)
    session = client.session
    t = time.perf_counter()
    session.send_request("debug", "ping")
    ping_ms = (time.perf_counter() - t) * 1000
    session.send_request("server", "info")
    session.send_request("users", "get_current_user")

    workers = list(client.workers.get_all(last_seen=0))
    queues: list[Any] = []
    page = 0
    while True:
        got = list(client.queues.get_all(only_fields=["id", "name", "entries"], page=page, page_size=500))
        queues += got
        if len(got) < 500:
            break
        page += 1
    tasks = in_progress_tasks(api)
    now = datetime.now(UTC)

    # agents.stale
    worker_age = {w.id: age_s(now, w.last_activity_time) for w in workers}
    stale = [w for w in workers if (worker_age[w.id] or 0) > STALE_AFTER]

    # agents.orphaned_tasks
    by_id = {w.id: w for w in workers}
    orphaned = []
    for task in tasks:
        if "dataset" in (task.get("system_tags") or []):
            continue
        silence = age_s(now, task.get("last_update") or task.get("status_changed") or task.get("started"))
        worker_id = task.get("last_worker")
        worker = by_id.get(worker_id) if worker_id else None
        gone = bool(worker_id) and (
            worker is None
            or (worker_age[worker.id] or 0) > WORKER_DEAD_AFTER
            or getattr(getattr(worker, "task", None), "id", None) != task["id"]
        )
        if silence is not None and ((gone and silence > GRACE) or silence > MAX_SILENCE):
            orphaned.append(task["id"])

    # agents.unserved_queues and queues.backlog
    listeners: dict[str, list[Any]] = {}
    for w in workers:
        for q in w.queues or []:
            listeners.setdefault(q.id, []).append(w)
    unserved, backlog, oldest = [], [], {}
    for q in queues:
        entries = q.entries or []
        if not entries:
            continue
        first = min(entries, key=lambda e: aware(e.added) or now)
        oldest[q.id] = first.task
        if not any((worker_age[w.id] or 0) <= STALE_AFTER for w in listeners.get(q.id, [])):
            unserved.append(q.id)
        waited = age_s(now, first.added) or 0
        if len(entries) > MAX_LENGTH or waited >= MAX_WAIT:
            backlog.append(q.id)
    named = sorted({oldest[q] for q in set(unserved) | set(backlog)})
    names = Task.query_tasks(task_filter={"id": named}, additional_return_fields=["name"]) if named else []

    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "api_calls": COUNTS["calls"],
        "bytes_received": COUNTS["bytes"],
        "ping_ms": ping_ms,
        "tasks_seen": len(tasks),
        "names_fetched": len(names),
        "detections": {
            "agents.stale": len(stale),
            "agents.orphaned_tasks": len(orphaned),
            "agents.unserved_queues": len(unserved),
            "queues.backlog": len(backlog),
        },
        "cpu_s": cpu_s() - cpu0,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks-api", choices=["query_tasks", "get_tasks"], default="query_tasks")
    args = parser.parse_args()
    emit(run(args.tasks_api))


if __name__ == "__main__":
    main()
