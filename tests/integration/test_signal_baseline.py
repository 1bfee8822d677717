"""The learned baseline of agents.missing (`expected: auto`, issue 13): a fresh install says once that it is
learning; with a week of history a pool that is usually there and is gone now is reported; autoscaled pools at
zero with empty queues are normal. The check reads the history from the snapshot; the runner loads it from the
store."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.engine.baseline import pool_of
from bot.engine.findings import Finding, is_problem
from bot.engine.playbook import CheckEntry, Playbook, load_playbook
from bot.engine.runner import RunResult, run_playbooks
from bot.sim.fleet import generate_healthy_fleet
from bot.store import Store
from tests.helpers import server_settings

REPO = Path(__file__).resolve().parents[2]
AGENTS = load_playbook(REPO / "playbooks" / "agents.yaml")
MISSING_ONLY = Playbook(name="missing", checks=[CheckEntry(check="agents.missing"),
                                                CheckEntry(check="agents.unserved_queues")])


def run(sim: Any, store: Store, playbook: Playbook = MISSING_ONLY) -> RunResult:
    settings = server_settings(sim)
    result = asyncio.run(run_playbooks(
        [playbook], Settings(), settings, fleet_history=lambda w: store.pool_history(settings.api_url, w)))
    store.record_run(result)
    return result


def missing(result: RunResult) -> list[Finding]:
    return [f for f in result.findings if f.check == "agents.missing"]


def a_week_of(store: Store, result: RunResult, runs: int = 168) -> None:
    """Copy the pools this run recorded back over the last week, one run an hour: the usual fleet."""
    row = next(store.db.execute("SELECT server_url, pools FROM fleet_pools ORDER BY at DESC LIMIT 1"))
    now = datetime.now(UTC)
    for i in range(1, runs + 1):
        at = (now - timedelta(hours=i)).isoformat(timespec="microseconds")
        store.db.execute("INSERT INTO fleet_pools (run_id, at, server_url, pools) VALUES (?, ?, ?, ?)",
                         [100000 + i, at, row[0], row[1]])


def mixed_fleet() -> dict[str, Any]:
    # four pools: train-*.cluster.local:*, dynamic_worker:<resource>:* (three resources), clearml-id-*, runner-*
    # worker i serves queue i % 4 and is named by scheme i % 4, so each pool serves one queue of its own
    return generate_healthy_fleet(workers=24, queues=4, tasks=40, naming="mixed", seed=5)


def without(fleet: dict[str, Any], pattern_prefix: str) -> dict[str, Any]:
    out = copy.deepcopy(fleet)
    gone = {w["id"] for w in out["workers"] if pool_of(w["id"]).startswith(pattern_prefix)}
    out["workers"] = [w for w in out["workers"] if w["id"] not in gone]
    for t in out["tasks"]:
        if t.get("last_worker") in gone and t["status"] == "in_progress":
            t["status"], t["completed"] = "completed", t["last_update"]
    return out


def test_fresh_store_says_once_that_it_is_learning(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(scenario=mixed_fleet())
    store = Store(tmp_path / "state.db")
    [first] = missing(run(sim, store, AGENTS))  # the shipped playbook: expected: auto
    assert first.severity == "info" and "Learning the usual agent pools" in first.title
    assert first.evidence["runs_needed"] == 12
    assert missing(run(sim, store, AGENTS)) == []  # said once; quiet while the history fills
    store.close()


def test_a_week_of_history_reports_the_pool_that_is_gone(sim_factory: Any, tmp_path: Path) -> None:
    fleet = mixed_fleet()
    store = Store(tmp_path / "state.db")
    sim = sim_factory(scenario=fleet)  # one server (the history is per server URL); its state changes below
    a_week_of(store, run(sim, store))
    assert missing(run(sim, store)) == []  # the usual fleet: nothing missing
    broken = without(fleet, "runner-")
    runner_queues = {q for w in fleet["workers"] if w["id"].startswith("runner-") for q in w["queues"]}
    for q in broken["queues"]:  # work waits in the queues the pool served
        if q["id"] in runner_queues:
            q["entries"] = [{"task": broken["tasks"][-1]["id"], "added": -600}]
            broken["tasks"][-1].update(status="queued", execution={"queue": q["id"]})
            break
    sim.load_scenario(broken)
    result = run(sim, store)
    [pool] = missing(result)
    assert pool.severity == "critical" and pool.subject.id == "runner-*"
    assert pool.evidence["usual"] == 6 and pool.evidence["found"] == 0 and pool.evidence["runs"] >= 169
    assert "usually 6" in pool.title
    unserved = [f for f in result.findings if f.check == "agents.unserved_queues"]
    assert unserved and all(f.caused_by == pool.fingerprint for f in unserved)  # one group: the pool and its queue
    store.close()


def test_an_autoscaled_pool_at_zero_is_normal_while_its_queues_are_empty(sim_factory: Any, tmp_path: Path) -> None:
    fleet = mixed_fleet()
    store = Store(tmp_path / "state.db")
    sim = sim_factory(scenario=fleet)
    a_week_of(store, run(sim, store))
    scaled_down = without(fleet, "dynamic_worker:")
    sim.load_scenario(copy.deepcopy(scaled_down))
    assert [f for f in missing(run(sim, store)) if is_problem(f.severity)] == []
    # the same pools at zero while work waits for them: the autoscaler did not scale up
    pool_queues = {q for w in fleet["workers"] if w["id"].startswith("dynamic_worker:gpu-l4:") for q in w["queues"]}
    for q in scaled_down["queues"]:
        if q["id"] in pool_queues:
            q["entries"] = [{"task": scaled_down["tasks"][-1]["id"], "added": -300}]
            scaled_down["tasks"][-1].update(status="queued", execution={"queue": q["id"]})
            break
    sim.load_scenario(scaled_down)
    found = {f.subject.id: f for f in missing(run(sim, store))}
    # the three autoscaler resources of this fleet all serve that queue
    assert set(found) == {"dynamic_worker:gpu-l4:*", "dynamic_worker:gpu-h100:*", "dynamic_worker:cpu-m6i:*"}
    assert {f.severity for f in found.values()} == {"warning"}
    assert "no instance while 1 task(s) wait" in found["dynamic_worker:gpu-l4:*"].title
    store.close()


def test_the_cli_keeps_the_history_and_an_explicit_list_still_works(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(scenario="healthy")
    key, secret = sim.keys[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML", "SLACK"))}
    env.update(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"), CLEARML_API_HOST=sim.api_url,
               CLEARML_WEB_HOST=sim.web_url, CLEARML_FILES_HOST=sim.files_url, CLEARML_API_ACCESS_KEY=key,
               CLEARML_API_SECRET_KEY=secret)

    def cli_run(playbook: str) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-m", "bot", "run", playbook, "--format", "json"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    first = [f for f in cli_run("agents")["findings"] if f["check"] == "agents.missing"]
    assert [f["severity"] for f in first] == ["info"]
    assert [f for f in cli_run("agents")["findings"] if f["check"] == "agents.missing"] == []
    explicit = tmp_path / "fleet.yaml"
    explicit.write_text("name: fleet\nchecks:\n  - check: agents.missing\n    params:\n      expected:\n"
                        "        - {pattern: \"gpu-*\", min: 4}\n        - {pattern: \"tpu-*\", min: 1}\n")
    proc = subprocess.run([sys.executable, "-m", "bot", "run", str(explicit), "--format", "json"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and [f["subject"]["id"] for f in doc["findings"] if f["severity"] == "critical"] == [
        "tpu-*"]


def test_observations_older_than_the_longest_window_are_pruned(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(scenario=mixed_fleet())
    store = Store(tmp_path / "state.db")
    run(sim, store)
    old = (datetime.now(UTC) - timedelta(days=31)).isoformat(timespec="microseconds")
    store.db.execute("INSERT INTO fleet_pools (run_id, at, server_url, pools) VALUES (?, ?, ?, ?)",
                     [99, old, sim.api_url, "{}"])
    run(sim, store)
    ats = [r[0] for r in store.db.execute("SELECT at FROM fleet_pools ORDER BY at")]
    assert len(ats) == 2 and old not in ats
    store.close()
