"""The "Verify file hashes" button of a dataset message: runs `datasets.integrity` with hash verification for that
dataset and posts the result in the message's thread.

Read-only, but it downloads and re-hashes a whole dataset, so it is guarded like an action: the value is signed by
the bot (bot/actions/tokens.py) and bound to the channel it was posted in, the clicking user must be allowed under
`actions.allow.verify_hashes`, and every attempt (run, denied, tampered, expired) is in the audit log.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot.actions import audit
from bot.actions.base import Actor
from bot.actions.policy import VERIFY_HASHES
from bot.actions.tokens import ExpiredToken, TokenError
from bot.diagnosis.refs import TASK_ID
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.registry import REGISTRY, load_builtin_checks
from bot.errors import LookupInputError
from bot.slack.commands.help import render_failure, render_input_error, render_running
from bot.slack.commands.lookups import integrity_params, pick_server
from bot.slack.commands.messages import VERIFY_DATASET_ACTION
from bot.slack.delivery.sink import Posted, SlackWriteError
from bot.slack.messages.report import ReportOptions, render_run
from bot.slack.services import BotServices
from bot.slack.workpool import PoolBusyError
from bot.store import StoreError

log = logging.getLogger(__name__)


def register(app: App) -> None:
    app.action(VERIFY_DATASET_ACTION)(handle_verify)


def handle_verify(ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext) -> None:
    ack()
    services: BotServices = context["services"]
    user_info = body.get("user") or {}
    user = str(user_info.get("id") or "")
    actor = Actor(id=user, name=str(user_info.get("username") or user_info.get("name") or ""), via="slack")
    channel = str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or "")
    message_ts = str((body.get("message") or {}).get("ts") or "")
    response_url = body.get("response_url")
    value = str(action.get("value") or "")
    try:
        services.pool.submit(
            lambda: _guarded_verify(services, actor, value, channel, message_ts, response_url), name="dataset verify"
        )
    except PoolBusyError:
        log.warning("dataset verify refused: the work pool is full")


async def _guarded_verify(
    services: BotServices, actor: Actor, value: str, channel: str, message_ts: str, response_url: str | None
) -> None:
    """Check the value's signature and channel, then the user's permission; audit the attempt; then run."""
    deps, store = services.action_deps, services.action_store
    if deps is None or deps.signer is None or store is None:
        _tell(services, response_url, channel, actor.id, "I cannot verify that: action buttons are off on this bot.")
        return
    server_name, dataset_id = "", "?"
    try:
        claims = deps.signer.verify(value)
        server_name, dataset_id = claims.server or "", claims.subject
        if claims.action != VERIFY_HASHES or not TASK_ID.match(dataset_id):
            raise TokenError("this button does not name a dataset")
        bound = claims.params.get("c")
        if bound and bound != channel:
            raise TokenError("this button belongs to a message in another channel")
        server = pick_server(services.settings, claims.server or None)
    except (TokenError, LookupInputError) as exc:
        outcome = "expired" if isinstance(exc, ExpiredToken) else "tampered"
        audit.record(store, actor=actor, action=VERIFY_HASHES, server=server_name, subject=dataset_id,
                     outcome=outcome, error=str(exc), context={"channel": channel}, secrets=services.secrets())
        _tell(services, response_url, channel, actor.id, f"I cannot verify that: {exc}. Nothing was run; the attempt "
              "is in the audit log.")
        return
    decision = await services.authorizer.authorize(actor, VERIFY_HASHES)
    if not decision.allowed:
        reason = decision.reason
        audit.record(store, actor=actor, action=VERIFY_HASHES, server=server.name, subject=dataset_id,
                     outcome="denied", error=reason, context={"channel": channel}, secrets=services.secrets())
        _tell(services, response_url, channel, actor.id, f"Not allowed: {reason}. This attempt is in the audit log.")
        return
    audit.record(store, actor=actor, action=VERIFY_HASHES, server=server.name, subject=dataset_id, outcome="ok",
                 context={"channel": channel}, secrets=services.secrets())
    await _verify(services, server.name, dataset_id, channel, message_ts, actor.id)


def _tell(services: BotServices, response_url: str | None, channel: str, user: str, text: str) -> None:
    """A private note to the clicking user, sent from the work pool (the listener must return at once)."""
    message = render_input_error(text)

    async def job() -> None:
        await services.pool.io(services.outbox.tell_privately, message, user=user, channel=channel,
                               response_url=response_url)

    try:
        services.pool.submit(job, name="dataset verify note")
    except PoolBusyError:
        log.warning("could not tell %s (%s): the work pool is full", user, text)


async def _verify(
    services: BotServices, server_name: str, dataset_id: str, channel: str, thread_ts: str, user: str
) -> None:
    from bot.engine.runner import run_playbooks

    pool, outbox = services.pool, services.outbox
    what = f"a hash check of dataset `{dataset_id}`"
    try:
        placeholder: Posted = await pool.io(
            outbox.post, channel, render_running(what, requested_by=user), thread_ts=thread_ts or None
        )
    except SlackWriteError as exc:
        log.warning("verify: cannot post in %s: %s", channel, exc.explain())
        return
    try:
        load_builtin_checks()
        if "datasets.integrity" not in REGISTRY:
            raise LookupInputError("the check library has no datasets.integrity check")
        server = pick_server(services.settings, server_name)
        playbook = Playbook(
            name="dataset-verify",
            checks=[CheckEntry(check="datasets.integrity", params=integrity_params(dataset_id))],
        )
        result = await run_playbooks([playbook], services.settings, server, trigger="slack")
        try:
            await pool.io(services.store.record_run, result)
        except StoreError as exc:  # the answer matters more than its history
            log.error("verify run not recorded: %s", exc)
        message = render_run(
            result,
            opts=ReportOptions(
                command=services.command,
                requested_by=user,
                all_hint="`clearml-chatops history --check datasets.integrity`",
                show_ok=True,
            ),
            secrets=services.secrets(),
        )
    except Exception as exc:
        log.exception("dataset verify failed")
        message = render_failure(what, f"{type(exc).__name__}: {exc}")
    try:
        await pool.io(outbox.update, placeholder, message)
    except SlackWriteError as exc:
        log.warning("verify: cannot update the result: %s", exc.explain())
