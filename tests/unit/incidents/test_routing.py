"""Where incident messages go as an incident changes: routing on the incident's severity, an escalation posted to
the critical route too (and kept up to date there), the broadcast of a rise to critical; message limits of storms."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.config import Settings, TrackerPolicy
from bot.incidents.pipeline import IncidentPipeline, incident_router
from bot.routing import Router, normalize_channel
from bot.slack.delivery import Outbox
from bot.slack.incidents.messages import SlackIncidentRenderer
from bot.slack.messages.common import MAX_MESSAGE_TEXT, block_text_length
from bot.store import Store
from tests.fakes.slack_api import validate_message
from tests.unit._incidents_support import (
    at,
    backlog,
    dead_worker,
    orphaned_task,
    run,
    settings,
    temp_store,
    unserved_queue,
)

ONCALL = [{"severity": "critical", "channel": "#ml-oncall"}]


store = pytest.fixture(temp_store, name="store")


def rows(store: Store) -> list[dict[str, Any]]:
    cursor = store.db.execute("SELECT key, channel, kind, root_key, payload FROM outbox ORDER BY id")
    return [dict(zip(("key", "channel", "kind", "root_key", "payload"), r, strict=True)) for r in cursor.fetchall()]


def pipeline(store: Store, **slack: Any) -> IncidentPipeline:
    s = settings(**slack)
    return IncidentPipeline(store, outbox=Outbox(store), settings=s, router=incident_router(s),
                            renderer=SlackIncidentRenderer())


def test_an_escalation_to_critical_is_posted_to_the_critical_route_too(store: Store) -> None:
    pipe = pipeline(store, routes=ONCALL)
    pipe.handle_run(run(backlog(), started=at(0)), at(0))
    assert [(r["key"], r["channel"]) for r in rows(store) if r["kind"] == "post"] == [("incident:1:root", "#ml-alerts")]
    pipe.handle_run(run(backlog(severity="critical"), started=at(1)), at(1))
    posts = [(r["key"], r["channel"]) for r in rows(store) if r["kind"] == "post"]
    assert posts == [("incident:1:root", "#ml-alerts"), ("incident:1:mirror:#ml-oncall", "#ml-oncall")]
    mirror = next(r for r in rows(store) if r["key"] == "incident:1:mirror:#ml-oncall")
    assert "Escalated to critical (was warning)" in mirror["payload"] and "#ml-alerts" in mirror["payload"]
    # the thread reply in the team channel is broadcast (typed severity change, not prose matching)
    reply = next(r for r in rows(store) if r["kind"] == "reply" and r["key"].endswith(":reply")
                 and "Severity raised" in r["payload"])
    assert json.loads(reply["payload"])["reply_broadcast"] is True
    # later changes edit the copy on the critical route too, down to the resolution
    pipe.handle_run(run(backlog(severity="critical", length=61), started=at(2)), at(2))
    pipe.handle_run(run(started=at(3)), at(3))
    mirror_edits = [r for r in rows(store) if r["root_key"] == "incident:1:mirror:#ml-oncall"]
    assert mirror_edits and all(r["kind"] == "update" and r["channel"] == "#ml-oncall" for r in mirror_edits)
    assert "[RESOLVED]" in json.loads(mirror_edits[-1]["payload"])["text"]
    assert len([r for r in rows(store) if r["kind"] == "post"]) == 2  # posted once on each route


def test_a_header_that_says_critical_routes_as_critical_though_its_cause_is_a_warning(store: Store) -> None:
    pipe = pipeline(store, routes=ONCALL)
    # the agent is only stale (warning), the queue it left unserved is critical: the incident is critical
    notes = pipe.handle_run(run(dead_worker(severity="warning"), unserved_queue(), started=at(0)), at(0))
    (inc,) = [n.incident for n in notes]
    assert inc.severity == "critical" and inc.primary.severity == "warning"
    assert [(r["key"], r["channel"]) for r in rows(store) if r["kind"] == "post"] == [("incident:1:root", "#ml-oncall")]


def test_a_lowered_severity_does_not_post_anywhere_new(store: Store) -> None:
    pipe = pipeline(store, routes=ONCALL)
    pipe.handle_run(run(backlog(severity="critical"), started=at(0)), at(0))
    pipe.handle_run(run(backlog(), started=at(1)), at(1))
    assert [r["channel"] for r in rows(store) if r["kind"] == "post"] == ["#ml-oncall"]
    reply = [r for r in rows(store) if r["kind"] == "reply"][-1]
    assert "Severity lowered" in reply["payload"] and "reply_broadcast" not in reply["payload"]


def test_a_storm_is_one_root_within_slack_limits(store: Store) -> None:
    s = settings()
    pipe = IncidentPipeline(store, outbox=Outbox(store), settings=s, renderer=SlackIncidentRenderer(),
                            policy=TrackerPolicy(storm_threshold=10))
    workers = [dead_worker(f"gpu-node-{i:03d}.cluster.internal:gpu{i % 8}") for i in range(300)]
    orphans = [orphaned_task(task=f"t-{i}", worker=w.subject.id) for i, w in enumerate(workers)]
    pipe.handle_run(run(*workers, *orphans, started=at(0)), at(0))
    posted = rows(store)
    assert [r["key"] for r in posted if r["kind"] == "post"] == ["incident:1:root"]
    for r in posted:
        payload = json.loads(r["payload"])
        assert validate_message(payload) == [], r["key"]
        assert block_text_length(payload["blocks"]) <= MAX_MESSAGE_TEXT
    root = json.loads(posted[0]["payload"])
    assert root["text"].startswith("🔴 [CRITICAL] Storm on prod: 600 problems started at once")
    shown = json.dumps(root["blocks"], ensure_ascii=False)
    assert "600 problems began in the same run" in shown and "more (in the thread)" in shown
    details = json.loads(posted[1]["payload"])
    assert "more: `/clearml incidents`" in json.dumps(details["blocks"], ensure_ascii=False)


def test_the_pipeline_routes_by_the_same_rules_as_the_slack_app(store: Store, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    # one home (bot/routing.py): a channel name without `#` gets it, routes match on check globs, and the
    # SLACK_DEFAULT_CHANNEL environment variable is the last resort, in the terminal's pipeline as in Slack's
    monkeypatch.setenv("SLACK_DEFAULT_CHANNEL", "ml-fallback")
    s = Settings.model_validate({"slack": {"routes": [{"check": "agents.*", "channel": "ml-agents"}]}})
    pipe = IncidentPipeline(store, outbox=Outbox(store), settings=s, renderer=SlackIncidentRenderer())
    pipe.handle_run(run(dead_worker(), backlog(), started=at(0)), at(0))
    roots = sorted(r["channel"] for r in rows(store) if r["kind"] == "post")
    assert roots == ["#ml-agents", "#ml-fallback"]
    slack_router = Router(s.slack)
    assert slack_router.finding_route(dead_worker()).channel == "#ml-agents"
    assert slack_router.finding_route(backlog()).channel == pipe.fallback() == "#ml-fallback"
    assert normalize_channel("dm:U0ANA1234") == "dm:U0ANA1234"  # a DM target is a person, not a channel name
