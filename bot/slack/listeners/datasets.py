"""The "Verify file hashes" button of a dataset message: runs `datasets.integrity` with hash verification for that
dataset and posts the result in the message's thread.

Read-only, so it needs no authorization or signed value (mutating actions do; see the actions listeners). The value
is still validated: a tampered one can only name a configured server and a well-formed id.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot.engine.lookups import TASK_ID, LookupInputError, integrity_params, pick_server
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.registry import REGISTRY, load_builtin_checks
from bot.slack.messages.help import render_failure, render_input_error, render_running
from bot.slack.messages.lookups import VERIFY_DATASET_ACTION
from bot.slack.messages.report import ReportOptions, render_run
from bot.slack.outbox import Posted, SlackWriteError
from bot.slack.services import BotServices
from bot.slack.workpool import PoolBusyError
from bot.store import StoreError

log = logging.getLogger(__name__)


def register(app: App) -> None:
    app.action(VERIFY_DATASET_ACTION)(handle_verify)


def handle_verify(ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext) -> None:
    ack()
    services: BotServices = context["services"]
    user = str((body.get("user") or {}).get("id") or "")
    channel = str((body.get("channel") or {}).get("id") or "")
    message_ts = str((body.get("message") or {}).get("ts") or "")
    response_url = body.get("response_url")
    try:
        value = json.loads(action.get("value") or "{}")
        dataset_id = str(value.get("dataset") or "")
        if not TASK_ID.match(dataset_id):
            raise LookupInputError("this button does not name a dataset")
        server = pick_server(services.settings, value.get("server") or None)
    except (ValueError, AttributeError, LookupInputError) as exc:
        _tell(services, response_url, channel, user, f"I cannot verify that: {exc}")
        return
    try:
        services.pool.submit(
            lambda: _verify(services, server.name, dataset_id, channel, message_ts, user), name="dataset verify"
        )
    except PoolBusyError:
        log.warning("dataset verify refused: the work pool is full")


def _tell(services: BotServices, response_url: str | None, channel: str, user: str, text: str) -> None:
    """A private note to the clicking user, sent from the work pool (the listener must return at once)."""
    message = render_input_error(text)

    def send() -> None:
        try:
            if response_url:
                services.outbox.respond(response_url, message, ephemeral=True)
            elif channel and user:
                services.outbox.ephemeral(channel, user, message)
        except SlackWriteError as exc:
            log.warning("could not tell %s: %s", user, exc.explain())

    async def job() -> None:
        await services.pool.io(send)

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
