"""The one private-reply helper (`SlackSink.tell_privately`) every listener uses: only the user sees the note,
through the response_url when there is one, else (or when that fails) chat.postEphemeral; never raises."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from bot.slack.client import make_web_client
from bot.slack.delivery.sink import SlackSink
from bot.slack.messages.common import SlackMessage, section
from tests.fakes.slack_api import FakeSlack


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("ml-alerts", channel_id="C0MLALERTS")
        yield fake


@pytest.fixture
def sink(slack: FakeSlack) -> SlackSink:
    return SlackSink(make_web_client(slack.bot_token, base_url=slack.base_url))


def note(text: str) -> SlackMessage:
    return SlackMessage(text=text, blocks=[section(text)])


def test_the_response_url_first(slack: FakeSlack, sink: SlackSink) -> None:
    url = slack.response_url()
    assert sink.tell_privately(note("only you"), user="U0ALICE", channel="C0MLALERTS", response_url=url)
    (answer,) = slack.responses
    assert answer.args["response_type"] == "ephemeral" and answer.args["text"] == "only you"
    assert slack.calls_to("chat.postEphemeral") == []


def test_a_failing_response_url_falls_back_to_an_ephemeral_message(
    slack: FakeSlack, sink: SlackSink, caplog: pytest.LogCaptureFixture
) -> None:
    # a response_url outside Slack's hosts is refused (never posted to): the user still gets the note, in the thread
    told = sink.tell_privately(note("not allowed"), user="U0ALICE", channel="C0MLALERTS",
                               response_url="https://elsewhere.example/hook", thread_ts="1700000000.000100")
    assert told and slack.responses == []
    (eph,) = slack.calls_to("chat.postEphemeral")
    assert eph.args["user"] == "U0ALICE" and eph.args["thread_ts"] == "1700000000.000100"
    assert "not allowed" in eph.args["text"]
    assert "trying chat.postEphemeral" in caplog.text


def test_nowhere_to_say_it_is_logged_not_raised(
    slack: FakeSlack, sink: SlackSink, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fail("chat.postEphemeral", error="user_not_in_channel")
    with caplog.at_level(logging.WARNING):
        assert not sink.tell_privately(note("lost"), user="U0ALICE", channel="C0MLALERTS")
        assert not sink.tell_privately(note("lost"), user="U0ALICE", channel=None)
    assert "could not reach user U0ALICE at all" in caplog.text
