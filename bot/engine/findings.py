"""The finding contract: what every check returns and every renderer consumes.

Field names are a public contract (`run --format json`, the store, Slack rendering): keep them stable.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, model_validator

Severity = Literal["ok", "info", "warning", "critical", "error"]
SubjectKind = Literal["server", "worker", "queue", "task", "dataset", "storage"]
ActionId = Literal["clone", "requeue", "abort", "rotate", "reproduce", "prioritize"]
# The one list of action ids (the actions package, its CLI and the authorizer read this).
ACTION_IDS: tuple[ActionId, ...] = get_args(ActionId)

# `error` means "the check itself could not run": worse than a warning (someone must look), but the
# fleet is not known to be broken, so it ranks below critical.
SEVERITY_RANK: dict[str, int] = {"ok": 0, "info": 1, "warning": 2, "error": 3, "critical": 4}
SEVERITIES_WORST_FIRST: tuple[Severity, ...] = ("critical", "error", "warning", "info", "ok")
AREAS: tuple[str, ...] = ("server", "agents", "queues", "storage", "repro", "datasets")


def is_problem(severity: str) -> bool:
    """Warning or worse: what makes `run` exit 1 and what opens an incident."""
    return SEVERITY_RANK[severity] >= SEVERITY_RANK["warning"]


class Subject(BaseModel):
    """What a finding is about. `id` is the ClearML id (or the URL for a server or storage target)."""

    kind: SubjectKind
    id: str = Field(min_length=1)
    name: str = ""


class SuppressedFinding(BaseModel):
    """A finding folded into its root: enough to name it, not the whole finding."""

    check: str
    severity: Severity
    title: str
    subject: Subject
    fingerprint: str


SUPPRESSED_LISTED = 50


def fingerprint_for(check: str, subject: Subject, key: str = "") -> str:
    """Stable across runs for the same check and subject (and optional discriminator)."""
    raw = f"{check}|{subject.kind}|{subject.id}|{key}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


class Finding(BaseModel):
    check: str
    severity: Severity
    title: str = Field(min_length=1)
    detail: str = ""
    subject: Subject
    fingerprint: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    links: list[str] = Field(default_factory=list)
    remediation: str = ""
    actions: list[ActionId] = Field(default_factory=list)
    # Correlation (bot/engine/correlation.py) sets this to the fingerprint of the root finding this one is a
    # consequence of, so reports and incidents can fold consequences under their root cause.
    caused_by: str | None = None
    # On a root: the fingerprints of the findings reported with `caused_by` = this one (consequences that keep a
    # finding of their own because they need their own action, e.g. a dead agent's orphaned task).
    consequences: list[str] = Field(default_factory=list)
    # Set by the check: the other subjects this finding is tied to or a consequence of (the agent a task was
    # orphaned by, the queue a stuck task waits in, a dataset version's parent). Incidents group a finding with
    # the likely cause these name, and a silence naming one of them matches this finding too.
    related: list[Subject] = Field(default_factory=list)
    # On a root: the findings folded into it that only restate it (not reported on their own), the first
    # SUPPRESSED_LISTED of them, worst first; `suppressed_total` counts them all.
    suppressed: list[SuppressedFinding] = Field(default_factory=list)
    suppressed_total: int = 0
    # Set when the check read data another command or run had fetched (the shared read window,
    # bot/engine/window.py): how old the oldest of it was, in seconds, when the check finished.
    data_age_s: float | None = None

    @model_validator(mode="after")
    def _default_fingerprint(self) -> Finding:
        if not self.fingerprint:
            self.fingerprint = fingerprint_for(self.check, self.subject)
        return self

    @property
    def area(self) -> str:
        return self.check.split(".", 1)[0]

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]


def worst_severity(findings: list[Finding]) -> Severity:
    if not findings:
        return "ok"
    return max(findings, key=lambda f: f.rank).severity


def consequences_by_root(findings: list[Finding]) -> dict[str, list[Finding]]:
    """Root fingerprint -> the findings reported with `caused_by` pointing at it (roots present in `findings`
    only), so a report can show consequences under their root instead of as findings of their own."""
    present = {f.fingerprint for f in findings}
    out: dict[str, list[Finding]] = {}
    for f in findings:
        if f.caused_by and f.caused_by in present and f.caused_by != f.fingerprint:
            out.setdefault(f.caused_by, []).append(f)
    return out


def folded_summary(finding: Finding) -> str:
    """"12 findings folded in (queues.stuck_queued ×12)" for a root with suppressed consequences, else "". When
    only the first SUPPRESSED_LISTED are listed, it names the checks without per-check counts (the root's detail
    has them)."""
    n = finding.suppressed_total
    if not n:
        return ""
    counts: dict[str, int] = {}
    for s in finding.suppressed:
        counts[s.check] = counts.get(s.check, 0) + 1
    plural = "s" if n != 1 else ""
    if n > len(finding.suppressed):
        listed = len(finding.suppressed)
        return f"{n} finding{plural} folded in (from {', '.join(sorted(counts))}; the first {listed} listed)"
    return f"{n} finding{plural} folded in ({', '.join(f'{check} ×{c}' for check, c in sorted(counts.items()))})"
