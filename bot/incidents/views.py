"""What the incident tracker hands to renderers and the pipeline: read-only views of an incident and its members,
and the notifications a run produced (bot/incidents/tracker.py keeps the state; these are plain data)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.engine.findings import SEVERITY_RANK, Finding, Subject
from bot.store import utc

NotificationKind = Literal["open", "update", "reply", "resolve"]


@dataclass(frozen=True)
class MemberView:
    fingerprint: str
    check: str
    subject: Subject
    role: Literal["cause", "consequence"]
    state: str  # firing | cleared | closed | moved
    severity: str
    first_seen: datetime
    last_seen: datetime
    cleared_at: datetime | None
    count: int
    silenced: bool
    finding: Finding
    moved_to: int | None = None
    gone_at: datetime | None = None  # the server stopped listing the subject (still open: it did not recover)

    @property
    def label(self) -> str:
        return f"{self.subject.kind} {self.subject.name or self.subject.id}"

    @property
    def gone(self) -> bool:
        return self.gone_at is not None and self.state == "firing"

    @property
    def live(self) -> bool:
        return self.state in ("firing", "cleared")


@dataclass(frozen=True)
class IncidentView:
    id: int
    server: str
    status: str  # open | resolved
    severity: str
    title: str
    anchor: Subject  # the likely cause
    members: tuple[MemberView, ...]
    channel: str | None
    playbook: str | None
    opened_at: datetime
    last_seen: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolve_reason: str | None
    count: int
    reopen_count: int
    ack_by: str | None
    ack_at: datetime | None
    snoozed_until: datetime | None
    snoozed_by: str | None
    announced: bool
    split_from: int | None
    storm: int = 0  # a storm incident: how many new problems of one run it groups (0: an ordinary incident)
    mirrors: tuple[str, ...] = ()  # other channels the root is posted to (the critical route after an escalation)
    refused_channel: str | None = None  # the routed channel that refused the root; `channel` is the fallback
    refused_error: str | None = None

    @property
    def gone(self) -> list[MemberView]:
        """Firing members whose subject the server no longer lists (a dropped worker, a deleted queue)."""
        return [m for m in self.members if m.gone]

    @property
    def cause(self) -> MemberView | None:
        """The anchor's own finding (worst first), or None when the cause is only inferred from `related`."""
        causes = [m for m in self.members if m.role == "cause" and m.state != "moved"]
        causes.sort(key=lambda m: (m.state != "firing", -SEVERITY_RANK[m.severity]))
        return causes[0] if causes else None

    @property
    def cause_inferred(self) -> bool:
        return self.cause is None

    @property
    def consequences(self) -> list[MemberView]:
        return [m for m in self.members if m.role == "consequence" and m.state != "moved"]

    @property
    def moved(self) -> list[MemberView]:
        return [m for m in self.members if m.state == "moved"]

    @property
    def firing(self) -> list[MemberView]:
        return [m for m in self.members if m.state == "firing"]

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def duration_s(self, now: datetime | None = None) -> float:
        end = self.resolved_at or utc(now)
        return max(0.0, (end - self.opened_at).total_seconds())

    def snoozed(self, now: datetime) -> bool:
        return self.snoozed_until is not None and utc(now) < self.snoozed_until

    def muted(self, now: datetime) -> bool:
        firing = self.firing
        return self.snoozed(now) or (bool(firing) and all(m.silenced for m in firing))

    @property
    def primary(self) -> MemberView:
        """The finding the root message leads with: the cause if it has one, else the worst consequence."""
        if self.cause is not None:
            return self.cause
        return sorted(self.members, key=lambda m: (m.state != "firing", -SEVERITY_RANK[m.severity]))[0]

    @property
    def actions(self) -> list[str]:
        """The suggested actions of every member, cause first, without repeats."""
        seen: list[str] = []
        for m in [self.primary, *self.members]:
            for action in m.finding.actions:
                if action not in seen:
                    seen.append(action)
        return seen

    @property
    def links(self) -> list[str]:
        out: list[str] = []
        for m in [self.primary, *self.members]:
            out.extend(link for link in m.finding.links if link not in out)
        return out


@dataclass(frozen=True)
class Notification:
    """One thing to tell Slack about one incident. `seq` numbers the incident's notifications (dedupe keys)."""

    kind: NotificationKind
    incident: IncidentView
    reason: str  # opened, repeat, changed, reopened, split, unmuted, acknowledged, snoozed, resolved, ...
    seq: int
    lines: tuple[str, ...] = ()  # what happened, one line each: the thread reply's content
    quiet: bool = False  # for `resolve`: edit the root message only, no thread note (the incident is muted)
    severity_change: tuple[str, str] | None = None  # (before, after) when this run changed the incident's severity

    @property
    def escalated_to_critical(self) -> bool:
        return self.severity_change is not None and self.severity_change[1] == "critical"
