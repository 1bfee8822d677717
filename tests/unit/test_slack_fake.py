"""The fake Slack Web API answers like Slack, so tests that use it mean something."""

from __future__ import annotations

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.fakes.slack_api import BOT_USER_ID, FakeSlack, validate_message


def test_conversations_usergroups_and_auth() -> None:
    with FakeSlack() as slack:
        client = WebClient(token=slack.bot_token, base_url=slack.base_url)
        assert client.auth_test()["user_id"] == BOT_USER_ID
        public = slack.add_channel("ml-alerts", member=False)
        private = slack.add_channel("ml-oncall", private=True, member=False)
        names = {c["name"] for c in client.conversations_list()["channels"]}
        assert "ml-alerts" in names and "ml-oncall" not in names  # a private channel is invisible until invited
        with pytest.raises(SlackApiError, match="channel_not_found"):
            client.conversations_info(channel=private.id)
        assert client.conversations_join(channel=public.id)["channel"]["is_member"] is True
        assert client.conversations_members(channel=public.id)["members"] == [BOT_USER_ID]
        slack.usergroups["S0MLENG"] = ["U1", "U2"]
        assert client.usergroups_users_list(usergroup="S0MLENG")["users"] == ["U1", "U2"]
        with pytest.raises(SlackApiError, match="no_such_subteam"):
            client.usergroups_users_list(usergroup="S0NOPE")
        with pytest.raises(SlackApiError, match="invalid_auth"):
            WebClient(token="xoxb-wrong", base_url=slack.base_url).auth_test()
        assert slack.calls_to("auth.test")[-1].status == 200  # Slack errors come with HTTP 200


def test_posts_get_fresh_ts_and_updates_need_the_id() -> None:
    with FakeSlack() as slack:
        client = WebClient(token=slack.bot_token, base_url=slack.base_url)
        first = client.chat_postMessage(channel="#general", text="a")
        second = client.chat_postMessage(channel="C0GENERAL", text="b", thread_ts=first["ts"])
        assert first["ts"] != second["ts"] and first["channel"] == "C0GENERAL"
        with pytest.raises(SlackApiError, match="channel_not_found"):
            client.chat_update(channel="#general", ts=first["ts"], text="c")  # chat.update wants the id
        client.chat_update(channel="C0GENERAL", ts=first["ts"], text="c")
        assert (slack.message("C0GENERAL", first["ts"]) or {}).get("text") == "c"
        with pytest.raises(SlackApiError, match="message_not_found"):
            client.chat_update(channel="C0GENERAL", ts="1.000000", text="c")


def test_block_limits_are_enforced() -> None:
    assert validate_message({"text": "x", "blocks": [{"type": "divider"}] * 51}) == ["51 blocks > 50"]
    assert validate_message({"blocks": []}) == ["no top-level text fallback"]
    long_section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    assert "section text 3001 > 3000" in validate_message({"text": "x", "blocks": [long_section]})[0]
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}
    assert validate_message({"text": "x", "blocks": [header]})
    with FakeSlack() as slack:
        client = WebClient(token=slack.bot_token, base_url=slack.base_url)
        with pytest.raises(SlackApiError, match="invalid_blocks"):
            client.chat_postMessage(channel="#general", text="x", blocks=[long_section])
        assert slack.violations


def test_rate_limit_and_server_error_modes() -> None:
    with FakeSlack() as slack:
        client = WebClient(token=slack.bot_token, base_url=slack.base_url)  # no retry handlers: see the raw answers
        slack.fail("chat.postMessage", status=429, retry_after=7)
        with pytest.raises(SlackApiError) as err:
            client.chat_postMessage(channel="#general", text="x")
        assert err.value.response.status_code == 429 and err.value.response.headers["Retry-After"] == "7"
        slack.fail("chat.postMessage", status=500)
        with pytest.raises(SlackApiError) as err:
            client.chat_postMessage(channel="#general", text="x")
        assert err.value.response.status_code == 500
        slack.fail("chat.postMessage", error="not_in_channel", channel="#general")
        with pytest.raises(SlackApiError, match="not_in_channel"):
            client.chat_postMessage(channel="C0GENERAL", text="x")
        assert client.chat_postMessage(channel="#general", text="x")["ok"]
