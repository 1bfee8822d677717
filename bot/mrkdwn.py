"""Text from ClearML or a user as data in Slack's mrkdwn: the escaping every layer uses before such text reaches a
message (actions' replies and audit lines as well as the Block Kit builders in bot/slack/messages/). Pure string
functions: no Slack client, no Block Kit."""

from __future__ import annotations

import re


def escape(text: str) -> str:
    """Escape the three characters mrkdwn treats as control characters (task names, log lines, user input)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# A formatting character where it could open or close formatting (start or end of a word): `*urgent*`, `_x_`,
# `~gone~`, `` `x` ``. Inside a word (`train_resnet_v2`, `a*b`) Slack formats nothing, so names stay as they are.
_FORMAT_AT_EDGE = re.compile(r"(?:(?<![A-Za-z0-9])[*_~`])|(?:[*_~`](?![A-Za-z0-9]))")
_EMPHASIS_AT_EDGE = re.compile(r"(?:(?<![A-Za-z0-9])[*_~])|(?:[*_~](?![A-Za-z0-9]))")
_LOOKALIKE = {"*": "∗", "_": "ˍ", "~": "∼", "`": "ˋ"}
_NEWLINES = re.compile(r"[\r\n\u2028\u2029]+")
_LONE_AMP = re.compile(r"&(?!amp;|lt;|gt;)")


def neutral(text: str) -> str:
    """Text from ClearML or a user as data in mrkdwn: escaped, formatting characters that could open or close bold,
    italics, strikethrough or code replaced by look-alikes, and newlines (which could fake a line of the bot's own)
    shown as ` ⏎ `. Mentions (`<!here>`, `<@U…>`) and links cannot survive it."""
    out = escape(text)
    out = _FORMAT_AT_EDGE.sub(lambda m: _LOOKALIKE[m.group(0)], out)
    return _NEWLINES.sub(" ⏎ ", out)


def fallback_text(text: str) -> str:
    """A message's top-level `text` (notifications, screen readers): Slack parses it as mrkdwn too, so `<!channel>`
    there would ping. `<`, `>` and a lone `&` are escaped and `*`, `_`, `~` that could format are replaced by
    look-alikes (idempotent: an already escaped text stays as it is)."""
    out = _LONE_AMP.sub("&amp;", text).replace("<", "&lt;").replace(">", "&gt;")
    return _EMPHASIS_AT_EDGE.sub(lambda m: _LOOKALIKE[m.group(0)], out)
