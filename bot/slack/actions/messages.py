"""Action buttons and what the bot says after a click: pure builders, no Slack or ClearML calls.

A message that offers actions (a run report, a task diagnosis, an incident's root message) carries one actions
block per group of findings: a button per (action, subject), each with a signed value (bot/actions/tokens.py, made
by bot/slack/actions/buttons.py before rendering) and a confirm dialog, plus, when one of them can run in another
queue (clone, requeue, reproduce), a select of the server's live queues. Slack sends the select's choice with the
click (`state.values[block_id]`), so the listener knows which queue the user meant for that block's buttons.

After a click: the outcome goes into the finding's thread (`render_outcome_reply`), the clicked message's buttons
for that subject are replaced by the outcome line (`replace_buttons`), and refusals meant for one person only
(denied, expired, tampered, already done) become a private note (`render_outcome_private`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    Option,
    PlainTextObject,
    StaticSelectElement,
)

from bot.slack.messages.common import (
    MAX_BLOCKS,
    SlackMessage,
    chunk_lines,
    clip,
    code,
    context,
    escape,
    header,
    safe,
    section,
)

if TYPE_CHECKING:
    from bot.actions import ActionOutcome, ConfirmSpec
    from bot.actions.reproduce import WatchResult

ACTION_PREFIX = "act:"  # action_id of an action button: act:<action>:<n> (n keeps ids unique in a message)
QUEUE_SELECT = "act_queue"  # action_id of the queue select next to clone/requeue/reproduce buttons
MAX_BUTTONS = 24  # Slack allows 25 elements per actions block: room for the queue select
MAX_OPTIONS = 100  # Slack's limit for a static select
MAX_BUTTON_TEXT = 75
MAX_CONFIRM_TEXT = 300
# Verbs on buttons (the subject's name follows when a block holds several subjects).
VERBS: dict[str, str] = {
    "clone": "Clone",
    "requeue": "Requeue",
    "abort": "Abort",
    "rotate": "Restart agent",
    "reproduce": "Reproduce",
    "prioritize": "Move to front",
}
STATUS_ICON: dict[str, str] = {
    "ok": ":white_check_mark:",
    "dry_run": ":test_tube:",
    "refused": ":no_entry_sign:",
    "failed": ":x:",
    "denied": ":lock:",
    "expired": ":hourglass:",
    "tampered": ":warning:",
    "duplicate": ":leftwards_arrow_with_hook:",
    "cancelled": ":no_entry_sign:",
}
# Outcomes only the clicking user needs to see.
PRIVATE_STATUSES = frozenset({"denied", "expired", "tampered", "duplicate", "cancelled"})
_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]{2,20})&gt;")
_CHANNEL_LINK = re.compile(r"&lt;#([CG][A-Z0-9]{2,20})&gt;")


@dataclass(frozen=True)
class ActionButton:
    """One rendered button: what it does to which subject, its signed value and its confirm dialog."""

    action: str
    subject: str  # the ClearML id the value is signed for (task id, worker id)
    text: str  # the button's label
    value: str  # signed (bot.actions.button_value)
    confirm: ConfirmSpec
    queue_choice: bool = False  # the queue select of its block applies to it


def mrkdwn(text: str, users: Iterable[str] = (), channels: Iterable[str] = ()) -> str:
    """Core-written text (which may quote ClearML names) made safe for mrkdwn: escaped, then only the mentions of
    `users` (Slack user ids the bot itself recorded: who acknowledged, who silenced) and links to `channels` (ids
    the bot chose) are made mentions again. `<!here>`, `<!channel>`, user-group pings, URLs and anyone else stay
    plain text."""
    allowed = {u for u in users if u}
    rooms = {c for c in channels if c}
    out = escape(text)
    if allowed:
        out = _MENTION.sub(lambda m: f"<@{m.group(1)}>" if m.group(1) in allowed else m.group(0), out)
    if rooms:
        out = _CHANNEL_LINK.sub(lambda m: f"<#{m.group(1)}>" if m.group(1) in rooms else m.group(0), out)
    return out


def button_element(button: ActionButton, index: int, *, with_queue_select: bool = False) -> ButtonElement:
    spec = button.confirm
    text = spec.text
    if with_queue_select and button.queue_choice:
        text += " A queue picked in the menu next to the buttons is used instead of the default."
    return ButtonElement(
        text=PlainTextObject(text=clip(button.text, MAX_BUTTON_TEXT), emoji=True),
        action_id=f"{ACTION_PREFIX}{button.action}:{index}",
        value=button.value,
        style="danger" if spec.style == "danger" else None,
        confirm=ConfirmObject(  # plain_text: the dialog quotes task and queue names, never formatting or mentions
            title=clip(spec.title, 100),
            text=PlainTextObject(text=clip(text, MAX_CONFIRM_TEXT), emoji=False),
            confirm=clip(spec.confirm, 30),
            deny=clip(spec.deny, 30),
            style=spec.style if spec.style in ("primary", "danger") else None,
        ),
    )


def queue_select(
    queues: Sequence[tuple[str, str]], placeholder: str = "Queue (default: the task's own)"
) -> StaticSelectElement | None:
    """A select of (queue id, name); None when there is nothing to choose from."""
    if not queues:
        return None
    options = [Option(value=qid, text=clip(name or qid, 75)) for qid, name in list(queues)[:MAX_OPTIONS]]
    return StaticSelectElement(
        action_id=QUEUE_SELECT, placeholder=PlainTextObject(text=clip(placeholder, 150)), options=options
    )


def actions_block(
    buttons: Sequence[ActionButton], *, block_id: str, queues: Sequence[tuple[str, str]] = ()
) -> ActionsBlock | None:
    """The buttons (at most 24) and, when one of them takes a queue, the queue select; None without buttons."""
    if not buttons:
        return None
    shown = list(buttons)[:MAX_BUTTONS]
    select = queue_select(queues) if any(b.queue_choice for b in shown) else None
    elements: list[Any] = [button_element(b, i, with_queue_select=select is not None) for i, b in enumerate(shown)]
    if select is not None:
        elements.append(select)
    return ActionsBlock(block_id=block_id, elements=elements)


# -- after a click ----------------------------------------------------------------------------------------------


def outcome_line(outcome: ActionOutcome) -> str:
    """The one mrkdwn line that replaces the buttons: "✅ Requeued by <@U1> at 14:02 UTC → <link|task>"."""
    return f"{STATUS_ICON.get(outcome.status, '')} {outcome.mrkdwn or outcome.text}".strip()


def render_outcome_reply(
    outcome: ActionOutcome,
    *,
    buttons: Sequence[ActionButton] = (),
    queues: Sequence[tuple[str, str]] = (),
    secrets: Sequence[str] = (),
) -> SlackMessage:
    """The thread reply after a click: what happened (or would have, for a dry run), the steps, links, and buttons
    to retry or to do the alternative (clone instead of requeue)."""
    lines = [outcome_line(outcome)]
    if outcome.status == "dry_run":
        lines = [f"{STATUS_ICON['dry_run']} *Dry run* (`actions.dry_run: true`): nothing was done. Would call:"]
        lines += [f"`{clip(line.strip(), 280)}`" if line[:1].isdigit() else f"_{safe(line.strip(), limit=280)}_"
                  for line in outcome.plan]
    elif outcome.detail:
        shown = [line for line in outcome.detail if line.strip()][:15]
        lines.append("\n".join(
            f"• {code(line, 280) if _is_call(line) else safe(line, secrets, 400)}" for line in shown
        ))
    if outcome.watch_id is not None:
        lines.append("I'll post how the re-run compares with the original here when it ends.")
    if outcome.status == "failed" and outcome.retry:
        lines.append("Nothing after the failed step was done. Try again when ClearML answers:")
    blocks: list[Block] = [section(t) for t in chunk_lines(lines)][: MAX_BLOCKS - 2]
    block = actions_block(buttons, block_id="acts:outcome", queues=queues)
    if block is not None:
        blocks.append(block)
    extra = [f"audit #{outcome.audit_id}"] if outcome.audit_id is not None else []
    blocks.append(context(f"{outcome.action} · `{outcome.subject}` on {safe(outcome.server or 'default')}", *extra))
    return SlackMessage(text=clip(outcome.text, 300), blocks=blocks)


def _is_call(line: str) -> bool:
    return line.startswith(("done: ", "skipped: ", "FAILED: ", "not done: "))


def render_outcome_private(outcome: ActionOutcome) -> SlackMessage:
    """The private note for denied / expired / tampered / duplicate clicks."""
    head = outcome.mrkdwn or outcome.text
    lines = [f"{STATUS_ICON.get(outcome.status, '')} {head}"]
    if outcome.status == "denied":
        lines.append("An admin can allow you under `actions.allow` in the bot's config file (Slack user or user-group "
                     "ids). This attempt is in the audit log.")
    elif outcome.status == "expired":
        lines.append("Buttons expire after `actions.button_ttl`. Run the check again (or `/clearml task <id>`) for "
                     "fresh ones.")
    elif outcome.status == "tampered":
        lines.append("Nothing was done, and the attempt is in the audit log.")
    return SlackMessage(text=clip(outcome.text, 300), blocks=[section("\n".join(lines))])


def render_note(text: str, *, users: Iterable[str] = (), channels: Iterable[str] = ()) -> SlackMessage:
    """A short private note (an error with what to do). Only `users` and `channels` (ids the bot chose) become
    mentions; everything else in `text` is shown as written."""
    return SlackMessage(text=clip(text, 300), blocks=[section(mrkdwn(text, users, channels))])


def replace_buttons(
    blocks: Iterable[dict[str, Any]], block_id: str | None, subject: str, line: str
) -> list[Block] | None:
    """The clicked message's blocks with the buttons for `subject` in block `block_id` replaced by `line`; the
    queue select goes too when no button of that block needs it any more. None when the block is not there."""
    out: list[Block] = []
    found = False
    for raw in blocks:
        if raw.get("type") == "actions" and block_id and raw.get("block_id") == block_id:
            found = True
            keep = [e for e in raw.get("elements") or [] if not _for_subject(e, subject)]
            if not any(str(e.get("action_id", "")).startswith(ACTION_PREFIX) for e in keep):
                keep = []
            elif not any(_takes_queue(e) for e in keep):
                keep = [e for e in keep if e.get("action_id") != QUEUE_SELECT]
            out.append(section(line))
            if keep:
                out.append(Block.parse({**raw, "elements": keep}))  # type: ignore[arg-type]
            continue
        parsed = Block.parse(raw)  # type: ignore[arg-type]
        if parsed is not None:
            out.append(parsed)
    return out if found else None


def _for_subject(element: dict[str, Any], subject: str) -> bool:
    if not str(element.get("action_id", "")).startswith(ACTION_PREFIX):
        return False
    claims = peek(str(element.get("value") or ""))
    return claims is not None and claims.get("j") == subject


def _takes_queue(element: dict[str, Any]) -> bool:
    action_id = str(element.get("action_id", ""))
    return action_id.startswith(ACTION_PREFIX) and action_id.split(":")[1] in queue_choice_actions()


def peek(value: str) -> dict[str, Any] | None:
    """The claims of a signed button value *without* verifying it: only to tell which subject a button is for when
    editing a message. Never to decide anything (execute_action verifies)."""
    import base64
    import binascii
    import json

    payload = value.split(".", 1)[0]
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    return data if isinstance(data, dict) else None


# -- reproduce results and the audit log ------------------------------------------------------------------------


def render_repro_result(result: WatchResult) -> SlackMessage:
    icon = {"done": ":microscope:", "timeout": ":hourglass:", "error": ":warning:"}.get(result.status, "")
    verdict = result.comparison.verdict if result.comparison is not None else result.status
    if verdict == "reproduced":
        icon = ":white_check_mark:"
    elif verdict in ("differs", "failed"):
        icon = ":warning:"
    lines = result.mrkdwn.splitlines() or [result.text]
    first, rest = lines[0], lines[1:]
    body = [f"{icon} {first}"] + [f"• {safe(line.strip(), limit=400)}" for line in rest if line.strip()]
    return SlackMessage(text=clip(result.text.splitlines()[0] if result.text else "Re-run result", 300),
                        blocks=[section(t) for t in chunk_lines(body)][:MAX_BLOCKS])


def render_audit(text: str, count: int, command: str = "/clearml") -> SlackMessage:
    """`/clearml audit [n]`: the newest attempts (already formatted by bot.actions.audit.format_rows)."""
    blocks: list[Block] = [header(f"Actions audit log: last {count}")]
    blocks += [section(t) for t in chunk_lines(text.splitlines())][: MAX_BLOCKS - 2]
    blocks.append(context(f"Older entries: `{command} audit 50`, or `clearml-chatops audit` on the bot's host."))
    return SlackMessage(text=f"Actions audit log: last {count}", blocks=blocks)


def queue_choice_actions() -> frozenset[str]:
    """Actions whose button may take a queue from the select (their spec's `user_choices`)."""
    from bot.actions import REGISTRY, load_actions

    load_actions()
    return frozenset(a for a, spec in REGISTRY.items() if "queue" in spec.user_choices)

