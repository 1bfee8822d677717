"""`clearml-chatops demo --live`: real clearml-agents run tasks against the simulator, one of them dies mid-task,
and the bot's own schedule, incidents and actions catch it and put things right. A narrated timeline is printed.

The story (about a minute; `--quick` about half that):
 1. The simulator (scenario `live-demo`) and two real agents: `live-a:0` on queue cpu-a, `live-b:0` on cpu-b.
 2. Four inline tasks are cloned from the scenario's templates and enqueued (tasks.clone + tasks.enqueue through
    the bot's ClearML client): a long training run and an evaluation on cpu-a, two short ones on cpu-b.
 3. Mid-training, `live-a:0`'s process group gets SIGKILL: the daemon and its task die at once, as when a host
    loses power. Nothing tells the server; the task stays `in_progress`.
 4. The bot's scheduler (bot.schedule.Scheduler) runs the `live-demo` playbook every few seconds: agents.stale
    notices the silent agent, agents.unserved_queues the queue nobody serves, agents.orphaned_tasks the task
    nobody runs. They open one incident (its cause: the agent), printed as it would be posted (or posted to Slack
    when SLACK_BOT_TOKEN is set, to SLACK_DEFAULT_CHANNEL or the config's slack.default_channel).
 5. The on-call "clicks" Rotate with requeue (the terminal runs the same action core a Slack button does): the
    `command` rotate backend runs `python -m bot.live.launcher restart ...` (no shell), which restarts the agent;
    the orphaned task is stopped, reset and enqueued again.
 6. The agent comes back, the incident resolves, and the requeued training runs to completion.
 7. Meanwhile datasets.integrity with `on_agent: cpu-b` sends a verification task to cpu-b: the agent re-hashes
    the `street-scenes` dataset next to the storage, and the bot reports the result it uploaded.

Timing. Real agents report every 30 s; the demo's agents report every R s (the agent's own
CLEARML_AGENT_STATUS_REPORT_FREQ_SEC) and the demo playbook scales the thresholds with it: stale after 2R (two
report intervals), dead after 3R, schedule every R. With R = 30 s that is the production story, just slower.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bot.config import ActionsSettings, RotateBackend, RotateSettings, ServerSettings, Settings, load_settings
from bot.errors import BotError
from bot.live.agents import AgentFleet, AgentSpec, ServerRef, agent_missing_reason

if TYPE_CHECKING:  # the heavy modules are imported when the demo runs, not when the CLI starts
    from bot.config import ServerSettings, Settings
    from bot.engine.runner import RunResult
    from bot.incidents.views import Notification
    from bot.schedule import ScheduledRun

SCENARIO = "live-demo"
AGENT_A, AGENT_B = "live-a:0", "live-b:0"
QUEUE_A, QUEUE_B = "cpu-a", "cpu-b"
TEMPLATE_TRAIN = "1d000000000000000000000000000001"
TEMPLATE_EVAL = "1d000000000000000000000000000002"
TEMPLATE_PREP = "1d000000000000000000000000000003"
_EPOCH = re.compile(r"epoch (\d+)/(\d+)")
_AGENT_LINES = ("Process completed", "Process failed", "Leaving process id", "Process terminated")


@dataclass(frozen=True)
class Pace:
    report_s: float  # agents' status report interval (and the schedule period)
    step_s: float  # one step of the inline programs
    epochs: int  # the training run's length
    kill_at_epoch: int  # SIGKILL once the training run has logged this epoch
    deadline_s: float  # give up (exit 1) after this long

    @property
    def stale_after(self) -> float:
        return 2 * self.report_s

    @property
    def dead_after(self) -> float:
        return 3 * self.report_s


PACES = {
    "normal": Pace(report_s=5.0, step_s=1.0, epochs=12, kill_at_epoch=4, deadline_s=170.0),
    "quick": Pace(report_s=2.0, step_s=0.3, epochs=6, kill_at_epoch=2, deadline_s=80.0),
}


class DemoFailed(BotError):
    """The story did not complete; the message says which step."""


class Narrator:
    """Timestamped lines (elapsed and wall clock); safe to call from the scheduler's threads."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.lock = threading.RLock()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, icon: str, text: str) -> None:
        with self.lock:
            self.out.write(f"[{self.elapsed():6.1f}s {datetime.now():%H:%M:%S}] {icon} {text}\n")
            self.out.flush()

    def block(self, text: str, indent: str = "        ") -> None:
        with self.lock:
            for line in text.splitlines():
                self.out.write(f"{indent}{line}\n")
            self.out.flush()


@dataclass
class Milestones:
    """When things happened (elapsed seconds), for the summary."""

    killed: float | None = None
    stale_seen: float | None = None
    orphan_seen: float | None = None
    incident_opened: float | None = None
    rotated: float | None = None
    agent_back: float | None = None
    resolved: float | None = None
    retrained: float | None = None
    runs: int = 0
    problems_before_kill: int = 0
    notes: list[str] = field(default_factory=list)
    canary_events: bool = False  # the write-path canary was narrated
    canary_rounds: set[tuple[Any, ...]] = field(default_factory=set)  # queue canary rounds narrated
    verification: set[tuple[Any, ...]] = field(default_factory=set)  # dataset verification steps narrated
    dataset_verified: float | None = None


def demo_playbook(pace: Pace) -> Any:
    """The demo's playbook: the agents.* checks with thresholds scaled to the agents' report interval."""
    from bot.engine.playbook import CheckEntry, IntervalSchedule, Playbook

    r = pace.report_s
    return Playbook(
        name="live-demo",
        description="Agents of the live demo, every report interval.",
        schedule=IntervalSchedule(every=f"{r:g}s"),
        checks=[
            CheckEntry(check="agents.stale", params={"stale_after": 2 * r, "dead_after": 3 * r}),
            CheckEntry(check="agents.unserved_queues", params={"stale_after": 2 * r}),
            CheckEntry(check="agents.orphaned_tasks", params={"worker_dead_after": 3 * r, "grace": 2 * r}),
            # the server's write path, and a canary task through cpu-b once its own work is done
            CheckEntry(check="server.events_canary"),
            CheckEntry(check="queues.canary", params={"queues": [QUEUE_B], "pickup_timeout": 40 * r}),
            # a dataset re-hashed by cpu-b's agent, next to the storage; the bot reads only the JSON result
            CheckEntry(check="datasets.integrity", params={"on_agent": QUEUE_B, "pickup_timeout": 40 * r}),
        ],
    )


def launcher_argv(state_dir: Path) -> list[str]:
    """The command rotate backend's argv template: this interpreter, the launcher module, no shell."""
    return [sys.executable, "-m", "bot.live.launcher", "restart", "--state", str(state_dir), "--worker", "{worker}"]


class LiveDemo:
    def __init__(self, *, pace: Pace, state_dir: Path, out: IO[str], settings: Settings | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.pace = pace
        self.state_dir = state_dir
        self.say = Narrator(out)
        self.out = out
        self.base_settings = settings
        self.env = dict(os.environ if env is None else env)
        self.m = Milestones()
        self.tasks: dict[str, str] = {}  # task name -> id
        self.task_state: dict[str, tuple[str, str]] = {}  # task id -> (status, last_worker) last narrated
        self.seen_workers: dict[str, Any] = {}  # worker id -> register_time last narrated
        self.orphan_event = threading.Event()
        self.problems: dict[tuple[str, str], str] = {}  # (check, subject id) -> severity, last run
        self.runs_lock = threading.Lock()
        self.sim: Any = None
        self.fleet: AgentFleet | None = None

    # ------------------------------------------------------------------ setup
    def _settings(self, channel: str) -> Settings:
        base = self.base_settings or Settings()
        backend = RotateBackend.model_validate({
            "match": "live-*", "type": "command", "argv": launcher_argv(self.state_dir / "agents"), "timeout": "60s",
        })
        return base.model_copy(update={
            "slack": base.slack.model_copy(update={"default_channel": channel}),
            "actions": ActionsSettings(rotate=RotateSettings(backends=[backend], requeue_task=True)),
            "store": str(self.state_dir / "store.db"),
        })

    def _server(self) -> ServerSettings:
        from pydantic import SecretStr

        key, secret = self.sim.keys[0]
        return ServerSettings(name="simulator (live-demo)", api_url=self.sim.api_url, web_url=self.sim.web_url,
                              files_url=self.sim.files_url, access_key=SecretStr(key), secret_key=SecretStr(secret))

    # ------------------------------------------------------------------ observation (the simulator's state)
    def _task_line(self, task_id: str) -> str:
        """The last line the task's program printed (the agent's own closing lines skipped)."""
        events = self.sim.state.events.get(task_id) or []
        for event in reversed(events[-8:]):
            lines = [ln.strip() for ln in str(event.get("msg", "")).splitlines()
                     if ln.strip() and not ln.startswith(_AGENT_LINES)]
            if lines:
                return lines[-1]
        return ""

    def _epoch(self, task_id: str) -> int:
        with self.sim.state.lock:
            events = list(self.sim.state.events.get(task_id) or [])
        for event in reversed(events):
            found = _EPOCH.findall(str(event.get("msg", "")))
            if found:
                return int(found[-1][0])
        return 0

    def observe(self) -> None:
        """Narrate agents (re)registering and the demo's tasks changing status."""
        with self.sim.state.lock:
            workers = {w["id"]: w["register_time"] for w in self.sim.state.live_workers()}
            tasks = {tid: (self.sim.state.tasks[tid].get("status", ""), self.sim.state.tasks[tid].get("last_worker")
                           or "", self._task_line(tid)) for tid in self.tasks.values()}
        for worker_id, registered in workers.items():
            if self.seen_workers.get(worker_id) != registered:
                again = worker_id in self.seen_workers
                self.seen_workers[worker_id] = registered
                pid = self.fleet.pid(worker_id) if self.fleet else None
                self.say.say("🤖", f"agent {worker_id} {'re-registered' if again else 'registered'} with the server "
                                  f"(pid {pid}; it reports every {self.pace.report_s:g} s)")
                if again and worker_id == AGENT_A and self.m.rotated is not None and self.m.agent_back is None:
                    self.m.agent_back = self.say.elapsed()
        names = {v: k for k, v in self.tasks.items()}
        for tid, (status, worker, line) in tasks.items():
            if self.task_state.get(tid) == (status, worker):
                continue
            self.task_state[tid] = (status, worker)
            name = names[tid]
            if status == "in_progress":
                self.say.say("▶️ ", f"{name} running on {worker}")
            elif status == "completed":
                self.say.say("✅", f"{name} completed on {worker}: {line}")
                if tid == self.tasks.get("train-resnet") and self.m.rotated is not None:
                    self.m.retrained = self.say.elapsed()
            elif status in ("failed", "stopped"):
                self.say.say("⚠️ ", f"{name} is {status} ({line})")
            elif status == "queued" and self.m.rotated is not None:
                self.say.say("🔁", f"{name} is queued again on {QUEUE_A}")

    # ------------------------------------------------------------------ the bot's side
    def _pipeline(self, store: Any, settings: Settings) -> tuple[Any, Callable[[], None]]:
        """IncidentPipeline to the terminal (print_sink) or, with SLACK_BOT_TOKEN, to Slack through the outbox.
        Returns it and a function that stops what it started."""
        from bot.incidents.pipeline import IncidentPipeline, print_sink

        demo = self
        token = (self.env.get("SLACK_BOT_TOKEN") or "").strip()

        class NarratedPipeline(IncidentPipeline):
            def handle_run(self, result: RunResult, now: datetime | None = None, *, run_id: int | None = None
                           ) -> list[Notification]:
                notes = super().handle_run(result, now, run_id=run_id)
                demo._on_notes(notes)
                return notes

        if not token:
            printer = print_sink(self.out)

            def sink(channel: str, kind: str, message: Any) -> None:
                with self.say.lock:
                    self.say.say("📣", f"the bot → {channel} ({kind}):")
                    printer(channel, kind, message)

            return NarratedPipeline(store, sink=sink, settings=settings), lambda: None

        from slack_sdk import WebClient

        from bot.slack.client import api_base_url
        from bot.slack.delivery import Outbox, OutboxWorker, WebClientSender
        from bot.slack.incidents.messages import SlackIncidentRenderer

        secrets = [token, *self._server().secrets()]
        outbox = Outbox(store, secrets=lambda: secrets)  # its rows (and so Slack) never hold one
        client = WebClient(token=token, base_url=api_base_url(settings), timeout=15, retry_handlers=[])
        worker = OutboxWorker(outbox, WebClientSender(client), idle_s=1.0)
        worker.start()
        self.say.say("💬", f"Slack mode: incidents go to {settings.slack.default_channel} (SLACK_BOT_TOKEN is set)")

        def stop() -> None:
            deadline = time.monotonic() + 10
            while outbox.depth() and time.monotonic() < deadline:  # let the last messages go out
                time.sleep(0.2)
            worker.stop()

        # Block Kit, without buttons: no Slack app is listening for their clicks during the demo.
        renderer = SlackIncidentRenderer(secrets=lambda: secrets)
        return NarratedPipeline(store, outbox=outbox, renderer=renderer, settings=settings), stop

    def _on_notes(self, notes: list[Notification]) -> None:
        for note in notes:
            v = note.incident
            if note.kind == "open" and self.m.incident_opened is None:
                self.m.incident_opened = self.say.elapsed()
            if note.kind == "resolve" and not v.is_open:
                self.m.resolved = self.say.elapsed()
            if self.env.get("SLACK_BOT_TOKEN"):
                first = (note.lines[0] if note.lines else v.title)
                self.say.say("📣", f"Slack {v.channel}: incident #{v.id} {note.kind} ({note.reason}): {first}")

    def on_result(self, run: ScheduledRun) -> None:
        """After each scheduled run: narrate what changed, note milestones, wake the on-call on an orphan."""
        result = run.result
        with self.runs_lock:
            self.m.runs += 1
            now = {(f.check, f.subject.id): f for f in result.findings if f.severity in ("warning", "critical")}
            if self.m.killed is None:
                self.m.problems_before_kill += len(now)
            new = {k: f for k, f in now.items() if self.problems.get(k) != f.severity}
            gone = [k for k in self.problems if k not in now]
            if self.m.runs == 1 and not now:
                live = result.metrics.get("agents.alive")
                self.say.say("🔎", f"scheduled run #1 of playbook live-demo: all clear ({live} agents alive)")
            for (check, subject), f in sorted(new.items()):
                self.say.say("🔎", f"scheduled run #{self.m.runs}: {f.severity.upper()} {check}: {f.title}")
                if check == "agents.stale" and subject == AGENT_A and self.m.stale_seen is None:
                    self.m.stale_seen = self.say.elapsed()
                if check == "agents.orphaned_tasks" and subject == self.tasks.get("train-resnet"):
                    if self.m.orphan_seen is None:
                        self.m.orphan_seen = self.say.elapsed()
                    self.orphan_event.set()
            for check, subject in gone:
                self.say.say("🔎", f"scheduled run #{self.m.runs}: cleared {check} for {subject}")
            self._narrate_canaries(result)
            self.problems = {k: f.severity for k, f in now.items()}

    def _narrate_canaries(self, result: RunResult) -> None:
        """Say once that the write path works, and once per canary round that went through a queue."""
        for f in result.findings:
            if f.check == "server.events_canary" and f.severity == "ok" and not self.m.canary_events:
                self.m.canary_events = True
                self.say.say("✍️ ", f"server.events_canary: {f.title}")
            if f.check == "queues.canary" and f.evidence.get("pickup_s") is not None:
                key = (f.subject.name, str((f.evidence.get("canary") or {}).get("id")), f.evidence.get("run_s"))
                if key not in self.m.canary_rounds:
                    self.m.canary_rounds.add(key)
                    self.say.say("🐤", f"queues.canary: {f.title}")
            if f.check == "datasets.integrity":
                agent = f.evidence.get("on_agent") or {}
                step = "result" if agent.get("task") else "dispatched" if "dispatched" in f.title else ""
                key = (f.subject.id, step, f.severity)
                if step and key not in self.m.verification:
                    self.m.verification.add(key)
                    where = (f" (verified by {agent.get('worker')}, task {agent.get('task')})"
                             if step == "result" else "")
                    self.say.say("🧮", f"datasets.integrity: {f.severity.upper()} {f.title}{where}")
                    if step == "result" and self.m.dataset_verified is None:
                        self.m.dataset_verified = self.say.elapsed()

    # ------------------------------------------------------------------ steps
    def _wait(self, what: str, cond: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.observe()
            if cond():
                return
            time.sleep(0.2)
        raise DemoFailed(f"timed out after {timeout:.0f}s waiting for {what}")

    async def _enqueue(self, server: ServerSettings) -> None:
        from bot.clearml.client import ClearMLClient

        plan = [(TEMPLATE_TRAIN, "train-resnet", QUEUE_A), (TEMPLATE_EVAL, "eval-resnet", QUEUE_A),
                (TEMPLATE_PREP, "prep-data", QUEUE_B), (TEMPLATE_EVAL, "eval-baseline", QUEUE_B)]
        async with ClearMLClient(server) as client:
            queues = {q["name"]: q["id"] for q in await client.get_all("queues.get_all", {}, key="queues")}
            for template, name, queue in plan:
                clone = await client.call("tasks.clone", {"task": template, "new_task_name": name,
                                                          "new_task_tags": ["live-demo"]})
                await client.call("tasks.enqueue", {"task": clone["id"], "queue": queues[queue],
                                                    "status_reason": "enqueued by the live demo"})
                self.tasks[name] = clone["id"]
                self.say.say("📥", f"{name} ({clone['id'][:8]}) cloned from its template and enqueued to {queue}")

    def _rotate(self, settings: Settings, store: Any, server: ServerSettings) -> None:
        from bot.actions import ActionDeps, ActionRequest, Actor, execute_action

        self.say.say("🧑‍🔧", f"the on-call presses Rotate on {AGENT_A} (requeue its task): the same action core a "
                          "Slack button runs")
        self.m.rotated = self.say.elapsed()
        outcome = asyncio.run(execute_action(
            ActionRequest(action="rotate", subject=AGENT_A, params={"requeue": True}),
            settings=settings, store=store, actor=Actor.terminal("on-call"),
            deps=ActionDeps(server_resolver=lambda _name: server),
        ))
        self.say.say("🛠️ ", f"rotate {outcome.status}: {outcome.text}")
        self.say.block("\n".join(outcome.detail))
        if not outcome.ok:
            raise DemoFailed(f"the rotate action did not succeed: {outcome.error or outcome.text}")

    def run(self) -> int:
        from bot.schedule import Scheduler, playbook_runner
        from bot.sim.server import SimServer
        from bot.store import Store

        pace = self.pace
        channel = (self.base_settings.slack.default_channel if self.base_settings else None) or \
            self.env.get("SLACK_DEFAULT_CHANNEL") or "#ml-alerts"
        self.say.say("🎬", "clearml-chatops live demo: real clearml-agents, a real failure, the bot's own fix")
        self.say.block(
            f"agents report every {pace.report_s:g} s (production: 30 s); playbook live-demo runs every "
            f"{pace.report_s:g} s with agents.stale after {pace.stale_after:g} s (two report intervals), dead after "
            f"{pace.dead_after:g} s, agents.orphaned_tasks and agents.unserved_queues scaled alike")
        settings = self._settings(channel)
        store = Store(settings.store_path)
        scheduler: Scheduler | None = None
        stop_pipeline: Callable[[], None] = lambda: None  # noqa: E731
        try:
            with SimServer(SCENARIO) as sim, AgentFleet(self.state_dir / "agents") as fleet:
                self.sim, self.fleet = sim, fleet
                server = self._server()
                self.say.say("🖥️ ", f"ClearML simulator (scenario {SCENARIO}) at {sim.api_url}, files {sim.files_url}")
                ref = ServerRef.of_sim(sim)
                agent_env = {"LIVE_DEMO_STEP_S": f"{pace.step_s:g}", "LIVE_DEMO_EPOCHS": str(pace.epochs)}
                for worker_id, queue in ((AGENT_A, QUEUE_A), (AGENT_B, QUEUE_B)):
                    fleet.add(AgentSpec(worker_id, (queue,), report_interval_s=pace.report_s, env=agent_env), ref)
                    pid = fleet.start(worker_id)
                    self.say.say("🚀", f"clearml-agent daemon --queue {queue} --foreground  (worker {worker_id}, "
                                      f"pid {pid}, log {fleet.log_path(worker_id)})")
                self._wait("both agents to register", lambda: {AGENT_A, AGENT_B} <= set(self.seen_workers), 30)

                pipeline, stop_pipeline = self._pipeline(store, settings)
                scheduler = Scheduler(store, [demo_playbook(pace)], run_playbook=playbook_runner(
                    settings, store, pipeline, server=server, on_result=self.on_result))
                scheduler.start()
                self.say.say("⏱️ ", f"the bot's scheduler runs playbook live-demo every {pace.report_s:g} s")

                asyncio.run(self._enqueue(server))
                train = self.tasks["train-resnet"]
                self._wait(f"train-resnet to reach epoch {pace.kill_at_epoch}",
                           lambda: self._epoch(train) >= pace.kill_at_epoch, 40)
                pid = fleet.kill(AGENT_A)
                self.m.killed = self.say.elapsed()
                self.say.say("💥", f"SIGKILL to {AGENT_A} (pid {pid} and its process group) while train-resnet was "
                                  f"at epoch {self._epoch(train)}/{pace.epochs}: the host is gone, nobody tells the "
                                  "server")

                self._wait("the bot to report the orphaned task", self.orphan_event.is_set, 12 * pace.report_s + 10)
                self._rotate(settings, store, server)
                self._wait(f"{AGENT_A} to come back", lambda: self.m.agent_back is not None, 30)
                self._wait("every task to complete and every incident to resolve", lambda: self._finished(store),
                           max(10.0, pace.deadline_s - self.say.elapsed()))
                self.observe()
                scheduler.shutdown(wait=True)
                scheduler = None
                stop_pipeline()
                stop_pipeline = lambda: None  # noqa: E731
                self._summary()
                return 0
        except DemoFailed as exc:
            self.say.say("❌", f"the demo did not complete: {exc}")
            if self.fleet is not None:
                for worker_id in self.fleet.workers():
                    tail = self.fleet.log_tail(worker_id, 8)
                    if tail:
                        self.say.say("📄", f"end of {worker_id}'s log:")
                        self.say.block(tail)
            return 1
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=True)
            stop_pipeline()
            store.close()

    def _finished(self, store: Any) -> bool:
        from bot.incidents.tracker import IncidentTracker

        with self.sim.state.lock:
            done = all(self.sim.state.tasks[t].get("status") == "completed" for t in self.tasks.values())
        if not done or self.m.resolved is None or self.m.dataset_verified is None:
            return False
        return not IncidentTracker(store).list_incidents("open")

    def _summary(self) -> None:
        m = self.m

        def after(t: float | None, since: float | None) -> str:
            return f"{t - since:5.1f} s" if t is not None and since is not None else "    —"

        self.say.say("🏁", f"done in {self.say.elapsed():.1f} s ({m.runs} scheduled runs)")
        self.say.block("\n".join([
            f"SIGKILL → agents.stale reported         {after(m.stale_seen, m.killed)}  (bound: 2 report intervals + "
            f"1 schedule period = {3 * self.pace.report_s:g} s)",
            f"SIGKILL → agents.orphaned_tasks          {after(m.orphan_seen, m.killed)}",
            f"SIGKILL → incident opened               {after(m.incident_opened, m.killed)}",
            f"rotate  → agent re-registered           {after(m.agent_back, m.rotated)}",
            f"rotate  → incident resolved             {after(m.resolved, m.rotated)}",
            f"rotate  → train-resnet completed again  {after(m.retrained, m.rotated)}",
            f"dataset verified by an agent at         {m.dataset_verified or 0:5.1f} s",
            f"warnings before the kill (healthy agents): {m.problems_before_kill}",
        ]))


def main(args: argparse.Namespace) -> int:
    """The `demo --live` entry point (called by bot.cli.cmd_demo)."""
    reason = agent_missing_reason()
    if reason:
        print(f"clearml-chatops: demo --live needs real agents: {reason}", file=sys.stderr)
        return 2

    settings = load_settings(args.config) if getattr(args, "config", None) else None
    pace = PACES["quick" if getattr(args, "quick", False) else "normal"]
    keep = getattr(args, "state_dir", None)
    state_dir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="clearml-chatops-live-"))
    try:
        return LiveDemo(pace=pace, state_dir=state_dir, out=sys.stdout, settings=settings).run()
    finally:
        if not keep:
            shutil.rmtree(state_dir, ignore_errors=True)


__all__ = ["PACES", "DemoFailed", "LiveDemo", "Pace", "demo_playbook", "launcher_argv", "main"]
