"""abort: tasks.stop, with force when the task's worker is gone (nobody else would ever stop it)."""

from __future__ import annotations

from bot.actions.base import ActionParams, Link, Plan, Refusal, Step, action
from bot.actions.context import ActionContext
from bot.diagnosis.refs import task_id_of


class AbortParams(ActionParams):
    pass


@action("abort", params=AbortParams, subject="task", title="Abort task", danger=True)
async def plan_abort(ctx: ActionContext, subject: str, params: AbortParams) -> Plan:
    """Stop a running or queued task (force when its worker is gone)."""
    task = await ctx.task(task_id_of(subject))
    status = task.get("status")
    label = ctx.task_label(task)
    notes: list[str] = []
    args: dict[str, object] = {"task": task["id"]}
    if status == "queued":
        # The server dequeues a queued task and marks it stopped at once.
        summary = f"Remove {label} from its queue and mark it aborted."
    elif status == "in_progress":
        worker = await ctx.worker_running(task["id"])
        if worker is None:
            args["force"] = True
            summary = f"Mark {label} aborted: its worker ({task.get('last_worker') or 'unknown'}) is gone."
        else:
            summary = f"Ask worker {worker.get('id')} to stop {label}."
            notes.append(
                "the agent sees the request on its next report (about 30 s), kills the process and marks the "
                "task aborted; until then it shows as running with status message 'stopping'"
            )
    else:
        raise Refusal(f"{label} is {status}: there is nothing to abort")
    args["status_reason"] = f"aborted by {ctx.actor.label} via clearml-chatops"
    return Plan(
        action="abort",
        server=ctx.server.name,
        subject=task["id"],
        subject_label=label,
        title="Abort task?",
        summary=summary,
        verb="Aborted",
        steps=[Step("clearml", "tasks.stop", args, key="stop")],
        danger=True,
        notes=notes,
        links=[Link(task.get("name") or task["id"], ctx.task_url(task))],
    )
