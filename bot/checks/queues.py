"""Checks: scaling and queues.

Is work waiting too long, and is that a capacity problem (every agent busy: scale out), a placement problem
(agents idle on other, empty queues: rebalance), or a single task stuck at the back? Ages use the server's clock
and the queue entries' own `added` times; nothing here reads more than the snapshot's queue and worker lists,
one `queues.get_queue_metrics` call, and the few task documents it names.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from bot.checks.common import (
    CheckError,
    Duration,
    OptionalDuration,
    Patterns,
    entry_times,
    human,
    is_live,
    iso,
    oldest_waits,
    queue_subject,
    selected,
    severity_for,
    task_subject,
    when,
    workers_by_queue,
)
from bot.clearml.errors import ClearMLError
from bot.clearml.models import parse_time
from bot.engine.findings import SEVERITY_RANK, ActionId, Finding, Severity, Subject
from bot.engine.registry import CheckParams, check

if TYPE_CHECKING:
    from bot.clearml.models import Queue, Worker
    from bot.engine.snapshot import Snapshot


def _worst(*severities: Severity | None) -> Severity | None:
    present = [s for s in severities if s is not None]
    return max(present, key=lambda s: SEVERITY_RANK[s]) if present else None


def _load(snap: Snapshot, workers: list[Worker], stale_after: float) -> tuple[list[Worker], list[Worker]]:
    """(live, busy) among `workers`: live = heard from within stale_after, busy = live and running a task."""
    live = [w for w in workers if is_live(snap, w, stale_after)]
    return live, [w for w in live if w.task_id]


MAX_QUEUE_METRICS = 20  # queues with per-run `queues.length[<queue>]` / `queues.wait_s[<queue>]` gauges


# ------------------------------------------------------------------------------------------------
# queues.backlog


class BacklogParams(CheckParams):
    age_thresholds = ("max_wait", "stale_after")
    queues: Patterns = Field(default=["*"], description="queue name (or id) globs to watch")
    max_length: int = Field(default=20, ge=0, description="more waiting tasks than this is a warning")
    max_wait: Duration = Field(default=1800.0, description="oldest entry waiting longer than this is a warning")
    critical_factor: float = Field(default=3.0, ge=1.0, description="critical at this multiple of either threshold")
    stale_after: Duration = Field(default=120.0, description="a worker heard from within this time is live")
    show_entries: int = Field(default=5, ge=0, le=50, description="how many waiting tasks to list in the evidence")


@check("queues.backlog", params=BacklogParams)
async def queues_backlog(snap: Snapshot, params: BacklogParams) -> list[Finding]:
    """Per queue (globs allowed): waiting tasks and the oldest entry's wait, over `max_length` / `max_wait`.

    Warning over a threshold, critical at `critical_factor` times it. Suggests `prioritize` when agents serve
    the queue (moving an urgent task to the front then helps).
    """
    all_queues = await snap.queues()
    waits = sorted(a for q in all_queues for e in q.entries if (a := snap.age_s(e.added)) is not None)
    snap.metrics["queues.pending"] = sum(len(q.entries) for q in all_queues)
    snap.metrics["queues.wait_median_s"] = waits[len(waits) // 2] if waits else 0.0
    # per queue, for the backlog charts: the longest queues only (a queue absent from a run had nothing waiting)
    for q in sorted((q for q in all_queues if q.entries), key=lambda q: (-len(q.entries), q.name))[:MAX_QUEUE_METRICS]:
        snap.metrics[f"queues.length[{q.name or q.id}]"] = float(len(q.entries))
        snap.metrics[f"queues.wait_s[{q.name or q.id}]"] = float(snap.age_s(q.oldest_added()) or 0.0)
    queues = [q for q in all_queues if q.entries and selected((q.name, q.id), params.queues)]
    if not queues:
        return []
    oldest = await oldest_waits(snap, queues)
    flagged: list[tuple[Queue, Severity, float | None, str, datetime | None]] = []
    for q in queues:
        task_id, added = oldest.get(q.id, ("", None))
        waited = snap.age_s(added)
        length = len(q.entries)
        by_length = severity_for(
            length, params.max_length + 1, max(params.max_length * params.critical_factor, params.max_length + 1)
        )
        by_wait = severity_for(waited, params.max_wait, params.max_wait * params.critical_factor)
        severity = _worst(by_length, by_wait)
        if severity is not None:
            flagged.append((q, severity, waited, task_id, added))
    if not flagged:
        return []
    listeners = workers_by_queue(await snap.workers())
    shown_ids = [e.task_id for q, *_ in flagged for e in q.entries[: params.show_entries]]
    docs = await snap.tasks_by_id(shown_ids)
    times = await entry_times(snap, [q for q, *_ in flagged])
    findings: list[Finding] = []
    for q, severity, waited, task_id, added in flagged:
        live, busy = _load(snap, listeners.get(q.id, []), params.stale_after)
        length = len(q.entries)
        over = []
        if length > params.max_length:
            over.append(f"{length} waiting (limit {params.max_length})")
        if waited is not None and waited >= params.max_wait:
            over.append(f"oldest waited {human(waited)} (limit {human(params.max_wait)})")
        entries = []
        for pos, e in enumerate(q.entries[: params.show_entries]):
            doc = docs.get(e.task_id)
            at, _source = times.get((q.id, e.task_id), (None, ""))
            entries.append({"position": pos, "task": {"id": e.task_id, "name": doc.name if doc else ""},
                            "waited": when(snap, at)})
        actions: list[ActionId] = ["prioritize"] if live and length > 1 else []
        if not live:
            remediation = (
                f"No live agent serves {q.name} (see agents.unserved_queues): start or restart one "
                f"(`clearml-agent daemon --queue {q.name} --detached`) before anything else helps."
            )
        else:
            remediation = (
                f"{len(live)} live agent(s) serve {q.name}, {len(busy)} busy. Add agents to the queue (another "
                f"`clearml-agent daemon --queue {q.name}`, a higher autoscaler max for its resource), move agents "
                "from idle queues, or move the most urgent task to the front (prioritize)."
            )
        oldest_doc = docs.get(task_id)
        findings.append(
            Finding(
                check="queues.backlog",
                severity=severity,
                title=f"Queue {q.name} is backed up: " + ", ".join(over),
                detail=(
                    f"{length} task(s) waiting; the oldest ({oldest_doc.name if oldest_doc else task_id}) "
                    f"since {iso(added) or 'unknown'}; {len(live)} live agent(s), {len(busy)} busy."
                ),
                subject=queue_subject(q),
                evidence={
                    "queue": {"id": q.id, "name": q.name},
                    "length": length,
                    "oldest_entry": {"task": {"id": task_id, "name": oldest_doc.name if oldest_doc else ""},
                                     **when(snap, added)},
                    "entries": entries,
                    "live_workers": len(live),
                    "busy_workers": len(busy),
                    "max_length": params.max_length,
                    "max_wait_s": params.max_wait,
                    "critical_factor": params.critical_factor,
                },
                links=[snap.queue_link(q.id)],
                remediation=remediation,
                actions=actions,
            )
        )
    return findings


# ------------------------------------------------------------------------------------------------
# queues.wait_time


class WaitTimeParams(CheckParams):
    queues: Patterns = Field(default=["*"], description="queue name (or id) globs to watch")
    window: Duration = Field(default=21600.0, description="history to compare against (server keeps metrics in ES)")
    interval: Duration = Field(default=300.0, description="metric bucket size; the server samples every 300 s")
    factor: float = Field(default=3.0, gt=1.0, description="latest wait above this multiple of the median warns")
    floor: Duration = Field(default=300.0, description="waits below this never warn (noise on near-empty queues)")
    min_points: int = Field(default=4, ge=2, description="fewer data points than this: not enough history")

    @field_validator("interval")
    @classmethod
    def _whole_seconds(cls, value: float) -> float:
        if value < 1:
            raise ValueError("interval must be at least 1s")
        return float(int(value))


def _series(doc: dict[str, Any], field: str) -> list[Any]:
    value = doc.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise CheckError(
            f"queues.get_queue_metrics returned `{field}` as {type(value).__name__}, expected a list"
        )
    return value


def _points(doc: dict[str, Any]) -> list[tuple[datetime | None, float, int | None]]:
    """(time, avg wait s, length) per bucket, oldest first; buckets without a wait value are skipped."""
    dates = _series(doc, "dates")
    waits = _series(doc, "avg_waiting_times")
    lengths = _series(doc, "queue_lengths")
    out = []
    for i, wait in enumerate(waits):
        if wait is None:
            continue
        try:
            value = float(wait)
        except (TypeError, ValueError):
            raise CheckError(f"queues.get_queue_metrics returned a non-numeric waiting time {wait!r}") from None
        at = parse_time(dates[i]) if i < len(dates) else None
        length = lengths[i] if i < len(lengths) and isinstance(lengths[i], int | float) else None
        out.append((at, value, None if length is None else int(length)))
    return out


async def _metrics(snap: Snapshot, window: float, interval: float, queues: list[Queue]) -> dict[str, dict[str, Any]]:
    """Queue id -> its metrics document, from one memoized `queues.get_queue_metrics` call."""
    if not queues:
        return {}
    docs = await snap.queue_metrics(timedelta(seconds=window), int(interval), [q.id for q in queues])
    return {str(d.get("queue")): d for d in docs if d.get("queue")}


@check("queues.wait_time", params=WaitTimeParams)
async def queues_wait_time(snap: Snapshot, params: WaitTimeParams) -> list[Finding]:
    """Average waiting time per queue from `queues.get_queue_metrics` over `window` (default 6 h).

    Warns when the latest interval's average wait is more than `factor` times the window's median and above
    `floor`: tasks suddenly wait much longer than usual.
    """
    queues = [q for q in await snap.queues() if selected((q.name, q.id), params.queues)]
    metrics = await _metrics(snap, params.window, params.interval, queues)
    findings: list[Finding] = []
    for q in queues:
        doc = metrics.get(q.id)
        if doc is None:
            continue
        points = _points(doc)
        if len(points) < params.min_points:
            continue
        latest_at, latest, latest_len = points[-1]
        median = statistics.median(p[1] for p in points[:-1])
        if latest <= params.floor or latest <= params.factor * median:
            continue
        ratio = round(latest / median, 1) if median > 0 else None
        compared = f"{ratio}x the {human(params.window)} median of {human(median)}" if ratio else (
            f"up from a {human(params.window)} median of {human(median)}"
        )
        findings.append(
            Finding(
                check="queues.wait_time",
                severity="warning",
                title=f"Queue {q.name}: tasks now wait {human(latest)} on average, {compared}",
                detail=(
                    f"Average waiting time in the latest {human(params.interval)} interval is {human(latest)}"
                    + (f" with {latest_len} task(s) queued" if latest_len is not None else "")
                    + f"; over the last {human(params.window)} the median was {human(median)}."
                ),
                subject=queue_subject(q),
                evidence={
                    "queue": {"id": q.id, "name": q.name},
                    "latest_avg_wait_s": round(latest, 1),
                    "latest_at": iso(latest_at),
                    "latest_length": latest_len,
                    "median_avg_wait_s": round(median, 1),
                    "ratio": ratio,
                    "points": len(points),
                    "recent": [
                        {"at": iso(at), "avg_wait_s": round(w, 1), "length": n} for at, w, n in points[-6:]
                    ],
                    "window_s": params.window,
                    "interval_s": params.interval,
                    "factor": params.factor,
                    "floor_s": params.floor,
                },
                links=[snap.queue_link(q.id)],
                remediation=(
                    f"Find out why {q.name} slowed down: agents lost (agents.stale, agents.unserved_queues), all "
                    "agents busy with long runs (queues.capacity), or a burst of submissions. Add agents or raise "
                    "the autoscaler's limit for this queue if the load is the new normal."
                ),
            )
        )
    return findings


# ------------------------------------------------------------------------------------------------
# queues.capacity


class CapacityParams(CheckParams):
    age_thresholds = ("stale_after", "min_wait", "trend_window")
    queues: Patterns = Field(default=["*"], description="queue name (or id) globs to watch")
    stale_after: Duration = Field(default=120.0, description="a worker heard from within this time is live")
    min_wait: Duration = Field(
        default=600.0, description="a backlog counts as starving once its oldest entry waited this long"
    )
    trend_window: Duration = Field(default=1800.0, description="how far back to look for a growing backlog")
    use_metrics: bool = Field(default=True, description="read the backlog trend from queues.get_queue_metrics")
    window: Duration = Field(default=21600.0, description="metrics window (same as queues.wait_time: one fetch)")
    interval: Duration = Field(default=300.0, description="metrics interval (same as queues.wait_time)")


def _trend(doc: dict[str, Any] | None, now: datetime, trend_window: float) -> tuple[int, int] | None:
    """(length trend_window ago, latest length) from the metrics, or None when unknown."""
    if doc is None:
        return None
    points = [(at, n) for at, _w, n in _points(doc) if n is not None]
    if len(points) < 2:
        return None
    latest = points[-1][1]
    since = now - timedelta(seconds=trend_window)
    earlier = [n for at, n in points[:-1] if at is not None and at <= since]
    before = earlier[-1] if earlier else points[0][1]
    return before, latest


@check("queues.capacity", params=CapacityParams)
async def queues_capacity(snap: Snapshot, params: CapacityParams) -> list[Finding]:
    """Busy ratio of the live agents serving each queue: scale out or rebalance.

    A queue starves when tasks wait (growing backlog over `trend_window`, or an entry older than `min_wait`)
    while every live agent serving it is busy. The hint is to scale out, or, when other agents sit idle on empty
    queues, to rebalance them (they are named).
    """
    all_queues = await snap.queues()
    workers = await snap.workers()
    listeners = workers_by_queue(workers)
    entries_of = {q.id: len(q.entries) for q in all_queues}
    # idle capacity: live agents with no task whose every queue is empty
    idle_elsewhere = [
        w for w in workers
        if is_live(snap, w, params.stale_after) and not w.task_id and w.queues
        and all(entries_of.get(ref.id, 0) == 0 for ref in w.queues)
    ]
    candidates = [q for q in all_queues if q.entries and selected((q.name, q.id), params.queues)]
    if not candidates:
        return []
    oldest = await oldest_waits(snap, candidates)
    metrics: dict[str, dict[str, Any]] = {}
    metrics_error: str | None = None
    if params.use_metrics:
        selected_queues = [q for q in all_queues if selected((q.name, q.id), params.queues)]
        try:
            metrics = await _metrics(snap, params.window, params.interval, selected_queues)
        except ClearMLError as exc:  # the trend is a refinement: without it, fall back to the oldest entry's wait
            metrics_error = exc.describe()
    findings: list[Finding] = []
    for q in candidates:
        live, busy = _load(snap, listeners.get(q.id, []), params.stale_after)
        saturated = bool(live) and len(busy) == len(live)
        if live and not saturated:
            continue
        waited = snap.age_s(oldest.get(q.id, ("", None))[1])
        trend = _trend(metrics.get(q.id), snap.now, params.trend_window)
        growing = trend is not None and trend[1] > trend[0]
        starving = growing or (waited is not None and waited >= params.min_wait)
        if not starving:
            continue
        idle = [w for w in idle_elsewhere if q.id not in {ref.id for ref in w.queues}]
        if not live and not idle:
            continue  # nobody serves it and nobody is free: agents.unserved_queues says so
        trend_text = f"backlog {trend[0]} → {trend[1]} in {human(params.trend_window)}" if growing and trend else (
            f"oldest waiting {human(waited)}"
        )
        idle_queues = sorted({ref.name for w in idle for ref in w.queues})
        if live:
            title = f"Queue {q.name} is at capacity: {len(busy)}/{len(live)} agents busy, {trend_text}"
        else:
            title = f"Queue {q.name} has no live agent, {trend_text}"
        if idle:
            title += f"; {len(idle)} agent(s) idle on empty queues ({', '.join(idle_queues[:3])})"
            remediation = (
                f"Rebalance: {', '.join(w.id for w in idle[:5])} sit idle on empty queues ({', '.join(idle_queues)}). "
                f"If they have the right hardware, restart them also listening to {q.name} (`clearml-agent daemon "
                f"--queue {q.name} <their queues>`; an agent serves its queues in priority order). Otherwise scale "
                f"out {q.name}."
            )
        else:
            remediation = (
                f"Scale out: every agent serving {q.name} is busy and work keeps arriving. Add agents for it "
                f"(`clearml-agent daemon --queue {q.name} --detached` on another machine, more GPUs per host with "
                "`--gpus`, or a higher max instance count for its autoscaler resource / Kubernetes glue), or "
                "prioritize what must run first."
            )
        links = [snap.queue_link(q.id)] + [snap.worker_link(w.id) for w in idle[:5]]
        findings.append(
            Finding(
                check="queues.capacity",
                severity="warning",
                title=title,
                detail=(
                    f"{len(q.entries)} task(s) waiting; {len(live)} live agent(s) serve the queue, {len(busy)} busy "
                    f"(busy ratio {len(busy) / len(live):.0%})." if live else
                    f"{len(q.entries)} task(s) waiting and no live agent serves the queue."
                ),
                subject=queue_subject(q),
                evidence={
                    "queue": {"id": q.id, "name": q.name},
                    "length": len(q.entries),
                    "oldest_wait_s": None if waited is None else int(waited),
                    "live_workers": [w.id for w in live],
                    "busy_workers": [w.id for w in busy],
                    "busy_ratio": round(len(busy) / len(live), 2) if live else None,
                    "trend": {"from": trend[0], "to": trend[1], "over_s": params.trend_window} if trend else None,
                    "trend_error": metrics_error,
                    "idle_elsewhere": [
                        {"worker": w.id, "queues": [ref.name for ref in w.queues]} for w in idle[:10]
                    ],
                    "hint": "rebalance" if idle else "scale_out",
                },
                links=links,
                remediation=remediation,
            )
        )
    return findings


# ------------------------------------------------------------------------------------------------
# queues.stuck_queued


class StuckParams(CheckParams):
    age_thresholds = ("threshold", "critical_after", "stale_after")
    threshold: Duration = Field(default=21600.0, description="tasks queued longer than this are reported")
    critical_after: OptionalDuration = Field(default=86400.0, description="queued longer than this is critical")
    queues: Patterns = Field(default=["*"], description="queue name (or id) globs to watch")
    include_unlisted: bool = Field(
        default=True,
        description="also report tasks whose status is queued but which sit in no visible queue (deleted queue, "
        "hidden k8s_scheduler queue)",
    )
    stale_after: Duration = Field(default=120.0, description="a worker heard from within this time is live")


@check("queues.stuck_queued", params=StuckParams)
async def queues_stuck_queued(snap: Snapshot, params: StuckParams) -> list[Finding]:
    """Tasks queued longer than `threshold` (default 6 h), timed from the queue entry's `added` (else the task's
    `status_changed`).

    One finding per task, naming its queue, position and whether a live agent serves that queue; suggests
    `prioritize`. With `include_unlisted`, also tasks marked queued that sit in no visible queue (suggests
    `requeue`).
    """
    all_queues = await snap.queues()
    queues = [q for q in all_queues if q.entries and selected((q.name, q.id), params.queues)]
    times = await entry_times(snap, queues)
    listeners = workers_by_queue(await snap.workers())
    by_id = {q.id: q for q in all_queues}

    # (age, task id, queue or None, position, enqueued at, time source)
    stuck: list[tuple[float, str, Queue | None, int, datetime | None, str]] = []
    for q in queues:
        for pos, e in enumerate(q.entries):
            at, source = times[(q.id, e.task_id)]
            age = snap.age_s(at)
            if age is not None and age > params.threshold:
                stuck.append((age, e.task_id, q, pos, at, source))
    unlisted_docs = {}
    if params.include_unlisted:
        in_queues = {e.task_id for q in all_queues for e in q.entries}
        for task in await snap.tasks_changed_before(["queued"], timedelta(seconds=params.threshold)):
            if task.id in in_queues:
                continue
            age = snap.age_s(task.status_changed)
            if age is not None and age > params.threshold:
                unlisted_docs[task.id] = task
                stuck.append((age, task.id, None, -1, task.status_changed, "status_changed"))
    if not stuck:
        return []
    stuck.sort(key=lambda s: -s[0])
    # Names only for what the report will show: the runner keeps the worst `max_findings`, after correlation folded
    # the tasks of unserved queues into their queue's finding (so the heads of served queues are always named).
    served = {q.id for q in queues if _load(snap, listeners.get(q.id, []), params.stale_after)[0]}
    shown = stuck[: params.max_findings] + [s for s in stuck if s[2] is not None and s[2].id in served and s[3] == 0]
    named = await snap.tasks_by_id(s[1] for s in shown if s[1] not in unlisted_docs)
    named.update(unlisted_docs)
    findings: list[Finding] = []
    for age, task_id, q, pos, at, source in stuck:
        task = named.get(task_id)
        severity: Severity = (
            "critical" if params.critical_after is not None and age > params.critical_after else "warning"
        )
        links = [snap.task_link(task_id, task.project if task else None)]
        evidence: dict[str, Any] = {
            "task": {"id": task_id, "name": task.name if task else ""},
            "queued_since": when(snap, at),
            "time_source": source,
            "threshold_s": params.threshold,
        }
        actions: list[ActionId]
        related: list[Subject] = []
        if q is not None:
            live, busy = _load(snap, listeners.get(q.id, []), params.stale_after)
            evidence.update({
                "queue": {"id": q.id, "name": q.name},
                "position": pos,
                "queue_length": len(q.entries),
                "live_workers": len(live),
                "busy_workers": len(busy),
            })
            related = [queue_subject(q)]
            links.append(snap.queue_link(q.id))
            title = f"Task {task.name if task else task_id} queued for {human(age)} in {q.name} " \
                    f"(position {pos + 1} of {len(q.entries)})"
            if not live:
                remediation = (
                    f"No live agent serves {q.name} (see agents.unserved_queues): start one for it, or move the "
                    "task to a served queue (dequeue, then enqueue elsewhere)."
                )
            else:
                remediation = (
                    f"{len(live)} live agent(s) serve {q.name} but have not reached this task ({len(busy)} busy). "
                    "Move it to the front (prioritize), add capacity (queues.capacity), or check that the agents "
                    "can run it (GPU count, docker image, Python version it asks for)."
                )
            actions = ["prioritize"]
        else:
            queue_ref = str(task.get("execution.queue") or "") if task else ""
            hidden = by_id.get(queue_ref)
            evidence.update({
                "queue": {"id": queue_ref or None, "name": hidden.name if hidden else None},
                "in_visible_queue": False,
                "status_reason": task.status_reason if task else None,
            })
            title = f"Task {task.name if task else task_id} marked queued for {human(age)} but in no visible queue"
            remediation = (
                "The task says queued, but no visible queue holds it: its queue was deleted, or it waits in a hidden "
                "queue such as the Kubernetes glue's k8s_scheduler (a pod that cannot be scheduled). Requeue it to a "
                "served queue, or abort it; on Kubernetes, `kubectl describe pod clearml-id-<task id>` says why."
            )
            actions = ["requeue"]
        findings.append(
            Finding(
                check="queues.stuck_queued",
                severity=severity,
                title=title,
                detail=f"Queued since {iso(at) or 'unknown'} ({source}); reported after {human(params.threshold)}.",
                subject=task_subject(task_id, task),
                evidence=evidence,
                related=related,
                links=links,
                remediation=remediation,
                actions=actions,
            )
        )
    return findings
