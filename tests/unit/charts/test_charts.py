"""Charts: the data read from the store (per-run gauges, failure-cause findings), the PNGs (size, dimensions,
readable labels), the alt text (the numbers), the terminal's `digest --png` and `history --metric`, and the
fallback without matplotlib.

`day_of_runs` records a day of hourly runs through the real path (Store.record_run + record_run_metrics) with a
backlog that builds in the afternoon, a pool losing agents, and failed tasks of three causes; the README's chart
(docs/digest-queues.png) is drawn from it: `python -m tests.unit.charts.test_charts docs/`."""

from __future__ import annotations

import struct
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.charts import render
from bot.charts.series import (
    alt_text,
    backlog_chart,
    digest_charts,
    failure_chart,
    pool_chart,
    queue_chart,
    sparkline,
)
from bot.engine.findings import Finding, Subject
from bot.engine.runner import CheckRun, RunResult
from bot.incidents.digest import ensure_schema, record_run_metrics
from bot.store import Store

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
SECRET = "s3cr3t-key-0123456789"


def _failure(cause: str, tasks: list[tuple[str, datetime]]) -> Finding:
    return Finding(
        check="repro.failure_causes", severity="warning", title=f"{len(tasks)} failed tasks: {cause}",
        subject=Subject(kind="task", id=tasks[0][0], name="t"),
        evidence={"cause": cause, "count": len(tasks),
                  "tasks": [{"id": t, "status_changed": at.isoformat()} for t, at in tasks]},
    )


def day_of_runs(store: Store, now: datetime = NOW, hours: int = 24, *, secret_pool: bool = True) -> None:
    """Hourly runs over `hours` (see the module doc); `secret_pool`: a pool whose name holds a secret."""
    ensure_schema(store)
    failures: dict[str, list[tuple[str, datetime]]] = {"cuda_oom": [], "missing_module": [], "user_code": []}
    for h in range(hours, -1, -1):
        at = now - timedelta(hours=h)
        hour = at.hour
        backlog = max(0, 14 - abs(hour - 15) * 2) if 9 <= hour <= 21 else 1
        gpu_alive = 4 if h > 8 else 2 if h > 3 else 1
        if h % 5 == 0:
            failures["cuda_oom"].append((f"oom{h:02d}", at - timedelta(minutes=20)))
        if h % 7 == 0:
            failures["missing_module"].append((f"mod{h:02d}", at - timedelta(minutes=10)))
        if h % 3 == 0:
            failures["user_code"].append((f"usr{h:02d}", at - timedelta(minutes=5)))
        findings = [_failure(c, list(reversed(t))[:20]) for c, t in failures.items() if t]
        metrics = {
            "agents.alive": float(gpu_alive + 6), "agents.registered": 11.0,
            "agents.alive[gpu-train]": float(gpu_alive), "agents.alive[cpu-preprocess]": 4.0,
            "agents.alive[gpu-debug]": 2.0,
            "queues.pending": float(backlog + 2), "queues.wait_median_s": float(backlog * 300),
            "queues.length[gpu-train]": float(backlog), "queues.wait_s[gpu-train]": float(backlog * 600),
        }
        if secret_pool:
            metrics[f"agents.alive[{SECRET}-pool]"] = 1.0
        result = RunResult(playbooks=["health"], server="prod", server_url="http://sim", started_at=at,
                           duration_s=0.4, api_calls=5, findings=findings,
                           checks=[CheckRun("repro.failure_causes", "repro.failure_causes", "health", "failed", 0.1)],
                           metrics=metrics)
        run_id = store.record_run(result)
        record_run_metrics(store, result, run_id)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store.db")
    day_of_runs(s)
    return s


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_chart_data_comes_from_the_recorded_runs(store: Store) -> None:
    start = NOW - timedelta(hours=24)
    queues = queue_chart(store, start, NOW)
    pending, wait = queues.panels
    assert pending.unit == "count" and wait.unit == "seconds"
    assert len(pending.lines[0].points) == 25 and max(pending.lines[0].values) == 16.0
    pools = pool_chart(store, start, NOW, secrets=[SECRET])
    labels = [s.label for s in pools.panels[0].lines]
    assert labels[:2] == ["cpu-preprocess", "gpu-train"]  # the highest peaks first (then by name)
    assert all(SECRET not in label for label in labels)  # names from ClearML are redacted before drawing
    gpu = next(s for s in pools.panels[0].lines if s.label == "gpu-train")
    assert gpu.values[0] == 4.0 and gpu.values[-1] == 1.0
    # failures: each task once, on the day it failed, per cause
    failures = failure_chart(store, start, NOW)
    panel = failures.panels[0]
    assert [d.isoformat() for d in panel.days] == ["2026-12-06", "2026-12-07"]
    totals = {label: sum(v) for label, v in panel.stacks}
    assert totals == {"user_code": 8.0, "cuda_oom": 5.0, "missing_module": 4.0}
    # one queue's backlog (for an incident thread)
    backlog = backlog_chart(store, "gpu-train", NOW - timedelta(hours=6), NOW)
    assert [len(p.lines[0].points) for p in backlog.panels] == [7, 7]


def test_alt_text_carries_the_numbers(store: Store) -> None:
    spec = queue_chart(store, NOW - timedelta(hours=24), NOW)
    text = alt_text(spec)
    assert "25 runs" in text and "max 16" in text and "last 4" in text and "max 1h 10m" in text
    assert len(text) <= 1000
    failures = alt_text(failure_chart(store, NOW - timedelta(hours=24), NOW))
    assert "user_code: 8 failed tasks" in failures


def test_pngs_are_small_readable_and_800_px_wide(store: Store) -> None:
    charts = render.render(digest_charts(store, NOW - timedelta(hours=24), NOW))
    assert [c.filename for c in charts] == ["queues.png", "pools.png", "failures.png"]
    for chart in charts:
        width, height = png_size(chart.png)
        assert width == 800 and 300 <= height <= 700, (chart.filename, width, height)
        assert 5_000 < len(chart.png) < 250_000
        assert chart.alt_text and chart.title


def test_a_dollar_in_a_queue_name_is_drawn_as_typed(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    ensure_schema(s)
    for h in range(3):
        result = RunResult(playbooks=["p"], server="prod", server_url="u", started_at=NOW - timedelta(hours=h),
                           duration_s=0.1, api_calls=1, findings=[], checks=[],
                           metrics={"agents.alive[cost$a$b]": 1.0 + h})
        record_run_metrics(s, result, None)
    [chart] = render.render([pool_chart(s, NOW - timedelta(hours=3), NOW)])
    assert png_size(chart.png)[0] == 800


def test_without_matplotlib_there_are_no_charts(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "available", lambda: False)
    assert render.render(digest_charts(store, NOW - timedelta(hours=24), NOW)) == []


def test_charts_refuse_to_be_drawn_on_an_event_loop(store: Store) -> None:
    import asyncio

    specs = digest_charts(store, NOW - timedelta(hours=24), NOW)

    async def on_the_loop() -> None:
        render.render(specs)

    with pytest.raises(RuntimeError, match="off the event loop"):
        asyncio.run(on_the_loop())

    async def handed_off() -> list[render.RenderedChart]:
        return await asyncio.to_thread(render.render, specs)

    assert len(asyncio.run(handed_off())) == 3


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([3, 3]) == "▄▄" and sparkline([]) == ""


def _config(tmp_path: Path, store_path: Path) -> Path:
    path = tmp_path / "bot.yaml"
    path.write_text(f"store: {store_path}\n")
    return path


def test_digest_png_writes_the_charts_and_history_prints_a_sparkline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    store_path = tmp_path / "state" / "store.db"
    s = Store(store_path)
    now = datetime.now(UTC).replace(microsecond=0)
    day_of_runs(s, now)
    s.close()
    config = _config(tmp_path, store_path)
    out_dir = tmp_path / "charts"
    assert main(["digest", "--config", str(config), "--since", "24h", "--png", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "Digest" in out and "runs" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["failures.png", "pools.png", "queues.png"]
    assert png_size((out_dir / "queues.png").read_bytes())[0] == 800
    assert f"wrote {out_dir / 'pools.png'}" in out and "gpu-train" in out

    assert main(["history", "--config", str(config), "--metric", "agents.alive[gpu-train]", "--since", "25h"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("prod  agents.alive[gpu-train]  ") and "first 4 · min 1 · max 4 · last 1" in line
    assert any(ch in line for ch in "▁█")
    assert main(["history", "--config", str(config), "--metric", "queues.wait_median_s", "--since", "25h"]) == 0
    assert "max 1h 10m" in capsys.readouterr().out
    assert main(["history", "--config", str(config), "--metric", "no.such", "--since", "1h"]) == 0
    assert "No values of no.such" in capsys.readouterr().out

    monkeypatch.setattr(render, "available", lambda: False)
    assert main(["digest", "--config", str(config), "--png", str(out_dir)]) == 2
    assert "pip install 'clearml-chatops[charts]'" in capsys.readouterr().err


if __name__ == "__main__":  # the README's chart: python -m tests.unit.charts.test_charts docs/
    import tempfile

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    with tempfile.TemporaryDirectory() as tmp:
        st = Store(Path(tmp) / "store.db")
        day_of_runs(st, secret_pool=False)
        for c in render.render(digest_charts(st, NOW - timedelta(hours=24), NOW)):
            (target / f"digest-{c.filename}").write_bytes(c.png)
            print(target / f"digest-{c.filename}", c.alt_text)
