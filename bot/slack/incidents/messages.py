"""Incidents as Block Kit: the root message of each incident's thread, its thread replies, the digest, and the
answers of `/clearml incidents`, `silences` and `schedules`.

`SlackIncidentRenderer` implements the pipeline's renderer protocol (bot/incidents/pipeline.py): `root`, `reply`,
`digest`, each returning `Rendered(text, blocks)`. It never calls ClearML or Slack; what it needs beyond the
incident (signed action buttons, the server's queues for the queue select, the actions already taken on the
incident's subjects) comes from injected callables.

A renderer bug must not stop incidents (the pipeline renders inside its transaction, and a message Slack would
refuse is a message lost): every message is checked against Block Kit's limits here, and falls back to plain text
when it does not fit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject, PlainTextObject

from bot.durations import format_duration
from bot.engine.findings import SEVERITY_RANK
from bot.incidents.pipeline import Rendered, TextRenderer
from bot.slack.actions.messages import ActionButton, actions_block, mrkdwn
from bot.slack.messages.common import (
    MAX_BLOCKS,
    MAX_FALLBACK_TEXT,
    MAX_MESSAGE_TEXT,
    SEVERITY_EMOJI,
    SlackMessage,
    block_text_length,
    chunk_lines,
    clip,
    code,
    context,
    fallback_text,
    fit_lines,
    header,
    link,
    mentioned_ids,
    plural,
    pre,
    safe,
    section,
)
from bot.slack.messages.report import key_evidence

if TYPE_CHECKING:
    from bot.engine.findings import Finding
    from bot.incidents.digest import Digest, DigestIncident
    from bot.incidents.silences import Silence
    from bot.incidents.views import IncidentView, MemberView, Notification
    from bot.schedule import ScheduleInfo

log = logging.getLogger(__name__)

# action_ids of the incident buttons (listener: bot/slack/incidents/listeners.py); the value is the incident id
ACK_ACTION = "inc_ack"
SNOOZE_ACTIONS: dict[str, float] = {"inc_snooze_1h": 3600.0, "inc_snooze_4h": 4 * 3600.0, "inc_snooze_24h": 86400.0}
RESOLVE_ACTION = "inc_resolve"
MAX_CONSEQUENCES = 12
MAX_ACTION_BUTTONS = 10
ICON = {"critical": "🔴", "error": "🟣", "warning": "🟠", "info": "🔵", "ok": "🟢"}

FindingButtons = Callable[["Finding", str], Sequence[ActionButton]]  # (finding, server name)
Queues = Callable[[str], Sequence[tuple[str, str]]]  # server name -> (queue id, name)


@dataclass(frozen=True)
class TakenAction:
    """An action done on one of the incident's subjects (from the action core's idempotency table)."""

    action: str
    subject: str
    line: str  # "Requeued by <@U1> at 14:02 UTC → <url|task>"


ActionsTaken = Callable[["IncidentView"], Sequence[TakenAction]]


def _when(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt else "—"


def _hhmm(dt: datetime | None) -> str:
    return dt.strftime("%H:%M UTC") if dt else "—"


def member_line(m: MemberView, *, secrets: Sequence[str] = ()) -> str:
    state = "" if m.state == "firing" else f" _({m.state})_"
    if m.gone:
        state = f" _(gone from the server since {_hhmm(m.gone_at)})_"
    return (f"{SEVERITY_EMOJI.get(m.severity, '')} *{safe(m.label, secrets, 100)}*: "
            f"{safe(m.finding.title, secrets, 200)} ({code(m.check, 60)}){state}")


def evidence_line(f: Finding, *, secrets: Sequence[str] = (), items: int = 5) -> str:
    return " · ".join(f"{safe(k, secrets, 40)}: {safe(v, secrets, 100)}" for k, v in key_evidence(f, items))


class SlackIncidentRenderer:
    def __init__(
        self,
        *,
        buttons: FindingButtons | None = None,
        queues: Queues | None = None,
        actions_taken: ActionsTaken | None = None,
        secrets: Callable[[], Sequence[str]] | None = None,
        command: str = "/clearml",
    ) -> None:
        self.buttons = buttons
        self.queues = queues
        self.actions_taken = actions_taken
        self.secrets = secrets or (lambda: ())
        self.command = command
        self._text = TextRenderer()  # the plain-text fallback for anything that does not fit

    # -- the root message ---------------------------------------------------------------------------------------
    def root(self, incident: IncidentView, now: datetime) -> Rendered:
        try:
            return self._checked(self._root(incident, now))
        except Exception:  # never let a rendering bug block the incident (the pipeline renders in its transaction)
            log.exception("rendering incident #%s failed: sending plain text", incident.id)
            return self._plain(self._text.root(incident, now))

    def _root(self, v: IncidentView, now: datetime) -> Rendered:
        secrets = list(self.secrets())
        primary = v.primary
        taken = list(self.actions_taken(v)) if self.actions_taken is not None else []
        if v.is_open:
            head = f"{ICON.get(v.severity, '')} {v.severity.upper()} · {v.title}"
            text = f"{ICON.get(v.severity, '')} [{v.severity.upper()}] {v.title}"
        else:
            head = f"✅ Resolved · {v.title}"
            text = f"✅ [RESOLVED] {v.title}"
        blocks: list[Block] = [header(head)]
        if not v.is_open:
            who = f" by {v.resolved_by}" if v.resolved_by and v.resolved_by != "auto" else ""
            blocks.append(section(
                f":white_check_mark: Resolved{mrkdwn(who, _people(v))} at {_when(v.resolved_at)} after "
                f"{format_duration(v.duration_s(now))} (was {v.severity}, seen {v.count}×)."
            ))
        if v.refused_channel and v.is_open:
            blocks.append(context(
                f":warning: Posted here because I cannot post in {safe(v.refused_channel)} "
                f"(`{safe(v.refused_error or 'refused')}`): invite me there (`/invite @clearml-chatops`) and this "
                "incident moves there by itself."
            ))
        if v.storm:
            return self._storm_root(v, now, blocks, text, secrets)
        # the likely cause, with its evidence
        if v.cause_inferred:
            cause = (f"*Likely cause:* {v.anchor.kind} *{safe(v.anchor.name or v.anchor.id, secrets, 100)}* "
                     "(no finding of its own: it is gone or not checked)")
        else:
            cause = f"*Likely cause:* {member_line(primary, secrets=secrets)}"
        lines = [cause]
        ev = evidence_line(primary.finding, secrets=secrets)
        if ev:
            lines.append(ev)
        if primary.finding.detail and v.is_open:
            lines.append(f"_{safe(primary.finding.detail, secrets, 500)}_")
        blocks.append(section("\n".join(lines)))
        # what it caused
        consequences = [m for m in v.consequences if m is not primary]
        if consequences or v.moved:
            out = [f"*Consequences ({len(consequences)}):*"] if consequences else []
            ordered = sorted(consequences, key=lambda m: (m.state != "firing", -SEVERITY_RANK[m.severity]))
            out += [f"• {member_line(m, secrets=secrets)}" for m in ordered[:MAX_CONSEQUENCES]]
            if len(ordered) > MAX_CONSEQUENCES:
                out.append(f"_…and {len(ordered) - MAX_CONSEQUENCES} more (in the thread)_")
            out += [f"• {safe(m.label, secrets, 100)}: moved to incident #{m.moved_to}" for m in v.moved[:5]]
            blocks.extend(section(t) for t in chunk_lines(fit_lines(out, 4000, "_…and {n} more (in the thread)_")))
        if v.is_open and v.gone:
            names = ", ".join(safe(m.label, secrets, 80) for m in v.gone[:5])
            blocks.append(section(
                f":ghost: *Gone from the server:* {names}. That is not a recovery: this incident stays open until a "
                "check sees it healthy again or someone resolves it."
            ))
        if v.is_open and primary.finding.remediation:
            blocks.append(section(f":wrench: {safe(primary.finding.remediation, secrets, 1500)}"))
        if taken:
            blocks.append(section("*Actions taken*\n" + "\n".join(f"• {t.line}" for t in taken[:10])))
        blocks.append(context(*self._status(v, now)))
        if v.is_open:
            blocks.append(self._incident_buttons(v))
            buttons = self._action_buttons(v, {(t.action, t.subject) for t in taken})
            block = actions_block(buttons, block_id=f"inc{v.id}:acts",
                                  queues=self.queues(v.server) if self.queues is not None else ())
            if block is not None:
                blocks.append(block)
        links = [link(u, f"link {i}") for i, u in enumerate(v.links[:3], 1)]
        if links:
            blocks.append(context("Links: " + " · ".join(links)))
        return Rendered(text=clip(text, MAX_FALLBACK_TEXT), blocks=blocks)

    def _storm_root(self, v: IncidentView, now: datetime, blocks: list[Block], text: str,
                    secrets: list[str]) -> Rendered:
        """A storm: many problems that began in one run, listed (worst first) in one message, not one root each."""
        live = sorted((m for m in v.members if m.live),
                      key=lambda m: (m.state != "firing", -SEVERITY_RANK[m.severity], m.check, m.label))
        checks: dict[str, int] = {}
        for m in live:
            checks[m.check] = checks.get(m.check, 0) + 1
        summary = ", ".join(f"{code(c, 60)} ×{n}" for c, n in sorted(checks.items(), key=lambda kv: -kv[1])[:8])
        blocks.append(section(
            f"*{len(live)} problems began in the same run* ({summary}). So many at once usually share one cause: "
            "the ClearML API server or its database, the network, a credentials change, or the cluster the agents run "
            "on. Look there first; each problem is listed below and in the thread, and resolves here when its check "
            "passes again."
        ))
        lines = [f"• {member_line(m, secrets=secrets)}" for m in live]
        shown = fit_lines(lines[:MAX_CONSEQUENCES * 2], 2800, "_…and {n} more (in the thread)_")
        if len(lines) > MAX_CONSEQUENCES * 2 and not shown[-1].startswith("_…"):
            shown.append(f"_…and {len(lines) - len(shown)} more (in the thread)_")
        blocks.append(section("\n".join(shown)))
        blocks.append(context(*self._status(v, now)))
        if v.is_open:
            blocks.append(self._incident_buttons(v))
        return Rendered(text=clip(text, MAX_FALLBACK_TEXT), blocks=blocks)

    def _status(self, v: IncidentView, now: datetime) -> list[str]:
        parts = [f"Incident #{v.id} on *{safe(v.server)}*"]
        if v.is_open:
            parts.append(f"open {format_duration(v.duration_s(now))} (since {_when(v.opened_at)})")
        parts.append(f"seen {v.count}× · last {_hhmm(v.last_seen)}")
        if v.reopen_count:
            parts.append(f"reopened {plural(v.reopen_count, 'time')}")
        if v.ack_by:
            parts.append(f":eyes: acknowledged by {mrkdwn(v.ack_by, _people(v))} at {_hhmm(v.ack_at)}")
        if v.is_open and v.snoozed(now):
            parts.append(f":zzz: snoozed by {mrkdwn(v.snoozed_by or '?', _people(v))} until {_when(v.snoozed_until)}")
        if v.is_open and v.firing and all(m.silenced for m in v.firing):
            parts.append(f":mute: silenced (`{self.command} silences`)")
        return parts

    def _incident_buttons(self, v: IncidentView) -> ActionsBlock:
        value = str(v.id)
        elements = [
            ButtonElement(text=PlainTextObject(text="Acknowledge"), action_id=ACK_ACTION, value=value,
                          style=None if v.ack_by else "primary"),
            *(ButtonElement(text=PlainTextObject(text=f"Snooze {format_duration(secs)}"), action_id=action_id,
                            value=value) for action_id, secs in SNOOZE_ACTIONS.items()),
            ButtonElement(
                text=PlainTextObject(text="Resolve"), action_id=RESOLVE_ACTION, value=value,
                confirm=ConfirmObject(
                    title="Resolve this incident?",
                    text="It is marked resolved now. If the problem still fails after the grace period, the incident "
                         "reopens in this thread.",
                    confirm="Resolve", deny="Cancel",
                ),
            ),
        ]
        return ActionsBlock(block_id=f"inc{v.id}:ops", elements=elements)

    def _action_buttons(self, v: IncidentView, done: set[tuple[str, str]]) -> list[ActionButton]:
        if self.buttons is None:
            return []
        out: list[ActionButton] = []
        seen: set[tuple[str, str]] = set()
        members = [v.primary, *[m for m in v.members if m is not v.primary]]
        for m in members:
            if m.state not in ("firing", "cleared"):
                continue
            for b in self.buttons(m.finding, v.server):
                key = (b.action, b.subject)
                if key in done or key in seen:
                    continue
                seen.add(key)
                out.append(b)
        return out[:MAX_ACTION_BUTTONS]

    # -- thread replies -----------------------------------------------------------------------------------------
    def reply(self, note: Notification, now: datetime) -> Rendered | None:
        try:
            return self._checked_optional(self._reply(note, now))
        except Exception:
            log.exception("rendering a reply of incident #%s failed: sending plain text", note.incident.id)
            plain = self._text.reply(note, now)
            return self._plain(plain) if plain is not None else None

    def _reply(self, note: Notification, now: datetime) -> Rendered | None:
        secrets = list(self.secrets())
        v = note.incident
        if note.kind == "open":
            lines = [mrkdwn(line, _people(note.incident)) for line in note.lines]
            lines.append(f"*Opened* {_when(v.opened_at)}. What the checks found:")
            for m in v.members:
                if m.state == "moved":
                    continue
                lines.append(member_line(m, secrets=secrets))
                ev = evidence_line(m.finding, secrets=secrets, items=6)
                if ev:
                    lines.append(f"    {ev}")
                if m.finding.detail:
                    lines.append(f"    _{safe(m.finding.detail, secrets, 600)}_")
                for url in m.finding.links[:2]:
                    lines.append(f"    {link(url, 'open in ClearML')}")
            more = f"_…and {{n}} more: `{self.command} incidents` and the root message list them_"
            blocks: list[Block] = [section(t) for t in chunk_lines(fit_lines(lines, MAX_MESSAGE_TEXT - 600, more))]
            if len(blocks) > MAX_BLOCKS - 1:
                blocks = [*blocks[: MAX_BLOCKS - 2], section("_…more in the next update._")]
            blocks.append(context(f"`{self.command} incidents` lists every open incident; "
                                  f"`{self.command} silence <pattern> <duration>` mutes one."))
            return Rendered(text=clip(f"Incident #{v.id} opened: {v.title}", MAX_FALLBACK_TEXT), blocks=blocks)
        if not note.lines:
            return None
        lines = fit_lines([mrkdwn(line, _people(note.incident)) for line in note.lines], MAX_MESSAGE_TEXT - 200)
        blocks = [section(t) for t in chunk_lines(lines)][:MAX_BLOCKS]
        return Rendered(text=clip(note.lines[-1], MAX_FALLBACK_TEXT), blocks=blocks)

    # -- the digest ---------------------------------------------------------------------------------------------
    def digest(self, digest: Digest) -> Rendered:
        try:
            return self._checked(self._digest(digest))
        except Exception:
            log.exception("rendering the digest failed: sending plain text")
            return self._plain(self._text.digest(digest))

    def _digest(self, d: Digest) -> Rendered:
        blocks: list[Block] = [header(f"{ICON.get(d.state, '')} Digest: {d.headline}")]
        since = f"since the last digest ({_when(d.previous_at)})" if d.previous_at else f"since {_when(d.period_start)}"
        blocks.append(section(
            f"*{d.runs}* scheduled and requested runs {since}, {d.problem_runs} of them found problems."
        ))
        if d.counts:
            fields = []
            for area, sevs in list(d.counts.items())[:10]:
                counts = " · ".join(f"{SEVERITY_EMOJI.get(s, '')} {n} {s}"
                                    for s, n in sorted(sevs.items(), key=lambda kv: -SEVERITY_RANK.get(kv[0], 0)))
                fields.append(f"*{safe(area)}*\n{counts}")
            blocks.append(section("*Problems seen, by area* (distinct findings)", fields=fields))
        for title, items, more in (("New", d.new, d.more.get("new", 0)),
                                   ("Ongoing", d.ongoing, d.more.get("ongoing", 0)),
                                   ("Resolved", d.resolved, d.more.get("resolved", 0))):
            if not items and not more:
                continue
            lines = [f"*{title} ({len(items) + more})*"] + [self._digest_item(i) for i in items]
            if more:
                lines.append(f"_…and {more} more: `{self.command} incidents`_")
            blocks.extend(section(t) for t in chunk_lines(lines)[:4])
        if d.top_offenders:
            lines = ["*Top offenders*"] + [
                f"• {o.subject.kind} *{safe(o.subject.name or o.subject.id, limit=80)}*: {plural(o.runs, 'run')} "
                f"with problems ({', '.join(code(c, 40) for c in o.checks[:3])})"
                for o in d.top_offenders
            ]
            blocks.append(section("\n".join(lines)))
        if d.trends:
            # the arrow is where the number went; the word says whether that is good
            arrows = {"up": ":arrow_upper_right: ", "down": ":arrow_lower_right: ", "flat": ":left_right_arrow: "}
            lines = ["*Trends* (medians, against the previous digest)"] + [
                f"• {t.label}: *{t.fmt(t.current)}* (before {t.fmt(t.previous)}) {arrows.get(t.direction, '')}"
                f"{t.verdict}"
                for t in d.trends
            ]
            blocks.append(section("\n".join(lines)))
        blocks.extend(section(f":information_source: {safe(n, limit=500)}") for n in d.notes[:3])
        if len(blocks) > MAX_BLOCKS - 1:
            blocks = blocks[: MAX_BLOCKS - 1]
        blocks.append(context(f"{_when(d.period_start)} → {_when(d.period_end)}",
                              f"`{self.command} incidents` for the live list"))
        return Rendered(text=clip(f"Digest: {d.headline}", MAX_FALLBACK_TEXT), blocks=blocks)

    @staticmethod
    def _digest_item(i: DigestIncident) -> str:
        title = safe(i.title, limit=150)
        label = link(i.thread_url, f"#{i.id} {title}") if i.thread_url else f"#{i.id} {title}"
        extra = [format_duration(i.duration_s)]
        if i.count > 1:
            extra.append(f"seen {i.count}×")
        if i.ack_by and i.status == "open":
            extra.append(f"ack {mrkdwn(i.ack_by, mentioned_ids(i.ack_by))}")
        return f"• {SEVERITY_EMOJI.get(i.severity, '')} {label} ({', '.join(extra)})"

    # -- limits -------------------------------------------------------------------------------------------------
    @staticmethod
    def _checked(message: Rendered) -> Rendered:
        """Serialize now: slack_sdk raises on anything over Block Kit's limits, and the block count is ours."""
        blocks = message.blocks or []
        if len(blocks) > MAX_BLOCKS:
            raise SlackObjectFormationError(f"{len(blocks)} blocks")
        out = [b.to_dict() if isinstance(b, Block) else b for b in blocks]
        if block_text_length(out) > MAX_MESSAGE_TEXT:
            raise SlackObjectFormationError(f"{block_text_length(out)} characters of text (msg_blocks_too_long)")
        # the top-level text quotes incident titles (ClearML names): escaped like every SlackMessage's
        return Rendered(text=fallback_text(message.text), blocks=out)

    def _checked_optional(self, message: Rendered | None) -> Rendered | None:
        return self._checked(message) if message is not None else None

    @staticmethod
    def _plain(message: Rendered) -> Rendered:
        """Plain text in sections: what the TextRenderer says, within Slack's limits."""
        lines = fit_lines(message.text.splitlines() or ["(empty)"], MAX_MESSAGE_TEXT - 200)
        blocks = [section(safe(t)).to_dict() for t in chunk_lines(lines)][:MAX_BLOCKS]
        return Rendered(text=fallback_text(clip(lines[0], MAX_FALLBACK_TEXT)), blocks=blocks)


def _people(v: IncidentView) -> set[str]:
    """Slack users the bot itself recorded on this incident (who acknowledged, snoozed, resolved): the only ones its
    lines may mention. A name from ClearML that looks like a mention stays text."""
    return mentioned_ids(v.ack_by, v.snoozed_by, v.resolved_by)


# -- `/clearml incidents`, `silences`, `schedules` --------------------------------------------------------------


def render_incident_list(
    incidents: Sequence[IncidentView], now: datetime, *, threads: Callable[[int], str | None],
    command: str = "/clearml",
) -> SlackMessage:
    blocks: list[Block] = [header(f"Open incidents: {len(incidents)}")]
    if not incidents:
        blocks.append(section(":white_check_mark: No open incidents."))
    lines = []
    for v in incidents:
        url = threads(v.id)
        title = safe(v.title, limit=150)
        label = link(url, f"#{v.id} {title}") if url else f"#{v.id} {title}"
        flags = [format_duration(v.duration_s(now)), f"seen {v.count}×"]
        if v.ack_by:
            flags.append(f":eyes: {mrkdwn(v.ack_by, _people(v))}")
        if v.snoozed(now):
            flags.append(f":zzz: until {_hhmm(v.snoozed_until)}")
        if v.firing and all(m.silenced for m in v.firing):
            flags.append(":mute: silenced")
        if v.gone:
            flags.append(":ghost: gone from the server")
        lines.append(f"{SEVERITY_EMOJI.get(v.severity, '')} {label} · {safe(v.server)} · {' · '.join(flags)}")
    chunks = chunk_lines(lines)
    blocks.extend(section(t) for t in chunks[: MAX_BLOCKS - 3])
    if len(chunks) > MAX_BLOCKS - 3:
        blocks.append(section("_…list cut to fit one message._"))
    blocks.append(context("Each incident has a thread with its history; buttons there acknowledge, snooze or resolve.",
                          f"`{command} silences` for what is muted"))
    return SlackMessage(text=f"{len(incidents)} open incidents", blocks=blocks)


def render_silences(silences: Sequence[Silence], now: datetime, command: str = "/clearml") -> SlackMessage:
    blocks: list[Block] = [header(f"Active silences: {len(silences)}")]
    if not silences:
        blocks.append(section(f"Nothing is silenced. `{command} silence <check-or-subject-pattern> <duration> "
                              "[reason]` mutes notifications for a while."))
    lines = [f"• {mrkdwn(s.describe(now), mentioned_ids(s.created_by))}" for s in silences]
    blocks.extend(section(t) for t in chunk_lines(lines)[: MAX_BLOCKS - 3])
    blocks.append(context(f"End one early: `{command} unsilence <id>`. Silenced problems are still tracked "
                          "(incidents, digest), only their notifications are muted."))
    return SlackMessage(text=f"{len(silences)} active silences", blocks=blocks)


def render_silence_added(silence: Silence, now: datetime, command: str = "/clearml") -> SlackMessage:
    """Posted in the channel (not privately): everybody should know what stopped notifying."""
    from bot.slack.messages.common import SlackMessage

    text = f"Silenced `{silence.pattern}` for {format_duration(silence.remaining_s(now))}"
    by = mrkdwn(silence.created_by, mentioned_ids(silence.created_by))
    lines = [f":mute: {by} silenced {code(silence.pattern, 200)} for "
             f"{format_duration(silence.remaining_s(now))} (until {_when(silence.expires_at)})"
             + (f": {safe(silence.reason, limit=500)}" if silence.reason else "")]
    lines.append(f"Matching problems are still tracked, only not announced. Silence #{silence.id}; end it early with "
                 f"`{command} unsilence {silence.id}`.")
    return SlackMessage(text=clip(text, 300), blocks=[section("\n".join(lines))])


def render_schedules(infos: Sequence[ScheduleInfo], now: datetime, command: str = "/clearml") -> SlackMessage:
    from bot.schedule import format_schedules

    table = format_schedules(list(infos), now)
    blocks: list[Block] = [header(f"Schedules: {plural(len(infos), 'job')}")]
    if infos:
        rows = table.splitlines()
        for chunk in chunk_lines(rows, 2900)[:5]:
            blocks.append(section(pre(chunk)))
    else:
        blocks.append(section(safe(table)))
    blocks.append(context("Times in UTC. A run missed while the bot was down runs once when it starts (catch-up).",
                          f"`{command} playbooks` shows each playbook's schedule"))
    return SlackMessage(text=f"{len(infos)} scheduled jobs", blocks=blocks)
