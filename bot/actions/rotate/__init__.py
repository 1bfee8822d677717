"""rotate: replace a sick agent through the backend configured for its worker id, then optionally requeue the
task it was running.

ClearML has no "kill worker" endpoint (workers.unregister only hides the listing, and only with the agent's
own credentials), so rotation happens where the agent lives: `actions.rotate.backends` is an ordered list of
`{match: <worker-id glob>, type: ec2|kubernetes|command|ssh, ...}`; the first whose glob matches is used.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from bot.actions.base import ActionParams, ExecState, Plan, Refusal, action
from bot.actions.context import ActionContext
from bot.actions.requeue import requeue_steps
from bot.config import RotateBackend

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RotateParams(ActionParams):
    requeue: bool | None = Field(
        default=None, description="requeue the task the agent was running (default: actions.rotate.requeue_task)"
    )
    task: str | None = Field(default=None, description="that task's id, when the server no longer lists the worker")


class WorkerFacts(BaseModel):
    """What the backends may use about a worker; `host` is the worker id before the first ':'."""

    worker: str
    host: str
    ip: str | None = None
    live: bool = False

    def placeholders(self) -> dict[str, str | None]:
        return {"worker": self.worker, "host": self.host, "ip": self.ip}


def select_backend(backends: list[RotateBackend], worker_id: str) -> tuple[int, RotateBackend]:
    for i, backend in enumerate(backends):
        # fnmatchcase: worker ids are case-sensitive and matching must not depend on the OS
        if fnmatch.fnmatchcase(worker_id, backend.match):
            return i, backend
    raise Refusal(
        f"no rotate backend matches worker {worker_id}: add one under actions.rotate.backends "
        "(match: <worker-id glob>, type: ec2|kubernetes|command|ssh)"
    )


def describe_rotation(backends: list[RotateBackend], worker_id: str, ip: str | None = None) -> str | None:
    """What rotating this worker will do, worked out from the config alone (a button's confirm dialog is rendered
    before anyone clicks, without calling EC2 or Kubernetes): the backend, the instance or pod, or the command
    after substitution. None when rotating it would be refused anyway (no backend matches, a bad config, an unsafe
    worker id): then no button is offered."""
    from bot.actions.rotate import command, ec2, kubernetes, ssh

    try:
        index, backend = select_backend(backends, worker_id)
        facts = WorkerFacts(worker=worker_id, host=worker_id.split(":", 1)[0], ip=ip or None)
        where = f"`{backend.type}` backend #{index} (`match: {backend.match}`)"
        if backend.type == "command":
            cfg = backend_settings(command.CommandBackend, backend, index)
            values = facts.placeholders()
            for name, value in values.items():
                command.check_value(name, value)
            # the worker's IP comes from the server's worker list at click time when the finding did not carry it
            argv = command.render_argv(cfg.argv, {**values, "ip": values["ip"] or "{ip}"})
            return f"Runs `{shlex.join(argv)}` (no shell), per the {where}."
        if backend.type == "ssh":
            cfg = backend_settings(ssh.SshBackend, backend, index)
            destination = ssh.destination_for(cfg, worker_id)
            values = {"worker": worker_id, "host": destination.rsplit("@", 1)[-1], "ip": ip or None}
            for name, value in values.items():
                command.check_value(name, value)
            remote = command.render_argv(cfg.command, {**values, "ip": values["ip"] or "{ip}"})
            return f"Runs `{shlex.join(remote)}` on {destination} over ssh, per the {where}."
        if backend.type == "ec2":
            cfg = backend_settings(ec2.Ec2Backend, backend, index)
            verb = {"reboot": "Reboot", "stop": "Stop", "terminate": "Terminate"}[cfg.on_rotate]
            region = f" in {cfg.region}" if cfg.region else ""
            instance = ec2.instance_id_from_worker(worker_id) if "worker_id" in cfg.find_by else None
            if instance:
                target = f"EC2 instance {instance}{region}"
            elif "tag" in cfg.find_by and cfg.tag:
                value = cfg.tag_value.replace("{host}", facts.host).replace("{worker}", facts.worker)
                target = f"the EC2 instance tagged {cfg.tag}={value}{region}"
            else:
                target = f"the EC2 instance with private IP {ip or '(from the worker list)'}{region}"
            return f"{verb} {target}, per the {where}."
        cfg = backend_settings(kubernetes.KubernetesBackend, backend, index)
        pod = kubernetes._fill(cfg.pod, facts)
        if cfg.selector:
            selector = kubernetes._fill(cfg.selector, facts)
            return (f"Delete the pod matching `{selector}` in namespace {cfg.namespace} (pod {pod} if several "
                    f"match); its Deployment starts a fresh one. Per the {where}.")
        return f"Delete pod {pod} in namespace {cfg.namespace}; its Deployment starts a fresh one. Per the {where}."
    except Refusal:
        return None


def backend_settings(model: type[BaseModel], backend: RotateBackend, index: int) -> Any:
    """Validate one backend's settings with its own model; config mistakes become a clear refusal."""
    raw = {"match": backend.match, "type": backend.type, **(backend.model_extra or {})}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise Refusal(f"actions.rotate.backends[{index}] (match {backend.match!r}): `{loc}`: {err['msg']}") from None


async def _task_of(ctx: ActionContext, worker_id: str, worker: dict[str, Any] | None, given: str | None) -> str | None:
    if given:
        return given
    if worker and isinstance(worker.get("task"), dict) and worker["task"].get("id"):
        return str(worker["task"]["id"])
    # The agent may already have vanished from workers.get_all: its task still names it as last_worker.
    running = await ctx.reader.get_all(
        "tasks.get_all",
        {"status": ["in_progress"], "only_fields": ["id", "name", "last_worker", "project", "status"]},
        key="tasks",
    )
    mine = [t for t in running if t.get("last_worker") == worker_id]
    return str(mine[0]["id"]) if len(mine) == 1 else None


@action("rotate", params=RotateParams, subject="worker", title="Rotate agent", danger=True)
async def plan_rotate(ctx: ActionContext, subject: str, params: RotateParams) -> Plan:
    """Restart an agent's machine, pod or service (per actions.rotate.backends), optionally requeue its task."""
    from bot.actions.rotate import command, ec2, kubernetes, ssh

    worker_id = subject.strip()
    if not worker_id or _CONTROL.search(worker_id):
        raise Refusal(f"{worker_id!r} is not a worker id")
    index, backend = select_backend(ctx.settings.actions.rotate.backends, worker_id)
    worker = await ctx.worker(worker_id)
    facts = WorkerFacts(
        worker=worker_id,
        host=worker_id.split(":", 1)[0],
        ip=(worker or {}).get("ip") or None,
        live=worker is not None,
    )
    planner = {"ec2": ec2.plan_rotation, "kubernetes": kubernetes.plan_rotation, "command": command.plan_rotation,
               "ssh": ssh.plan_rotation}
    steps, summary, notes = await planner[backend.type](ctx, facts, backend, index)
    if not facts.live:
        notes.append(f"worker {worker_id} is not listed by the server (gone for over 10 minutes, or never there)")

    requeue = params.requeue if params.requeue is not None else ctx.settings.actions.rotate.requeue_task
    task_id = await _task_of(ctx, worker_id, worker, params.task)
    if task_id and requeue:
        task = await ctx.task(task_id)
        try:
            more, queue, _ = await requeue_steps(ctx, task, None, worker_rotated=True)
        except Refusal as exc:
            notes.append(f"{ctx.task_label(task)} will not be requeued: {exc.reason}")
        else:
            steps += more
            summary += f" Then requeue {ctx.task_label(task)} into queue {queue.describe()}."
    elif task_id:
        notes.append(f"it was running task {task_id}, which will be left orphaned (requeue it, or set requeue)")
    elif requeue:
        notes.append("no task to requeue: the worker was not running one")

    async def finish(state: ExecState) -> None:
        output = (state.results.get("rotate") or {}).get("output")
        if output:
            state.detail.append(f"output:\n{output}")

    return Plan(
        action="rotate",
        server=ctx.server.name,
        subject=worker_id,
        subject_label=f"worker {worker_id}",
        title="Rotate agent?",
        summary=summary,
        verb="Rotated",
        steps=steps,
        danger=True,
        notes=notes,
        finish=finish,
    )


__all__ = ["RotateParams", "WorkerFacts", "backend_settings", "describe_rotation", "plan_rotate", "select_backend"]
