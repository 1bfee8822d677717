"""What a planner gets: the ClearML client of the chosen server, the settings, the actor, a clock, and the
small look-ups every action needs (a task, the live workers, a queue by name or id, web links).

Look-ups are memoized per context (one action), so a planner and its helpers can ask twice for free.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

from bot.actions.base import Actor, Named, Refusal
from bot.clearml.errors import NotFoundError
from bot.config import ServerSettings, Settings
from bot.diagnosis.refs import TASK_ID
from bot.errors import BotError
from bot.store import Store


class ClientLike(Protocol):
    """The part of bot.clearml.client.ClearMLClient the actions use."""

    async def call(self, endpoint: str, payload: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]: ...

    async def get_all(self, endpoint: str, payload: dict[str, Any], *, key: str, **kwargs: Any) -> list[Any]: ...

    async def aclose(self) -> None: ...


class DryRunViolation(BotError, RuntimeError):
    """A mutating ClearML call was attempted during a dry run (a bug in a planner): nothing was sent."""


# As agents.stale's dead_after and agents.orphaned_tasks' worker_dead_after: 16 missed 30 s reports.
WORKER_DEAD_AFTER_S = 480.0


class ReadOnlyClient:
    """Wraps the client while planning and in dry run: only read endpoints pass.

    Planners only read by contract; this makes a planner bug that writes fail loudly instead of mutating the
    server during a dry run.
    """

    def __init__(self, inner: ClientLike) -> None:
        self.inner = inner

    async def call(self, endpoint: str, payload: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        from bot.clearml.client import is_read_endpoint

        if not is_read_endpoint(endpoint):
            raise DryRunViolation(f"{endpoint} is a write: not allowed while planning or in a dry run")
        return await self.inner.call(endpoint, payload, **kwargs)

    async def get_all(self, endpoint: str, payload: dict[str, Any], *, key: str, **kwargs: Any) -> list[Any]:
        return await self.inner.get_all(endpoint, payload, key=key, **kwargs)

    async def aclose(self) -> None:
        await self.inner.aclose()


class ActionContext:
    def __init__(
        self,
        *,
        client: ClientLike,
        server: ServerSettings,
        settings: Settings,
        actor: Actor,
        clock: Callable[[], datetime] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.client = client  # the real client; planners must use `reader`
        self.reader = ReadOnlyClient(client)
        self.server = server
        self.settings = settings
        self.actor = actor
        self.dry_run = dry_run
        self.secrets: list[str] = []  # strings to redact from anything this action reports
        self.store: Store | None = None  # for actions that keep state (reproduce's watcher); set by the executor
        self.request_context: dict[str, Any] = {}  # the request's opaque context (Slack channel/thread)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._tasks: dict[str, dict[str, Any]] = {}
        self._workers: list[dict[str, Any]] | None = None
        self._queues: dict[str, dict[str, Any]] = {}

    def now(self) -> datetime:
        return self._clock()

    # -- tasks ------------------------------------------------------------------------------------
    async def task(self, task_id: str, *, fresh: bool = False) -> dict[str, Any]:
        """The task document, or a Refusal naming the server when it does not exist."""
        if not fresh and task_id in self._tasks:
            return self._tasks[task_id]
        try:
            data = await self.reader.call("tasks.get_by_id", {"task": task_id})
        except NotFoundError:
            raise Refusal(f"task {task_id} does not exist on server {self.server.name}") from None
        task = data.get("task") or {}
        if not task:
            raise Refusal(f"task {task_id} does not exist on server {self.server.name}")
        self._tasks[task_id] = task
        return task

    def task_url(self, task: dict[str, Any], task_id: str | None = None) -> str:
        """The web UI page of a task (its execution tab)."""
        project = task.get("project") or "*"
        tid = task_id or task.get("id", "")
        return f"{self.server.web_url}/projects/{quote(str(project))}/experiments/{tid}/output/execution"

    @staticmethod
    def task_label(task: dict[str, Any]) -> str:
        name = task.get("name") or ""
        tid = str(task.get("id", ""))
        return f"task {name} ({tid[:8]})" if name else f"task {tid}"

    # -- workers ----------------------------------------------------------------------------------
    async def live_workers(self) -> list[dict[str, Any]]:
        """Workers the server still lists (an agent vanishes 600 s after its last report)."""
        if self._workers is None:
            data = await self.reader.call("workers.get_all", {})
            self._workers = [w for w in data.get("workers") or [] if isinstance(w, dict)]
        return self._workers

    async def worker(self, worker_id: str) -> dict[str, Any] | None:
        for w in await self.live_workers():
            if w.get("id") == worker_id:
                return w
        return None

    def server_now(self) -> datetime:
        """The server's clock when the client has seen it (ages must not depend on this host's clock)."""
        server_time = getattr(self.client, "server_time", None)
        seen = server_time() if callable(server_time) else None
        return seen if isinstance(seen, datetime) else self.now()

    async def worker_running(self, task_id: str) -> dict[str, Any] | None:
        """The live worker currently reporting this task, if any: no such worker = the task is orphaned.

        A worker the server still lists (it keeps one 600 s) but that has been silent past WORKER_DEAD_AFTER_S
        runs nothing: agents.orphaned_tasks already calls its task orphaned and suggests requeue, so the
        requeue must not then refuse it as "running on a live worker"."""
        from bot.clearml.models import Worker

        for w in await self.live_workers():
            task = w.get("task")
            if isinstance(task, dict) and task.get("id") == task_id:
                seen = Worker.from_api(w).last_seen
                if seen is not None and (self.server_now() - seen).total_seconds() > WORKER_DEAD_AFTER_S:
                    return None
                return w
        return None

    # -- queues -----------------------------------------------------------------------------------
    async def queue_by_id(self, queue_id: str) -> dict[str, Any] | None:
        if queue_id in self._queues:
            return self._queues[queue_id]
        try:
            data = await self.reader.call("queues.get_by_id", {"queue": queue_id})
        except NotFoundError:
            return None
        queue = data.get("queue") or None
        if queue:
            self._queues[queue_id] = queue
        return queue

    async def all_queues(self) -> list[dict[str, Any]]:
        # search_hidden: the k8s glue's pending queue is hidden but can hold the task we look for
        queues = await self.reader.get_all("queues.get_all", {"search_hidden": True}, key="queues")
        for q in queues:
            if isinstance(q, dict) and q.get("id"):
                self._queues[q["id"]] = q
        return [q for q in queues if isinstance(q, dict)]

    async def resolve_queue(self, ref: str) -> Named:
        """A queue chosen by id or exact name. Never creates one: tasks.enqueue(queue_name=…) would auto-create
        a queue nobody listens to on a typo, so the bot always resolves to an existing id first."""
        ref = ref.strip()
        if TASK_ID.match(ref):
            queue = await self.queue_by_id(ref)
            if queue:
                return Named(queue["id"], queue.get("display_name") or queue.get("name") or ref)
        queues = await self.all_queues()
        for q in queues:
            if ref in (q.get("name"), q.get("display_name")):
                return Named(q["id"], q.get("display_name") or q.get("name") or q["id"])
        names = sorted(str(q.get("name")) for q in queues if q.get("name"))
        shown = ", ".join(names[:20]) + (" …" if len(names) > 20 else "")
        raise Refusal(f"no queue named {ref!r} on server {self.server.name} (queues: {shown or 'none'})")

    async def queue_named(self, queue_id: str) -> Named:
        queue = await self.queue_by_id(queue_id)
        if queue is None:
            return Named(queue_id, queue_id)
        return Named(queue_id, queue.get("display_name") or queue.get("name") or queue_id)
