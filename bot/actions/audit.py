"""The audit trail: one row per attempt, whatever its outcome, in the store's `audit` table.

Columns: id, at (UTC ISO), actor_id, actor_name, via (slack|terminal), action, server, subject, params (JSON),
outcome (ok|denied|failed|dry_run|expired|tampered|duplicate|refused|cancelled|interrupted), error, created_ids (JSON),
detail (the steps done or planned, command output), idempotency_key, context (JSON: Slack channel/ts).
Every free-text column is redacted before it is written.

Query: `recent(store, n)` for `/clearml audit [n]` and `clearml-chatops audit`; `format_rows` renders them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bot import metrics
from bot.actions.base import Actor
from bot.mrkdwn import neutral
from bot.redact import redact
from bot.store import Store, locked, schema


def ensure_schema(store: Store) -> None:
    """Create the table if missing (idempotent, cheap after the first call): bot/store/schema.py."""
    schema.ensure_audit(store)


def record(
    store: Store,
    *,
    actor: Actor,
    action: str,
    server: str,
    subject: str,
    outcome: str,
    params: dict[str, Any] | None = None,
    error: str | None = None,
    created_ids: Iterable[str] = (),
    detail: Iterable[str] = (),
    idempotency_key: str | None = None,
    context: dict[str, Any] | None = None,
    at: datetime | None = None,
    secrets: Iterable[str] = (),
) -> int:
    """Append one audit row; returns its id."""
    ensure_schema(store)
    secret_list = list(secrets)

    def clean(text: str) -> str:
        return redact(text, secret_list)

    row = {
        "at": (at or datetime.now(UTC)).astimezone(UTC).isoformat(),
        "actor_id": actor.id,
        "actor_name": actor.name,
        "via": actor.via,
        "action": action,
        "server": server,
        "subject": subject,
        "params": clean(json.dumps(params or {}, sort_keys=True, default=str)),
        "outcome": outcome,
        "error": clean(error) if error else None,
        "created_ids": json.dumps(list(created_ids)),
        "detail": clean("\n".join(detail)),
        "idempotency_key": idempotency_key,
        "context": json.dumps(context or {}, sort_keys=True, default=str),
    }
    with locked(store):
        audit_id = int(store.db["audit"].insert(row).last_pk)  # type: ignore[union-attr, arg-type]
    metrics.action(action, outcome)  # after the write: an attempt counts once it is on record
    return audit_id


def recent(
    store: Store,
    n: int = 20,
    *,
    action: str | None = None,
    subject: str | None = None,
    outcome: str | None = None,
    actor: str | None = None,
) -> list[dict[str, Any]]:
    """The newest `n` rows (newest first), optionally filtered; JSON columns decoded."""
    ensure_schema(store)
    where, args = [], []
    for column, value in (("action", action), ("subject", subject), ("outcome", outcome), ("actor_id", actor)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    rows = store.db["audit"].rows_where(  # type: ignore[union-attr]
        " and ".join(where) or None, args or None, order_by="id desc", limit=max(1, int(n))
    )
    out = []
    for row in rows:
        row = dict(row)
        for column in ("params", "created_ids", "context"):
            try:
                row[column] = json.loads(row[column]) if row[column] else None
            except ValueError:
                pass
        out.append(row)
    return out


def format_row(row: dict[str, Any], *, mrkdwn: bool = False) -> str:
    """One audit line; with `mrkdwn`, every recorded value is shown as data (escaped, no formatting) and the actor
    is a mention only when the row holds a Slack user id."""
    data: Any = str
    if mrkdwn:
        def data(value: Any) -> str:
            return neutral(str(value))

    at = str(row.get("at") or "")[:16].replace("T", " ")
    who = data(row.get("actor_name") or row.get("actor_id") or "?")
    if mrkdwn and row.get("via") == "slack" and re.fullmatch(r"[UW][A-Z0-9]{2,20}", str(row.get("actor_id") or "")):
        who = f"<@{row['actor_id']}>"
    elif row.get("via") == "terminal":
        who = f"{who} (terminal)"
    line = (f"{at}  {data(row.get('outcome', '')):<9} {data(row.get('action', '')):<10} {data(row.get('subject', ''))}"
            f" by {who}")
    if row.get("server"):
        line += f" on {data(row['server'])}"
    created = row.get("created_ids") or []
    if created:
        line += f" → created {data(', '.join(created))}"
    if row.get("error"):
        line += f": {data(row['error'])}"
    return line


def format_rows(rows: list[dict[str, Any]], *, mrkdwn: bool = False) -> str:
    if not rows:
        return "No actions recorded yet."
    if mrkdwn:  # no code block: mentions only render outside one
        return "\n".join(f"• {format_row(r, mrkdwn=True)}" for r in rows)
    return "\n".join(format_row(r) for r in rows)
