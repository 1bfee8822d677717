"""The channel digest: one message summarising a period (since the last digest) as plain data.

`build_digest(store, now)` reads what the bot already stores (incidents, the runs and findings tables, and the
per-run metrics recorded by `record_run_metrics`) and returns a `Digest`; a renderer turns it into one Block Kit
message (lists here are already capped so that it fits: ≤ `max_items` entries each, with "and N more" counts).
`record_digest` remembers it, so the next digest covers "since the last one" and compares its trends with it.

Per-run metrics (table `run_metrics`; one row per run and metric name). What the digest trends use:
- `agents.alive`, `agents.registered`: workers heard from within `stale_after`, and all registered workers;
- `queues.wait_median_s`: the median over queues of the oldest entry's wait (or average wait) in seconds;
- `queues.pending`: entries waiting in all queues;
- `run.problems`, `run.checks_errored`, `run.duration_s`, `run.api_calls`: from the RunResult itself.
The run-level ones are always there. The fleet ones come from `RunResult.metrics` (filled by the runner from the
fleet snapshot the checks read); a metric with no data is simply left out of the digest.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from bot.config import DigestSettings
from bot.durations import format_duration
from bot.engine.findings import SEVERITY_RANK, Subject
from bot.incidents.tracker import IncidentTracker, root_key
from bot.incidents.views import IncidentView
from bot.store import insert, iso, locked, parse_iso, row, rows, schema, transaction, utc

if TYPE_CHECKING:
    from bot.engine.runner import RunResult
    from bot.store import Store


# -- data ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestIncident:
    id: int
    title: str
    severity: str
    status: str
    area: str
    server: str
    opened_at: datetime
    resolved_at: datetime | None
    duration_s: float
    count: int
    members: int
    ack_by: str | None
    snoozed_until: datetime | None
    thread: tuple[str, str] | None  # (channel id, ts) of the root message, once posted
    permalink: str | None = None  # the thread's link from Slack (chat.getPermalink), when the caller resolved it

    @property
    def thread_url(self) -> str | None:
        return self.permalink


@dataclass(frozen=True)
class Offender:
    subject: Subject
    runs: int  # runs in the period in which it had a warning or worse
    checks: tuple[str, ...]
    worst: str


@dataclass(frozen=True)
class Trend:
    metric: str
    label: str
    current: float | None
    previous: float | None
    better: Literal["lower", "higher"]
    unit: Literal["count", "seconds"]

    @property
    def delta(self) -> float | None:
        if self.current is None or self.previous is None:
            return None
        return self.current - self.previous

    @property
    def direction(self) -> Literal["up", "down", "flat", "new"]:
        if self.previous is None:
            return "new"
        delta = self.delta or 0.0
        tolerance = max(abs(self.previous) * 0.05, 1e-9)
        if abs(delta) <= tolerance:
            return "flat"
        return "up" if delta > 0 else "down"

    @property
    def verdict(self) -> Literal["better", "worse", "same", "new"]:
        d = self.direction
        if d in ("flat", "new"):
            return "same" if d == "flat" else "new"
        return "better" if (d == "down") == (self.better == "lower") else "worse"

    def fmt(self, value: float | None) -> str:
        if value is None:
            return "—"
        return format_duration(value) if self.unit == "seconds" else f"{value:g}"


@dataclass(frozen=True)
class Digest:
    period_start: datetime
    period_end: datetime
    state: str  # worst severity among open incidents; "ok" when none
    headline: str
    runs: int
    problem_runs: int
    counts: dict[str, dict[str, int]]  # area -> severity -> distinct fingerprints seen in the period
    open_counts: dict[str, dict[str, int]]  # area -> severity -> open incidents now
    new: list[DigestIncident]
    ongoing: list[DigestIncident]
    resolved: list[DigestIncident]
    more: dict[str, int]  # new / ongoing / resolved entries left out to keep the message within limits
    top_offenders: list[Offender]
    trends: list[Trend]
    metrics: dict[str, float]  # this period's medians, stored for the next digest's trends
    previous_at: datetime | None = None
    channel: str | None = None
    notes: list[str] = field(default_factory=list)


# -- per-run metrics ------------------------------------------------------------------------------------------

TREND_METRICS: tuple[tuple[str, str, Literal["lower", "higher"], Literal["count", "seconds"]], ...] = (
    ("queues.wait_median_s", "median queue wait", "lower", "seconds"),
    ("agents.alive", "agents alive", "higher", "count"),
    ("agents.registered", "agents registered", "higher", "count"),
    ("queues.pending", "tasks waiting in queues", "lower", "count"),
    ("run.problems", "problems per run", "lower", "count"),
    ("run.checks_errored", "checks that could not run, per run", "lower", "count"),
)


def ensure_schema(store: Store) -> None:
    schema.ensure_digests(store)  # bot/store/schema.py


def metrics_from_result(result: RunResult) -> dict[str, float]:
    """What to store per run for trends (see the module doc)."""
    out: dict[str, float] = {
        "run.problems": float(len(result.problems)),
        "run.checks_errored": float(sum(1 for c in result.checks if c.status in ("error", "timeout"))),
        "run.duration_s": float(result.duration_s),
        "run.api_calls": float(result.api_calls),
    }
    out.update({str(k): float(v) for k, v in result.metrics.items() if _number(v)})
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def record_run_metrics(store: Store, result: RunResult, run_id: int | None = None) -> dict[str, float]:
    metrics = metrics_from_result(result)
    at = iso(result.started_at)
    with transaction(store) as conn:
        for name, value in metrics.items():
            insert(conn, "run_metrics", {"run_id": run_id, "at": at, "server": result.server, "name": name,
                                         "value": value})
    return metrics


def _medians(conn: Any, start: datetime, end: datetime) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for r in rows(conn, "SELECT name, value FROM run_metrics WHERE at >= ? AND at < ?", (iso(start), iso(end))):
        values[r["name"]].append(float(r["value"]))
    return {name: float(statistics.median(vals)) for name, vals in values.items()}


# -- building ------------------------------------------------------------------------------------------------


def thread_refs(digest: Digest) -> list[tuple[str, str]]:
    """(channel id, ts) of every incident thread the digest lists: what to resolve into permalinks (a Slack call
    each, so outside the store's transaction) before building it again with `permalinks`."""
    return [i.thread for i in (*digest.new, *digest.ongoing, *digest.resolved) if i.thread is not None]


def resolve_permalinks(
    refs: list[tuple[str, str]], resolve: Callable[[str, str], str | None] | None
) -> dict[tuple[str, str], str]:
    """Ask `resolve` (the Slack outbox's cached `permalink`) for each thread's link; unresolved ones are left out."""
    out: dict[tuple[str, str], str] = {}
    for ref in refs if resolve is not None else []:
        if ref not in out and (url := resolve(*ref)):
            out[ref] = url
    return out


def _area(view: IncidentView) -> str:
    return view.primary.check.split(".", 1)[0]


def _thread(conn: Any, incident_id: int) -> tuple[str, str] | None:
    try:
        r = row(conn, "SELECT channel, channel_id, ts, status FROM outbox WHERE key = ?", (root_key(incident_id),))
    except sqlite3.OperationalError:  # no outbox table: this store never talked to Slack (terminal use)
        return None
    if r is None or r["status"] != "sent" or not r["ts"]:
        return None
    return (r["channel_id"] or r["channel"], r["ts"])


def build_digest(
    store: Store,
    now: datetime | None = None,
    *,
    settings: DigestSettings | None = None,
    since: datetime | None = None,
    channel: str | None = None,
    permalinks: Mapping[tuple[str, str], str] | None = None,
) -> Digest:
    """The digest for (since the last digest in `channel`, or `period` ago) .. now. Reads only. `permalinks`:
    incident threads' links by (channel id, ts), from Slack (see `thread_refs`); without one a thread has no link."""
    settings = settings or DigestSettings()
    now = utc(now)
    ensure_schema(store)
    tracker = IncidentTracker(store)
    with transaction(store) as conn:
        previous = row(
            conn,
            "SELECT * FROM digests WHERE (channel IS ? OR ? IS NULL) AND at <= ? ORDER BY at DESC, id DESC LIMIT 1",
            (channel, channel, iso(now)),
        )
        start = since or (parse_iso(previous["period_end"]) if previous else None)
        start = start or now - timedelta(seconds=settings.period_s)
        s, e = iso(start), iso(now)

        # The store writes `isoformat()` (microseconds only when non-zero), so compare as times, not as strings.
        run_rows = rows(
            conn,
            "SELECT problems FROM runs WHERE julianday(started_at) >= julianday(?) AND julianday(started_at) < "
            "julianday(?)",
            (s, e),
        )
        in_period = "julianday(at) >= julianday(?) AND julianday(at) < julianday(?)"
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in rows(
            conn,
            "SELECT check_id, severity, count(DISTINCT fingerprint) AS n FROM findings "
            f"WHERE {in_period} AND severity IN ('warning', 'critical', 'error') GROUP BY check_id, severity",
            (s, e),
        ):
            counts[r["check_id"].split(".", 1)[0]][r["severity"]] += int(r["n"])

        offenders = []
        for r in rows(
            conn,
            "SELECT subject_kind, subject_id, max(subject_name) AS subject_name, count(DISTINCT run_id) AS runs, "
            "group_concat(DISTINCT check_id) AS checks, group_concat(DISTINCT severity) AS severities "
            f"FROM findings WHERE {in_period} AND severity IN ('warning', 'critical') "
            "GROUP BY subject_kind, subject_id ORDER BY runs DESC, subject_id LIMIT ?",
            (s, e, settings.top),
        ):
            severities = str(r["severities"] or "warning").split(",")
            offenders.append(
                Offender(
                    subject=Subject(kind=r["subject_kind"], id=r["subject_id"], name=r["subject_name"] or ""),
                    runs=int(r["runs"]),
                    checks=tuple(sorted(set(str(r["checks"]).split(",")))),
                    worst=max(severities, key=lambda x: SEVERITY_RANK.get(x, 0)),
                )
            )

        current = _medians(conn, start, now)
        if previous is not None:
            before = {k: float(v) for k, v in json.loads(previous["metrics"]).items()}
        else:
            span = now - start
            before = _medians(conn, start - span, start)

        incident_ids = [
            r["id"]
            for r in rows(
                conn,
                "SELECT id FROM incidents WHERE status = 'open' OR (resolved_at >= ? AND resolved_at < ?) "
                "ORDER BY id",
                (s, e),
            )
        ]
        views = [v for v in (tracker._view(conn, i) for i in incident_ids) if v is not None]
        threads = {v.id: _thread(conn, v.id) for v in views}

    def entry(v: IncidentView) -> DigestIncident:
        return DigestIncident(
            id=v.id, title=v.title, severity=v.severity, status=v.status, area=_area(v), server=v.server,
            opened_at=v.opened_at, resolved_at=v.resolved_at, duration_s=v.duration_s(now), count=v.count,
            members=len([m for m in v.members if m.state != "moved"]), ack_by=v.ack_by,
            snoozed_until=v.snoozed_until, thread=threads.get(v.id),
            permalink=(permalinks or {}).get(threads[v.id]) if threads.get(v.id) else None,  # type: ignore[index]
        )

    def worst_first(items: list[DigestIncident]) -> list[DigestIncident]:
        return sorted(items, key=lambda d: (-SEVERITY_RANK.get(d.severity, 0), d.id))

    # An incident opened and resolved inside the period counts as both new and resolved: people want to know.
    new = worst_first([entry(v) for v in views if v.opened_at >= start])
    ongoing = worst_first([entry(v) for v in views if v.is_open and v.opened_at < start])
    resolved = worst_first([entry(v) for v in views if not v.is_open])
    open_views = [v for v in views if v.is_open]
    open_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for v in open_views:
        open_counts[_area(v)][v.severity] += 1
    state = max((v.severity for v in open_views), key=lambda x: SEVERITY_RANK[x], default="ok")
    if open_views:
        by_sev = defaultdict(int)
        for v in open_views:
            by_sev[v.severity] += 1
        detail = ", ".join(f"{n} {sev}" for sev, n in sorted(by_sev.items(), key=lambda kv: -SEVERITY_RANK[kv[0]]))
        headline = f"{len(open_views)} open incident{'s' if len(open_views) != 1 else ''} ({detail})"
    else:
        headline = "All clear: no open incidents"
    cap = settings.max_items
    trends = [
        Trend(metric=name, label=label, current=current.get(name), previous=before.get(name), better=better,
              unit=unit)
        for name, label, better, unit in TREND_METRICS
        if name in current  # no data this period: nothing to say about it
    ]
    return Digest(
        period_start=start,
        period_end=now,
        state=state,
        headline=headline,
        runs=len(run_rows),
        problem_runs=sum(1 for r in run_rows if r["problems"]),
        counts={a: dict(v) for a, v in sorted(counts.items())},
        open_counts={a: dict(v) for a, v in sorted(open_counts.items())},
        new=new[:cap],
        ongoing=ongoing[:cap],
        resolved=resolved[:cap],
        more={"new": max(0, len(new) - cap), "ongoing": max(0, len(ongoing) - cap),
              "resolved": max(0, len(resolved) - cap)},
        top_offenders=offenders,
        trends=trends,
        metrics=current,
        previous_at=parse_iso(previous["at"]) if previous else None,
        channel=channel,
    )


def last_recorded(store: Store) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The last recorded digest's row and the one before it (None: no digest yet), for trends outside a digest
    (the App Home). Plain reads: drawing the Home never takes SQLite's write lock."""
    try:
        with locked(store) as conn:
            last = row(conn, "SELECT * FROM digests ORDER BY at DESC, id DESC LIMIT 1")
            if last is None:
                return None
            before = row(conn, "SELECT * FROM digests WHERE id != ? AND at <= ? ORDER BY at DESC, id DESC LIMIT 1",
                         (last["id"], last["at"]))
    except sqlite3.OperationalError:  # no digest table yet
        return None
    return last, before


def record_digest(store: Store, digest: Digest) -> int:
    """Remember a posted digest: the next one starts where this one ended and compares trends with it."""
    ensure_schema(store)
    summary = {
        "headline": digest.headline,
        "new": [d.id for d in digest.new],
        "ongoing": [d.id for d in digest.ongoing],
        "resolved": [d.id for d in digest.resolved],
        "runs": digest.runs,
    }
    with transaction(store) as conn:
        return insert(
            conn,
            "digests",
            {
                "channel": digest.channel,
                "at": iso(digest.period_end),
                "period_start": iso(digest.period_start),
                "period_end": iso(digest.period_end),
                "state": digest.state,
                "metrics": json.dumps(digest.metrics),
                "summary": json.dumps(summary),
            },
        )
