"""How a reproduction run compares with its original: status, duration, last metrics (with tolerances) and
environment differences.

Environment differences come from `compare_tasks` (bot/diagnosis/compare.py), as the repro.compare check's, so the
button and the check report the same fields the same way; this module adds what only makes sense once the
re-run has finished: outcome, run time and metric values.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from bot.clearml.models import Task, parse_time
from bot.diagnosis.compare import compare_tasks
from bot.durations import format_duration


class Tolerances(BaseModel):
    metric_rel: float = Field(default=0.05, ge=0, description="relative tolerance for last metric values")
    metric_abs: float = Field(default=1e-9, ge=0, description="absolute tolerance (metrics near zero)")
    duration_rel: float = Field(default=0.5, ge=0, description="relative tolerance for run time")
    metrics: list[str] = Field(default_factory=list, description="'metric/variant' globs to compare (default all)")


@dataclass
class MetricDiff:
    metric: str
    variant: str
    original: float | None
    clone: float | None
    ok: bool

    @property
    def name(self) -> str:
        return f"{self.metric}/{self.variant}"

    def describe(self) -> str:
        if self.clone is None:
            return f"{self.name}: {self.original:g} -> missing"
        if self.original is None:
            return f"{self.name}: new in the re-run ({self.clone:g})"
        delta = self.clone - self.original
        rel = f", {delta / abs(self.original):+.1%}" if self.original else ""
        return f"{self.name}: {self.original:g} -> {self.clone:g} ({delta:+g}{rel})"


@dataclass
class Comparison:
    original_id: str
    clone_id: str
    original_status: str
    clone_status: str
    original_duration_s: float | None
    clone_duration_s: float | None
    duration_ok: bool
    metrics: list[MetricDiff] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)  # one line per differing field

    @property
    def status_same(self) -> bool:
        return self.original_status == self.clone_status

    @property
    def metrics_ok(self) -> bool:
        return all(m.ok for m in self.metrics)

    @property
    def verdict(self) -> str:
        """reproduced | differs (finished but outside tolerances) | failed (the re-run did not complete)."""
        if self.clone_status not in ("completed", "published") and self.original_status in ("completed", "published"):
            return "failed"
        if self.status_same and self.metrics_ok and self.duration_ok:
            return "reproduced"
        return "differs"

    def lines(self) -> list[str]:
        out = [f"status: {self.original_status} -> {self.clone_status}" + ("" if self.status_same else "  ✗")]
        dur = f"duration: {format_duration(self.original_duration_s)} -> {format_duration(self.clone_duration_s)}"
        out.append(dur + ("" if self.duration_ok else "  ✗ (outside tolerance)"))
        bad = [m for m in self.metrics if not m.ok]
        if self.metrics:
            out.append(f"metrics: {len(self.metrics) - len(bad)} of {len(self.metrics)} within tolerance")
            out += [f"  ✗ {m.describe()}" for m in bad[:10]]
        else:
            out.append("metrics: none reported by the original")
        if self.environment:
            out.append("environment differences:")
            out += [f"  {line}" for line in self.environment[:15]]
        else:
            out.append("environment: same code, packages, Python, container and parameters")
        return out


def _metric_values(task: dict[str, Any]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for variants in (task.get("last_metrics") or {}).values():
        if not isinstance(variants, dict):
            continue
        for entry in variants.values():
            if not isinstance(entry, dict) or "value" not in entry:
                continue
            try:
                value = float(entry["value"])
            except (TypeError, ValueError):
                continue
            out[(str(entry.get("metric", "")), str(entry.get("variant", "")))] = value
    return out


def duration_s(task: dict[str, Any]) -> float | None:
    active = task.get("active_duration")
    if isinstance(active, int | float) and active > 0:
        return float(active)
    started, ended = parse_time(task.get("started")), parse_time(task.get("completed"))
    if started and ended:
        return max(0.0, (ended - started).total_seconds())
    return None


def _close(a: float, b: float, tol: Tolerances) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= max(tol.metric_abs, tol.metric_rel * max(abs(a), abs(b)))


def environment_lines(original: dict[str, Any], clone: dict[str, Any]) -> list[str]:
    diff = compare_tasks(Task.from_api(original), Task.from_api(clone))
    lines: list[str] = []
    for part, value in diff.items():
        if isinstance(value, dict) and {"added", "removed", "changed"} & set(value):
            for name, pair in value.get("changed", {}).items():
                lines.append(f"{part} {name}: {pair[0]} -> {pair[1]}")
            for name, spec in value.get("added", {}).items():
                lines.append(f"{part} {name}: added ({spec})")
            for name, spec in value.get("removed", {}).items():
                lines.append(f"{part} {name}: removed (was {spec})")
        elif part == "diff":
            lines.append(f"uncommitted changes: {value['a']['changed_lines']} -> {value['b']['changed_lines']} lines")
        elif isinstance(value, dict):
            lines += [f"{part}.{name}: {pair[0]} -> {pair[1]}" for name, pair in value.items()]
        elif isinstance(value, list) and len(value) == 2 and part == "python":
            lines.append(f"python: {value[0]} -> {value[1]}")
        else:
            lines.append(f"{part}: {', '.join(map(str, value)) if isinstance(value, list) else value}")
    a_worker, b_worker = original.get("last_worker"), clone.get("last_worker")
    if a_worker and b_worker and a_worker != b_worker:
        lines.append(f"worker: {a_worker} -> {b_worker}")
    return lines


def compare_runs(original: dict[str, Any], clone: dict[str, Any], tol: Tolerances | None = None) -> Comparison:
    tol = tol or Tolerances()
    a_metrics, b_metrics = _metric_values(original), _metric_values(clone)
    diffs: list[MetricDiff] = []
    for key in sorted(a_metrics):
        name = f"{key[0]}/{key[1]}"
        if tol.metrics and not any(fnmatch.fnmatchcase(name, p) for p in tol.metrics):
            continue
        a, b = a_metrics[key], b_metrics.get(key)
        diffs.append(MetricDiff(key[0], key[1], a, b, ok=b is not None and _close(a, b, tol)))
    da, db = duration_s(original), duration_s(clone)
    duration_ok = da is None or db is None or abs(da - db) <= tol.duration_rel * max(da, db, 1.0)
    return Comparison(
        original_id=str(original.get("id", "")),
        clone_id=str(clone.get("id", "")),
        original_status=str(original.get("status", "unknown")),
        clone_status=str(clone.get("status", "unknown")),
        original_duration_s=da,
        clone_duration_s=db,
        duration_ok=duration_ok,
        metrics=diffs,
        environment=environment_lines(original, clone),
    )
