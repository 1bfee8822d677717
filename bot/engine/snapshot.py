"""The per-run snapshot: a lazy, memoized view of one ClearML server shared by all checks of a run.

Each collection is fetched at most once per run, on first use; checks that ask for the same collection at
the same time await the same in-flight request, so concurrent checks cost one fetch. Keyed look-ups (one
task, one task's log) are memoized per key.

Given a `ReadWindow` (bot/engine/window.py), the reads are also shared across runs and commands: a collection
another snapshot of the same server and credentials is fetching, or fetched no earlier than the window before
this snapshot was asked for (`asked_at`), is not fetched again. The snapshot remembers which of its data was
fetched before it was asked for, so findings and replies can say how old their data is (`data_age_s`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from bot.clearml.models import Queue, Task, Worker

if TYPE_CHECKING:
    from bot.clearml.client import ClearMLClient
    from bot.config import ServerSettings, Settings
    from bot.engine.window import ReadWindow
    from bot.store import AgentVersionSeen, PoolCount, PoolObservation

T = TypeVar("T")

# The send times of window-served data a check read (set per check task by the runner: `Snapshot.track_reads`).
_READS: ContextVar[list[float] | None] = ContextVar("snapshot_reads", default=None)

# Fields the bot needs from task lists; whole task documents can be hundreds of KB each.
TASK_LIST_FIELDS: tuple[str, ...] = (
    "id", "name", "status", "type", "project", "user", "status_reason", "status_message",
    "status_changed", "created", "started", "completed", "last_update", "last_worker",
    "last_worker_report", "system_tags", "tags", "execution.queue", "parent",
)


class Snapshot:
    def __init__(
        self,
        client: ClearMLClient,
        server: ServerSettings,
        settings: Settings | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        window: ReadWindow | None = None,
        asked_at: float | None = None,
    ) -> None:
        self.client = client
        self.server = server
        self.settings = settings
        self._clock = clock
        self._memo: dict[Any, asyncio.Future[Any]] = {}
        # Fleet gauges checks compute anyway (agents alive, queue wait): kept per run for digests and trends.
        self.metrics: dict[str, float] = {}
        # Recorded pool observations of this server (the runner loads them from the store for agents.missing's
        # learned baseline); None: no history kept, [] : nothing recorded yet (a fresh install).
        self.fleet_history: list[PoolObservation] | None = None
        # clearml-agent versions per worker read in earlier runs (the runner loads them from the store for
        # server.compatibility), and those this run read or confirmed (the store keeps them for the next run).
        self.known_agent_versions: dict[str, AgentVersionSeen] | None = None
        self.seen_agent_versions: dict[str, AgentVersionSeen] = {}
        self.window = window if window is not None and window.enabled else None
        self._identity = ""
        self.asked_at = time.monotonic() if asked_at is None else asked_at
        self._not_before = self.asked_at
        if self.window is not None:
            from bot.engine.window import server_identity

            self._identity = server_identity(server)
            self.asked_at = self.window.clock() if asked_at is None else asked_at
            self._not_before = self.window.not_before(asked_at=self.asked_at)
        self._served: dict[Any, float] = {}  # key -> send time, for data fetched before this snapshot was asked for
        self._window_clock: tuple[datetime, float] | None = None  # (server time, monotonic) from the window

    def listed(self) -> dict[str, set[str]]:
        """The ids of the workers and queues the server listed in this run, for the kinds this run fetched (and got
        in full). Incidents tell a subject that recovered from one that vanished by it (bot/incidents)."""
        out: dict[str, set[str]] = {}
        for kind, key in (("worker", "workers"), ("queue", "queues")):
            fut = self._memo.get(key)
            if fut is None or not fut.done() or fut.cancelled() or fut.exception() is not None:
                continue
            out[kind] = {str(item.id) for item in fut.result()}
        return out

    # -- memoization -----------------------------------------------------------------------------
    async def _once(self, key: Any, fetch: Callable[[], Awaitable[T]], *, shared: bool = False) -> T:
        fut = self._memo.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._through_window(key, fetch) if shared and self.window else fetch())
            self._memo[key] = fut
        # shield: one check timing out must not cancel a fetch other checks are waiting on
        value = await asyncio.shield(fut)
        reads = _READS.get()
        if reads is not None and key in self._served:
            reads.append(self._served[key])
        return value

    async def _through_window(self, key: Any, fetch: Callable[[], Awaitable[T]]) -> T:
        assert self.window is not None
        served = await self.window.read(
            self._identity, key, fetch, not_before=self._not_before, server_time=self.client.server_time
        )
        if served.shared and served.sent_at < self.asked_at:
            self._served[key] = served.sent_at
        value: T = served.value
        return value

    # -- the window ------------------------------------------------------------------------------
    def limit_age(self, max_age_s: float | None) -> None:
        """Accept window data at most `max_age_s` old (relative to when this snapshot was asked for) from now on:
        a run whose checks compare ages against thresholds tightens it (bot/engine/runner.py)."""
        if self.window is not None and max_age_s is not None:
            self._not_before = max(self._not_before, self.asked_at - max(0.0, max_age_s))

    @staticmethod
    def track_reads() -> list[float]:
        """Start recording, in the calling task only, the send times of window-served data it reads."""
        reads: list[float] = []
        _READS.set(reads)
        return reads

    def age_of(self, reads: Iterable[float]) -> float | None:
        """How old the oldest of `reads` is now (seconds), None when nothing was served from the window."""
        oldest = min(reads, default=None)
        if oldest is None or self.window is None:
            return None
        return max(0.0, self.window.clock() - oldest)

    @property
    def oldest_served_at(self) -> float | None:
        """Send time (window clock) of the oldest data this snapshot was served from the window."""
        return min(self._served.values(), default=None)

    @property
    def data_age_s(self) -> float | None:
        """Age of the oldest data this snapshot was served from the window (None: all of it fetched for it)."""
        return self.age_of(self._served.values())

    # -- time ------------------------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        """The server's clock (from the last response's Date header) so that skew cannot fake ages."""
        if self._clock is not None:
            return self._clock()
        server_now = self.client.server_time()
        if server_now is None and self.window is not None:
            # served from the window, this client may not have had an answer of its own yet: the server's clock
            # as another snapshot last read it (taken once; checks ask for "now" once per worker or task)
            if self._window_clock is None:
                mark = self.window.server_time(self._identity)
                self._window_clock = (mark, time.monotonic()) if mark is not None else None
            if self._window_clock is not None:
                server_now = self._window_clock[0] + timedelta(seconds=time.monotonic() - self._window_clock[1])
        return server_now or datetime.now(UTC)

    def age_s(self, when: datetime | None) -> float | None:
        if when is None:
            return None
        return max(0.0, (self.now - when).total_seconds())

    # -- server ----------------------------------------------------------------------------------
    async def ping(self) -> dict[str, Any]:
        """`debug.ping` with its latency in ms (no auth needed)."""

        async def fetch() -> dict[str, Any]:
            start = time.perf_counter()
            data = await self.client.call("debug.ping", {}, auth=False)
            return {"latency_ms": round((time.perf_counter() - start) * 1000, 1), "data": data}

        return await self._once("ping", fetch, shared=True)

    async def server_info(self) -> dict[str, Any]:
        return await self._once(
            "server.info", lambda: self.client.call("server.info", {}, auth=False), shared=True
        )

    async def current_user(self) -> dict[str, Any]:
        return await self._once(
            "users.get_current_user", lambda: self.client.call("users.get_current_user", {}), shared=True
        )

    # -- fleet -----------------------------------------------------------------------------------
    async def workers(self) -> list[Worker]:
        async def fetch() -> list[Worker]:
            data = await self.client.call("workers.get_all", {"last_seen": 0})
            return [Worker.from_api(w) for w in data.get("workers") or [] if isinstance(w, dict)]

        return await self._once("workers", fetch, shared=True)

    async def queues(self) -> list[Queue]:
        async def fetch() -> list[Queue]:
            docs = await self.client.get_all(
                "queues.get_all",
                {"only_fields": ["id", "name", "display_name", "entries", "tags", "system_tags"]},
                key="queues",
            )
            return [Queue.from_api(q) for q in docs]

        return await self._once("queues", fetch, shared=True)

    async def tasks(
        self,
        *,
        status: Iterable[str] | None = None,
        changed_within: timedelta | None = None,
        type: Iterable[str] | None = None,
        system_tags: Iterable[str] | None = None,
        search_hidden: bool = False,
        projects: Iterable[str] | None = None,
        extra_fields: Iterable[str] = (),
    ) -> list[Task]:
        """Tasks matching the filters, all pages, only the list fields (plus `extra_fields`)."""
        fields = tuple(sorted(set(TASK_LIST_FIELDS) | set(extra_fields)))
        key = (
            "tasks",
            tuple(sorted(status or ())),
            changed_within.total_seconds() if changed_within else None,
            tuple(sorted(type or ())),
            tuple(system_tags or ()),
            search_hidden,
            tuple(sorted(projects or ())),
            fields,
        )

        async def fetch() -> list[Task]:
            payload: dict[str, Any] = {"only_fields": list(fields), "order_by": ["-last_update"]}
            if status:
                payload["status"] = list(status)
            if type:
                payload["type"] = list(type)
            if system_tags:
                payload["system_tags"] = list(system_tags)
            if search_hidden:
                payload["search_hidden"] = True
            if projects:
                payload["project"] = list(projects)
            if changed_within is not None:
                since = self.now - changed_within
                payload["status_changed"] = [">=" + since.strftime("%Y-%m-%dT%H:%M:%S")]
            docs = await self.client.get_all("tasks.get_all", payload, key="tasks")
            return [Task.from_api(t) for t in docs]

        return await self._once(key, fetch, shared=True)

    async def task(self, task_id: str) -> Task:
        """One full task document (raises NotFoundError for an unknown id)."""

        async def fetch() -> Task:
            data = await self.client.call("tasks.get_by_id", {"task": task_id})
            return Task.from_api(data.get("task") or {})

        return await self._once(("task", task_id), fetch, shared=True)

    async def tasks_by_id(self, task_ids: Iterable[str], extra_fields: Iterable[str] = ()) -> dict[str, Task]:
        ids = sorted(set(task_ids))
        if not ids:
            return {}
        fields = tuple(sorted(set(TASK_LIST_FIELDS) | set(extra_fields)))

        async def fetch() -> dict[str, Task]:
            out: dict[str, Task] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                docs = await self.client.get_all(
                    "tasks.get_all",
                    {"id": chunk, "only_fields": list(fields), "search_hidden": True},
                    key="tasks",
                )
                out.update({d["id"]: Task.from_api(d) for d in docs if d.get("id")})
            return out

        return await self._once(("tasks_by_id", tuple(ids), fields), fetch, shared=True)

    async def task_log(self, task_id: str, lines: int = 100, *, head: bool = False) -> list[str]:
        """The last `lines` console lines of a task (`head`: the first ones), oldest first."""

        async def fetch() -> list[str]:
            data = await self.client.call(
                "events.get_task_log", {"task": task_id, "batch_size": lines, "navigate_earlier": not head}
            )
            events = [e for e in data.get("events") or [] if isinstance(e, dict)]
            events.sort(key=lambda e: e.get("timestamp") or 0)
            return [str(e.get("msg", "")) for e in events]

        return await self._once(("log_head" if head else "log", task_id, lines), fetch, shared=True)

    async def queue_metrics(
        self, window: timedelta, interval_s: int, queue_ids: Iterable[str]
    ) -> list[dict[str, Any]]:
        ids = sorted(queue_ids)

        async def fetch() -> list[dict[str, Any]]:
            to_date = self.now.timestamp()
            data = await self.client.call(
                "queues.get_queue_metrics",
                {
                    "from_date": to_date - window.total_seconds(),
                    "to_date": to_date,
                    "interval": interval_s,
                    "queue_ids": ids,
                },
            )
            return [q for q in data.get("queues") or [] if isinstance(q, dict)]

        return await self._once(
            ("queue_metrics", window.total_seconds(), interval_s, tuple(ids)), fetch, shared=True
        )

    async def projects(self) -> dict[str, str]:
        """Project id -> name, hidden (dataset) projects included."""

        async def fetch() -> dict[str, str]:
            docs = await self.client.get_all(
                "projects.get_all", {"only_fields": ["id", "name"], "search_hidden": True}, key="projects"
            )
            return {p["id"]: p.get("name", "") for p in docs if p.get("id")}

        return await self._once("projects", fetch, shared=True)

    async def datasets(self) -> list[Task]:
        """Dataset versions: data_processing tasks tagged `dataset`, in hidden projects, not archived."""
        return await self.tasks(
            type=["data_processing"],
            system_tags=["__$all", "dataset", "__$not", "archived"],
            search_hidden=True,
            extra_fields=("runtime", "execution.artifacts", "status_changed"),
        )

    def observed_pools(self) -> dict[str, PoolCount] | None:
        """The pools registered now, if this run listed the workers (no extra request otherwise)."""
        fut = self._memo.get("workers")
        if fut is None or not fut.done() or fut.cancelled() or fut.exception() is not None:
            return None
        from bot.engine.baseline import observe

        return observe(fut.result())

    # -- links into the web UI -------------------------------------------------------------------
    @property
    def web(self) -> str:
        return self.server.web_url.rstrip("/")

    def task_link(self, task: Task | str, project: str | None = None) -> str:
        if isinstance(task, Task):
            project, task_id = task.project or project, task.id
        else:
            task_id = task
        return f"{self.web}/projects/{project or '*'}/experiments/{task_id}/output/execution"

    def dataset_link(self, dataset: Task) -> str:
        return f"{self.web}/datasets/simple/{dataset.project or '*'}/experiments/{dataset.id}"

    def worker_link(self, worker_id: str) -> str:
        return f"{self.web}/workers-and-queues/workers?id={quote(worker_id, safe='')}"

    def queue_link(self, queue_id: str) -> str:
        return f"{self.web}/workers-and-queues/queues?id={quote(queue_id, safe='')}"

    # -- added for the fleet checks (bot/checks/queues.py: queues.stuck_queued) ----------------------
    async def tasks_changed_before(self, status: Iterable[str], older_than: timedelta) -> list[Task]:
        """Tasks in `status` whose `status_changed` is older than `older_than` (filtered on the server), e.g.
        tasks queued for more than 6 h without pulling every queued task."""
        statuses = sorted(status)
        key = ("tasks_changed_before", tuple(statuses), older_than.total_seconds())

        async def fetch() -> list[Task]:
            before = self.now - older_than
            payload: dict[str, Any] = {
                "status": statuses,
                "status_changed": ["<" + before.strftime("%Y-%m-%dT%H:%M:%S")],
                "only_fields": list(TASK_LIST_FIELDS),
                "order_by": ["status_changed"],
            }
            docs = await self.client.get_all("tasks.get_all", payload, key="tasks")
            return [Task.from_api(t) for t in docs]

        return await self._once(key, fetch, shared=True)

    # -- generic memo (appended for the storage/dataset checks) -------------------------------------
    async def memoized(self, key: tuple[Any, ...], fetch: Callable[[], Awaitable[T]]) -> T:
        """Memoize any per-run fetch under `key` (namespace it, e.g. ("dataset_state", id)): checks that
        need the same object (a dataset's state.json, a model listing) download it once per run."""
        return await self._once(("memo", *key), fetch)
