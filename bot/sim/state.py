"""The simulator's in-memory ClearML: company, users, credentials, projects, queues, workers, tasks, events,
models and file-server objects, behind one re-entrant lock.

Documents are plain dicts shaped like the real API's output (datetimes kept as `datetime` objects until the
response is serialized). Nested dicts may be shared between documents (the fleet generator shares identical
script/container blocks between thousands of tasks), so every write goes through `set_path`, which copies
the dicts along the path instead of mutating them in place.

Tasks are indexed by status, type and project so that a `tasks.get_all(status=["queued"])` over a
200,000-task fleet only looks at the queued ones.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.sim.clock import SimClock, ms_precision

TASK_STATUSES = (
    "created",
    "queued",
    "in_progress",
    "stopped",
    "published",
    "publishing",
    "closed",
    "failed",
    "completed",
    "unknown",
)
TASK_TYPES = (
    "training",
    "testing",
    "inference",
    "data_processing",
    "application",
    "monitor",
    "controller",
    "optimizer",
    "service",
    "qc",
    "custom",
    "report",
)
TASK_DATETIME_FIELDS = (
    "created",
    "started",
    "completed",
    "published",
    "status_changed",
    "last_update",
    "last_change",
    "last_worker_report",
)
DEFAULT_WORKER_TIMEOUT_S = 600
# apiserver.workers.task_update_timeout: a task whose last_update is older is not "run by a live worker".
TASK_UPDATE_TIMEOUT_S = 600

# clearml-server's non-responsive tasks watchdog (apiserver/bll/task/non_responsive_tasks_watchdog.py, settings
# services.tasks.non_responsive_tasks_watchdog): every watch_interval_sec (first cycle one interval after start) it
# stops in_progress tasks whose last_update is older than threshold_sec, with this reason and message.
WATCHDOG_THRESHOLD_S = 7200
WATCHDOG_INTERVAL_S = 900
WATCHDOG_STOP_REASON = "Forced stop (non-responsive)"

# Fields every task document shows even when a scenario leaves them out (values are never mutated in place).
_TASK_DEFAULTS: dict[str, Any] = {
    "status_reason": "",
    "status_message": "",
    "comment": "",
    "tags": [],
    "system_tags": [],
    "script": {},
    "execution": {"parameters": {}, "artifacts": []},
    "output": {},
    "models": {"input": [], "output": []},
    "container": {},
    "hyperparams": {},
    "configuration": {},
    "runtime": {},
    "last_metrics": {},
    "last_iteration": 0,
}


def new_id() -> str:
    """A fresh 32-hex id, like the server's uuid4().hex."""
    return uuid.uuid4().hex


def derived_id(kind: str, name: str) -> str:
    """The deterministic id the scenario format promises: uuid5(NAMESPACE_URL, "<kind>:<name>").hex."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}:{name}").hex


def get_path(doc: dict[str, Any], path: str, default: Any = None) -> Any:
    """Value at a dotted path ("execution.queue"), or default."""
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Copy-on-write set of a dotted path: nested dicts along the path are replaced by copies."""
    parts = path.split(".")
    cur = doc
    for part in parts[:-1]:
        child = cur.get(part)
        child = dict(child) if isinstance(child, dict) else {}
        cur[part] = child
        cur = child
    cur[parts[-1]] = value


def unset_path(doc: dict[str, Any], path: str) -> None:
    """Copy-on-write removal of a dotted path (no-op when absent)."""
    parts = path.split(".")
    if len(parts) == 1:
        doc.pop(path, None)
        return
    if get_path(doc, ".".join(parts[:-1])) is None:
        return
    parent = get_path(doc, ".".join(parts[:-1]))
    if not isinstance(parent, dict) or parts[-1] not in parent:
        return
    parent = dict(parent)
    parent.pop(parts[-1], None)
    set_path(doc, ".".join(parts[:-1]), parent)


@dataclass
class EndpointFault:
    """A configured failure of one endpoint (or fnmatch pattern such as "tasks.*")."""

    status: int = 500
    subcode: int = 0
    message: str | None = None
    traceback: bool = False
    html: bool = False
    times: int | None = None  # fail only this many more times; None = forever


@dataclass
class Faults:
    """Server-wide faults; settable from a scenario's `faults:` and at runtime through SimServer."""

    reject_logins: bool = False
    latency_ms: float = 0.0
    token_ttl_s: int = 2592000
    endpoints: dict[str, EndpointFault] = field(default_factory=dict)
    fileserver_enabled: bool = True
    fail_uploads: bool = False
    fail_deletes: bool = False
    # Elasticsearch's flood-stage read-only block: events.add_batch fails with 500/100 and the bulk errors
    events_read_only: bool = False
    # events.add_batch acknowledges the events and stores none (a write accepted but never readable)
    events_drop_writes: bool = False


@dataclass
class Watchdog:
    """The server's non-responsive tasks watchdog settings (scenario `server.watchdog`)."""

    enabled: bool = True
    threshold_s: float = WATCHDOG_THRESHOLD_S
    interval_s: float = WATCHDOG_INTERVAL_S


@dataclass
class Credential:
    key: str
    secret: str
    user: str


@dataclass(frozen=True)
class DiskFile:
    """A file-server object kept on disk instead of in memory (benchmark datasets of gigabytes): served by the file
    server straight from `path` (read at request time, so the file must outlive the simulator's use of it). Deleting
    the object through the file server forgets it; the file on disk is never touched."""

    path: str


class SimState:
    """All simulated server data. Hold `lock` while reading or writing (it is re-entrant)."""

    def __init__(self, clock: SimClock) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.loaded_at: datetime = clock.now()
        self.name = ""
        self.description = ""
        self.server: dict[str, Any] = {
            # clearml-server's current release (apiserver/version.py) and its newest API version (the highest
            # service version in apiserver/schema/services, the service repo's max): v2.3.0, November 2025
            "version": "2.3.0",
            "api_version": "2.34",
            "build": "sim",
            "commit": "sim",
            "uid": derived_id("server", "clearml-chatops-sim"),
        }
        self.company: dict[str, str] = {"id": derived_id("company", "sim"), "name": "sim"}
        self.users: dict[str, dict[str, Any]] = {}
        self.credentials: dict[str, Credential] = {}
        self.projects: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, dict[str, Any]] = {}
        self.workers: dict[tuple[str, str], dict[str, Any]] = {}  # (user id, worker id) -> worker
        self.tasks: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}  # task id -> log events sorted by timestamp
        self.scalar_events: dict[str, list[dict[str, Any]]] = {}  # task id -> training_stats_scalar events
        # file-server path (no leading slash) -> content, or a DiskFile served from disk (large objects)
        self.files: dict[str, bytes | DiskFile] = {}
        self.queue_metrics: dict[str, dict[str, Any]] = {}  # queue id -> explicit series
        self.scrolls: dict[str, int] = {}
        self.faults = Faults()
        self.watchdog = Watchdog()
        self.watchdog_next_cycle: datetime = self.loaded_at + timedelta(seconds=WATCHDOG_INTERVAL_S)
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        self._by_status: dict[str, dict[str, None]] = {}
        self._by_type: dict[str, dict[str, None]] = {}
        self._by_project: dict[str, dict[str, None]] = {}

    # ------------------------------------------------------------------ users and credentials
    @property
    def default_user(self) -> dict[str, Any]:
        return next(iter(self.users.values()))

    def user_ref(self, user_id: str | None) -> dict[str, str]:
        user = self.users.get(user_id or "")
        return {"id": user_id or "", "name": user["name"] if user else (user_id or "")}

    # ------------------------------------------------------------------ tasks
    def add_task(self, doc: dict[str, Any]) -> None:
        task_id = doc["id"]
        if task_id in self.tasks:
            self._unindex(task_id, self.tasks[task_id])
        else:
            self._seq[task_id] = self._next_seq
            self._next_seq += 1
        self.tasks[task_id] = doc
        self._index(task_id, doc)

    def seq(self, task_id: str) -> int:
        return self._seq.get(task_id, 0)

    def natural_order(self, task_ids: Iterable[str]) -> list[str]:
        """Distinct ids in insertion order (Mongo's natural order for get_all without order_by)."""
        return sorted(dict.fromkeys(task_ids), key=self._seq.__getitem__)

    def _index(self, task_id: str, doc: dict[str, Any]) -> None:
        self._by_status.setdefault(doc.get("status", "created"), {})[task_id] = None
        self._by_type.setdefault(doc.get("type", ""), {})[task_id] = None
        self._by_project.setdefault(doc.get("project") or "", {})[task_id] = None

    def _unindex(self, task_id: str, doc: dict[str, Any]) -> None:
        self._by_status.get(doc.get("status", "created"), {}).pop(task_id, None)
        self._by_type.get(doc.get("type", ""), {}).pop(task_id, None)
        self._by_project.get(doc.get("project") or "", {}).pop(task_id, None)

    def update_task(self, task_id: str, updates: dict[str, Any], unset: Iterable[str] = ()) -> dict[str, Any]:
        """Apply dotted-path updates (copy-on-write) and removals to a task, keeping indexes right."""
        doc = self.tasks[task_id]
        self._unindex(task_id, doc)
        for path, value in updates.items():
            root = path.split(".", 1)[0]
            if "." in path and root not in doc and root in _TASK_DEFAULTS:
                doc[root] = _TASK_DEFAULTS[root]  # start from the defaults the API would have shown
            set_path(doc, path, value)
        for path in unset:
            unset_path(doc, path)
        self._index(task_id, doc)
        return doc

    def task_ids_for(self, index: str, values: Iterable[str]) -> list[str]:
        """Union of an index's buckets ("status", "type" or "project")."""
        table = {"status": self._by_status, "type": self._by_type, "project": self._by_project}[index]
        out: list[str] = []
        for value in values:
            out.extend(table.get(value, {}))
        return out

    def count_status(self, status: str) -> int:
        return len(self._by_status.get(status, {}))

    # ------------------------------------------------------------------ watchdog
    def configure_watchdog(self, watchdog: Watchdog) -> None:
        self.watchdog = watchdog
        self.watchdog_next_cycle = self.loaded_at + timedelta(seconds=watchdog.interval_s)

    def run_watchdog(self) -> list[str]:
        """Run the watchdog cycles that fell due since the last call (the simulator has no background thread:
        every request catches up first). A task is stopped at the first cycle whose reference time
        (cycle - threshold) is past its last_update, exactly as the server's periodic cycles would have done
        while nobody touched it. Returns the ids stopped."""
        now = self.clock.now()
        first = self.watchdog_next_cycle
        if first > now:
            return []
        interval = timedelta(seconds=max(1.0, self.watchdog.interval_s))
        due = int((now - first) / interval) + 1
        last = first + (due - 1) * interval
        self.watchdog_next_cycle = last + interval
        if not self.watchdog.enabled:
            return []
        threshold = timedelta(seconds=self.watchdog.threshold_s)
        stopped: list[str] = []
        for task_id in list(self._by_status.get("in_progress", {})):
            doc = self.tasks[task_id]
            last_update = doc.get("last_update")
            if not isinstance(last_update, datetime) or last_update + threshold >= last:
                continue
            deadline = last_update + threshold
            # the first due cycle strictly after the deadline (cycle - threshold > last_update)
            cycles_before = 0 if deadline < first else int((deadline - first) / interval) + 1
            at = ms_precision(first + cycles_before * interval)
            self.update_task(task_id, {
                "status": "stopped", "status_reason": WATCHDOG_STOP_REASON, "status_message": WATCHDOG_STOP_REASON,
                "status_changed": at, "last_update": at, "last_change": at,
            })
            stopped.append(task_id)
        return stopped

    # ------------------------------------------------------------------ queues
    def queue_by_name(self, name: str) -> dict[str, Any] | None:
        for queue in self.queues.values():
            if queue["name"] == name:
                return queue
        return None

    def queues_with_task(self, task_id: str) -> Iterator[dict[str, Any]]:
        for queue in self.queues.values():
            if any(e["task"] == task_id for e in queue["entries"]):
                yield queue

    def remove_from_queues(self, task_id: str, exclude: str | None = None) -> int:
        """Pull the task from every queue (but `exclude`); returns how many queues changed."""
        changed = 0
        now = self.clock.now_ms()
        for queue in self.queues.values():
            if queue["id"] == exclude:
                continue
            entries = [e for e in queue["entries"] if e["task"] != task_id]
            if len(entries) != len(queue["entries"]):
                queue["entries"] = entries
                queue["last_update"] = now
                changed += 1
        return changed

    # ------------------------------------------------------------------ workers
    def live_workers(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Workers whose registration has not expired (register_timeout after their last activity)."""
        now = now or self.clock.now()
        alive = []
        expired = []
        for key, worker in self.workers.items():
            if now - worker["last_activity_time"] < timedelta(seconds=worker["register_timeout"]):
                alive.append(worker)
            else:
                expired.append(key)
        for key in expired:  # like a Redis key expiring
            del self.workers[key]
        return alive

    # ------------------------------------------------------------------ rendering
    def render_task(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The task as the API returns it: stored fields over the defaults (shallow; nested dicts shared)."""
        out = dict(_TASK_DEFAULTS)
        out.update(doc)
        out["company"] = self.company["id"]
        return out

    def render_worker(self, worker: dict[str, Any]) -> dict[str, Any]:
        """A workers.get_all entry with the real field names (task/project/queue omitted when idle)."""
        out: dict[str, Any] = {
            "id": worker["id"],
            "key": worker["key"],
            "user": self.user_ref(worker["user"]),
            "company": dict(self.company),
            "ip": worker.get("ip", ""),
            "register_time": worker["register_time"],
            "register_timeout": worker["register_timeout"],
            "last_activity_time": worker["last_activity_time"],
        }
        if worker.get("last_report_time") is not None:
            out["last_report_time"] = worker["last_report_time"]
        task_id = worker.get("task")
        task = self.tasks.get(task_id) if task_id else None
        if task_id:
            out["task"] = {
                "id": task_id,
                "name": task.get("name") if task else None,
                "running_time": int((task or {}).get("active_duration") or 0) * 1000,
                "last_iteration": (task or {}).get("last_iteration", 0),
            }
            project = self.projects.get((task or {}).get("project") or "")
            if project:
                out["project"] = {"id": project["id"], "name": project["name"]}
        queue_id = worker.get("queue")
        if queue_id and queue_id in self.queues:
            out["queue"] = self._queue_entry(queue_id)
        out["queues"] = [self._queue_entry(q) for q in worker.get("queues", []) if q in self.queues]
        out["tags"] = list(worker.get("tags") or [])
        out["system_tags"] = list(worker.get("system_tags") or [])
        return out

    def _queue_entry(self, queue_id: str) -> dict[str, Any]:
        queue = self.queues[queue_id]
        entry: dict[str, Any] = {"id": queue_id, "name": queue["name"]}
        if queue.get("display_name"):
            entry["display_name"] = queue["display_name"]
        if queue["entries"]:
            next_id = queue["entries"][0]["task"]
            next_task = self.tasks.get(next_id)
            entry["next_task"] = {"id": next_id, "name": next_task.get("name") if next_task else None}
        entry["num_tasks"] = len(queue["entries"])
        return entry

    def render_queue(self, queue: dict[str, Any], *, expanded: bool = False) -> dict[str, Any]:
        """A queues.get_all entry; `expanded` gives the get_all_ex form (entry tasks as {id, name}, workers)."""
        out = dict(queue)
        if expanded:
            entries = []
            for entry in queue["entries"]:
                task = self.tasks.get(entry["task"])
                entries.append({"task": {"id": entry["task"], "name": task.get("name") if task else None},
                                "added": entry["added"]})
            out["entries"] = entries
        else:
            out["entries"] = [dict(e) for e in queue["entries"]]
        return out

    def queue_workers(self) -> dict[str, list[dict[str, Any]]]:
        """Queue id -> live workers listening to it, for queues.get_all_ex."""
        by_queue: dict[str, list[dict[str, Any]]] = {}
        for worker in self.live_workers():
            task_id = worker.get("task")
            task_ref = None
            if task_id:
                task = self.tasks.get(task_id) or {}
                task_ref = {
                    "id": task_id,
                    "name": task.get("name"),
                    "running_time": int(task.get("active_duration") or 0) * 1000,
                    "last_iteration": task.get("last_iteration", 0),
                }
            for queue_id in worker.get("queues", []):
                by_queue.setdefault(queue_id, []).append(
                    {"name": worker["id"], "ip": worker.get("ip", ""), "key": worker["key"], "task": task_ref}
                )
        return by_queue

    def worker_key(self, user_id: str, worker_id: str) -> str:
        return f"worker_{self.company['id']}_{user_id}_{worker_id}"

    def snapshot_task(self, task_id: str) -> dict[str, Any]:
        """A deep copy of a task's rendered document (for tests that want to keep it)."""
        with self.lock:
            self.run_watchdog()
            return copy.deepcopy(self.render_task(self.tasks[task_id]))
