"""agents.watchdog_risk over the simulator, and the simulator's copy of clearml-server's non-responsive tasks
watchdog (stop in_progress tasks without an update for 7,200 s, checked every 900 s) that the check warns about."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.config import Settings
from bot.engine.findings import Finding
from bot.engine.playbook import CheckEntry, Playbook, load_playbook
from bot.engine.runner import RunResult, run_playbooks
from tests.helpers import server_settings, sim_data

CHECK = "agents.watchdog_risk"


def run(sim: Any, params: dict[str, Any] | None = None, playbooks: list[Playbook] | None = None) -> RunResult:
    books = playbooks or [Playbook(name="test", checks=[CheckEntry(check=CHECK, params=params or {})])]
    return asyncio.run(run_playbooks(books, Settings(), server_settings(sim)))


def risks(result: RunResult) -> dict[str, Finding]:
    assert not [f for f in result.findings if f.severity == "error"], [f.detail for f in result.findings]
    return {f.subject.name: f for f in result.findings if f.check == CHECK}


def task_doc(sim: Any, name: str) -> dict[str, Any]:
    return sim_data(sim, "tasks.get_by_id", {"task": sim.task_id(name)})["task"]


def test_zoo_names_the_silent_upload_before_the_server_stops_it(sim_factory: Any) -> None:
    sim = sim_factory(scenario="incident-zoo")
    found = risks(run(sim))
    # 110 minutes without an update: the only running task past 75 % of the 2 h limit in the zoo
    assert set(found) == {"export-raw-video-2024-05"}
    upload = found["export-raw-video-2024-05"]
    assert upload.severity == "critical"  # 10 minutes left: the next 15-minute cycle may stop it
    assert "the server stops it in 10m" in upload.title
    assert upload.evidence["last_worker"] is None and upload.actions == ["abort"]  # run from a workstation
    assert 590 <= upload.evidence["forced_stop_earliest_s"] <= 600
    assert "outside any agent" in upload.remediation and "threshold_sec" in upload.remediation
    assert "Forced stop (non-responsive)" in upload.detail

    # A quarter of an hour later the simulator's watchdog has run its first cycle and stopped it, as the server does
    sim.clock.advance(900)
    doc = task_doc(sim, "export-raw-video-2024-05")
    assert doc["status"] == "stopped"
    assert doc["status_reason"] == doc["status_message"] == "Forced stop (non-responsive)"
    assert risks(run(sim)) == {}
    # the other running tasks of the zoo reported within the last hour: untouched
    assert task_doc(sim, "sweep-lr-trial-17")["status"] == "in_progress"


def test_healthy_fleet_is_quiet_with_defaults_and_the_shipped_playbook(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy")
    assert risks(run(sim)) == {}
    shipped = run(sim, playbooks=[load_playbook("playbooks/agents.yaml")])
    assert CHECK in {c.id for c in shipped.checks}
    assert not [f for f in shipped.findings if f.check == CHECK]


def test_countdown_as_the_fleet_goes_silent_then_the_watchdog_fires(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy-fleet")
    running = {t["name"] for t in sim.iter_tasks() if t["status"] == "in_progress"}
    assert len(running) == 4
    sim.clock.advance(85 * 60)  # 85 minutes: below 75 % of 2 h
    assert risks(run(sim)) == {}
    assert risks(run(sim, {"share": 0.5})).keys() == running  # a lower share names them already

    sim.clock.advance(10 * 60)  # 95 minutes: named, 25 minutes before the limit
    found = risks(run(sim))
    assert found.keys() == running and {f.severity for f in found.values()} == {"warning"}
    # their agents expired from the worker list meanwhile: nobody runs them, so requeue is offered
    assert all(f.actions == ["requeue", "abort"] and not f.evidence["worker_running_it"] for f in found.values())

    sim.clock.advance(15 * 60)  # 110 minutes: inside the last watchdog interval
    assert {f.severity for f in risks(run(sim)).values()} == {"critical"}

    sim.clock.advance(20 * 60)  # 130 minutes: the watchdog cycle 2 h after load (the 8th) has stopped them all
    assert risks(run(sim)) == {}
    stopped = [t for t in sim.iter_tasks() if t["name"] in running]
    assert {t["status"] for t in stopped} == {"stopped"}
    assert {t["status_reason"] for t in stopped} == {"Forced stop (non-responsive)"}


def test_simulator_watchdog_timing_and_settings(sim_factory: Any) -> None:
    scenario = {
        "name": "watchdog",
        "tasks": [
            {"name": "almost", "status": "in_progress", "started": "-3h", "last_update": "-1h59m"},
            {"name": "fresh", "status": "in_progress", "started": "-3h", "last_update": "-10m"},
        ],
    }
    sim = sim_factory(scenario=scenario)
    sim.clock.advance(899)  # the first cycle comes one interval after start: nothing has run yet
    assert task_doc(sim, "almost")["status"] == "in_progress"
    sim.clock.advance(2)
    almost = task_doc(sim, "almost")
    assert almost["status"] == "stopped" and almost["status_reason"] == "Forced stop (non-responsive)"
    assert task_doc(sim, "fresh")["status"] == "in_progress"
    # the stop is stamped with the cycle's time (load + 900 s), not with the time of the request that saw it
    loaded = sim.state.loaded_at.timestamp()
    stamps = [t["status_changed"] for t in sim.iter_tasks() if t["name"] == "almost"]
    assert abs(stamps[0].timestamp() - (loaded + 900)) < 0.01

    disabled = sim_factory(scenario={**scenario, "server": {"watchdog": {"enabled": False}}})
    disabled.clock.advance(6 * 3600)
    assert task_doc(disabled, "almost")["status"] == "in_progress"

    quick = sim_factory(scenario={**scenario, "server": {"watchdog": {"threshold_sec": 600, "watch_interval_sec": 60}}})
    quick.clock.advance(61)
    assert task_doc(quick, "fresh")["status"] == "stopped"
