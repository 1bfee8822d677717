"""The remediation actions against the ClearML simulator over real HTTP: the simulator's state is asserted after
every action (task status, queue entries, clones and parents), and every attempt's audit row.

Slack clicks are modelled exactly as the listener will make them: a signed button value from `button_value`,
handed back to `execute_action` as `confirm_token` with a Slack actor.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.actions import (
    ActionDeps,
    ActionOutcome,
    ActionRequest,
    Actor,
    Authorizer,
    button_value,
    execute_action,
    reproduce,
)
from bot.actions import audit as audit_mod
from bot.actions.tokens import Signer
from bot.clearml.client import is_read_endpoint
from bot.config import ActionAllow, ActionsSettings, RotateBackend, RotateSettings, ServerSettings, Settings
from bot.sim.server import SimServer
from bot.store import Store
from tests.helpers import server_settings

ALLOWED = "U0ANA"
GROUP_MEMBER = "U0GRP"
METRICS = {
    "m1": {
        "v1": {"metric": "loss", "variant": "val", "value": 0.25},
        "v2": {"metric": "accuracy", "variant": "val", "value": 0.91},
    }
}
SCRIPT = {"repository": "https://github.com/acme/vision.git", "branch": "main", "version_num": "3f2a9c1e",
          "entry_point": "train.py", "binary": "python3.11", "requirements": {"pip": "torch==2.3.0\nnumpy==1.26.4\n"}}


def scenario(*, workers: Sequence[dict[str, Any]] = (), tasks: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A small fleet with one task per state the actions care about."""
    base_tasks: list[dict[str, Any]] = [
        {"name": "failed-task", "status": "failed", "execution": {"queue": "gpu"}, "last_worker": "gpu-box:1",
         "started": "-3h", "completed": "-2h"},
        {"name": "stopped-task", "status": "stopped", "execution": {"queue": "cpu"}, "started": "-3h",
         "completed": "-2h"},
        {"name": "draft-task", "status": "created"},
        {"name": "completed-task", "status": "completed", "execution": {"queue": "gpu"}, "started": "-5h",
         "completed": "-4h", "active_duration": 3600, "last_metrics": METRICS, "script": SCRIPT,
         "last_worker": "gpu-box:0",
         "hyperparams": {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.01"}}}},
        {"name": "published-task", "status": "published", "execution": {"queue": "gpu"}, "started": "-5h",
         "completed": "-4h"},
        {"name": "running-live", "status": "in_progress", "execution": {"queue": "gpu"}, "last_worker": "gpu-box:0",
         "started": "-1h", "last_update": "-10s"},
        # worker gone for 2 h: the server no longer counts it as run by a live worker -> stop sets stopped
        {"name": "orphan-old", "status": "in_progress", "execution": {"queue": "gpu"}, "last_worker": "dead-box:0",
         "started": "-3h", "last_update": "-2h"},
        # worker gone 2 min ago: tasks.stop leaves it in_progress ("stopping") -> reset is needed
        {"name": "orphan-recent", "status": "in_progress", "execution": {"queue": "gpu"},
         "last_worker": "dead-box:1", "started": "-1h", "last_update": "-2m"},
        {"name": "q1", "status": "queued", "execution": {"queue": "gpu"}, "status_changed": "-3h"},
        {"name": "q2", "status": "queued", "execution": {"queue": "gpu"}, "status_changed": "-2h"},
        {"name": "q3", "status": "queued", "execution": {"queue": "gpu"}, "status_changed": "-1h"},
    ]
    for task in base_tasks:
        task.setdefault("project", "vision")
    return {
        "name": "actions",
        "projects": [{"name": "vision"}],
        "queues": [
            {"name": "gpu", "entries": [{"task": "q1", "added": "-3h"}, {"task": "q2", "added": "-2h"},
                                        {"task": "q3", "added": "-1h"}]},
            {"name": "cpu"},
        ],
        "workers": [
            {"id": "gpu-box:0", "ip": "10.0.0.5", "queues": ["gpu"], "last_activity": "-10s", "last_report": "-10s",
             "task": "running-live"},
            {"id": "cpu-box:0", "ip": "10.0.0.6", "queues": ["cpu"], "last_activity": "-10s", "last_report": "-10s"},
            *copy.deepcopy(list(workers)),
        ],
        "tasks": [*base_tasks, *copy.deepcopy(list(tasks))],
    }


@dataclass
class World:
    sim: SimServer
    server: ServerSettings
    settings: Settings
    store: Store
    deps: ActionDeps
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    # -- clicking and typing ----------------------------------------------------------------------
    def token(self, action: str, subject: str, params: dict[str, Any] | None = None) -> str:
        return button_value(self.settings, self.store, action, subject, server="sim", params=params, deps=self.deps)

    def click(self, token: str, user: str = ALLOWED, name: str = "ana", params: dict[str, Any] | None = None,
              **request: Any) -> ActionOutcome:
        req = ActionRequest(params=params or {}, context={"channel": "C1", "thread_ts": "1.2"}, **request)
        return asyncio.run(execute_action(req, settings=self.settings, store=self.store,
                                          actor=Actor(user, name, "slack"), confirm_token=token, deps=self.deps))

    def act(self, action: str, subject: str, params: dict[str, Any] | None = None, **request: Any) -> ActionOutcome:
        req = ActionRequest(action=action, subject=subject, server="sim", params=params or {}, **request)
        return asyncio.run(execute_action(req, settings=self.settings, store=self.store,
                                          actor=Actor.terminal("ops-user"), deps=self.deps))

    # -- looking at the simulator -----------------------------------------------------------------
    def tid(self, name: str) -> str:
        return self.sim.task_id(name)

    def task(self, name_or_id: str) -> dict[str, Any]:
        with self.sim.state.lock:
            doc = self.sim.state.tasks.get(name_or_id) or self.sim.state.tasks[self.tid(name_or_id)]
            return copy.deepcopy(doc)

    def entries(self, queue: str) -> list[str]:
        with self.sim.state.lock:
            return [e["task"] for e in self.sim.state.queue_by_name(queue)["entries"]]

    def writes(self) -> list[tuple[str, dict[str, Any]]]:
        return [(n, p) for n, p in self.sim.calls if n != "auth.login" and not is_read_endpoint(n)]

    def audit(self) -> list[dict[str, Any]]:
        return audit_mod.recent(self.store, 100)


def make_world(tmp_path: Path, sim: SimServer, *, allow: dict[str, ActionAllow] | None = None,
               rotate: RotateSettings | None = None, dry_run: bool = False,
               group_members: dict[str, list[str]] | None = None) -> World:
    # plain http: verify=False skips loading the CA bundle (0.1 s per client)
    server = server_settings(sim, web_url="http://web.example", verify=False)
    every = ActionAllow(users=[ALLOWED, "U0BOB"], usergroups=["S0ML"])
    settings = Settings(actions=ActionsSettings(
        dry_run=dry_run,
        allow=allow if allow is not None else {a: every for a in
                                                ("clone", "requeue", "abort", "rotate", "reproduce", "prioritize")},
        rotate=rotate or RotateSettings(),
    ))
    groups = group_members if group_members is not None else {"S0ML": [GROUP_MEMBER]}
    deps = ActionDeps(
        server_resolver=lambda name: server,
        signer=Signer(b"test-signing-key-0123456789abcdef"),
        authorizer=Authorizer(settings.actions, group_members=lambda g: groups[g]),
    )
    world = World(sim=sim, server=server, settings=settings, store=Store(tmp_path / "store.db"), deps=deps)
    deps.clock = lambda: world.now
    return world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with SimServer(scenario=scenario()) as sim:
        w = make_world(tmp_path, sim)
        sim.reset_calls()
        try:
            yield w
        finally:
            w.store.close()


# ================================================================================================ requeue


def test_requeue_failed_task_goes_back_to_its_original_queue(world: World) -> None:
    tid = world.tid("failed-task")
    out = world.click(world.token("requeue", tid))
    assert out.status == "ok", out
    assert world.task(tid)["status"] == "queued"
    assert world.entries("gpu")[-1] == tid
    assert out.text.startswith("Requeued by @ana at ")
    assert f"<@{ALLOWED}>" in out.mrkdwn and f"/experiments/{tid}/output/execution|failed-task>" in out.mrkdwn
    assert [n for n, _ in world.writes()] == ["tasks.enqueue"]
    [row] = world.audit()
    assert (row["outcome"], row["action"], row["subject"], row["actor_id"], row["via"]) == (
        "ok", "requeue", tid, ALLOWED, "slack")
    assert row["context"] == {"channel": "C1", "thread_ts": "1.2"}


def test_requeue_into_a_queue_the_user_picked(world: World) -> None:
    tid = world.tid("stopped-task")
    out = world.click(world.token("requeue", tid), params={"queue": world.sim.queue_id("gpu")})
    assert out.status == "ok"
    assert tid in world.entries("gpu") and tid not in world.entries("cpu")
    assert world.task(tid)["execution"]["queue"] == world.sim.queue_id("gpu")


def test_requeue_orphan_whose_worker_is_long_gone_stops_then_enqueues(world: World) -> None:
    tid = world.tid("orphan-old")
    out = world.click(world.token("requeue", tid))
    assert out.status == "ok", out
    writes = world.writes()
    assert [n for n, _ in writes] == ["tasks.stop", "tasks.enqueue"]  # stop already set it stopped: no reset
    assert writes[0][1]["force"] is True
    assert any(line.startswith("skipped: tasks.reset") for line in out.detail)
    assert world.task(tid)["status"] == "queued" and tid in world.entries("gpu")


def test_requeue_recent_orphan_needs_a_reset_after_the_stop(world: World) -> None:
    tid = world.tid("orphan-recent")
    out = world.click(world.token("requeue", tid))
    assert out.status == "ok", out
    assert [n for n, _ in world.writes()] == ["tasks.stop", "tasks.reset", "tasks.enqueue"]
    doc = world.task(tid)
    assert doc["status"] == "queued" and tid in world.entries("gpu")
    assert "last_worker" not in doc  # reset cleared it


def test_requeue_refuses_a_task_running_on_a_live_worker(world: World) -> None:
    out = world.click(world.token("requeue", world.tid("running-live")))
    assert out.status == "refused" and out.alternative == "abort"
    assert "live worker gpu-box:0" in out.text
    assert world.writes() == []


def test_requeue_takes_a_task_whose_listed_worker_went_silent_past_dead_after(world: World) -> None:
    # The server keeps listing a dead agent (and its task) for 600 s; past 480 s of silence agents.orphaned_tasks
    # already calls the task orphaned and suggests requeue, so the requeue must go through.
    world.sim.clock.advance(500)
    tid = world.tid("running-live")
    out = world.click(world.token("requeue", tid))
    assert out.status == "ok", out
    assert [n for n, _ in world.writes()][-1] == "tasks.enqueue"
    assert world.task(tid)["status"] == "queued" and tid in world.entries("gpu")


def test_requeue_of_a_completed_task_is_refused_with_clone_offered(world: World) -> None:
    for name in ("completed-task", "published-task"):
        out = world.click(world.token("requeue", world.tid(name)))
        assert out.status == "refused" and out.alternative == "clone"
        assert "400/110" in out.text and "Clone it" in out.text
    assert world.writes() == []
    assert [r["outcome"] for r in world.audit()] == ["refused", "refused"]


def test_requeue_of_a_queued_task_offers_prioritize_once(world: World) -> None:
    out = world.click(world.token("requeue", world.tid("q2")))
    assert out.status == "refused" and out.alternative == "prioritize"
    assert out.text.startswith("Not done: ") and "already queued" in out.text
    assert out.text.count("instead") == 1 and out.text.lower().count("prioritize") == 1, out.text
    assert out.text.endswith("."), out.text
    assert world.writes() == []


def test_server_refusing_the_status_change_is_reported_and_audited(world: World) -> None:
    tid = world.tid("failed-task")
    world.sim.set_fault("tasks.enqueue", status=400, subcode=110,
                        message="Invalid task status (Invalid status change): current_status=failed, new_status=queued")
    out = world.click(world.token("requeue", tid))
    assert out.status == "failed" and not out.retry
    assert "refused the status change" in out.text and "400/110" in out.text
    assert world.task(tid)["status"] == "failed" and tid not in world.entries("gpu")
    [row] = world.audit()
    assert row["outcome"] == "failed" and "400/110" in row["error"]


def test_clearml_down_mid_action_reports_progress_offers_retry_and_the_retry_works(world: World) -> None:
    tid = world.tid("orphan-old")
    token = world.token("requeue", tid)
    world.sim.set_fault("tasks.enqueue", status=503, message="Service Unavailable")
    out = world.click(token)
    assert out.status == "failed" and out.retry
    assert "unavailable" in out.text and "after 1 of 3 steps" in out.text and out.text.endswith("Retry?")
    assert out.detail[0].startswith("done: tasks.stop") and out.detail[-1].startswith("FAILED: tasks.enqueue")
    assert world.task(tid)["status"] == "stopped"  # the stop happened; the enqueue did not
    world.sim.clear_faults()
    # A failed run does not lock its button: clicking again (the retry) re-plans from the new state.
    again = world.click(token)
    assert again.status == "ok", again
    assert world.task(tid)["status"] == "queued" and tid in world.entries("gpu")
    assert [r["outcome"] for r in world.audit()] == ["ok", "failed"]


def test_clearml_unreachable_before_anything_was_done(tmp_path: Path) -> None:
    with SimServer(scenario=scenario()) as sim:
        w = make_world(tmp_path, sim)
        tid = w.tid("failed-task")
    # the simulator is stopped: connection refused
    out = w.click(w.token("requeue", tid))
    assert out.status == "failed" and out.retry and "not started" in out.text
    assert w.audit()[0]["outcome"] == "failed"


# ================================================================================================ clone


def test_clone_enqueued_into_a_chosen_queue_links_the_new_task(world: World) -> None:
    tid = world.tid("completed-task")
    out = world.click(world.token("clone", tid), params={"queue": "cpu"})
    assert out.status == "ok", out
    [new_id] = out.created_ids
    clone = world.task(new_id)
    assert clone["parent"] == tid and clone["status"] == "queued"
    assert clone["comment"] == f"Cloned from {tid} by @ana via clearml-chatops"
    assert world.entries("cpu") == [new_id]
    assert world.task(tid)["status"] == "completed"  # the original is untouched
    assert out.links[0].url.endswith(f"/experiments/{new_id}/output/execution")
    assert out.text.startswith("Cloned and enqueued by @ana")
    assert world.audit()[0]["created_ids"] == [new_id]


def test_clone_whose_enqueue_fails_still_reports_the_new_task(world: World) -> None:
    tid = world.tid("completed-task")
    world.sim.set_fault("tasks.enqueue", status=400, subcode=706, message="Failed adding task to queue")
    out = world.click(world.token("clone", tid), params={"queue": "gpu"})
    assert out.status == "failed" and "at tasks.enqueue after 1 of 2 steps" in out.text
    [new_id] = out.created_ids
    assert world.task(new_id)["status"] == "created"
    assert out.links[0].url.endswith(f"/experiments/{new_id}/output/execution")
    assert world.audit()[0]["created_ids"] == [new_id]


def test_clone_without_queue_leaves_a_draft_and_an_unknown_queue_is_refused(world: World) -> None:
    tid = world.tid("failed-task")
    out = world.act("clone", tid)
    assert out.status == "ok" and world.task(out.created_ids[0])["status"] == "created"
    bad = world.act("clone", tid, {"queue": "gpu-typo"})
    assert bad.status == "refused" and "no queue named 'gpu-typo'" in bad.text
    assert all(n != "queues.create" for n, _ in world.writes())  # never auto-creates a queue


# ================================================================================================ abort


def test_abort_running_task_asks_its_live_agent_without_force(world: World) -> None:
    tid = world.tid("running-live")
    out = world.click(world.token("abort", tid))
    assert out.status == "ok"
    [(name, payload)] = world.writes()
    assert name == "tasks.stop" and "force" not in payload
    doc = world.task(tid)
    assert doc["status"] == "in_progress" and doc["status_message"] == "stopping"  # the agent finishes it


def test_abort_orphan_forces_and_abort_queued_dequeues(world: World) -> None:
    orphan, queued = world.tid("orphan-old"), world.tid("q2")
    assert world.click(world.token("abort", orphan)).status == "ok"
    assert world.writes()[0][1]["force"] is True
    assert world.task(orphan)["status"] == "stopped"
    assert world.click(world.token("abort", queued)).status == "ok"
    assert world.task(queued)["status"] == "stopped" and queued not in world.entries("gpu")
    done = world.click(world.token("abort", world.tid("completed-task")))
    assert done.status == "refused" and "nothing to abort" in done.text


# ================================================================================================ prioritize


def test_prioritize_moves_a_waiting_task_to_the_front(world: World) -> None:
    q1, q2, q3 = (world.tid(n) for n in ("q1", "q2", "q3"))
    out = world.click(world.token("prioritize", q3))
    assert out.status == "ok", out
    assert world.entries("gpu") == [q3, q1, q2]
    assert [n for n, _ in world.writes()] == ["queues.move_task_to_front"]
    first = world.click(world.token("prioritize", q3))
    assert first.status == "refused" and "already first" in first.text
    idle = world.click(world.token("prioritize", world.tid("failed-task")))
    assert idle.status == "refused"


# ================================================================================================ safety


def test_dry_run_reports_the_exact_calls_and_makes_no_mutating_call(tmp_path: Path) -> None:
    with SimServer(scenario=scenario()) as sim:
        w = make_world(tmp_path, sim, dry_run=True)
        tid = w.tid("orphan-recent")
        before = w.task(tid)
        sim.reset_calls()
        out = w.click(w.token("requeue", tid))
        clone = w.act("clone", w.tid("completed-task"), {"queue": "cpu"})
        assert (out.status, clone.status) == ("dry_run", "dry_run")
        assert w.writes() == []  # only reads reached the server
        assert w.task(tid) == before
        assert "tasks.stop(task=" in out.text and "force=true" in out.text and "tasks.enqueue(" in out.text
        assert any("tasks.reset(" in line and "only if" in line for line in out.plan)
        assert "tasks.clone(" in clone.text and "task=<new task>" in clone.text
        assert [r["outcome"] for r in w.audit()] == ["dry_run", "dry_run"]
        # a terminal --dry-run on a non-dry-run config is the same
        w.settings.actions.dry_run = False
        assert w.act("requeue", tid, dry_run=True).status == "dry_run" and w.writes() == []


def test_double_click_and_two_people_clicking_execute_once(world: World) -> None:
    tid = world.tid("completed-task")
    token = world.token("clone", tid)

    async def both() -> list[ActionOutcome]:
        def click(user: str, name: str) -> Any:
            req = ActionRequest(context={"channel": "C1"})
            return execute_action(req, settings=world.settings, store=world.store, actor=Actor(user, name, "slack"),
                                  confirm_token=token, deps=world.deps)

        return list(await asyncio.gather(click(ALLOWED, "ana"), click("U0BOB", "bob"), click(ALLOWED, "ana")))

    outcomes = asyncio.run(both())
    assert sorted(o.status for o in outcomes) == ["duplicate", "duplicate", "ok"]
    assert len(world.sim.calls_to("tasks.clone")) == 1
    ok = next(o for o in outcomes if o.status == "ok")
    for dup in (o for o in outcomes if o.status == "duplicate"):
        assert dup.done_by == "@ana" and dup.text.startswith("Already")
    # later, the same button again: "already done by @ana at T" with the result
    later = world.click(token, user="U0BOB", name="bob")
    assert later.status == "duplicate" and later.done_by == "@ana"
    assert later.created_ids == ok.created_ids and later.text.startswith("Already done by @ana at ")
    assert sum(1 for t in world.sim.iter_tasks() if t.get("parent") == tid) == 1
    outcomes_audited = sorted(r["outcome"] for r in world.audit())
    assert outcomes_audited == ["duplicate", "duplicate", "duplicate", "ok"]


def test_tampered_and_expired_buttons_are_refused_and_audited(world: World) -> None:
    tid = world.tid("failed-task")
    token = world.token("requeue", tid)
    payload, mac = token.split(".")
    forged = world.token("abort", world.tid("running-live")).split(".")[0] + "." + mac
    for bad in (forged, payload + "." + mac[::-1], "garbage", token + "x"):
        out = world.click(bad)
        assert out.status == "tampered", bad
    # a request that tries to retarget a genuine button
    retarget = world.click(token, subject=world.tid("running-live"))
    assert retarget.status == "tampered"
    # a param the button fixes cannot be changed by the click (abort has no user choices)
    fixed = world.click(world.token("abort", world.tid("running-live")), params={"task": "x"})
    assert fixed.status == "failed" and "fixed by the button" in fixed.text
    world.now += timedelta(hours=25)  # default button_ttl is 24h
    expired = world.click(token)
    assert expired.status == "expired" and "expired" in expired.text
    assert world.writes() == []
    rows = world.audit()
    assert [r["outcome"] for r in rows] == ["expired", "failed", "tampered", "tampered", "tampered", "tampered",
                                            "tampered"]
    assert rows[0]["subject"] == tid and rows[0]["action"] == "requeue"  # the MAC verified: safe to record


def test_unauthorized_users_are_denied_and_audited(tmp_path: Path) -> None:
    with SimServer(scenario=scenario()) as sim:
        w = make_world(tmp_path, sim, allow={"requeue": ActionAllow(usergroups=["S0ML"])})
        tid = w.tid("failed-task")
        token = w.token("requeue", tid)
        denied = w.click(token, user="U0EVE", name="eve")
        assert denied.status == "denied" and "eve" in denied.text
        # the abort button is for nobody: actions.allow.abort is not configured
        nobody = w.click(w.token("abort", w.tid("running-live")), user=GROUP_MEMBER, name="gina")
        assert nobody.status == "denied" and "actions.allow.abort" in nobody.text
        assert w.writes() == []
        # a member of the allowed user group may
        assert w.click(token, user=GROUP_MEMBER, name="gina").status == "ok"
        assert w.task(tid)["status"] == "queued"
        assert [(r["outcome"], r["actor_id"]) for r in w.audit()] == [
            ("ok", GROUP_MEMBER), ("denied", GROUP_MEMBER), ("denied", "U0EVE")]
        # the terminal is allowed (as the OS user) even with no allow rule, and audited as such
        out = w.act("abort", w.tid("orphan-old"))
        assert out.status == "ok" and w.audit()[0]["via"] == "terminal" and w.audit()[0]["actor_id"] == "ops-user"


def test_plan_changed_since_confirmation_is_refused(world: World) -> None:
    tid = world.tid("failed-task")
    out = world.act("requeue", tid, confirmed_plan="0000000000000000")
    assert out.status == "refused" and "changed since you confirmed" in out.text
    assert world.writes() == []


# ================================================================================================ reproduce


def _finish_clone(world: World, clone_id: str, *, status: str, metrics: dict[str, Any], duration: int) -> None:
    """What the agent would do: run the clone and report its results."""
    with world.sim.state.lock:
        world.sim.state.remove_from_queues(clone_id)
        now = world.sim.clock.now_ms()
        world.sim.state.update_task(clone_id, {
            "status": status, "started": now - timedelta(seconds=duration), "completed": now,
            "active_duration": duration, "last_metrics": metrics, "last_worker": "gpu-box:0",
        })


def test_reproduce_clones_enqueues_watches_and_compares(world: World) -> None:
    tid = world.tid("completed-task")
    out = world.click(world.token("reproduce", tid, {"metric_rel_tol": 0.02}))
    assert out.status == "ok", out
    [clone_id] = out.created_ids
    assert world.task(clone_id)["parent"] == tid and clone_id in world.entries("gpu")
    assert out.watch_id is not None
    # still queued: a tick reports nothing (and never sleeps)
    assert asyncio.run(reproduce.tick(world.store, world.settings, deps=world.deps)) == []
    drifted = copy.deepcopy(METRICS)
    drifted["m1"]["v1"]["value"] = 0.30  # loss 0.25 -> 0.30: +20%, outside 2%
    _finish_clone(world, clone_id, status="completed", metrics=drifted, duration=3500)
    [result] = asyncio.run(reproduce.tick(world.store, world.settings, deps=world.deps))
    assert result.status == "done" and result.clone == clone_id and result.context["thread_ts"] == "1.2"
    assert result.comparison is not None and result.comparison.verdict == "differs"
    assert "loss/val: 0.25 -> 0.3" in result.text and "accuracy" not in result.text.split("within tolerance")[1]
    assert "1 of 2 within tolerance" in result.text
    # done watches are not polled again
    assert asyncio.run(reproduce.tick(world.store, world.settings, deps=world.deps)) == []


def test_reproduce_within_tolerance_is_reproduced_and_running_tasks_are_refused(world: World) -> None:
    out = world.act("reproduce", world.tid("completed-task"))
    [clone_id] = out.created_ids
    close = copy.deepcopy(METRICS)
    close["m1"]["v1"]["value"] = 0.251
    _finish_clone(world, clone_id, status="completed", metrics=close, duration=3700)
    [result] = asyncio.run(reproduce.tick(world.store, world.settings, deps=world.deps))
    assert result.comparison is not None and result.comparison.verdict == "reproduced"
    assert "reproduced ✓" in result.text
    refused = world.act("reproduce", world.tid("running-live"))
    assert refused.status == "refused" and "finished task" in refused.text


def test_reproduce_watch_times_out_without_touching_the_task(world: World) -> None:
    out = world.act("reproduce", world.tid("completed-task"), {"timeout": "1h"})
    [clone_id] = out.created_ids
    world.now += timedelta(hours=2)
    [result] = asyncio.run(reproduce.tick(world.store, world.settings, deps=world.deps))
    assert result.status == "timeout" and world.task(clone_id)["status"] == "queued"


def test_reproduce_watch_until_done_polls_with_an_injected_sleep(world: World) -> None:
    out = world.act("reproduce", world.tid("completed-task"))
    [clone_id] = out.created_ids
    naps: list[float] = []

    async def fake_sleep(seconds: float) -> None:  # the agent finishes the run while we "sleep"
        naps.append(seconds)
        _finish_clone(world, clone_id, status="failed", metrics={}, duration=60)

    result = asyncio.run(reproduce.watch_until_done(world.store, world.settings, out.watch_id or 0,
                                                    deps=world.deps, poll_s=7, sleep=fake_sleep))
    assert naps == [7] and result.status == "done"
    assert result.comparison is not None and result.comparison.verdict == "failed"
    assert "status: completed -> failed" in result.text


def test_audit_query_and_rendering(world: World) -> None:
    world.click(world.token("requeue", world.tid("failed-task")))
    world.click(world.token("abort", world.tid("q1")), user="U0EVE", name="eve")
    world.act("requeue", world.tid("completed-task"))
    rows = audit_mod.recent(world.store, 2)
    assert [r["outcome"] for r in rows] == ["refused", "denied"]
    assert [r["outcome"] for r in audit_mod.recent(world.store, 10, action="requeue")] == ["refused", "ok"]
    text = audit_mod.format_rows(audit_mod.recent(world.store, 10))
    assert "ops-user (terminal)" in text and "denied" in text and "by eve" in text
    assert "<@U0EVE>" in audit_mod.format_rows(audit_mod.recent(world.store, 10), mrkdwn=True)


def test_rotate_with_no_matching_backend_is_refused(world: World) -> None:
    world.settings.actions.rotate = RotateSettings(backends=[RotateBackend(match="k8s-*", type="kubernetes")])
    out = world.click(world.token("rotate", "gpu-box:0"))
    assert out.status == "refused" and "no rotate backend matches worker gpu-box:0" in out.text
