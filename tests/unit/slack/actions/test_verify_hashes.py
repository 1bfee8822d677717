"""The "Verify file hashes" listener called directly with a fake `ack`: acked at once, the check of the signature and
of the user's permission done on the work pool; a refusal is a private note and an audit row, and nothing runs."""

from __future__ import annotations

from slack_bolt import BoltContext

from bot.actions.policy import VERIFY_HASHES
from bot.slack.actions.verify_hashes import handle_verify
from bot.slack.commands.messages import VERIFY_DATASET_ACTION
from bot.slack.services import BotServices
from tests.e2e.conftest import USER
from tests.fakes.slack_api import FakeSlack
from tests.unit.slack._listener_support import (
    FakeAck,
    HeldPool,
    audit_rows,
    button_body,
    channel_writes,
    private_notes,
)

DATASET = "d1000000000000000000000000000001"


def verify_value(services: BotServices, channel: str = "C0GENERAL") -> str:
    """Signed as the dataset message's button is (bot/slack/commands/jobs.py): for this dataset, in this channel."""
    assert services.action_deps is not None and services.action_deps.signer is not None
    return services.action_deps.signer.issue(VERIFY_HASHES, DATASET, server="prod", params={"c": channel})


def test_a_user_not_allowed_is_acked_then_refused_privately_and_nothing_runs(
    ack: FakeAck, context: BoltContext, bot_services: BotServices, held: HeldPool, fake_slack: FakeSlack
) -> None:
    body, action = button_body(VERIFY_DATASET_ACTION, verify_value(bot_services),
                               response_url=fake_slack.response_url())
    calls_before = len(fake_slack.calls)
    handle_verify(ack, body, action, context)
    assert ack.body is None
    assert held.names() == ["dataset verify"]
    assert len(fake_slack.calls) == calls_before and fake_slack.responses == []
    assert held.release() == ["dataset verify", "dataset verify note"]  # the note is sent from the pool too
    notes = private_notes(fake_slack, body["response_url"])
    assert len(notes) == 1 and "Not allowed" in notes[0].text_blob, [n.text_blob for n in notes]
    assert channel_writes(fake_slack) == []  # no "running…" placeholder: nothing ran
    row = audit_rows(bot_services)[0]
    assert (row["action"], row["outcome"], row["subject"], row["actor_id"]) == (
        VERIFY_HASHES, "denied", DATASET, USER)


def test_a_button_copied_to_another_channel_is_refused_privately(
    ack: FakeAck, context: BoltContext, bot_services: BotServices, held: HeldPool, fake_slack: FakeSlack
) -> None:
    body, action = button_body(VERIFY_DATASET_ACTION, verify_value(bot_services, channel="C0OTHER"),
                               response_url=fake_slack.response_url())
    handle_verify(ack, body, action, context)
    assert ack.body is None
    held.release()
    notes = private_notes(fake_slack, body["response_url"])
    assert len(notes) == 1 and "another channel" in notes[0].text_blob
    assert "Nothing was run" in notes[0].text_blob
    assert channel_writes(fake_slack) == []
    assert audit_rows(bot_services)[0]["outcome"] == "tampered"
