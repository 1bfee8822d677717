"""Read-only look-ups behind the chat subcommands (status, agents, queues, task, diff, dataset).

Each look-up is computed from a `Snapshot` (so it costs the same few API calls as a check, fetched once) and from
the check registry (so thresholds and diagnoses agree with the playbooks), and returns plain dataclasses. Nothing
here knows about Slack: the renderers in `bot/slack/messages` turn these into messages, and a terminal front end
could print them.

User mistakes (an unknown task id, a link to another server, a dataset id that is a task) raise `LookupInputError`
with a message that says what was wrong and what to type instead.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.clearml.errors import ClearMLError, NotFoundError
from bot.config import ConfigError, ServerSettings, Settings, resolve_server
from bot.diagnosis.environment import GAP_SEVERITY
from bot.diagnosis.environment import environment_gaps as gaps_of
from bot.diagnosis.failure_causes import CAUSES
from bot.diagnosis.failure_causes import classify_failure as classify
from bot.diagnosis.refs import short
from bot.durations import format_duration
from bot.engine.findings import SEVERITY_RANK, Finding, is_problem
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.registry import REGISTRY, load_builtin_checks
from bot.engine.snapshot import Snapshot
from bot.errors import LookupInputError

# clearml-server's non-responsive tasks watchdog: running tasks without an update for 2 h are stopped; the task
# look-up says so from 75 % of that (agents.watchdog_risk's default share)
WATCHDOG_THRESHOLD_S = 7200.0
WATCHDOG_NOTICE_S = 0.75 * WATCHDOG_THRESHOLD_S

if TYPE_CHECKING:
    from bot.clearml.client import ClearMLClient
    from bot.clearml.models import Task, Worker
    from bot.engine.runner import RunResult
    from bot.engine.window import ReadWindow

DEFAULT_STALE_AFTER = 120.0
DEFAULT_DEAD_AFTER = 480.0
# The cheap, read-only checks behind `status` when no `health` playbook is installed.
STATUS_CHECKS = (
    "server.reachable",
    "agents.stale",
    "agents.orphaned_tasks",
    "agents.unserved_queues",
    "queues.backlog",
)


# ------------------------------------------------------------------------------------------------------------
# Servers and references


def configured_servers(settings: Settings) -> list[ServerSettings]:
    """Every server the bot can talk to (one resolved from the environment when the config names none)."""
    names: list[str | None] = list(settings.servers) or [None]
    out = []
    for name in names:
        try:
            out.append(resolve_server(settings, name))
        except ConfigError:
            continue  # a half-configured server cannot be the one a link points at
    return out


def pick_server(settings: Settings, name: str | None) -> ServerSettings:
    """The server to ask: `name` (from an argument or a link) or the default one; a clear error otherwise."""
    try:
        return resolve_server(settings, name)
    except ConfigError as exc:
        raise LookupInputError(str(exc)) from None


# ------------------------------------------------------------------------------------------------------------
# A snapshot with cost accounting


@dataclass
class Meta:
    """What a look-up cost: shown in the message's context line."""

    server: str = ""
    server_url: str = ""
    web_url: str = ""
    duration_s: float = 0.0
    api_calls: int = 0
    data_age_s: float | None = None  # set when some of the data came from the shared read window


@asynccontextmanager
async def open_snapshot(
    settings: Settings,
    server: ServerSettings,
    meta: Meta,
    *,
    client: ClearMLClient | None = None,
    window: ReadWindow | None = None,
    asked_at: float | None = None,
) -> AsyncIterator[Snapshot]:
    """A fresh snapshot (and client, closed afterwards) whose API calls and time are written to `meta`. With a
    `window`, reads are shared with other commands and runs (data fetched at most the window before `asked_at`)."""
    from bot.clearml.client import ClearMLClient

    own = client is None
    client = client or ClearMLClient(server, logins=window.logins if window is not None else None)
    start, calls = time.perf_counter(), client.stats.calls
    meta.server, meta.server_url, meta.web_url = server.name, server.api_url, server.web_url
    snap = Snapshot(client, server, settings, window=window, asked_at=asked_at)
    try:
        yield snap
    finally:
        meta.duration_s = time.perf_counter() - start
        meta.api_calls = client.stats.calls - calls
        meta.data_age_s = snap.data_age_s
        if own:
            await client.aclose()


# ------------------------------------------------------------------------------------------------------------
# Thresholds shared with the playbooks


def agent_thresholds(playbooks: Sequence[Playbook] = ()) -> tuple[float, float]:
    """(stale_after, dead_after) in seconds: from the first playbook that configures `agents.stale`, else the
    check's defaults, so `/clearml agents` calls an agent stale exactly when the playbooks would."""
    load_builtin_checks()
    spec = REGISTRY.get("agents.stale")
    for pb in playbooks:
        for entry in pb.checks:
            if entry.check == "agents.stale" and spec is not None:
                params = spec.params_model.model_validate(entry.params)
                return _thresholds_of(params)
    if spec is not None:
        return _thresholds_of(spec.params_model())
    return DEFAULT_STALE_AFTER, DEFAULT_DEAD_AFTER


def _thresholds_of(params: Any) -> tuple[float, float]:
    stale = float(getattr(params, "stale_after", DEFAULT_STALE_AFTER))
    dead = float(getattr(params, "dead_after", DEFAULT_DEAD_AFTER))
    return stale, max(dead, stale)


# ------------------------------------------------------------------------------------------------------------
# agents


@dataclass
class WorkerState:
    id: str
    state: str  # alive | stale | dead
    age_s: float | None
    task_id: str | None
    task_name: str
    queues: list[str]
    link: str
    task_link: str | None = None


@dataclass
class AgentsView:
    meta: Meta
    pattern: str | None
    stale_after: float
    dead_after: float
    workers: list[WorkerState]
    total: int  # registered workers before the pattern

    def count(self, state: str) -> int:
        return sum(1 for w in self.workers if w.state == state)


def worker_state(snap: Snapshot, worker: Worker, stale_after: float, dead_after: float) -> WorkerState:
    age = snap.age_s(worker.last_seen)
    if age is None or age > dead_after:
        state = "dead"
    elif age > stale_after:
        state = "stale"
    else:
        state = "alive"
    return WorkerState(
        id=worker.id,
        state=state,
        age_s=age,
        task_id=worker.task_id,
        task_name=worker.task_name,
        queues=[q.name or q.id for q in worker.queues],
        link=snap.worker_link(worker.id),
        task_link=snap.task_link(worker.task_id) if worker.task_id else None,
    )


def _matches(worker_id: str, pattern: str | None) -> bool:
    if not pattern:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatch(worker_id.lower(), pattern.lower())
    return pattern.lower() in worker_id.lower()  # a plain word: substring, the way people search


_STATE_ORDER = {"dead": 0, "stale": 1, "alive": 2}


async def agents(
    snap: Snapshot, meta: Meta, pattern: str | None = None, playbooks: Sequence[Playbook] = ()
) -> AgentsView:
    stale_after, dead_after = agent_thresholds(playbooks)
    workers = await snap.workers()
    states = [worker_state(snap, w, stale_after, dead_after) for w in workers if _matches(w.id, pattern)]
    states.sort(key=lambda w: (_STATE_ORDER[w.state], w.id))
    return AgentsView(meta, pattern, stale_after, dead_after, states, len(workers))


# ------------------------------------------------------------------------------------------------------------
# queues


@dataclass
class QueueState:
    id: str
    name: str
    length: int
    oldest_wait_s: float | None
    workers_alive: int
    workers_total: int
    link: str


@dataclass
class QueuesView:
    meta: Meta
    queues: list[QueueState]


async def queues(snap: Snapshot, meta: Meta, playbooks: Sequence[Playbook] = ()) -> QueuesView:
    stale_after, _ = agent_thresholds(playbooks)
    all_queues = await snap.queues()
    workers = await snap.workers()
    # who serves what, in one pass over the workers (not once per queue: 300 queues x 2,000 workers at L)
    by_ref: dict[tuple[str, str], dict[int, Worker]] = {}
    for w in workers:
        for ref in w.queues:
            by_ref.setdefault(("id", ref.id), {})[id(w)] = w
            by_ref.setdefault(("name", ref.name), {})[id(w)] = w
    out = []
    for q in all_queues:
        serving = list({**by_ref.get(("id", q.id), {}), **by_ref.get(("name", q.name), {})}.values())
        alive = [w for w in serving if (age := snap.age_s(w.last_seen)) is not None and age <= stale_after]
        out.append(
            QueueState(
                id=q.id,
                name=q.name,
                length=len(q.entries),
                oldest_wait_s=snap.age_s(q.oldest_added()),
                workers_alive=len(alive),
                workers_total=len(serving),
                link=snap.queue_link(q.id),
            )
        )
    out.sort(key=lambda q: (-q.length, -(q.oldest_wait_s or 0), q.name))
    return QueuesView(meta, out)


# ------------------------------------------------------------------------------------------------------------
# status


@dataclass
class FailingCheck:
    check: str
    severity: str
    count: int
    example: str


@dataclass
class StatusView:
    meta: Meta
    reachable: bool
    error: str = ""
    latency_ms: float | None = None
    version: str = ""
    api_version: str = ""
    agents: dict[str, int] = field(default_factory=dict)  # alive/stale/dead -> count
    busy: int = 0
    backlog: list[QueueState] = field(default_factory=list)  # queues with waiting entries
    failing: list[FailingCheck] = field(default_factory=list)
    playbook: str = ""
    result: RunResult | None = None

    @property
    def worst(self) -> str:
        """The overall state: critical when the server is unreachable, else the worst failing check."""
        if not self.reachable:
            return "critical"
        if not self.failing:
            return "ok"
        return max(self.failing, key=lambda f: SEVERITY_RANK[f.severity]).severity


def status_playbook(playbooks: Sequence[Playbook]) -> Playbook:
    """The team's `health` playbook when installed (its thresholds are the ones they chose), else the cheap
    read-only checks of the library with their defaults."""
    for pb in playbooks:
        if pb.name == "health":
            return pb
    load_builtin_checks()
    entries = [CheckEntry(check=c) for c in STATUS_CHECKS if c in REGISTRY]
    return Playbook(
        name="status", description="built-in overview", checks=entries or [CheckEntry(check="server.reachable")]
    )


async def status(snap: Snapshot, meta: Meta, settings: Settings, playbooks: Sequence[Playbook] = ()) -> StatusView:
    """Server reachability, agent states, queues with backlog, and which checks of the health playbook fail."""
    from bot.engine.runner import run_playbooks

    view = StatusView(meta=meta, reachable=True)
    try:
        ping = await snap.ping()
        view.latency_ms = ping.get("latency_ms")
        info = await snap.server_info()
        view.version = str(info.get("version") or "")
        view.api_version = str(info.get("api_version") or "")
    except ClearMLError as exc:
        view.reachable, view.error = False, exc.describe()
        return view
    pb = status_playbook(playbooks)
    view.playbook = pb.name
    # One snapshot for the checks and the counts below: workers and queues are fetched once.
    result = await run_playbooks([pb], settings, snap.server, snapshot=snap, trigger="slack")
    view.result = result
    try:
        agents_view = await agents(snap, meta, None, playbooks)
        queues_view = await queues(snap, meta, playbooks)
    except ClearMLError as exc:
        view.error = exc.describe()
    else:
        view.agents = {s: agents_view.count(s) for s in ("alive", "stale", "dead")}
        view.busy = sum(1 for w in agents_view.workers if w.task_id and w.state == "alive")
        view.backlog = [q for q in queues_view.queues if q.length > 0]
    groups: dict[str, list[Finding]] = {}
    for f in result.findings:
        if is_problem(f.severity):
            groups.setdefault(f.check, []).append(f)
    failing = []
    for check_id, fs in groups.items():
        worst = max(fs, key=lambda f: f.rank)
        failing.append(FailingCheck(check_id, worst.severity, len(fs), worst.title))
    view.failing = sorted(failing, key=lambda c: (-SEVERITY_RANK[c.severity], c.check))
    return view


# ------------------------------------------------------------------------------------------------------------
# task


@dataclass
class FailureCause:
    cause: str  # a repro.failure_causes cause id (missing_module, cuda_oom, agent_killed, ...)
    title: str
    advice: str
    lines: list[str]  # the matching status/log lines (redacted at rendering)
    actions: list[str] = field(default_factory=list)  # the buttons that fit this cause (clone, requeue, ...)


@dataclass
class EnvGap:
    what: str  # a repro.environment gap id (no_requirements, unpinned_requirements, no_commit, ...)
    detail: str = ""
    severity: str = "info"


def classify_failure(status_reason: str, status_message: str, log_lines: Sequence[str]) -> FailureCause | None:
    """The failure cause as `repro.failure_causes` classifies it (same patterns, same advice)."""
    cause_id, hits = classify(list(log_lines), status_reason, status_message)
    if cause_id == "unknown":
        return None
    cause = next((c for c in CAUSES if c.id == cause_id), None)
    title = cause.title if cause is not None else cause_id.replace("_", " ")
    advice = cause.remediation if cause is not None else ""
    actions = list(cause.actions) if cause is not None else []
    return FailureCause(cause_id, title, advice, [h.strip()[:300] for h in hits[-3:]], actions)


def environment_gaps(task: Task) -> list[EnvGap]:
    """What the task did not capture that a faithful rerun needs, as `repro.environment` sees it."""
    out = []
    for name, detail in gaps_of(task).items():
        if isinstance(detail, list):
            text = ", ".join(str(d) for d in detail[:5]) + (" …" if len(detail) > 5 else "")
        else:
            text = str(detail)
        out.append(EnvGap(name, text, GAP_SEVERITY.get(name, "info")))
    return out


@dataclass
class TaskDiagnosis:
    meta: Meta
    id: str
    name: str
    status: str
    type: str
    project: str
    user: str
    status_reason: str
    status_message: str
    link: str
    last_update_age_s: float | None = None
    started_age_s: float | None = None
    worker: WorkerState | None = None
    worker_id: str = ""
    worker_gone: bool = False  # last_worker no longer registered
    queue: str = ""
    queue_position: int | None = None  # 1 = next
    queue_length: int | None = None
    queue_link: str | None = None
    queue_workers_alive: int | None = None
    failure: FailureCause | None = None
    log_error: str = ""
    env_gaps: list[EnvGap] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def get_task(snap: Snapshot, task_id: str, *, kind: str = "task") -> Task:
    try:
        return await snap.task(task_id)
    except NotFoundError as exc:
        raise LookupInputError(
            f"There is no {kind} `{task_id}` on server {snap.server.name} (ClearML answered "
            f"{exc.code}/{exc.subcode}: {short(exc.message, 80)}). Check the id, or paste the {kind}'s link from "
            f"the web UI: `/clearml {kind} <id or link>`."
        ) from None


async def task(snap: Snapshot, meta: Meta, task_id: str, playbooks: Sequence[Playbook] = ()) -> TaskDiagnosis:
    """Why is this task in its state, and what to do about it."""

    t = await get_task(snap, task_id)
    stale_after, dead_after = agent_thresholds(playbooks)
    diag = TaskDiagnosis(
        meta=meta,
        id=t.id or task_id,
        name=t.name,
        status=t.status,
        type=t.type,
        project=t.project,
        user=t.user,
        status_reason=t.status_reason,
        status_message=t.status_message,
        link=snap.task_link(t),
        last_update_age_s=snap.age_s(t.last_update),
        started_age_s=snap.age_s(t.started),
    )
    try:
        projects = await snap.projects()
        diag.project = projects.get(t.project, t.project)
    except ClearMLError:
        pass
    workers = await snap.workers()
    queue_list = await snap.queues()
    queue_id = str(t.get("execution.queue") or "")
    diag.worker_id = t.last_worker
    if t.last_worker:
        worker = next((w for w in workers if w.id == t.last_worker), None)
        if worker is None:
            diag.worker_gone = True
        else:
            diag.worker = worker_state(snap, worker, stale_after, dead_after)
    for q in queue_list:
        ids = [e.task_id for e in q.entries]
        if diag.id in ids:
            queue_id = q.id
            diag.queue_position, diag.queue_length = ids.index(diag.id) + 1, len(ids)
        if q.id == queue_id:
            diag.queue, diag.queue_link = q.name, snap.queue_link(q.id)
            serving = [w for w in workers if any(r.id == q.id for r in w.queues)]
            diag.queue_workers_alive = sum(
                1 for w in serving if (age := snap.age_s(w.last_seen)) is not None and age <= stale_after
            )
    if t.status in ("failed", "stopped"):
        # the cause is in the status texts or near the end of the console log
        try:
            log = await snap.task_log(diag.id, 100)
        except ClearMLError as exc:
            log, diag.log_error = [], exc.describe()
        diag.failure = classify_failure(t.status_reason, t.status_message, log)
    diag.env_gaps = environment_gaps(t)
    diag.actions, diag.notes = _suggest(diag, dead_after)
    return diag


def _suggest(d: TaskDiagnosis, dead_after: float = DEFAULT_DEAD_AFTER) -> tuple[list[str], list[str]]:
    """Suggested action ids (the finding contract's names) and a sentence for each situation."""
    actions: list[str] = []
    notes: list[str] = []
    worker_lost = d.worker_gone or (d.worker is not None and d.worker.state == "dead")
    if d.status == "in_progress":
        if worker_lost:
            actions += ["requeue", "abort"]
            notes.append(f"Its agent {d.worker_id} is gone: the run is orphaned. Requeue it (or abort it).")
        elif d.worker is not None and d.worker.task_id not in (None, d.id):
            actions += ["requeue", "abort"]
            notes.append(f"Its agent {d.worker_id} has moved on to another task: this run is orphaned.")
        elif d.worker is not None and d.worker.state == "stale":
            # silent, not yet dead: a busy or briefly disconnected agent comes back; a dead one does not
            silent = format_duration(d.worker.age_s or 0)
            notes.append(
                f"Its agent {d.worker_id} has not reported for {silent}: it may be hung or its machine gone. It is "
                f"presumed dead after {format_duration(dead_after)} of silence; then requeue the run (or abort it)."
            )
        else:
            notes.append("It is running; its agent is alive.")
        silent = d.last_update_age_s
        if silent is not None and silent >= WATCHDOG_NOTICE_S and not worker_lost:
            # the server's non-responsive watchdog (agents.watchdog_risk): stopped after 2 h without an update
            left = max(0.0, WATCHDOG_THRESHOLD_S - silent)
            notes.append(
                f"No update for {format_duration(silent)}: the server stops running tasks after 2 h without one "
                f"(\"Forced stop (non-responsive)\"), this one in about {format_duration(left)} or at its next "
                "15-minute check. If it is working, make it report (a log line or scalar); abort it if it hangs."
            )
            if "abort" not in actions:
                actions.append("abort")
    elif d.status == "queued":
        actions.append("prioritize")
        if d.queue_workers_alive == 0:
            notes.append(f"No live agent serves queue {d.queue or '?'}: nothing will pick this task up.")
        elif d.queue_position:
            notes.append(f"It is number {d.queue_position} of {d.queue_length} in queue {d.queue}.")
    elif d.status in ("failed", "stopped"):
        # the cause's buttons first (a new image or requirements -> clone; another host -> requeue), then the rest
        fitting = d.failure.actions if d.failure is not None else []
        actions += list(dict.fromkeys([*fitting, "requeue", "clone"]))
    elif d.status in ("completed", "published", "closed"):
        actions += ["reproduce", "clone"]
        if d.env_gaps:
            notes.append("A rerun may not reproduce it: the environment capture has gaps (below).")
    elif d.status == "created":
        notes.append("It is a draft: enqueue it from the web UI or clone it.")
    return actions, notes


# ------------------------------------------------------------------------------------------------------------
# diff (repro.compare)


@dataclass
class TaskBrief:
    id: str
    name: str
    status: str
    link: str


@dataclass
class DiffView:
    meta: Meta
    a: TaskBrief
    b: TaskBrief
    findings: list[Finding]
    differences: list[tuple[str, str, str]] = field(default_factory=list)  # (aspect, a, b), from the evidence


def _compare_params(task_a: str, task_b: str) -> dict[str, Any]:
    """repro.compare's parameters for two given tasks (`task_a` is the reference run)."""
    return {"task_a": task_a, "task_b": task_b}


async def diff(snap: Snapshot, meta: Meta, task_a: str, task_b: str) -> DiffView:
    from bot.engine.runner import run_playbooks

    if task_a == task_b:
        raise LookupInputError("Those are the same task twice: give two different task ids to compare.")
    a, b = await get_task(snap, task_a), await get_task(snap, task_b)
    load_builtin_checks()
    if "repro.compare" not in REGISTRY:
        raise LookupInputError("This bot's check library has no `repro.compare` check, so it cannot diff tasks.")
    pb = Playbook(name="diff", checks=[CheckEntry(check="repro.compare", params=_compare_params(a.id, b.id))])
    result = await run_playbooks([pb], snap.settings or Settings(), snap.server, snapshot=snap, trigger="slack")
    view = DiffView(
        meta=meta,
        a=TaskBrief(a.id, a.name, a.status, snap.task_link(a)),
        b=TaskBrief(b.id, b.name, b.status, snap.task_link(b)),
        findings=result.findings,
    )
    for f in result.findings:
        view.differences.extend(_differences(f.evidence))
    return view


def _differences(evidence: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(aspect, value in A, value in B) rows from repro.compare's structured `evidence["diff"]`."""
    out: list[tuple[str, str, str]] = []
    diff = evidence.get("diff")
    if not isinstance(diff, dict):
        return out
    for part, value in diff.items():
        if part in ("commit", "container") and isinstance(value, dict):
            for key, pair in value.items():
                out.append((f"{part}.{key}", *_pair(pair)))
        elif part == "python":
            out.append(("python", *_pair(value)))
        elif part == "diff" and isinstance(value, dict):
            a, b = value.get("a") or {}, value.get("b") or {}
            out.append(
                ("uncommitted changes", f"{a.get('changed_lines', 0)} lines", f"{b.get('changed_lines', 0)} lines")
            )
        elif isinstance(value, dict) and {"added", "removed", "changed"} & set(value):
            for name, pair in (value.get("changed") or {}).items():
                out.append((f"{part} {name}", *_pair(pair)))
            for name, spec in (value.get("added") or {}).items():
                out.append((f"{part} {name}", "(absent)", _brief(spec)))
            for name, spec in (value.get("removed") or {}).items():
                out.append((f"{part} {name}", _brief(spec), "(absent)"))
        elif isinstance(value, list):
            out.append((part, "changed: " + _brief(value), ""))
        else:
            out.append((part, _brief(value), ""))
    return out


def _pair(pair: Any) -> tuple[str, str]:
    if isinstance(pair, list | tuple) and len(pair) == 2:
        return _brief(pair[0]), _brief(pair[1])
    return _brief(pair), ""


def _brief(value: Any, limit: int = 200) -> str:
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={v}" for k, v in value.items())
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------------------------
# dataset


@dataclass
class DatasetView:
    meta: Meta
    id: str
    name: str
    project: str
    version: str
    status: str
    link: str
    file_count: int | None = None
    total_size: int | None = None
    last_update_age_s: float | None = None
    parents: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # datasets.incomplete / datasets.lineage for this one
    can_verify: bool = False  # datasets.integrity is available for a hash check

    @property
    def complete(self) -> bool:
        """No warning or critical finding (a check that could not run is not evidence either way)."""
        return not any(is_problem(f.severity) and f.severity != "error" for f in self.findings)

    @property
    def unchecked(self) -> bool:
        """Some dataset check could not run, so `complete` is not the whole story."""
        return any(f.severity == "error" for f in self.findings)


def _dataset_params(check_id: str, dataset_id: str) -> dict[str, Any]:
    """Restrict a dataset check to one dataset when its params allow it (else it scans all; we filter after)."""
    spec = REGISTRY[check_id]
    fields = spec.params_model.model_fields
    for name in ("datasets", "ids", "dataset_ids"):
        if name in fields:
            return {name: [dataset_id]}
    return {}


def integrity_params(dataset_id: str, verify_hashes: bool = True) -> dict[str, Any]:
    """`datasets.integrity` parameters that check one dataset (and re-hash its files when asked)."""
    params = _dataset_params("datasets.integrity", dataset_id)
    fields = REGISTRY["datasets.integrity"].params_model.model_fields
    if verify_hashes and "verify" in fields:
        params["verify"] = "hash"
    return params


def is_dataset(t: Task) -> bool:
    return "dataset" in t.system_tags or (t.type == "data_processing" and "dataset" in (t.tags or []))


async def dataset(snap: Snapshot, meta: Meta, dataset_id: str) -> DatasetView:
    from bot.engine.runner import run_playbooks

    t = await get_task(snap, dataset_id, kind="dataset")
    if not is_dataset(t):
        raise LookupInputError(
            f"`{dataset_id}` is a task ({t.name}), not a dataset version. "
            f"For a task, type `/clearml task {dataset_id}`."
        )
    runtime = t.get("runtime") or {}
    parents: list[str] = []
    parent = t.get("parent")
    if parent:
        parents.append(str(parent))
    view = DatasetView(
        meta=meta,
        id=t.id or dataset_id,
        name=t.name,
        project=t.project,
        version=str(runtime.get("version") or ""),
        status=t.status,
        link=snap.dataset_link(t),
        file_count=_int(runtime.get("ds_file_count")),
        total_size=_int(runtime.get("ds_total_size")),
        last_update_age_s=snap.age_s(t.last_update),
        parents=parents,
    )
    try:
        projects = await snap.projects()
        name = projects.get(t.project, "")
        # hidden dataset projects are "<project>/.datasets/<name>": show "<project>"
        view.project = name.split("/.datasets/")[0] if name else t.project
        if "/.datasets/" in name:
            view.name = name.rsplit("/", 1)[-1] or view.name
    except ClearMLError:  # names are cosmetic; the ids are shown anyway
        pass
    load_builtin_checks()
    entries = [
        CheckEntry(check=c, params=_dataset_params(c, view.id))
        for c in ("datasets.incomplete", "datasets.lineage")
        if c in REGISTRY
    ]
    if entries:
        result = await run_playbooks(
            [Playbook(name="dataset", checks=entries)],
            snap.settings or Settings(),
            snap.server,
            snapshot=snap,
            trigger="slack",
        )
        view.findings = [
            f
            for f in result.findings
            if f.subject.id == view.id or f.severity == "error" or any(r.id == view.id for r in f.related)
        ]
    view.can_verify = "datasets.integrity" in REGISTRY
    return view


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
