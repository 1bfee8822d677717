"""The slow half of each slash command, run on the work pool after the ack: ask ClearML, render, reply.

One function per subcommand returns the result message (and, for `run --all`, thread replies); `run_command` wraps
them with the placeholder / update / private-error protocol of `Reply`, so a job never leaves a "running…" message
behind, whatever fails.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.clearml.errors import ClearMLError, CredentialsError, ServerUnavailableError
from bot.config import ConfigError
from bot.engine import lookups
from bot.engine.lookups import LookupInputError, Meta, open_snapshot, parse_ref, pick_server
from bot.engine.playbook import PlaybookError
from bot.redact import redact
from bot.slack.messages.common import SlackMessage
from bot.slack.messages.help import render_failure, render_input_error, render_running
from bot.slack.messages.lookups import (
    render_agents,
    render_dataset,
    render_diff,
    render_queues,
    render_status,
    render_task,
)
from bot.slack.messages.report import ReportOptions, render_run, render_run_details
from bot.slack.parsing import ParsedCommand
from bot.slack.replies import CommandRequest, Reply
from bot.slack.services import BotServices
from bot.store import StoreError

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    message: SlackMessage
    thread: list[SlackMessage] = field(default_factory=list)


Handler = Callable[[BotServices, CommandRequest, ParsedCommand], Awaitable[Outcome]]


def describe(parsed: ParsedCommand) -> str:
    """What the placeholder says is running: `status`, `task 4f2c…`, `run health`."""
    args = " ".join(a if len(a) <= 40 else a[:39] + "…" for a in parsed.args)
    return f"`{parsed.name}{' ' + args if args else ''}`"


async def run_command(services: BotServices, request: CommandRequest, parsed: ParsedCommand) -> None:
    """Placeholder, work, then the result in its place; never raises (everything ends in a message)."""
    pool = services.pool
    reply = Reply(services.outbox, request)
    what = describe(parsed)
    await pool.io(reply.start, render_running(what, requested_by=request.user_id))
    secrets = services.secrets()
    try:
        outcome = await HANDLERS[parsed.name](services, request, parsed)
    except (LookupInputError, PlaybookError, ConfigError) as exc:
        msg = render_input_error(redact(str(exc), secrets), sub=parsed.sub, command=request.command)
        await pool.io(reply.reject, msg)
        return
    except CredentialsError as exc:
        hint = "The bot's ClearML keys were refused: an admin must fix them in the bot's configuration."
        await pool.io(reply.finish, render_failure(what, redact(exc.describe(), secrets), hint=hint))
        return
    except ServerUnavailableError as exc:
        hint = "The ClearML server did not answer properly: check that it is up, then try again."
        await pool.io(reply.finish, render_failure(what, redact(exc.describe(), secrets), hint=hint))
        return
    except ClearMLError as exc:
        await pool.io(reply.finish, render_failure(what, redact(exc.describe(), secrets)))
        return
    except Exception as exc:  # a bug: say so in place of the placeholder, keep the traceback in the log
        log.exception("%s failed", what)
        error = redact(f"{type(exc).__name__}: {exc}", secrets)
        await pool.io(reply.finish, render_failure(what, error, hint="This is a bug in the bot; the log has details."))
        return
    await pool.io(reply.finish, outcome.message)
    for extra in outcome.thread:
        await pool.io(reply.thread, extra)


# -- handlers -------------------------------------------------------------------------------------------------


async def _status(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    server = pick_server(services.settings, None)
    meta = Meta()
    async with open_snapshot(services.settings, server, meta) as snap:
        view = await lookups.status(snap, meta, services.settings, services.playbooks())
    return Outcome(render_status(view, requested_by=req.user_id, command=req.command))


async def _agents(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    server = pick_server(services.settings, None)
    meta = Meta()
    pattern = parsed.args[0] if parsed.args else None
    async with open_snapshot(services.settings, server, meta) as snap:
        view = await lookups.agents(snap, meta, pattern, services.playbooks())
    return Outcome(render_agents(view, requested_by=req.user_id))


async def _queues(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    server = pick_server(services.settings, None)
    meta = Meta()
    async with open_snapshot(services.settings, server, meta) as snap:
        view = await lookups.queues(snap, meta, services.playbooks())
    return Outcome(render_queues(view, requested_by=req.user_id))


async def _task(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    ref = parse_ref(parsed.args[0], services.servers, kind="task")
    server = pick_server(services.settings, ref.server)
    meta = Meta()
    async with open_snapshot(services.settings, server, meta) as snap:
        diag = await lookups.task(snap, meta, ref.id, services.playbooks())
    return Outcome(render_task(diag, requested_by=req.user_id, secrets=services.secrets()))


async def _diff(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    a = parse_ref(parsed.args[0], services.servers, kind="task")
    b = parse_ref(parsed.args[1], services.servers, kind="task")
    if a.server and b.server and a.server != b.server:
        raise LookupInputError(
            f"The two links are on different servers ({a.server}, {b.server}): compare tasks of one server."
        )
    server = pick_server(services.settings, a.server or b.server)
    meta = Meta()
    async with open_snapshot(services.settings, server, meta) as snap:
        view = await lookups.diff(snap, meta, a.id, b.id)
    return Outcome(render_diff(view, requested_by=req.user_id, secrets=services.secrets()))


async def _dataset(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    ref = parse_ref(parsed.args[0], services.servers, kind="dataset")
    server = pick_server(services.settings, ref.server)
    meta = Meta()
    async with open_snapshot(services.settings, server, meta) as snap:
        view = await lookups.dataset(snap, meta, ref.id)
    value = json.dumps({"server": server.name, "dataset": view.id}, separators=(",", ":"))
    return Outcome(render_dataset(view, requested_by=req.user_id, secrets=services.secrets(), button_value=value))


async def _run(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    from bot.engine.runner import run_playbooks

    playbook = services.find_playbook(parsed.args[0])
    server_name = parsed.args[1] if len(parsed.args) > 1 else playbook.server
    server = pick_server(services.settings, server_name)
    result = await run_playbooks([playbook], services.settings, server, trigger="slack")
    try:
        await services.pool.io(services.store.record_run, result)
    except StoreError as exc:  # the report still matters more than its history
        log.error("run not recorded: %s", exc)
    opts = ReportOptions(command=req.command, requested_by=req.user_id)
    secrets = services.secrets()
    message = render_run(result, opts=opts, secrets=secrets)
    thread = render_run_details(result, opts=opts, secrets=secrets) if "--all" in parsed.flags else []
    return Outcome(message, thread)


HANDLERS: dict[str, Handler] = {
    "status": _status,
    "agents": _agents,
    "queues": _queues,
    "task": _task,
    "diff": _diff,
    "dataset": _dataset,
    "run": _run,
}
