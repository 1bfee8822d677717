"""A snoozed incident keeps changing quietly; when the snooze ends the thread hears what changed meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.incidents.silences import add_silence
from bot.incidents.tracker import IncidentTracker
from bot.store import Store
from tests.unit._incidents_support import at, dead_worker, orphaned_task, run


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.db")
    yield s
    s.close()


def test_an_incident_that_turns_critical_while_snoozed_says_so_when_the_snooze_ends(store: Store) -> None:
    tracker = IncidentTracker(store)
    (opened,) = tracker.process(run(dead_worker(severity="warning"), started=at(0)), at(0))
    iid = opened.incident.id
    tracker.snooze(iid, "U0ALICE", at(60), at(1))

    # snoozed: it turns critical and its orphaned task joins; the root is edited, nobody is notified
    notes = tracker.process(run(dead_worker(severity="critical"), orphaned_task(), started=at(5)), at(5))
    assert [n.kind for n in notes] == ["update"] and notes[0].incident.severity == "critical"
    notes = tracker.process(run(dead_worker(severity="critical"), orphaned_task(), started=at(30)), at(30))
    assert [n.kind for n in notes] == ["update"]

    # the snooze is over and nothing new happens in this run: the thread still hears what changed meanwhile
    notes = tracker.process(run(dead_worker(severity="critical"), orphaned_task(), started=at(61)), at(61))
    assert [n.kind for n in notes] == ["update", "reply"]
    lines = notes[1].lines
    assert lines[0].startswith("💤 The snooze ended") and "While it was on:" in lines[0]
    assert any("Severity raised: warning → critical" in line for line in lines)
    assert any("also affected: task train-t-1" in line for line in lines)

    # told once: the next run with no change posts no reply
    notes = tracker.process(run(dead_worker(severity="critical"), orphaned_task(), started=at(62)), at(62))
    assert [n.kind for n in notes] == ["update"]


def test_changes_held_back_by_a_snooze_lead_the_resolve_note_when_it_resolves_after_the_snooze(
    store: Store,
) -> None:
    tracker = IncidentTracker(store)
    (opened,) = tracker.process(run(dead_worker(severity="warning"), started=at(0)), at(0))
    tracker.snooze(opened.incident.id, "U0ALICE", at(60), at(1))
    tracker.process(run(dead_worker(severity="critical"), started=at(5)), at(5))
    notes = []
    for minute in (61, 62):  # clean runs after the snooze: it resolves
        notes += tracker.process(run(started=at(minute)), at(minute))
    resolve = [n for n in notes if n.kind == "resolve"]
    assert resolve and any("Severity raised: warning → critical" in line for line in resolve[0].lines)
    assert not resolve[0].quiet


def test_a_silenced_incident_catches_up_when_the_silence_ends(store: Store) -> None:
    tracker = IncidentTracker(store)
    tracker.process(run(dead_worker(severity="warning"), started=at(0)), at(0))
    add_silence(store, "agents.stale", 30 * 60, reason="upgrade", by="U0BOB", now=at(1))
    notes = tracker.process(run(dead_worker(severity="critical"), started=at(5)), at(5))
    assert [n.kind for n in notes] == ["update"]
    notes = tracker.process(run(dead_worker(severity="critical"), started=at(40)), at(40))
    assert [n.kind for n in notes] == ["update", "reply"]
    assert notes[1].lines[0].startswith("🔕 The silence ended")
    assert any("Severity raised: warning → critical" in line for line in notes[1].lines)
