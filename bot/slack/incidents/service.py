"""The incident pipeline as the Slack bot runs it: the Block Kit renderer, channel routing by the Slack router,
the durable outbox, and what the renderer needs to know beyond the incident (action buttons, live queues, the
actions already taken on the incident's subjects).

Who may press the incident buttons (documented in docs/slack.md) is decided by the one `Authorizer`
(bot/actions/policy.py, `services.authorizer`): acknowledge and snooze are for anyone who can see the message;
resolve, and `/clearml silence`, for anyone unless `actions.allow.resolve` / `actions.allow.silence` lists users
or user groups, then only those.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from bot.actions import runs
from bot.incidents.pipeline import IncidentPipeline, incident_router
from bot.incidents.tracker import root_key
from bot.incidents.views import IncidentView
from bot.slack.actions.messages import STATUS_ICON
from bot.slack.incidents.messages import SlackIncidentRenderer, TakenAction

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from bot.slack.delivery import WebClientSender
    from bot.slack.services import BotServices

log = logging.getLogger(__name__)

def build_pipeline(services: BotServices) -> IncidentPipeline:
    """The pipeline `serve` feeds with scheduled runs, and the incident buttons act on."""
    buttons = services.buttons
    renderer = SlackIncidentRenderer(
        buttons=(lambda f, server: buttons.for_finding(f, server)) if buttons is not None else None,
        queues=services.queues.get,
        actions_taken=lambda view: actions_taken(services, view),
        secrets=services.secrets,
        command=services.command,
    )
    return IncidentPipeline(
        services.store,
        outbox=services.outbox,  # a MessageSink: redacts, then the durable queue
        renderer=renderer,
        # the one set of routing rules (bot/routing.py), with the app's router and the playbooks as they are now
        router=incident_router(services.settings, services.playbooks, router=services.router),
        settings=services.settings,
        owner_playbooks=lambda: [p.name for p in services.playbooks() if p.notify_owner],
        policy=services.settings.incidents.policy(),
        fallback=lambda: services.router.default_channel,
    )


def bot_is_member(client: WebClient, sender: WebClientSender, channel: str) -> bool:
    """Is the bot a member of `channel` now (invited since the channel refused an incident's root)? A private
    channel the bot is not in is invisible to it (`channel_not_found`): not yet. Scopes channels:read, groups:read."""
    from slack_sdk.errors import SlackApiError

    channel_id = sender.channel_id(channel)
    try:
        info = client.conversations_info(channel=channel_id)
    except SlackApiError as exc:
        if exc.response is not None and exc.response.get("error") in ("channel_not_found", "not_in_channel"):
            return False
        raise
    return bool((info.get("channel") or {}).get("is_member"))


def actions_taken(services: BotServices, view: IncidentView) -> list[TakenAction]:
    """Successful actions on the incident's subjects since it opened (the action core's idempotency table), so
    the root message keeps "Requeued by @x" instead of offering the button again."""
    subjects = sorted({m.subject.id for m in view.members})
    out = []
    for run in runs.succeeded_on(services.store, view.server, subjects, since=view.opened_at):
        outcome = run.outcome or {}
        line = f"{STATUS_ICON['ok']} {outcome.get('mrkdwn') or outcome.get('text') or run.action}"
        out.append(TakenAction(action=run.action, subject=run.subject, line=line))
    return out


def thread_link(services: BotServices, incident_id: int, *, fetch: bool = True) -> str | None:
    """The incident thread's permalink (cached; `fetch=False`: only if cached); None before its root message is on
    Slack."""
    ref = services.outbox.message_ref(root_key(incident_id))
    return services.outbox.permalink(*ref, fetch=fetch) if ref is not None else None


def incident_by_root_ts(services: BotServices, channel: str, ts: str) -> int | None:
    """The incident whose root message is (channel, ts), if any (a click in its thread)."""
    key = services.outbox.key_of_posted(channel, ts, "incident:%:root")
    try:
        return int(key.split(":")[1]) if key is not None else None
    except (IndexError, ValueError):
        return None


def open_incidents(services: BotServices) -> Sequence[IncidentView]:
    pipeline = services.incidents
    if pipeline is None:
        from bot.incidents.tracker import IncidentTracker

        return IncidentTracker(services.store).list_incidents("open")
    return pipeline.tracker.list_incidents("open")


def now_utc() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)
