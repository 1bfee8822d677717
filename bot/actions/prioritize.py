"""prioritize: queues.move_task_to_front for a task waiting in a queue (backlog findings).

The queue is the task's execution.queue when it really holds the task; otherwise every queue (hidden ones
included: the k8s glue parks tasks in a hidden queue) is scanned for it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bot.actions.base import ActionParams, Link, Named, Plan, Refusal, Step, action
from bot.actions.context import ActionContext
from bot.diagnosis.refs import task_id_of


class PrioritizeParams(ActionParams):
    queue: str | None = Field(default=None, description="the queue (name or id) when the task is in several")


def _position(queue: dict[str, Any], task_id: str) -> int | None:
    for i, entry in enumerate(queue.get("entries") or []):
        ref = entry.get("task") if isinstance(entry, dict) else None
        ref = ref.get("id") if isinstance(ref, dict) else ref
        if ref == task_id:
            return i
    return None


async def _find_queue(ctx: ActionContext, task: dict[str, Any], wanted: str | None) -> tuple[dict[str, Any], int]:
    task_id = task["id"]
    if wanted:
        named = await ctx.resolve_queue(wanted)
        queue = await ctx.queue_by_id(named.id)
        pos = _position(queue or {}, task_id)
        if queue is None or pos is None:
            raise Refusal(f"{ctx.task_label(task)} is not waiting in queue {named.describe()}")
        return queue, pos
    original = (task.get("execution") or {}).get("queue")
    if original:
        queue = await ctx.queue_by_id(original)
        pos = _position(queue or {}, task_id)
        if queue is not None and pos is not None:
            return queue, pos
    holding = [(q, _position(q, task_id)) for q in await ctx.all_queues()]
    found = [(q, p) for q, p in holding if p is not None]
    if not found:
        raise Refusal(f"{ctx.task_label(task)} is queued but no queue lists it (the server may be mid-change)")
    if len(found) > 1:
        names = ", ".join(str(q.get("name")) for q, _ in found)
        raise Refusal(f"{ctx.task_label(task)} waits in several queues ({names}): choose one")
    queue, pos = found[0]
    return queue, int(pos)  # type: ignore[arg-type]


@action("prioritize", params=PrioritizeParams, subject="task", title="Move task to the front")
async def plan_prioritize(ctx: ActionContext, subject: str, params: PrioritizeParams) -> Plan:
    """Move a waiting task to the front of its queue."""
    task = await ctx.task(task_id_of(subject))
    label = ctx.task_label(task)
    if task.get("status") != "queued":
        raise Refusal(f"{label} is {task.get('status')}, not waiting in a queue: there is nothing to move")
    queue, pos = await _find_queue(ctx, task, params.queue)
    named = Named(queue["id"], queue.get("display_name") or queue.get("name") or queue["id"])
    waiting = len(queue.get("entries") or [])
    if pos == 0:
        raise Refusal(f"{label} is already first in queue {named.describe()} ({waiting} waiting)")
    return Plan(
        action="prioritize",
        server=ctx.server.name,
        subject=task["id"],
        subject_label=label,
        title="Move task to the front of its queue?",
        summary=f"Move {label} from position {pos + 1} of {waiting} to the front of queue {named.describe()}.",
        verb="Moved to the front",
        steps=[Step("clearml", "queues.move_task_to_front", {"queue": named, "task": task["id"]}, key="move")],
        links=[Link(task.get("name") or task["id"], ctx.task_url(task))],
    )
