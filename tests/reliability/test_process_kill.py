"""`kill -9` of a real `clearml-chatops serve` process during a playbook run, during an action, and with a full
outbox; then a restart over the same store. No duplicate message or action, the outbox drains, incidents and the
audit log are intact. The processes log as JSON (LOG_FORMAT=json): every line of theirs must parse.

Nothing sleeps for a fixed time: the tests wait (bounded) for the state they expect, and kill at a state they
observed (a run started and not finished, a write the simulator applied, messages piling up)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.actions.tokens import ENV_KEY
from bot.sim.server import SimServer
from tests.e2e.conftest import FAILED_TASK, SIGNING_SECRET, USER, bot_env, command_form, signed_headers
from tests.e2e.test_slack_actions import blocks_of, buttons_in
from tests.e2e.test_slack_incidents import CHANNEL, incident_roots, wait_until, write_config
from tests.fakes.slack_api import Call
from tests.fakes.slack_history import HistoryFakeSlack

REPO = Path(__file__).resolve().parents[2]
SIGNING_KEY = "reliability-button-signing-key-0123456789"


class Serve:
    """`clearml-chatops serve --http` as its own process; stderr goes to a file (read, never a full pipe)."""

    count = 0

    def __init__(self, config: Path, slack: HistoryFakeSlack, sim: SimServer, tmp_path: Path) -> None:
        Serve.count += 1
        key, secret = sim.keys[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CLEARML_", "LOG_"))}
        env.update(bot_env(slack), E2E_SIM_KEY=key, E2E_SIM_SECRET=secret, HOME=str(tmp_path), PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(REPO), LOG_LEVEL="INFO", LOG_FORMAT="json", **{ENV_KEY: SIGNING_KEY})
        self.log_path = tmp_path / f"serve-{Serve.count}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1", "--port", "0", "--config",
             str(config)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=self._log, text=True)
        found = wait_until(lambda: re.search(r"health: (http://[0-9.]+:\d+)/healthz", self.log()) or
                           self.proc.poll() is not None, what="serve to be ready")
        assert self.proc.poll() is None, self.log()
        self.url = found.group(1)

    def log(self) -> str:
        return self.log_path.read_text()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return int(self.proc.returncode)

    def post(self, body: str) -> httpx.Response:
        return httpx.post(f"{self.url}/slack/events", content=body.encode(), headers=signed_headers(body), timeout=10)


@pytest.fixture
def slack() -> Iterator[HistoryFakeSlack]:
    with HistoryFakeSlack() as fake:
        fake.add_channel("ml-alerts", channel_id=CHANNEL)
        yield fake


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for s in started:
        s.stop()


def config_file(tmp_path: Path, sim: SimServer, slack: HistoryFakeSlack, **changes: Any) -> tuple[Path, dict[str, Any]]:
    config = write_config(tmp_path, sim, slack)
    config.update(changes)
    path = tmp_path / "bot.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def db(config: dict[str, Any]) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{config['store']}?mode=ro", uri=True, timeout=10)


def query(config: dict[str, Any], sql: str) -> list[tuple[Any, ...]]:
    conn = db(config)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def json_lines_only(text: str) -> None:
    """Every line the process logged is one JSON object (a traceback stays inside its line)."""
    for line in text.splitlines():
        if line.startswith("clearml-chatops serve:"):  # the one plain "ready" line for people and scripts
            continue
        json.loads(line)


def settled(config: dict[str, Any], slack: HistoryFakeSlack, runs_at_least: int) -> bool:
    runs = query(config, "SELECT count(*) FROM runs")[0][0]
    pending = query(config, "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')")[0][0]
    incidents = query(config, "SELECT count(*) FROM incidents")[0][0]
    return runs >= runs_at_least and pending == 0 and len(incident_roots(slack)) == incidents


def test_kill_9_during_a_playbook_run(
    sim_factory: Callable[..., SimServer], slack: HistoryFakeSlack, tmp_path: Path, serves: list[Serve]
) -> None:
    zoo = sim_factory("incident-zoo", latency_ms=250)  # a run takes a few round trips: long enough to be caught in
    path, config = config_file(tmp_path, zoo, slack)
    first = Serve(path, slack, zoo, tmp_path)
    serves.append(first)

    def run_in_flight() -> bool:
        if not query(config, "SELECT count(*) FROM runs")[0][0] or not incident_roots(slack):
            return False
        state = query(config, "SELECT last_started_at, last_finished_at FROM schedule_state "
                              "WHERE job_id = 'playbook:zoo'")
        return bool(state) and (state[0][1] is None or state[0][1] < state[0][0])

    wait_until(run_in_flight, what="a scheduled run in flight after the first incidents")
    first.kill9()
    runs_before = query(config, "SELECT count(*) FROM runs")[0][0]
    incidents_before = dict(query(config, "SELECT id, status FROM incidents"))
    assert query(config, "PRAGMA integrity_check") == [("ok",)]
    # a run is recorded whole or not at all
    assert query(config, "SELECT count(*) FROM runs r WHERE findings != "
                         "(SELECT count(*) FROM findings f WHERE f.run_id = r.id)") == [(0,)]

    zoo.latency_ms = 0
    second = Serve(path, slack, zoo, tmp_path)
    serves.append(second)
    wait_until(lambda: settled(config, slack, runs_before + 2), what="the restarted bot to catch up and drain")
    assert second.stop() == 0
    # the interrupted (and missed) run was noticed and run once at start, saying so
    assert "catch-up" in second.log()
    assert query(config, "SELECT count(*) FROM runs WHERE trigger LIKE '%catch-up%'")[0][0] == 1
    incidents_after = dict(query(config, "SELECT id, status FROM incidents"))
    assert set(incidents_before) <= set(incidents_after)
    assert all(incidents_after[i] == "open" for i in incidents_before)
    assert set(incident_roots(slack)) == {f"incident:{i}:root" for i in incidents_after}  # each root once
    assert query(config, "SELECT key, last_error FROM outbox WHERE status = 'failed'") == []
    json_lines_only(first.log())
    json_lines_only(second.log())


def _task_message(serve: Serve, slack: HistoryFakeSlack) -> Call:
    before = len(slack.calls_to("chat.update"))
    body = urllib.parse.urlencode(command_form(f"task {FAILED_TASK}", response_url=slack.response_url()))
    assert serve.post(body).status_code == 200
    return slack.wait_for("chat.update", count=before + 1, timeout=30)[-1]


def _click(serve: Serve, slack: HistoryFakeSlack, message: Call, button: str, queue_id: str | None = None) -> str:
    blocks = blocks_of(message)
    block_id, element = buttons_in(blocks)[button]
    ts, channel = message.args["ts"], message.args["channel"]
    state: dict[str, Any] = {}
    if queue_id is not None:  # the queue picked in the select next to the buttons
        state = {block_id: {"act_queue": {"type": "static_select", "selected_option": {"value": queue_id}}}}
    response_url = slack.response_url()
    payload = {
        "type": "block_actions", "user": {"id": USER, "username": "alice", "team_id": "T0FAKETEAM"},
        "api_app_id": "A0FAKE", "team": {"id": "T0FAKETEAM"}, "channel": {"id": channel},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "message": {"ts": ts, "text": message.args.get("text"), "blocks": blocks}, "state": {"values": state},
        "response_url": response_url, "trigger_id": "1.2.3",
        "actions": [{"type": "button", "action_id": element["action_id"], "block_id": block_id,
                     "value": element["value"], "action_ts": str(time.time())}],
    }
    assert serve.post(urllib.parse.urlencode({"payload": json.dumps(payload)})).status_code == 200
    return response_url


WRITES = ("tasks.stop", "tasks.reset", "tasks.enqueue", "tasks.clone", "queues.add_task")


def test_kill_9_during_an_action(
    sim_factory: Callable[..., SimServer], slack: HistoryFakeSlack, tmp_path: Path, serves: list[Serve]
) -> None:
    sim = sim_factory("basic")
    path, config = config_file(tmp_path, sim, slack, playbooks=str(tmp_path / "none"),  # no schedules: the click
                               actions={"allow": {"clone": {"users": [USER]}}})
    first = Serve(path, slack, sim, tmp_path)
    serves.append(first)
    message = _task_message(first, slack)
    sim.reset_calls()
    sim.latency_ms = 1500  # every ClearML call now takes 1.5 s: after the clone, the enqueue is still on its way
    _click(first, slack, message, "Clone", queue_id=sim.queue_id("gpu"))
    wait_until(lambda: any(name == "tasks.clone" for name, _ in sim.calls), what="the clone to be made")
    first.kill9()  # the clone exists, its enqueue has not happened: killed mid-action
    sim.latency_ms = 0
    assert [name for name, _ in sim.calls if name in WRITES] == ["tasks.clone"]
    assert query(config, "SELECT status FROM action_runs") == [("running",)]
    tables = {t for (t,) in query(config, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "audit" not in tables or query(config, "SELECT count(*) FROM audit")[0][0] == 0  # never written

    second = Serve(path, slack, sim, tmp_path)
    serves.append(second)
    # At start the half-done action is audited as interrupted, and its button does not run it again.
    assert query(config, "SELECT outcome, actor_id, action, subject FROM audit") == [
        ("interrupted", USER, "clone", FAILED_TASK)]
    # ... and the thread where it was clicked is told (issue #14: before, only the audit log knew)
    told = slack.wait_for("chat.postMessage", timeout=30, predicate=lambda c: c.args.get("thread_ts") == message.args[
        "ts"] and "interrupted" in json.dumps(c.args))[0]
    assert f"<@{USER}>" in json.dumps(told.args) and "check the current state" in json.dumps(told.args)
    response_url = _click(second, slack, message, "Clone", queue_id=sim.queue_id("gpu"))
    url_id = response_url.rsplit("/", 1)[-1]
    note = slack.wait_for("response_url", predicate=lambda c: c.args.get("_url_id") == url_id, timeout=30)[0]
    assert "interrupted" in json.dumps(note.args)
    assert [name for name, _ in sim.calls if name in WRITES] == ["tasks.clone"]  # no second clone, no enqueue
    assert second.stop() == 0
    outcomes = [r[0] for r in query(config, "SELECT outcome FROM audit ORDER BY id")]
    assert outcomes == ["interrupted", "duplicate"]  # every attempt is on record, the first exactly once
    assert "interrupted by a restart" in second.log()
    json_lines_only(second.log())


def test_kill_9_with_a_full_outbox_then_it_drains(
    sim_factory: Callable[..., SimServer], slack: HistoryFakeSlack, tmp_path: Path, serves: list[Serve]
) -> None:
    zoo = sim_factory("incident-zoo")
    path, config = config_file(tmp_path, zoo, slack)
    slack.fail("chat.postMessage", status=429, retry_after=3, times=None)  # Slack rate-limits every post
    first = Serve(path, slack, zoo, tmp_path)
    serves.append(first)

    def piled_up() -> int:
        return int(query(config, "SELECT count(*) FROM outbox WHERE status = 'pending'")[0][0])

    wait_until(lambda: piled_up() >= 5, what="messages piling up in the outbox")
    scraped = httpx.get(f"{first.url}/metrics", timeout=10).text  # the backlog shows on /metrics
    depth = float(re.search(r"^clearml_chatops_outbox_depth ([0-9.]+)$", scraped, re.M).group(1))  # type: ignore[union-attr]
    assert depth >= 5 and "clearml_chatops_slack_rate_limited_total" in scraped
    first.kill9()
    queued = {k for (k,) in query(config, "SELECT key FROM outbox WHERE status = 'pending'")}
    runs_before = query(config, "SELECT count(*) FROM runs")[0][0]
    assert not incident_roots(slack)  # nothing got through

    slack.clear_faults()  # Slack recovers
    second = Serve(path, slack, zoo, tmp_path)
    serves.append(second)
    wait_until(lambda: settled(config, slack, runs_before + 1), what="the outbox to drain after the restart")
    assert second.stop() == 0
    sent = {k for (k,) in query(config, "SELECT key FROM outbox WHERE status = 'sent'")}
    assert queued <= sent  # everything queued before the kill was delivered
    incidents = [i for (i,) in query(config, "SELECT id FROM incidents")]
    assert set(incident_roots(slack)) == {f"incident:{i}:root" for i in incidents}  # each root exactly once
    assert query(config, "SELECT key, last_error FROM outbox WHERE status = 'failed'") == []
    leaked = [s for s in (slack.bot_token, SIGNING_SECRET) if s in first.log() + second.log()]
    assert leaked == []
