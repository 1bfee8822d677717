"""Checks: agents.

A clearml-agent reports to the server every 30 s; the server forgets a worker 10 minutes after its last report.
A dead agent shows up first as a stale `last_activity_time`, then as a missing worker, while its task stays
`in_progress` (orphaned) and the queues it served fill up. Each of those is one check here; the consequences
point at their cause through `Finding.related` so incidents can group them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.checks.common import (
    Duration,
    OptionalDuration,
    Patterns,
    human,
    is_live,
    iso,
    matches_any,
    oldest_waits,
    queue_subject,
    selected,
    server_subject,
    task_subject,
    when,
    worker_age_s,
    worker_ref,
    worker_subject,
    workers_by_queue,
)
from bot.engine.baseline import expected_pools, observe
from bot.engine.findings import ActionId, Finding, Severity, Subject
from bot.engine.registry import CheckParams, check

if TYPE_CHECKING:
    from bot.clearml.models import Task, Worker
    from bot.engine.snapshot import Snapshot


def _host_of(worker_id: str) -> str:
    """The host part of a worker id: "gpu-box-1:gpu0" -> "gpu-box-1"; autoscaled ids return the instance id."""
    parts = worker_id.split(":")
    instance = next((p for p in parts if p.startswith("i-")), None)
    return instance or parts[0]


def _restart_advice(worker: Worker | None, worker_id: str) -> str:
    """How to bring this kind of agent back, judged from its id (autoscaler, k8s glue, plain host)."""
    queues = " ".join(f"--queue {q.name}" for q in (worker.queues if worker else [])) or "--queue <queue>"
    if worker_id.startswith("dynamic_worker:") or ":i-" in worker_id:
        instance = _host_of(worker_id)
        return (
            f"This is an autoscaled instance ({instance}): check it in the cloud console (spot interruption, "
            "failed health check) and the autoscaler task's log; rotating terminates it so the autoscaler "
            "starts a fresh one."
        )
    if worker_id.startswith(("k8s", "clearml-id-")):
        return (
            "This is a Kubernetes agent: `kubectl describe pod` / `kubectl logs` its pod (evicted? OOMKilled?); "
            "rotating deletes the pod so its Deployment recreates it."
        )
    host = _host_of(worker_id)
    return (
        f"On {host}: check that the agent process is alive (`ps aux | grep clearml-agent`, or its systemd unit / "
        "container logs), that the host reaches the API server, and that its clearml.conf keys are valid; "
        f"restart it with `clearml-agent daemon {queues} --detached`, or rotate it."
    )


MAX_POOL_METRICS = 20  # pools (queues) with a per-run `agents.alive[<pool>]` gauge: the largest ones


def pool_metrics(workers: list[Worker], ages: list[float | None], stale_after: float) -> dict[str, float]:
    """`agents.alive[<queue name>]` for the pools with the most registered agents (a pool: the agents serving one
    queue): what the digest's "agents alive per pool" chart draws."""
    registered: dict[str, int] = {}
    alive: dict[str, int] = {}
    for worker, age in zip(workers, ages, strict=True):
        for ref in worker.queues:
            pool = ref.name or ref.id
            if not pool:
                continue
            registered[pool] = registered.get(pool, 0) + 1
            if age is not None and age <= stale_after:
                alive[pool] = alive.get(pool, 0) + 1
    largest = sorted(registered, key=lambda p: (-registered[p], p))[:MAX_POOL_METRICS]
    return {f"agents.alive[{pool}]": float(alive.get(pool, 0)) for pool in largest}


# ------------------------------------------------------------------------------------------------
# agents.stale


class StaleParams(CheckParams):
    age_thresholds = ("notice_after", "stale_after", "dead_after")
    notice_after: OptionalDuration = Field(
        default=60.0,
        description="silence after which a still-young gap is noted as `info` (two missed 30 s reports): a killed "
        "agent shows up within two report intervals, without a warning for one lost report; null turns it off "
        "(so does a value at or above stale_after)",
    )
    stale_after: Duration = Field(
        default=120.0, description="silence after which an agent is stale (agents report every 30 s: 4 missed reports)"
    )
    dead_after: Duration = Field(
        default=480.0, description="silence after which an agent is presumed dead (the server drops it at 600 s)"
    )
    workers: Patterns = Field(default=["*"], description="worker id globs to watch")
    ignore: Patterns = Field(default=[], description="worker id globs to skip")

    @model_validator(mode="after")
    def _ordered(self) -> StaleParams:
        if self.dead_after < self.stale_after:
            raise ValueError("dead_after must not be shorter than stale_after")
        return self


@check("agents.stale", params=StaleParams)
async def agents_stale(snap: Snapshot, params: StaleParams) -> list[Finding]:
    """Agents whose last activity is older than `stale_after` (warning) or `dead_after` (critical).

    Evidence: last activity and last report (time and age on the server's clock), the task the agent was
    running, the queues it serves. Suggests `rotate`.
    """
    findings: list[Finding] = []
    workers = await snap.workers()
    ages = [worker_age_s(snap, w) for w in workers]
    snap.metrics["agents.registered"] = len(workers)
    snap.metrics["agents.alive"] = sum(1 for a in ages if a is not None and a <= params.stale_after)
    snap.metrics.update(pool_metrics(workers, ages, params.stale_after))
    for worker in workers:
        if not matches_any(worker.id, params.workers) or matches_any(worker.id, params.ignore):
            continue
        age = worker_age_s(snap, worker)
        if age is None:
            continue
        if age <= params.stale_after:
            if params.notice_after is not None and age > params.notice_after:
                findings.append(_missed_reports(snap, worker, age, params))
            continue
        severity: Severity = "critical" if age > params.dead_after else "warning"
        running = f", was running {worker.task_name or worker.task_id}" if worker.task_id else ""
        state = "presumed dead" if severity == "critical" else "stale"
        links = [snap.worker_link(worker.id)]
        if worker.task_id:
            project = worker.raw.get("project") if isinstance(worker.raw.get("project"), dict) else {}
            links.append(snap.task_link(worker.task_id, project.get("id") or None))
        links.extend(snap.queue_link(q.id) for q in worker.queues if q.id)
        consequence = (
            f" Its task {worker.task_name or worker.task_id} is likely orphaned: requeue it once the agent is "
            "confirmed gone."
            if worker.task_id
            else ""
        )
        findings.append(
            Finding(
                check="agents.stale",
                severity=severity,
                title=f"Agent {worker.id} silent for {human(age)} ({state}){running}",
                detail=(
                    f"No report from this agent for {human(age)} (stale after {human(params.stale_after)}, dead after "
                    f"{human(params.dead_after)}). Agents report every 30 s; the server drops a worker 10 minutes "
                    f"after its last report. It serves: {', '.join(q.name for q in worker.queues) or 'no queue'}."
                ),
                subject=worker_subject(worker.id),
                evidence={
                    "worker": worker.id,
                    "ip": worker.ip or None,
                    "user": worker.user or None,
                    "last_activity": when(snap, worker.last_activity_time),
                    "last_report": when(snap, worker.last_report_time),
                    "silent_s": int(age),
                    "registered": iso(worker.register_time),
                    "running_task": {"id": worker.task_id, "name": worker.task_name} if worker.task_id else None,
                    "queues": [{"id": q.id, "name": q.name} for q in worker.queues],
                    "stale_after_s": params.stale_after,
                    "dead_after_s": params.dead_after,
                },
                links=links,
                remediation=_restart_advice(worker, worker.id) + consequence,
                actions=["rotate"],
            )
        )
    return findings


def _missed_reports(snap: Snapshot, worker: Worker, age: float, params: StaleParams) -> Finding:
    """The early notice: two reports missed. Often a busy host or a network blip; a killed agent looks the
    same for its first minute, so say it now (as info) and let the warning come at `stale_after`."""
    return Finding(
        check="agents.stale",
        severity="info",
        title=f"Agent {worker.id} missed its last reports (silent {human(age)})",
        detail=(
            f"Agents report every 30 s; this one has been silent {human(age)}. It becomes a warning at "
            f"{human(params.stale_after)} of silence."
        ),
        subject=worker_subject(worker.id),
        evidence={
            "worker": worker.id,
            "last_activity": when(snap, worker.last_activity_time),
            "silent_s": int(age),
            "running_task": {"id": worker.task_id, "name": worker.task_name} if worker.task_id else None,
            "notice_after_s": params.notice_after,
            "stale_after_s": params.stale_after,
        },
        links=[snap.worker_link(worker.id)],
        remediation="Nothing yet if it reports again shortly; otherwise see the agent's host (process, network).",
    )


# ------------------------------------------------------------------------------------------------
# agents.missing


class ExpectedWorkers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(min_length=1, description='worker id glob, e.g. "gpu-*" or "dynamic_worker:gpu-a10:*"')
    min: int = Field(default=1, ge=1, description="how many registered workers must match")


class MissingParams(CheckParams):
    age_thresholds = ("live_within",)
    expected: list[ExpectedWorkers] | Literal["auto"] = Field(
        default="auto",
        description='"auto": learn the usual pools from the run history; or a list, e.g. [{pattern: "gpu-*", '
        "min: 4}] (nothing to check when empty)",
    )
    live_within: OptionalDuration = Field(
        default=None, description="count only workers heard from within this time (default: any registered worker)"
    )
    baseline_window: Duration = Field(
        default=7 * 86400.0,
        le=30 * 86400.0,  # the store keeps 30 days of pool observations (bot/store/core.py FLEET_POOLS_KEEP_S)
        description="with `expected: auto`: the run history the usual pools are learned from (at most 30 days)",
    )
    baseline_share: float = Field(
        default=0.5, gt=0, lt=1, description="with `expected: auto`: a pool registered in more than this share of "
        "the window's runs is expected",
    )
    baseline_min_runs: int = Field(
        default=12, ge=1, description="with `expected: auto`: runs needed in the window before the baseline is used "
        "(an hour of 5-minute runs)",
    )


@check("agents.missing", params=MissingParams)
async def agents_missing(snap: Snapshot, params: MissingParams) -> list[Finding]:
    """Expected agents that are not registered: learned pools (`expected: auto`) or worker-id patterns with a
    minimum count.

    `expected: auto` (the default) learns the usual pools from the run history: worker ids grouped by pool (host
    name with its numbers as `*`, the autoscaler resource of `dynamic_worker:<resource>:*`, `clearml-id-*` for
    Kubernetes) registered in more than `baseline_share` of the runs in `baseline_window`. Such a pool with no
    agent now is critical, with under half its usual agents a warning; an autoscaled pool at zero is normal
    while its queues are empty. A fresh install says once, at info, that it is still learning.
    `expected: [{pattern: "gpu-*", min: 4}]` reports "gpu-*" when fewer than 4 matching workers are registered
    (critical when none is). One finding per pattern; the subject is the pattern.
    """
    if params.expected == "auto":
        return await _missing_from_baseline(snap, params)
    if not params.expected:
        return []
    workers = await snap.workers()
    findings: list[Finding] = []
    for exp in params.expected:
        matching = [w for w in workers if matches_any(w.id, [exp.pattern])]
        counted = matching
        if params.live_within is not None:
            counted = [w for w in matching if is_live(snap, w, params.live_within)]
        if len(counted) >= exp.min:
            continue
        short = exp.min - len(counted)
        severity: Severity = "critical" if not counted else "warning"
        not_live = sorted(w.id for w in matching if w not in counted)
        findings.append(
            Finding(
                check="agents.missing",
                severity=severity,
                title=f"{len(counted)} of {exp.min} expected agents matching {exp.pattern} are registered",
                detail=(
                    f"{short} agent(s) matching {exp.pattern} are missing"
                    + (f"; {len(not_live)} more are registered but silent" if not_live else "")
                    + ". Tasks in their queues wait or run elsewhere."
                ),
                subject=worker_subject(exp.pattern),
                evidence={
                    "pattern": exp.pattern,
                    "expected_min": exp.min,
                    "found": len(counted),
                    "missing": short,
                    "workers": sorted(w.id for w in counted)[:20],
                    "registered_but_silent": not_live[:20],
                    "live_within_s": params.live_within,
                },
                links=[f"{snap.web}/workers-and-queues/workers"],
                remediation=(
                    f"Start {short} more agent(s) whose worker id matches {exp.pattern} (the id is `<host>:<slot>` "
                    "unless `CLEARML_WORKER_ID` / `agent.worker_id` sets it), e.g. `clearml-agent daemon --queue "
                    "<queue> --gpus 0 --detached`. For an autoscaled pool check the autoscaler's log and the cloud "
                    "quota; on Kubernetes check the agent Deployment's replicas. If an agent runs but does not "
                    "appear, its host cannot reach the API server or its keys are wrong (see server.credentials)."
                ),
            )
        )
    return findings


async def _missing_from_baseline(snap: Snapshot, params: MissingParams) -> list[Finding]:
    history = snap.fleet_history
    if history is None:
        return []  # this caller keeps no run history (an on-demand run): nothing to compare with
    # Listing the workers also lets the runner record this run's pools: the history the baseline learns from.
    workers = await snap.workers()
    since = snap.now - timedelta(seconds=params.baseline_window)
    recent = [obs for obs in history if obs.at >= since]
    if len(recent) < params.baseline_min_runs:
        if history:
            return []  # said once, on the first run; quiet while the history fills
        return [
            Finding(
                check="agents.missing",
                severity="info",
                title="Learning the usual agent pools: agents.missing reports nothing yet",
                detail=(
                    f"With `expected: auto` the bot learns which pools of agents are normally registered from its "
                    f"own runs: it needs {params.baseline_min_runs} runs within {human(params.baseline_window)}; "
                    "this is the first. Until then a missing pool is not reported (agents.stale still reports "
                    "agents that stop)."
                ),
                subject=server_subject(snap),
                evidence={"runs_recorded": 0, "runs_needed": params.baseline_min_runs,
                          "baseline_window_s": params.baseline_window},
                remediation="Nothing to do. To check a fixed fleet from the start, list `expected:` patterns.",
            )
        ]
    if params.live_within is not None:
        workers = [w for w in workers if is_live(snap, w, params.live_within)]
    now = observe(workers)
    queue_docs = {q.id: q for q in await snap.queues()}
    findings: list[Finding] = []
    for pool in expected_pools(recent, params.baseline_share):
        count = now[pool.pattern].count if pool.pattern in now else 0
        queues = [queue_docs[q] for q in pool.queues if q in queue_docs]
        waiting = sum(len(q.entries) for q in queues)
        if pool.autoscaled:
            if count or not waiting:
                continue  # an autoscaler scales to zero when its queues are empty: normal
            severity: Severity = "warning"
            title = (
                f"Autoscaled pool {pool.pattern} has no instance while {waiting} task(s) wait in its queues"
            )
        elif count == 0:
            severity = "critical"
            title = f"Pool {pool.pattern} has no registered agent (usually {pool.typical})"
        elif count < (pool.typical + 1) // 2:
            severity = "warning"
            title = f"Pool {pool.pattern}: {count} agent(s) registered, usually {pool.typical}"
        else:
            continue
        seen = round(100 * pool.seen_runs / pool.total_runs)
        findings.append(
            Finding(
                check="agents.missing",
                severity=severity,
                title=title,
                detail=(
                    f"Agents of this pool were registered in {pool.seen_runs} of the last {pool.total_runs} runs "
                    f"({seen} % over {human(params.baseline_window)}), usually {pool.typical} of them; now {count}. "
                    f"They served: {', '.join(q.name for q in queues) or 'no queue still listed'}."
                ),
                subject=worker_subject(pool.pattern),
                evidence={
                    "pattern": pool.pattern,
                    "expected": "auto",
                    "usual": pool.typical,
                    "found": count,
                    "seen_runs": pool.seen_runs,
                    "runs": pool.total_runs,
                    "queues": [{"id": q.id, "name": q.name, "waiting": len(q.entries)} for q in queues],
                    "baseline_window_s": params.baseline_window,
                },
                links=[f"{snap.web}/workers-and-queues/workers"],
                remediation=(
                    f"Bring back the agents of {pool.pattern}: on their hosts check the agent process or service, "
                    "that the hosts reach the API server and that their keys are valid; for an autoscaled pool check "
                    "the autoscaler task's log and the cloud quota; on Kubernetes the agent Deployment. If the pool "
                    "was retired on purpose, nothing to do: the baseline forgets it within "
                    f"{human(params.baseline_window)} (or list `expected:` explicitly)."
                ),
            )
        )
    return findings


# ------------------------------------------------------------------------------------------------
# agents.orphaned_tasks


class OrphanedParams(CheckParams):
    age_thresholds = ("max_silence", "worker_dead_after", "grace")
    max_silence: Duration = Field(
        default=900.0, description="an in_progress task with no update for this long is orphaned, whatever its worker"
    )
    worker_dead_after: Duration = Field(
        default=480.0, description="a still-registered worker silent this long counts as gone (as agents.stale)"
    )
    grace: Duration = Field(
        default=120.0,
        description="the task must also have been silent this long before its worker's state counts "
        "(a task process can outlive its agent and still finish)",
    )
    include_datasets: bool = Field(
        default=False,
        description="also report dataset versions being uploaded (datasets.incomplete covers them better)",
    )


def _worker_state(snap: Snapshot, task: Task, worker: Worker | None, params: OrphanedParams) -> tuple[str, str]:
    """(reason code or "", human description) of the task's last worker."""
    if not task.last_worker:
        return "", "no agent (started outside an agent, e.g. from a developer machine)"
    if worker is None:
        return "worker_gone", f"{task.last_worker} is no longer registered"
    age = worker_age_s(snap, worker)
    if age is not None and age > params.worker_dead_after:
        return "worker_dead", f"{task.last_worker} has been silent for {human(age)}"
    if worker.task_id != task.id:
        doing = f"running another task ({worker.task_name or worker.task_id})" if worker.task_id else "idle"
        return "worker_moved_on", f"{task.last_worker} is alive but {doing}"
    return "", f"{task.last_worker} is alive and still lists this task"


@check("agents.orphaned_tasks", params=OrphanedParams)
async def agents_orphaned_tasks(snap: Snapshot, params: OrphanedParams) -> list[Finding]:
    """`in_progress` tasks nobody runs any more: their `last_worker` is gone (not registered, silent longer than
    `worker_dead_after`, or alive but running something else), or their `last_update` is older than `max_silence`.

    Critical when the agent is gone (the run is lost), warning when the task is only silent. Suggests `requeue`
    and `abort`; `related` names the worker. Dataset uploads are left to datasets.incomplete.
    """
    tasks = await snap.tasks(status=["in_progress"])
    if not tasks:
        return []
    workers = {w.id: w for w in await snap.workers()}
    queue_names = {q.id: q.name for q in await snap.queues()}
    findings: list[Finding] = []
    for task in tasks:
        if "dataset" in task.system_tags and not params.include_datasets:
            continue  # an upload that died is datasets.incomplete's finding; re-running it is not the fix
        last = task.last_update or task.status_changed or task.started
        silence = snap.age_s(last)
        worker = workers.get(task.last_worker) if task.last_worker else None
        reason, worker_state = _worker_state(snap, task, worker, params)
        reasons: list[str] = []
        if reason and silence is not None and silence > params.grace:
            reasons.append(reason)
        if silence is not None and silence > params.max_silence:
            reasons.append("silent")
        if not reasons:
            continue
        agent_lost = reasons[0] != "silent"
        severity: Severity = "critical" if agent_lost else "warning"
        queue_id = str(task.get("execution.queue") or "")
        queue_name = queue_names.get(queue_id, "")
        if agent_lost:
            title = f"Task {task.name} is orphaned: {worker_state}"
            remediation = (
                "No agent runs this task any more, but the server still shows it running. Requeue it (stop with "
                f"force, reset, enqueue to {queue_name or 'its queue'}) so a live agent restarts it, or abort it. "
                "Left alone, the server's watchdog marks it aborted (\"Forced stop (non-responsive)\") after 2 h "
                "without updates."
            )
        else:
            title = f"Task {task.name} has not reported for {human(silence)}"
            remediation = (
                f"The task is in progress but silent ({worker_state}). The process may be hung (deadlock, stuck "
                "I/O or data loader, a collective op waiting for a dead peer): read the end of its console log, "
                "then abort it or requeue it."
            )
        links = [snap.task_link(task)]
        if worker is not None:
            links.append(snap.worker_link(worker.id))
        if queue_id:
            links.append(snap.queue_link(queue_id))
        evidence: dict[str, Any] = {
            "task": {"id": task.id, "name": task.name, "project": task.project, "type": task.type},
            "status": task.status,
            "status_message": task.status_message or None,
            "reasons": reasons,
            "last_worker": task.last_worker or None,
            "worker_state": worker_state,
            "worker_last_seen": when(snap, worker.last_seen) if worker is not None else None,
            "last_update": when(snap, last),
            "started": iso(task.started),
            "queue": {"id": queue_id, "name": queue_name} if queue_id else None,
        }
        findings.append(
            Finding(
                check="agents.orphaned_tasks",
                severity=severity,
                title=title,
                detail=(
                    f"Status in_progress, last update {human(silence)} ago"
                    + (f", started {iso(task.started)}" if task.started else "")
                    + f"; {worker_state}."
                ),
                subject=task_subject(task.id, task),
                evidence=evidence,
                related=[Subject(kind="worker", id=task.last_worker)] if task.last_worker else [],
                links=links,
                remediation=remediation,
                actions=["requeue", "abort"],
            )
        )
    return findings


# ------------------------------------------------------------------------------------------------
# agents.unserved_queues


class UnservedParams(CheckParams):
    age_thresholds = ("stale_after", "critical_wait", "min_wait")
    stale_after: Duration = Field(default=120.0, description="a worker heard from within this time is live")
    critical_wait: Duration = Field(default=1800.0, description="oldest entry waiting longer than this is critical")
    min_wait: Duration = Field(
        default=0.0, description="ignore queues whose oldest entry waited less (e.g. 10m for autoscaled queues)"
    )
    queues: Patterns = Field(default=["*"], description="queue name (or id) globs to watch")


@check("agents.unserved_queues", params=UnservedParams)
async def agents_unserved_queues(snap: Snapshot, params: UnservedParams) -> list[Finding]:
    """Queues with waiting tasks and no live agent listening (a worker is live if heard from within
    `stale_after`).

    Warning, critical when the oldest entry has waited longer than `critical_wait`; `related` lists the
    silent agents that used to serve the queue.
    """
    queues = [q for q in await snap.queues() if q.entries and selected((q.name, q.id), params.queues)]
    if not queues:
        return []
    listeners = workers_by_queue(await snap.workers())
    unserved = [q for q in queues if not any(is_live(snap, w, params.stale_after) for w in listeners.get(q.id, []))]
    if not unserved:
        return []
    oldest = await oldest_waits(snap, unserved)
    names = await snap.tasks_by_id(tid for tid, _ in oldest.values())
    findings: list[Finding] = []
    for q in unserved:
        task_id, added = oldest.get(q.id, ("", None))
        waited = snap.age_s(added)
        if waited is not None and waited < params.min_wait:
            continue
        severity: Severity = "critical" if waited is not None and waited > params.critical_wait else "warning"
        silent = sorted(listeners.get(q.id, []), key=lambda w: w.id)
        task = names.get(task_id)
        if silent:
            cause = f"its agents ({', '.join(w.id for w in silent)}) stopped reporting"
            remediation = (
                f"Bring back or rotate the silent agents ({', '.join(w.id for w in silent[:5])}; see agents.stale), "
                f"or start another one: `clearml-agent daemon --queue {q.name} --detached`."
            )
        else:
            cause = "no agent listens to it"
            remediation = (
                f"Start an agent for it (`clearml-agent daemon --queue {q.name} --detached`), add the queue to an "
                "autoscaler resource or the Kubernetes glue's queues, or move the waiting tasks to a queue that "
                "is served."
            )
        links = [snap.queue_link(q.id)]
        if task_id:
            links.append(snap.task_link(task_id, task.project if task else None))
        findings.append(
            Finding(
                check="agents.unserved_queues",
                severity=severity,
                title=f"Queue {q.name}: {len(q.entries)} task(s) waiting and no live agent ({cause})",
                detail=(
                    f"The oldest entry ({task.name if task else task_id}) has waited {human(waited)}"
                    f" (critical after {human(params.critical_wait)}). Nothing will run from this queue until an "
                    "agent listens to it."
                ),
                subject=queue_subject(q),
                evidence={
                    "queue": {"id": q.id, "name": q.name},
                    "length": len(q.entries),
                    "oldest_entry": {
                        "task": {"id": task_id, "name": task.name if task else ""},
                        **when(snap, added),
                    },
                    "silent_workers": [worker_ref(snap, w) for w in silent],
                    "critical_wait_s": params.critical_wait,
                },
                related=[Subject(kind="worker", id=w.id) for w in silent if w.id],
                links=links,
                remediation=remediation,
            )
        )
    return findings


# ------------------------------------------------------------------------------------------------
# agents.watchdog_risk

# clearml-server's non-responsive tasks watchdog (services.tasks.non_responsive_tasks_watchdog): every
# watch_interval_sec it stops in_progress tasks whose last_update is older than threshold_sec.
SERVER_WATCHDOG_THRESHOLD_S = 7200.0
SERVER_WATCHDOG_INTERVAL_S = 900.0
WATCHDOG_SLACK_S = 60.0  # a cycle takes a moment; the bot's clock reading is one response old


class WatchdogRiskParams(CheckParams):
    share: float = Field(
        default=0.75,
        gt=0,
        lt=1,
        description="name a running task once it has gone this share of the server's limit without an update "
        "(0.75 of 2 h: 90 minutes of silence, 30 minutes before the server stops it)",
    )
    threshold: Duration = Field(
        default=SERVER_WATCHDOG_THRESHOLD_S,
        gt=0,
        description="the server's services.tasks.non_responsive_tasks_watchdog.threshold_sec (default 7200 s)",
    )
    interval: Duration = Field(
        default=SERVER_WATCHDOG_INTERVAL_S,
        gt=0,
        description="the server's watchdog watch_interval_sec (default 900 s): how often it looks",
    )
    include_datasets: bool = Field(
        default=True, description="also name dataset versions being uploaded (the watchdog stops long uploads too)"
    )
    ignore: Patterns = Field(default=[], description="task name globs to leave out")


@check("agents.watchdog_risk", params=WatchdogRiskParams)
async def agents_watchdog_risk(snap: Snapshot, params: WatchdogRiskParams) -> list[Finding]:
    """Running tasks close to the server's 2-hour watchdog: no update for `share` of its `threshold`.

    The server stops an in_progress task whose `last_update` is older than `threshold` at its next cycle (every
    `interval`), as "Forced stop (non-responsive)": long dataset uploads and single long steps that report nothing
    are killed that way. Warning from `share` of the limit, critical once the next cycle may stop it; evidence
    gives the silence, the earliest and latest moment of the forced stop and the task's agent. A task silent for
    longer than `threshold + interval` is left to agents.orphaned_tasks: a watchdog with these settings would have
    stopped it already, so this server's runs with other settings or is off.
    """
    tasks = await snap.tasks(status=["in_progress"])
    if not tasks:
        return []
    notice_after = params.share * params.threshold
    at_risk = []
    for task in tasks:
        if matches_any(task.name, params.ignore):
            continue
        if "dataset" in task.system_tags and not params.include_datasets:
            continue
        silence = snap.age_s(task.last_update)  # exactly the field the server's watchdog compares
        if silence is None or silence < notice_after:
            continue
        if silence > params.threshold + params.interval + WATCHDOG_SLACK_S:
            # A watchdog with these settings would have stopped it already: this server's runs with other
            # settings (or is off), so no forced stop is coming; agents.orphaned_tasks reports the silence.
            continue
        at_risk.append((task, silence))
    if not at_risk:
        return []
    workers = {w.id: w for w in await snap.workers()}
    findings: list[Finding] = []
    for task, silence in sorted(at_risk, key=lambda pair: -pair[1]):
        left = params.threshold - silence
        # The watchdog fires at its first cycle after the deadline: within one interval of it.
        severity: Severity = "critical" if left <= params.interval else "warning"
        worker = workers.get(task.last_worker) if task.last_worker else None
        # An agent's status reports carry its task and refresh the task's last_update (workers.status_report), so
        # a silent task is either run outside any agent (the SDK or clearml-data on a workstation: long uploads
        # and hashing report nothing) or left behind by its agent.
        is_dataset = "dataset" in task.system_tags
        if left > 0:
            when_text = f"in {human(left)} to {human(left + params.interval)}"
        else:
            when_text = f"at its next cycle (within {human(params.interval)})"
        actions: list[ActionId]
        if not task.last_worker:
            remediation = (
                "It runs outside any agent (the SDK"
                + (" or clearml-data" if is_dataset else "")
                + " on a workstation), so only the process itself refreshes it, and a long upload, hash or "
                "single step reports nothing. If it is still working, make it report (a log line or a scalar every "
                "few minutes, or `tasks.ping`), or raise `services.tasks.non_responsive_tasks_watchdog."
                "threshold_sec` in the server's configuration; if the process is gone, abort it."
            )
            actions = ["abort"]
        elif worker is not None and worker.task_id == task.id:
            remediation = (
                f"Its agent {task.last_worker} still lists it, yet its reports no longer refresh the task: check "
                "the agent's log and the task's console; abort it if it hangs."
            )
            actions = ["abort"]
        else:
            state = (
                f"its agent {task.last_worker} is no longer registered" if worker is None
                else f"its agent {task.last_worker} moved on"
            )
            remediation = (
                f"Nobody runs it any more ({state}): the watchdog will mark it stopped. Requeue it now to re-run it "
                "on a live agent, or abort it."
            )
            actions = ["requeue", "abort"]
        findings.append(
            Finding(
                check="agents.watchdog_risk",
                severity=severity,
                title=f"Task {task.name} silent for {human(silence)}: the server stops it {when_text}",
                detail=(
                    f"No update for {human(silence)}; the server's watchdog stops running tasks after "
                    f"{human(params.threshold)} without an update (checked every {human(params.interval)}) with "
                    "\"Forced stop (non-responsive)\"."
                ),
                subject=task_subject(task.id, task),
                evidence={
                    "task": {"id": task.id, "name": task.name, "project": task.project, "type": task.type},
                    "dataset": is_dataset,
                    "last_update": when(snap, task.last_update),
                    "silent_s": int(silence),
                    "forced_stop_earliest_s": max(0, int(left)),
                    "forced_stop_latest_s": max(0, int(left + params.interval)),
                    "last_worker": task.last_worker or None,
                    "worker_running_it": worker is not None and worker.task_id == task.id,
                    "threshold_s": params.threshold,
                    "interval_s": params.interval,
                    "share": params.share,
                },
                related=[Subject(kind="worker", id=task.last_worker)] if task.last_worker else [],
                links=[snap.task_link(task)] + ([snap.worker_link(worker.id)] if worker is not None else []),
                remediation=remediation,
                actions=actions,
            )
        )
    return findings
