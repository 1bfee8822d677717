"""Silences: `/clearml silence <check-or-subject-pattern> <duration> [reason]`, `/clearml silences`.

A silence mutes notifications for matching findings for a while and then expires by itself (it is a time
window in the store, not a job that has to run). Silenced findings are still tracked: their incidents open,
count and resolve as usual, so `/clearml incidents` and the digest stay truthful, and an incident that is still
failing when its silence ends is announced then (see `tracker.py`).

What a pattern matches (shell-style globs, case-sensitive like ClearML ids and names):
- a check id: `agents.stale`, `agents.*`, `storage.*`;
- a subject id or name: `gpu-worker-3`, `gpu-*`, a queue name, a storage URL;
- `kind:id-or-name`: `worker:gpu-*`, `queue:default` (to say which kind of subject is meant);
- `check:subject`: `agents.stale:gpu-*` (one check for some subjects only).
A pattern naming a subject also matches the findings that name it in `Finding.related`: silencing a worker
under maintenance silences the task it orphaned and the queue it left unserved, because those are its
consequences, not separate problems.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.durations import format_duration, parse_duration
from bot.errors import BotError
from bot.store import insert, iso, parse_iso, rows, schema, transaction, utc

if TYPE_CHECKING:
    from bot.engine.findings import Finding
    from bot.store import Store

MAX_SILENCE_S = 30 * 86400.0  # longer than a month is a config change (a playbook `severity:` cap), not a silence
USAGE = (
    "usage: silence <check-or-subject-pattern> <duration> [reason], "
    "e.g. `silence agents.stale:gpu-* 2h kernel upgrade`"
)


class SilenceError(BotError, ValueError):
    """Bad silence input; the message says what was wrong and shows the usage."""


@dataclass(frozen=True)
class Silence:
    id: int
    pattern: str
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    cancelled_at: datetime | None = None
    cancelled_by: str = ""

    def active(self, now: datetime) -> bool:
        return self.cancelled_at is None and utc(now) < self.expires_at

    def remaining_s(self, now: datetime) -> float:
        return max(0.0, (self.expires_at - utc(now)).total_seconds())

    def matches(self, finding: Finding) -> bool:
        return any(fnmatch.fnmatchcase(name, self.pattern) for name in match_names(finding))

    def describe(self, now: datetime) -> str:
        who = f" by {self.created_by}" if self.created_by else ""
        why = f": {self.reason}" if self.reason else ""
        return f"#{self.id} `{self.pattern}` for {format_duration(self.remaining_s(now))} more{who}{why}"


def match_names(finding: Finding) -> list[str]:
    """Every name a silence pattern is matched against (see the module doc)."""
    subject = finding.subject
    names = [finding.check, subject.id, f"{subject.kind}:{subject.id}", f"{finding.check}:{subject.id}"]
    if subject.name:
        names += [subject.name, f"{subject.kind}:{subject.name}", f"{finding.check}:{subject.name}"]
    for rel in finding.related:
        names += [rel.id, f"{rel.kind}:{rel.id}"]
        if rel.name:
            names += [rel.name, f"{rel.kind}:{rel.name}"]
    return names


# -- storage --------------------------------------------------------------------------------------------------


def ensure_schema(store: Store) -> None:
    schema.ensure_silences(store)  # bot/store/schema.py


def _silence(r: dict[str, Any]) -> Silence:
    return Silence(
        id=int(r["id"]),
        pattern=r["pattern"],
        reason=r["reason"],
        created_by=r["created_by"],
        created_at=parse_iso(r["created_at"]),  # type: ignore[arg-type]
        expires_at=parse_iso(r["expires_at"]),  # type: ignore[arg-type]
        cancelled_at=parse_iso(r["cancelled_at"]),
        cancelled_by=r["cancelled_by"],
    )


def parse_silence_args(text: str) -> tuple[str, float, str]:
    """`<pattern> <duration> [reason...]` -> (pattern, seconds, reason); SilenceError with the usage otherwise."""
    parts = text.split()
    if len(parts) < 2:
        raise SilenceError(f"a silence needs a pattern and a duration. {USAGE}")
    pattern, duration, reason = parts[0], parts[1], " ".join(parts[2:])
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise SilenceError(f"{exc}. {USAGE}") from None
    validate(pattern, seconds)
    return pattern, seconds, reason


def validate(pattern: str, seconds: float) -> None:
    if not pattern.strip():
        raise SilenceError(f"the pattern is empty. {USAGE}")
    if pattern.strip() in ("*", "*:*"):
        # Muting everything hides the next outage too; make people say which check or subject they mean.
        raise SilenceError("`*` would silence every check and subject; name a check (`agents.*`) or a subject")
    if seconds <= 0:
        raise SilenceError(f"the duration must be positive. {USAGE}")
    if seconds > MAX_SILENCE_S:
        raise SilenceError(
            f"{format_duration(seconds)} is longer than the longest silence ({format_duration(MAX_SILENCE_S)}); "
            "to mute a check for good, cap its severity in the playbook (`severity: info`)"
        )


def add_silence(
    store: Store, pattern: str, duration: str | float, *, reason: str = "", by: str = "", now: datetime | None = None
) -> Silence:
    seconds = parse_duration(duration)
    validate(pattern, seconds)
    now = utc(now)
    ensure_schema(store)
    values = {
        "pattern": pattern.strip(),
        "reason": reason.strip(),
        "created_by": by,
        "created_at": iso(now),
        "expires_at": iso(now + timedelta(seconds=seconds)),
    }
    with transaction(store) as conn:
        silence_id = insert(conn, "silences", values)
        found = rows(conn, "SELECT * FROM silences WHERE id = ?", (silence_id,))
    return _silence(found[0])


def cancel_silence(store: Store, silence_id: int, *, by: str = "", now: datetime | None = None) -> Silence | None:
    """End a silence early; None when there is no such active silence."""
    now = utc(now)
    ensure_schema(store)
    with transaction(store) as conn:
        found = rows(
            conn,
            "SELECT * FROM silences WHERE id = ? AND cancelled_at IS NULL AND expires_at > ?",
            (silence_id, iso(now)),
        )
        if not found:
            return None
        conn.execute("UPDATE silences SET cancelled_at = ?, cancelled_by = ? WHERE id = ?", (iso(now), by, silence_id))
        found = rows(conn, "SELECT * FROM silences WHERE id = ?", (silence_id,))
    return _silence(found[0])


def active_silences(store: Store, now: datetime | None = None) -> list[Silence]:
    """Silences in force at `now`, soonest to expire first. Expired ones simply stop matching here."""
    ensure_schema(store)
    with transaction(store) as conn:
        found = rows(
            conn,
            "SELECT * FROM silences WHERE cancelled_at IS NULL AND expires_at > ? ORDER BY expires_at, id",
            (iso(utc(now)),),
        )
    return [_silence(r) for r in found]


def matching_silence(silences: list[Silence], finding: Finding) -> Silence | None:
    return next((s for s in silences if s.matches(finding)), None)
