"""Building blocks shared by every message builder: the `SlackMessage` value, safe text helpers and limits.

Builders are pure functions: data in, `SlackMessage` out. They never call Slack or ClearML, so they can be tested
on hand-made findings and reused by the CLI, scheduled runs and incident threads.
"""

from __future__ import annotations

import json
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


class MessageTooLargeError(ValueError):
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
        if not self.text.strip():
            raise ValueError("a Slack message needs a top-level text fallback")
        if len(self.blocks) > MAX_BLOCKS:
            raise MessageTooLargeError(f"{len(self.blocks)} blocks; Slack accepts at most {MAX_BLOCKS}")

    def blocks_as_dicts(self) -> list[dict[str, Any]]:
        """The blocks as JSON; slack_sdk validates each block's limits here (SlackObjectFormationError)."""
        return [b.to_dict() for b in self.blocks]

    def all_text(self) -> str:
        """Everything a user could read in this message (for tests that search for secrets)."""
        return self.text + "\n" + json.dumps(self.blocks_as_dicts())


# -- text helpers -------------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Escape the three characters mrkdwn treats as control characters (task names, log lines, user input)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int, marker: str = "…") -> str:
    """`text` cut to at most `limit` characters, marking the cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


def safe(text: Any, secrets: Iterable[str] = (), limit: int | None = None) -> str:
    """User- or server-provided text made safe for mrkdwn: redacted, escaped and optionally clipped."""
    out = escape(redact(str(text), secrets))
    return clip(out, limit) if limit else out


def code(text: Any, limit: int = 120) -> str:
    """Inline code span; backticks inside would end it early, so they become quotes."""
    inner = clip(escape(redact(str(text))).replace("`", "'"), limit)
    return f"`{inner}`" if inner else "``"


def link(url: str | None, label: str) -> str:
    """A mrkdwn link `<url|label>`; the plain label when there is no http(s) URL."""
    label = label.replace("|", "¦")
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
