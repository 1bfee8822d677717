"""Tell the owner: with `notify_owner: true`, a new incident about one task also goes to the task's owner as a
Slack DM (ClearML user -> Slack user by slack.owners, else users.lookupByEmail), through the durable outbox and a
real slack_sdk WebClient against the fake Slack API; the channel keeps its root message."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from bot.config import Settings
from bot.engine.playbook import CheckEntry, Playbook
from bot.incidents.owners import owner_target
from bot.incidents.pipeline import IncidentPipeline
from bot.schedule import run_once
from bot.slack.delivery import Outbox, WebClientSender
from bot.store import Store
from tests.fakes.slack_api import FakeSlack
from tests.helpers import server_settings
from tests.integration.test_outbox_slack import drain_until_empty

SCENARIO = {
    "name": "owners",
    "users": [{"id": "u-alice", "name": "alice@acme.io"}, {"id": "u-bob", "name": "Bob"},
              {"id": "u-carol", "name": "carol"}],
    "tasks": [
        {"name": f"train-{who}", "user": f"u-{who}", "status": "in_progress", "started": "-2h", "last_update": "-40m"}
        for who in ("alice", "bob", "carol")
    ],
}
SETTINGS = {"slack": {"default_channel": "#ml-alerts", "owners": {"Bob": "U0BOB0001"}}}


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("ml-alerts", channel_id="C0MLALERTS")
        fake.add_user("U0ALICE01", "alice@acme.io")
        yield fake


def playbook(notify: bool) -> Playbook:
    return Playbook(name="owners", notify_owner=notify, checks=[CheckEntry(check="agents.orphaned_tasks")])


def deliver(sim: Any, slack: FakeSlack, tmp_path: Path, notify: bool) -> dict[str, list[dict[str, Any]]]:
    """Run the playbook, fold it into incidents, drain the outbox to the fake Slack: channel id -> messages."""
    settings = Settings.model_validate(SETTINGS)
    book = playbook(notify)
    result = asyncio.run(run_once(book, settings, server_settings(sim), trigger="schedule"))
    store = Store(tmp_path / f"bot-{notify}.db")
    try:
        box = Outbox(store)
        pipe = IncidentPipeline(store, outbox=box, settings=settings, playbooks=[book])
        now = datetime.now(UTC)
        pipe.handle_run(result, now)
        client = WebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[])  # type: ignore[arg-type]
        drain_until_empty(box, WebClientSender(client), now)
        assert box.failed() == []
    finally:
        store.close()
    return {cid: list(msgs.values()) for cid, msgs in slack.messages.items()}


def test_owners_get_the_incident_in_a_dm(sim_factory: Any, slack: FakeSlack, tmp_path: Path) -> None:
    posted = deliver(sim_factory(scenario=SCENARIO), slack, tmp_path, notify=True)
    roots = posted["C0MLALERTS"]
    assert sorted(m["text"].split("Task ")[1].split(" ")[0] for m in roots if not m.get("thread_ts")) == [
        "train-alice", "train-bob", "train-carol"]
    # alice by the address that is her ClearML name (users.lookupByEmail), bob through slack.owners
    assert set(slack.dms) == {"U0ALICE01", "U0BOB0001"}
    alice = posted[slack.dms["U0ALICE01"]]
    assert len(alice) == 1 and "train-alice" in alice[0]["text"] and "train-bob" not in alice[0]["text"]
    assert "train-bob" in posted[slack.dms["U0BOB0001"]][0]["text"]
    channel_copy = next(m for m in roots if "train-alice" in m["text"] and not m.get("thread_ts"))
    assert alice[0]["text"] == channel_copy["text"]  # the same message as the channel's root
    assert [c.args["email"] for c in slack.calls_to("users.lookupByEmail")] == ["alice@acme.io"]


def test_without_notify_owner_nobody_gets_a_dm(sim_factory: Any, slack: FakeSlack, tmp_path: Path) -> None:
    posted = deliver(sim_factory(scenario=SCENARIO), slack, tmp_path, notify=False)
    assert slack.dms == {} and slack.calls_to("users.lookupByEmail") == []
    assert len([m for m in posted["C0MLALERTS"] if not m.get("thread_ts")]) == 3


def test_owner_target_rules() -> None:
    slack = Settings.model_validate(SETTINGS).slack
    assert owner_target({"id": "u-bob", "name": "Bob"}, slack) == "dm:U0BOB0001"
    assert owner_target({"id": "u-x", "name": "Xi", "email": "xi@acme.io"}, slack) == "dm:xi@acme.io"
    assert owner_target({"id": "u-carol", "name": "carol"}, slack) is None  # no address, no mapping: no DM
    no_lookup = Settings.model_validate({"slack": {"owner_lookup_by_email": False}}).slack
    assert owner_target({"id": "u-x", "name": "xi@acme.io"}, no_lookup) is None
    assert owner_target(None, slack) is None
