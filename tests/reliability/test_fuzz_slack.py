"""Property-based fuzzing of what Slack sends the bot, signed like Slack's requests and posted to the bot's HTTP
endpoint (`serve --http` in this process, Bolt's own request handling behind it): slash commands with any text and
missing fields, and interaction payloads (button clicks, selects, other interaction types) with missing, extra and
oddly typed fields. Every request is answered (acked, ignored, or refused as malformed), no listener crashes,
nothing the bot runs afterwards logs an unexpected error, and no mutating action ever runs for a payload the bot
did not sign."""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.sim.server import SimServer
from bot.slack.actions.messages import ACTION_PREFIX, QUEUE_SELECT
from bot.slack.app import services_of
from bot.slack.commands.messages import VERIFY_DATASET_ACTION
from bot.slack.incidents.messages import ACK_ACTION, RESOLVE_ACTION, SNOOZE_ACTIONS
from bot.slack.serve import BotServer
from tests.e2e.conftest import FAILED_TASK, USER, bot_env, signed_headers, sim_settings
from tests.fakes.slack_api import FakeSlack

MUTATING = ("tasks.clone", "tasks.enqueue", "tasks.stop", "tasks.reset", "tasks.dequeue", "queues.move_task_to_front")


class Errors(logging.Handler):
    """Collects ERROR records with a traceback from the bot's loggers (a listener or a job that crashed)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.name.startswith(("bot", "slack_bolt")):
            self.records.append(f"{record.name}: {record.getMessage()} {record.exc_info[1]!r}")


class Bot:
    """The bot serving HTTP in this process; requests are signed like Slack's, so they reach the listeners."""

    def __init__(self, server: BotServer, slack: FakeSlack, sim: SimServer, errors: Errors) -> None:
        self.server, self.slack, self.sim, self.errors = server, slack, sim, errors
        self.http = httpx.Client(timeout=10)

    def post(self, form: dict[str, str]) -> int:
        body = urllib.parse.urlencode(form)
        return self.http.post(f"{self.server.url}/slack/events", content=body.encode(),
                              headers=signed_headers(body)).status_code

    def settle(self) -> None:
        assert self.server.app is not None
        pool = services_of(self.server.app).pool
        deadline = time.monotonic() + 20
        while pool.pending and time.monotonic() < deadline:
            time.sleep(0.01)


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    tmp_path: Path = tmp_path_factory.mktemp("fuzz-slack")
    env = pytest.MonkeyPatch()
    errors = Errors()
    logging.getLogger().addHandler(errors)
    try:
        with FakeSlack() as slack, SimServer("basic") as sim:
            settings = sim_settings(sim, slack, tmp_path, env)
            settings = settings.model_copy(update={"actions": settings.actions.model_copy(
                update={"allow": {"clone": _allow(USER), "requeue": _allow(USER)}})})
            server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(slack)).start()
            bot = Bot(server, slack, sim, errors)
            try:
                yield bot
            finally:
                bot.http.close()
                server.stop()
    finally:
        logging.getLogger().removeHandler(errors)
        env.undo()


def _allow(user: str) -> Any:
    from bot.config import ActionAllow

    return ActionAllow(users=[user])


junk = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                 st.lists(st.text(max_size=5), max_size=2),
                 st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, junk)


action_ids = st.sampled_from([f"{ACTION_PREFIX}requeue:0", f"{ACTION_PREFIX}clone:1", f"{ACTION_PREFIX}abort:0",
                              f"{ACTION_PREFIX}nope:0", QUEUE_SELECT, ACK_ACTION, RESOLVE_ACTION,
                              *SNOOZE_ACTIONS, VERIFY_DATASET_ACTION, "unknown_action"])
values = st.sampled_from(["", "{}", '{"server": "prod", "dataset": "' + "d" * 32 + '"}', '{"dataset": 5}',
                          "inc:1", "incident:999999", "not.signed", "eyJhIjoiY2xvbmUifQ.forged", FAILED_TASK])
action = st.fixed_dictionaries({}, optional={
    "action_id": maybe(action_ids), "value": maybe(values), "block_id": maybe(st.sampled_from(["inc1:acts", "acts:0",
                                                                                                 "x"])),
    "type": maybe(st.sampled_from(["button", "static_select"])),
    "selected_option": maybe(st.fixed_dictionaries({}, optional={"value": maybe(st.text(max_size=32))})),
})
identity = st.fixed_dictionaries({}, optional={"id": maybe(st.sampled_from([USER, "U0OTHER", "", "W123"])),
                                               "username": junk, "team_id": junk})
payload = st.fixed_dictionaries({"type": maybe(st.sampled_from(
    ["block_actions", "view_submission", "block_suggestion", "shortcut", "message_action", "interactive_message"]))},
    optional={
        "actions": maybe(st.lists(action, max_size=3)),
        "user": maybe(identity),
        "channel": maybe(st.fixed_dictionaries({}, optional={"id": maybe(st.sampled_from(["C0GENERAL", "C0NOPE"]))})),
        "container": maybe(st.fixed_dictionaries({}, optional={"message_ts": junk, "channel_id": junk,
                                                               "is_ephemeral": junk, "thread_ts": junk})),
        "message": maybe(st.fixed_dictionaries({}, optional={"ts": junk, "text": junk, "blocks": junk,
                                                             "thread_ts": junk})),
        "response_url": maybe(st.sampled_from(["http://127.0.0.1:9/closed", "not a url"])),
        "state": maybe(st.fixed_dictionaries({}, optional={"values": junk})),
        "team": maybe(identity), "api_app_id": junk, "trigger_id": junk, "view": junk, "extra": junk,
    })


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(payload)
def test_interaction_payloads_with_missing_or_odd_fields_never_crash_a_listener(bot: Bot, body: dict[str, Any]) -> None:
    bot.errors.records.clear()
    status = bot.post({"payload": json.dumps(body)})
    # acked (200), no listener for it (404), or a shape Slack never sends refused (400): never a crashed listener
    assert status in (200, 400, 404), status
    bot.settle()
    assert bot.errors.records == []
    assert [c for c in bot.sim.calls if c[0] in MUTATING] == []  # nothing unsigned ever mutates ClearML


texts = st.one_of(st.text(max_size=80), st.sampled_from([
    f"task {FAILED_TASK}", "run health", "run ../../etc/passwd", "dataset <http://evil.example/x|x>", "agents *",
    "diff a", "silence agents.* 1h", "incidents", "audit 5"]))
command = st.fixed_dictionaries(
    {"command": maybe(st.sampled_from(["/clearml", "/other"])), "text": maybe(texts)},
    optional={"user_id": maybe(st.sampled_from([USER, ""])), "channel_id": maybe(st.sampled_from(["C0GENERAL", ""])),
              "response_url": maybe(st.sampled_from(["http://127.0.0.1:9/closed"])), "team_id": junk,
              "trigger_id": junk},
)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(command)
def test_slash_commands_with_any_text_and_missing_fields_are_answered(bot: Bot, form: dict[str, Any]) -> None:
    bot.errors.records.clear()
    # a form carries strings only: odd types become their text, as they would on the wire
    status = bot.post({k: str(v) for k, v in form.items() if v is not None})
    assert status in (200, 404), status
    bot.settle()
    assert bot.errors.records == []
