"""clone: tasks.clone with a comment naming who asked, optionally enqueued into a chosen queue.

The server copies script, hyperparameters, configuration and container, keeps the project, clears
execution.queue and drops output artifacts; the clone starts as a draft (`created`), which may be enqueued.
"""

from __future__ import annotations

from pydantic import Field

from bot.actions.base import ActionParams, ExecState, Link, Plan, Ref, Step, action
from bot.actions.context import ActionContext
from bot.actions.requeue import enqueue_step, note_unwatched
from bot.diagnosis.refs import task_id_of


class CloneParams(ActionParams):
    queue: str | None = Field(default=None, description="enqueue the clone into this queue (name or id)")
    name: str | None = Field(default=None, description="name of the new task (default: the original's)")
    image: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$",
        description="run the clone in this container image instead (e.g. after an image pull or CUDA mismatch "
        "failure): tasks.edit container.image on the new draft, before it is enqueued",
    )


def clone_step(ctx: ActionContext, task: dict[str, object], why: str, name: str | None = None) -> Step:
    args: dict[str, object] = {
        "task": task["id"],
        "new_task_comment": f"{why} {task['id']} by {ctx.actor.label} via clearml-chatops",
    }
    if name:
        args["new_task_name"] = name
    return Step("clearml", "tasks.clone", args, key="clone")


NEW_TASK = Ref("clone", "id", "<new task>")


@action("clone", params=CloneParams, subject="task", title="Clone task", user_choices=("queue",))
async def plan_clone(ctx: ActionContext, subject: str, params: CloneParams) -> Plan:
    """Clone a task (a new draft with the same code and parameters), optionally enqueue the clone."""
    task = await ctx.task(task_id_of(subject))
    label = ctx.task_label(task)
    steps = [clone_step(ctx, task, "Cloned from", params.name)]
    summary = f"Create a draft copy of {label}"
    if params.image:
        # the clone is a draft (`created`), so the server lets its container be edited without force
        steps.append(Step("clearml", "tasks.edit", {"task": NEW_TASK, "container": {"image": params.image}},
                          key="image"))
        summary += f" running in container image {params.image}"
    queue = None
    if params.queue:
        queue = await ctx.resolve_queue(params.queue)
        steps.append(enqueue_step(ctx, NEW_TASK, queue, "cloned and enqueued"))
        summary += f" and enqueue it into queue {queue.describe()}"
    plan = Plan(
        action="clone",
        server=ctx.server.name,
        subject=task["id"],
        subject_label=label,
        title="Clone task?",
        summary=summary + ".",
        verb="Cloned and enqueued" if queue else "Cloned",
        steps=steps,
        links=[],
    )
    unwatched = note_unwatched(queue) if queue else None

    async def finish(state: ExecState) -> None:
        new_id = (state.results.get("clone") or {}).get("id")
        if new_id:
            state.created_ids.append(new_id)
            state.links.append(Link(params.name or task.get("name") or new_id, ctx.task_url(task, new_id)))
        if unwatched is not None:
            await unwatched(state)

    plan.finish = finish
    return plan
