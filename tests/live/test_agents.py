"""Real clearml-agent daemons (PyPI's, in venv mode) against the simulator, and the bot watching them.

What the agent sends is asserted from the simulator's call log; what the bot sees goes through its own client,
engine and actions. Minutes of agent life are covered by moving the simulator's clock (the agents report on wall
time, the server judges ages on its own clock), never by sleeping.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from bot.actions import ActionDeps, ActionRequest, Actor, execute_action
from bot.checks.agents import OrphanedParams, StaleParams
from bot.config import Settings
from bot.live.agents import AgentFleet
from bot.live.timewarp import TimeWarp
from bot.sim.server import SimServer
from bot.store import Store
from tests.helpers import server_settings, sim_request
from tests.live.conftest import (
    AGENT_A,
    AGENT_B,
    CRASH_ID,
    GATED_ID,
    HELLO_ID,
    api,
    listed_workers,
    needs_agent,
    problems,
    run_checks,
    start_agent,
    task_log,
    task_status,
    wait_for,
    wait_reported_since,
)

pytestmark = needs_agent


def act(sim: SimServer, tmp_path: Path, action: str, subject: str, **params: object) -> object:
    """Run a remediation action the way the terminal does (same core as a Slack click)."""
    store = Store(tmp_path / "store.db")
    try:
        return asyncio.run(execute_action(
            ActionRequest(action=action, subject=subject, params=params), settings=Settings(), store=store,
            actor=Actor.terminal("tester"), deps=ActionDeps(server_resolver=lambda _name: server_settings(sim)),
        ))
    finally:
        store.close()


def test_agent_registers_reports_and_unregisters(live_sim: SimServer, fleet: AgentFleet) -> None:
    sim = live_sim
    start_agent(fleet, sim, AGENT_A, "cpu-a")
    workers = wait_for("the agent in workers.get_all", lambda: listed_workers(sim), 10, fleet)
    worker = workers[AGENT_A]
    assert [q["name"] for q in worker["queues"]] == ["cpu-a"]
    assert worker["ip"] == "127.0.0.1" and worker["user"]["name"] == "Ops"
    assert "task" not in worker  # idle

    # What the agent sent: login, its queue resolved by (escaped) name, registration with the queue's id, then
    # status reports with machine stats and a millisecond timestamp.
    wait_for("a status report with machine stats",
             lambda: [r for r in sim.calls_to("workers.status_report") if r.get("machine_stats")], 10, fleet)
    names = [name for name, _ in sim.calls]
    assert names[0] == "auth.login"
    queue_id = sim.queue_id("cpu-a")
    assert {"name": "cpu\\-a", "only_fields": ["name", "id"]} in sim.calls_to("queues.get_all")
    assert sim.calls_to("workers.register")[0] == {"worker": AGENT_A, "queues": [queue_id]}
    report = next(r for r in sim.calls_to("workers.status_report") if r.get("machine_stats"))
    assert report["worker"] == AGENT_A and report["queues"] == [queue_id]
    assert report["timestamp"] % 1000 == 0 and abs(report["timestamp"] / 1000 - time.time()) < 600
    assert {"cpu_usage", "memory_used", "memory_free"} <= set(report["machine_stats"])
    assert sim.calls_to("queues.get_next_task")[0] == {"queue": queue_id}
    # The agent asks for runtime properties; the open-source server has no such endpoint and answers 404.
    assert "workers.get_runtime_properties" in names
    missing = sim_request(sim, "workers.get_runtime_properties", {"worker": AGENT_A})
    assert missing.status_code == 404
    assert missing.json()["meta"]["result_msg"].startswith("Unable to find endpoint for name "
                                                           "workers.get_runtime_properties")

    fleet.stop(AGENT_A)  # SIGTERM: a clean shutdown unregisters
    assert sim.calls_to("workers.unregister")[-1]["worker"] == AGENT_A
    assert AGENT_A not in listed_workers(sim)


def test_agent_runs_inline_tasks_to_completion_failure_and_abort(live_sim: SimServer, fleet: AgentFleet,
                                                                 gate: Path, tmp_path: Path) -> None:
    sim = live_sim
    start_agent(fleet, sim, AGENT_A, "cpu-a")

    # The real SDK clones the inline template and enqueues the clone (while the agent starts); the agent runs it.
    home = tmp_path / "sdk-home"
    home.mkdir()
    script = textwrap.dedent(f"""
        from clearml import Task
        clone = Task.clone(source_task=Task.get_task(task_id={HELLO_ID!r}), name="hello (clone)")
        Task.enqueue(clone, queue_name="cpu-a")
        print("CLONE", clone.id)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env.update({**sim.env(), "HOME": str(home), "CLEARML_CONFIG_FILE": str(home / "none.conf")})
    sdk = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=home, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the agent to register", lambda: AGENT_A in listed_workers(sim), 10, fleet)
        stdout, stderr = sdk.communicate(timeout=60)
    finally:
        if sdk.poll() is None:
            sdk.kill()
            sdk.wait(10)
    assert sdk.returncode == 0, stdout + stderr
    clone = stdout.split("CLONE ")[-1].strip()
    wait_for("the clone to complete", lambda: task_status(sim, clone) == "completed", 30, fleet)
    task = api(sim, "tasks.get_by_id", {"task": clone})["task"]
    assert task["name"] == "hello (clone)" and task["parent"] == HELLO_ID
    assert task["last_worker"] == AGENT_A and task["status_reason"] == "worker execution done"
    assert task["status_message"] == f"Changed by clearml-agent {AGENT_A}"
    log = task_log(sim, clone)
    assert log.index("hello from an inline task") < log.index("step 0") < log.index("step 2")
    assert "Process completed successfully" in log

    # A program that exits with 3 fails, with the agent's reason.
    api(sim, "tasks.enqueue", {"task": CRASH_ID, "queue_name": "cpu-a"})
    wait_for("the crash to fail", lambda: task_status(sim, CRASH_ID) == "failed", 30, fleet)
    crashed = api(sim, "tasks.get_by_id", {"task": CRASH_ID})["task"]
    assert crashed["status_reason"] == "worker execution exit code 3"
    assert "about to fail" in task_log(sim, CRASH_ID)

    # The bot's abort action on a task running on a live agent: tasks.stop leaves it in_progress ("stopping"),
    # the agent sees it, kills the program and reports it stopped.
    api(sim, "tasks.enqueue", {"task": GATED_ID, "queue_name": "cpu-a"})
    wait_for("the gated task to run", lambda: "waiting for the gate" in task_log(sim, GATED_ID), 30, fleet)
    outcome = act(sim, tmp_path, "abort", GATED_ID)
    assert outcome.status == "ok", outcome  # type: ignore[attr-defined]
    wait_for("the agent to stop the task", lambda: task_status(sim, GATED_ID) == "stopped", 30, fleet)
    stopped = api(sim, "tasks.get_by_id", {"task": GATED_ID})["task"]
    assert stopped["status_reason"] == "task was stopped by tasks.stop"
    assert "gate open" not in task_log(sim, GATED_ID)

    # The agent's side of running a task, from the simulator's call log.
    dequeues = sim.calls_to("tasks.dequeue")
    assert {"task": clone, "new_status": "in_progress"} in dequeues
    reasons = [c.get("status_reason") for c in sim.calls_to("tasks.started") if c["task"] == clone]
    assert "worker started execution" in reasons
    assert any(c["task"] == clone for c in sim.calls_to("tasks.ping"))
    batches = [e for b in sim.calls_to("events.add_batch") for e in b["events"]]
    assert all(e["type"] == "log" and e["worker"] == AGENT_A and isinstance(e["timestamp"], int) for e in batches)
    assert [c["task"] for c in sim.calls_to("tasks.completed")] == [clone]
    assert [c["task"] for c in sim.calls_to("tasks.failed")] == [CRASH_ID]
    assert [c["task"] for c in sim.calls_to("tasks.stopped")] == [GATED_ID]


def test_healthy_agents_never_look_stale_with_default_thresholds(live_sim: SimServer, fleet: AgentFleet) -> None:
    """Agents report every 2 s of wall time while the simulator's clock runs 15x: every report interval is 30 s
    on the server's clock, like production. 100 simulated seconds pass in about 7; the default agents.stale and
    agents.unserved_queues never warn."""
    sim = live_sim
    for worker_id, queue in ((AGENT_A, "cpu-a"), (AGENT_B, "cpu-b")):
        start_agent(fleet, sim, worker_id, queue, report_s=2.0)
    wait_for("two agents reporting", lambda: {r["worker"] for r in sim.calls_to("workers.status_report")}
             >= {AGENT_A, AGENT_B}, 15, fleet)
    before = len(sim.calls_to("workers.status_report"))
    worst = 0.0
    runs = 0
    with TimeWarp(sim.clock, rate=15) as warp:
        while warp.elapsed_sim_s() < 100 or runs < 5:
            result = run_checks(sim, "agents.stale", "agents.unserved_queues")
            runs += 1
            assert not problems(result), [f.title for f in problems(result)]
            assert result.metrics["agents.alive"] == 2
            now = sim.clock.now()
            with sim.state.lock:
                ages = [(now - w["last_activity_time"]).total_seconds() for w in sim.state.workers.values()]
            worst = max(worst, *ages)
            time.sleep(0.2)
        covered = warp.elapsed_sim_s()
    reports = len(sim.calls_to("workers.status_report")) - before
    assert covered >= 100 and reports >= 6  # three or more 30 s intervals per agent
    assert worst < StaleParams().stale_after
    print(f"\nhealthy agents: {covered:.0f} simulated s, {runs} runs, {reports} reports, "
          f"oldest last activity seen {worst:.1f} simulated s")


def test_killed_agent_is_reported_and_its_task_requeued_to_the_other_agent(
    live_sim: SimServer, fleet: AgentFleet, gate: Path, tmp_path: Path
) -> None:
    sim = live_sim
    pid_a = start_agent(fleet, sim, AGENT_A, "cpu-a")
    start_agent(fleet, sim, AGENT_B, "cpu-b")
    wait_for("both agents", lambda: {AGENT_A, AGENT_B} <= set(listed_workers(sim)), 10, fleet)
    api(sim, "tasks.enqueue", {"task": GATED_ID, "queue_name": "cpu-a"})
    wait_for("the task running on live-a", lambda: "waiting for the gate" in task_log(sim, GATED_ID), 30, fleet)
    assert listed_workers(sim)[AGENT_A]["task"]["id"] == GATED_ID

    assert fleet.kill(AGENT_A) == pid_a  # SIGKILL to the daemon and its task: nothing tells the server
    assert fleet.pid(AGENT_A) is None and not psutil.pid_exists(pid_a)
    killed_at = sim.clock.time()
    stale_after, dead_after = StaleParams().stale_after, StaleParams().dead_after

    def silence(seconds: float) -> None:
        """Let the killed agent be silent for `seconds` of server time; the live one reports meanwhile."""
        sim.clock.advance(killed_at + seconds - sim.clock.time())
        wait_reported_since(sim, AGENT_B, sim.clock.time() - 1, 10, fleet)

    # Two report intervals (30 s each) after the kill, plus a moment for the schedule: the default thresholds
    # already name the silent agent (an `info` notice; the warning comes at stale_after).
    silence(2 * 30 + 5)
    result = run_checks(sim, "agents.stale", "agents.orphaned_tasks")
    assert not problems(result)
    notices = [f for f in result.findings if f.check == "agents.stale" and f.subject.id == AGENT_A]
    assert [f.severity for f in notices] == ["info"] and "missed its last reports" in notices[0].title
    assert notices[0].evidence["running_task"]["id"] == GATED_ID

    # Past stale_after (default 120 s): a warning for the silent agent, naming the task it was running.
    silence(stale_after + 30)
    result = run_checks(sim, "agents.stale", "agents.orphaned_tasks")
    assert [(f.check, f.subject.id, f.severity) for f in problems(result)] == [("agents.stale", AGENT_A, "warning")]
    assert problems(result)[0].evidence["running_task"]["id"] == GATED_ID

    # Past dead_after (480 s): critical, and the task it ran is orphaned.
    silence(max(dead_after, OrphanedParams().worker_dead_after) + 30)
    result = run_checks(sim, "agents.stale", "agents.orphaned_tasks")
    found = {(f.check, f.subject.id): f for f in problems(result)}
    assert set(found) == {("agents.stale", AGENT_A), ("agents.orphaned_tasks", GATED_ID)}
    orphan = found[("agents.orphaned_tasks", GATED_ID)]
    assert found[("agents.stale", AGENT_A)].severity == orphan.severity == "critical"
    assert orphan.evidence["last_worker"] == AGENT_A and orphan.evidence["reasons"] == ["worker_dead"]
    assert "requeue" in orphan.actions

    # 600 s after its last report the server forgets the worker; the task still shows in_progress on it.
    silence(610)
    result = run_checks(sim, "agents.stale", "agents.orphaned_tasks")
    assert [(f.check, f.subject.id) for f in problems(result)] == [("agents.orphaned_tasks", GATED_ID)]
    assert problems(result)[0].evidence["reasons"] == ["worker_gone"]

    # Requeue (bot.actions) to the other agent's queue; the other agent runs it to completion.
    gate.touch()
    outcome = act(sim, tmp_path, "requeue", GATED_ID, queue="cpu-b")
    assert outcome.status == "ok", outcome  # type: ignore[attr-defined]
    wait_for("live-b to complete the task", lambda: task_status(sim, GATED_ID) == "completed", 30, fleet)
    task = api(sim, "tasks.get_by_id", {"task": GATED_ID})["task"]
    assert task["last_worker"] == AGENT_B and task["execution"]["queue"] == sim.queue_id("cpu-b")
    assert "gate open: finished" in task_log(sim, GATED_ID)
    assert not problems(run_checks(sim, "agents.stale", "agents.orphaned_tasks", "agents.unserved_queues"))
