"""Schedules: every playbook with a `schedule` (and the digest) runs on APScheduler 3's BackgroundScheduler.

    scheduler = Scheduler(store, playbooks, run_playbook=..., run_digest=..., digest=DigestSettings...)
    scheduler.start()            # catch-up runs first (see below), then the schedules
    scheduler.next_runs()        # for `/clearml schedules` and `clearml-chatops schedules`
    scheduler.shutdown()

- `schedule: "*/5 * * * *"` (cron, 5 fields; timezone from `schedule.timezone`, else the playbook's `timezone`,
  else UTC) or `schedule: {every: 30s}` (an interval on a fixed grid from 2000-01-01 UTC, so that "every 5m"
  means :00, :05, ... whenever the bot started, and so that a missed run can be computed after a restart).
- Every job: `coalesce=True` (a backlog of missed fire times runs once), `max_instances=1` (a slow run is never
  overlapped by the next one; the catch-up run shares the same guard), `misfire_grace_time` (a run that could not
  start on time, e.g. the process was busy, still runs if it is at most this late).
- Restarts: the start and the end of each run are stored (table `schedule_state`). At start, a job whose fire
  time passed while the bot was down (or whose last run was interrupted) runs once at once, with a trigger text
  that says so (`schedule (catch-up: ...)`), which the run carries into the store and its report.
- Tests: pass `clock` (the time used for records and catch-up decisions) and `scheduler` (an APScheduler you
  never start); `plan_catchups(now)`, `run_job(job_id, trigger)` and `next_runs(now)` work without threads.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.config import DigestSettings, load_settings, resolve_server
from bot.durations import format_duration
from bot.engine.playbook import CronSchedule, IntervalSchedule, Playbook
from bot.store import iso, parse_iso, row, rows, schema, transaction, utc

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler
    from apscheduler.triggers.base import BaseTrigger

    from bot.config import ServerSettings, Settings
    from bot.engine.runner import RunResult
    from bot.engine.snapshot import Snapshot
    from bot.incidents.pipeline import IncidentPipeline
    from bot.store import Store

log = logging.getLogger(__name__)

GRID_START = datetime(2000, 1, 1, tzinfo=UTC)  # interval schedules tick on a grid from here
DIGEST_JOB = "digest"
MAX_COUNTED_MISSES = 10_000  # counting missed fire times stops here (a 1 s schedule down for a week)

RunPlaybook = Callable[[Playbook, str], Any]  # (playbook, trigger text) -> anything; exceptions are logged
RunDigest = Callable[[str], Any]  # (trigger text)


@dataclass(frozen=True)
class JobSpec:
    id: str  # playbook:<name> | digest
    name: str
    kind: Literal["playbook", "digest"]
    trigger: BaseTrigger
    schedule: str  # as people read it: "*/5 * * * *", "every 30s"
    timezone: str
    playbook: Playbook | None = None


@dataclass(frozen=True)
class CatchUp:
    job_id: str
    missed: int  # fire times that passed while the bot was down (0 when the last run was interrupted)
    last_due: datetime | None  # the latest of them
    note: str  # the trigger text of the catch-up run


@dataclass(frozen=True)
class ScheduleInfo:
    job_id: str
    name: str
    kind: str
    schedule: str
    timezone: str
    next_run: datetime | None
    last_started: datetime | None
    last_finished: datetime | None
    last_status: str | None
    last_trigger: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job_id, "name": self.name, "kind": self.kind, "schedule": self.schedule,
            "timezone": self.timezone, "next_run": self.next_run.isoformat() if self.next_run else None,
            "last_started": self.last_started.isoformat() if self.last_started else None,
            "last_finished": self.last_finished.isoformat() if self.last_finished else None,
            "last_status": self.last_status, "last_trigger": self.last_trigger,
        }


# -- triggers ------------------------------------------------------------------------------------------------


def trigger_for(
    schedule: str | IntervalSchedule | CronSchedule, timezone: str | None = None
) -> tuple[BaseTrigger, str, str]:
    """(APScheduler trigger, human description, timezone name) for a playbook or digest schedule."""
    if isinstance(schedule, IntervalSchedule):
        tz = schedule.timezone or timezone or "UTC"
        seconds = schedule.seconds
        trigger = IntervalTrigger(seconds=seconds, start_date=GRID_START, timezone=tz)
        every = schedule.every if isinstance(schedule.every, str) else format_duration(seconds)
        return trigger, f"every {every}", tz
    expr = schedule if isinstance(schedule, str) else schedule.cron
    tz = (None if isinstance(schedule, str) else schedule.timezone) or timezone or "UTC"
    return CronTrigger.from_crontab(expr, timezone=tz), expr, tz


def build_jobs(playbooks: list[Playbook], digest: DigestSettings | None = None) -> list[JobSpec]:
    jobs = []
    for pb in playbooks:
        if pb.schedule is None:
            continue
        trigger, text, tz = trigger_for(pb.schedule, pb.timezone)
        jobs.append(JobSpec(f"playbook:{pb.name}", pb.name, "playbook", trigger, text, tz, pb))
    if digest is not None and digest.enabled:
        trigger, text, tz = trigger_for(digest.schedule, digest.timezone)
        jobs.append(JobSpec(DIGEST_JOB, "digest", "digest", trigger, text, tz))
    return jobs


def fire_times_between(trigger: BaseTrigger, after: datetime, until: datetime) -> tuple[int, datetime | None]:
    """How many fire times fall in (after, until], and the latest of them."""
    if isinstance(trigger, IntervalTrigger):
        # Arithmetic on the grid: a 1 s schedule down for a week is 600k fire times, not a loop.
        step = trigger.interval_length
        start = trigger.start_date
        k_after = math.floor((after - start).total_seconds() / step)
        k_until = math.floor((until - start).total_seconds() / step)
        count = max(0, k_until - k_after)
        return count, (start + timedelta(seconds=k_until * step) if count else None)
    count, last = 0, None
    probe = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    while probe is not None and probe <= until and count < MAX_COUNTED_MISSES:
        count, last = count + 1, probe
        probe = trigger.get_next_fire_time(probe, probe + timedelta(microseconds=1))
    return count, last


# -- state -------------------------------------------------------------------------------------------------------


def ensure_schema(store: Store) -> None:
    schema.ensure_schedule_state(store)  # bot/store/schema.py


def _state(store: Store) -> dict[str, dict[str, Any]]:
    with transaction(store) as conn:
        return {r["job_id"]: r for r in rows(conn, "SELECT * FROM schedule_state")}


# -- the scheduler -------------------------------------------------------------------------------------------------


class Scheduler:
    def __init__(
        self,
        store: Store,
        playbooks: list[Playbook],
        *,
        run_playbook: RunPlaybook,
        run_digest: RunDigest | None = None,
        digest: DigestSettings | None = None,
        misfire_grace_s: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        scheduler: BaseScheduler | None = None,
    ) -> None:
        self.store = store
        self.run_playbook = run_playbook
        self.run_digest = run_digest
        self.misfire_grace_s = misfire_grace_s
        self.clock = clock
        self.jobs = {j.id: j for j in build_jobs(playbooks, digest if run_digest is not None else None)}
        self.scheduler = scheduler or BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": int(misfire_grace_s)},
        )
        self.catchups: list[CatchUp] = []
        self._running: dict[str, threading.Lock] = {job_id: threading.Lock() for job_id in self.jobs}
        ensure_schema(store)
        for job in self.jobs.values():
            self.scheduler.add_job(
                self.run_job, trigger=job.trigger, args=[job.id, "schedule"], id=job.id, name=job.name,
                replace_existing=True, coalesce=True, max_instances=1, misfire_grace_time=int(misfire_grace_s),
            )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store,
        playbooks: list[Playbook],
        *,
        run_playbook: RunPlaybook,
        run_digest: RunDigest | None = None,
        **kwargs: Any,
    ) -> Scheduler:
        """`serve`'s constructor: the digest schedule comes from `slack.digest` in the config file."""
        return cls(store, playbooks, run_playbook=run_playbook, run_digest=run_digest,
                   digest=DigestSettings.from_settings(settings), **kwargs)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def plan_catchups(self, now: datetime | None = None) -> list[CatchUp]:
        """Jobs that missed a fire time while the bot was down, or whose last run was interrupted."""
        now = utc(now or self.clock())
        state = _state(self.store)
        out = []
        for job in self.jobs.values():
            s = state.get(job.id)
            if s is None or not s["last_started_at"]:
                continue  # never ran: nothing was missed (a new schedule starts at its next fire time)
            started = parse_iso(s["last_started_at"])
            finished = parse_iso(s["last_finished_at"])
            assert started is not None
            interrupted = finished is None or finished < started
            missed, last_due = fire_times_between(job.trigger, started, now)
            if missed:
                when = f"{last_due:%Y-%m-%d %H:%M} UTC" if last_due else "?"
                many = "+" if missed >= MAX_COUNTED_MISSES else ""
                runs = f"{missed}{many} scheduled runs" if missed > 1 else "the run"
                due = f"due {when}" if missed == 1 else f"the last due {when}"
                note = f"schedule (catch-up: missed {runs}, {due}, while the bot was down)"
            elif interrupted:
                note = f"schedule (catch-up: the run started {started:%Y-%m-%d %H:%M:%S} UTC was interrupted)"
            else:
                continue
            out.append(CatchUp(job.id, missed, last_due, note))
        return out

    def start(self, *, paused: bool = False) -> list[CatchUp]:
        """Start the background scheduler; missed runs go first, once each. Returns them (log or post them)."""
        now = utc(self.clock())
        self.catchups = self.plan_catchups(now)
        for c in self.catchups:
            log.warning("schedule %s: %s; running it now", c.job_id, c.note)
            # A one-off job, so the catch-up runs in the scheduler's pool and not in the caller's thread.
            self.scheduler.add_job(
                self.run_job, trigger=DateTrigger(run_date=now), args=[c.job_id, c.note], id=f"{c.job_id}:catchup",
                replace_existing=True, misfire_grace_time=None,
            )
        self.scheduler.start(paused=paused)
        return self.catchups

    def shutdown(self, wait: bool = True) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)

    # -- running -------------------------------------------------------------------------------------------------

    def run_job(self, job_id: str, trigger: str = "schedule") -> str:
        """Run one job now (the scheduler calls this; so can tests). Returns ok | error | skipped."""
        job = self.jobs[job_id]
        guard = self._running[job_id]
        if not guard.acquire(blocking=False):
            # max_instances=1 covers the scheduled job; this also covers the catch-up and manual runs.
            log.warning("schedule %s: previous run still going; skipping this one (%s)", job_id, trigger)
            return "skipped"
        try:
            self._record(job_id, started=self.clock(), trigger=trigger)
            status, error = "ok", None
            try:
                if job.kind == "digest":
                    assert self.run_digest is not None
                    self.run_digest(trigger)
                else:
                    assert job.playbook is not None
                    self.run_playbook(job.playbook, trigger)
            except Exception as exc:  # a failing run must not kill the schedule; the next fire time still comes
                status, error = "error", f"{type(exc).__name__}: {exc}"
                log.exception("schedule %s: run failed", job_id)
            self._record(job_id, finished=self.clock(), status=status, error=error)
            return status
        finally:
            guard.release()

    def _record(
        self,
        job_id: str,
        *,
        started: datetime | None = None,
        finished: datetime | None = None,
        trigger: str | None = None,
        status: str | None = None,
        error: str | None = None,
    ) -> None:
        with transaction(self.store) as conn:
            if row(conn, "SELECT job_id FROM schedule_state WHERE job_id = ?", (job_id,)) is None:
                conn.execute("INSERT INTO schedule_state (job_id) VALUES (?)", (job_id,))
            if started is not None:
                conn.execute(
                    "UPDATE schedule_state SET last_started_at = ?, last_trigger = ?, last_status = 'running' "
                    "WHERE job_id = ?",
                    (iso(started), trigger, job_id),
                )
            if finished is not None:
                conn.execute(
                    "UPDATE schedule_state SET last_finished_at = ?, last_status = ?, last_error = ? WHERE job_id = ?",
                    (iso(finished), status, error, job_id),
                )

    # -- listing -------------------------------------------------------------------------------------------------

    def next_runs(self, now: datetime | None = None) -> list[ScheduleInfo]:
        return next_runs(list(self.jobs.values()), self.store, now or self.clock())


def next_runs(jobs: list[JobSpec], store: Store | None, now: datetime | None = None) -> list[ScheduleInfo]:
    """Next run times (soonest first) with the last run of each job; works without a running scheduler."""
    now = utc(now)
    state = _state(store) if store is not None else {}
    out = []
    for job in jobs:
        s = state.get(job.id, {})
        nxt = job.trigger.get_next_fire_time(None, now)
        out.append(
            ScheduleInfo(
                job_id=job.id, name=job.name, kind=job.kind, schedule=job.schedule, timezone=job.timezone,
                next_run=utc(nxt) if nxt else None, last_started=parse_iso(s.get("last_started_at")),
                last_finished=parse_iso(s.get("last_finished_at")), last_status=s.get("last_status"),
                last_trigger=s.get("last_trigger"),
            )
        )
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(out, key=lambda i: (i.next_run or far, i.job_id))


def format_schedules(infos: list[ScheduleInfo], now: datetime | None = None) -> str:
    """The text of `clearml-chatops schedules` (and a fallback for `/clearml schedules`)."""
    now = utc(now)
    if not infos:
        return "No scheduled playbooks: add `schedule:` to a playbook (e.g. `schedule: {every: 5m}`)."
    header = ("JOB", "SCHEDULE", "TIMEZONE", "NEXT RUN (UTC)", "IN", "LAST RUN")
    table = [header]
    for i in infos:
        nxt = f"{i.next_run:%Y-%m-%d %H:%M:%S}" if i.next_run else "never"
        wait = format_duration((i.next_run - now).total_seconds()) if i.next_run else "—"
        last = "never"
        if i.last_started:
            last = f"{i.last_started:%Y-%m-%d %H:%M} {i.last_status or ''}".strip()
            if i.last_trigger and "catch-up" in i.last_trigger:
                last += " (catch-up)"
        table.append((i.job_id, i.schedule, i.timezone, nxt, wait, last))
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table)


# -- one run of a playbook, and the scheduled run `serve`, the demo and the benchmarks share -----------------------


async def run_once(
    playbook: Playbook,
    settings: Settings,
    server: ServerSettings,
    *,
    trigger: str,
    store: Store | None = None,
    snapshot: Snapshot | None = None,
    offload: Callable[..., Awaitable[Any]] | None = None,
) -> RunResult:
    """One run of one playbook: with `store`, the server's recorded fleet history (agents.missing `expected: auto`)
    and agent versions (server.compatibility); with `notify_owner`, each task finding's owner (for the DM when its
    incident opens), read over the same snapshot (its tasks are usually fetched already).

    `snapshot`: how to read ClearML (serve: through its shared read window); its caller closes the client. Without
    one the run opens and closes a client of its own. `offload(fn, *args)`: where the store is read when the run
    shares its event loop with others (the Slack work pool's `pool.io`: a thread, never the loop)."""
    from bot.clearml.client import ClearMLClient
    from bot.engine.runner import run_playbooks
    from bot.engine.snapshot import Snapshot

    if snapshot is None:
        async with ClearMLClient(server) as client:
            return await run_once(playbook, settings, server, trigger=trigger, store=store,
                                  snapshot=Snapshot(client, server, settings), offload=offload)
    history: dict[str, Any] = {}
    if store is not None:
        read = offload or (lambda fn, *args: fn(*args))
        history = {
            "fleet_history": lambda window_s: read(store.pool_history, server.api_url, window_s),
            "agent_versions": lambda: read(store.agent_versions, server.api_url),
        }
    result = await run_playbooks([playbook], settings, server, trigger=trigger, snapshot=snapshot, **history)
    if playbook.notify_owner:
        from bot.incidents.owners import attach_owners

        await attach_owners(snapshot, result.findings)
    return result


@dataclass(frozen=True)
class ScheduledRun:
    """A scheduled run as `on_result` gets it: recorded (`run_id`) and folded into the incidents already."""

    playbook: Playbook
    result: RunResult
    run_id: int
    gathered: Any = None  # what `while_connected` returned (serve: the queue list for the report's buttons)


def playbook_runner(
    settings: Settings,
    store: Store,
    pipeline: IncidentPipeline,
    *,
    server: ServerSettings | Callable[[Playbook], ServerSettings] | None = None,
    snapshot: Callable[[ServerSettings], Snapshot] | None = None,
    while_connected: Callable[[Snapshot, RunResult], Awaitable[Any]] | None = None,
    on_result: Callable[[ScheduledRun], Any] | None = None,
) -> RunPlaybook:
    """The `run_playbook` a Scheduler needs, the same for `serve`, the demo and the benchmarks: run the playbook
    against its server (`run_once`, with the store's history and the owners), then `while_connected` over the
    run's snapshot before its client closes (serve: the queue list), record the run, fold it into the incidents
    (which queues the messages), then `on_result` (serve: charts, Home tabs, the report; the demo: its narration).

    `server`: fixed settings, a function of the playbook, or None for `resolve_server(settings, playbook.server)`.
    `snapshot`: a snapshot over a new client for a server (serve: the shared read window); default a plain one.
    """

    def run(playbook: Playbook, trigger: str) -> RunResult:
        import asyncio

        from bot.clearml.client import ClearMLClient
        from bot.engine.snapshot import Snapshot

        if server is None:
            target = resolve_server(settings, playbook.server)
        elif callable(server):
            target = server(playbook)
        else:
            target = server

        async def connected() -> tuple[RunResult, Any]:
            snap = snapshot(target) if snapshot is not None else Snapshot(ClearMLClient(target), target, settings)
            try:
                result = await run_once(playbook, settings, target, trigger=trigger, store=store, snapshot=snap)
                gathered = await while_connected(snap, result) if while_connected is not None else None
            finally:
                await snap.client.aclose()
            return result, gathered

        # A fresh event loop in the scheduler's worker thread: runs never share one.
        result, gathered = asyncio.run(connected())
        run_id = store.record_run(result)
        pipeline.handle_run(result, run_id=run_id)
        if on_result is not None:
            on_result(ScheduledRun(playbook, result, run_id, gathered))
        return result

    return run


# -- `clearml-chatops schedules` -------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--playbooks", dest="playbooks_dir",
                        help="playbooks directory (default: ./playbooks, else the shipped ones)")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--config", help="the bot's YAML config file (default: $CLEARML_CHATOPS_CONFIG)")


def main(args: argparse.Namespace) -> int:
    """List every schedule with its next run time (and the last run, from the store when it exists)."""
    from bot.engine.playbook import find_playbooks, load_playbook

    settings = load_settings(args.config)
    from bot.engine.playbook_sources import playbooks_location

    directory = playbooks_location(args.playbooks_dir, settings.playbooks).path
    playbooks = [load_playbook(p) for p in find_playbooks(directory)] if directory.is_dir() else []
    jobs = build_jobs(playbooks, DigestSettings.from_settings(settings))
    store = None
    if settings.store_path.exists():
        from bot.store import Store

        store = Store(settings.store_path)
        ensure_schema(store)
    try:
        infos = next_runs(jobs, store)
    finally:
        if store is not None:
            store.close()
    if args.format == "json":
        json.dump([i.to_json() for i in infos], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_schedules(infos))
    return 0
