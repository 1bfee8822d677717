"""The slow half of each slash command, run on the work pool after the ack: ask ClearML, render, reply.

One function per subcommand returns the result message (and, for `run --all`, thread replies); `run_command` wraps
them with the placeholder / update / private-error protocol of `Reply`, so a job never leaves a "running…" message
behind, whatever fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from bot.clearml.errors import ClearMLError, CredentialsError, ServerUnavailableError
from bot.config import ConfigError
from bot.diagnosis.refs import parse_ref
from bot.engine.playbook import PlaybookError
from bot.errors import LookupInputError
from bot.redact import redact
from bot.slack.actions.messages import queue_choice_actions
from bot.slack.commands import lookups
from bot.slack.commands.help import render_failure, render_input_error, render_running
from bot.slack.commands.lookups import Meta, open_snapshot, pick_server
from bot.slack.commands.messages import (
    render_agents,
    render_dataset,
    render_diff,
    render_queues,
    render_status,
    render_task,
)
from bot.slack.commands.parsing import ParsedCommand
from bot.slack.commands.replies import CommandRequest, Reply
from bot.slack.messages.common import SlackMessage
from bot.slack.messages.report import ReportOptions, render_run, render_run_details
from bot.slack.services import BotServices
from bot.store import StoreError

if TYPE_CHECKING:
    from bot.actions import Actor
    from bot.config import ServerSettings
    from bot.engine.playbook import Playbook
    from bot.engine.runner import RunResult
    from bot.engine.snapshot import Snapshot
    from bot.store import Store

log = logging.getLogger(__name__)
V = TypeVar("V")


@dataclass
class Outcome:
    message: SlackMessage
    thread: list[SlackMessage] = field(default_factory=list)


Handler = Callable[[BotServices, CommandRequest, ParsedCommand], Awaitable[Outcome]]


def describe(parsed: ParsedCommand, secrets: Iterable[str] = ()) -> str:
    """What the placeholder says is running: `status`, `task 4f2c…`, `run health` (redacted before it is clipped: a
    clipped secret no longer matches the redaction)."""
    shown = [redact(a, secrets).replace("`", "ˋ") for a in parsed.args]  # a backtick would end the code span
    args = " ".join(a if len(a) <= 40 else a[:39] + "…" for a in shown)
    return f"`{parsed.name}{' ' + args if args else ''}`"


async def run_command(services: BotServices, request: CommandRequest, parsed: ParsedCommand) -> None:
    """Placeholder, work, then the result in its place; never raises (everything ends in a message)."""
    pool = services.pool
    reply = Reply(services.outbox, request)
    secrets = services.secrets()
    what = describe(parsed, secrets)
    await pool.io(reply.start, render_running(what, requested_by=request.user_id))
    try:
        # a pool slot bounds how many commands ask ClearML at once; the placeholder before and the answer after
        # are Slack posts that never wait for one (fifty people typing `status`: fifty placeholders at once)
        async with pool.slot():
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


async def shared_view(
    services: BotServices,
    server: ServerSettings,
    key: tuple[Any, ...],
    req: CommandRequest,
    compute: Callable[[Snapshot, Meta], Awaitable[V]],
    keep: Callable[[V], bool] | None = None,
) -> V:
    """A look-up's view (status, agents, queues), computed once for everyone who asks the same thing of the same
    server at the same time or within the read window: fifty people typing `status` cost one computation, not only
    one set of ClearML calls. Each asker's copy says what it cost them (no call) and how old its data is."""
    window = services.reads

    async def compute_fresh() -> tuple[V, float | None]:
        meta = Meta()
        async with open_snapshot(services.settings, server, meta, window=window, asked_at=req.received_at) as snap:
            view = await compute(snap, meta)
            oldest = snap.oldest_served_at
        return view, oldest

    if not window.enabled:
        return (await compute_fresh())[0]
    from bot.engine.window import server_identity

    started = time.perf_counter()
    served = await window.read(server_identity(server), ("view", *key), compute_fresh,
                               not_before=window.not_before(asked_at=req.received_at), data_time=lambda v: v[1],
                               keep=(lambda v: keep(v[0])) if keep is not None else None)
    view: V = served.value[0]
    if not served.shared:
        return view
    theirs: Meta = view.meta  # type: ignore[attr-defined]
    age = window.clock() - served.sent_at if served.sent_at < req.received_at else None
    mine = Meta(server=theirs.server, server_url=theirs.server_url, web_url=theirs.web_url,
                duration_s=time.perf_counter() - started, api_calls=0, data_age_s=age)
    return dataclasses.replace(view, meta=mine)  # type: ignore[type-var]


def _playbooks_key(playbooks: list[Playbook]) -> str:
    """Views depend on the playbooks' thresholds (edits apply without a restart): part of a shared view's key."""
    text = "\n".join(pb.model_dump_json() for pb in playbooks)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _complete(view: lookups.StatusView) -> bool:
    """A status that found ClearML answering every read: only such a view serves later askers (a failure is asked
    again by the next command, as failed reads are)."""
    failed_checks = view.result is not None and any(f.severity == "error" for f in view.result.findings)
    return view.reachable and not view.error and not failed_checks


async def _status(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    server = pick_server(services.settings, None)
    playbooks = services.playbooks()

    async def compute(snap: Snapshot, meta: Meta) -> lookups.StatusView:
        return await lookups.status(snap, meta, services.settings, playbooks)

    view = await shared_view(services, server, ("status", _playbooks_key(playbooks)), req, compute, _complete)
    return Outcome(render_status(view, requested_by=req.user_id, command=req.command))


async def _agents(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    server = pick_server(services.settings, None)
    playbooks = services.playbooks()
    pattern = parsed.args[0] if parsed.args else None

    async def compute(snap: Snapshot, meta: Meta) -> lookups.AgentsView:
        return await lookups.agents(snap, meta, pattern, playbooks)

    view = await shared_view(services, server, ("agents", pattern, _playbooks_key(playbooks)), req, compute)
    return Outcome(render_agents(view, requested_by=req.user_id))


async def _queues(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    server = pick_server(services.settings, None)
    playbooks = services.playbooks()

    async def compute(snap: Snapshot, meta: Meta) -> lookups.QueuesView:
        return await lookups.queues(snap, meta, playbooks)

    view = await shared_view(services, server, ("queues", _playbooks_key(playbooks)), req, compute)
    return Outcome(render_queues(view, requested_by=req.user_id))


async def _task(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    ref = parse_ref(parsed.args[0], services.servers, kind="task")
    server = pick_server(services.settings, ref.server)
    meta = Meta()
    async with open_snapshot(services.settings, server, meta, window=services.reads, asked_at=req.received_at) as snap:
        diag = await lookups.task(snap, meta, ref.id, services.playbooks())
        queues = await queue_options(services, snap, server.name, diag.actions)
    buttons = (
        services.buttons.for_subject(diag.actions, "task", diag.id, diag.name, server.name, channel=req.channel_id)
        if services.buttons is not None
        else []
    )
    return Outcome(
        render_task(diag, requested_by=req.user_id, secrets=services.secrets(), buttons=buttons, queues=queues)
    )


async def queue_options(
    services: BotServices, snap: Snapshot, server: str, actions: Iterable[str]
) -> list[tuple[str, str]]:
    """The server's queues for the select next to clone/requeue/reproduce buttons (only when one is shown); also
    remembered for incident messages, which are rendered without ClearML at hand."""
    if not set(actions) & queue_choice_actions():
        return []
    try:
        found = [(q.id, q.name or q.id) for q in await snap.queues()]
    except ClearMLError as exc:  # the buttons still work without a select (default queue)
        log.info("no queue list for the select: %s", exc)
        return services.queues.get(server)
    services.queues.set(server, found)
    return services.queues.get(server)


async def _diff(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    a = parse_ref(parsed.args[0], services.servers, kind="task")
    b = parse_ref(parsed.args[1], services.servers, kind="task")
    if a.server and b.server and a.server != b.server:
        raise LookupInputError(
            f"The two links are on different servers ({a.server}, {b.server}): compare tasks of one server."
        )
    server = pick_server(services.settings, a.server or b.server)
    meta = Meta()
    async with open_snapshot(services.settings, server, meta, window=services.reads, asked_at=req.received_at) as snap:
        view = await lookups.diff(snap, meta, a.id, b.id)
    return Outcome(render_diff(view, requested_by=req.user_id, secrets=services.secrets()))


def _verify_button_value(services: BotServices, server: str, dataset_id: str, channel: str) -> str:
    """The "Verify file hashes" button's value: signed like an action button, bound to the channel it is posted in
    (empty, so no button, when the bot has no signing key)."""
    deps = services.action_deps
    if deps is None or deps.signer is None:
        return ""
    from bot.actions.policy import VERIFY_HASHES
    from bot.durations import parse_duration

    return deps.signer.issue(VERIFY_HASHES, dataset_id, server=server, params={"c": channel},
                             ttl_s=parse_duration(services.settings.actions.button_ttl))


async def _dataset(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    ref = parse_ref(parsed.args[0], services.servers, kind="dataset")
    server = pick_server(services.settings, ref.server)
    meta = Meta()
    async with open_snapshot(services.settings, server, meta, window=services.reads, asked_at=req.received_at) as snap:
        view = await lookups.dataset(snap, meta, ref.id)
    value = _verify_button_value(services, server.name, view.id, req.channel_id)
    return Outcome(render_dataset(view, requested_by=req.user_id, secrets=services.secrets(), button_value=value))


def shared_snapshot(services: BotServices, server: ServerSettings, *, asked_at: float | None = None) -> Snapshot:
    """A snapshot over a new client whose reads go through the process's shared window, as fresh as the playbook's
    thresholds need (a scheduled run is asked for when it starts). The caller closes its client."""
    from bot.clearml.client import ClearMLClient
    from bot.engine.snapshot import Snapshot

    client = ClearMLClient(server, logins=services.reads.logins)
    return Snapshot(client, server, services.settings, window=services.reads, asked_at=asked_at)


async def result_queues(services: BotServices, snap: Snapshot, result: RunResult) -> list[tuple[str, str]]:
    """The server's queues when a finding of `result` offers a button that can use one (from the run's own
    snapshot: usually already fetched by the queue checks, so no extra call)."""
    if not result.findings:
        return []
    actions = {a for f in result.findings for a in f.actions}
    return await queue_options(services, snap, snap.server.name, actions)


async def run_with_queues(
    services: BotServices, playbook: Playbook, server: ServerSettings, trigger: str, *, asked_at: float | None = None
) -> tuple[RunResult, list[tuple[str, str]]]:
    """Run a playbook (`bot.schedule.run_once`: the store's history read on the pool's I/O threads, as a scheduled
    run reads it) over the shared read window; with the server's queues when a finding offers a button that can use
    one."""
    from bot.schedule import run_once

    snap = shared_snapshot(services, server, asked_at=asked_at)
    try:
        result = await run_once(playbook, services.settings, server, trigger=trigger, snapshot=snap,
                                store=services.store, offload=services.pool.io)
        queues = await result_queues(services, snap, result)
    finally:
        await snap.client.aclose()
    return result, queues


async def _run(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    playbook = services.find_playbook(parsed.args[0])
    server_name = parsed.args[1] if len(parsed.args) > 1 else playbook.server
    server = pick_server(services.settings, server_name)
    result, queues = await run_with_queues(services, playbook, server, "slack", asked_at=req.received_at)
    try:
        await services.pool.io(services.store.record_run, result)
    except StoreError as exc:  # the report still matters more than its history
        log.error("run not recorded: %s", exc)
    opts = ReportOptions(command=req.command, requested_by=req.user_id)
    secrets = services.secrets()
    maker = services.buttons
    buttons = (lambda f: maker.for_finding(f, result.server, channel=req.channel_id)) if maker is not None else None
    message = render_run(result, opts=opts, secrets=secrets, buttons=buttons, queues=queues)
    thread = render_run_details(result, opts=opts, secrets=secrets) if "--all" in parsed.flags else []
    return Outcome(message, thread)


async def _authorized(services: BotServices, req: CommandRequest, action: str, subject: str) -> tuple[Actor, Store]:
    """The typing user as an actor, and the store the audit rows go to; a refusal is audited and raised as the
    user's answer. On the work pool's loop: the thread that owns the actions' store connection."""
    from bot.actions import Actor
    from bot.actions import audit as audit_mod

    actor = Actor(id=req.user_id, via="slack")
    permission = await services.authorizer.authorize(actor, action)
    store = services.action_store or services.store
    if not permission.allowed:
        audit_mod.record(store, actor=actor, action=action, server="", subject=subject, outcome="denied",
                         error=permission.reason)
        raise LookupInputError(f"Not allowed: {permission.reason}.")
    return actor, store


async def _silence(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    """Mute notifications matching a pattern for a while; the answer replaces the placeholder in the channel."""
    from bot.actions import audit as audit_mod
    from bot.incidents.silences import SilenceError, add_silence, parse_silence_args
    from bot.slack.incidents.messages import render_silence_added
    from bot.slack.incidents.service import now_utc

    try:
        pattern, seconds, reason = parse_silence_args(" ".join(parsed.args))
    except SilenceError as exc:
        raise LookupInputError(str(exc)) from None
    actor, store = await _authorized(services, req, "silence", pattern)
    now = now_utc()
    silence = await services.pool.io(add_silence, services.store, pattern, seconds, reason=reason,
                                     by=f"<@{req.user_id}>", now=now)
    audit_mod.record(store, actor=actor, action="silence", server="", subject=pattern, outcome="ok",
                     params={"seconds": seconds, "reason": reason, "id": silence.id})
    return Outcome(render_silence_added(silence, now, req.command))


_CHANNEL_MENTION = re.compile(r"^<#([CG][A-Z0-9]+)(?:\|[^>]*)?>$")
_CHANNEL_REF = re.compile(r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CG][A-Z0-9]{6,})$")


def channel_arg(raw: str) -> str:
    """A channel typed after a subcommand: `#name`, a channel id, or Slack's escaped mention `<#C…|name>`."""
    mention = _CHANNEL_MENTION.match(raw)
    if mention:
        return mention.group(1)
    if _CHANNEL_REF.match(raw):
        return raw
    raise LookupInputError(f"`{raw[:80]}` is not a channel: type it as `#channel-name` (or leave it out to get the "
                           "digest here).")


async def _digest(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    """The digest now (not recorded: the scheduled one is unaffected), as this command's answer or posted to the
    channel given."""
    from slack_sdk.models.blocks import Block

    from bot.incidents.digest_on_demand import digest_now
    from bot.slack.actions.messages import render_note
    from bot.slack.delivery.sink import channel_label
    from bot.slack.incidents.messages import SlackIncidentRenderer
    from bot.slack.incidents.service import now_utc

    target = channel_arg(parsed.args[0]) if parsed.args else None
    now = now_utc()
    digest = await services.pool.io(lambda: digest_now(services.store, services.settings, now,
                                                       permalink=services.outbox.permalink))
    renderer = services.incidents.renderer if services.incidents is not None else SlackIncidentRenderer(
        secrets=services.secrets, command=services.command)
    rendered = renderer.digest(digest)
    if target is None or target == req.channel_id:
        blocks = [b if isinstance(b, Block) else Block.parse(b) for b in rendered.blocks or []]
        return Outcome(SlackMessage(text=rendered.text, blocks=[b for b in blocks if b is not None]))
    # another channel: for anyone unless actions.allow.digest restricts it; audited like a silence
    from bot.actions import audit as audit_mod

    actor, store = await _authorized(services, req, "digest", target)
    # through the durable outbox, like the scheduled digest (its errors are logged by the worker)
    await services.pool.io(services.outbox.enqueue, f"digest:on-demand:{target}:{now.isoformat()}", target, "post",
                           rendered.as_payload(), now=now)
    audit_mod.record(store, actor=actor, action="digest", server="", subject=target, outcome="ok")
    return Outcome(render_note(f"Digest ({digest.headline}) sent to {channel_label(target)} at <@{req.user_id}>'s "
                               "request.", users=[req.user_id], channels=[target]))


async def _playbooks(services: BotServices, req: CommandRequest, parsed: ParsedCommand) -> Outcome:
    """`/clearml playbooks` when some playbook's parse is not cached yet (the ack never parses YAML)."""
    from bot.engine.playbook_sources import origin_of
    from bot.slack.commands.help import render_playbooks

    infos = await services.pool.io(services.playbook_infos)
    return Outcome(render_playbooks(infos or [], str(services.playbooks_dir), req.command,
                                    origin=origin_of(services.playbooks_dir)))


HANDLERS: dict[str, Handler] = {
    "playbooks": _playbooks,
    "status": _status,
    "agents": _agents,
    "queues": _queues,
    "task": _task,
    "diff": _diff,
    "dataset": _dataset,
    "run": _run,
    "silence": _silence,
    "digest": _digest,
}
