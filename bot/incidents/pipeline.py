"""Glue: a run's findings -> incidents -> rendered messages -> the outbox, in one transaction.

    pipeline = IncidentPipeline(store, outbox=outbox, renderer=SlackIncidentRenderer(...), router=route)
    pipeline.handle_run(result)                       # after every playbook run (scheduled or by hand)
    pipeline.acknowledge(incident_id, user)           # buttons
    pipeline.snooze(incident_id, user, seconds=3600)
    pipeline.resolve(incident_id, user)
    pipeline.post_digest(channel="#ml-platform")      # the digest schedule

Why one transaction: the tracker's state change and the outbox rows it causes must commit together. If the bot
dies after the incident was recorded but before its message was queued, nothing would ever post it (the tracker
believes it announced it); the other way round, a message could be posted for an incident that does not exist.

Rendering is injected (the Slack app passes Block Kit builders); `TextRenderer` is the minimal default, also
used by the terminal demo through a `sink` instead of an outbox.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from bot.config import SlackSettings, TrackerPolicy
from bot.durations import format_duration
from bot.engine.findings import SEVERITY_RANK
from bot.incidents import digest as digest_mod
from bot.incidents.owners import owner_target
from bot.incidents.tracker import IncidentTracker, root_key
from bot.incidents.views import IncidentView, Notification
from bot.routing import NoChannelError, Router
from bot.store import transaction, utc

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.engine.playbook import Playbook
    from bot.engine.runner import RunResult
    from bot.store import Store

log = logging.getLogger(__name__)

IncidentRouter = Callable[[IncidentView], str | None]  # an incident -> its channel (None: nowhere)
Sink = Callable[[str, str, "Rendered"], None]  # (channel, kind, message) for the terminal: print it


@dataclass(frozen=True)
class Rendered:
    """A message: `text` (always; Slack's notification and accessibility fallback) and optional Block Kit blocks
    (slack_sdk Block objects or dicts; the outbox serialises them)."""

    text: str
    blocks: list[Any] | None = None

    def as_payload(self) -> dict[str, Any]:
        """The message as an outbox payload: `text`, and `blocks` when it has some."""
        out: dict[str, Any] = {"text": self.text}
        if self.blocks:
            out["blocks"] = self.blocks
        return out


SinkKind = Literal["post", "update", "reply", "ephemeral"]


class MessageSink(Protocol):
    """Where the pipeline's messages go: the Slack outbox (bot/slack/delivery: durable, redacted at its door) or
    the terminal (`TerminalSink`). The roots a channel refused only exist on Slack; the terminal has none."""

    def enqueue(self, key: str, channel: str, kind: SinkKind, message: dict[str, Any], *,
                root_key: str | None = None, supersede: bool = False, now: datetime | None = None) -> bool:
        """Queue one message (`Rendered.as_payload()`, maybe with `reply_broadcast`); False when `key` was queued
        before."""
        ...

    def refused_posts(self, key_like: str, errors: Iterable[str]) -> list[dict[str, Any]]: ...

    def retire(self, key: str, new_key: str) -> bool: ...

    def requeue_orphans(self, root_key: str, channel: str, now: datetime | None = None) -> int: ...

    def permalink(self, channel_id: str, ts: str, *, fetch: bool = True) -> str | None:
        """A link to a message this sink posted (`channel_id`, `ts`): Slack's `chat.getPermalink`, cached; None
        when there is none (not on Slack, deleted, Slack unreachable; with `fetch=False`, not cached yet)."""
        ...


class TerminalSink:
    """A `MessageSink` that hands each message to `show` (channel, kind, message) at once: the terminal demo."""

    def __init__(self, show: Sink) -> None:
        self.show = show

    def enqueue(self, key: str, channel: str, kind: SinkKind, message: dict[str, Any], *,
                root_key: str | None = None, supersede: bool = False, now: datetime | None = None) -> bool:
        self.show(channel, kind, Rendered(text=str(message.get("text") or ""), blocks=message.get("blocks")))
        return True

    def refused_posts(self, key_like: str, errors: Iterable[str]) -> list[dict[str, Any]]:
        return []  # a terminal refuses nothing

    def retire(self, key: str, new_key: str) -> bool:
        return False

    def requeue_orphans(self, root_key: str, channel: str, now: datetime | None = None) -> int:
        return 0

    def permalink(self, channel_id: str, ts: str, *, fetch: bool = True) -> str | None:
        return None  # a terminal message has no link


class IncidentRenderer(Protocol):
    def root(self, incident: IncidentView, now: datetime) -> Rendered:
        """The root message: severity, subject, likely cause and consequences, evidence, remediation, buttons."""
        ...

    def reply(self, note: Notification, now: datetime) -> Rendered | None:
        """The thread reply for a notification (`open`: the first message in the thread); None for none."""
        ...

    def digest(self, digest: digest_mod.Digest) -> Rendered: ...


# -- keys -------------------------------------------------------------------------------------------------------


def digest_key(channel: str | None, period_end: datetime) -> str:
    """Dedupe key of a digest message (its charts are thread replies to it)."""
    return f"digest:{channel}:{period_end.isoformat()}"


def event_key(incident_id: int, seq: int, part: str) -> str:
    """Dedupe key of one outbox message caused by notification `seq` of an incident (stable across retries)."""
    return f"incident:{incident_id}:{seq}:{part}"


# -- routing ----------------------------------------------------------------------------------------------------


def incident_router(
    settings: Settings | None = None,
    playbooks: Iterable[Playbook] | Callable[[], Iterable[Playbook]] | None = None,
    *,
    router: Router | None = None,
) -> IncidentRouter:
    """An incident's channel by the one set of routing rules (bot/routing.py): the first `slack.routes` entry matching
    its current severity and its leading finding's check, else its playbook's `channel`, else slack.default_channel /
    SLACK_DEFAULT_CHANNEL; None (logged) when nothing says where. `playbooks`: a list, or a callable so that `serve`
    sees reloaded playbooks. `router`: the Slack app's own (the same rules, its settings)."""
    rules = router or channel_router(settings)
    listed = list(playbooks) if playbooks is not None and not callable(playbooks) else []
    current = playbooks if callable(playbooks) else (lambda: listed)

    def route(view: IncidentView) -> str | None:
        playbook = next((p for p in current() if p.name == view.playbook), None) if view.playbook else None
        try:
            # on the incident's severity, not its leading finding's: a header that says CRITICAL goes where
            # criticals go even when the cause itself is only a warning
            return rules.finding_route(view.primary.finding, playbook, severity=view.severity).channel
        except NoChannelError as exc:
            log.error("incident #%s has nowhere to go: %s", view.id, exc)
            return None

    return route


def channel_router(settings: Settings | None) -> Router:
    """The routing rules of `settings` (none: only SLACK_DEFAULT_CHANNEL)."""
    return Router(settings.slack if settings is not None else SlackSettings())


# Slack errors that mean "not this channel" (a re-route fixes them), as opposed to a broken message or token.
REFUSED_CHANNEL_ERRORS = ("not_in_channel", "channel_not_found")


# -- the default renderer -----------------------------------------------------------------------------------------

_ICON = {"critical": "🔴", "error": "🟣", "warning": "🟠", "info": "🔵", "ok": "🟢"}


def _when(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt else "—"


def _evidence(evidence: dict[str, Any], limit: int = 6) -> str:
    parts = []
    for key, value in evidence.items():
        if value in (None, "", [], {}):
            continue
        text = str(value)
        parts.append(f"{key}={text if len(text) <= 80 else text[:77] + '…'}")
        if len(parts) >= limit:
            break
    return ", ".join(parts)


class TextRenderer:
    """Plain text (Slack mrkdwn-compatible) for the terminal demo and as the `text` fallback."""

    def root(self, incident: IncidentView, now: datetime) -> Rendered:
        v = incident
        lines = []
        if v.is_open:
            lines.append(f"{_ICON.get(v.severity, '')} [{v.severity.upper()}] {v.title}")
            lines.append(
                f"Incident #{v.id} on {v.server}: open since {_when(v.opened_at)} "
                f"({format_duration(v.duration_s(now))}), seen {v.count}×, last {_when(v.last_seen)}"
            )
        else:
            who = f" by {v.resolved_by}" if v.resolved_by and v.resolved_by != "auto" else ""
            lines.append(f"✅ [RESOLVED] {v.title}")
            lines.append(
                f"Incident #{v.id} on {v.server}: resolved{who} at {_when(v.resolved_at)} after "
                f"{format_duration(v.duration_s(now))} (was {v.severity}, seen {v.count}×)"
            )
        if v.ack_by:
            lines.append(f"👀 Acknowledged by {v.ack_by} at {_when(v.ack_at)}")
        if v.is_open and v.snoozed(now):
            lines.append(f"💤 Snoozed by {v.snoozed_by} until {_when(v.snoozed_until)}")
        if v.refused_channel and v.is_open:
            lines.append(f"⚠️ Posted here because I cannot post in {v.refused_channel} ({v.refused_error}): invite me "
                         "there and this incident moves there by itself.")
        primary = v.primary
        if v.storm:
            lines.append(f"{len([m for m in v.members if m.live])} problems began in the same run: likely one shared "
                         "cause (the API server, its database, the network, credentials). Each:")
            for m in [m for m in v.members if m.live][:20]:
                lines.append(f"  • [{m.severity}] {m.label}: {m.finding.title} [{m.check}]")
            return Rendered(text="\n".join(lines))
        if v.cause_inferred:
            lines.append(f"Likely cause: {v.anchor.kind} {v.anchor.name or v.anchor.id} (no finding of its own)")
        else:
            lines.append(f"Likely cause: {primary.label}: {primary.finding.title} [{primary.check}]")
        ev = _evidence(primary.finding.evidence)
        if ev:
            lines.append(f"Evidence: {ev}")
        consequences = [m for m in v.consequences if m is not primary]
        if consequences:
            lines.append("Consequences:")
            for m in consequences:
                state = "" if m.state == "firing" else f" ({m.state})"
                lines.append(f"  • {m.label}: {m.finding.title} [{m.check}]{state}")
        for m in v.moved:
            lines.append(f"  • {m.label}: moved to incident #{m.moved_to}")
        if v.is_open and v.gone:
            lines.append("👻 Gone from the server: " + ", ".join(m.label for m in v.gone) + ". Not a recovery: open "
                         "until a check sees it healthy again or someone resolves it.")
        if primary.finding.remediation:
            lines.append(f"Fix: {primary.finding.remediation}")
        if v.is_open and v.actions:
            lines.append("Actions: " + ", ".join(["acknowledge", "snooze 1h/4h/24h", "resolve", *v.actions]))
        for link in v.links[:3]:
            lines.append(link)
        return Rendered(text="\n".join(lines))

    def reply(self, note: Notification, now: datetime) -> Rendered | None:
        if note.kind == "open":
            v = note.incident
            lines = [*note.lines, f"Opened {_when(v.opened_at)}. Details:"]
            for m in v.members:
                if m.state == "moved":
                    continue
                ev = _evidence(m.finding.evidence)
                lines.append(f"• [{m.severity}] {m.label}: {m.finding.title}" + (f" ({ev})" if ev else ""))
                if m.finding.detail:
                    lines.append(f"  {m.finding.detail}")
            return Rendered(text="\n".join(lines))
        if not note.lines:
            return None
        return Rendered(text="\n".join(note.lines))

    def digest(self, digest: digest_mod.Digest) -> Rendered:
        d = digest
        lines = [
            f"{_ICON.get(d.state, '')} Digest {_when(d.period_start)} → {_when(d.period_end)}: {d.headline}",
            f"{d.runs} runs, {d.problem_runs} with problems.",
        ]
        if d.counts:
            by_area = [
                f"{area} " + ", ".join(f"{n} {sev}" for sev, n in sorted(sevs.items()))
                for area, sevs in d.counts.items()
            ]
            lines.append("Findings by area: " + "; ".join(by_area))
        for title, items, more in (("New", d.new, d.more["new"]), ("Ongoing", d.ongoing, d.more["ongoing"]),
                                   ("Resolved", d.resolved, d.more["resolved"])):
            if not items:
                continue
            lines.append(f"{title}:")
            for i in items:
                link = f" {i.thread_url}" if i.thread_url else ""
                span = format_duration(i.duration_s)
                lines.append(f"  • #{i.id} [{i.severity}] {i.title} ({span}){link}")
            if more:
                lines.append(f"  …and {more} more")
        if d.top_offenders:
            lines.append("Top offenders: " + ", ".join(
                f"{o.subject.kind} {o.subject.name or o.subject.id} ({o.runs} runs)" for o in d.top_offenders
            ))
        arrows = {"up": "↗ ", "down": "↘ ", "flat": "→ "}  # the number's direction; the word is the verdict
        for t in d.trends:
            lines.append(f"{t.label}: {t.fmt(t.current)} (before: {t.fmt(t.previous)}) {arrows.get(t.direction, '')}"
                         f"{t.verdict}")
        return Rendered(text="\n".join(lines))


def print_sink(stream: IO[str] | None = None) -> Sink:
    """A sink for the terminal demo: each message as it would reach Slack, with its channel and kind."""

    def sink(channel: str, kind: str, message: Rendered) -> None:
        out = stream or sys.stdout
        label = {"post": "new message", "update": "edit of the root message", "reply": "thread reply"}.get(kind, kind)
        out.write(f"── {channel} · {label} ──\n{message.text}\n\n")

    return sink


# -- the pipeline -----------------------------------------------------------------------------------------------


class IncidentPipeline:
    def __init__(
        self,
        store: Store,
        *,
        tracker: IncidentTracker | None = None,
        policy: TrackerPolicy | None = None,
        outbox: MessageSink | None = None,
        renderer: IncidentRenderer | None = None,
        router: IncidentRouter | None = None,
        sink: Sink | None = None,
        settings: Settings | None = None,
        playbooks: list[Playbook] | None = None,
        owner_playbooks: Callable[[], Iterable[str]] | None = None,
        fallback: Callable[[], str | None] | None = None,
    ) -> None:
        """With an `outbox`, messages are queued for Slack; without one, they go to `sink` (e.g. print).

        `policy`: `serve` passes `settings.incidents.policy()` (settle time, storm threshold); the default posts at
        once and knows no storms. `fallback`: the channel a
        root goes to when its routed channel refuses it (default: slack.default_channel / SLACK_DEFAULT_CHANNEL)."""
        self.store = store
        self.tracker = tracker or IncidentTracker(store, policy)
        self.fallback = fallback or (lambda: channel_router(settings).default_channel)
        self.refused_retry_s = settings.incidents.refused_retry_s if settings is not None else 300.0
        # the terminal demo gives a `sink` callable instead of an outbox
        self.outbox: MessageSink | None = outbox if outbox is not None else (TerminalSink(sink) if sink else None)
        self.renderer: IncidentRenderer = renderer or TextRenderer()
        self.router = router or incident_router(settings, playbooks)
        self.sink = sink
        self.settings = settings
        # playbooks whose task findings also go to the task's owner as a DM (`notify_owner: true`); a callable so
        # that `serve` sees reloaded playbooks
        fixed = [pb.name for pb in playbooks or [] if getattr(pb, "notify_owner", False)]
        self.owner_playbooks: Callable[[], Iterable[str]] = owner_playbooks or (lambda: fixed)
        digest_mod.ensure_schema(store)

    # -- inputs -------------------------------------------------------------------------------------------------

    def handle_run(self, result: RunResult, now: datetime | None = None, *, run_id: int | None = None
                   ) -> list[Notification]:
        """After a run: record its metrics, fold it into the incidents, queue what to say. Atomic."""
        now = utc(now)
        with transaction(self.store):
            digest_mod.record_run_metrics(self.store, result, run_id)
            notes = self.tracker.process(result, now)
            self._deliver(notes, now)
        return notes

    def acknowledge(self, incident_id: int, user: str, now: datetime | None = None) -> list[Notification]:
        now = utc(now)
        with transaction(self.store):
            notes = self.tracker.acknowledge(incident_id, user, now)
            self._deliver(notes, now)
        return notes

    def snooze(self, incident_id: int, user: str, *, seconds: float, now: datetime | None = None
               ) -> list[Notification]:
        now = utc(now)
        with transaction(self.store):
            notes = self.tracker.snooze(incident_id, user, now + timedelta(seconds=seconds), now)
            self._deliver(notes, now)
        return notes

    def resolve(self, incident_id: int, user: str, now: datetime | None = None) -> list[Notification]:
        now = utc(now)
        with transaction(self.store):
            notes = self.tracker.resolve(incident_id, user, now)
            self._deliver(notes, now)
        return notes

    def post_digest(
        self,
        now: datetime | None = None,
        *,
        channel: str | None = None,
        settings: digest_mod.DigestSettings | None = None,
    ) -> digest_mod.Digest:
        """Build the digest since the last one, queue it as one message, and remember it. Atomic."""
        now = utc(now)
        settings = settings or digest_mod.DigestSettings.from_settings(self.settings) or digest_mod.DigestSettings()
        channel = channel or settings.channel or channel_router(self.settings).default_channel
        # links to the incident threads come from the sink (Slack's chat.getPermalink, cached): asked before the
        # transaction, since each may be a Slack call
        links: dict[tuple[str, str], str] = {}
        if self.outbox is not None:
            preview = digest_mod.build_digest(self.store, now, settings=settings, channel=channel)
            links = digest_mod.resolve_permalinks(digest_mod.thread_refs(preview), self.outbox.permalink)
        with transaction(self.store):
            digest = digest_mod.build_digest(self.store, now, settings=settings, channel=channel, permalinks=links)
            message = self.renderer.digest(digest)
            self._emit(digest_key(channel, digest.period_end), channel, "post", message, None, now=now)
            digest_mod.record_digest(self.store, digest)
        return digest

    # -- outputs ------------------------------------------------------------------------------------------------

    def _emit(self, key: str, channel: str | None, kind: SinkKind, message: Rendered, root: str | None,
              *, now: datetime, supersede: bool = False, broadcast: bool = False) -> None:
        if channel is None:
            log.warning("no Slack channel for %s: set slack.default_channel or a playbook `channel`", key)
            return
        payload = message.as_payload()
        if broadcast:
            payload["reply_broadcast"] = True
        if self.outbox is not None:
            self.outbox.enqueue(key, channel, kind, payload, root_key=root, supersede=supersede, now=now)

    def tick(self, now: datetime | None = None, *, can_post: Callable[[str], bool] | None = None
             ) -> list[Notification]:
        """Between runs (serve calls it every few seconds): post the incidents whose settle time is over, move a
        root a channel refused to the fallback channel (saying why), and, with `can_post` (is the bot a member of
        that channel now?), move it back once the bot was invited. Atomic per step."""
        now = utc(now)
        with transaction(self.store):
            notes = self.tracker.announce_due(now)
            self._deliver(notes, now)
        notes += self._reroute_refused(now)
        if can_post is not None:
            notes += self._retry_refused(now, can_post)
        return notes

    def _reroute_refused(self, now: datetime) -> list[Notification]:
        durable = self.outbox
        if durable is None:
            return []
        notes: list[Notification] = []
        for r in durable.refused_posts("incident:%:root", REFUSED_CHANNEL_ERRORS):
            incident_id = int(str(r["key"]).split(":")[1])
            view = self.tracker.get(incident_id)
            fallback = self.fallback()
            if view is None or not view.is_open or not fallback or fallback == r["channel"]:
                continue  # nowhere else to go: it stays failed (the log and /healthz say why)
            error = str(r["last_error"] or "").split(":", 1)[0]
            with transaction(self.store):
                self.tracker.mark_refused(incident_id, r["channel"], error, fallback, now)
                durable.retire(r["key"], f"{r['key']}:refused:{r['id']}")
                view = self.tracker.get(incident_id)
                assert view is not None
                log.warning("incident #%s: %s refused its root (%s); posting it in %s until the bot is invited",
                            incident_id, r["channel"], error, fallback)
                self._emit(root_key(incident_id), fallback, "post", self.renderer.root(view, now), None, now=now)
                durable.requeue_orphans(root_key(incident_id), fallback, now)
        return notes

    def _retry_refused(self, now: datetime, can_post: Callable[[str], bool]) -> list[Notification]:
        durable = self.outbox
        if durable is None:
            return []
        notes: list[Notification] = []
        answers: dict[str, bool] = {}  # one look-up per channel per tick, however many incidents wait for it
        for incident_id, channel, checked in self.tracker.refused():
            if checked is not None and (now - checked).total_seconds() < self.refused_retry_s:
                continue
            self.tracker.checked_refused(incident_id, now)
            if channel not in answers:
                try:
                    answers[channel] = can_post(channel)
                except Exception as exc:  # Slack unwell: try again at the next period
                    log.warning("cannot tell whether the bot may post in %s: %s", channel, exc)
                    answers[channel] = False
            if not answers[channel]:
                continue
            view = self.tracker.get(incident_id)
            if view is None or view.channel is None:
                continue
            old_home = view.channel
            with transaction(self.store):
                old_key = f"{root_key(incident_id)}:fallback:{int(now.timestamp())}"
                durable.retire(root_key(incident_id), old_key)
                moved = self.tracker.moved(incident_id, channel, now)
                self._deliver(moved, now)
                # the fallback copy says where the incident went, and keeps no buttons
                gone = self.tracker.get(incident_id)
                assert gone is not None
                note = f"➡️ This incident moved to {channel} (I can post there now); follow it there."
                moved_root = Rendered(text=f"{note} #{incident_id}: {gone.title}"[:300], blocks=[
                    {"type": "section", "text": {"type": "mrkdwn", "text": f"{note}\n_#{incident_id}_"}}])
                self._emit(f"{old_key}:moved", old_home, "update", moved_root, old_key, now=now, supersede=True)
                self._emit(f"{old_key}:moved:reply", old_home, "reply", Rendered(text=note), old_key, now=now)
            notes += moved
        return notes

    def _deliver(self, notes: list[Notification], now: datetime) -> None:
        for note in notes:
            v = note.incident
            channel = v.channel
            if channel is None:
                channel = self.router(v)
                if channel is not None:
                    self.tracker.set_channel(v.id, channel)
            root = root_key(v.id)
            if note.kind == "open":
                self._emit(root, channel, "post", self.renderer.root(v, now), None, now=now)
                self._tell_owner(v, now)
                first = self.renderer.reply(note, now)
                if first is not None:
                    self._emit(event_key(v.id, note.seq, "reply"), channel, "reply", first, root, now=now)
            elif note.kind == "update":
                self._emit(event_key(v.id, note.seq, "update"), channel, "update", self.renderer.root(v, now), root,
                           now=now, supersede=True)
            elif note.kind == "reply":
                message = self.renderer.reply(note, now)
                if message is not None:
                    # A rise to critical is news for the whole channel, not only for the thread's followers.
                    self._emit(event_key(v.id, note.seq, "reply"), channel, "reply", message, root,
                               now=now, broadcast=note.escalated_to_critical)
            elif note.kind == "resolve":
                self._emit(event_key(v.id, note.seq, "update"), channel, "update", self.renderer.root(v, now), root,
                           now=now, supersede=True)
                if not note.quiet:
                    message = self.renderer.reply(note, now)
                    if message is not None:
                        self._emit(event_key(v.id, note.seq, "reply"), channel, "reply", message, root, now=now)
            self._mirror(note, channel, now)

    def _tell_owner(self, v: IncidentView, now: datetime) -> None:
        """A new incident about one task of a `notify_owner` playbook: its root message also goes to the owner."""
        if not v.playbook or v.playbook not in set(self.owner_playbooks()):
            return
        finding = v.primary.finding
        if finding.subject.kind != "task":
            return
        target = owner_target(finding.evidence.get("owner"), self.settings.slack if self.settings else None)
        if target is None:
            log.info("incident %s: no Slack user known for the owner of task %s", v.id, finding.subject.id)
            return
        self._emit(f"{root_key(v.id)}:owner", target, "post", self.renderer.root(v, now), None, now=now)

    def _mirror(self, note: Notification, home: str | None, now: datetime) -> None:
        """Routing follows the incident's current severity: when it rises to a severity routed elsewhere (the
        critical route), the root is posted there too, and kept up to date there until the incident resolves."""
        v = note.incident
        if home is None or note.kind == "reply":
            return
        mirrors = self.tracker.mirrors(v.id)
        change = note.severity_change
        if change is not None and v.is_open and not v.muted(now):
            was, became = change
            target = self.router(v) if SEVERITY_RANK[became] > SEVERITY_RANK[was] else None  # it rose
            if target and target != home and target not in mirrors and self.tracker.add_mirror(v.id, target):
                message = self.renderer.root(v, now)
                why = (f"⬆️ Escalated to {v.severity} (was {was}): posted here by the route for {v.severity}; "
                       f"the thread with the details is in {home}.")
                self._emit(mirror_key(v.id, target), target, "post", _with_note(message, why), None, now=now)
                mirrors = [*mirrors, target]
                return
        if note.kind in ("update", "resolve", "open"):
            for target in mirrors:
                message = _with_note(self.renderer.root(v, now),
                                     f"⬆️ Escalated here from {home}, where the thread with the details is.")
                self._emit(event_key(v.id, note.seq, f"update@{target}"), target, "update", message,
                           mirror_key(v.id, target), now=now, supersede=True)


def mirror_key(incident_id: int, channel: str) -> str:
    """The outbox key of an incident's root as also posted in another channel (the critical route)."""
    return f"incident:{incident_id}:mirror:{channel}"


def _with_note(message: Rendered, note: str) -> Rendered:
    """`message` with `note` as a first context line (and in the fallback text)."""
    blocks = list(message.blocks) if message.blocks else None
    if blocks is not None:
        blocks.insert(0, {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    text = f"{note}\n{message.text}" if blocks is None else message.text
    return Rendered(text=text, blocks=blocks)
