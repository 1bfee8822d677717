"""The App Home listeners called directly with a fake `ack`: opening the Home tab and pressing its buttons hand the
work (ClearML reads, `views.publish`) to the work pool at once; the Messages tab and a click without a user do
nothing."""

from __future__ import annotations

import json
from typing import Any

from slack_bolt import BoltContext

from bot.slack.home.listeners import home_button, home_opened
from bot.slack.home.messages import HOME_STATUS
from tests.e2e.conftest import USER
from tests.fakes.slack_api import FakeSlack
from tests.unit.slack._listener_support import FakeAck, HeldPool, button_body


def opened_event(tab: str = "home", user: str = USER) -> dict[str, Any]:
    return {"type": "app_home_opened", "user": user, "channel": "D0BOTDM", "tab": tab, "event_ts": "1700000000.1"}


def published_text(slack: FakeSlack, user: str = USER) -> str:
    return json.dumps(slack.views.get(user) or {}, ensure_ascii=False)


def test_opening_the_home_tab_hands_the_view_to_the_work_pool(
    context: BoltContext, held: HeldPool, fake_slack: FakeSlack
) -> None:
    home_opened(opened_event(), context)
    assert held.names() == [f"home {USER}"]
    assert fake_slack.calls_to("views.publish") == []  # the listener only handed over
    held.release()
    assert len(fake_slack.calls_to("views.publish")) == 1
    assert "prod" in published_text(fake_slack)  # the fleet of the configured server, read on the pool


def test_the_messages_tab_and_an_event_without_a_user_do_nothing(
    context: BoltContext, held: HeldPool, fake_slack: FakeSlack
) -> None:
    home_opened(opened_event(tab="messages"), context)
    home_opened(opened_event(user=""), context)
    assert held.names() == []
    assert fake_slack.calls_to("views.publish") == []


def test_a_home_button_is_acked_then_answered_in_the_users_own_view(
    ack: FakeAck, context: BoltContext, held: HeldPool, fake_slack: FakeSlack
) -> None:
    body, action = button_body(HOME_STATUS, "prod")
    del body["channel"], body["message"]  # a Home tab button: no channel, no message
    body["container"] = {"type": "view", "view_id": "V0HOME"}
    home_button(ack, body, action, context)
    assert ack.body is None
    assert held.names() == [f"home {HOME_STATUS} {USER}"]
    assert fake_slack.calls_to("views.publish") == []
    held.release()
    assert "`status` of prod" in published_text(fake_slack)
    assert all(call.args.get("user_id") == USER for call in fake_slack.calls_to("views.publish"))


def test_a_home_button_without_a_user_is_acked_and_dropped(
    ack: FakeAck, context: BoltContext, held: HeldPool
) -> None:
    body, action = button_body(HOME_STATUS, "prod")
    body["user"] = {}
    home_button(ack, body, action, context)
    assert len(ack.calls) == 1 and ack.body is None
    assert held.names() == []
