"""Idempotency: the `action_runs` table, one row per idempotency key (a button's nonce).

The first caller claims the key with a single INSERT (atomic in SQLite, across threads and processes) and
runs the action; any later caller with the same key gets the stored row instead: "already done by X at T"
with the result. A key whose run failed or was refused may be claimed again, so the retry button works; a
successful run locks it for good. A key left `running` by a crashed process is taken over after
STALE_AFTER_S (no action step runs that long).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.actions.base import Actor
from bot.store import Store, execute_idempotent, locked, rows, schema

STALE_AFTER_S = 1800.0
RETRYABLE = ("failed", "refused")



def ensure_schema(store: Store) -> None:
    """Create the table if missing (idempotent, cheap after the first call): bot/store/schema.py."""
    schema.ensure_action_runs(store)


@dataclass
class RunRow:
    key: str
    action: str
    subject: str
    actor_id: str
    actor_name: str
    via: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    outcome: dict[str, Any] | None
    context: dict[str, Any] | None = None

    @property
    def actor_label(self) -> str:
        if self.via == "slack":
            return f"@{self.actor_name}" if self.actor_name else self.actor_id
        return self.actor_name or self.actor_id


def _row(raw: dict[str, Any]) -> RunRow:
    return RunRow(
        key=raw["key"],
        action=raw["action"],
        subject=raw["subject"],
        actor_id=raw["actor_id"],
        actor_name=raw["actor_name"] or "",
        via=raw["via"],
        status=raw["status"],
        started_at=datetime.fromisoformat(raw["started_at"]),
        finished_at=datetime.fromisoformat(raw["finished_at"]) if raw.get("finished_at") else None,
        outcome=json.loads(raw["outcome"]) if raw.get("outcome") else None,
        context=_json_or_none(raw.get("context")),
    )


def _json_or_none(text: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def succeeded_on(store: Store, server: str, subjects: list[str], *, since: datetime) -> list[RunRow]:
    """Successful runs on any of `subjects` of `server` finished at or after `since`, oldest first (what an
    incident's root lists as "Requeued by @x" instead of offering the button again)."""
    if not subjects:
        return []
    marks = ", ".join("?" for _ in subjects)
    try:
        with locked(store) as conn:
            found = rows(conn, f"SELECT * FROM action_runs WHERE status = 'ok' AND server = ? AND subject IN "
                               f"({marks}) ORDER BY finished_at", (server, *subjects))
    except sqlite3.OperationalError:  # no action has ever run: the table does not exist yet
        return []
    out = [_row(r) for r in found]
    return [r for r in out if r.finished_at is not None and r.finished_at >= since]


def get(store: Store, key: str) -> RunRow | None:
    ensure_schema(store)
    rows = list(store.db["action_runs"].rows_where("key = ?", [key]))  # type: ignore[union-attr]
    return _row(rows[0]) if rows else None


def claim(
    store: Store, key: str, *, actor: Actor, action: str, server: str, subject: str, now: datetime,
    context: dict[str, Any] | None = None,
) -> RunRow | None:
    """None when this caller now owns the key (go ahead); else the existing run (do not execute). `context`: where
    it was asked (channel, thread), kept so that a run a crash interrupts can be reported there."""
    ensure_schema(store)
    started = now.astimezone(UTC).isoformat()
    values = (action, server, subject, actor.id, actor.name, actor.via, started,
              json.dumps(context, default=str) if context else None)
    with locked(store) as conn:  # the store's lock; each statement is atomic on its own (across processes too)
        # INSERT OR IGNORE rather than catching the constraint error: under contention sqlite3 sometimes
        # reports the UNIQUE violation as a plain DatabaseError, which let a second caller through.
        inserted = execute_idempotent(
            conn,
            "insert or ignore into action_runs (key, action, server, subject, actor_id, actor_name, via, started_at, "
            "context, status) values (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')",
            (key, *values),
        )
        if inserted.rowcount == 1:
            return None
        stale = (now - timedelta(seconds=STALE_AFTER_S)).astimezone(UTC).isoformat()
        # Re-claim a retryable or abandoned run; the WHERE makes it atomic against a concurrent re-claim.
        cursor = execute_idempotent(
            conn,
            "update action_runs set action = ?, server = ?, subject = ?, actor_id = ?, actor_name = ?, via = ?, "
            "started_at = ?, context = ?, status = 'running', finished_at = null, outcome = null "
            f"where key = ? and (status in ({', '.join('?' * len(RETRYABLE))}) "
            "or (status = 'running' and started_at < ?))",
            (*values, key, *RETRYABLE, stale),
        )
        if cursor.rowcount == 1:
            return None
    existing = get(store, key)
    assert existing is not None  # rows are never deleted
    return existing


def finish(store: Store, key: str, *, status: str, outcome: dict[str, Any], now: datetime) -> None:
    ensure_schema(store)
    with locked(store) as conn:
        conn.execute(
            "update action_runs set status = ?, finished_at = ?, outcome = ? where key = ?",
            (status, now.astimezone(UTC).isoformat(), json.dumps(outcome, default=str), key),
        )


INTERRUPTED = "interrupted"


def recover_interrupted(store: Store, *, now: datetime | None = None) -> list[RunRow]:
    """At start-up: runs left `running` by a process that died mid-action (kill -9, OOM, a node lost).

    Each becomes `interrupted` (not retryable: part of it may have happened, so a second click answers "already
    done … interrupted" instead of acting twice) and gets the audit row its attempt never wrote. Call it before
    serving clicks; only one bot process may use a store, so every `running` row here is a dead one's."""
    from bot.actions import audit

    ensure_schema(store)
    now = now or datetime.now(UTC)
    with locked(store) as conn:
        rows = [_row(r) for r in store.db["action_runs"].rows_where("status = 'running'")]  # type: ignore[union-attr]
        for run in rows:
            when = run.started_at.astimezone(UTC).strftime("%H:%M UTC")
            text = (f"interrupted: the bot stopped while this {run.action} of {run.subject} ran (started {when}); "
                    "part of it may have been done, check the subject's state before acting again")
            conn.execute(
                "update action_runs set status = ?, finished_at = ?, outcome = ? where key = ? and status = 'running'",
                (INTERRUPTED, now.astimezone(UTC).isoformat(), json.dumps({"status": INTERRUPTED, "text": text}),
                 run.key),
            )
            raw = next(store.db["action_runs"].rows_where("key = ?", [run.key]))  # type: ignore[union-attr]
            audit.record(store, actor=Actor(id=run.actor_id, name=run.actor_name, via=run.via),  # type: ignore[arg-type]
                         action=run.action, server=str(raw.get("server") or ""), subject=run.subject,
                         outcome=INTERRUPTED, error=text, idempotency_key=run.key, at=now)
    return rows
