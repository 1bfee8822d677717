"""The App Home tab's listeners: `app_home_opened` publishes the viewer's view, the Home's buttons hand over to
the HomeService (bot/slack/home/service.py)."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot.slack.home.messages import HOME_ACTIONS

log = logging.getLogger(__name__)


def register(app: App) -> None:
    app.event("app_home_opened")(home_opened)
    for action_id in HOME_ACTIONS:
        app.action(action_id)(home_button)


def home_opened(event: dict[str, Any], context: BoltContext) -> None:
    """Slack sends this for the Messages tab too; only the Home tab has a view to publish. Hands over at once."""
    if event.get("tab", "home") != "home":
        return
    user = str(event.get("user") or "")
    home = getattr(context.get("services"), "home", None)
    if not user or home is None:
        return
    home.opened(user)


def home_button(ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext) -> None:
    ack()
    user = str((body.get("user") or {}).get("id") or "")
    home = getattr(context.get("services"), "home", None)
    if not user or home is None:
        return
    home.pressed(user, str(action.get("action_id") or ""), str(action.get("value") or ""))
