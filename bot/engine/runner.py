"""Runs playbooks against one ClearML server: every check concurrently over one shared snapshot.

A check that raises becomes an `error` finding and the run goes on; the run has a deadline, and checks
still running at the deadline are reported as `timeout`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import ValidationError

from bot import metrics
from bot.clearml.errors import ClearMLError, ServerUnavailableError
from bot.engine.correlation import correlate
from bot.engine.findings import SEVERITY_RANK, Finding, Severity, Subject, is_problem, worst_severity
from bot.engine.registry import REGISTRY, load_builtin_checks
from bot.engine.snapshot import Snapshot
from bot.redact import TextScan, redact, redact_tree, scan_texts, tree_texts

log = logging.getLogger(__name__)
T = TypeVar("T")

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from bot.config import ServerSettings, Settings
    from bot.engine.playbook import CheckEntry, Playbook
    from bot.store import AgentVersionSeen, PoolCount, PoolObservation


@dataclass
class CheckRun:
    id: str
    name: str
    playbook: str
    status: str  # ok | failed | error | timeout | skipped
    duration_s: float
    findings: int = 0
    error: str | None = None


@dataclass
class RunResult:
    playbooks: list[str]
    server: str
    server_url: str
    started_at: datetime
    duration_s: float
    api_calls: int
    findings: list[Finding]
    checks: list[CheckRun]
    bytes_received: int = 0
    calls_by_endpoint: dict[str, int] = field(default_factory=dict)
    trigger: str = "cli"
    metrics: dict[str, float] = field(default_factory=dict)  # fleet gauges for digests (agents.alive, ...)
    # The pools registered in this run (when a check listed the workers): the store keeps them for the learned
    # baseline of agents.missing (bot/engine/baseline.py).
    fleet_pools: dict[str, PoolCount] | None = None
    # clearml-agent versions per worker server.compatibility read or confirmed in this run (None: it did not run):
    # the store keeps them so the next run reads only the logs of workers it does not know yet.
    agent_versions: dict[str, AgentVersionSeen] | None = None
    # age (s) of the oldest data the run was served from the shared read window; None: all fetched for this run
    data_age_s: float | None = None
    # kind -> ids the server listed in this run (workers, queues): a subject missing here vanished; not in to_json
    listed: dict[str, set[str]] = field(default_factory=dict)

    @property
    def worst(self) -> Severity:
        """The worst severity among the findings ("ok" when none): the store keeps it per run."""
        return worst_severity(self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if is_problem(f.severity)]

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def to_json(self) -> dict[str, Any]:
        """The `run --format json` contract."""
        return {
            "playbooks": self.playbooks,
            "server": self.server,
            "server_url": self.server_url,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "api_calls": self.api_calls,
            "bytes_received": self.bytes_received,
            "metrics": self.metrics,
            **({"data_age_s": round(self.data_age_s, 1)} if self.data_age_s is not None else {}),
            "findings": [f.model_dump(mode="json") for f in self.findings],
            "checks": [
                {
                    "id": c.id,
                    "name": c.name,
                    "playbook": c.playbook,
                    "status": c.status,
                    "duration_s": round(c.duration_s, 3),
                    "findings": c.findings,
                    **({"error": c.error} if c.error else {}),
                }
                for c in self.checks
            ],
        }


def _apply_overrides(findings: list[Finding], entry: CheckEntry) -> list[Finding]:
    """A playbook may cap a check's severity (`severity: info` turns its warnings into notes)."""
    if not entry.severity:
        return findings
    cap = SEVERITY_RANK[entry.severity]
    out = []
    for f in findings:
        if f.severity != "error" and f.rank > cap:
            f = f.model_copy(update={"severity": entry.severity})
        out.append(f)
    return out


# A run may reuse shared data at most this fraction of its checks' shortest age threshold old: a worker silent for
# 114 s must not look 120 s silent (stale) because the worker list was 6 s old.
REUSE_FRACTION = 0.05


def reuse_limit_s(playbooks: list[Playbook]) -> float | None:
    """How old shared data may be for these playbooks' checks (None: no check compares ages, the window decides)."""
    load_builtin_checks()
    limits: list[float] = []
    for pb in playbooks:
        for entry in pb.checks:
            spec = REGISTRY.get(entry.check)
            if spec is None or not spec.params_model.age_thresholds:
                continue
            try:
                params = spec.params_model.model_validate(entry.params)
            except ValidationError:
                continue
            for name in spec.params_model.age_thresholds:
                value = getattr(params, name, None)
                if isinstance(value, int | float) and value > 0:
                    limits.append(float(value) * REUSE_FRACTION)
    return min(limits) if limits else None


def error_finding(
    check_id: str, server: ServerSettings, message: str, *, evidence: dict[str, Any] | None = None
) -> Finding:
    return Finding(
        check=check_id,
        severity="error",
        title=f"Check {check_id} could not run",
        detail=message,
        subject=Subject(kind="server", id=server.api_url, name=server.name),
        fingerprint="",
        evidence=evidence or {},
        remediation="See the detail for the cause; the other checks in this run still reported.",
    ).model_copy(update={"fingerprint": f"{check_id}|error|{server.api_url}"})


async def _resolved(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return cast(T, await value)
    return cast(T, value)


async def run_playbooks(
    playbooks: list[Playbook],
    settings: Settings,
    server: ServerSettings,
    *,
    deadline_s: float | None = None,
    trigger: str = "cli",
    snapshot: Snapshot | None = None,
    correlation: bool = True,
    fleet_history: Callable[[float], list[PoolObservation] | Awaitable[list[PoolObservation]]] | None = None,
    agent_versions: Callable[[], dict[str, AgentVersionSeen] | Awaitable[dict[str, AgentVersionSeen]]] | None = None,
) -> RunResult:
    """Run every check of `playbooks` against `server`; never raises for ClearML or check failures.

    `correlation=False` skips root-cause correlation (bot/engine/correlation.py): every finding as its check
    reported it, which the signal benchmark uses to measure what correlation saves.

    `fleet_history(window_s)`: the recorded pool observations of this server (`Store.pool_history`), loaded only
    when a check learns from them (agents.missing with `expected: auto`) and handed to it on the snapshot; None
    when the caller keeps no history (the check then stays silent rather than claim a fresh install).

    `agent_versions()`: the clearml-agent versions per worker recorded by earlier runs (`Store.agent_versions`),
    loaded only when server.compatibility runs; without it, that check reads logs within its per-run cap only.

    Either may return an awaitable: a caller on a shared event loop reads the store in a thread instead of blocking
    the loop (the Slack work pool's `pool.io`)."""
    load_builtin_checks()
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    deadline = deadline_s if deadline_s is not None else settings.run_deadline_s
    own_client = snapshot is None
    if snapshot is None:
        from bot.clearml.client import ClearMLClient

        client = ClearMLClient(server)
    else:
        client = snapshot.client
    snap = snapshot or Snapshot(client, server, settings)
    snap.limit_age(reuse_limit_s(playbooks))
    secrets = server.secrets()
    calls_before = client.stats.calls
    bytes_before = client.stats.bytes_received

    entries = [(pb, entry) for pb in playbooks for entry in pb.checks]
    if fleet_history is not None and snap.fleet_history is None:
        window = _baseline_window(entries)
        if window is not None:
            try:
                snap.fleet_history = await _resolved(fleet_history(window))
            except Exception as exc:  # the store is down: the baseline is unknown, the run goes on
                snap.fleet_history = None
                log.warning("fleet history not available for agents.missing: %s", exc)
    if agent_versions is not None and snap.known_agent_versions is None and any(
        entry.check == "server.compatibility" for _pb, entry in entries
    ):
        try:
            snap.known_agent_versions = await _resolved(agent_versions())
        except Exception as exc:  # the store is down: versions are read from logs again, within the cap
            log.warning("recorded agent versions not available for server.compatibility: %s", exc)
    runs: list[CheckRun] = []
    findings: list[Finding] = []
    limits: dict[str, int] = {}  # check id -> max_findings, applied after correlation folded consequences

    async def run_one(pb: Playbook, entry: CheckEntry) -> tuple[list[Finding], CheckRun]:
        spec = REGISTRY[entry.check]
        start = time.perf_counter()
        name = entry.name or entry.check
        reads = snap.track_reads()  # this task's own context: the data this check read from the window
        try:
            params = spec.params_model.model_validate(entry.params)
            result = await spec.func(snap, params)
            result = _apply_overrides(list(result), entry)
            limits[entry.check] = max(limits.get(entry.check, 0), params.max_findings)
            age = snap.age_of(reads)
            if age is not None:
                result = [f.model_copy(update={"data_age_s": round(age, 1)}) for f in result]
            status = "failed" if any(is_problem(f.severity) for f in result) else "ok"
            return result, CheckRun(entry.check, name, pb.name, status, time.perf_counter() - start, len(result))
        except ValidationError as exc:  # validated at load time; kept for hand-built playbooks
            msg = f"bad parameters: {exc.errors()[0]['msg']}"
        except ServerUnavailableError as exc:
            msg = f"ClearML server unavailable ({exc.reason}): {exc.describe()}"
        except ClearMLError as exc:
            msg = f"ClearML answered an error: {exc.describe()}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unexpected response shape: report, keep going
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            msg = f"{type(exc).__name__}: {exc} (at {tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})"
        msg = redact(msg, secrets)
        finding = error_finding(entry.check, server, msg)
        return [finding], CheckRun(entry.check, name, pb.name, "error", time.perf_counter() - start, 1, msg)

    tasks = [asyncio.ensure_future(run_one(pb, entry)) for pb, entry in entries]
    try:
        if tasks:
            try:
                done, pending = await asyncio.wait(tasks, timeout=deadline)
            except asyncio.CancelledError:  # the run itself is cancelled (shutdown): its checks must not run on
                for task in tasks:
                    task.cancel()
                raise
        else:
            done, pending = set(), set()
        for (pb, entry), task in zip(entries, tasks, strict=True):
            if task in done:
                got, run = task.result()
                findings.extend(got)
                runs.append(run)
            else:
                task.cancel()
                msg = f"did not finish within the run deadline of {deadline:g}s"
                findings.append(error_finding(entry.check, server, msg))
                runs.append(CheckRun(entry.check, entry.name or entry.check, pb.name, "timeout", deadline, 1, msg))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        if own_client:
            await client.aclose()

    findings = _dedupe(findings)
    if correlation:
        registered = snap.metrics.get("agents.registered")
        findings = correlate(
            findings,
            api_url=server.api_url,
            files_url=server.files_url,
            registered_agents=int(registered) if registered is not None else None,
        )
    findings = _limit_all(findings, limits, server)
    # The one boundary every finding passes before any output (CLI text/JSON, store, Slack, incidents): whatever a
    # check forgot, secret shapes and secret-named values (hyperparameters, env vars) are blanked here (after the
    # correlation, which matches subjects by their raw ids; fingerprints are kept).
    scan = scan_texts(text for f in findings for text in finding_texts(f))  # one look at every text, see redact.py
    findings = [redact_finding(f, secrets, scan=scan) for f in findings]
    for run in runs:  # what each check reports after correlation and limits
        run.findings = sum(1 for f in findings if f.check == run.id)
    findings.sort(key=lambda f: (-f.rank, f.check, f.subject.name or f.subject.id))
    result = RunResult(
        playbooks=[pb.name for pb in playbooks],
        server=server.name,
        server_url=server.api_url,
        started_at=started_at,
        duration_s=time.perf_counter() - t0,
        api_calls=client.stats.calls - calls_before,
        bytes_received=client.stats.bytes_received - bytes_before,
        calls_by_endpoint=dict(client.stats.by_endpoint),
        findings=findings,
        checks=runs,
        trigger=trigger,
        metrics=dict(snap.metrics),
        fleet_pools=snap.observed_pools(),
        agent_versions=dict(snap.seen_agent_versions) or None,
        data_age_s=snap.data_age_s,
        listed=snap.listed(),
    )
    metrics.record_run(result)
    return result


def _baseline_window(entries: list[tuple[Playbook, CheckEntry]]) -> float | None:
    """The longest history window an `expected: auto` agents.missing entry asks for, or None if none does."""
    windows = []
    for _pb, entry in entries:
        if entry.check != "agents.missing":
            continue
        params = REGISTRY[entry.check].params_model.model_validate(entry.params)
        if getattr(params, "expected", None) == "auto":
            windows.append(float(params.baseline_window))  # type: ignore[attr-defined]
    return max(windows) if windows else None


def finding_texts(finding: Finding) -> Iterator[str]:
    """Every text of `finding` that `redact_finding` redacts."""
    yield from (finding.title, finding.detail, finding.remediation, finding.subject.name, finding.subject.id)
    for related in finding.related:
        yield from (related.name, related.id)
    yield from finding.links
    yield from tree_texts(finding.evidence)


def redact_finding(finding: Finding, secrets: list[str], *, scan: TextScan | None = None) -> Finding:
    """`finding` with every text a person reads redacted (the fingerprint, computed from the raw subject, is kept so
    incidents still match). `scan`: `scan_texts` over texts including all of `finding_texts(finding)` (faster)."""

    def subject(s: Subject) -> Subject:
        return s.model_copy(
            update={"name": redact(s.name, secrets, scan=scan), "id": redact(s.id, secrets, scan=scan) or "?"}
        )

    return finding.model_copy(
        update={
            "title": redact(finding.title, secrets, scan=scan) or finding.title,
            "detail": redact(finding.detail, secrets, scan=scan),
            "remediation": redact(finding.remediation, secrets, scan=scan),
            "subject": subject(finding.subject),
            "related": [subject(s) for s in finding.related],
            "evidence": redact_tree(finding.evidence, secrets, keep=frozenset(), scan=scan),
            "links": [redact(link, secrets, scan=scan) for link in finding.links],
        }
    )


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """Two playbooks of one run may hold the same check: report each fingerprint once, at its worst."""
    best: dict[str, Finding] = {}
    for finding in findings:
        seen = best.get(finding.fingerprint)
        if seen is None or finding.rank > seen.rank:
            best[finding.fingerprint] = finding
    return list(best.values())


def _limit_all(findings: list[Finding], limits: dict[str, int], server: ServerSettings) -> list[Finding]:
    by_check: dict[str, list[Finding]] = {}
    for f in findings:
        by_check.setdefault(f.check, []).append(f)
    out: list[Finding] = []
    for check_id, items in by_check.items():
        limit = limits.get(check_id)
        out.extend(_limit(items, limit, check_id, server) if limit else items)
    return out


def _limit(findings: list[Finding], max_findings: int, check_id: str, server: ServerSettings) -> list[Finding]:
    """Keep the worst `max_findings` problems and add one summary finding with the total."""
    problems = [f for f in findings if is_problem(f.severity)]
    if len(problems) <= max_findings:
        return findings
    problems.sort(key=lambda f: -f.rank)
    kept = problems[:max_findings]
    dropped = len(problems) - len(kept)
    worst = kept[0].severity
    summary = Finding(
        check=check_id,
        severity=worst,
        title=f"{len(problems)} findings for {check_id}; showing the worst {len(kept)}",
        detail=f"{dropped} more matched and are left out of this report (max_findings={max_findings}).",
        subject=Subject(kind="server", id=server.api_url, name=server.name),
        evidence={"total": len(problems), "shown": len(kept), "omitted": dropped},
        remediation=f"Raise `max_findings` for {check_id} in the playbook to list more.",
    )
    summary = summary.model_copy(update={"fingerprint": f"{check_id}|summary|{server.api_url}"})
    return [*kept, summary]
