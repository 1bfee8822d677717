"""The `/clearml` command language: the table of subcommands, the parser and the usage texts.

The table is the single source of truth: the parser, `help`, usage errors and the manifest's usage hint (checked by
a test) all come from it, so a subcommand cannot be implemented without being documented.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from bot.errors import UsageError

MAX_TEXT = 2000  # whole command text; Slack allows more, but nothing we accept is that long
MAX_ARG = 300  # one argument (a ClearML URL with query string fits comfortably)


@dataclass(frozen=True)
class Subcommand:
    name: str
    args: str  # usage, e.g. "<playbook> [server] [--all]"
    summary: str
    min_args: int = 0
    max_args: int = 0
    flags: tuple[str, ...] = ()
    # answered at once in the ack, privately: needs no ClearML call
    instant: bool = False
    example: str = ""

    def usage(self, command: str) -> str:
        return f"{command} {self.name}{' ' + self.args if self.args else ''}"


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("help", "", "this list", instant=True),
    Subcommand(
        "run",
        "<playbook> [server] [--all]",
        "run a playbook and post the report here (`--all`: every finding, in the thread)",
        1,
        2,
        ("--all",),
        example="run health",
    ),
    Subcommand("status", "", "one-message overview: server, agents, queues, failing checks"),
    Subcommand(
        "agents",
        "[pattern]",
        "agents (workers) and whether they are alive; optional glob or substring",
        0,
        1,
        example="agents gpu-*",
    ),
    Subcommand("queues", "", "queues with their length, oldest wait and the workers serving them"),
    Subcommand(
        "task",
        "<id|url>",
        "diagnose one task: status, worker, queue position, failure cause, environment",
        1,
        1,
        example="task 4f2c0d7e9a8b4c1d8e5f6a7b8c9d0e1f",
    ),
    Subcommand(
        "diff",
        "<task> <task>",
        "what differs between two runs (commit, diff, packages, params, ...)",
        2,
        2,
        example="diff 4f2c0d7e9a8b4c1d8e5f6a7b8c9d0e1f 9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
    ),
    Subcommand(
        "dataset",
        "<id|url>",
        "a dataset version: state, completeness, lineage; offers a hash check",
        1,
        1,
        example="dataset 6c1d9d5694d5fb69a31633e9c88164ad",
    ),
    Subcommand("playbooks", "", "the playbooks this bot can run", instant=True),
    Subcommand("checks", "", "every check the playbooks can use", instant=True),
    # Incidents and schedules: answered from the bot's store, so at once (no ClearML call).
    Subcommand("incidents", "", "open incidents: severity, age, who acknowledged, link to each thread", instant=True),
    Subcommand(
        "silence",
        "<check-or-subject-pattern> <duration> [reason]",
        "mute notifications matching a check or subject for a while (still tracked); announced here",
        2,
        60,
        example="silence agents.stale:gpu-box-* 2h kernel upgrade",
    ),
    Subcommand("silences", "", "active silences and when they end", instant=True),
    Subcommand(
        "unsilence", "<id>", "end a silence early (ids from `silences`)", 1, 1, instant=True, example="unsilence 3"
    ),
    Subcommand("schedules", "", "scheduled playbooks and the digest, with their next run times", instant=True),
    Subcommand("digest", "[channel]", "the digest now (incidents, top offenders, trends), here or in a channel", 0, 1,
               example="digest #ml-platform"),
    Subcommand("audit", "[n]", "the last n button actions and who did them (default 10)", 0, 1, instant=True),
)
BY_NAME: dict[str, Subcommand] = {s.name: s for s in SUBCOMMANDS}


@dataclass(frozen=True)
class ParsedCommand:
    sub: Subcommand
    args: list[str]
    flags: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.sub.name


class CommandUsageError(UsageError):
    """Bad slash-command text; `message` says what was wrong, `suggestion` is the closest valid command (if any)."""

    def __init__(self, message: str, *, suggestion: str | None = None, sub: Subcommand | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion
        self.sub = sub


def usage_hint() -> str:
    """The slash command's one-line usage hint (manifest `usage_hint`): every subcommand, in table order."""
    return " | ".join(f"{s.name}{' ' + s.args if s.args else ''}" for s in SUBCOMMANDS)


def closest(word: str, options: list[str]) -> str | None:
    match = difflib.get_close_matches(word.lower(), options, n=1, cutoff=0.5)
    return match[0] if match else None


_SLACK_LINK = re.compile(r"^<([^|>]+)(?:\|[^>]*)?>$")


def unwrap(token: str) -> str:
    """Slack wraps links (and, with escaping on, channels/users) as `<url|label>`: keep the target."""
    match = _SLACK_LINK.match(token)
    return match.group(1) if match else token


def shorten(text: str, limit: int = 60) -> str:
    """User input echoed back in a message: never the whole of a very long argument."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse(text: str, command: str = "/clearml") -> ParsedCommand:
    """Parse the text after the slash command; raises CommandUsageError with what to type instead."""
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        raise CommandUsageError(
            f"That command is {len(text)} characters long; nothing I understand is longer than {MAX_TEXT}."
        )
    if not text:
        return ParsedCommand(BY_NAME["help"], [])
    tokens = [unwrap(t) for t in text.split()]
    word, rest = tokens[0].lower(), tokens[1:]
    sub = BY_NAME.get(word)
    if sub is None:
        guess = closest(word, list(BY_NAME))
        shown = shorten(tokens[0], 40)
        if guess:
            raise CommandUsageError(
                f"I don't know the subcommand `{shown}`. Did you mean `{BY_NAME[guess].usage(command)}`?",
                suggestion=BY_NAME[guess].usage(command),
            )
        raise CommandUsageError(f"I don't know the subcommand `{shown}`.")
    flags: set[str] = set()
    args: list[str] = []
    for token in rest:
        if len(token) > MAX_ARG:
            raise CommandUsageError(
                f"An argument of `{sub.name}` is {len(token)} characters long (at most {MAX_ARG}): "
                f"`{shorten(token, 40)}`.",
                sub=sub,
            )
        if token.startswith("--"):
            if token.lower() in sub.flags:
                flags.add(token.lower())
                continue
            guess = closest(token.lower(), list(sub.flags)) if sub.flags else None
            hint = f" Did you mean `{guess}`?" if guess else ""
            raise CommandUsageError(f"`{sub.name}` has no option `{shorten(token, 30)}`.{hint}", sub=sub)
        args.append(token)
    if len(args) < sub.min_args:
        raise CommandUsageError(f"`{sub.name}` needs {_needs(sub)}.", sub=sub)
    if len(args) > sub.max_args:
        extra = " ".join(shorten(a, 30) for a in args[sub.max_args :])
        if sub.max_args == 0:
            raise CommandUsageError(f"`{sub.name}` takes no arguments (got `{shorten(extra, 60)}`).", sub=sub)
        noun = "argument" if sub.max_args == 1 else "arguments"
        raise CommandUsageError(
            f"`{sub.name}` takes at most {sub.max_args} {noun}; I don't know what to do with `{shorten(extra, 60)}`.",
            sub=sub,
        )
    return ParsedCommand(sub, args, flags)


def _needs(sub: Subcommand) -> str:
    return {
        "run": "a playbook name (`/clearml playbooks` lists them)",
        "task": "a task id or a ClearML web link to the task",
        "diff": "two task ids (or links)",
        "dataset": "a dataset id or a ClearML web link to the dataset",
        "silence": "a check or subject pattern and a duration, e.g. `agents.stale:gpu-* 2h`",
        "unsilence": "the silence's number (`/clearml silences` lists them)",
    }.get(sub.name, f"{sub.min_args} argument(s)")
