"""The buttons of an incident's root message: Acknowledge, Snooze 1 h / 4 h / 24 h, Resolve.

Ack at once; the change runs on the work pool through the incident pipeline, which edits the root message and
notes it in the thread through the durable outbox, in one transaction with the change. Acknowledge and snooze are
for anyone in the channel; resolve for anyone unless `actions.allow.resolve` restricts it
(bot/actions/policy.py).
Refusals (not allowed, already resolved, already acknowledged by you) are private notes. Every press is in the
audit log (`/clearml audit`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot.actions import Actor
from bot.actions import audit as audit_mod
from bot.incidents.tracker import IncidentError
from bot.slack.actions.messages import render_note
from bot.slack.incidents.messages import ACK_ACTION, RESOLVE_ACTION, SNOOZE_ACTIONS
from bot.slack.services import BotServices
from bot.slack.workpool import PoolBusyError

log = logging.getLogger(__name__)


def register(app: App) -> None:
    for action_id in (ACK_ACTION, RESOLVE_ACTION, *SNOOZE_ACTIONS):
        app.action(action_id)(handle_button)


def handle_button(ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext) -> None:
    ack()
    services: BotServices = context["services"]
    user = body.get("user") or {}
    actor = Actor(id=str(user.get("id") or ""), name=str(user.get("username") or user.get("name") or ""), via="slack")
    channel = str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or "")
    response_url = body.get("response_url") or None
    action_id = str(action.get("action_id") or "")
    raw = str(action.get("value") or "")

    async def job() -> None:
        audit = await services.pool.io(press, services, actor, channel, response_url, action_id, raw)
        if audit is not None:  # here, on the loop thread that owns the actions' store connection
            audit_mod.record(services.action_store or services.store, actor=actor, **audit)

    try:
        services.pool.submit(job, name=f"incident {action_id}")
    except PoolBusyError:
        log.warning("incident button %s by %s dropped: the work pool is full", action_id, actor.id)


def press(
    services: BotServices, actor: Actor, channel: str, response_url: str | None, action_id: str, raw: str,
    tell: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Blocking: the pipeline's transaction and, for refusals, a private note (through `tell` when given: the
    Home tab shows it in the viewer's own view). Returns the audit row to write."""
    def say(text: str) -> None:
        if tell is not None:
            tell(text)
        else:
            _tell(services, channel, actor.id, response_url, text)

    op = "ack" if action_id == ACK_ACTION else "resolve" if action_id == RESOLVE_ACTION else "snooze"
    try:
        incident_id = int(raw)
    except ValueError:
        say("That button does not name an incident.")
        return None
    pipeline = services.incidents
    if pipeline is None:
        say("Incidents are handled by `clearml-chatops serve`, which is not running them here.")
        return None
    subject = f"incident #{incident_id}"
    if op == "resolve":
        permission = services.authorizer.authorize_blocking(actor, "resolve")  # on an I/O thread: may ask Slack
        if not permission.allowed:
            say(f"Not allowed: {permission.reason}.")
            return {"action": "incident.resolve", "server": "", "subject": subject, "outcome": "denied",
                    "error": permission.reason}
    mention = f"<@{actor.id}>"
    try:
        if op == "ack":
            notes = pipeline.acknowledge(incident_id, mention)
        elif op == "snooze":
            notes = pipeline.snooze(incident_id, mention, seconds=SNOOZE_ACTIONS[action_id])
        else:
            notes = pipeline.resolve(incident_id, mention)
    except IncidentError as exc:
        say(f"Nothing changed: {exc}.")
        return None
    if not notes and op == "ack":
        say(f"You had already acknowledged incident #{incident_id}.")
    return {"action": f"incident.{op}", "server": "", "subject": subject, "outcome": "ok",
            "params": {"seconds": SNOOZE_ACTIONS[action_id]} if op == "snooze" else {}}


def _tell(services: BotServices, channel: str, user: str, response_url: str | None, text: str) -> None:
    services.outbox.tell_privately(render_note(text), user=user, channel=channel, response_url=response_url)
