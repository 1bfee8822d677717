"""The failure-cause catalogue (data/failure_causes.yaml) and the classifier of one failed task's log lines."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.diagnosis.storage_errors import match_storage_errors
from bot.engine.findings import ActionId, Severity


@dataclass
class Cause:
    id: str
    title: str
    patterns: list[re.Pattern[str]]
    remediation: str
    actions: list[ActionId]
    severity: Severity = "warning"
    matcher: Literal["patterns", "storage"] = "patterns"
    sources: list[str] = field(default_factory=list)


FAILURE_CAUSES_PATH = Path(__file__).parent / "data" / "failure_causes.yaml"


class _CauseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str = Field(min_length=1)
    patterns: list[str] = Field(default_factory=list)
    matcher: Literal["patterns", "storage"] = "patterns"
    remediation: str = Field(min_length=1)
    actions: list[ActionId] = Field(default_factory=list)
    severity: Literal["info", "warning"] = "warning"
    sources: list[str] = Field(default_factory=list)


def load_causes(path: Path = FAILURE_CAUSES_PATH) -> list[Cause]:
    """The failure-cause catalogue (bot/diagnosis/data/failure_causes.yaml), in match order, `unknown` last.

    A malformed entry or regular expression raises ValueError naming the cause, so a bad edit fails at import
    (in every test), never silently at run time."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    causes: list[Cause] = []
    for i, raw in enumerate(doc.get("causes") or []):
        try:
            spec = _CauseSpec.model_validate(raw)
            patterns = [re.compile(p, re.I) for p in spec.patterns]
        except (ValidationError, re.error) as exc:
            name = raw.get("id", f"#{i}") if isinstance(raw, dict) else f"#{i}"
            raise ValueError(f"{path.name}: cause {name}: {exc}") from None
        causes.append(Cause(spec.id, spec.title, patterns, " ".join(spec.remediation.split()), spec.actions,
                            spec.severity, spec.matcher, spec.sources))
    ids = [c.id for c in causes]
    if len(set(ids)) != len(ids) or not ids or ids[-1] != "unknown":
        raise ValueError(f"{path.name}: cause ids must be unique and end with `unknown`: {ids}")
    return causes


# Ordered most specific / most upstream first (see the data file): the first matching cause is the root cause.
CAUSES: list[Cause] = load_causes()
CAUSE_IDS: tuple[str, ...] = tuple(c.id for c in CAUSES)
# The ids as a type, for the `severities` parameter (tests keep it equal to the catalogue's ids).
CauseName = Literal[
    "python_not_found",
    "disk_full",
    "image_pull",
    "gpu_not_visible",
    "cuda_mismatch",
    "requirements_install",
    "git_diff",
    "repository",
    "upload_too_large",
    "storage_credentials",
    "missing_module",
    "cuda_oom",
    "storage",
    "shared_memory",
    "host_oom",
    "watchdog_stop",
    "spot_preemption",
    "agent_killed",
    "user_code",
    "unknown",
]


def classify_failure(lines: list[str], status_reason: str = "", status_message: str = "") -> tuple[str, list[str]]:
    """(cause id, the matching lines) for one failed task."""
    texts = [t for t in (status_reason, status_message) if t] + list(lines)
    for cause in CAUSES:
        if cause.matcher == "storage":
            hits = [line for line, _ in match_storage_errors(texts)]
        else:
            hits = [t for t in texts if any(p.search(t) for p in cause.patterns)]
        if hits:
            return cause.id, hits
    return "unknown", []
