"""`/clearml incidents`, `silences`, `unsilence <id>`, `schedules`, `audit [n]`: answered at once from the bot's
store (no ClearML call), privately. (`silence` itself runs on the work pool and is announced in the channel: see
bot/slack/commands/jobs.py.)"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.actions import Actor
from bot.actions import audit as audit_mod
from bot.incidents import silences as silences_mod
from bot.slack.actions.messages import render_audit, render_note
from bot.slack.incidents.messages import render_incident_list, render_schedules, render_silences
from bot.slack.incidents.service import now_utc, open_incidents, thread_link
from bot.slack.messages.common import SlackMessage

if TYPE_CHECKING:
    from bot.schedule import ScheduleInfo
    from bot.slack.commands.parsing import ParsedCommand
    from bot.slack.commands.replies import CommandRequest
    from bot.slack.services import BotServices

COMMANDS = frozenset({"incidents", "silences", "unsilence", "schedules", "audit"})
MAX_AUDIT = 50
LINK_BUDGET_S = 0.8


def answer(services: BotServices, parsed: ParsedCommand, request: CommandRequest) -> tuple[SlackMessage, bool]:
    """(the answer, whether the channel should see it)."""
    now = now_utc()
    command = request.command
    if parsed.name == "incidents":
        views = open_incidents(services)
        # answered in the ack (3 s): links not cached yet are asked from Slack within a budget, the rest next time
        deadline = time.monotonic() + LINK_BUDGET_S
        return render_incident_list(views, now, command=command, threads=lambda i: thread_link(
            services, i, fetch=time.monotonic() < deadline)), False
    if parsed.name == "silences":
        return render_silences(silences_mod.active_silences(services.store, now), now, command), False
    if parsed.name == "unsilence":
        return _unsilence(services, parsed.args[0], request, now), False
    if parsed.name == "schedules":
        return render_schedules(schedule_infos(services, now), now, command), False
    # audit [n]
    n = 10
    if parsed.args:
        try:
            n = int(parsed.args[0])
        except ValueError:
            return render_note(f"`{parsed.args[0][:20]}` is not a number: `{command} audit [n]`, n from 1 to "
                               f"{MAX_AUDIT}."), False
        n = max(1, min(MAX_AUDIT, n))
    store = services.action_store or services.store
    rows = services.on_loop(lambda: audit_mod.recent(store, n), timeout=2.0)
    return render_audit(audit_mod.format_rows(rows, mrkdwn=True), len(rows), command), False


def _unsilence(services: BotServices, raw: str, request: CommandRequest, now: datetime) -> SlackMessage:
    try:
        silence_id = int(raw.lstrip("#"))
    except ValueError:
        return render_note(f"`{raw[:20]}` is not a silence number: `{request.command} silences` lists them.")
    actor = Actor(id=request.user_id, via="slack")
    permission = services.authorizer.authorize_blocking(actor, "silence")
    if not permission.allowed:
        _audit(services, actor, f"#{silence_id}", "denied", error=permission.reason)
        return render_note(f"Not allowed: {permission.reason}.")
    ended = silences_mod.cancel_silence(services.store, silence_id, by=f"<@{request.user_id}>", now=now)
    if ended is None:
        _audit(services, actor, f"#{silence_id}", "refused", error=f"no active silence #{silence_id}")
        return render_note(f"There is no active silence #{silence_id}: `{request.command} silences` lists them.")
    _audit(services, actor, ended.pattern, "ok", params={"id": silence_id, "reason": ended.reason})
    return render_note(f"Silence #{silence_id} (`{ended.pattern}`) ended: its problems notify again from the next "
                       "run.")


def _audit(services: BotServices, actor: Actor, subject: str, outcome: str, **fields: Any) -> None:
    """One audit row, like `silence` writes; on the loop thread that owns the actions' store connection."""
    store = services.action_store or services.store
    services.on_loop(lambda: audit_mod.record(store, actor=actor, action="unsilence", server="", subject=subject,
                                              outcome=outcome, **fields), timeout=2.0)


def schedule_infos(services: BotServices, now: datetime) -> list[ScheduleInfo]:
    """From the running scheduler when `serve` runs one, else computed from the playbooks and `slack.digest`."""
    from bot.schedule import build_jobs, ensure_schema, next_runs

    if services.scheduler is not None:
        return services.scheduler.next_runs(now)
    ensure_schema(services.store)
    return next_runs(build_jobs(services.playbooks(), services.settings.slack.digest), services.store, now)
