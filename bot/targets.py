"""Where a Slack message goes: a channel (name or id), or a direct message `dm:<Slack user id or e-mail>`.

The incident pipeline addresses a task's owner this way (bot/incidents/owners.py) and the outbox's sender opens
the DM (users.lookupByEmail, conversations.open). Pure string rules, so both sides share them without the
delivery importing the incidents.
"""

from __future__ import annotations

import re

DM_PREFIX = "dm:"
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{6,}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")  # public (C), private (G) and DM (D) channel ids


def is_channel_id(channel: str) -> bool:
    """A Slack channel id (`C0ABC123`), as opposed to a `#name`."""
    return bool(_CHANNEL_ID.match(channel))


def is_dm_target(channel: str) -> bool:
    return channel.startswith(DM_PREFIX)


def slack_user_ref(target: str) -> tuple[str, str]:
    """("user", "U123") or ("email", "alice@example.com") for a "dm:..." target."""
    value = target[len(DM_PREFIX):] if is_dm_target(target) else target
    return ("user", value) if _SLACK_USER.match(value) else ("email", value)
