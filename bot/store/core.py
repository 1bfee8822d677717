"""The embedded store (SQLite through sqlite-utils, WAL mode): its connection, and runs and their findings.

One file, safe for one writer process and concurrent readers. Every other table (incidents, audit, outbox, ...)
lives here too, so that every piece of state survives restarts in one place; bot/store/schema.py creates them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from bot.errors import BotError
from bot.store import schema
from bot.store.records import AgentVersionSeen, PoolCount, PoolObservation
from bot.store.sql import insert, transaction


def _sqlite_utils_without_numpy() -> ModuleType:
    """sqlite-utils imports numpy whenever it is installed, to map numpy scalars to column types; numpy is installed
    for the charts only, and importing it costs every process about 12 MB of resident memory and 0.1 s at start for
    values the store never holds. So sqlite-utils is imported with numpy hidden (it then takes numpy as not
    installed); numpy stays importable afterwards for the charts."""
    if "sqlite_utils" not in sys.modules and "numpy" not in sys.modules:
        sys.modules["numpy"] = None  # type: ignore[assignment]  # `import numpy` raises ImportError meanwhile
        try:
            import sqlite_utils
        finally:
            if sys.modules.get("numpy", 0) is None:
                del sys.modules["numpy"]
    import sqlite_utils

    return sqlite_utils


if TYPE_CHECKING:
    import sqlite_utils
else:
    sqlite_utils = _sqlite_utils_without_numpy()

# How long pool observations (agents.missing's learned baseline) are kept: its longest `baseline_window`.
FLEET_POOLS_KEEP_S = 30 * 86400.0
# How long a worker's recorded clearml-agent version is kept when no run confirms it (the worker is gone).
AGENT_VERSIONS_KEEP_S = 30 * 86400.0


class RunRecord(Protocol):
    """What `Store.record_run` reads of a run (bot/engine/runner.py's RunResult has it): the store imports nothing
    of the engine. `findings` hold the engine's Finding objects (check, severity, fingerprint, subject, title and
    `model_dump_json()`); `checks` have `id` and `status`."""

    playbooks: list[str]
    server: str
    server_url: str
    started_at: datetime
    duration_s: float
    api_calls: int
    trigger: str
    findings: Any
    checks: Any
    fleet_pools: dict[str, PoolCount] | None
    agent_versions: dict[str, AgentVersionSeen] | None

    @property
    def problems(self) -> Any: ...

    @property
    def worst(self) -> str: ...


class StoreError(BotError):
    """The store cannot be opened or written; the message names the path and the fix."""


def store_hint(exc: BaseException) -> str:
    """What to do about an SQLite error, for the messages people read (the error itself is terse)."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return (" (another process holds the store's write lock: a second bot or a sqlite3 shell on the same file;"
                " stop it, or give each bot its own `store:`)")
    if "full" in text or "disk i/o" in text or "no space" in text:
        return " (the disk is full or failing: free space on that volume; nothing already stored is lost)"
    if "readonly" in text or "read-only" in text:
        return " (the file or its directory is read-only for this user)"
    return ""


def _private_file(path: Path) -> None:
    """Create the store file readable by its owner only (0600: findings quote logs, the audit names people), and
    tighten a file an older version created 0644."""
    # O_EXCL: never open (and so never close) an fd on an existing store: closing any fd of a file drops this
    # process's POSIX locks on it, which would break SQLite connections already open here.
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)


class Store:
    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        """`busy_timeout_s`: how long a write waits for another process's lock before it fails (tests shorten it)."""
        self.path = Path(path)
        self._lock = threading.RLock()
        self._ensured: set[str] = set()
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _private_file(self.path)
            conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, check_same_thread=False,
                                   isolation_level=None)
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA journal_mode=WAL")
            if str(self.path) != ":memory:":  # SQLite gives -wal/-shm the database's mode; older files may be 0644
                for extra in (f"{self.path}-wal", f"{self.path}-shm"):
                    if os.path.exists(extra):
                        os.chmod(extra, 0o600)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(
                f"cannot open the store at {self.path}: {exc}{store_hint(exc)}. Set `store:` in the config file to a "
                "writable path"
            ) from None

    def ensure_table(
        self,
        name: str,
        columns: dict[str, Any],
        *,
        pk: str | tuple[str, ...],
        indexes: tuple[tuple[str, ...], ...] = (),
    ) -> sqlite_utils.db.Table:
        """Create table `name` (and its indexes) once per Store; modules that own a table call this before
        use, so the store needs no central list of every feature's tables."""
        if name not in self._ensured:
            with self._lock:
                for attempt in range(50):
                    try:
                        table = self.db.table(name)
                        if not table.exists():
                            table.create(columns, pk=pk, if_not_exists=True)
                        for columns_of_index in indexes:
                            table.create_index(list(columns_of_index), if_not_exists=True)
                        break
                    except sqlite3.OperationalError as exc:
                        # Schema changes from several connections at once can fail "locked" without waiting
                        # for the busy timeout; they are idempotent, so try again shortly.
                        if "locked" not in str(exc) or attempt == 49:
                            raise
                        time.sleep(0.05)
                self._ensured.add(name)
        return self.db.table(name)

    def _migrate(self) -> None:
        schema.create_run_tables(self.db)

    def record_run(self, result: RunRecord) -> int:
        """Persist a run and its findings atomically; returns the run id."""
        at = result.started_at.astimezone(UTC).isoformat(timespec="microseconds")
        if result.fleet_pools is not None:
            self._ensure_fleet_pools()
        if result.agent_versions:
            self._ensure_agent_versions()
        try:
            # One explicit transaction: the connection is in autocommit mode, where `with conn:` (and sqlite-utils'
            # inserts) commit each statement on its own, so a failure between the two inserts (a full disk) left
            # a run row without its findings.
            with transaction(self) as conn:
                run_id = insert(
                    conn,
                    "runs",
                    {
                        "started_at": at,
                        "duration_s": round(result.duration_s, 3),
                        "server": result.server,
                        "server_url": result.server_url,
                        "playbooks": json.dumps(result.playbooks),
                        "trigger": result.trigger,
                        "api_calls": result.api_calls,
                        "worst": result.worst,
                        "problems": len(result.problems),
                        "findings": len(result.findings),
                        "checks": json.dumps([{"id": c.id, "status": c.status} for c in result.checks]),
                    },
                )
                if result.fleet_pools is not None:  # the learned baseline of agents.missing (bot/engine/baseline.py)
                    insert(
                        conn,
                        "fleet_pools",
                        {
                            "run_id": run_id,
                            "at": at,
                            "server_url": result.server_url,
                            "pools": json.dumps(
                                {p: {"count": c.count, "queues": list(c.queues)} for p, c in result.fleet_pools.items()}
                            ),
                        },
                    )
                    # Older observations than the longest baseline window are never read again.
                    conn.execute(
                        "DELETE FROM fleet_pools WHERE at < ?",
                        [(result.started_at - timedelta(seconds=FLEET_POOLS_KEEP_S)).astimezone(UTC).isoformat(
                            timespec="microseconds")],
                    )
                if result.agent_versions:  # server.compatibility's versions per worker, for its next run
                    conn.executemany(
                        "INSERT OR REPLACE INTO agent_versions (server_url, worker, version, task_id, task_name, "
                        "seen_at) VALUES (?, ?, ?, ?, ?, ?)",
                        [(result.server_url, seen.worker, seen.version, seen.task_id, seen.task_name,
                          seen.seen_at.astimezone(UTC).isoformat(timespec="microseconds"))
                         for seen in result.agent_versions.values()],
                    )
                    conn.execute(
                        "DELETE FROM agent_versions WHERE seen_at < ?",
                        [(result.started_at - timedelta(seconds=AGENT_VERSIONS_KEEP_S)).astimezone(UTC).isoformat(
                            timespec="microseconds")],
                    )
                for f in result.findings:
                    insert(
                        conn,
                        "findings",
                        {
                            "run_id": run_id,
                            "at": at,
                            "check_id": f.check,
                            "severity": f.severity,
                            "fingerprint": f.fingerprint,
                            "subject_kind": f.subject.kind,
                            "subject_id": f.subject.id,
                            "subject_name": f.subject.name,
                            "title": f.title,
                            "finding": f.model_dump_json(),
                        },
                    )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the store at {self.path}: {exc}{store_hint(exc)}") from None
        return int(run_id)  # type: ignore[arg-type]

    def _ensure_fleet_pools(self) -> None:
        schema.ensure_fleet_pools(self)

    def _ensure_agent_versions(self) -> None:
        schema.ensure_agent_versions(self)

    def agent_versions(self, server_url: str) -> dict[str, AgentVersionSeen]:
        """The clearml-agent version last read per worker of `server_url` (server.compatibility reads only the
        logs of workers missing here, or re-registered since)."""
        try:
            self._ensure_agent_versions()
            rows = self.db.execute(
                "SELECT worker, version, task_id, task_name, seen_at FROM agent_versions WHERE server_url = ?",
                [server_url],
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store at {self.path}: {exc}{store_hint(exc)}") from None
        out: dict[str, AgentVersionSeen] = {}
        for worker, version, task_id, task_name, seen_at in rows:
            try:
                at = datetime.fromisoformat(seen_at)
            except (TypeError, ValueError):
                continue  # a damaged row: that worker's log is read again
            out[str(worker)] = AgentVersionSeen(str(worker), version or None, str(task_id or ""),
                                                str(task_name or ""), at)
        return out

    def pool_history(self, server_url: str, window_s: float, *, now: datetime | None = None) -> list[PoolObservation]:
        """The pools registered at each recorded run against `server_url` within the last `window_s`, oldest
        first: what `agents.missing` (`expected: auto`) learns the usual fleet from."""
        try:
            self._ensure_fleet_pools()
            since = ((now or datetime.now(UTC)) - timedelta(seconds=window_s)).astimezone(UTC)
            cursor = self.db.execute(
                "SELECT at, pools FROM fleet_pools WHERE server_url = ? AND at >= ? ORDER BY at",
                [server_url, since.isoformat(timespec="microseconds")],
            )
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store at {self.path}: {exc}{store_hint(exc)}") from None
        out = []
        for at, pools in rows:
            try:
                doc = json.loads(pools)
                parsed = {
                    str(p): PoolCount(int(v.get("count") or 0), tuple(str(q) for q in v.get("queues") or []))
                    for p, v in doc.items()
                    if isinstance(v, dict)
                }
            except (ValueError, TypeError, AttributeError):
                continue  # one damaged row does not blind the baseline
            out.append(PoolObservation(datetime.fromisoformat(at), parsed))
        return out

    def history(
        self, *, check: str | None = None, since: datetime | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Findings newest first, optionally for one check (glob allowed) and since a time."""
        where, args = [], []
        if check:
            where.append("check_id GLOB ?")
            args.append(check)
        if since:
            where.append("at >= ?")
            # fixed-width timestamps, so that comparing them as text orders them as times
            args.append(since.astimezone(UTC).isoformat(timespec="microseconds"))
        sql = "select run_id, at, check_id, severity, subject_kind, subject_id, subject_name, title from findings"
        if where:
            sql += " where " + " and ".join(where)
        sql += " order by at desc, id desc limit ?"
        args.append(limit)
        cursor = self.db.execute(sql, args)
        cols = [c[0] for c in cursor.description]
        return [dict(zip(cols, row, strict=True)) for row in cursor.fetchall()]

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.db["runs"].rows_where(order_by="id desc", limit=limit))

    def close(self) -> None:
        self.db.conn.close()
