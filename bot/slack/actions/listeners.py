"""Action buttons (`act:<action>:<n>`): clone, requeue, abort, rotate, reproduce, prioritize.

The listener acks at once and hands the click to the work pool, where `execute_action` (bot/actions) verifies the
signed value, authorizes the user, claims the button's idempotency key, plans and executes, and audits every
attempt. Then:
- denied, expired, tampered, already done by someone else: a private note to the clicking user only;
- done, dry run, refused, failed: a reply in the finding's thread (with a retry button when ClearML was down, or
  the alternative, e.g. clone for a task the server will not requeue), and when done, the clicked message's
  buttons for that subject are replaced by the outcome line ("Requeued by @ana at 14:02 UTC → task"). For an
  incident's root message the root is re-rendered instead (the renderer shows the actions taken), so the next
  incident update keeps the line.
Thread replies and message edits go through the durable outbox (keyed by the audit row), so a Slack outage or a
restart loses none of them; private notes go straight to the user through the action's `response_url`.

The queue select next to the buttons (`act_queue`) only needs an ack: Slack sends its value with the button click.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot.actions import ActionOutcome, ActionRequest, Actor, execute_action
from bot.incidents.tracker import root_key
from bot.slack.actions.messages import (
    ACTION_PREFIX,
    PRIVATE_STATUSES,
    QUEUE_SELECT,
    outcome_line,
    queue_choice_actions,
    render_note,
    render_outcome_private,
    render_outcome_reply,
    replace_buttons,
)
from bot.slack.incidents.service import incident_by_root_ts
from bot.slack.messages.common import SlackMessage
from bot.slack.services import BotServices
from bot.slack.workpool import PoolBusyError

log = logging.getLogger(__name__)

_INCIDENT_BLOCK = re.compile(r"^inc(\d+):acts$")
_QUEUE_REF = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def register(app: App) -> None:
    app.action(re.compile(f"^{re.escape(ACTION_PREFIX)}"))(handle_click)
    app.action(QUEUE_SELECT)(ack_only)


def ack_only(ack: Ack) -> None:
    ack()


@dataclass(frozen=True)
class Click:
    """What the listener needs from a block_actions payload (same shape over HTTP and Socket Mode)."""

    user: str
    user_name: str
    channel: str
    message_ts: str
    thread_ts: str | None  # set when the clicked message is itself a thread reply
    ephemeral: bool
    response_url: str | None
    action: str  # from action_id; the signed value decides what really runs
    action_id: str
    block_id: str
    value: str
    queue: str | None  # chosen in the block's queue select
    message_text: str
    message_blocks: list[dict[str, Any]]

    @classmethod
    def from_payload(cls, body: dict[str, Any], action: dict[str, Any]) -> Click:
        user = body.get("user") or {}
        container = body.get("container") or {}
        message = body.get("message") or {}
        channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
        message_ts = str(container.get("message_ts") or message.get("ts") or "")
        thread_ts = message.get("thread_ts")
        block_id = str(action.get("block_id") or "")
        selected = (((body.get("state") or {}).get("values") or {}).get(block_id) or {}).get(QUEUE_SELECT) or {}
        queue = (selected.get("selected_option") or {}).get("value")
        action_id = str(action.get("action_id") or "")
        return cls(
            user=str(user.get("id") or ""),
            user_name=str(user.get("username") or user.get("name") or ""),
            channel=channel,
            message_ts=message_ts,
            thread_ts=str(thread_ts) if thread_ts and thread_ts != message_ts else None,
            ephemeral=bool(container.get("is_ephemeral")),
            response_url=body.get("response_url") or None,
            action=action_id[len(ACTION_PREFIX):].split(":", 1)[0],
            action_id=action_id,
            block_id=block_id,
            value=str(action.get("value") or ""),
            queue=str(queue) if queue and _QUEUE_REF.match(str(queue)) else None,
            message_text=str(message.get("text") or ""),
            message_blocks=[b for b in message.get("blocks") or [] if isinstance(b, dict)],
        )

    @property
    def incident_id(self) -> int | None:
        match = _INCIDENT_BLOCK.match(self.block_id)
        return int(match.group(1)) if match else None


def handle_click(ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext) -> None:
    ack()  # within milliseconds: everything else runs on the work pool
    services: BotServices = context["services"]
    click = Click.from_payload(body, action)
    try:
        services.pool.submit(lambda: run_click(services, click), name=f"button {click.action}")
    except PoolBusyError as exc:
        note = render_note(f"I am busy ({exc.waiting} jobs waiting): nothing was done. Please click again in a minute.")
        try:
            services.pool.submit(lambda: _private_async(services, click, note), name="busy note")
        except PoolBusyError:
            log.warning("button %s by %s dropped: the work pool is full", click.action, click.user)


async def run_click(services: BotServices, click: Click) -> ActionOutcome:
    """Execute the click and tell Slack; never raises (a bug ends in a private note and the log)."""
    deps = services.action_deps
    store = services.action_store or services.store
    params: dict[str, Any] = {}
    if click.queue and click.action in queue_choice_actions():
        params["queue"] = click.queue
    incident = _incident_of(services, click)
    request = ActionRequest(
        params=params,
        context={
            "channel": click.channel,
            "message_ts": click.message_ts,
            "thread_ts": click.thread_ts or click.message_ts,
            **({"incident": incident} if incident is not None else {}),
            # Slack sends the clicked message's blocks: the value must be one of its buttons (not a value copied
            # from another message or channel). Unknown for ephemeral messages (Slack sends no blocks).
            **({"in_message": click.value in _button_values(click.message_blocks)} if click.message_blocks else {}),
        },
    )
    actor = Actor(id=click.user, name=click.user_name, via="slack")
    outcome = await execute_action(request, settings=services.settings, store=store, actor=actor,
                                   confirm_token=click.value, deps=deps)
    services.reads.clear()  # the fleet may have changed: the next look-up must not show it as it was before
    try:
        await services.pool.io(deliver_outcome, services, click, outcome, params, incident)
    except Exception:  # the action is done and audited; only the telling failed
        log.exception("could not deliver the outcome of %s (audit #%s)", outcome.action, outcome.audit_id)
    return outcome


def _button_values(blocks: list[dict[str, Any]]) -> set[str]:
    return {str(e.get("value")) for b in blocks if b.get("type") == "actions"
            for e in b.get("elements") or [] if isinstance(e, dict) and e.get("value")}


def _incident_of(services: BotServices, click: Click) -> int | None:
    """The incident whose root message was clicked (the block id names it, the outbox confirms the message), or
    in whose thread the clicked message is (a retry or alternative button under an incident)."""
    incident = click.incident_id
    if incident is not None:
        ref = services.outbox.message_ref(root_key(incident))
        if ref is not None and ref[1] == click.message_ts:
            return incident
    if click.thread_ts:
        return incident_by_root_ts(services, click.channel, click.thread_ts)
    return None


def deliver_outcome(
    services: BotServices, click: Click, outcome: ActionOutcome, params: dict[str, Any], incident: int | None
) -> None:
    """Blocking Slack writes for one outcome (runs on the work pool's I/O threads)."""
    if outcome.status in PRIVATE_STATUSES:
        _private(services, click, render_outcome_private(outcome))
        return
    follow_up = services.buttons.after(outcome, params, channel=click.channel) if services.buttons is not None else []
    reply = render_outcome_reply(outcome, buttons=follow_up, queues=services.queues.get(outcome.server or None),
                                 secrets=services.secrets())
    if click.ephemeral or not click.channel:
        _private(services, click, reply)  # a private answer's buttons: the answer stays private
        return
    key = f"action:{outcome.audit_id}"
    if incident is not None:
        services.outbox.enqueue(f"{key}:reply", click.channel, "reply", reply.as_payload(),
                                root_key=root_key(incident))
    else:
        services.outbox.enqueue(f"{key}:reply", click.channel, "reply", reply.as_payload(),
                                thread_ts=click.thread_ts or click.message_ts)
    if outcome.status != "ok":
        return  # nothing changed: the buttons stay (a failed run can be clicked again)
    if incident is not None and services.incidents is not None:
        # the root shows the actions taken (re-rendered, so the next incident update keeps the line)
        _refresh_incident_root(services, incident, f"{key}:root")
        if not click.thread_ts:
            return  # the clicked message was the root itself
    blocks = replace_buttons(click.message_blocks, click.block_id, outcome.subject, outcome_line(outcome))
    if blocks is None:
        return
    message = SlackMessage(text=click.message_text or outcome.text, blocks=blocks)
    services.outbox.enqueue(f"{key}:update", click.channel, "update", message.as_payload(),
                            ts=click.message_ts)


def _refresh_incident_root(services: BotServices, incident: int, key: str) -> None:
    pipeline = services.incidents
    assert pipeline is not None
    view = pipeline.tracker.get(incident)
    if view is None or view.channel is None:
        return
    from datetime import UTC, datetime

    rendered = pipeline.renderer.root(view, datetime.now(UTC))
    services.outbox.enqueue(key, view.channel, "update", rendered.as_payload(), root_key=root_key(incident),
                            supersede=True)


def _private(services: BotServices, click: Click, message: SlackMessage) -> None:
    """Only the clicking user sees it (`SlackSink.tell_privately`)."""
    services.outbox.tell_privately(message, user=click.user, channel=click.channel, response_url=click.response_url,
                                   thread_ts=click.thread_ts)


async def _private_async(services: BotServices, click: Click, message: SlackMessage) -> None:
    await services.pool.io(_private, services, click, message)
