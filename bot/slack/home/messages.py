"""The App Home tab as Block Kit (pure: `HomeData` in, a `views.publish` view out; no Slack, no ClearML).

Top to bottom: the result of the viewer's last button (only they see it: a Home view is per user), then per
configured server a header with the overall state, agents per pool, queues with their length and oldest wait;
open incidents with their buttons and a link to the thread; the next scheduled runs; the last digest's trends;
buttons to run `status` or a playbook. Within Slack's limits: at most 100 blocks (checked here, since slack_sdk
does not count them), every text clipped by the shared helpers, everything from ClearML escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    PlainTextObject,
)
from slack_sdk.models.views import View

from bot.durations import format_duration
from bot.engine.findings import SEVERITY_RANK
from bot.incidents.digest import Trend
from bot.slack.actions.messages import mrkdwn
from bot.slack.messages.common import (
    SEVERITY_EMOJI,
    clip,
    context,
    divider,
    header,
    link,
    mentioned_ids,
    plural,
    safe,
    section,
)

# -- what the Home view shows (built by bot/slack/home/state.py from ClearML and the store) ---------------


@dataclass(frozen=True)
class PoolState:
    """The agents serving one queue (or matching an `agents.missing` pattern): how many are alive, stale, dead
    (silent past dead_after: still registered), and missing (an expected minimum not registered at all)."""

    name: str
    alive: int = 0
    stale: int = 0
    dead: int = 0
    missing: int = 0
    expected: int | None = None  # the agents.missing minimum, for a pattern pool


@dataclass(frozen=True)
class QueueLine:
    name: str
    length: int
    oldest_wait_s: float | None
    link: str


@dataclass(frozen=True)
class FleetState:
    server: str
    web_url: str
    fetched_at: datetime
    reachable: bool
    error: str = ""
    agents: dict[str, int] = field(default_factory=dict)  # alive / stale / dead
    pools: tuple[PoolState, ...] = ()
    queues: tuple[QueueLine, ...] = ()  # the longest first, capped at MAX_QUEUES
    queues_total: int = 0
    waiting_total: int = 0
    api_calls: int = 0


@dataclass(frozen=True)
class IncidentLine:
    id: int
    server: str
    severity: str
    title: str
    opened_at: datetime
    ack_by: str | None
    snoozed_until: datetime | None
    thread: str | None  # a link to the incident's thread, once its root message is posted


@dataclass(frozen=True)
class NextRun:
    name: str
    kind: str
    schedule: str
    next_run: datetime | None
    last_status: str | None


@dataclass(frozen=True)
class DigestTrends:
    at: datetime
    headline: str
    trends: tuple[Trend, ...]


@dataclass(frozen=True)
class HomeData:
    now: datetime
    fleets: tuple[FleetState, ...]
    incidents: tuple[IncidentLine, ...]
    next_runs: tuple[NextRun, ...]
    digest: DigestTrends | None
    playbooks: tuple[str, ...]  # names offered as "run" buttons
    command: str = "/clearml"


MAX_VIEW_BLOCKS = 100  # Slack: a Home tab holds at most 100 blocks
MAX_RESULT_BLOCKS = 30  # the viewer's last result: the rest of the tab must still fit
MAX_INCIDENTS = 12  # two blocks each (text and buttons)
MAX_PLAYBOOK_BUTTONS = 8

HOME_STATUS = "home_status"
HOME_RUN = "home_run"
HOME_REFRESH = "home_refresh"
HOME_DISMISS = "home_dismiss"
HOME_INC_ACK = "home_inc_ack"
HOME_INC_SNOOZE = "home_inc_snooze_1h"
HOME_INC_RESOLVE = "home_inc_resolve"
HOME_ACTIONS = (HOME_STATUS, HOME_RUN, HOME_REFRESH, HOME_DISMISS, HOME_INC_ACK, HOME_INC_SNOOZE, HOME_INC_RESOLVE)

_STATE_ICON = {"critical": "🔴", "error": "🟣", "warning": "🟠", "info": "🟢", "ok": "🟢"}
_STATE_WORD = {"critical": "critical", "error": "checks failing", "warning": "needs attention", "info": "ok",
               "ok": "all good"}


@dataclass
class HomeResult:
    """What the viewer's last Home button gave: shown at the top of their own tab only."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    at: datetime | None = None
    running: bool = False


def fleet_state(fleet: FleetState, incidents: Sequence[IncidentLine]) -> str:
    """The server's overall state: critical when unreachable, else the worst open incident, else a warning for
    agents that are silent or missing, else ok."""
    if not fleet.reachable:
        return "critical"
    worst = max((i.severity for i in incidents if i.server == fleet.server), key=lambda s: SEVERITY_RANK.get(s, 0),
                default="ok")
    if worst != "ok":
        return worst
    if fleet.agents.get("stale") or fleet.agents.get("dead") or any(p.missing for p in fleet.pools):
        return "warning"
    return "ok"


def _ago(dt: datetime | None, now: datetime) -> str:
    return "—" if dt is None else format_duration(max(0.0, (now - dt).total_seconds()))


def _pool_line(p: PoolState) -> str:
    parts = [f"{p.alive} alive"]
    if p.stale:
        parts.append(f"{p.stale} stale")
    if p.dead:
        parts.append(f"{p.dead} dead")
    if p.expected is not None:
        parts.append(f"{p.missing} missing of {p.expected} expected" if p.missing else f"{p.expected} expected")
    icon = ":red_circle:" if p.missing or p.dead else ":large_yellow_circle:" if p.stale else ":large_green_circle:"
    return f"{icon} *{safe(p.name, limit=40)}* {' · '.join(parts)}"


def _fleet_blocks(fleet: FleetState, data: HomeData) -> list[Block]:
    state = fleet_state(fleet, data.incidents)
    blocks: list[Block] = [header(f"{_STATE_ICON[state]} {fleet.server}: {_STATE_WORD[state]}")]
    if not fleet.reachable:
        blocks.append(section(f":satellite_antenna: The ClearML server did not answer: {safe(fleet.error, limit=1500)}"
                              "\n→ Check that the API server is up and that the bot's keys are valid "
                              "(`clearml-chatops doctor`)."))
        return blocks
    a = fleet.agents
    blocks.append(section(
        f":robot_face: *Agents* {a.get('alive', 0)} alive · {a.get('stale', 0)} stale · {a.get('dead', 0)} dead   "
        f":inbox_tray: *Queues* {plural(fleet.waiting_total, 'task')} waiting in {plural(fleet.queues_total, 'queue')}"
    ))
    if fleet.pools:
        blocks.append(section("*Agents per pool* (the agents serving a queue)",
                              fields=[_pool_line(p) for p in fleet.pools[:10]]))
    busy = [q for q in fleet.queues if q.length]
    if busy:
        lines = [
            f"{link(q.link, safe(q.name, limit=40))}: {plural(q.length, 'task')} waiting"
            + (f", oldest {format_duration(q.oldest_wait_s)}" if q.oldest_wait_s is not None else "")
            for q in busy
        ]
        more = fleet.queues_total - len(fleet.queues)
        blocks.append(section("*Queues with waiting tasks*\n" + "\n".join(lines)
                              + (f"\n_…{more} more queues not shown_" if more > 0 else "")))
    blocks.append(context(f"asked {format_duration((data.now - fleet.fetched_at).total_seconds())} ago",
                          plural(fleet.api_calls, "API call"),
                          link(fleet.web_url, "workers and queues in ClearML") if fleet.web_url else ""))
    return blocks


def _incident_blocks(data: HomeData) -> list[Block]:
    now = data.now
    shown = data.incidents[:MAX_INCIDENTS]
    blocks: list[Block] = [header(f"Open incidents ({len(data.incidents)})")]
    if not shown:
        return [*blocks, section(":white_check_mark: No open incidents.")]
    for i in shown:
        flags = []
        if i.ack_by:
            flags.append(f":eyes: acknowledged by {mrkdwn(clip(i.ack_by, 80), mentioned_ids(i.ack_by))}")
        else:
            flags.append("not acknowledged")
        if i.snoozed_until and i.snoozed_until > now:
            flags.append(f":zzz: snoozed for {_ago(now, i.snoozed_until)}")
        thread = link(i.thread, "thread") if i.thread else "thread not posted yet"
        blocks.append(section(
            f"{SEVERITY_EMOJI.get(i.severity, '')} *#{i.id}* {safe(i.title, limit=300)}\n"
            f"{i.severity} · {safe(i.server, limit=40)} · open {_ago(i.opened_at, now)} · {' · '.join(flags)} · "
            f"{thread}"
        ))
        value = str(i.id)
        buttons = []
        if not i.ack_by:
            buttons.append(ButtonElement(text=PlainTextObject(text="Acknowledge"), action_id=HOME_INC_ACK,
                                         value=value, style="primary"))
        buttons.append(ButtonElement(text=PlainTextObject(text="Snooze 1h"), action_id=HOME_INC_SNOOZE, value=value))
        buttons.append(ButtonElement(
            text=PlainTextObject(text="Resolve"), action_id=HOME_INC_RESOLVE, value=value,
            confirm=ConfirmObject(title="Resolve this incident?",
                                  text="It is marked resolved now. If the problem still fails after the grace "
                                       "period, the incident reopens in its thread.",
                                  confirm="Resolve", deny="Cancel"),
        ))
        blocks.append(ActionsBlock(block_id=f"home_inc{i.id}", elements=buttons))
    if len(data.incidents) > len(shown):
        blocks.append(context(f"…and {len(data.incidents) - len(shown)} more: `{data.command} incidents`"))
    return blocks


def _schedule_and_trends(data: HomeData) -> list[Block]:
    blocks: list[Block] = []
    if data.next_runs:
        lines = []
        for r in data.next_runs:
            when = (f"in {format_duration((r.next_run - data.now).total_seconds())} "
                    f"({r.next_run:%H:%M} UTC)") if r.next_run else "never"
            last = f", last run {r.last_status}" if r.last_status else ""
            lines.append(f"• *{safe(r.name, limit=60)}* ({r.kind}, `{safe(r.schedule, limit=40)}`): {when}{last}")
        blocks.append(section("*Next scheduled runs*\n" + "\n".join(lines)))
    if data.digest is not None:
        d = data.digest
        verdicts = {"better": ":white_check_mark: better", "worse": ":warning: worse", "same": "no change",
                    "new": "first digest with it"}
        lines = [f"*Last digest* ({d.at:%Y-%m-%d %H:%M} UTC): {safe(d.headline, limit=200)}"]
        for t in d.trends:
            lines.append(f"• {t.label}: {t.fmt(t.current)} (before {t.fmt(t.previous)}, {verdicts[t.verdict]})")
        blocks.append(section("\n".join(lines)))
    return blocks


def _buttons(data: HomeData) -> list[Block]:
    status = [ButtonElement(text=PlainTextObject(text=clip(f"Status of {f.server}", 75)), action_id=HOME_STATUS,
                            value=f.server) for f in data.fleets[:5]]
    refresh = ButtonElement(text=PlainTextObject(text="Refresh"), action_id=HOME_REFRESH, value="refresh")
    blocks: list[Block] = [ActionsBlock(block_id="home_buttons", elements=[*status, refresh])]
    runs = [ButtonElement(text=PlainTextObject(text=clip(f"Run {name}", 75)), action_id=HOME_RUN, value=name)
            for name in data.playbooks[:MAX_PLAYBOOK_BUTTONS]]
    if runs:
        blocks.append(ActionsBlock(block_id="home_playbooks", elements=runs))
    return blocks


def _result_blocks(result: HomeResult) -> list[Block]:
    title = f":hourglass_flowing_sand: {result.title}…" if result.running else result.title
    blocks: list[Block] = [section(f"*Your last request* (only you see this): {title}")]
    body = list(result.blocks)
    if len(body) > MAX_RESULT_BLOCKS - 2:
        body = [*body[: MAX_RESULT_BLOCKS - 3], context("…cut to fit the Home tab: the slash command shows it all")]
    blocks.extend(body)
    if not result.running:
        when = f"at {result.at:%H:%M:%S} UTC" if result.at else ""
        blocks.append(ActionsBlock(block_id="home_result", elements=[
            ButtonElement(text=PlainTextObject(text="Dismiss"), action_id=HOME_DISMISS, value="dismiss")]))
        if when:
            blocks.insert(1, context(when))
    return blocks


def render_home(data: HomeData, result: HomeResult | None = None) -> dict[str, Any]:
    """The Home view for one user (a dict for views.publish; slack_sdk validates each block here)."""
    blocks: list[Block] = []
    if result is not None:
        blocks.extend(_result_blocks(result))
        blocks.append(divider())
    for fleet in data.fleets:
        blocks.extend(_fleet_blocks(fleet, data))
    if not data.fleets:
        blocks.append(section("No ClearML server is configured: set `servers:` in the bot's config file "
                              "(or CLEARML_API_HOST) and restart the bot."))
    blocks.append(divider())
    tail = _schedule_and_trends(data) + _buttons(data)
    incidents = _incident_blocks(data)
    room = MAX_VIEW_BLOCKS - len(blocks) - len(tail) - 1
    if len(incidents) > room:  # keep whole incidents (text and buttons) and say how many are left out
        keep = max(1, room - 1)
        incidents = [*incidents[:keep], context(f"…more open incidents: `{data.command} incidents`")]
    blocks.extend(incidents)
    blocks.append(divider())
    blocks.extend(tail)
    blocks.append(context(f"Updated {data.now:%Y-%m-%d %H:%M:%S} UTC · opens within a short while share one "
                          f"look at ClearML · `{data.command} help` for every command"))
    if len(blocks) > MAX_VIEW_BLOCKS:
        blocks = [*blocks[: MAX_VIEW_BLOCKS - 1], context("…cut to fit the Home tab")]
    return View(type="home", blocks=blocks).to_dict()
