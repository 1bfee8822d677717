"""Building blocks shared by every message builder: the `SlackMessage` value, safe text helpers and limits.

Builders are pure functions: data in, `SlackMessage` out. They never call Slack or ClearML, so they can be tested
on hand-made findings and reused by the CLI, scheduled runs and incident threads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.errors import BotError
from bot.mrkdwn import (  # re-exported: every builder takes its safe-text helpers from here
    escape,
    fallback_text,
    neutral,
)
from bot.redact import redact

# Slack's limits (docs: Block Kit reference). slack_sdk checks most of them in to_dict(); the block count per
# message it does not check, so SlackMessage does.
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_FALLBACK_TEXT = 300  # top-level `text`: notifications and screen readers; keep it short
# Slack also rejects a message whose blocks carry too much text in total (`msg_blocks_too_long`; undocumented,
# seen at ~11.3k characters): every builder keeps a message's total block text under this.
MAX_MESSAGE_TEXT = 9000

SEVERITY_EMOJI: dict[str, str] = {
    "critical": ":red_circle:",
    "error": ":x:",
    "warning": ":warning:",
    "info": ":information_source:",
    "ok": ":white_check_mark:",
}

# severity -> (singular, plural) noun for counts: "1 warning", "3 critical", "2 notes"
SEVERITY_NOUN: dict[str, tuple[str, str]] = {
    "critical": ("critical", "critical"),
    "error": ("error", "errors"),
    "warning": ("warning", "warnings"),
    "info": ("note", "notes"),
    "ok": ("passed", "passed"),
}


def severity_count(n: int, severity: str, prefix: str = "") -> str:
    """`1 warning`, `3 critical`, `2 more errors` (prefix="more ")."""
    one, many = SEVERITY_NOUN[severity]
    return f"{n} {prefix}{one if n == 1 else many}"


class MessageTooLargeError(BotError, ValueError):
    """A builder produced more blocks than Slack accepts: a bug in the builder, never the user's fault."""


@dataclass
class SlackMessage:
    """One Slack message: a short fallback `text` and Block Kit blocks (slack_sdk models, never raw dicts).

    `metadata` is Slack message metadata ({"event_type", "event_payload"}) for state carried on the message.
    """

    text: str
    blocks: list[Block] = field(default_factory=list)
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.text = fallback_text(self.text)
        if not self.text.strip():
            raise ValueError("a Slack message needs a top-level text fallback")
        if len(self.blocks) > MAX_BLOCKS:
            raise MessageTooLargeError(f"{len(self.blocks)} blocks; Slack accepts at most {MAX_BLOCKS}")

    def blocks_as_dicts(self) -> list[dict[str, Any]]:
        """The blocks as JSON; slack_sdk validates each block's limits here (SlackObjectFormationError). A message
        whose blocks carry more text than Slack takes is cut (saying so) rather than refused."""
        return fit_blocks([b.to_dict() for b in self.blocks])

    def as_payload(self) -> dict[str, Any]:
        """The message as an outbox payload: `text`, `blocks` as JSON, and `metadata` when it has some."""
        body: dict[str, Any] = {"text": self.text, "blocks": self.blocks_as_dicts()}
        if self.metadata:
            body["metadata"] = self.metadata
        return body


# -- text helpers -------------------------------------------------------------------------------------------


_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
_MENTION_IN_TEXT = re.compile(r"<@([UW][A-Z0-9]{2,20})>")


def mention(user_id: str | None) -> str:
    """`<@U…>` for a Slack user id the bot got from Slack itself (a signed request); anything else is shown as
    plain text, never as a mention."""
    uid = (user_id or "").strip()
    return f"<@{uid}>" if _USER_ID.match(uid) else neutral(uid or "?")


def mentioned_ids(*texts: str | None) -> set[str]:
    """The user ids in mentions the bot itself stored (`ack_by`, `created_by`: "<@U123>")."""
    return {m for t in texts if t for m in _MENTION_IN_TEXT.findall(t)}


def clip(text: str, limit: int, marker: str = "…") -> str:
    """`text` cut to at most `limit` characters, marking the cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


def safe(text: Any, secrets: Iterable[str] = (), limit: int | None = None) -> str:
    """User- or server-provided text made safe for mrkdwn: redacted, neutralised (`neutral`) and optionally
    clipped."""
    out = neutral(redact(str(text), secrets))
    return clip(out, limit) if limit else out


def bot_text(text: Any, secrets: Iterable[str] = (), limit: int | None = None) -> str:
    """Text the bot wrote (check descriptions, "Running `status`"), whose own formatting stays: redacted and
    escaped (no mention or link), formatting kept. Anything quoted from ClearML or a user must already sit in a
    code span (`code()`) or have gone through `safe()`."""
    out = escape(redact(str(text), secrets))
    return clip(out, limit) if limit else out


def code(text: Any, limit: int = 120) -> str:
    """Inline code span; backticks inside would end it early, so they become quotes."""
    inner = clip(escape(redact(str(text))).replace("`", "'"), limit)
    return f"`{inner}`" if inner else "``"


def pre(text: Any, secrets: Iterable[str] = ()) -> str:
    """A preformatted block (```…```) keeping its lines: escaped and redacted; backticks, which would end it, become
    look-alikes."""
    return "```" + escape(redact(str(text), secrets)).replace("`", "ˋ") + "```"


def link(url: str | None, label: str) -> str:
    """A mrkdwn link `<url|label>`; the plain label when there is no http(s) URL. `label` must already be safe
    (`safe()`); a `>` in it would end the link early, so it cannot be one."""
    label = label.replace("|", "¦").replace(">", "&gt;").replace("<", "&lt;")
    if url and url.startswith(("http://", "https://")) and "|" not in url and ">" not in url and " " not in url:
        return f"<{url}|{label}>"
    return label


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


# -- block helpers ------------------------------------------------------------------------------------------


def header(text: str) -> HeaderBlock:
    return HeaderBlock(text=PlainTextObject(text=clip(text, MAX_HEADER_TEXT), emoji=True))


def section(text: str, *, fields: Sequence[str] = (), block_id: str | None = None) -> SectionBlock:
    """A section whose text is clipped to Slack's 3000 characters (fields to 10 × 2000)."""
    return SectionBlock(
        text=MarkdownTextObject(text=clip(text, MAX_SECTION_TEXT)) if text else None,
        fields=[MarkdownTextObject(text=clip(f, MAX_FIELD_TEXT)) for f in fields[:MAX_FIELDS]] or None,
        block_id=block_id,
    )


def context(*parts: str) -> ContextBlock:
    """A context line (small grey text). Parts beyond Slack's 10 elements are joined into the last one."""
    items = [p for p in parts if p]
    if len(items) > MAX_CONTEXT_ELEMENTS:
        items = [*items[: MAX_CONTEXT_ELEMENTS - 1], " · ".join(items[MAX_CONTEXT_ELEMENTS - 1 :])]
    return ContextBlock(elements=[MarkdownTextObject(text=clip(p, MAX_FIELD_TEXT)) for p in items])


def divider() -> DividerBlock:
    return DividerBlock()


def block_text_length(blocks: Iterable[Any]) -> int:
    """The characters of text a message's blocks carry (what `msg_blocks_too_long` counts)."""
    total = 0

    def walk(value: Any) -> None:
        nonlocal total
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "text" and isinstance(item, str):
                    total += len(item)
                else:
                    walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk([b.to_dict() if hasattr(b, "to_dict") else b for b in blocks])
    return total


CUT_NOTE = "_…cut here: Slack takes no more text in one message. Narrow the command down to see the rest._"


def fit_blocks(blocks: list[dict[str, Any]], budget: int = MAX_MESSAGE_TEXT) -> list[dict[str, Any]]:
    """`blocks` within `budget` characters of text in total: the first blocks that fit, a section cut to the room
    left, a note that says the message was cut, and the closing context line (hints) when there is one. Builders
    that can page (run reports, incident threads) stay under the budget themselves; this is the safety net."""
    if block_text_length(blocks) <= budget:
        return blocks
    closing = blocks[-1] if blocks and blocks[-1].get("type") == "context" else None
    room = budget - len(CUT_NOTE) - (block_text_length([closing]) if closing else 0)
    out: list[dict[str, Any]] = []
    for block in blocks[:-1] if closing else blocks:
        size = block_text_length([block])
        if size <= room:
            out.append(block)
            room -= size
            continue
        text = (block.get("text") or {}) if block.get("type") == "section" else {}
        if isinstance(text.get("text"), str) and room > 200 and not block.get("fields"):
            out.append({**block, "text": {**text, "text": clip(text["text"], room)}})
        break
    out.append({"type": "section", "text": {"type": "mrkdwn", "text": CUT_NOTE}})
    if closing is not None:
        out.append(closing)
    return out


def fit_lines(lines: Sequence[str], budget: int, more: str = "_…and {n} more_") -> list[str]:
    """The first lines that fit in `budget` characters, then a line saying how many were left out."""
    out: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        reserve = 40 if index < len(lines) - 1 else 0  # room for the "…and n more" line
        if used + len(line) + 1 > budget - reserve:
            out.append(more.format(n=len(lines) - index))
            return out
        out.append(line)
        used += len(line) + 1
    return out


def chunk_lines(lines: Sequence[str], limit: int = MAX_SECTION_TEXT) -> list[str]:
    """Join lines into as few texts as possible, each within `limit` characters (a long line is clipped)."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        line = clip(line, limit)
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks


def format_value(value: Any, limit: int = 80) -> str:
    """A compact one-line rendering of an evidence value (dicts and lists summarised, long text clipped)."""
    if isinstance(value, dict):
        if {"age", "at"} <= set(value):  # the checks' `when()` shape: show the human age
            return f"{value.get('age')} ago"
        if "name" in value or "id" in value:
            return clip(str(value.get("name") or value.get("id")), limit)
        text = ", ".join(f"{k}={format_value(v, 30)}" for k, v in list(value.items())[:4])
        return clip(text, limit)
    if isinstance(value, list | tuple):
        shown = [format_value(v, 40) for v in value[:3]]
        more = f" (+{len(value) - 3})" if len(value) > 3 else ""
        return clip(", ".join(shown), limit) + more
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e12 else f"{value:.3g}"
    if value is None:
        return "—"
    return clip(str(value), limit)
