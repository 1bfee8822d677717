"""The fake Slack answers chat.getPermalink like Slack does (api.slack.com/methods/chat.getPermalink): a link in
the workspace's own domain, the thread form for a reply, errors for an unknown channel or message."""

from __future__ import annotations

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.fakes.slack_api import FakeSlack


def test_get_permalink_like_slack() -> None:
    with FakeSlack() as slack:
        client = WebClient(token=slack.bot_token, base_url=slack.base_url)
        domain = client.auth_test()["url"].rstrip("/")
        root = client.chat_postMessage(channel="#general", text="root")
        reply = client.chat_postMessage(channel="C0GENERAL", text="reply", thread_ts=root["ts"])

        answer = client.chat_getPermalink(channel="C0GENERAL", message_ts=root["ts"])
        assert answer["ok"] and answer["channel"] == "C0GENERAL"
        assert answer["permalink"] == f"{domain}/archives/C0GENERAL/p{root['ts'].replace('.', '')}"
        threaded = client.chat_getPermalink(channel="C0GENERAL", message_ts=reply["ts"])["permalink"]
        assert threaded == (f"{domain}/archives/C0GENERAL/p{reply['ts'].replace('.', '')}"
                            f"?thread_ts={root['ts']}&cid=C0GENERAL")
        assert not threaded.startswith("https://slack.com/")

        with pytest.raises(SlackApiError, match="message_not_found"):
            client.chat_getPermalink(channel="C0GENERAL", message_ts="1.000001")
        with pytest.raises(SlackApiError, match="channel_not_found"):
            client.chat_getPermalink(channel="C0NOSUCH", message_ts=root["ts"])
        private = slack.add_channel("secret", private=True, member=False)
        with pytest.raises(SlackApiError, match="channel_not_found"):
            client.chat_getPermalink(channel=private.id, message_ts=root["ts"])
        # form arguments only, as Slack documents for this method: a JSON body is not read
        with pytest.raises(SlackApiError, match="channel_not_found"):
            client.api_call("chat.getPermalink", json={"channel": "C0GENERAL", "message_ts": root["ts"]})


def test_the_bots_outbox_asks_slack_for_permalinks_once_each() -> None:
    from bot.slack.delivery.sink import SlackSink
    from bot.slack.messages.common import SlackMessage, section

    with FakeSlack() as slack:
        outbox = SlackSink(WebClient(token=slack.bot_token, base_url=slack.base_url))
        posted = outbox.post("#general", SlackMessage(text="root", blocks=[section("root")]))
        first = outbox.permalink(posted.channel, posted.ts)
        assert first == f"https://fake.slack.test/archives/C0GENERAL/p{posted.ts.replace('.', '')}"
        assert outbox.permalink(posted.channel, posted.ts) == first
        assert len(slack.calls_to("chat.getPermalink")) == 1  # cached: a message's permalink never changes
        # a message Slack does not know: no link (and no exception), asked again next time
        assert outbox.permalink("C0GENERAL", "1.000001") is None
        assert outbox.permalink("C0GENERAL", "1.000001") is None
        assert len(slack.calls_to("chat.getPermalink")) == 3


def test_permalinks_never_hold_up_an_answer() -> None:
    from bot.slack.delivery.sink import SlackSink
    from bot.slack.messages.common import SlackMessage, section

    with FakeSlack() as slack:
        outbox = SlackSink(WebClient(token=slack.bot_token, base_url=slack.base_url))
        posted = outbox.post("#general", SlackMessage(text="root", blocks=[section("root")]))
        assert outbox.permalink(posted.channel, posted.ts, fetch=False) is None  # only from the cache
        assert slack.calls_to("chat.getPermalink") == []
        slack.latency["chat.getPermalink"] = SlackSink.PERMALINK_TIMEOUT_S + 1.0  # Slack hangs: no link, no retry
        assert outbox.permalink(posted.channel, posted.ts) is None
        slack.latency.clear()
        link = outbox.permalink(posted.channel, posted.ts)
        assert link is not None and outbox.permalink(posted.channel, posted.ts, fetch=False) == link
