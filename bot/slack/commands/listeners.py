"""The `/clearml` slash command (whatever name the app gives it).

The listener only parses, validates what it can without ClearML, and acks: instantly with a private answer for
help, lists and mistakes, or with nothing after handing the slow work to the work pool
(bot/slack/commands/jobs.py). It must return in milliseconds so that Slack's 3-second deadline holds whatever
ClearML's latency or the number of people typing at once.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot.config import ConfigError
from bot.diagnosis.refs import parse_ref
from bot.engine.playbook import PlaybookError
from bot.engine.registry import REGISTRY, load_builtin_checks
from bot.errors import LookupInputError
from bot.incidents.silences import SilenceError, parse_silence_args
from bot.slack.commands import jobs
from bot.slack.commands.help import (
    render_busy,
    render_checks,
    render_help,
    render_input_error,
    render_playbooks,
    render_usage_error,
)
from bot.slack.commands.parsing import CommandUsageError, ParsedCommand, closest, parse
from bot.slack.commands.replies import CommandRequest
from bot.slack.incidents import commands as incident_commands
from bot.slack.messages.common import SlackMessage
from bot.slack.services import BotServices
from bot.slack.workpool import PoolBusyError

log = logging.getLogger(__name__)


def register(app: App) -> None:
    # Any command: the app owns one slash command, and its name is configurable (slack.command / the manifest).
    app.command(re.compile(r"^/"))(handle_command)


def handle_command(ack: Ack, command: dict[str, Any], context: BoltContext) -> None:
    services: BotServices = context["services"]
    request = CommandRequest.from_payload(command, received_at=services.reads.clock())

    def reply_now(message: SlackMessage, *, ephemeral: bool = True) -> None:
        ack(services.outbox.ack_body(message, ephemeral=ephemeral))

    try:
        parsed = parse(request.text, request.command)
    except CommandUsageError as err:
        reply_now(render_usage_error(err, request.command))
        return
    if parsed.name in incident_commands.COMMANDS:
        # from the store, at once; a new silence is announced in the channel (everybody should know what stopped
        # notifying), the rest is private
        message, public = incident_commands.answer(services, parsed, request)
        reply_now(message, ephemeral=not public)
        return
    instant = _instant(services, parsed, request)
    if instant is not None:
        reply_now(instant)
        return
    problem = _validate(services, parsed)
    if problem is not None:
        reply_now(render_input_error(problem, sub=parsed.sub, command=request.command))
        return
    try:
        services.pool.submit(  # run_command takes a pool slot only around its ClearML work
            lambda: jobs.run_command(services, request, parsed), name=f"{request.command} {parsed.name}", limited=False
        )
    except PoolBusyError as exc:
        reply_now(render_busy(exc.waiting))
        return
    ack()


# Subcommands whose ack is computed from the text alone: no store, no playbook files, no ClearML (the work, if any,
# goes to the work pool). `serve --http` runs their dispatch on its event loop instead of in a thread.
_ACK_WITHOUT_IO = frozenset({"help", "checks", "status", "agents", "queues", "task", "diff", "dataset"})


def acks_without_io(text: str, command: str = "/clearml") -> bool:
    """Whether the ack of `command text` does no blocking I/O (a mistake in the text is answered from the text)."""
    try:
        return parse(text, command).name in _ACK_WITHOUT_IO
    except CommandUsageError:
        return True


def _instant(services: BotServices, parsed: ParsedCommand, request: CommandRequest) -> SlackMessage | None:
    """Subcommands answered from local data, in the ack itself."""
    if parsed.name == "help":
        return render_help(request.command)
    if parsed.name == "playbooks":  # instant only from cached parses; else the work pool parses and answers
        from bot.engine.playbook_sources import origin_of

        infos = services.playbook_infos(cached_only=True)
        if infos is None:
            return None
        return render_playbooks(infos, str(services.playbooks_dir), request.command,
                                origin=origin_of(services.playbooks_dir))
    if parsed.name == "checks":
        load_builtin_checks()
        return render_checks(list(REGISTRY.values()), request.command)
    return None


def _validate(services: BotServices, parsed: ParsedCommand) -> str | None:
    """Mistakes we can spot without asking ClearML (so the user hears at once, privately)."""
    try:
        if parsed.name == "run":
            services.check_playbook_name(parsed.args[0])  # no YAML parsed here: the job loads the playbook
            if len(parsed.args) > 1:
                _check_server(services, parsed.args[1])
        elif parsed.name in ("task", "dataset"):
            parse_ref(parsed.args[0], services.servers, kind=parsed.name)
        elif parsed.name == "diff":
            for arg in parsed.args:
                parse_ref(arg, services.servers, kind="task")
        elif parsed.name == "silence":
            parse_silence_args(" ".join(parsed.args))
    except (PlaybookError, LookupInputError, ConfigError, SilenceError) as exc:
        return str(exc)
    return None


def _check_server(services: BotServices, name: str) -> None:
    names = list(services.settings.servers) or ["default"]
    if name not in names:
        guess = closest(name, names)
        hint = f" Did you mean `{guess}`?" if guess else ""
        raise LookupInputError(
            f"There is no server `{name[:60]}`.{hint} Servers: {', '.join(f'`{n}`' for n in names)}."
        )
