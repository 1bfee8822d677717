"""The action buttons' listeners called directly with a fake `ack`: a click is acked at once and handed to the work
pool (ClearML and Slack untouched by the listener); a user who may not act is told privately and nothing changes;
a full pool still acks and says so privately; the queue select only needs its ack."""

from __future__ import annotations

from typing import Any

from slack_bolt import BoltContext

from bot.actions.executor import button_value
from bot.config import ActionAllow, ActionsSettings, Settings
from bot.sim.server import SimServer
from bot.slack.actions.listeners import ack_only, handle_click
from bot.slack.services import BotServices
from tests.e2e.conftest import FAILED_TASK, USER
from tests.fakes.slack_api import FakeSlack
from tests.unit.slack._listener_support import (
    FakeAck,
    HeldPool,
    ServicesFactory,
    audit_rows,
    button_body,
    channel_writes,
    private_notes,
)

BOB = "U0BOB"


def requeue_click(services: BotServices, slack: FakeSlack, user: str = USER) -> tuple[dict[str, Any], dict[str, Any]]:
    """A click on the "Requeue" button the bot signed for the simulator's failed task, in #general."""
    value = button_value(services.settings, services.action_store, "requeue", FAILED_TASK, server="prod",
                         deps=services.action_deps, channel="C0GENERAL")
    return button_body("act:requeue:0", value, user=user, response_url=slack.response_url())


def status_of(sim: SimServer, task_id: str) -> str:
    with sim.state.lock:
        return str(sim.state.tasks[task_id]["status"])


def test_the_queue_select_is_only_acked(ack: FakeAck, held: HeldPool) -> None:
    ack_only(ack)
    assert ack.body is None and held.names() == []


def test_an_unauthorised_click_is_acked_then_refused_privately_on_the_work_pool(
    ack: FakeAck, listener_settings: Settings, services_for: ServicesFactory, fake_slack: FakeSlack, sim: SimServer
) -> None:
    services = services_for(listener_settings.model_copy(update={"actions": ActionsSettings(
        allow={"requeue": ActionAllow(users=[BOB])})}))
    pool = services.pool
    assert isinstance(pool, HeldPool)
    body, action = requeue_click(services, fake_slack, user=USER)
    calls_before = len(fake_slack.calls)
    handle_click(ack, body, action, BoltContext({"services": services}))
    assert ack.body is None  # acked at once, with nothing to show
    assert pool.names() == ["button requeue"]
    assert len(fake_slack.calls) == calls_before and fake_slack.responses == []
    assert audit_rows(services) == []  # not even authorized yet: that is the work pool's job
    pool.release()
    notes = private_notes(fake_slack, body["response_url"])
    assert len(notes) == 1, [n.text_blob for n in notes]
    assert "Not allowed" in notes[0].text_blob and "actions.allow.requeue" in notes[0].text_blob  # why, and the fix
    assert channel_writes(fake_slack) == []  # only the clicking user heard of it
    assert status_of(sim, FAILED_TASK) == "failed"  # nothing was requeued
    row = audit_rows(services)[0]
    assert (row["action"], row["outcome"], row["actor_id"]) == ("requeue", "denied", USER)


def test_a_full_work_pool_still_acks_and_tells_the_user_privately(
    ack: FakeAck, context: BoltContext, bot_services: BotServices, held: HeldPool, fake_slack: FakeSlack,
    sim: SimServer,
) -> None:
    body, action = requeue_click(bot_services, fake_slack)
    held.refuse = 1  # the click's job is refused; the note about it is not
    handle_click(ack, body, action, context)
    assert ack.body is None
    assert held.names() == ["busy note"]
    held.release()
    notes = private_notes(fake_slack, body["response_url"])
    assert len(notes) == 1 and "I am busy" in notes[0].text_blob and "nothing was done" in notes[0].text_blob
    assert channel_writes(fake_slack) == []
    assert status_of(sim, FAILED_TASK) == "failed"
    assert audit_rows(bot_services) == []  # nothing was attempted
