"""The `/clearml` listener called directly with a fake `ack`: instant answers (help, lists, mistakes) are in the ack
and private; everything that asks ClearML is acked empty and handed to the work pool, never run in the listener."""

from __future__ import annotations

import pytest
from slack_bolt import BoltContext

from bot.slack.commands.listeners import handle_command
from bot.slack.services import BotServices
from tests.e2e.conftest import command_form
from tests.fakes.slack_api import FakeSlack
from tests.unit._incidents_support import dead_worker, run
from tests.unit.slack._listener_support import FakeAck, HeldPool


def slash(text: str, slack: FakeSlack) -> dict[str, str]:
    return command_form(text, response_url=slack.response_url())


def test_help_is_the_ack_itself_private_and_nothing_is_handed_over(
    ack: FakeAck, context: BoltContext, held: HeldPool, fake_slack: FakeSlack
) -> None:
    calls_before = len(fake_slack.calls)
    handle_command(ack, slash("help", fake_slack), context)
    assert ack.body is not None and ack.body["response_type"] == "ephemeral"
    for sub in ("run", "status", "task", "incidents"):
        assert f"/clearml {sub}" in ack.text()
    assert held.names() == []
    assert len(fake_slack.calls) == calls_before and fake_slack.responses == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stauts", "status"),  # a typo: the closest command
        ("task not-a-task-id", "Usage: `/clearml task"),  # a reference no server could have
        ("run ../etc/passwd", "is not a playbook name"),
        ("run health nowhere", "There is no server `nowhere`"),
    ],
)
def test_invalid_input_gets_the_usage_message_in_the_ack(
    text: str, expected: str, ack: FakeAck, context: BoltContext, held: HeldPool, fake_slack: FakeSlack
) -> None:
    handle_command(ack, slash(text, fake_slack), context)
    assert ack.body is not None and ack.body["response_type"] == "ephemeral"
    assert ":thinking_face:" in ack.text()
    assert expected in ack.text()
    assert held.names() == []  # nothing was started for a command that cannot work


def test_status_is_acked_empty_and_its_work_handed_to_the_pool(
    ack: FakeAck, context: BoltContext, held: HeldPool, fake_slack: FakeSlack
) -> None:
    calls_before = len(fake_slack.calls)
    handle_command(ack, slash("status", fake_slack), context)
    assert ack.body is None  # a bare ack: the answer comes later, in the channel
    assert held.names() == ["/clearml status"]
    assert len(fake_slack.calls) == calls_before  # the listener itself wrote nothing to Slack
    held.release()
    answers = fake_slack.calls_to("chat.update") + fake_slack.calls_to("chat.postMessage")
    assert any("prod" in call.text_blob for call in answers), [c.text_blob for c in answers]


def test_a_full_work_pool_is_told_in_the_ack(
    ack: FakeAck, context: BoltContext, held: HeldPool, fake_slack: FakeSlack
) -> None:
    held.refuse = 1
    handle_command(ack, slash("status", fake_slack), context)
    assert ack.body is not None and ack.body["response_type"] == "ephemeral"
    assert "I am busy" in ack.text() and "try again" in ack.text()
    assert held.names() == []


def test_incidents_are_answered_from_the_store_in_the_ack(
    ack: FakeAck, context: BoltContext, bot_services: BotServices, held: HeldPool, fake_slack: FakeSlack
) -> None:
    assert bot_services.incidents is not None
    bot_services.incidents.handle_run(run(dead_worker("gpu-7")))
    handle_command(ack, slash("incidents", fake_slack), context)
    assert ack.body is not None and ack.body["response_type"] == "ephemeral"
    assert "Open incidents: 1" in ack.text() and "gpu-7" in ack.text()
    assert held.names() == []
