"""The project's one error base.

`BotError` is the root of every exception the bot raises on purpose (configuration, ClearML, playbooks, actions,
the store...), so a caller can tell "the bot said no" from a bug. `UsageError` is the part of it caused by what a
user typed: the CLI prints its message with exit code 2, Slack answers it privately. Imports nothing of the bot.
"""

from __future__ import annotations


class BotError(Exception):
    """An error the bot raises on purpose; its message says what went wrong and what to do next."""


class UsageError(BotError):
    """What the user typed was wrong (a bad argument, an unknown id): the message says what to type instead."""


class LookupInputError(UsageError):
    """The user asked for something that does not exist or is malformed; the message says what to type."""
