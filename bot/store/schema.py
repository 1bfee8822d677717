"""Table creation for every table the bot keeps, in one place: the runs and findings, the learned baselines, the
actions' idempotency keys, audit and reproduction watches, incidents, silences, digests, the scheduler's state
and the Slack outbox.

Each feature asks for its tables before first use (`ensure_<feature>(store)`), so a store file from an older
version gains new tables lazily; every function here is idempotent and cheap after the first call.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from bot.store.sql import transaction

if TYPE_CHECKING:
    import sqlite_utils

    from bot.store.core import Store


# -- runs and findings (created when the store opens) -------------------------------------------------------------


def create_run_tables(db: sqlite_utils.Database) -> None:
    runs = db["runs"]
    if not runs.exists():
        runs.create(  # type: ignore[union-attr]
            {
                "id": int,
                "started_at": str,
                "duration_s": float,
                "server": str,
                "server_url": str,
                "playbooks": str,
                "trigger": str,
                "api_calls": int,
                "worst": str,
                "problems": int,
                "findings": int,
                "checks": str,
            },
            pk="id",
        )
        runs.create_index(["started_at"])  # type: ignore[union-attr]
    findings = db["findings"]
    if not findings.exists():
        findings.create(  # type: ignore[union-attr]
            {
                "id": int,
                "run_id": int,
                "at": str,
                "check_id": str,
                "severity": str,
                "fingerprint": str,
                "subject_kind": str,
                "subject_id": str,
                "subject_name": str,
                "title": str,
                "finding": str,
            },
            pk="id",
            foreign_keys=[("run_id", "runs", "id")],
        )
        findings.create_index(["check_id", "at"])  # type: ignore[union-attr]
        findings.create_index(["fingerprint"])  # type: ignore[union-attr]
        findings.create_index(["at"])  # type: ignore[union-attr]


# -- the engine's learned baselines ---------------------------------------------------------------------------------


def ensure_fleet_pools(store: Store) -> None:
    store.ensure_table(
        "fleet_pools",
        {"run_id": int, "at": str, "server_url": str, "pools": str},
        pk="run_id",
        indexes=(("server_url", "at"),),
    )


def ensure_agent_versions(store: Store) -> None:
    store.ensure_table(
        "agent_versions",
        {"server_url": str, "worker": str, "version": str, "task_id": str, "task_name": str, "seen_at": str},
        pk=("server_url", "worker"),
    )


# -- actions ----------------------------------------------------------------------------------------------------------


def ensure_action_runs(store: Store) -> None:
    """Idempotency keys of actions (bot/actions/runs.py)."""
    store.ensure_table(
        "action_runs",
        {
            "key": str,
            "action": str,
            "server": str,
            "subject": str,
            "actor_id": str,
            "actor_name": str,
            "via": str,
            "status": str,  # running | ok | failed | refused
            "started_at": str,
            "finished_at": str,
            "outcome": str,  # ActionOutcome JSON
            "context": str,  # where it was asked (JSON: channel, thread_ts): an interrupted run is reported there
        },
        pk="key",
    )
    table = store.db["action_runs"]
    if "context" not in table.columns_dict:  # type: ignore[union-attr]  # a store from before the column
        try:
            table.add_column("context", str)  # type: ignore[union-attr]
        except Exception:  # another connection added it first
            pass


def ensure_audit(store: Store) -> None:
    """The audit trail of actions (bot/actions/audit.py)."""
    store.ensure_table(
        "audit",
        {
            "id": int,
            "at": str,
            "actor_id": str,
            "actor_name": str,
            "via": str,
            "action": str,
            "server": str,
            "subject": str,
            "params": str,
            "outcome": str,
            "error": str,
            "created_ids": str,
            "detail": str,
            "idempotency_key": str,
            "context": str,
        },
        pk="id",
        indexes=(("at",), ("subject",)),
    )


def ensure_repro_watches(store: Store) -> None:
    """Re-runs the reproduce action watches until they end (bot/actions/reproduce.py)."""
    store.ensure_table(
        "repro_watches",
        {
            "id": int,
            "server": str,
            "original": str,
            "clone": str,
            "actor_id": str,
            "actor_name": str,
            "via": str,
            "started_at": str,
            "deadline": str,
            "tolerances": str,
            "context": str,
            "status": str,  # watching | done | timeout | error
            "finished_at": str,
            "text": str,
            "result": str,
        },
        pk="id",
    )


# -- incidents, silences, digests ----------------------------------------------------------------------------------

_SILENCES_READY: weakref.WeakSet[Store] = weakref.WeakSet()  # stores whose table exists (the commands may come first)


def ensure_silences(store: Store) -> None:
    if store in _SILENCES_READY:
        return
    with transaction(store) as conn:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS silences (
                id INTEGER PRIMARY KEY,
                pattern TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT '',
                created_by TEXT NOT NULL DEFAULT '',
                created_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                cancelled_at TEXT,
                cancelled_by TEXT NOT NULL DEFAULT ''
            )"""
        )
        conn.execute("CREATE INDEX IF NOT EXISTS silences_expires ON silences(expires_at)")
    _SILENCES_READY.add(store)



def ensure_incidents(store: Store) -> None:
    """Create the incident tables if missing (idempotent; safe on every start)."""
    ensure_silences(store)
    with transaction(store) as conn:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS incidents (
                id INTEGER PRIMARY KEY,
                server TEXT NOT NULL,
                anchor_kind TEXT NOT NULL,
                anchor_id TEXT NOT NULL,
                anchor_name TEXT NOT NULL DEFAULT '',
                status TEXT NOT NULL,
                severity TEXT NOT NULL,
                title TEXT NOT NULL,
                channel TEXT,
                playbook TEXT,
                opened_at TEXT NOT NULL,
                last_seen TEXT NOT NULL,
                resolved_at TEXT,
                resolved_by TEXT,
                resolve_reason TEXT,
                count INTEGER NOT NULL DEFAULT 1,
                reopen_count INTEGER NOT NULL DEFAULT 0,
                ack_by TEXT,
                ack_at TEXT,
                snoozed_until TEXT,
                snoozed_by TEXT,
                announced INTEGER NOT NULL DEFAULT 0,
                events INTEGER NOT NULL DEFAULT 0,
                split_from INTEGER,
                updated_at TEXT NOT NULL
            )"""
        )
        conn.execute("CREATE INDEX IF NOT EXISTS incidents_open ON incidents(status, server, anchor_kind, anchor_id)")
        conn.execute("CREATE INDEX IF NOT EXISTS incidents_resolved_at ON incidents(resolved_at)")
        conn.execute("CREATE INDEX IF NOT EXISTS incidents_opened_at ON incidents(opened_at)")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS incident_members (
                id INTEGER PRIMARY KEY,
                incident_id INTEGER NOT NULL REFERENCES incidents(id),
                server TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                check_id TEXT NOT NULL,
                subject_kind TEXT NOT NULL,
                subject_id TEXT NOT NULL,
                subject_name TEXT NOT NULL DEFAULT '',
                role TEXT NOT NULL,
                state TEXT NOT NULL,
                severity TEXT NOT NULL,
                first_seen TEXT NOT NULL,
                last_seen TEXT NOT NULL,
                cleared_at TEXT,
                count INTEGER NOT NULL DEFAULT 1,
                clean_runs INTEGER NOT NULL DEFAULT 0,
                scopes TEXT NOT NULL DEFAULT '[]',
                evidence_key TEXT NOT NULL DEFAULT '',
                silenced INTEGER NOT NULL DEFAULT 0,
                moved_to INTEGER,
                finding TEXT NOT NULL
            )"""
        )
        # The invariant the whole feature rests on: one live member per (server, fingerprint), ever.
        conn.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS incident_members_live ON incident_members(server, fingerprint) "
            "WHERE state IN ('firing', 'cleared')"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS incident_members_incident ON incident_members(incident_id)")
        # thread lines a mute (snooze or silence) held back, told in one reply when it ends
        conn.execute(
            """CREATE TABLE IF NOT EXISTS incident_held_lines (
                id INTEGER PRIMARY KEY,
                incident_id INTEGER NOT NULL REFERENCES incidents(id),
                at TEXT NOT NULL,
                muted_by TEXT NOT NULL,
                line TEXT NOT NULL
            )"""
        )
        conn.execute("CREATE INDEX IF NOT EXISTS incident_held_lines_incident ON incident_held_lines(incident_id)")
        conn.execute("CREATE INDEX IF NOT EXISTS incident_members_fp ON incident_members(server, fingerprint, state)")
        # Columns added after the first release: stores created before get them here (NULL / default = as before).
        for table, column, decl in _ADDED_COLUMNS:
            have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()}
            if column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("incidents", "storm", "INTEGER NOT NULL DEFAULT 0"),
    ("incidents", "mirrors", "TEXT NOT NULL DEFAULT '[]'"),
    ("incidents", "refused_channel", "TEXT"),
    ("incidents", "refused_error", "TEXT"),
    ("incidents", "refused_checked_at", "TEXT"),
    ("incident_members", "gone_at", "TEXT"),
    ("incident_members", "caused_by", "TEXT"),
    ("incident_members", "seen_listed", "INTEGER NOT NULL DEFAULT 0"),  # the server listed the subject at least once
)


def ensure_digests(store: Store) -> None:
    """Per-run metrics and the digests sent (bot/incidents/digest.py)."""
    ensure_incidents(store)  # the digest reads incidents: make sure their tables exist too
    with transaction(store) as conn:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS run_metrics (
                id INTEGER PRIMARY KEY,
                run_id INTEGER,
                at TEXT NOT NULL,
                server TEXT NOT NULL,
                name TEXT NOT NULL,
                value REAL NOT NULL
            )"""
        )
        conn.execute("CREATE INDEX IF NOT EXISTS run_metrics_name_at ON run_metrics(name, at)")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS digests (
                id INTEGER PRIMARY KEY,
                channel TEXT,
                at TEXT NOT NULL,
                period_start TEXT NOT NULL,
                period_end TEXT NOT NULL,
                state TEXT NOT NULL,
                metrics TEXT NOT NULL,
                summary TEXT NOT NULL
            )"""
        )


# -- the scheduler and the outbox --------------------------------------------------------------------------------


def ensure_schedule_state(store: Store) -> None:
    """The scheduler's last run per job (bot/schedule.py)."""
    with transaction(store) as conn:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schedule_state (
                job_id TEXT PRIMARY KEY,
                last_started_at TEXT,
                last_finished_at TEXT,
                last_status TEXT,
                last_trigger TEXT,
                last_error TEXT
            )"""
        )


def ensure_outbox(store: Store) -> None:
    """The durable queue of Slack writes (bot/slack/delivery/queue.py)."""
    with transaction(store) as conn:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                key TEXT NOT NULL UNIQUE,
                channel TEXT NOT NULL,
                kind TEXT NOT NULL,
                root_key TEXT,
                payload TEXT NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TEXT NOT NULL,
                attempt_started_at TEXT,
                uncertain INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                ts TEXT,
                channel_id TEXT,
                created_at TEXT NOT NULL,
                sent_at TEXT,
                failed_at TEXT
            )"""
        )
        conn.execute("CREATE INDEX IF NOT EXISTS outbox_status ON outbox(status, id)")
        conn.execute("CREATE INDEX IF NOT EXISTS outbox_root ON outbox(root_key, kind, status)")
