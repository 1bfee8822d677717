"""reproduce: clone a finished task, enqueue the clone, watch it, and report how it compares.

The action itself is three steps: tasks.clone, tasks.enqueue, and registering a watch (a row in the store's
`repro_watches` table, so a restart does not lose it). Watching is a periodic `tick()`, not a sleeping
coroutine: the Slack side calls `tick()` from its scheduler (every `poll` seconds) and posts each returned
result into the thread recorded in the watch's context; the terminal calls `watch_until_done()`. Tests drive
`tick()` directly with a pinned clock, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import Field

from bot.actions.base import ActionParams, ExecState, Link, Plan, Refusal, Step, action
from bot.actions.clone import NEW_TASK, clone_step
from bot.actions.compare import Comparison, Tolerances, compare_runs
from bot.actions.context import ActionContext
from bot.actions.requeue import enqueue_step, note_unwatched
from bot.clearml.errors import ClearMLError, NotFoundError
from bot.diagnosis.refs import task_id_of
from bot.durations import parse_duration
from bot.store import Store, locked, schema

if TYPE_CHECKING:
    from bot.actions.executor import ActionDeps
    from bot.config import Settings

log = logging.getLogger(__name__)

ENDED = ("completed", "failed", "stopped", "published", "closed")


class ReproduceParams(ActionParams):
    queue: str | None = Field(default=None, description="queue for the re-run (default: the original's queue)")
    metric_rel_tol: float = Field(default=0.05, ge=0, description="relative tolerance for last metric values")
    metric_abs_tol: float = Field(default=1e-9, ge=0, description="absolute tolerance for last metric values")
    duration_rel_tol: float = Field(default=0.5, ge=0, description="relative tolerance for run time")
    metrics: list[str] = Field(default_factory=list, description="'metric/variant' globs to compare (default all)")
    timeout: str | float = Field(default="24h", description="give up watching after this long")

    def tolerances(self) -> Tolerances:
        return Tolerances(metric_rel=self.metric_rel_tol, metric_abs=self.metric_abs_tol,
                          duration_rel=self.duration_rel_tol, metrics=self.metrics)


# ---------------------------------------------------------------------------------------------- store


def ensure_schema(store: Store) -> None:
    """Create the table if missing (idempotent, cheap after the first call): bot/store/schema.py."""
    schema.ensure_repro_watches(store)


def add_watch(
    store: Store,
    *,
    server: str,
    original: str,
    clone: str,
    actor: Any,
    tolerances: Tolerances,
    timeout_s: float,
    context: dict[str, Any],
    now: datetime,
) -> int:
    ensure_schema(store)
    row = {
        "server": server,
        "original": original,
        "clone": clone,
        "actor_id": actor.id,
        "actor_name": actor.name,
        "via": actor.via,
        "started_at": now.astimezone(UTC).isoformat(),
        "deadline": (now + timedelta(seconds=timeout_s)).astimezone(UTC).isoformat(),
        "tolerances": tolerances.model_dump_json(),
        "context": json.dumps(context, default=str),
        "status": "watching",
    }
    with locked(store):
        return int(store.db["repro_watches"].insert(row).last_pk)  # type: ignore[union-attr, arg-type]


def pending(store: Store) -> list[dict[str, Any]]:
    ensure_schema(store)
    return list(store.db["repro_watches"].rows_where("status = ?", ["watching"], order_by="id"))  # type: ignore[union-attr]


def get_watch(store: Store, watch_id: int) -> dict[str, Any] | None:
    ensure_schema(store)
    rows = list(store.db["repro_watches"].rows_where("id = ?", [watch_id]))  # type: ignore[union-attr]
    return rows[0] if rows else None


# --------------------------------------------------------------------------------------------- action


@action("reproduce", params=ReproduceParams, subject="task", title="Reproduce task", user_choices=("queue",))
async def plan_reproduce(ctx: ActionContext, subject: str, params: ReproduceParams) -> Plan:
    """Clone and re-run a finished task, then report how the re-run compares with it."""
    task = await ctx.task(task_id_of(subject))
    label = ctx.task_label(task)
    status = task.get("status")
    if status not in ENDED:
        raise Refusal(f"{label} is {status}: reproduce re-runs a finished task and compares the results; "
                      "wait for it to end")
    try:
        timeout_s = parse_duration(params.timeout)
    except ValueError as exc:
        raise Refusal(f"timeout: {exc}") from None
    if params.queue:
        queue = await ctx.resolve_queue(params.queue)
    else:
        original_queue = (task.get("execution") or {}).get("queue")
        if not original_queue or await ctx.queue_by_id(original_queue) is None:
            raise Refusal(f"{label} has no usable original queue: choose a queue for the re-run")
        queue = await ctx.queue_named(original_queue)
    tol = params.tolerances()
    store = ctx.store

    async def register(args: dict[str, Any]) -> dict[str, Any]:
        if store is None:
            raise RuntimeError("reproduce needs the store to keep its watch")
        watch_id = add_watch(store, server=ctx.server.name, original=task["id"], clone=args["clone"],
                             actor=ctx.actor, tolerances=tol, timeout_s=timeout_s, context=ctx.request_context,
                             now=ctx.now())
        return {"watch_id": watch_id}

    steps = [
        clone_step(ctx, task, "Reproduction of"),
        enqueue_step(ctx, NEW_TASK, queue, "reproduction enqueued"),
        Step("bot", "watch", {"clone": NEW_TASK, "original": task["id"], "timeout": f"{timeout_s:g}s"},
             key="watch", run=register, mutating=False,
             note=f"when the re-run ends: compare status, duration (±{tol.duration_rel:.0%}) and last metrics "
             f"(±{tol.metric_rel:.1%}), and environment differences"),
    ]
    plan = Plan(
        action="reproduce",
        server=ctx.server.name,
        subject=task["id"],
        subject_label=label,
        title="Reproduce task?",
        summary=f"Re-run a copy of {label} in queue {queue.describe()} and compare it with the original.",
        verb="Reproduction started",
        steps=steps,
    )
    unwatched = note_unwatched(queue)

    async def finish(state: ExecState) -> None:
        new_id = (state.results.get("clone") or {}).get("id")
        if new_id:
            state.created_ids.append(new_id)
            state.links.append(Link(f"re-run of {task.get('name') or task['id']}", ctx.task_url(task, new_id)))
        watch_id = (state.results.get("watch") or {}).get("watch_id")
        if watch_id is not None:
            state.extra["watch_id"] = watch_id
        await unwatched(state)

    plan.finish = finish
    return plan


# ---------------------------------------------------------------------------------------------- watch


@dataclass
class WatchResult:
    watch_id: int
    server: str
    original: str
    clone: str
    status: str  # done | timeout | error
    text: str  # plain, several lines
    mrkdwn: str
    context: dict[str, Any] = field(default_factory=dict)  # where to post (Slack channel/thread)
    comparison: Comparison | None = None
    links: list[Link] = field(default_factory=list)


def _render(comparison: Comparison, original: dict[str, Any], clone: dict[str, Any],
            urls: tuple[str, str]) -> tuple[str, str]:
    verdict = {"reproduced": "reproduced ✓", "differs": "differs from the original",
               "failed": "did not complete"}[comparison.verdict]
    name = original.get("name") or original.get("id")
    head = f"Re-run of {name} {verdict}"
    text = "\n".join([f"{head} (original {urls[0]}, re-run {urls[1]})", *comparison.lines()])
    mrkdwn = "\n".join([f"*{head}* (<{urls[0]}|original>, <{urls[1]}|re-run>)", *comparison.lines()])
    return text, mrkdwn


def _finish_watch(store: Store, watch_id: int, status: str, text: str, result: dict[str, Any] | None,
                  now: datetime) -> None:
    with locked(store):
        store.db["repro_watches"].update(  # type: ignore[union-attr]
            watch_id,
            {"status": status, "finished_at": now.astimezone(UTC).isoformat(), "text": text,
             "result": json.dumps(result, default=str) if result is not None else None},
        )


async def tick(store: Store, settings: Settings, *, deps: ActionDeps | None = None) -> list[WatchResult]:
    """Poll every pending watch once; returns the watches that ended (finished, timed out, clone gone)."""
    from bot.actions.executor import ActionDeps, default_client, release, server_resolver_for

    deps = deps or ActionDeps()
    now = deps.now()
    rows = pending(store)
    by_server: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_server.setdefault(row["server"], []).append(row)
    results: list[WatchResult] = []
    for server_name, watches in by_server.items():
        try:
            server = server_resolver_for(settings, deps)(server_name)
        except Exception as exc:  # the server was removed from the config: keep the watch, say why in the log
            log.warning("repro watch: server %s cannot be resolved: %s", server_name, exc)
            continue
        client = (deps.client_factory or default_client)(server)
        ctx = ActionContext(client=client, server=server, settings=settings, actor=_watch_actor(watches[0]))
        try:
            for row in watches:
                result = await _poll(ctx, store, row, now)
                if result is not None:
                    results.append(result)
        finally:
            await release(client, deps)
    return results


def _watch_actor(row: dict[str, Any]) -> Any:
    from bot.actions.base import Actor

    return Actor(id=row["actor_id"], name=row["actor_name"] or "", via=row["via"])


async def _poll(ctx: ActionContext, store: Store, row: dict[str, Any], now: datetime) -> WatchResult | None:
    context = json.loads(row["context"] or "{}")
    base = {"watch_id": row["id"], "server": row["server"], "original": row["original"], "clone": row["clone"],
            "context": context}
    try:
        clone = await ctx.task(row["clone"], fresh=True)
    except Refusal:
        text = f"Re-run {row['clone']} of {row['original']} no longer exists: stopped watching it."
        _finish_watch(store, row["id"], "error", text, None, now)
        return WatchResult(status="error", text=text, mrkdwn=text, **base)
    except ClearMLError as exc:  # the server is down: try again next tick
        log.info("repro watch %s: %s", row["id"], exc)
        return None
    if clone.get("status") not in ENDED:
        if now >= datetime.fromisoformat(row["deadline"]):
            text = (f"Re-run {row['clone']} of {row['original']} is still {clone.get('status')} after the watch "
                    "timeout: stopped watching it (the task itself is untouched).")
            _finish_watch(store, row["id"], "timeout", text, None, now)
            return WatchResult(status="timeout", text=text, mrkdwn=text, **base)
        return None
    try:
        original = await ctx.task(row["original"], fresh=True)
    except Refusal:
        text = f"Re-run {row['clone']} ended ({clone.get('status')}) but the original {row['original']} is gone."
        _finish_watch(store, row["id"], "error", text, None, now)
        return WatchResult(status="error", text=text, mrkdwn=text, **base)
    except (ClearMLError, NotFoundError):
        return None
    comparison = compare_runs(original, clone, Tolerances.model_validate_json(row["tolerances"]))
    urls = (ctx.task_url(original), ctx.task_url(clone))
    text, mrkdwn = _render(comparison, original, clone, urls)
    result = {"verdict": comparison.verdict, "lines": comparison.lines()}
    _finish_watch(store, row["id"], "done", text, result, now)
    links = [Link("original", urls[0]), Link("re-run", urls[1])]
    return WatchResult(status="done", text=text, mrkdwn=mrkdwn, comparison=comparison, links=links, **base)


async def watch_until_done(
    store: Store,
    settings: Settings,
    watch_id: int,
    *,
    deps: ActionDeps | None = None,
    poll_s: float = 30.0,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    on_wait: Callable[[], None] | None = None,
) -> WatchResult:
    """Tick until `watch_id` ends (for the terminal's `act reproduce --wait`); `sleep` is injectable."""
    while True:
        for result in await tick(store, settings, deps=deps):
            if result.watch_id == watch_id:
                return result
        row = get_watch(store, watch_id)
        if row is None or row["status"] != "watching":
            # ended by another process's tick: rebuild the result from the row
            text = (row or {}).get("text") or f"watch {watch_id} is gone"
            return WatchResult(watch_id=watch_id, server=(row or {}).get("server", ""),
                               original=(row or {}).get("original", ""), clone=(row or {}).get("clone", ""),
                               status=(row or {}).get("status", "error"), text=text, mrkdwn=text)
        if on_wait is not None:
            on_wait()
        await sleep(poll_s)


__all__ = ["ReproduceParams", "WatchResult", "tick", "watch_until_done"]
