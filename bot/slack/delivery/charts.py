"""Charts into Slack threads, after the text: the digest's trends as images in the digest's thread, and a queue's
backlog over the last hours in the thread of an incident about that queue.

Called from `serve`'s scheduler thread (bot/slack/background.py) after the digest or the run has been queued:
never on the ack path nor on the work pool's event loop (rendering takes a few hundred milliseconds of CPU).
Uploads go through the durable outbox (kind `file`), so retries, Retry-After, ordering after the root message and
redaction apply as to every other write.

Degrades to text: without matplotlib (`pip install 'clearml-chatops[charts]'`) or without the files:write scope
nothing is uploaded, and the digest's text trends stand alone (logged once).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.charts import render
from bot.charts.series import backlog_chart, digest_charts
from bot.incidents.pipeline import digest_key
from bot.incidents.tracker import root_key
from bot.incidents.views import IncidentView
from bot.store import utc

if TYPE_CHECKING:
    from bot.incidents.digest import Digest
    from bot.slack.services import BotServices

log = logging.getLogger(__name__)

BACKLOG_CHECKS = ("queues.backlog", "queues.wait_time")
BACKLOG_WINDOW_S = 6 * 3600.0  # the incident chart shows the queue over the last hours
MIN_POINTS = 3  # fewer runs than this are no trend: the chart waits for more runs
_warned: set[str] = set()


def charts_possible(services: BotServices) -> bool:
    """matplotlib importable and the token allowed to upload files (each "no" logged once per process)."""
    if not render.available():
        _once("mpl", "charts are off: matplotlib is not installed (pip install 'clearml-chatops[charts]'); "
                     "digests keep their text trends")
        return False
    if not services.outbox.can_upload_files():
        _once("scope", "charts are off: the bot token lacks the files:write scope (add it from manifest.yml and "
                       "reinstall the app); digests go out without images")
        return False
    return True


def _once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def post_digest_charts(services: BotServices, digest: Digest) -> int:
    """Queue the digest's charts as replies in its thread; returns how many."""
    if digest.channel is None or not charts_possible(services):
        return 0
    root = digest_key(digest.channel, digest.period_end)
    if services.outbox.durable is None or services.outbox.durable.get(root) is None:
        return 0  # the digest itself was not queued (no channel): nothing to answer
    charts = render.render(digest_charts(services.store, digest.period_start, digest.period_end,
                                         secrets=services.secrets()))
    for chart in charts:
        services.outbox.enqueue_file(f"{root}:chart:{chart.spec.name}", digest.channel, chart, root_key=root)
    return len(charts)


def backlog_queue(view: IncidentView) -> tuple[str, str] | None:
    """(server, queue name) when a queue backlog explains the incident: its leading finding, or else one of its
    members, is a backlog or wait-time finding about a queue."""
    members = [view.primary, *view.members]
    for m in members:
        if m.check in BACKLOG_CHECKS and m.subject.kind == "queue" and m.state != "moved":
            return view.server, m.subject.name or m.subject.id
    return None


def post_incident_charts(services: BotServices, incidents: list[IncidentView], now: datetime | None = None) -> int:
    """For each open incident a queue backlog explains: once enough runs show the trend, its queue's chart into
    the incident thread (once per incident). Returns how many were queued."""
    durable = services.outbox.durable
    targets = [(v, q) for v in incidents if v.is_open and v.channel and (q := backlog_queue(v)) is not None]
    if durable is None or not targets or not charts_possible(services):
        return 0
    now = utc(now)
    queued = 0
    for view, (server, queue) in targets:
        key = f"{root_key(view.id)}:chart:backlog"
        if durable.get(key) is not None:
            continue
        spec = backlog_chart(services.store, queue, now - timedelta(seconds=BACKLOG_WINDOW_S), now, server=server,
                             secrets=services.secrets())
        if sum(len(s.points) for s in spec.panels[0].lines) < MIN_POINTS:
            continue
        for chart in render.render([spec]):
            assert view.channel is not None
            if services.outbox.enqueue_file(key, view.channel, chart, root_key=root_key(view.id)):
                queued += 1
    return queued
