"""Help, usage errors, the playbook and check lists, "running…" placeholders and error notes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from slack_sdk.models.blocks import Block

from bot.engine.registry import CheckSpec
from bot.slack.commands.parsing import SUBCOMMANDS, CommandUsageError, Subcommand
from bot.slack.messages.common import (
    MAX_BLOCKS,
    MAX_MESSAGE_TEXT,
    SlackMessage,
    bot_text,
    chunk_lines,
    clip,
    code,
    context,
    header,
    safe,
    section,
)


def _usage_lines(command: str) -> list[str]:
    return [f"`{s.usage(command)}` — {s.summary}" for s in SUBCOMMANDS]


def render_help(command: str = "/clearml") -> SlackMessage:
    blocks: list[Block] = [header("ClearML ChatOps"), section("\n".join(_usage_lines(command)))]
    examples = [f"`{command} {s.example}`" for s in SUBCOMMANDS if s.example]
    blocks.append(
        context(
            "Examples: " + " · ".join(examples),
            "Reports go to this channel; help, lists and mistakes only to you.",
        )
    )
    return SlackMessage(text=f"{command}: subcommands " + ", ".join(s.name for s in SUBCOMMANDS), blocks=blocks)


def render_usage_error(err: CommandUsageError, command: str = "/clearml") -> SlackMessage:
    """What was wrong, the closest valid command, and the full usage (an ephemeral reply)."""
    lines = [f":thinking_face: {err.message}"]
    if err.sub is not None:
        lines.append(f"Usage: `{err.sub.usage(command)}` — {err.sub.summary}")
        if err.sub.example:
            lines.append(f"Example: `{command} {err.sub.example}`")
    blocks: list[Block] = [section("\n".join(lines))]
    if err.sub is None:
        blocks.append(section("\n".join(_usage_lines(command))))
    return SlackMessage(text=clip(err.message, 300), blocks=blocks)


def render_input_error(message: str, *, sub: Subcommand | None = None, command: str = "/clearml") -> SlackMessage:
    """A look-up that failed because of what the user typed (unknown id, link of another server, ...)."""
    lines = [f":thinking_face: {message}"]
    if sub is not None:
        lines.append(f"Usage: `{sub.usage(command)}`")
    return SlackMessage(text=clip(message, 300), blocks=[section("\n".join(lines))])


@dataclass(frozen=True)
class PlaybookInfo:
    name: str
    description: str = ""
    checks: int = 0
    schedule: str = ""
    channel: str = ""
    error: str = ""  # set when the file does not load


def render_playbooks(
    playbooks: Sequence[PlaybookInfo], directory: str, command: str = "/clearml", *, origin: str = ""
) -> SlackMessage:
    """`origin`: where the directory's playbooks came from (shipped with the package, or the user's)."""
    blocks: list[Block] = [header(f"Playbooks ({len(playbooks)})")]
    lines = []
    for pb in playbooks:
        if pb.error:
            lines.append(f":x: *{safe(pb.name, limit=60)}* does not load: {safe(pb.error, limit=400)}")
            continue
        extra = []
        if pb.schedule:
            extra.append(f"schedule {code(pb.schedule, 40)}")
        if pb.channel:
            extra.append(f"posts to {safe(pb.channel, limit=40)}")
        tail = f" ({', '.join(extra)})" if extra else ""
        desc = safe(pb.description, limit=200) or "_no description_"
        lines.append(f"*{safe(pb.name, limit=60)}* — {desc} · {pb.checks} checks{tail}")
    if not lines:
        lines.append(f"No playbook in {code(directory, 200)}. Add YAML files there (see the README).")
    blocks.extend(section(t) for t in chunk_lines(lines)[: MAX_BLOCKS - 3])
    source = f" ({safe(origin, limit=100)})" if origin else ""
    blocks.append(context(f"Run one with `{command} run <playbook> [server]`", f"from {code(directory, 100)}{source}"))
    return SlackMessage(
        text=f"{len(playbooks)} playbooks: " + ", ".join(p.name for p in playbooks)[:250], blocks=blocks
    )


# A sentence ends at . ! or ? followed by space and a capital, a backtick or a parenthesis ("e.g." does not end one).
_SENTENCE_END = re.compile(r"(?<![ (]e\.g\.)(?<![ (]i\.e\.)(?<=[.!?])\s+(?=[A-Z`(])")
CHECK_LEAD_LIMIT = 400  # characters of description per check: 22 checks stay within a few sections


def check_lead(spec: CheckSpec) -> str:
    """The first paragraph of a check's docstring (its first line is only `summary`: the sentence usually goes on
    in `description`), as one line."""
    paragraph = f"{spec.summary}\n{spec.description}".strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def whole_sentences(text: str, limit: int) -> str:
    """`text` shortened to the sentences that fit in `limit` characters, marked with "…" when some were left out;
    one sentence longer than the limit is cut at its last clause break (`;`, `,`, `:`) instead."""
    if len(text) <= limit:
        return text
    kept = ""
    for sentence in _SENTENCE_END.split(text):
        candidate = f"{kept} {sentence}" if kept else sentence
        if len(candidate) + 2 > limit:
            break
        kept = candidate
    if kept:
        return f"{kept} …"
    head = text[: limit - 2]
    cut = max(head.rfind(mark) for mark in ("; ", ", ", ": "))
    return (head[:cut] if cut > limit // 3 else head.rsplit(" ", 1)[0]) + " …"


def render_checks(specs: Sequence[CheckSpec], command: str = "/clearml") -> SlackMessage:
    by_area: dict[str, list[CheckSpec]] = {}
    for spec in sorted(specs, key=lambda s: s.id):
        by_area.setdefault(spec.area, []).append(spec)
    blocks: list[Block] = [header(f"Checks ({len(specs)})")]
    # every check listed within Slack's total text per message (msg_blocks_too_long): shorter leads when many
    lead = max(80, min(CHECK_LEAD_LIMIT, (MAX_MESSAGE_TEXT - 1500) // max(1, len(specs)) - 40))
    for area, items in by_area.items():
        lines = [f"*{area}*"] + [f"`{s.id}` — {bot_text(whole_sentences(check_lead(s), lead))}" for s in items]
        blocks.extend(section(t) for t in chunk_lines(lines))
    if len(blocks) > MAX_BLOCKS - 1:
        blocks = [*blocks[: MAX_BLOCKS - 2], section("_…more checks: `clearml-chatops checks` lists them all._")]
    blocks.append(context("Playbooks combine these with parameters; `clearml-chatops checks` shows the parameters."))
    return SlackMessage(text=f"{len(specs)} checks", blocks=blocks)


def render_running(what: str, *, requested_by: str | None = None) -> SlackMessage:
    """The placeholder posted at once and replaced (chat.update) by the result. `what` is the bot's own words (user
    input in it only inside a code span, as `describe()` writes it)."""
    who = f" for <@{requested_by}>" if requested_by else ""
    return SlackMessage(
        text=f"Running {what}…",
        blocks=[section(f":hourglass_flowing_sand: Running {bot_text(what, limit=200)}{who}…")],
    )


def render_failure(what: str, error: str, *, hint: str = "") -> SlackMessage:
    """Our side failed (ClearML down, a bug): replaces the placeholder so nobody waits forever."""
    lines = [f":x: {bot_text(what, limit=200)} failed: {safe(error, limit=1500)}"]
    if hint:
        lines.append(hint)
    return SlackMessage(text=clip(f"{what} failed: {error}", 300), blocks=[section("\n".join(lines))])


def render_busy(waiting: int) -> SlackMessage:
    return SlackMessage(
        text="The bot is busy",
        blocks=[section(f":hourglass: I am busy ({waiting} commands waiting). Please try again in a minute.")],
    )


def render_channel_problem(explanation: str) -> SlackMessage:
    return SlackMessage(text=clip(explanation, 300), blocks=[section(f":no_entry: {explanation}")])
