"""The store under faults: locked by another process, and the disk full. A clear error (or a short wait), never a
half-written run, and the store works again once the fault is gone."""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bot.sim.server import SimServer
from bot.store import Store, StoreError
from tests.unit._incidents_support import backlog, dead_worker, orphaned_task, run

REPO = Path(__file__).resolve().parents[2]


def integrity(path: Path) -> str:
    conn = sqlite3.connect(str(path))
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def count(path: Path, table: str) -> int:
    conn = sqlite3.connect(str(path))
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


class LockHolder:
    """Another process holding the store's write lock (`BEGIN IMMEDIATE`) until told to let go."""

    def __init__(self, path: Path) -> None:
        code = (
            "import sqlite3, sys\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "c.execute('CREATE TABLE IF NOT EXISTS other_tool (x)')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
            "c.execute('COMMIT')\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def holder_factory() -> Iterator[list[LockHolder]]:
    holders: list[LockHolder] = []
    yield holders
    for h in holders:
        h.kill()


def test_store_locked_by_another_process_fails_clearly_or_waits_and_loses_nothing(
    tmp_path: Path, holder_factory: list[LockHolder]
) -> None:
    db = tmp_path / "store.db"
    store = Store(db)
    store.record_run(run(dead_worker()))

    holder = LockHolder(db)
    holder_factory.append(holder)
    # A writer that gives up quickly: a clear error naming the cause and the fix, not a traceback.
    impatient = Store(db, busy_timeout_s=0.2)
    with pytest.raises(StoreError) as err:
        impatient.record_run(run(orphaned_task()))
    message = str(err.value)
    assert str(db) in message and "locked" in message and "another process" in message
    # Readers are not blocked by a writer (WAL): history still answers.
    assert [r["check_id"] for r in impatient.history()] == ["agents.stale"]

    # A writer with the default patience waits for the lock and succeeds once it is released.
    done: list[int] = []
    waiting = threading.Thread(target=lambda: done.append(store.record_run(run(backlog()))))
    waiting.start()
    holder.release()
    waiting.join(timeout=15)
    assert done, "the write did not complete after the lock was released"

    # Nothing half-written: the refused run left no rows, the others are complete; the file is sound.
    assert integrity(db) == "ok"
    assert count(db, "runs") == 2
    assert sorted(r["check_id"] for r in store.history()) == ["agents.stale", "queues.backlog"]
    impatient.record_run(run(orphaned_task()))  # and the impatient writer works again
    assert count(db, "runs") == 3
    impatient.close()
    store.close()


def _cli(args: list[str], env: dict[str, str], limit_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        # The disk is "full" for this process: files cannot grow past limit_bytes (EFBIG instead of being killed).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        assert limit_bytes is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60, preexec_fn=limit if limit_bytes is not None else None)


def test_disk_full_keeps_the_report_and_leaves_the_store_intact(sim_factory: object, tmp_path: Path) -> None:
    sim: SimServer = sim_factory("incident-zoo")  # type: ignore[operator]
    db = tmp_path / "state" / "store.db"
    config = tmp_path / "bot.yaml"
    config.write_text(yaml.safe_dump({"store": str(db)}))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "SLACK_"))}, **sim.env(),
           "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "CLEARML_CHATOPS_CONFIG": str(config)}
    args = ["run", "health", "agents", "queues", "--playbooks-dir", str(REPO / "playbooks")]

    first = _cli(args, env)
    assert first.returncode == 1, first.stderr
    runs, findings = count(db, "runs"), count(db, "findings")
    assert runs == 1 and findings > 5

    # The disk fills up: SQLite's shared-memory index (32 KiB) still fits, the write-ahead log does not.
    full = _cli(args, env, limit_bytes=33_000)
    assert full.returncode == 1, full.stderr  # the findings decide the exit code, not the store
    assert "agents.stale" in full.stdout or "Worker" in full.stdout  # the report is printed in full
    assert "run not saved to the store" in full.stderr
    assert "disk is full or failing" in full.stderr and "Traceback" not in full.stderr
    assert integrity(db) == "ok"
    assert (count(db, "runs"), count(db, "findings")) == (runs, findings)  # nothing lost, nothing half-written

    # Space again: the next run is recorded without any repair.
    again = _cli(args, env)
    assert again.returncode == 1 and "not saved" not in again.stderr
    # the same findings again, less agents.missing's one-time "still learning" note of the first run (issue 13)
    assert count(db, "runs") == 2 and count(db, "findings") == 2 * findings - 1
    assert integrity(db) == "ok"
