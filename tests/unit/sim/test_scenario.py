"""Scenario loading: the format's contract, relative times, includes, and one clear error per broken file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.sim.clock import SimClock
from bot.sim.scenario import ScenarioError, build_state, list_scenarios
from bot.sim.state import SimState, derived_id


def load(data: dict[str, Any] | str | Path) -> SimState:
    return build_state(data, SimClock(), files_url="http://files.test:8081")


def broken(tmp_path: Path, text: str, name: str = "broken.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load(path)
    return str(info.value)


@pytest.mark.parametrize("name", list_scenarios())
def test_every_shipped_scenario_loads(name: str) -> None:
    state = load(name)
    assert state.users and state.credentials


def test_relative_times_ids_and_references() -> None:
    state = load({
        "queues": [{"name": "gpu"}],
        "workers": [{"id": "w:0", "queues": ["gpu"], "last_activity": "-20s", "task": "run"}],
        "tasks": [
            {"name": "run", "status": "in_progress", "started": "-1h30m", "project": "team/vision",
             "execution": {"queue": "gpu"}},
            {"name": "child", "parent": "run", "created": "2024-05-01T12:00:00Z"},
        ],
    })
    now = state.loaded_at
    run = state.tasks[derived_id("task", "run")]
    assert abs((now - run["started"]) - timedelta(minutes=90)) < timedelta(seconds=1)
    assert run["execution"]["queue"] == derived_id("queue", "gpu")
    assert run["project"] == derived_id("project", "team/vision")
    assert {p["name"] for p in state.projects.values()} == {"team", "team/vision"}  # parents created
    assert run["last_worker"] == "w:0" and run["active_duration"] == 5400
    child = state.tasks[derived_id("task", "child")]
    assert child["parent"] == run["id"] and child["created"].isoformat() == "2024-05-01T12:00:00+00:00"
    worker = next(iter(state.workers.values()))
    assert worker["task"] == run["id"] and worker["queue"] == derived_id("queue", "gpu")
    assert abs((now - worker["last_activity_time"]).total_seconds() - 20) < 1


def test_queued_tasks_join_their_queue_unless_entries_are_explicit() -> None:
    state = load({
        "queues": [{"name": "a"}, {"name": "b", "entries": []}],
        "tasks": [
            {"name": "t1", "status": "queued", "status_changed": "-5m", "execution": {"queue": "a"}},
            {"name": "t2", "status": "queued", "execution": {"queue": "b"}},
            {"name": "t3"},
        ],
    })
    assert [e["task"] for e in state.queues[derived_id("queue", "a")]["entries"]] == [derived_id("task", "t1")]
    assert state.queues[derived_id("queue", "b")]["entries"] == []  # explicit: a lost queue entry
    state = load({"queues": [{"name": "a", "entries": ["t3"]}], "tasks": [{"name": "t3"}]})
    t3 = state.tasks[derived_id("task", "t3")]
    assert t3["status"] == "queued" and t3["execution"]["queue"] == derived_id("queue", "a")


def test_log_lines_get_timestamps() -> None:
    state = load({"tasks": [{"name": "job", "started": "-10m", "log": [
        "first", "second", {"msg": "boom", "at": "-1m", "level": "error"}]}]})
    events = state.events[derived_id("task", "job")]
    assert [e["msg"] for e in events] == ["first", "second", "boom"]
    stamps = [e["timestamp"] for e in events]
    assert stamps[1] - stamps[0] == 1000 and events[2]["level"] == "error"


def test_faults_section() -> None:
    state = load({"faults": {"reject_logins": True, "latency_ms": 25, "token_ttl_s": 60,
                             "endpoints": {"queues.get_queue_metrics": {"html": True},
                                           "tasks.*": {"status": 500, "traceback": True, "times": 2}},
                             "fileserver": {"enabled": False}}})
    faults = state.faults
    assert faults.reject_logins and faults.latency_ms == 25 and faults.token_ttl_s == 60
    assert faults.endpoints["queues.get_queue_metrics"].status == 502
    assert faults.endpoints["tasks.*"].times == 2 and not faults.fileserver_enabled


def test_include_concatenates_lists_and_merges_mappings(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(
        "queues: [{name: gpu}]\ntasks: [{name: base-task}]\nfaults: {latency_ms: 5, reject_logins: true}\n")
    (tmp_path / "main.yaml").write_text(
        "name: main\ninclude: [fleet.yaml]\ntasks: [{name: more, execution: {queue: gpu}}]\n"
        "faults: {reject_logins: false}\n")
    state = load(tmp_path / "main.yaml")
    assert {t["name"] for t in state.tasks.values()} == {"base-task", "more"}
    assert state.faults.latency_ms == 5 and state.faults.reject_logins is False and state.name == "main"


def test_errors_name_the_file_line_and_key(tmp_path: Path) -> None:
    msg = broken(tmp_path, "tasks:\n  - name: a\n    status: runing\n")
    assert msg.startswith(f"{tmp_path}/broken.yaml:3: tasks[0].status:") and "did you mean 'in_progress'" in msg
    msg = broken(tmp_path, "workers:\n  - id: w\n    last_activty: -1m\n")
    assert "broken.yaml:3: workers[0].last_activty" in msg and "did you mean 'last_activity'" in msg
    msg = broken(tmp_path, "tasks:\n  - name: a\n    created: 15m\n")
    assert "broken.yaml:3: tasks[0].created" in msg and "-15m" in msg
    msg = broken(tmp_path, "queues:\n  - name: gpu\n    entries:\n      - {task: nothing}\n")
    assert "broken.yaml:4: queues[0].entries[0].task: unknown task 'nothing'" in msg
    msg = broken(tmp_path, "tasks: [\n  {name: a\n")
    assert msg.startswith(f"{tmp_path}/broken.yaml:") and "invalid YAML" in msg
    msg = broken(tmp_path, "tasks:\n  - {name: a, execution: {queue: gpu}}\n")
    assert "tasks[0].execution.queue: unknown queue 'gpu'" in msg
    msg = broken(tmp_path, "taskz: []\n")
    assert "broken.yaml:1: taskz: unknown key 'taskz'; did you mean 'tasks'?" in msg


def test_errors_in_included_files_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "part.yaml").write_text("tasks:\n  - name: ok\n  - name: bad\n    type: trainning\n")
    msg = broken(tmp_path, "include: [part.yaml]\n", name="top.yaml")
    assert msg.startswith(f"{tmp_path}/part.yaml:4: tasks[1].type:") and "did you mean 'training'" in msg
    msg = broken(tmp_path, "include: [missing.yaml]\n", name="top.yaml")
    assert "top.yaml:1: include: included file 'missing.yaml' not found" in msg
    (tmp_path / "loop.yaml").write_text("include: [loop.yaml]\n")
    with pytest.raises(ScenarioError, match="include cycle"):
        load(tmp_path / "loop.yaml")


def test_unknown_scenario_name_suggests_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match="did you mean 'basic'"):
        load("basik")


def test_dict_scenarios_name_the_key_path() -> None:
    with pytest.raises(ScenarioError, match=r"^<dict>: workers\[0\]\.queues\[0\]: unknown queue 'gpu'"):
        load({"workers": [{"id": "w", "queues": ["gpu"]}]})
    with pytest.raises(ScenarioError, match=r"datasets\[0\]\.parents\[0\]: unknown dataset 'nope'"):
        load({"datasets": [{"name": "d", "project": "p", "parents": ["nope"]}]})
