"""Checks: reproducibility (environment capture, why runs fail, what differs between two runs).

A run can be re-run (cloned, requeued on an agent) only if the task recorded what it ran: the code
(repository + commit + uncommitted diff), the packages (pinned requirements), the interpreter (Python
version) or a container image. These checks flag what is missing, group recent failures by cause so a
fleet-wide problem (a broken requirement, a dead agent, a storage outage) shows as one finding instead of
fifty, and compare two runs field by field.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from bot.checks.common import Duration, Patterns, iso, redact_evidence, redact_subjects
from bot.checks.storage import FAILED_TASK_FIELDS, log_tails, project_filter
from bot.clearml.errors import NotFoundError
from bot.diagnosis.compare import compare_tasks
from bot.diagnosis.environment import GAP_FIX, GAP_SEVERITY, GapName, environment_gaps
from bot.diagnosis.failure_causes import CAUSE_IDS, CAUSES, CauseName, classify_failure
from bot.diagnosis.requirements import python_version
from bot.engine.findings import SEVERITY_RANK, Finding, Severity, Subject, fingerprint_for
from bot.engine.registry import CheckParams, check
from bot.redact import redact

if TYPE_CHECKING:
    from bot.clearml.models import Task
    from bot.engine.snapshot import Snapshot


# Requirements parsing, the failure-cause catalogue and run comparison live in bot/diagnosis (the slash-command
# look-ups and the actions use them too); these checks apply them to a snapshot.

# ================================================================================================
# repro.environment


class EnvironmentParams(CheckParams):
    window: Duration = Field(default=24 * 3600.0, description="tasks whose status changed within this window")
    projects: Patterns = Field(default_factory=list, description="project name/id globs (empty: all projects)")
    statuses: list[str] = Field(
        default_factory=lambda: ["in_progress", "completed", "failed", "stopped", "published", "closed"],
        description="task statuses to look at; drafts and queued tasks have not captured their environment yet",
    )
    types: list[str] = Field(
        default_factory=lambda: ["training", "testing", "inference"],
        description="task types to look at (datasets, controllers and services are excluded by default)",
    )
    ignore: list[GapName] = Field(default_factory=list, description="gap kinds not to report")
    severities: dict[GapName, Literal["info", "warning", "critical"]] = Field(
        default_factory=dict, description="override the severity of a gap kind, e.g. {unpinned_requirements: warning}"
    )
    max_unpinned_listed: int = Field(default=10, ge=1, le=200, description="unpinned packages listed per task")


@check("repro.environment", params=EnvironmentParams)
async def environment(snap: Snapshot, params: EnvironmentParams) -> list[Finding]:
    """Recent tasks with gaps in their environment capture, one finding per task listing what is missing.

    Gaps: no requirements (pip/conda), requirements installed from local paths, unpinned requirements, no
    code (no repository and no stored script), a standalone script, no commit (`script.version_num`),
    uncommitted changes (`script.diff`), no Python version (`script.binary` or the requirements' "# Python"
    line) and no container image. Severity is the worst gap: warning for gaps that make a re-run impossible
    or wrong (no requirements/code/commit, local requirements), info for the rest; `severities` overrides.
    """
    project_ids = await project_filter(snap, params.projects)
    if project_ids == []:
        return []
    tasks = await snap.tasks(
        status=params.statuses,
        type=params.types,
        changed_within=timedelta(seconds=params.window),
        projects=project_ids,
        extra_fields=(
            "script.repository",
            "script.branch",
            "script.version_num",
            "script.binary",
            "script.requirements",
            "script.diff",
            "script.entry_point",
            "container.image",
        ),
    )
    severity_of = {**GAP_SEVERITY, **params.severities}
    secrets = snap.server.secrets()
    findings: list[Finding] = []
    for task in tasks:
        if "dataset" in task.system_tags:
            continue
        gaps = {k: v for k, v in environment_gaps(task).items() if k not in params.ignore}
        if not gaps:
            continue
        worst = max((severity_of[g] for g in gaps), key=lambda s: SEVERITY_RANK[s])
        names = sorted(gaps, key=lambda g: (-SEVERITY_RANK[severity_of[g]], g))
        evidence_gaps: dict[str, Any] = {}
        for name in names:
            value = gaps[name]
            if isinstance(value, list):
                evidence_gaps[name] = {"count": len(value), "packages": value[: params.max_unpinned_listed]}
            else:
                evidence_gaps[name] = value
        human = ", ".join(g.replace("_", " ") for g in names)
        findings.append(
            Finding(
                check="repro.environment",
                severity=worst,
                title=(
                    f"Task '{task.name}' cannot be reliably re-run: {human}"
                    if SEVERITY_RANK[worst] >= SEVERITY_RANK["warning"]
                    else f"Task '{task.name}' may not re-run the same: {human}"
                ),
                detail="; ".join(
                    f"{g.replace('_', ' ')}: {v if not isinstance(v, list) else ', '.join(v[:5])}"
                    for g, v in gaps.items()
                )[:1000],
                subject=Subject(kind="task", id=task.id, name=task.name),
                evidence=redact_evidence(
                    {
                        "task": {"id": task.id, "name": task.name, "status": task.status, "type": task.type},
                        "gaps": evidence_gaps,
                        "severities": {g: severity_of[g] for g in names},
                        "repository": task.get("script.repository") or None,
                        "commit": task.get("script.version_num") or None,
                        "python": python_version(task)[0],
                        "container": task.get("container.image") or None,
                    },
                    secrets,
                ),
                links=[snap.task_link(task)],
                remediation=" ".join(GAP_FIX[g] for g in names),
                actions=[],
            )
        )
    return findings


# ================================================================================================
# repro.failure_causes


class FailureCausesParams(CheckParams):
    window: Duration = Field(default=24 * 3600.0, description="failed tasks whose status changed within this window")
    projects: Patterns = Field(default_factory=list, description="project name/id globs (empty: all projects)")
    lines: int = Field(default=200, ge=10, le=5000, description="console lines read from the end of each log")
    max_tasks: int = Field(default=200, ge=1, le=5000, description="at most this many recent failures are read")
    include_non_responsive: bool = Field(
        default=True,
        description="also count tasks the server stopped as `Forced stop (non-responsive)` (their agent died)",
    )
    critical_count: int | None = Field(
        default=10, ge=1, description="this many failures of one cause in the window make it critical (null: never)"
    )
    severities: dict[CauseName, Literal["info", "warning", "critical"]] = Field(
        default_factory=dict, description="override the severity of a cause, e.g. {user_code: warning}"
    )
    max_listed: int = Field(default=20, ge=1, le=500, description="tasks listed in a finding's evidence")


@check("repro.failure_causes", params=FailureCausesParams)
async def failure_causes(snap: Snapshot, params: FailureCausesParams) -> list[Finding]:
    """Recent failed tasks grouped by cause, from the status reason/message and the console log tail.

    Causes, most upstream first, from the catalogue bot/diagnosis/data/failure_causes.yaml: requested Python not
    found, disk full, image pull, GPU not visible, CUDA/driver mismatch, requirements install (pip/conda), git diff,
    repository checkout, upload too large (413), storage credentials, missing module, GPU out of memory, storage
    error, shared memory, host out of memory, watchdog forced stop, spot preemption, killed by a signal, user code
    exception, unknown. One finding per cause listing the tasks; its subject is the most
    recent failure of that cause (so actions act on it), and its fingerprint is keyed by the cause, not the
    task, so a new failure of the same cause updates the same incident instead of opening another.
    Environment causes warn; user code and unknown are info; `critical_count` failures of one cause are critical.
    """
    project_ids = await project_filter(snap, params.projects)
    if project_ids == []:
        return []
    window = timedelta(seconds=params.window)
    tasks = await snap.tasks(
        status=["failed"], changed_within=window, projects=project_ids, extra_fields=FAILED_TASK_FIELDS
    )
    if params.include_non_responsive:
        stopped = await snap.tasks(status=["stopped"], changed_within=window, projects=project_ids)
        tasks = tasks + [t for t in stopped if "non-responsive" in f"{t.status_reason} {t.status_message}".lower()]
    tasks = [t for t in tasks if "dataset" not in t.system_tags]
    tasks.sort(key=lambda t: t.status_changed or datetime.min.replace(tzinfo=UTC), reverse=True)
    # Logs are read for the most recent max_tasks only; the older ones are still counted (a burst of failures must
    # never look smaller than it is), in one finding of their own.
    tasks, unread = tasks[: params.max_tasks], tasks[params.max_tasks :]
    if not tasks:
        return []
    logs = await log_tails(snap, tasks, params.lines)
    secrets = snap.server.secrets()
    groups: dict[str, list[tuple[Task, list[str]]]] = {}
    for task in tasks:
        cause, hits = classify_failure(logs.get(task.id, []), task.status_reason, task.status_message)
        groups.setdefault(cause, []).append((task, hits))

    by_id = {c.id: c for c in CAUSES}
    findings: list[Finding] = []
    server_anchor = Subject(kind="server", id=snap.server.api_url, name=snap.server.name)
    for cause_id in CAUSE_IDS:
        members = groups.get(cause_id)
        if not members:
            continue
        cause = by_id[cause_id]
        latest, latest_hits = members[0]
        severity: Severity = params.severities.get(cause_id, cause.severity)  # type: ignore[arg-type]
        if params.critical_count is not None and len(members) >= params.critical_count and cause_id != "unknown":
            severity = "critical"
        listed = []
        for task, hits in members[: params.max_listed]:
            listed.append(
                {
                    "id": task.id,
                    "name": task.name,
                    "project": task.project,
                    "status": task.status,
                    "status_changed": iso(task.status_changed),
                    "status_reason": redact(task.status_reason, secrets),
                    "line": redact(hits[-1].strip(), secrets)[:400] if hits else None,
                    "link": snap.task_link(task),
                }
            )
        lines = [redact(h.strip(), secrets)[:400] for h in latest_hits[:5]]
        evidence: dict[str, Any] = {
            "cause": cause_id,
            "count": len(members),
            "tasks": listed,
            "lines": lines,
            "window_s": params.window,
        }
        related = [Subject(kind="task", id=t.id, name=t.name) for t, _ in members[:10]] if cause_id == "storage" else []
        names = ", ".join(f"'{t.name}'" for t, _ in members[:3]) + (" …" if len(members) > 3 else "")
        findings.append(
            Finding(
                check="repro.failure_causes",
                severity=severity,
                title=f"{len(members)} failed task{'s' if len(members) != 1 else ''}: {cause.title} ({names})",
                detail=lines[0] if lines else (latest.status_message or latest.status_reason or ""),
                subject=Subject(kind="task", id=latest.id, name=latest.name),
                fingerprint=fingerprint_for("repro.failure_causes", server_anchor, cause_id),
                evidence=evidence,
                related=related,
                links=[snap.task_link(t) for t, _ in members[:10]],
                remediation=cause.remediation,
                actions=list(cause.actions),
            )
        )
    if unread:
        findings.append(_unclassified(snap, params, unread, len(tasks), server_anchor))
    return findings


def _unclassified(
    snap: Snapshot, params: FailureCausesParams, unread: list[Task], classified: int, anchor: Subject
) -> Finding:
    """The failures in the window beyond `max_tasks`: counted and listed, their logs not read."""
    n = len(unread)
    severity: Severity = "critical" if params.critical_count is not None and n >= params.critical_count else "warning"
    plural = "s" if n != 1 else ""
    return Finding(
        check="repro.failure_causes",
        severity=severity,
        title=f"{n} more failed task{plural} in the window, not classified (max_tasks={params.max_tasks})",
        detail=(
            f"{classified + n} tasks failed within the window; the logs of the {classified} most recent were read and "
            f"are grouped by cause above, these {n} earlier ones were not."
        ),
        subject=anchor,
        fingerprint=fingerprint_for("repro.failure_causes", anchor, "unclassified"),
        evidence={
            "cause": "unclassified",
            "count": n,
            "classified": classified,
            "tasks": [
                {"id": t.id, "name": t.name, "status_changed": iso(t.status_changed), "link": snap.task_link(t)}
                for t in unread[: params.max_listed]
            ],
            "window_s": params.window,
        },
        links=[snap.task_link(t) for t in unread[:10]],
        remediation=(
            f"A burst this large usually has one cause: see the cause findings of this run. To classify every "
            f"failure, raise max_tasks (now {params.max_tasks}, at most 5000) in the playbook; each task read costs "
            "one events.get_task_log call."
        ),
        actions=[],
    )


# ================================================================================================
# repro.compare

ENV_PARTS = ("commit", "diff", "requirements", "python", "container")


class CompareParams(CheckParams):
    task_a: str | None = Field(default=None, description="the reference task id (e.g. the run that worked)")
    task_b: str | None = Field(default=None, description="the task id compared with it (e.g. the clone that failed)")
    window: Duration = Field(
        default=24 * 3600.0,
        description="without task_a/task_b: compare recent failed tasks (status changed within this window) with the "
        "completed task they were cloned from",
    )
    max_pairs: int = Field(default=20, ge=1, le=500, description="without task ids: at most this many pairs")
    ignore_hyperparams: Patterns = Field(
        default_factory=list, description="hyperparameter globs ('Section/name') left out of the comparison"
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> CompareParams:
        if bool(self.task_a) != bool(self.task_b):
            raise ValueError("give both task_a and task_b (two task ids), or neither for automatic mode")
        return self


def _summary(diff: dict[str, Any]) -> str:
    parts = []
    for key in (
        "commit",
        "diff",
        "requirements",
        "python",
        "container",
        "hyperparams",
        "datasets",
        "models",
        "configuration",
    ):
        if key not in diff:
            continue
        value = diff[key]
        if key == "requirements":
            n = sum(len(value.get(k, {})) for k in ("added", "removed", "changed"))
            parts.append(f"requirements ({n} package{'s' if n != 1 else ''})")
        elif key in ("hyperparams", "datasets", "models"):
            n = sum(len(value.get(k, {})) for k in ("added", "removed", "changed"))
            parts.append(f"{key} ({n})")
        elif key == "commit":
            parts.append("code (" + ", ".join(sorted(value)) + ")")
        else:
            parts.append(key)
    return ", ".join(parts)


def _detail(diff: dict[str, Any], limit: int = 8) -> str:
    lines: list[str] = []
    for key, value in diff.items():
        if key in ("requirements", "hyperparams", "datasets", "models"):
            for name, pair in list(value.get("changed", {}).items())[:limit]:
                lines.append(f"{key} {name}: {pair[0]} -> {pair[1]}")
            for name, spec in list(value.get("added", {}).items())[:limit]:
                lines.append(f"{key} {name}: added ({spec})")
            for name, spec in list(value.get("removed", {}).items())[:limit]:
                lines.append(f"{key} {name}: removed (was {spec})")
        elif key in ("commit", "container"):
            for name, pair in value.items():
                lines.append(f"{key}.{name}: {pair[0]} -> {pair[1]}")
        elif key == "python":
            lines.append(f"python: {value[0]} -> {value[1]}")
        elif key == "diff":
            lines.append(f"uncommitted changes: {value['a']['changed_lines']} -> {value['b']['changed_lines']} lines")
        elif key == "configuration":
            lines.append("configuration changed: " + ", ".join(value[:limit]))
    return "; ".join(lines[:20])


@check("repro.compare", params=CompareParams)
async def compare(snap: Snapshot, params: CompareParams) -> list[Finding]:
    """What differs between two runs: commit, uncommitted diff, requirements (per package), Python, container,
    hyperparameters, input datasets and models.

    With `task_a`/`task_b`: one info finding with the structured diff (it is a report you asked for, not an
    alert); an unknown id is an error naming it. Without ids: every recent failed task cloned from a task of
    the same type that completed is compared with that original; a warning when the environment (commit, diff,
    requirements, Python, container) changed, since that is the likely cause, else info.
    """
    secrets = snap.server.secrets()
    if params.task_a and params.task_b:
        docs: dict[str, Task] = {}
        for tid in (params.task_a, params.task_b):
            try:
                docs[tid] = await snap.task(tid)
            except NotFoundError:
                return [
                    Finding(
                        check="repro.compare",
                        severity="error",
                        title=f"repro.compare: task {tid} does not exist",
                        detail=f"The server has no task with id {tid} (parameter "
                        f"{'task_a' if tid == params.task_a else 'task_b'}).",
                        subject=Subject(kind="task", id=tid, name=""),
                        remediation="Copy the task id from the web UI (task info panel, or the id in the task's URL) "
                        "and pass it as task_a / task_b.",
                    )
                ]
        a, b = docs[params.task_a], docs[params.task_b]
        return [_compare_finding(snap, a, b, compare_tasks(a, b, params.ignore_hyperparams), "info", secrets)]

    failed = await snap.tasks(status=["failed"], changed_within=timedelta(seconds=params.window))
    failed = [t for t in failed if t.raw.get("parent") and "dataset" not in t.system_tags]
    if not failed:
        return []
    parents = await snap.tasks_by_id({str(t.raw["parent"]) for t in failed})
    pairs: list[tuple[Task, Task]] = []
    for task in failed:
        parent = parents.get(str(task.raw["parent"]))
        if parent is None or parent.status not in ("completed", "published", "closed") or parent.type != task.type:
            continue
        pairs.append((parent, task))
    pairs = pairs[: params.max_pairs]
    gate = asyncio.Semaphore(8)

    async def full(task_id: str) -> Task:
        async with gate:
            return await snap.task(task_id)

    findings: list[Finding] = []
    for parent, task in pairs:
        a, b = await asyncio.gather(full(parent.id), full(task.id))
        diff = compare_tasks(a, b, params.ignore_hyperparams)
        env_changed = any(k in diff for k in ENV_PARTS)
        findings.append(_compare_finding(snap, a, b, diff, "warning" if env_changed else "info", secrets, auto=True))
    return findings


def _compare_finding(
    snap: Snapshot,
    a: Task,
    b: Task,
    diff: dict[str, Any],
    severity: Severity,
    secrets: list[str],
    *,
    auto: bool = False,
) -> Finding:
    env = [k for k in ENV_PARTS if k in diff]
    summary = _summary(diff)
    if auto:
        title = (
            f"Failed task '{b.name}' differs from the completed run it was cloned from: {summary}"
            if diff
            else f"Failed task '{b.name}' has the same code, environment and parameters as its completed original"
        )
    else:
        title = f"Task '{b.name}' vs '{a.name}': " + (f"differs in {summary}" if diff else "no differences")
    if env:
        remediation = (
            "The environment changed between the runs (" + ", ".join(env) + "): that is the first suspect. Clone "
            "the working run to re-create its environment, or align the changed parts (requirements, commit, "
            "container) in a clone of the new one."
        )
    elif diff:
        remediation = (
            "Only parameters/inputs differ: compare metrics and outputs of the two runs in the web UI "
            "(select both, Compare) to see the effect."
        )
    else:
        remediation = (
            "Nothing recorded differs: the difference is outside the task (data behind a URL, hardware, "
            "non-determinism). Reproduce the run to see whether the result repeats."
        )
    links = [snap.task_link(b), snap.task_link(a)]
    web = snap.web
    links.append(f"{web}/projects/*/experiments/compare-experiments;ids={a.id},{b.id}/details")
    return Finding(
        check="repro.compare",
        severity=severity,
        title=redact(title, secrets),
        detail=redact(_detail(diff), secrets),
        subject=Subject(kind="task", id=b.id, name=b.name),
        evidence=redact_evidence(
            {
                "task_a": {"id": a.id, "name": a.name, "status": a.status},
                "task_b": {"id": b.id, "name": b.name, "status": b.status},
                "differs_in": list(diff),
                "environment_differs": bool(env),
                "diff": diff,
            },
            secrets,
        ),
        related=redact_subjects([Subject(kind="task", id=a.id, name=a.name)], secrets),
        links=links,
        remediation=remediation,
        actions=["clone", "reproduce"] if auto else [],
    )
