"""Incidents in Slack, end to end: `serve --http` (in process, and as the real command in a subprocess) against the
simulator's incident-zoo with a playbook scheduled every second. Asserted: one root message per problem
(correlated: the reclaimed spot agent, the task it orphaned and the queue it left unserved are one), edits in place
on every run, the buttons of the root (acknowledge, snooze, resolve, suggested actions), resolution once the
simulator's faults are cleared, the digest; Slack answering 429 then recovering; and kill -9 mid-way then a restart
over the same store: no duplicate root message, the outbox drains, the incidents are intact.

Nothing sleeps for a fixed time: the tests wait (bounded) for the state they expect."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.actions.tokens import ENV_KEY
from bot.config import Settings
from bot.sim.server import SimServer
from bot.slack.serve import BotServer
from tests.e2e.conftest import USER, HttpBot, bot_env
from tests.e2e.test_slack_actions import blocks_of, buttons_in, click, text_of
from tests.fakes.slack_api import Call
from tests.fakes.slack_history import HistoryFakeSlack
from tests.helpers import FLEET_CHECKS_YAML, alerts_slack, services, wait_until

REPO = Path(__file__).resolve().parents[2]
CHANNEL = "C0MLALERTS"
SPOT = "dynamic_worker:gpu-a10:g5.xlarge:i-0abc12de34f567890"
ZOO_PLAYBOOK = """
name: zoo
description: The fleet checks, every second (the test drives time through the schedule).
schedule: {every: 1s}
""" + FLEET_CHECKS_YAML


@pytest.fixture
def slack() -> Iterator[HistoryFakeSlack]:
    with alerts_slack(CHANNEL) as fake:
        yield fake


@pytest.fixture
def zoo(sim_factory: Callable[..., SimServer]) -> SimServer:
    return sim_factory("incident-zoo")


def write_config(tmp_path: Path, sim: SimServer, slack: HistoryFakeSlack,
                 playbook_texts: dict[str, str] | None = None) -> dict[str, Any]:
    """The bot's config for these tests; `playbook_texts`: name -> YAML of the playbooks (default: the zoo's)."""
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir(exist_ok=True)
    for name, text in (playbook_texts or {"zoo": ZOO_PLAYBOOK}).items():
        (playbooks / f"{name}.yaml").write_text(text.lstrip(), encoding="utf-8")
    return {
        "servers": {"prod": {"api": sim.api_url, "web": sim.web_url, "files": sim.files_url,
                             "credentials_env": ["E2E_SIM_KEY", "E2E_SIM_SECRET"], "retries": 0, "timeout": 5}},
        "store": str(tmp_path / "state" / "store.db"),
        "playbooks": str(playbooks),
        # a digest that never fires by itself in a test (1 January, midnight): the test runs the job
        "slack": {"api_url": slack.base_url, "default_channel": "#ml-alerts", "digest": {"schedule": "0 0 1 1 *"}},
        "actions": {"allow": {"requeue": {"users": [USER]}, "resolve": {"users": [USER]}},
                    # the spot agents are rotated through EC2 (never run here: nobody presses that button)
                    "rotate": {"backends": [{"match": "dynamic_worker:*", "type": "ec2", "on_rotate": "terminate"}]}},
        # post at once: these tests follow what each run posts (settle time and storms have their own tests)
        "incidents": {"settle": "0s"},
    }


@contextmanager
def in_process(config: dict[str, Any], sim: SimServer, slack: HistoryFakeSlack,
               env: pytest.MonkeyPatch) -> Iterator[HttpBot]:
    key, secret = sim.keys[0]
    env.setenv("E2E_SIM_KEY", key)
    env.setenv("E2E_SIM_SECRET", secret)
    env.setenv(ENV_KEY, "e2e-incidents-signing-key-0123456789")
    settings = Settings.model_validate(config)
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(slack)).start()
    try:
        yield HttpBot(server, slack, sim, settings)
    finally:
        server.stop()


def roots(slack: HistoryFakeSlack) -> list[dict[str, Any]]:
    return [m for m in slack.channel_messages(CHANNEL) if not m.get("thread_ts")]


def outbox_key(message: dict[str, Any] | Call) -> str:
    metadata = (message.args if isinstance(message, Call) else message).get("metadata") or {}
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return str((metadata.get("event_payload") or {}).get("outbox_key") or "")


def incident_roots(slack: HistoryFakeSlack) -> dict[str, dict[str, Any]]:
    """outbox key -> root message, asserting that no key was posted twice."""
    keys = [outbox_key(m) for m in roots(slack) if outbox_key(m).startswith("incident:")]
    assert len(keys) == len(set(keys)), f"a root message was posted twice: {sorted(keys)}"
    return {outbox_key(m): m for m in roots(slack) if outbox_key(m).startswith("incident:")}


def run_count(bot: HttpBot) -> int:
    """Runs recorded so far, read on a connection of the test's own (the bot's is not for other threads)."""
    with sqlite3.connect(f"file:{bot.settings.store_path}?mode=ro", uri=True, timeout=10) as db:
        return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])


def settled(bot: HttpBot, runs: int) -> bool:
    """At least `runs` runs recorded, every incident announced, nothing left to send."""
    s = services(bot)
    assert s.incidents is not None and s.outbox.durable is not None
    return (run_count(bot) >= runs and s.outbox.durable.depth() == 0
            and len(incident_roots(bot.slack)) == len(s.incidents.tracker.list_incidents("all")))


def root_call(slack: HistoryFakeSlack, incident: int) -> Call:
    """The chat.postMessage that posted an incident's root, with its latest content as a Call for `click`."""
    post = next(c for c in slack.calls_to("chat.postMessage") if outbox_key(c) == f"incident:{incident}:root"
                and c.response.get("ok") and c.response.get("channel") == CHANNEL)
    current = slack.message(CHANNEL, post.response["ts"])
    assert current is not None
    return Call("chat.update", {"channel": CHANNEL, "ts": post.response["ts"], "text": current["text"],
                                "blocks": current["blocks"]}, None, {}, 0.0, 200, {"channel": CHANNEL,
                                                                                     "ts": post.response["ts"]})


def test_incident_zoo_threads_update_resolve_and_digest(
    zoo: SimServer, slack: HistoryFakeSlack, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, zoo, slack)
    with in_process(config, zoo, slack, clean_env) as bot:
        s = services(bot)
        assert s.incidents is not None and s.scheduler is not None
        wait_until(lambda: settled(bot, 3), what="three scheduled runs, every incident announced")
        incidents = s.incidents.tracker.list_incidents("open")
        assert len(incidents) >= 5
        # one root message per incident, each with its thread
        posted = incident_roots(slack)
        assert set(posted) == {f"incident:{v.id}:root" for v in incidents}
        for v in incidents:
            thread = [m for m in slack.channel_messages(CHANNEL) if m.get("thread_ts") == posted[
                f"incident:{v.id}:root"]["ts"]]
            assert thread and "Opened" in str(thread[0]["text"]) + json.dumps(thread[0]["blocks"])
        # correlation: the reclaimed spot agent, its orphaned task and the queue it left unserved are one incident
        spot = next(v for v in incidents if v.anchor.id == SPOT)
        assert {m.check for m in spot.members} >= {"agents.stale", "agents.orphaned_tasks", "agents.unserved_queues"}
        assert sum(1 for v in incidents if any(m.subject.id == SPOT for m in v.members)) == 1
        root = root_call(slack, spot.id)
        shown = text_of(root)
        assert "Likely cause" in shown and SPOT in shown and "Consequences (2)" in shown
        assert "eval-detector-nightly" in shown and "gpu-a10-spot" in shown
        # repeats edit the root in place (count, last seen)
        edits = [c for c in slack.calls_to("chat.update") if c.args["ts"] == root.args["ts"]]
        assert len(edits) >= 2 and f"seen {spot.count}×" in shown
        # its buttons: acknowledge, snooze, resolve, and the suggested actions (requeue the orphaned task, restart
        # the agent), with a queue select for the requeue
        buttons = buttons_in(blocks_of(root))
        assert {"Acknowledge", "Snooze 1h", "Snooze 4h", "Snooze 24h", "Resolve"} <= set(buttons)
        assert "Requeue eval-detector-nightly" in buttons and f"Restart agent {SPOT}"[:75] in buttons
        assert buttons["Resolve"][1]["confirm"]["title"]["text"] == "Resolve this incident?"
        assert buttons[f"Restart agent {SPOT}"[:75]][1]["style"] == "danger"
        assert "Terminate EC2 instance i-0abc12de34f567890" in json.dumps(buttons[f"Restart agent {SPOT}"[:75]][1])
        assert slack.violations == []

        # acknowledge: shown on the root (who), noted in the thread
        click(bot, root, "Acknowledge", user="U0BOB")
        wait_until(lambda: "acknowledged by <@U0BOB>" in text_of(root_call(slack, spot.id)), what="ack shown")
        thread_ts = root.args["ts"]
        wait_until(lambda: any("Acknowledged by <@U0BOB>" in str(m["text"]) + json.dumps(m["blocks"])
                               for m in slack.channel_messages(CHANNEL) if m.get("thread_ts") == thread_ts))
        # resolve is restricted by actions.allow.resolve: Bob is told privately, nothing changes
        url = click(bot, root_call(slack, spot.id), "Resolve", user="U0BOB")
        note = slack.wait_for("response_url", predicate=lambda c: c.args.get("_url_id") == url.rsplit("/", 1)[-1])
        assert "Not allowed" in text_of(note[0])
        # snooze another incident for an hour
        other = next(v for v in incidents if v.id != spot.id)
        click(bot, root_call(slack, other.id), "Snooze 1h", user="U0BOB")
        wait_until(lambda: ":zzz: snoozed by <@U0BOB>" in text_of(root_call(slack, other.id)), what="snooze shown")
        # an action from a root: requeue the task whose agent vanished (gpu-box-5); the root keeps the outcome line
        # across the next updates instead of the button
        sweep = next(v for v in incidents if any(m.subject.name == "sweep-lr-trial-17" for m in v.members))
        task_id = next(m.subject.id for m in sweep.members if m.subject.name == "sweep-lr-trial-17")
        click(bot, root_call(slack, sweep.id), "Requeue sweep-lr-trial-17", queue="gpu-train")
        wait_until(lambda: zoo.state.tasks[task_id]["status"] == "queued", what="requeued")
        with zoo.state.lock:
            assert task_id in [e["task"] for e in zoo.state.queue_by_name("gpu-train")["entries"]]  # type: ignore[index]
        wait_until(lambda: "Requeued by <@U0ALICE>" in text_of(root_call(slack, sweep.id)), what="outcome on root")
        runs = run_count(bot)
        wait_until(lambda: run_count(bot) >= runs + 2, what="two more runs")
        assert "Requeued by <@U0ALICE>" in text_of(root_call(slack, sweep.id))
        assert "Requeue sweep-lr-trial-17" not in buttons_in(blocks_of(root_call(slack, sweep.id)))
        # the task of the spot agent that is still listed but silent for 9 min (past dead_after) is orphaned, as the
        # incident says: its requeue goes through and the outcome lands in the incident's thread
        nightly = next(m.subject.id for m in spot.members if m.subject.name == "eval-detector-nightly")
        click(bot, root_call(slack, spot.id), "Requeue eval-detector-nightly")
        wait_until(lambda: zoo.state.tasks[nightly]["status"] == "queued", what="the orphan requeued")
        wait_until(lambda: [m for m in slack.channel_messages(CHANNEL) if m.get("thread_ts") == thread_ts
                            and "Requeued by" in json.dumps(m)], what="the outcome in the thread")

        # the commands about incidents
        body = bot.command("incidents")[0].json()
        assert body["response_type"] == "ephemeral" and f"#{spot.id}" in json.dumps(body)
        # links to the threads: Slack's permalinks, in the workspace's own domain
        assert "https://fake.slack.test/archives/C0MLALERTS/p" in json.dumps(body)
        assert "https://slack.com/archives" not in json.dumps(body)
        body = bot.command("schedules")[0].json()
        assert "playbook:zoo" in json.dumps(body) and "every 1s" in json.dumps(body) and "digest" in json.dumps(body)
        bot.command("silence queues.backlog:cpu-* 2h reindexing")
        announced = slack.wait_for("chat.update", predicate=lambda c: "silenced" in text_of(c) and
                                   "queues.backlog:cpu-*" in text_of(c))[0]
        assert announced.args["channel"] == "C0GENERAL" and "reindexing" in text_of(announced)
        body = bot.command("silences")[0].json()
        assert "queues.backlog:cpu-*" in json.dumps(body) and "reindexing" in json.dumps(body)

        # the faults are cleared. The agents of the zoo are not in the healthy fleet: the server no longer lists
        # them, which is not a recovery, so their incidents stay open as gone (#13); every other incident resolves
        zoo.load_scenario("healthy")
        tracker = s.incidents.tracker

        def only_gone_left() -> bool:
            left = tracker.list_incidents("open")
            return bool(left) and all(v.firing and all(m.gone for m in v.firing) for v in left) \
                and s.outbox.durable.depth() == 0  # type: ignore[union-attr]

        wait_until(only_gone_left, what="every incident resolved or gone")
        gone = tracker.list_incidents("open")
        assert SPOT in {v.anchor.id for v in gone} and "gpu-box-2:gpu0" in {v.anchor.id for v in gone}
        for v in gone:
            shown = text_of(root_call(slack, v.id))
            assert "Gone from the server" in shown and "RESOLVED" not in shown
            click(bot, root_call(slack, v.id), "Resolve")  # a person closes them
        wait_until(lambda: not tracker.list_incidents("open") and s.outbox.durable.depth() == 0,
                   what="every incident resolved and announced")
        posted = incident_roots(slack)
        assert len(posted) == len(s.incidents.tracker.list_incidents("all"))
        for message in posted.values():
            assert str(message["text"]).startswith("✅ [RESOLVED]")
            assert not buttons_in(message["blocks"])  # nothing left to press

        # the digest (its schedule is run now)
        assert s.scheduler.run_job("digest") == "ok"
        digest = wait_until(lambda: [m for m in roots(slack) if outbox_key(m).startswith("digest:")], what="digest")
        text = str(digest[0]["text"]) + json.dumps(digest[0]["blocks"], ensure_ascii=False)
        assert "All clear" in text and f"Resolved ({len(posted)})" in text
        assert "https://fake.slack.test/archives/C0MLALERTS/p" in text  # permalinks to the incident threads
        assert "https://slack.com/archives" not in text
        assert slack.violations == []


def test_slack_rate_limiting_then_recovering_posts_each_root_once_in_order(
    zoo: SimServer, slack: HistoryFakeSlack, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    slack.fail("chat.postMessage", status=429, retry_after=1, times=2)
    slack.fail("chat.postMessage", status=500, times=1)  # may or may not have been posted: looked up, not re-sent
    slack.fail("chat.update", status=500, times=1)
    config = write_config(tmp_path, zoo, slack)
    with in_process(config, zoo, slack, clean_env) as bot:
        s = services(bot)
        wait_until(lambda: settled(bot, 4), what="four runs, everything sent")
        assert s.incidents is not None
        incidents = s.incidents.tracker.list_incidents("all")
        posted = incident_roots(slack)  # asserts each root key was posted once
        assert len(posted) == len(incidents)
        assert [c.status for c in slack.calls_to("chat.postMessage")][:2] == [429, 429]
        for v in incidents:
            root = posted[f"incident:{v.id}:root"]
            # the thread replies in the order they were queued (the seq in their dedupe key)
            # (a chart shared into a backlog incident's thread is a file message: no outbox key, no order to check)
            replies = [m for m in slack.channel_messages(CHANNEL) if m.get("thread_ts") == root["ts"]
                       and not m.get("files")]
            seqs = [int(outbox_key(m).split(":")[2]) for m in replies]
            assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
        # every root shows the latest state: its last edit went out after the others
        s.scheduler.shutdown()
        wait_until(lambda: s.outbox.durable.depth() == 0)  # type: ignore[union-attr]
        for v in s.incidents.tracker.list_incidents("all"):
            assert f"seen {v.count}×" in json.dumps(posted[f"incident:{v.id}:root"]["blocks"], ensure_ascii=False) \
                or f"seen {v.count}×" in text_of(root_call(slack, v.id))


def _serve_process(config_path: Path, slack: HistoryFakeSlack, sim: SimServer, tmp_path: Path) -> subprocess.Popen[str]:
    key, secret = sim.keys[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CLEARML_"))}
    # LOG_LEVEL: stderr is read only until "ready"; a chatty bot must not fill the pipe and block
    env.update(bot_env(slack), E2E_SIM_KEY=key, E2E_SIM_SECRET=secret, HOME=str(tmp_path), PYTHONUNBUFFERED="1",
               PYTHONPATH=str(REPO), LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1", "--port", "0", "--config",
         str(config_path)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        if re.search(r"health: http://[0-9.]+:\d+/healthz", line):
            return
    raise AssertionError(f"serve did not start (exit {proc.poll()})")


def _db(config: dict[str, Any]) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{config['store']}?mode=ro", uri=True, timeout=10)


def test_kill_9_mid_way_then_restart_over_the_same_store(
    zoo: SimServer, slack: HistoryFakeSlack, tmp_path: Path
) -> None:
    config = write_config(tmp_path, zoo, slack)
    config_path = tmp_path / "bot.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    slack.latency["chat.postMessage"] = 0.05  # widen the window in which a post is in flight
    first = _serve_process(config_path, slack, zoo, tmp_path)
    try:
        _wait_ready(first)
        wait_until(lambda: len(roots(slack)) >= 3, what="the first root messages")
        first.send_signal(signal.SIGKILL)  # mid-way: more roots, replies and edits are queued or in flight
        assert first.wait(timeout=10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
        if first.stderr is not None:
            first.stderr.close()
    before = len(roots(slack))
    with _db(config) as db:
        runs_before = db.execute("SELECT count(*) FROM runs").fetchone()[0]
        incidents_before = {r[0]: r[1] for r in db.execute("SELECT id, status FROM incidents")}
    assert incidents_before and before <= len(incidents_before)

    second = _serve_process(config_path, slack, zoo, tmp_path)
    try:
        _wait_ready(second)

        def drained() -> bool:
            with _db(config) as db:
                runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
                pending = db.execute("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')").fetchone()[0]
                incidents = db.execute("SELECT count(*) FROM incidents").fetchone()[0]
            return runs >= runs_before + 2 and pending == 0 and len(incident_roots(slack)) == incidents

        wait_until(drained, what="the restarted bot drained its outbox")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(timeout=10)
        if second.stderr is not None:
            second.stderr.close()

    with _db(config) as db:
        incidents_after = {r[0]: r[1] for r in db.execute("SELECT id, status FROM incidents")}
        failed = db.execute("SELECT key, last_error FROM outbox WHERE status = 'failed'").fetchall()
        open_fingerprints = db.execute(
            "SELECT fingerprint, count(*) FROM incident_members WHERE state IN ('firing', 'cleared') "
            "GROUP BY fingerprint HAVING count(*) > 1").fetchall()
    # the incidents of the first process are all there, still open; nothing opened twice
    assert set(incidents_before) <= set(incidents_after)
    assert all(incidents_after[i] == "open" for i in incidents_before)
    assert set(incidents_after) == set(incidents_before)  # the same fleet: no new incident after the restart
    assert open_fingerprints == []
    assert failed == []
    # exactly one root message per incident (incident_roots asserts no key twice)
    assert set(incident_roots(slack)) == {f"incident:{i}:root" for i in incidents_after}


def test_lifecycle_refused_root_invite_escalation_and_a_worker_the_server_dropped(
    zoo: SimServer, slack: HistoryFakeSlack, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Criticals are routed to a private #ml-oncall the bot was not invited to: their roots land in #ml-alerts
    saying why, and move to #ml-oncall once the bot is invited. Then time passes on the server: the stale agent
    (warning) becomes presumed dead, and its incident is also posted on the critical route; the reclaimed spot agent
    is dropped by the server: its incident stays open as gone, with its orphaned task, never "resolved"."""
    oncall = slack.add_channel("ml-oncall", private=True, member=False, channel_id="G0MLONCALL")
    config = write_config(tmp_path, zoo, slack)
    config["slack"]["routes"] = [{"severity": "critical", "channel": "#ml-oncall"}]
    config["incidents"] = {"settle": "1s", "refused_retry": "1s"}
    # The server's clock jumps six minutes below while real time does not: the shared read window (real seconds)
    # could serve the next runs data from before the jump, so this test reads fresh every run.
    config["read_window"] = "0s"
    with in_process(config, zoo, slack, clean_env) as bot:
        s = services(bot)
        assert s.incidents is not None
        wait_until(lambda: settled(bot, 3), what="three runs, every incident announced")
        tracker = s.incidents.tracker
        critical = [v for v in tracker.list_incidents() if v.severity == "critical"]
        spot = next(v for v in critical if v.anchor.id == SPOT)
        assert critical and all(v.channel == "#ml-alerts" and v.refused_channel == "#ml-oncall" for v in critical)
        refused = root_call(slack, spot.id)
        assert "cannot post in #ml-oncall" in text_of(refused) and "not_in_channel" in text_of(refused)
        assert slack.channel_messages(oncall.id) == []

        # the bot is invited: the critical incidents move to #ml-oncall, once each
        oncall.member = True
        wait_until(lambda: all(v.channel == "#ml-oncall" for v in tracker.list_incidents()
                               if v.id in {c.id for c in critical}), what="the criticals moved to #ml-oncall")
        wait_until(lambda: s.outbox.durable.depth() == 0, what="sent")  # type: ignore[union-attr]
        oncall_roots = [m for m in slack.channel_messages(oncall.id) if not m.get("thread_ts")]
        assert len(oncall_roots) == len(critical)
        assert "moved to #ml-oncall" in text_of(root_call_in(slack, CHANNEL, refused.args["ts"]))

        # six minutes pass on the server
        stale = next(v for v in tracker.list_incidents() if v.anchor.id == "gpu-box-2:gpu0")
        assert stale.severity == "warning" and stale.channel == "#ml-alerts"
        runs = run_count(bot)
        zoo.clock.advance(360)
        wait_until(lambda: run_count(bot) >= runs + 3 and s.outbox.durable.depth() == 0,  # type: ignore[union-attr]
                   what="three runs after the clock moved")
        # the stale agent is presumed dead now: critical, broadcast in its thread and posted on the critical route
        escalated = tracker.get(stale.id)
        assert escalated is not None and escalated.severity == "critical" and "#ml-oncall" in escalated.mirrors
        mirror = [m for m in slack.channel_messages(oncall.id)
                  if outbox_key(m) == f"incident:{stale.id}:mirror:#ml-oncall"]
        # as posted ("Escalated to critical (was warning)") or as edited since ("Escalated here from #ml-alerts")
        shown = text_of_message(mirror[0])
        assert len(mirror) == 1 and "Escalated" in shown and "#ml-alerts" in shown
        first = [c for c in slack.calls_to("chat.postMessage") if outbox_key(c) == outbox_key(mirror[0])]
        assert len(first) == 1 and "Escalated to critical (was warning)" in text_of(first[0])
        broadcast = [c for c in slack.calls_to("chat.postMessage") if c.args.get("reply_broadcast")
                     and "Severity raised: warning → critical" in text_of(c)]
        assert broadcast
        # the spot agent was dropped by the server: gone, still open, its orphan still in the same incident
        gone = tracker.get(spot.id)
        assert gone is not None and gone.status == "open" and [m.subject.id for m in gone.gone] == [SPOT]
        assert "agents.orphaned_tasks" in {m.check for m in gone.members if m.live}
        assert sum(1 for v in tracker.list_incidents("all") if any(m.subject.name == "eval-detector-nightly"
                                                                    for m in v.members)) == 1
        posted = [m for m in slack.channel_messages(oncall.id) if outbox_key(m) == f"incident:{spot.id}:root"]
        assert len(posted) == 1 and "Gone from the server" in text_of_message(posted[0])
        assert not any("RESOLVED" in str(m.get("text")) for m in slack.channel_messages(oncall.id))
        assert slack.violations == []


def text_of_message(message: dict[str, Any]) -> str:
    return f"{message.get('text')}\n{json.dumps(message.get('blocks'), ensure_ascii=False)}"


def root_call_in(slack: HistoryFakeSlack, channel: str, ts: str) -> Call:
    current = slack.message(channel, ts)
    assert current is not None
    return Call("chat.update", {"channel": channel, "ts": ts, "text": current["text"], "blocks": current["blocks"]},
                None, {}, 0.0, 200, {"channel": channel, "ts": ts})


def test_a_storm_is_one_root_message(
    zoo: SimServer, slack: HistoryFakeSlack, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """The zoo's first run opens many root causes at once; with a storm threshold below that, the channel gets one
    storm incident listing them instead of one root each, and the next runs update it in place."""
    config = write_config(tmp_path, zoo, slack)
    config["incidents"] = {"settle": "0s", "storm_threshold": 3}
    with in_process(config, zoo, slack, clean_env) as bot:
        s = services(bot)
        assert s.incidents is not None
        wait_until(lambda: settled(bot, 3), what="three runs, everything sent")
        incidents = s.incidents.tracker.list_incidents("all")
        storm = next(v for v in incidents if v.storm)
        assert storm.storm >= 3 and len([m for m in storm.members if m.live]) >= 5
        (root,) = [m for m in roots(slack) if outbox_key(m) == f"incident:{storm.id}:root"]
        assert str(root["text"]).startswith("🔴 [CRITICAL] Storm on prod: ")
        shown = text_of_message(slack.message(CHANNEL, root["ts"]) or {})
        assert "problems began in the same run" in shown and SPOT in shown
        # everything else of the first run is in the storm: no other root from it
        assert [v.id for v in incidents if v.opened_at == storm.opened_at] == [storm.id]
        edits = [c for c in slack.calls_to("chat.update") if c.args.get("ts") == root["ts"]]
        assert edits  # the next runs edit it in place
        assert slack.violations == []


def test_run_all_on_a_faulty_fleet_stays_within_slack_limits(
    sim_factory: Callable[..., SimServer], slack: HistoryFakeSlack, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """`/clearml run <playbook> --all` on a big fleet with many faults (once one message of ~92k characters): the
    report and every page of findings in its thread are messages Slack accepts (block count, section and total
    text: msg_blocks_too_long)."""
    from bot.sim.fleet import generate_fleet
    from bot.slack.messages.common import MAX_MESSAGE_TEXT, block_text_length
    from tests.fakes.slack_api import validate_message

    zoo = sim_factory(generate_fleet(workers=400, queues=40, tasks=3000, seed=13))
    config = write_config(tmp_path, zoo, slack)
    (tmp_path / "playbooks" / "zoo.yaml").write_text(ZOO_PLAYBOOK.replace("schedule: {every: 1s}\n", ""),
                                                     encoding="utf-8")
    with in_process(config, zoo, slack, clean_env) as bot:
        bot.command("run zoo --all")
        wait_until(lambda: len([c for c in slack.calls_to("chat.postMessage") if c.args.get("thread_ts")]) >= 2,
                   what="the findings in the thread, on more than one page")
        posts = slack.calls_to("chat.postMessage") + slack.calls_to("chat.update")
        assert posts
        for call in posts:
            assert call.response.get("ok"), call.response
            blocks = call.args.get("blocks") or []
            blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
            assert validate_message({"text": call.args.get("text"), "blocks": blocks}) == []
            assert block_text_length(blocks) <= MAX_MESSAGE_TEXT
        assert slack.violations == []
