"""RunResult -> tracker -> rendered messages -> outbox rows, atomically; routing; the terminal sink."""

from __future__ import annotations

from datetime import datetime

import pytest

from bot.engine.playbook import parse_playbook
from bot.incidents.pipeline import (
    IncidentPipeline,
    Rendered,
    TextRenderer,
    incident_router,
    print_sink,
)
from bot.incidents.views import IncidentView, Notification
from bot.slack.delivery import Outbox
from bot.store import Store
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

store = pytest.fixture(temp_store, name="store")


def outbox_rows(store: Store) -> list[tuple[str, str, str, str | None, str]]:
    cursor = store.db.execute("SELECT key, channel, kind, root_key, status FROM outbox ORDER BY id")
    return [tuple(r) for r in cursor.fetchall()]  # type: ignore[misc]


def test_a_run_becomes_outbox_messages(store: Store) -> None:
    box = Outbox(store)
    pipe = IncidentPipeline(store, outbox=box, settings=settings())
    pipe.handle_run(run(dead_worker(), orphaned_task(), unserved_queue(), started=at(0)), at(0))
    assert outbox_rows(store) == [
        ("incident:1:root", "#ml-alerts", "post", None, "pending"),
        ("incident:1:1:reply", "#ml-alerts", "reply", "incident:1:root", "pending"),
    ]
    root = box.get("incident:1:root")
    assert root is not None
    assert "Likely cause: worker gpu-3" in root["payload"] and "Consequences:" in root["payload"]
    pipe.handle_run(run(dead_worker(), orphaned_task(), unserved_queue(), started=at(1)), at(1))
    # the cause's evidence changes (a consequence's alone would only edit the root: #13, replies for what matters)
    changed = dead_worker()
    changed.evidence["queues"] = ["gpu", "gpu-large"]
    pipe.handle_run(run(changed, orphaned_task(), unserved_queue(length=400), started=at(2)), at(2))
    # The first update was superseded by the second (never attempted); the change got a thread reply.
    assert outbox_rows(store)[2:] == [
        ("incident:1:2:update", "#ml-alerts", "update", "incident:1:root", "superseded"),
        ("incident:1:3:update", "#ml-alerts", "update", "incident:1:root", "pending"),
        ("incident:1:4:reply", "#ml-alerts", "reply", "incident:1:root", "pending"),
    ]
    pipe.acknowledge(1, "U0ALICE", at(3))
    pipe.snooze(1, "U0ALICE", seconds=3600, now=at(3))
    pipe.handle_run(run(started=at(4)), at(4))  # resolves while snoozed: the root says so, the thread stays quiet
    kinds = [(k.split(":", 2)[-1], status) for k, _, _, _, status in outbox_rows(store)[5:]]
    assert kinds == [("5:update", "superseded"), ("6:reply", "pending"), ("7:update", "superseded"),
                     ("8:reply", "pending"), ("9:update", "pending")]
    final = box.get("incident:1:9:update")
    assert final is not None and "[RESOLVED]" in final["payload"]


def test_tracker_state_and_messages_commit_together(store: Store) -> None:
    class Broken(TextRenderer):
        def root(self, incident: IncidentView, now: datetime) -> Rendered:
            raise RuntimeError("renderer bug")

    pipe = IncidentPipeline(store, outbox=Outbox(store), renderer=Broken(), settings=settings())
    with pytest.raises(RuntimeError):
        pipe.handle_run(run(dead_worker(), started=at(0)), at(0))
    # Nothing half-done: no incident that believes it was announced, no message.
    assert pipe.tracker.list_incidents("all") == []
    assert outbox_rows(store) == []
    fixed = IncidentPipeline(store, outbox=Outbox(store), settings=settings())
    notes = fixed.handle_run(run(dead_worker(), started=at(1)), at(1))
    assert [n.kind for n in notes] == ["open"]
    assert [r[0] for r in outbox_rows(store)] == ["incident:1:root", "incident:1:1:reply"]


def test_routing_by_route_then_playbook_then_default(store: Store) -> None:
    pb = parse_playbook("name: queues\nchannel: '#ml-queues'\nchecks:\n  - check: server.reachable\n")
    route = incident_router(
        settings(routes=[{"severity": "critical", "channel": "#ml-oncall"}, {"check": "storage.*", "channel": "#s"}]),
        [pb],
    )
    pipe = IncidentPipeline(store, outbox=Outbox(store), router=route)
    pipe.handle_run(run(dead_worker(), started=at(0)), at(0))
    pipe.handle_run(run(dead_worker(), backlog(), started=at(0), playbook="queues"), at(0))
    pipe.handle_run(run(backlog(queue="q-x"), started=at(0), playbook="other"), at(0))
    roots = {r[0]: r[1] for r in outbox_rows(store) if r[2] == "post"}
    assert roots == {"incident:1:root": "#ml-oncall", "incident:2:root": "#ml-queues",
                     "incident:3:root": "#ml-alerts"}
    assert pipe.tracker.get(2).channel == "#ml-queues"  # type: ignore[union-attr]


def test_no_channel_anywhere_is_logged_not_fatal(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("SLACK_DEFAULT_CHANNEL", raising=False)
    pipe = IncidentPipeline(store, outbox=Outbox(store))
    pipe.handle_run(run(dead_worker(), started=at(0)), at(0))
    assert outbox_rows(store) == [] and "no Slack channel" in caplog.text


def test_terminal_sink_prints_incidents_without_slack(store: Store) -> None:
    printed: list[tuple[str, str, str]] = []
    pipe = IncidentPipeline(store, sink=lambda ch, kind, m: printed.append((ch, kind, m.text)), settings=settings())
    pipe.handle_run(run(dead_worker(), orphaned_task(), started=at(0)), at(0))
    pipe.handle_run(run(started=at(5)), at(5))
    assert [(c, k) for c, k, _ in printed] == [("#ml-alerts", "post"), ("#ml-alerts", "reply"),
                                              ("#ml-alerts", "update"), ("#ml-alerts", "reply")]
    assert printed[0][2].startswith("🔴 [CRITICAL] Worker gpu-3 silent for 10m (+1 consequence)")
    assert "Actions: acknowledge, snooze 1h/4h/24h, resolve, rotate, requeue, abort" in printed[0][2]
    assert printed[2][2].startswith("✅ [RESOLVED]") and "Resolved after 5m" in printed[3][2]


def test_a_rise_to_critical_is_broadcast_to_the_channel(store: Store) -> None:
    box = Outbox(store)
    pipe = IncidentPipeline(store, outbox=box, settings=settings())
    pipe.handle_run(run(backlog(), started=at(0)), at(0))
    notes: list[Notification] = pipe.handle_run(run(backlog(severity="critical"), started=at(1)), at(1))
    reply = box.get(f"incident:1:{notes[-1].seq}:reply")
    assert reply is not None and '"reply_broadcast": true' in reply["payload"]


def test_print_sink(store: Store) -> None:
    import io

    out = io.StringIO()
    pipe = IncidentPipeline(store, sink=print_sink(out), settings=settings())
    pipe.handle_run(run(dead_worker(), backlog(), started=at(0)), at(0))
    ids = {i.anchor.kind: i.id for i in pipe.tracker.list_incidents()}
    pipe.acknowledge(ids["worker"], "U0ALICE", at(1))
    pipe.snooze(ids["queue"], "U0BOB", seconds=3600, now=at(1))
    text = out.getvalue()
    assert text.startswith("── #ml-alerts · new message ──\n🟠 [WARNING] Queue cpu has 60 waiting")
    assert "── #ml-alerts · thread reply ──\n👀 Acknowledged by U0ALICE" in text
