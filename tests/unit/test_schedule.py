"""Schedules: triggers from playbooks, APScheduler job options, catch-up after downtime, next run times, CLI."""

from __future__ import annotations

import argparse
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.engine.playbook import Playbook, parse_playbook
from bot.incidents.digest import DigestSettings
from bot.schedule import (
    Scheduler,
    add_arguments,
    build_jobs,
    fire_times_between,
    format_schedules,
    main,
    next_runs,
    trigger_for,
)
from bot.store import Store
from tests.unit._incidents_support import T0


def playbook(name: str, schedule: str) -> Playbook:
    return parse_playbook(f"name: {name}\n{schedule}\nchecks:\n  - check: server.reachable\n", f"{name}.yaml")


PLAYBOOKS = [
    playbook("health", "schedule: {every: 30s}"),
    playbook("queues", 'schedule: "*/5 * * * *"'),
    playbook("nightly", 'schedule: {cron: "0 2 * * *", timezone: Europe/Berlin}'),
    playbook("adhoc", ""),
]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store.db")
    yield s  # type: ignore[misc]
    s.close()


def make(store: Store, clock: Clock, ran: list[tuple[str, str]], **kwargs: Any) -> Scheduler:
    return Scheduler(
        store, PLAYBOOKS, run_playbook=lambda pb, trigger: ran.append((pb.name, trigger)),
        run_digest=lambda trigger: ran.append(("digest", trigger)),
        digest=DigestSettings(schedule="0 9 * * 1-5", timezone="Europe/Berlin"), clock=clock,
        scheduler=BackgroundScheduler(timezone=UTC), **kwargs,
    )


def test_triggers_and_job_options(store: Store) -> None:
    sched = make(store, Clock(T0), [], misfire_grace_s=45)
    jobs = {j.id: j for j in sched.scheduler.get_jobs()}
    assert set(jobs) == {"playbook:health", "playbook:queues", "playbook:nightly", "digest"}  # adhoc has none
    for job in jobs.values():
        assert job.coalesce is True and job.max_instances == 1 and job.misfire_grace_time == 45
    assert isinstance(jobs["playbook:health"].trigger, IntervalTrigger)
    nightly = jobs["playbook:nightly"].trigger
    assert isinstance(nightly, CronTrigger) and str(nightly.timezone) == "Europe/Berlin"
    # Next run times, soonest first (T0 is 09:00 UTC on a Monday; Berlin is UTC+1 in November).
    infos = sched.next_runs(T0 + timedelta(seconds=1))
    assert [(i.job_id, i.next_run) for i in infos] == [
        ("playbook:health", T0 + timedelta(seconds=30)),
        ("playbook:queues", T0 + timedelta(minutes=5)),
        ("playbook:nightly", datetime(2026, 11, 3, 1, 0, tzinfo=UTC)),
        ("digest", datetime(2026, 11, 3, 8, 0, tzinfo=UTC)),
    ]
    text = format_schedules(infos, T0 + timedelta(seconds=1))
    assert "every 30s" in text and "Europe/Berlin" in text and "never" in text


def test_a_playbook_timezone_applies_to_its_cron_string() -> None:
    pb = playbook("tz", 'schedule: "0 9 * * *"\ntimezone: America/New_York')
    (job,) = build_jobs([pb])
    assert job.timezone == "America/New_York"
    assert job.trigger.get_next_fire_time(None, T0) == datetime(2026, 11, 2, 14, 0, tzinfo=UTC)


def test_interval_schedules_tick_on_a_fixed_grid() -> None:
    trigger, text, tz = trigger_for(playbook("x", "schedule: {every: 5m}").schedule)  # type: ignore[arg-type]
    assert text == "every 5m" and tz == "UTC"
    assert trigger.get_next_fire_time(None, T0 + timedelta(seconds=7)) == T0 + timedelta(minutes=5)
    assert fire_times_between(trigger, T0, T0 + timedelta(hours=1)) == (12, T0 + timedelta(hours=1))
    week = fire_times_between(IntervalTrigger(seconds=1, start_date=T0, timezone=UTC), T0, T0 + timedelta(days=7))
    assert week[0] == 7 * 86400


def test_runs_are_recorded_and_a_missed_run_catches_up_once_and_says_so(store: Store) -> None:
    clock, ran = Clock(T0), []
    sched = make(store, clock, ran)
    assert sched.plan_catchups() == []  # first start ever: nothing was missed
    clock.now = T0 + timedelta(minutes=5)
    assert sched.run_job("playbook:queues") == "ok"
    assert ran == [("queues", "schedule")]

    # The bot goes down at 09:06 and comes back at 09:31: five 5-minute runs were missed.
    clock.now = T0 + timedelta(minutes=31)
    restarted = make(store, clock, ran)
    catchups = {c.job_id: c for c in restarted.plan_catchups()}
    assert set(catchups) == {"playbook:queues"}  # the others never ran here: nothing missed
    c = catchups["playbook:queues"]
    assert c.missed == 5 and c.last_due == T0 + timedelta(minutes=30)
    assert c.note == "schedule (catch-up: missed 5 scheduled runs, the last due 2026-11-02 09:30 UTC, while the bot "\
                     "was down)"
    restarted.run_job(c.job_id, c.note)
    assert ran[-1] == ("queues", c.note)
    info = {i.job_id: i for i in restarted.next_runs()}["playbook:queues"]
    assert info.last_trigger == c.note and info.last_status == "ok"
    assert "(catch-up)" in format_schedules(restarted.next_runs(), clock.now)
    # Caught up: a further restart before the next fire time runs nothing.
    assert make(store, clock, ran).plan_catchups() == []


def test_an_interrupted_run_catches_up(store: Store) -> None:
    clock, ran = Clock(T0), []
    sched = make(store, clock, ran)

    def dies(pb: Playbook, trigger: str) -> None:
        raise SystemExit("kill -9")  # not an Exception: the finish is never recorded, as after a real kill

    sched.run_playbook = dies
    with pytest.raises(SystemExit):
        sched.run_job("playbook:nightly")
    clock.now = T0 + timedelta(seconds=10)
    (c,) = make(store, clock, ran).plan_catchups()
    assert c.job_id == "playbook:nightly" and c.missed == 0 and "was interrupted" in c.note


def test_a_failing_run_is_recorded_and_does_not_stop_the_schedule(store: Store) -> None:
    clock = Clock(T0)
    sched = Scheduler(store, PLAYBOOKS, run_playbook=lambda pb, t: 1 / 0, clock=clock,
                      scheduler=BackgroundScheduler(timezone=UTC))
    assert sched.run_job("playbook:health") == "error"
    info = {i.job_id: i for i in sched.next_runs()}["playbook:health"]
    assert info.last_status == "error"
    assert "digest" not in sched.jobs  # no digest runner given: no digest job


def test_one_run_at_a_time_per_job(store: Store) -> None:
    gate, entered = threading.Event(), threading.Event()

    def slow(pb: Playbook, trigger: str) -> None:
        entered.set()
        gate.wait(5)

    sched = Scheduler(store, PLAYBOOKS, run_playbook=slow, scheduler=BackgroundScheduler(timezone=UTC))
    worker = threading.Thread(target=sched.run_job, args=("playbook:health",))
    worker.start()
    assert entered.wait(5)
    assert sched.run_job("playbook:health", "schedule (catch-up: ...)") == "skipped"
    gate.set()
    worker.join(5)


def test_the_real_background_scheduler_runs_the_catch_up_at_start(store: Store) -> None:
    done = threading.Event()
    triggers: list[str] = []

    def record(pb: Playbook, trigger: str) -> None:
        triggers.append(trigger)
        done.set()

    first = Scheduler(store, PLAYBOOKS, run_playbook=lambda pb, t: None, clock=lambda: datetime.now(UTC) -
                      timedelta(hours=1))
    first.run_job("playbook:queues")
    sched = Scheduler(store, PLAYBOOKS, run_playbook=record)
    try:
        catchups = sched.start()
        assert [c.job_id for c in catchups] == ["playbook:queues"]
        assert done.wait(10), "the catch-up run should start at once"
        assert "catch-up: missed" in triggers[0]
        next_time = {j.id: j.next_run_time for j in sched.scheduler.get_jobs()}
        assert next_time["playbook:health"] is not None
    finally:
        sched.shutdown(wait=True)


def test_schedules_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pbdir = tmp_path / "playbooks"
    pbdir.mkdir()
    (pbdir / "health.yaml").write_text("name: health\nschedule: {every: 1m}\nchecks:\n  - check: server.reachable\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"store: {tmp_path / 'store.db'}\nslack:\n  digest: {{schedule: '0 9 * * *'}}\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert main(parser.parse_args(["--playbooks", str(pbdir), "--config", str(config)])) == 0
    out = capsys.readouterr().out
    assert "playbook:health" in out and "every 1m" in out and "digest" in out
    assert main(parser.parse_args(["--playbooks", str(pbdir), "--config", str(config), "--format", "json"])) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["job"] for d in data} == {"playbook:health", "digest"}
    assert all(d["next_run"] for d in data)
    assert next_runs([], None) == []
