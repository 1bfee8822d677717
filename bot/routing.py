"""Channel routing, its one home: which Slack channel a report, a finding or an incident goes to. Pure and driven by
the config: no Slack calls, no Slack imports, so the incident pipeline (bot/incidents/pipeline.py: `incident_router`,
used by the terminal and the Slack app alike), the report delivery and the digest all ask this module.

Order, first match wins for one finding:
1. `slack.routes` in the config file, in order: `{channel, severity?, check?}` (`check` is a glob on check ids,
   `severity` an exact severity); a route with neither matches everything;
2. the playbook's `channel`;
3. the default channel: `slack.default_channel`, else the `SLACK_DEFAULT_CHANNEL` environment variable.

A whole report goes to the playbook's channel (else the default), and each route that matches some of its findings
gets those findings too, so `{severity: critical, channel: "#ml-oncall"}` pages on-call without hiding anything
from the team channel. Reports asked for with a slash command answer where they were asked (see listeners).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bot.config import SlackSettings
from bot.engine.findings import Finding
from bot.engine.playbook import Playbook
from bot.errors import BotError
from bot.targets import is_dm_target

DEFAULT_CHANNEL_ENV = "SLACK_DEFAULT_CHANNEL"


class NoChannelError(BotError):
    """Nothing says where to post; the message names the settings that would."""


@dataclass(frozen=True)
class Route:
    channel: str
    reason: str  # why this channel: "slack.routes[0] (severity=critical)", "playbook health", "default channel"


@dataclass
class Delivery:
    """One channel's share of a report."""

    channel: str
    reasons: list[str]
    findings: list[Finding] = field(default_factory=list)
    whole_report: bool = False


def normalize_channel(channel: str) -> str:
    """Channel ids stay as they are; names get their `#` (chat.postMessage accepts `#name` for channels)."""
    channel = channel.strip()
    if not channel or is_dm_target(channel):  # `dm:<user>` is a person, not a channel name
        return channel
    if channel[0] in "CGD" and channel[1:].isalnum() and channel.isupper():
        return channel
    return channel if channel.startswith("#") else f"#{channel}"


class Router:
    def __init__(self, settings: SlackSettings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.env = os.environ if env is None else env

    @property
    def default_channel(self) -> str | None:
        value = self.settings.default_channel or self.env.get(DEFAULT_CHANNEL_ENV) or None
        return normalize_channel(value) if value else None

    def report_route(self, playbook: Playbook | None) -> Route:
        """Where a playbook's whole report goes."""
        if playbook is not None and playbook.channel:
            return Route(normalize_channel(playbook.channel), f"playbook {playbook.name}")
        if self.default_channel:
            return Route(self.default_channel, "default channel")
        name = f"playbook `{playbook.name}` has no `channel`, and " if playbook is not None else ""
        raise NoChannelError(
            f"{name}no default channel is set: set `slack.default_channel` in the config file or {DEFAULT_CHANNEL_ENV}"
        )

    def finding_route(self, finding: Finding, playbook: Playbook | None = None, *, severity: str | None = None
                      ) -> Route:
        """Where one finding goes (an incident's root message, say): the first matching rule. `severity`: match
        routes on this severity instead of the finding's (an incident's, which its worst member sets)."""
        if severity is not None and severity != finding.severity:
            finding = finding.model_copy(update={"severity": severity})
        for index, route in enumerate(self.settings.routes):
            if self._matches(route.severity, route.check, finding):
                conds = ", ".join(
                    c
                    for c in (
                        f"severity={route.severity}" if route.severity else "",
                        f"check={route.check}" if route.check else "",
                    )
                    if c
                )
                return Route(
                    normalize_channel(route.channel), f"slack.routes[{index}]" + (f" ({conds})" if conds else "")
                )
        return self.report_route(playbook)

    @staticmethod
    def _matches(severity: str | None, check: str | None, finding: Finding) -> bool:
        if severity is not None and finding.severity != severity:
            return False
        return not (check is not None and not fnmatch.fnmatchcase(finding.check, check))

    def plan(self, findings: Sequence[Finding], playbook: Playbook | None = None) -> list[Delivery]:
        """The channels a run's report goes to: the report channel (everything) plus each route's findings."""
        main = self.report_route(playbook)
        deliveries: dict[str, Delivery] = {main.channel: Delivery(main.channel, [main.reason], list(findings), True)}
        for index, route in enumerate(self.settings.routes):
            matched = [f for f in findings if self._matches(route.severity, route.check, f)]
            if not matched:
                continue
            channel = normalize_channel(route.channel)
            target = deliveries.setdefault(channel, Delivery(channel, []))
            target.reasons.append(f"slack.routes[{index}]")
            if not target.whole_report:
                target.findings.extend(f for f in matched if f not in target.findings)
        return list(deliveries.values())

    def channels(self, playbooks: Iterable[Playbook] = ()) -> list[str]:
        """Every channel the bot may post to (for `doctor` to check membership)."""
        out: list[str] = []
        for ch in [self.default_channel, *(r.channel for r in self.settings.routes), *(p.channel for p in playbooks)]:
            if ch and normalize_channel(ch) not in out:
                out.append(normalize_channel(ch))
        return out
