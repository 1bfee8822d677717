"""Runs and findings survive in the SQLite store and come back through `history`."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.engine.findings import Finding, Subject
from bot.engine.runner import CheckRun, RunResult
from bot.store import Store, StoreError


def result(at: datetime, *findings: Finding) -> RunResult:
    return RunResult(
        playbooks=["health"], server="prod", server_url="http://h:8008", started_at=at, duration_s=0.5,
        api_calls=4, findings=list(findings),
        checks=[CheckRun("agents.stale", "agents.stale", "health", "failed", 0.1)],
    )


def finding(check: str, severity: str, worker: str) -> Finding:
    return Finding(check=check, severity=severity, title=f"{worker} is {severity}",  # type: ignore[arg-type]
                   subject=Subject(kind="worker", id=worker))


def test_history_filters_by_check_and_time(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "store.db")
    now = datetime.now(UTC)
    store.record_run(result(now - timedelta(days=3), finding("agents.stale", "warning", "old-box")))
    run_id = store.record_run(
        result(now, finding("agents.stale", "critical", "gpu-1"), finding("queues.backlog", "warning", "q"))
    )
    assert run_id == 2
    recent = store.history(since=now - timedelta(hours=24))
    assert sorted(r["subject_id"] for r in recent) == ["gpu-1", "q"]
    stale = store.history(check="agents.*")
    assert [r["subject_id"] for r in stale] == ["gpu-1", "old-box"]
    assert store.runs()[0]["worst"] == "critical"
    store.close()
    # WAL mode: the journal lives beside the database so readers never block the writer
    conn = sqlite3.connect(tmp_path / "state" / "store.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_unwritable_store_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="Set `store:` in the config file"):
        Store(blocker / "store.db")
