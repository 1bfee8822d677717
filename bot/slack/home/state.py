"""What the App Home shows, gathered as plain data: the fleet of each configured server (ClearML, cached), and
from the store the open incidents, the next scheduled runs and the last digest's trends.

ClearML is asked through `FleetCache`: one snapshot per server (auth, workers, queues: three calls) shared by
everyone who opens the Home tab within `ttl_s`, and one fetch in flight per server however many people open it
at once (they all await the same task). Everything runs on the work pool's event loop, so the cache needs no lock.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.clearml.errors import ClearMLError
from bot.config import DigestSettings, ServerSettings
from bot.engine.window import ReadWindow, server_identity
from bot.incidents.digest import TREND_METRICS, Trend, last_recorded
from bot.incidents.tracker import root_key
from bot.incidents.views import IncidentView
from bot.redact import redact
from bot.slack.commands.lookups import Meta, agent_thresholds, open_snapshot, worker_state
from bot.slack.home.messages import (
    DigestTrends,
    FleetState,
    IncidentLine,
    NextRun,
    PoolState,
    QueueLine,
)
from bot.store import parse_iso, utc

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.engine.playbook import Playbook
    from bot.slack.services import BotServices

log = logging.getLogger(__name__)

MAX_POOLS = 12
MAX_QUEUES = 10
NO_QUEUE = "(no queue)"


# -- ClearML: the fleet of one server ---------------------------------------------------------------------------


def _expected_pools(playbooks: list[Playbook]) -> list[tuple[str, int]]:
    """(pattern, min) from the first playbook that configures agents.missing."""
    for pb in playbooks:
        for entry in pb.checks:
            if entry.check == "agents.missing":
                out = []
                for e in (entry.params or {}).get("expected") or []:
                    if isinstance(e, dict) and e.get("pattern"):
                        out.append((str(e["pattern"]), int(e.get("min", 1))))
                return out
    return []


async def fetch_fleet(
    settings: Settings, server: ServerSettings, playbooks: list[Playbook], window: ReadWindow | None = None
) -> FleetState:
    """One snapshot: workers and queues (with their entries) of `server`, through the shared read `window` when
    given (then `fetched_at` is when its oldest data was fetched). Never raises for ClearML trouble: an unreachable
    server or refused keys are a state the Home tab shows."""
    meta = Meta()
    now = utc(None)
    secrets = server.secrets()
    try:
        async with open_snapshot(settings, server, meta, window=window) as snap:
            workers = await snap.workers()
            queues = await snap.queues()
            stale_after, dead_after = agent_thresholds(playbooks)
            states = [worker_state(snap, w, stale_after, dead_after) for w in workers]
            pools: dict[str, dict[str, int]] = {}
            for ws in states:
                for q in ws.queues or [NO_QUEUE]:
                    counts = pools.setdefault(q, {"alive": 0, "stale": 0, "dead": 0})
                    counts[ws.state] += 1
            pool_list = [PoolState(redact(name, secrets), **c) for name, c in pools.items()]
            for pattern, minimum in _expected_pools(playbooks):
                matching = [s for s in states if fnmatch.fnmatchcase(s.id, pattern)]
                alive = sum(1 for s in matching if s.state == "alive")
                stale = sum(1 for s in matching if s.state == "stale")
                dead = sum(1 for s in matching if s.state == "dead")
                pool_list.append(PoolState(pattern, alive, stale, dead, max(0, minimum - len(matching)), minimum))
            # the pools with trouble first, then the largest
            pool_list.sort(key=lambda p: (-(p.missing + p.dead + p.stale), -(p.alive + p.stale + p.dead), p.name))
            lines = [
                QueueLine(redact(q.name or q.id, secrets), len(q.entries), snap.age_s(q.oldest_added()),
                          snap.queue_link(q.id))
                for q in queues
            ]
            lines.sort(key=lambda q: (-q.length, -(q.oldest_wait_s or 0.0), q.name))
    except ClearMLError as exc:
        return FleetState(server=server.name, web_url=server.web_url, fetched_at=now, reachable=False,
                          error=redact(exc.describe(), secrets), api_calls=meta.api_calls)
    # after the snapshot closed: `meta` has its call count now, and the age of what the window served
    if meta.data_age_s is not None:
        now -= timedelta(seconds=meta.data_age_s)
    return FleetState(
        server=server.name, web_url=server.web_url, fetched_at=now, reachable=True,
        agents={s: sum(1 for w in states if w.state == s) for s in ("alive", "stale", "dead")},
        pools=tuple(pool_list[:MAX_POOLS]), queues=tuple(lines[:MAX_QUEUES]), queues_total=len(lines),
        waiting_total=sum(q.length for q in lines), api_calls=meta.api_calls,
    )


class FleetCache:
    """Each server's FleetState, through the process's shared read window (bot/engine/window.py) when one is given,
    so the Home tab keeps no cache of its own: concurrent opens share the one fetch in flight, and a state younger
    than `ttl_s` serves the next viewer. Its snapshot's reads go through the same window, so a Home view right after
    a command or a scheduled run reuses what they fetched. Without a window (tests), a private one of `ttl_s`."""

    def __init__(self, fetch: Any, *, ttl_s: float = 30.0, clock: Any = time.monotonic,
                 window: ReadWindow | None = None) -> None:
        self._fetch = fetch  # async (server) -> FleetState
        self.ttl_s = ttl_s
        self.window = window if window is not None else ReadWindow(ttl_s, clock=clock)
        self.fetches = 0  # how many times ClearML was asked (for tests and /metrics-minded readers)

    async def get(self, server: ServerSettings, *, max_age_s: float | None = None) -> FleetState:
        max_age = self.ttl_s if max_age_s is None else max_age_s
        if not self.window.enabled:  # read_window 0: nothing is shared, every look asks ClearML
            return await self._load(server)
        served = await self.window.read(_identity(server), HOME_KEY, lambda: self._load(server),
                                        not_before=self.window.clock() - max_age, keep=lambda st: st.reachable)
        state: FleetState = served.value
        return state

    async def _load(self, server: ServerSettings) -> FleetState:
        self.fetches += 1
        state: FleetState = await self._fetch(server)
        return state

    def invalidate(self) -> None:
        """Drop the Home tab's fleet states (the collections in the window stay: fresh ones serve the next look)."""
        self.window.clear(lambda key: key == HOME_KEY)


HOME_KEY = ("view", "home-fleet")


def _identity(server: ServerSettings) -> str:
    return server_identity(server) if isinstance(server, ServerSettings) else f"name:{server.name}"


# -- the store: incidents, schedules, the last digest -------------------------------------------------------------


PERMALINK_BUDGET_S = 0.8


def incident_lines(services: BotServices, incidents: list[IncidentView]) -> list[IncidentLine]:
    """Each open incident with its thread's permalink (chat.getPermalink, cached by the outbox); links not cached yet
    are asked from Slack within a budget, the rest come with the next look at the tab."""
    out = []
    deadline = time.monotonic() + PERMALINK_BUDGET_S
    for v in incidents:
        ref = services.outbox.message_ref(root_key(v.id))
        thread = services.outbox.permalink(*ref, fetch=time.monotonic() < deadline) if ref else None
        out.append(IncidentLine(id=v.id, server=v.server, severity=v.severity, title=v.title, opened_at=v.opened_at,
                                ack_by=v.ack_by, snoozed_until=v.snoozed_until, thread=thread))
    return out


def next_runs(services: BotServices, now: datetime, limit: int = 5) -> list[NextRun]:
    """From the running scheduler when there is one (serve), else computed from the playbooks and the store."""
    from bot.schedule import build_jobs
    from bot.schedule import next_runs as compute

    try:
        if services.scheduler is not None:
            infos = services.scheduler.next_runs(now)
        else:

            jobs = build_jobs(services.playbooks(), DigestSettings.from_settings(services.settings))
            infos = compute(jobs, services.store, now)
    except Exception as exc:  # a broken digest setting must not blank the Home tab
        log.info("no schedule list for the Home tab: %s", exc)
        return []
    return [NextRun(i.name, i.kind, i.schedule, i.next_run, i.last_status) for i in infos[:limit]]


def last_digest(services: BotServices) -> DigestTrends | None:
    """The last digest's trends: its medians against the digest before it (as the digest message said them)."""
    recorded = last_recorded(services.store)
    if recorded is None:
        return None
    last, before = recorded
    current = {k: float(v) for k, v in json.loads(last["metrics"] or "{}").items()}
    previous = {k: float(v) for k, v in json.loads(before["metrics"] or "{}").items()} if before else {}
    trends = tuple(Trend(metric=name, label=label, current=current.get(name), previous=previous.get(name),
                         better=better, unit=unit)
                   for name, label, better, unit in TREND_METRICS if name in current)
    headline = str(json.loads(last["summary"] or "{}").get("headline") or "")
    at = parse_iso(last["at"])
    return DigestTrends(at=at, headline=headline, trends=trends) if at else None
