"""What the charts draw, read from the store as plain data (no plotting library needed here).

Sources: the per-run gauges of table `run_metrics` (bot/incidents/digest.py records them for every run that goes
through the incident pipeline: `queues.pending`, `queues.wait_median_s`, `agents.alive[<pool>]`,
`queues.length[<queue>]`, `queues.wait_s[<queue>]`) and the `repro.failure_causes` findings of table `findings`
(each lists its failed tasks with the time they failed, so a task seen by many runs is counted once).

A `ChartSpec` is the whole chart as data: title, panels with a unit each, series of points or stacked bars. The
renderer (bot/charts/render.py) turns it into a PNG; `alt_text` turns it into the numbers a screen reader says.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from bot.durations import format_duration
from bot.redact import redact
from bot.store import iso, parse_iso, rows, transaction, utc

if TYPE_CHECKING:
    from bot.store import Store

MAX_LINES = 6  # lines per panel: beyond this a chart stops being readable (the rest are named in the alt text)
MAX_ALT_TEXT = 1000  # Slack's alt_txt limit for an uploaded image
_BRACKETED = re.compile(r"^(?P<base>[^\[]+)\[(?P<key>.+)\]$")


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple[tuple[datetime, float], ...]

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.points]


@dataclass(frozen=True)
class Panel:
    """One plot area: a y axis with its unit and either time series (lines) or stacked bars per day."""

    y_label: str
    unit: Literal["count", "seconds"]
    lines: tuple[Series, ...] = ()
    days: tuple[date, ...] = ()  # bars: the x categories
    stacks: tuple[tuple[str, tuple[float, ...]], ...] = ()  # bars: (label, one value per day), stacked in order
    omitted: tuple[str, ...] = ()  # series left out to stay readable (named in the alt text)


@dataclass(frozen=True)
class ChartSpec:
    name: str  # file-name stem: queues, pools, failures, backlog-<queue>
    title: str
    start: datetime
    end: datetime
    panels: tuple[Panel, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def filename(self) -> str:
        return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', self.name).strip('-') or 'chart'}.png"

    @property
    def empty(self) -> bool:
        return not any(p.lines or p.stacks for p in self.panels)


# -- reading the store ---------------------------------------------------------------------------------------


def _metric_rows(store: Store, names: Sequence[str], pattern: str | None, start: datetime, end: datetime,
                 server: str | None) -> list[dict[str, object]]:
    where = ["julianday(at) >= julianday(?)", "julianday(at) <= julianday(?)"]
    args: list[object] = [iso(start), iso(end)]
    name_terms = []
    if names:
        name_terms.append(f"name IN ({', '.join('?' for _ in names)})")
        args.extend(names)
    if pattern:
        name_terms.append("name GLOB ?")
        args.append(pattern)
    where.append("(" + " OR ".join(name_terms) + ")")
    if server is not None:
        where.append("server = ?")
        args.append(server)
    sql = f"SELECT at, server, name, value FROM run_metrics WHERE {' AND '.join(where)} ORDER BY at, id"
    try:
        with transaction(store) as conn:
            return rows(conn, sql, args)
    except sqlite3.OperationalError:  # no run was ever recorded through the pipeline: no table yet
        return []


def _series_by(
    found: Iterable[dict[str, object]], label_of: Callable[[dict[str, object]], str | None]
) -> dict[str, list[tuple[datetime, float]]]:
    out: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for r in found:
        at = parse_iso(str(r["at"]))
        if at is None:
            continue
        label = label_of(r)
        if label is not None:
            out[label].append((at, float(r["value"])))  # type: ignore[arg-type]
    return out


def _servers(found: Iterable[dict[str, object]]) -> set[str]:
    return {str(r["server"]) for r in found}


def _top(series: dict[str, list[tuple[datetime, float]]], limit: int = MAX_LINES
         ) -> tuple[tuple[Series, ...], tuple[str, ...]]:
    """The `limit` series with the highest peak (those say the most), the others' labels."""
    ranked = sorted(series, key=lambda k: (-max(v for _, v in series[k]), k))
    return (tuple(Series(k, tuple(series[k])) for k in ranked[:limit]), tuple(ranked[limit:]))


def queue_chart(store: Store, start: datetime, end: datetime, *, server: str | None = None,
                secrets: Sequence[str] = ()) -> ChartSpec:
    """Tasks waiting in all queues and the median oldest wait, per run, over the window (one line per server)."""
    found = _metric_rows(store, ("queues.pending", "queues.wait_median_s"), None, start, end, server)
    several = len(_servers(found)) > 1
    panels = []
    for metric, y_label, unit in (("queues.pending", "tasks waiting", "count"),
                                  ("queues.wait_median_s", "median oldest wait", "seconds")):
        by = _series_by((r for r in found if r["name"] == metric),
                        lambda r: _clean(str(r["server"]), secrets) if several else "all queues")
        lines, omitted = _top(by) if by else ((), ())
        panels.append(Panel(y_label=y_label, unit=unit, lines=lines, omitted=omitted))  # type: ignore[arg-type]
    return ChartSpec("queues", "Queue backlog: tasks waiting and median wait", start, end, tuple(panels))


def pool_chart(store: Store, start: datetime, end: datetime, *, server: str | None = None,
               secrets: Sequence[str] = ()) -> ChartSpec:
    """Agents alive per pool (the agents serving one queue), per run."""
    found = _metric_rows(store, (), "agents.alive[[]*]", start, end, server)
    several = len(_servers(found)) > 1

    def label(r: dict[str, object]) -> str | None:
        m = _BRACKETED.match(str(r["name"]))
        if m is None:
            return None
        pool = _clean(m.group("key"), secrets)
        return f"{_clean(str(r['server']), secrets)}/{pool}" if several else pool

    by = _series_by(found, label)
    lines, omitted = _top(by) if by else ((), ())
    panel = Panel(y_label="agents alive", unit="count", lines=lines, omitted=omitted)
    return ChartSpec("pools", "Agents alive per pool (queue)", start, end, (panel,))


def backlog_chart(store: Store, queue: str, start: datetime, end: datetime, *, server: str | None = None,
                  secrets: Sequence[str] = ()) -> ChartSpec:
    """One queue's length and oldest wait per run (for the thread of a backlog incident). Runs that measured the
    queues but not this one had nothing waiting in it: they count as 0."""
    names = (f"queues.length[{queue}]", f"queues.wait_s[{queue}]", "queues.pending")
    found = _metric_rows(store, names, None, start, end, server)
    runs = sorted({str(r["at"]) for r in found})
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for r in found:
        values[str(r["name"])][str(r["at"])] = float(r["value"])  # type: ignore[arg-type]
    panels = []
    label = _clean(queue, secrets)
    for metric, y_label, unit in ((names[0], "tasks waiting", "count"), (names[1], "oldest wait", "seconds")):
        points = tuple((at, values[metric].get(s, 0.0)) for s in runs if (at := parse_iso(s)) is not None)
        panels.append(Panel(y_label=y_label, unit=unit,  # type: ignore[arg-type]
                            lines=(Series(label, points),) if values[metric] else ()))
    return ChartSpec(f"backlog-{queue}", f"Queue {label}: tasks waiting and oldest wait", start, end, tuple(panels))


def failure_chart(store: Store, start: datetime, end: datetime, *, server: str | None = None) -> ChartSpec:
    """Failed tasks per cause per day (UTC), from the `repro.failure_causes` findings in the window; a task is
    counted once, on the day it failed."""
    # a failure is listed by every run that saw it within the check's window: look back a day for its first sighting
    sql = ("SELECT f.finding FROM findings f JOIN runs r ON r.id = f.run_id WHERE f.check_id = 'repro.failure_causes' "
           "AND julianday(f.at) >= julianday(?) AND julianday(f.at) <= julianday(?)")
    args: list[object] = [iso(start - timedelta(days=1)), iso(end)]
    if server is not None:
        sql += " AND r.server = ?"
        args.append(server)
    try:
        with transaction(store) as conn:
            found = rows(conn, sql, args)
    except sqlite3.OperationalError:
        found = []
    seen: dict[str, tuple[str, date]] = {}
    for r in found:
        try:
            doc = json.loads(str(r["finding"]))
        except ValueError:
            continue
        evidence = doc.get("evidence") or {}
        cause = str(evidence.get("cause") or "unknown")
        for task in evidence.get("tasks") or []:
            if not isinstance(task, dict) or not task.get("id"):
                continue
            when = parse_iso(str(task.get("status_changed") or "")) if task.get("status_changed") else None
            if when is None or not (start <= when <= end):
                continue
            seen[str(task["id"])] = (cause, when.astimezone(UTC).date())
    days = _days(start, end)
    counts: dict[str, list[float]] = {}
    for cause, day in seen.values():
        counts.setdefault(cause, [0.0] * len(days))[days.index(day)] += 1
    stacks = tuple(sorted(((c, tuple(v)) for c, v in counts.items()), key=lambda cv: (-sum(cv[1]), cv[0])))
    panel = Panel(y_label="failed tasks", unit="count", days=tuple(days), stacks=stacks)
    return ChartSpec("failures", "Failed tasks per cause per day (UTC)", start, end, (panel,))


def _days(start: datetime, end: datetime) -> list[date]:
    first, last = utc(start).date(), utc(end).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def digest_charts(store: Store, start: datetime, end: datetime, *, secrets: Sequence[str] = ()) -> list[ChartSpec]:
    """The digest's charts that have something to show: queue backlog, agents alive per pool, failures."""
    specs = [queue_chart(store, start, end, secrets=secrets), pool_chart(store, start, end, secrets=secrets),
             failure_chart(store, start, end)]
    return [s for s in specs if not s.empty]


def _clean(text: str, secrets: Sequence[str]) -> str:
    """A label from ClearML (queue or pool name): redacted and short. The renderer escapes matplotlib's `$`."""
    text = redact(text, secrets)
    return text if len(text) <= 40 else text[:39] + "…"


# -- alt text ------------------------------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    return format_duration(value) if unit == "seconds" else f"{value:g}"


def alt_text(spec: ChartSpec) -> str:
    """The numbers of the chart for a screen reader: per series first, min, max and last; per bar stack the
    total and each day's count. Clipped to Slack's 1000 characters."""
    span = f"{spec.start:%Y-%m-%d %H:%M} to {spec.end:%Y-%m-%d %H:%M} UTC"
    parts = [f"{spec.title}, {span}."]
    for panel in spec.panels:
        for s in panel.lines:
            vals = s.values
            if not vals:
                continue
            u = panel.unit
            parts.append(f"{panel.y_label}, {s.label}: {len(vals)} runs, first {_fmt(vals[0], u)}, "
                         f"min {_fmt(min(vals), u)}, max {_fmt(max(vals), u)}, last {_fmt(vals[-1], u)}.")
        if panel.omitted:
            parts.append(f"Not drawn: {', '.join(panel.omitted)}.")
        for label, values in panel.stacks:
            per_day = ", ".join(f"{d:%m-%d} {v:g}" for d, v in zip(panel.days, values, strict=True) if v)
            parts.append(f"{label}: {sum(values):g} {panel.y_label} ({per_day}).")
        if not panel.lines and not panel.stacks:
            parts.append(f"{panel.y_label}: no data in the window.")
    text = " ".join(parts)
    return text if len(text) <= MAX_ALT_TEXT else text[: MAX_ALT_TEXT - 1] + "…"


def sparkline(values: Sequence[float]) -> str:
    """A compact one-line chart of `values` with block characters (the terminal's `history --metric`)."""
    blocks = "▁▂▃▄▅▆▇█"
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return blocks[3] * len(values)
    return "".join(blocks[min(7, int((v - low) / (high - low) * 7 + 0.5))] for v in values)


def metric_history(store: Store, name: str, start: datetime, end: datetime | None = None,
                   server: str | None = None) -> list[tuple[datetime, str, float]]:
    """(time, server, value) of one per-run metric, oldest first."""
    end = end or datetime.now(UTC)
    found = _metric_rows(store, (name,), None, start, end, server)
    out = []
    for r in found:
        at = parse_iso(str(r["at"]))
        if at is not None:
            out.append((at, str(r["server"]), float(r["value"])))  # type: ignore[arg-type]
    return out
