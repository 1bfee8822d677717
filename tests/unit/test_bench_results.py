"""`python -m bench --only X` replaces X's figures in the results file and keeps every other benchmark's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import run
from bench.report import Row


def _bench(value: float) -> Any:
    def measure(workdir: Path, *, quick: bool) -> tuple[dict[str, Any], list[Row]]:
        return {"value": value}, [Row(f"bench {value}", "a figure", value, 1.0, "baseline", "s")]

    return measure


@pytest.fixture
def two_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "BENCHMARKS", {"first": _bench(1.0), "second": _bench(2.0)})


def test_a_partial_run_keeps_the_other_benchmarks(two_benchmarks: None, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    assert run.main(["--json", str(out)]) == 0
    run.BENCHMARKS["second"] = _bench(3.0)
    assert run.main(["--only", "second", "--json", str(out)]) == 0

    document = json.loads(out.read_text())
    assert document["benchmarks"] == {"first": {"value": 1.0, "duration_s": 0.0},
                                      "second": {"value": 3.0, "duration_s": 0.0}}
    assert sorted((r["benchmark"], r["ours"]) for r in document["table"]) == [("first", 1.0), ("second", 3.0)]
    assert set(document["meta"]["runs"]) == {"first", "second"}


def test_a_full_run_replaces_the_file(two_benchmarks: None, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"meta": {}, "table": [{"benchmark": "gone"}], "benchmarks": {"gone": {}}}))
    assert run.main(["--json", str(out)]) == 0
    assert set(json.loads(out.read_text())["benchmarks"]) == {"first", "second"}
