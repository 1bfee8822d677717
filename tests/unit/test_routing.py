"""Channel routing: routes by severity and check, the playbook's channel, the default channel (config or env)."""

from __future__ import annotations

import pytest

from bot.config import SlackRoute, SlackSettings
from bot.engine.findings import Finding, Subject
from bot.engine.playbook import CheckEntry, Playbook
from bot.routing import NoChannelError, Router, normalize_channel


def f(check: str, severity: str) -> Finding:
    return Finding(
        check=check,
        severity=severity,  # type: ignore[arg-type]
        title=f"{check} {severity}",
        subject=Subject(kind="worker", id=f"{check}-{severity}"),
    )


def pb(channel: str | None = None) -> Playbook:
    return Playbook(name="health", channel=channel, checks=[CheckEntry(check="server.reachable")])


def test_default_channel_from_config_then_env() -> None:
    assert Router(SlackSettings(default_channel="ml-alerts"), env={}).default_channel == "#ml-alerts"
    assert Router(SlackSettings(), env={"SLACK_DEFAULT_CHANNEL": "C0ABCDEF12"}).default_channel == "C0ABCDEF12"
    assert Router(SlackSettings(default_channel="#a"), env={"SLACK_DEFAULT_CHANNEL": "#b"}).default_channel == "#a"
    assert Router(SlackSettings(), env={}).default_channel is None


def test_report_route_prefers_the_playbook_channel() -> None:
    router = Router(SlackSettings(default_channel="#general"), env={})
    assert router.report_route(pb("#ml-alerts")).channel == "#ml-alerts"
    assert router.report_route(pb()).channel == "#general"
    with pytest.raises(NoChannelError, match=r"slack\.default_channel"):
        Router(SlackSettings(), env={}).report_route(pb())


def test_finding_routes_first_match_wins() -> None:
    settings = SlackSettings(
        default_channel="#general",
        routes=[
            SlackRoute(channel="#oncall", severity="critical"),
            SlackRoute(channel="#storage", check="storage.*"),
            SlackRoute(channel="#never", severity="critical", check="storage.*"),
        ],
    )
    router = Router(settings, env={})
    assert router.finding_route(f("agents.stale", "critical")).channel == "#oncall"
    assert router.finding_route(f("storage.probe", "critical")).channel == "#oncall"
    assert router.finding_route(f("storage.probe", "warning")).channel == "#storage"
    route = router.finding_route(f("agents.stale", "warning"), pb("#ml"))
    assert route.channel == "#ml" and route.reason == "playbook health"
    assert router.finding_route(f("agents.stale", "warning")).reason == "default channel"


def test_plan_sends_the_whole_report_to_the_report_channel_and_matches_to_routes() -> None:
    settings = SlackSettings(
        routes=[SlackRoute(channel="#oncall", severity="critical"), SlackRoute(channel="ml-alerts", check="queues.*")]
    )
    findings = [f("agents.stale", "critical"), f("queues.backlog", "warning"), f("server.tls", "info")]
    plan = Router(settings, env={}).plan(findings, pb("#ml-alerts"))
    by_channel = {d.channel: d for d in plan}
    assert set(by_channel) == {"#ml-alerts", "#oncall"}
    main = by_channel["#ml-alerts"]
    assert main.whole_report and main.findings == findings and main.reasons == ["playbook health", "slack.routes[1]"]
    assert [x.check for x in by_channel["#oncall"].findings] == ["agents.stale"]


def test_channels_lists_every_destination_once() -> None:
    settings = SlackSettings(default_channel="general", routes=[SlackRoute(channel="#oncall", severity="critical")])
    assert Router(settings, env={}).channels([pb("#general"), pb("C0ABCDEF12")]) == [
        "#general",
        "#oncall",
        "C0ABCDEF12",
    ]


def test_normalize_channel() -> None:
    assert normalize_channel("C0ABCDEF12") == "C0ABCDEF12"
    assert normalize_channel("G0PRIVATE1") == "G0PRIVATE1"
    assert normalize_channel("ml-alerts") == "#ml-alerts"
    assert normalize_channel("#ml-alerts") == "#ml-alerts"
    assert normalize_channel("Cats") == "#Cats"
