"""Posting a run's report to its routed channels (unattended runs: schedules, digests, `serve` jobs).

Interactive commands answer where they were typed (bot/slack/commands/jobs.py); this is for reports nobody asked
for in a particular channel, so a channel problem is reported back as data (and logged) instead of to a user.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.routing import NoChannelError, Router
from bot.slack.delivery.sink import SlackSink
from bot.slack.messages.report import FindingButtons, ReportOptions, render_run

if TYPE_CHECKING:
    from bot.engine.playbook import Playbook
    from bot.engine.runner import RunResult

log = logging.getLogger(__name__)


def queue_run_report(
    outbox: SlackSink,
    router: Router,
    result: RunResult,
    playbook: Playbook | None,
    *,
    key: str,
    opts: ReportOptions | None = None,
    secrets: Sequence[str] = (),
    buttons: FindingButtons | None = None,
    queues: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """A scheduled run's report through the durable outbox (nobody is waiting for it, so it must survive a Slack
    outage or a restart): one message per routed channel, deduplicated by `key` (the run's id). Returns the
    channels it was queued for."""
    try:
        plans = router.plan(result.findings, playbook)
    except NoChannelError as exc:
        log.error("report for %s not queued: %s", ", ".join(result.playbooks), exc)
        return []
    channels = []
    for plan in plans:
        part = result if plan.whole_report else dataclasses.replace(result, findings=plan.findings)
        message = render_run(part, opts=opts, secrets=secrets, buttons=buttons, queues=queues)
        outbox.enqueue(f"report:{key}:{plan.channel}", plan.channel, "post", message.as_payload())
        channels.append(plan.channel)
    return channels
