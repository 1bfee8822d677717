"""requeue: put a failed, stopped, draft or orphaned task back into a queue.

The server's state machine decides the steps (clearml-server bll/task/utils.py, task_operations.stop_task):
- created/stopped/failed -> queued is allowed: a single tasks.enqueue.
- in_progress -> queued is not. An in_progress task whose worker is gone must first be stopped; tasks.stop
  only sets `stopped` when the server no longer considers the task "run by a live worker" (last_update older
  than 600 s), otherwise it leaves it in_progress with status_message "stopping". In that case a
  tasks.reset(force) is what brings it to `created`, and created -> queued is allowed.
- completed/published/closed -> queued is refused with 400/110: we refuse up front and offer clone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field

from bot.actions.base import ActionParams, Condition, ExecState, Link, Named, Plan, Refusal, Step, action
from bot.actions.context import ActionContext
from bot.diagnosis.refs import task_id_of

FINISHED_FOR_GOOD = ("completed", "published", "publishing", "closed")
ENQUEUEABLE = ("created", "stopped", "failed")


class RequeueParams(ActionParams):
    queue: str | None = Field(
        default=None, description="queue name or id; default: the task's original queue (execution.queue)"
    )


async def target_queue(ctx: ActionContext, task: dict[str, Any], queue_ref: str | None) -> Named:
    """The chosen queue, else the task's original one; a Refusal when neither exists."""
    if queue_ref:
        return await ctx.resolve_queue(queue_ref)
    original = (task.get("execution") or {}).get("queue")
    if not original:
        raise Refusal(
            f"{ctx.task_label(task)} has no original queue (execution.queue is empty): choose a queue"
        )
    queue = await ctx.queue_by_id(original)
    if queue is None:
        raise Refusal(f"{ctx.task_label(task)}'s original queue {original} no longer exists: choose a queue")
    return Named(original, queue.get("display_name") or queue.get("name") or original)


def enqueue_step(ctx: ActionContext, task_id: Any, queue: Named, why: str) -> Step:
    return Step(
        "clearml",
        "tasks.enqueue",
        {
            "task": task_id,
            "queue": queue,
            "status_reason": f"{why} by {ctx.actor.label} via clearml-chatops",
            # The answer's queue_watched=false tells us nobody listens to that queue (reported, not fatal).
            "verify_watched_queue": True,
        },
        key="enqueue",
    )


def _still_in_progress(ctx: ActionContext, task_id: str) -> Condition:
    async def check(state: ExecState) -> bool:
        task = await ctx.task(task_id, fresh=True)
        return task.get("status") == "in_progress"

    return Condition("the task is still in_progress after the stop", check)


def orphan_recovery_steps(ctx: ActionContext, task: dict[str, Any], why: str) -> list[Step]:
    """stop(force) + reset(force) when the stop could not finish it: the task's worker is gone."""
    task_id = task["id"]
    return [
        Step(
            "clearml",
            "tasks.stop",
            {"task": task_id, "force": True, "status_reason": f"worker gone; stopped {why}"},
            key="stop",
            note="force: the worker that ran it is gone, nobody else will stop it",
        ),
        Step(
            "clearml",
            "tasks.reset",
            {"task": task_id, "force": True, "delete_output_models": False, "delete_external_artifacts": False},
            key="reset",
            when=_still_in_progress(ctx, task_id),
            note="the server still counts the task as run by a live worker for 10 minutes after its last report; "
            "reset clears its logs and metrics (stored models and artifacts are kept)",
        ),
    ]


async def requeue_steps(
    ctx: ActionContext, task: dict[str, Any], queue_ref: str | None, *, worker_rotated: bool = False
) -> tuple[list[Step], Named, list[str]]:
    """The steps that requeue `task`, the queue, and notes; a Refusal when the state machine forbids it.

    `worker_rotated`: the caller is replacing the task's worker right before these steps (rotate), so a live
    worker running the task does not block the requeue.
    """
    status = task.get("status") or "unknown"
    label = ctx.task_label(task)
    notes: list[str] = []
    if status in FINISHED_FOR_GOOD:
        raise Refusal(
            f"{label} is {status}: the server refuses to requeue a {status} task ({status} -> queued is not a "
            "valid status change, 400/110). Clone it and enqueue the clone instead.",
            alternative="clone",
        )
    if status == "queued":
        raise Refusal(f"{label} is already queued: prioritize it instead to move it to the front of its queue",
                      alternative="prioritize")
    if status in ENQUEUEABLE:
        queue = await target_queue(ctx, task, queue_ref)
        return [enqueue_step(ctx, task["id"], queue, "requeued")], queue, notes
    if status == "in_progress":
        worker = await ctx.worker_running(task["id"])
        if worker is not None and not worker_rotated:
            raise Refusal(
                f"{label} is running on live worker {worker.get('id')}: abort it first if it is stuck "
                "(or clone it to run a copy)",
                alternative="abort",
            )
        queue = await target_queue(ctx, task, queue_ref)
        gone = "rotated" if worker_rotated else "gone"
        last = task.get("last_worker") or "unknown"
        notes.append(f"the task is in_progress but its worker ({last}) is {gone}: it is orphaned")
        steps = orphan_recovery_steps(ctx, task, f"by {ctx.actor.label} via clearml-chatops to requeue")
        return [*steps, enqueue_step(ctx, task["id"], queue, "requeued")], queue, notes
    raise Refusal(f"{label} is {status}: requeue handles failed, stopped, draft or orphaned running tasks")


@action("requeue", params=RequeueParams, subject="task", title="Requeue task", user_choices=("queue",))
async def plan_requeue(ctx: ActionContext, subject: str, params: RequeueParams) -> Plan:
    """Enqueue a failed, stopped or orphaned task again (its original queue, or a chosen one)."""
    task = await ctx.task(task_id_of(subject))
    steps, queue, notes = await requeue_steps(ctx, task, params.queue)
    label = ctx.task_label(task)
    plan = Plan(
        action="requeue",
        server=ctx.server.name,
        subject=task["id"],
        subject_label=label,
        title="Requeue task?",
        summary=f"Put {label} (now {task.get('status')}) into queue {queue.describe()}.",
        verb="Requeued",
        steps=steps,
        notes=notes,
    )
    plan.links.append(Link(task.get("name") or task["id"], ctx.task_url(task)))
    plan.finish = note_unwatched(queue)
    return plan


def note_unwatched(queue: Named) -> Callable[[ExecState], Awaitable[None]]:
    """A plan `finish` that reports tasks.enqueue's queue_watched=false (nobody listens to the queue)."""

    async def finish(state: ExecState) -> None:
        answer = state.results.get("enqueue") or {}
        if answer.get("queue_watched") is False:
            state.detail.append(f"warning: no worker is listening to queue {queue.describe()}: the task will wait")

    return finish
