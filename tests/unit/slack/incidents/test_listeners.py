"""The incident buttons' listener (Acknowledge, Snooze, Resolve) called directly with a fake `ack`: acked at once,
the change made on the work pool (never in the listener), refusals told privately to the one who clicked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from slack_bolt import BoltContext

from bot.config import ActionAllow, ActionsSettings, Settings
from bot.slack.incidents.listeners import handle_button
from bot.slack.incidents.messages import ACK_ACTION, RESOLVE_ACTION
from bot.slack.services import BotServices
from tests.e2e.conftest import USER
from tests.fakes.slack_api import FakeSlack
from tests.unit._incidents_support import dead_worker, run
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


def open_incident(services: BotServices) -> int:
    assert services.incidents is not None
    """An incident whose root message is out (its settle time over, as `serve`'s tick finds it): it has buttons."""
    assert services.incidents is not None
    services.incidents.handle_run(run(dead_worker("gpu-7")))
    services.incidents.tick(datetime.now(UTC) + timedelta(minutes=10))
    (incident,) = services.incidents.tracker.list_incidents()
    assert incident.announced
    return incident.id


def test_acknowledge_is_acked_at_once_and_done_on_the_work_pool(
    ack: FakeAck, context: BoltContext, bot_services: BotServices, held: HeldPool, fake_slack: FakeSlack
) -> None:
    incident = open_incident(bot_services)
    durable = bot_services.outbox.durable
    queued = durable.depth()
    body, action = button_body(ACK_ACTION, str(incident), response_url=fake_slack.response_url())
    handle_button(ack, body, action, context)
    assert durable.depth() == queued
    assert ack.body is None  # a bare ack: the change shows in the incident's message
    assert held.names() == [f"incident {ACK_ACTION}"]
    assert bot_services.incidents is not None
    view = bot_services.incidents.tracker.get(incident)
    assert view is not None and view.ack_by is None  # the listener itself changed nothing
    held.release()
    view = bot_services.incidents.tracker.get(incident)
    assert view is not None and view.ack_by == f"<@{USER}>"
    assert durable.depth() > queued, "the acknowledgement is not on its way to the incident's thread"
    assert audit_rows(bot_services)[0]["action"] == "incident.ack"
    assert private_notes(fake_slack, body["response_url"]) == []  # done: nothing to tell privately


def test_resolve_by_someone_not_allowed_is_refused_privately_and_changes_nothing(
    ack: FakeAck, listener_settings: Settings, services_for: ServicesFactory, fake_slack: FakeSlack
) -> None:
    services = services_for(listener_settings.model_copy(update={"actions": ActionsSettings(
        allow={"resolve": ActionAllow(users=[BOB])})}))
    incident = open_incident(services)
    body, action = button_body(RESOLVE_ACTION, str(incident), user=USER, response_url=fake_slack.response_url())
    handle_button(ack, body, action, BoltContext({"services": services}))
    assert ack.body is None
    assert isinstance(services.pool, HeldPool)
    assert services.pool.names() == [f"incident {RESOLVE_ACTION}"]
    services.pool.release()
    notes = private_notes(fake_slack, body["response_url"])
    assert len(notes) == 1 and "Not allowed" in notes[0].text_blob
    assert "actions.allow.resolve" in notes[0].text_blob  # says who may
    assert channel_writes(fake_slack) == []  # nobody else saw the refusal
    assert services.incidents is not None
    view = services.incidents.tracker.get(incident)
    assert view is not None and view.status == "open"
    row = audit_rows(services)[0]
    assert (row["action"], row["outcome"], row["actor_id"]) == ("incident.resolve", "denied", USER)


def test_a_button_that_names_no_incident_is_answered_privately(
    ack: FakeAck, context: BoltContext, held: HeldPool, fake_slack: FakeSlack
) -> None:
    body, action = button_body(ACK_ACTION, "not-a-number", response_url=fake_slack.response_url())
    handle_button(ack, body, action, context)
    assert ack.body is None and held.names() == [f"incident {ACK_ACTION}"]
    held.release()
    notes = private_notes(fake_slack, body["response_url"])
    assert len(notes) == 1 and "does not name an incident" in notes[0].text_blob
    assert channel_writes(fake_slack) == []
