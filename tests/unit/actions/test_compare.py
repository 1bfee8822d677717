"""Comparing a re-run with its original: status, duration, metrics with tolerances, environment."""

from __future__ import annotations

from typing import Any

from bot.actions.compare import Tolerances, compare_runs, duration_s


def task(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "a" * 32, "name": "train", "status": "completed", "active_duration": 1000,
        "last_metrics": {"h1": {"h2": {"metric": "loss", "variant": "val", "value": 0.5},
                                "h3": {"metric": "acc", "variant": "val", "value": 0.9}}},
        "script": {"repository": "r", "version_num": "c1", "requirements": {"pip": "torch==2.3.0\n"}},
        "last_worker": "w:0",
    }
    doc.update(kw)
    return doc


def test_identical_runs_reproduce() -> None:
    result = compare_runs(task(), task(id="b" * 32))
    assert result.verdict == "reproduced" and result.environment == []
    assert "metrics: 2 of 2 within tolerance" in result.lines()


def test_metric_tolerances_relative_absolute_and_filters() -> None:
    drift = task(last_metrics={"h1": {"h2": {"metric": "loss", "variant": "val", "value": 0.52},
                                      "h3": {"metric": "acc", "variant": "val", "value": 0.9}}})
    assert compare_runs(task(), drift, Tolerances(metric_rel=0.05)).verdict == "reproduced"
    strict = compare_runs(task(), drift, Tolerances(metric_rel=0.01))
    assert strict.verdict == "differs" and [m.name for m in strict.metrics if not m.ok] == ["loss/val"]
    assert "loss/val: 0.5 -> 0.52 (+0.02, +4.0%)" in "\n".join(strict.lines())
    only_acc = compare_runs(task(), drift, Tolerances(metric_rel=0.01, metrics=["acc/*"]))
    assert only_acc.verdict == "reproduced" and len(only_acc.metrics) == 1
    zero = task(last_metrics={"h": {"v": {"metric": "err", "variant": "x", "value": 0.0}}})
    tiny = task(last_metrics={"h": {"v": {"metric": "err", "variant": "x", "value": 1e-12}}})
    assert compare_runs(zero, tiny).verdict == "reproduced"  # absolute tolerance near zero
    missing = compare_runs(task(), task(last_metrics={}))
    assert missing.verdict == "differs" and "loss/val: 0.5 -> missing" in "\n".join(missing.lines())


def test_status_duration_and_environment() -> None:
    failed = compare_runs(task(), task(status="failed", active_duration=30))
    assert failed.verdict == "failed" and not failed.duration_ok
    slow = compare_runs(task(), task(active_duration=2500), Tolerances(duration_rel=0.5))
    assert slow.verdict == "differs" and "outside tolerance" in "\n".join(slow.lines())
    moved = task(script={"repository": "r", "version_num": "c2", "requirements": {"pip": "torch==2.4.0\n"}},
                 last_worker="w:9")
    env = compare_runs(task(), moved).environment
    assert any("version_num" in line and "c1 -> c2" in line for line in env)
    assert any("torch" in line for line in env) and "worker: w:0 -> w:9" in env
    assert duration_s({"started": "2026-01-01T00:00:00+00:00", "completed": "2026-01-01T00:10:00+00:00"}) == 600
    assert duration_s({}) is None
