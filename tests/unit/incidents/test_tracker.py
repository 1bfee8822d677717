"""The incident state machine: open -> repeat -> resolve, clean runs, correlation, splits, flapping, people."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.config import TrackerPolicy
from bot.engine.findings import Finding, Subject
from bot.incidents.evidence import evidence_changes, key_evidence
from bot.incidents.silences import active_silences, add_silence, matching_silence
from bot.incidents.tracker import IncidentError, IncidentTracker
from bot.store import Store, rows, transaction
from tests.unit._incidents_support import (
    at,
    backlog,
    dead_worker,
    kinds,
    orphaned_task,
    run,
    storage_down,
    temp_store,
    unserved_queue,
    upload_failure,
)

store = pytest.fixture(temp_store, name="store")


def test_open_repeat_resolve(store: Store) -> None:
    tracker = IncidentTracker(store)
    notes = tracker.process(run(backlog(length=60), started=at(0)), at(0))
    assert [n.kind for n in notes] == ["open"]
    inc = notes[0].incident
    assert inc.status == "open" and inc.severity == "warning" and inc.count == 1
    assert inc.cause is not None and inc.cause.check == "queues.backlog"

    # The same problem again, evidence about the same: the root is updated, no thread reply.
    notes = tracker.process(run(backlog(length=61), started=at(1)), at(1))
    assert [n.kind for n in notes] == ["update"]
    assert notes[0].incident.count == 2 and notes[0].incident.last_seen == at(1)

    # Key evidence changes by an order of magnitude: worth a reply. Ages alone never are.
    notes = tracker.process(run(backlog(length=600), started=at(2)), at(2))
    assert [n.kind for n in notes] == ["update", "reply"]
    assert any("length: 61 → 600" in line for line in notes[1].lines)

    # Severity changes: reply that says so.
    notes = tracker.process(run(backlog(length=600, severity="critical"), started=at(3)), at(3))
    assert [n.kind for n in notes] == ["update", "reply"]
    assert notes[1].lines[0] == "Severity raised: warning → critical"
    assert notes[1].incident.severity == "critical"

    # The check ran and did not report it: resolved, with its duration.
    notes = tracker.process(run(started=at(4)), at(4))
    assert [n.kind for n in notes] == ["resolve"]
    resolved = notes[0].incident
    assert resolved.status == "resolved" and resolved.resolved_at == at(4)
    assert notes[0].lines[-1] == "Resolved after 4m (1 clean run)"
    assert resolved.duration_s() == 240
    assert tracker.list_incidents("open") == []
    # Notification numbers are per incident and strictly increasing (they make the outbox dedupe keys).
    assert notes[0].seq == 7  # open, update, update+reply, update+reply, resolve


def test_errors_timeouts_and_truncation_are_not_clean(store: Store) -> None:
    tracker = IncidentTracker(store, TrackerPolicy(resolve_after=2))
    tracker.process(run(backlog(), started=at(0)), at(0))
    assert tracker.process(run(started=at(1)), at(1)) == []  # 1 clean run of 2
    # The check errored: unknown, and the streak starts again.
    assert tracker.process(run(started=at(2), statuses={"queues.backlog": "error"}), at(2)) == []
    assert tracker.process(run(started=at(3), statuses={"queues.backlog": "timeout"}), at(3)) == []
    assert tracker.process(run(started=at(4)), at(4)) == []
    # A run of a playbook without the check says nothing either.
    assert tracker.process(run(started=at(5), checks=("storage.probe",)), at(5)) == []
    # ... and another playbook running the same check is a different scope.
    assert tracker.process(run(started=at(6), playbook="queues"), at(6)) == []
    # When the check was truncated to max_findings, unreported subjects may still fail.
    summary = backlog(queue="q-other").model_copy(update={"fingerprint": "queues.backlog|summary|http://prod:8008"})
    tracker.process(run(summary, started=at(7)), at(7))
    (incident,) = [i for i in tracker.list_incidents() if i.primary.subject.id == "q-cpu"]
    assert incident.status == "open"
    notes = tracker.process(run(started=at(8)), at(8))
    notes += tracker.process(run(started=at(9)), at(9))
    assert {n.incident.id for n in notes if n.kind == "resolve"} >= {incident.id}


def test_dead_worker_orphaned_task_unserved_queue_are_one_incident(store: Store) -> None:
    tracker = IncidentTracker(store)
    notes = tracker.process(run(orphaned_task(), unserved_queue(), dead_worker(), started=at(0)), at(0))
    assert [n.kind for n in notes] == ["open"]
    inc = notes[0].incident
    assert (inc.anchor.kind, inc.anchor.id) == ("worker", "gpu-3")
    assert inc.cause is not None and inc.cause.check == "agents.stale"
    assert sorted(m.check for m in inc.consequences) == ["agents.orphaned_tasks", "agents.unserved_queues"]
    assert inc.title == "Worker gpu-3 silent for 10m (+2 consequences)"
    assert inc.severity == "critical"
    assert inc.actions[:1] == ["rotate"] and "requeue" in inc.actions
    assert len(tracker.list_incidents()) == 1

    # The same grouping when the evidence arrives over several runs (consequences first, cause last).
    other = IncidentTracker(Store(store.path.with_name("other.db")))
    first = other.process(run(orphaned_task(worker="gpu-9", task="t-9"), started=at(0)), at(0))
    assert first[0].incident.cause_inferred and first[0].incident.anchor.id == "gpu-9"
    assert "likely cause: worker gpu-9" in first[0].incident.title
    later = other.process(
        run(orphaned_task(worker="gpu-9", task="t-9"), dead_worker("gpu-9"), unserved_queue(worker="gpu-9"),
            started=at(1)),
        at(1),
    )
    assert [n.kind for n in later] == ["update", "reply"]
    assert len(other.list_incidents()) == 1
    assert not later[0].incident.cause_inferred
    assert any(line.startswith("🔎 Likely cause: worker gpu-9") for line in later[1].lines)


def test_storage_target_and_its_upload_failures_are_one_incident(store: Store) -> None:
    tracker = IncidentTracker(store)
    notes = tracker.process(
        run(upload_failure("t-1"), upload_failure("t-2"), storage_down(), started=at(0)), at(0)
    )
    assert [n.kind for n in notes] == ["open"]
    inc = notes[0].incident
    assert inc.anchor.kind == "storage" and len(inc.consequences) == 2


def test_consequence_that_outlives_its_cause_moves_to_its_own_incident(store: Store) -> None:
    tracker = IncidentTracker(store)
    (opened,) = tracker.process(run(dead_worker(), orphaned_task(), unserved_queue(), started=at(0)), at(0))
    # The worker is back and serves its queue again; the task is still orphaned.
    notes = tracker.process(run(orphaned_task(), started=at(1)), at(1))
    assert kinds(notes)[0] == ("resolve", opened.incident.id)
    old = notes[0].incident
    assert old.resolve_reason == "split"
    new = [n for n in notes if n.kind == "open"]
    assert len(new) == 1 and new[0].reason == "split" and new[0].incident.split_from == old.id
    task_incident = new[0].incident
    assert task_incident.anchor.kind == "task" and task_incident.cause is not None
    assert task_incident.opened_at == at(0)  # it has been failing since then
    assert any("moved to incident" in line for line in notes[0].lines)
    assert [m.moved_to for m in old.moved] == [task_incident.id]
    # It stays there: no third incident on the next runs, though its evidence still names the worker.
    notes = tracker.process(run(orphaned_task(), started=at(2)), at(2))
    assert kinds(notes) == [("update", task_incident.id)]
    assert [i.id for i in tracker.list_incidents()] == [task_incident.id]
    notes = tracker.process(run(started=at(3)), at(3))
    assert kinds(notes) == [("resolve", task_incident.id)]


def test_flapping_reuses_the_incident_within_the_grace_period(store: Store) -> None:
    tracker = IncidentTracker(store, TrackerPolicy(reopen_grace_s=600))
    (opened,) = tracker.process(run(dead_worker(), started=at(0)), at(0))
    tracker.process(run(started=at(1)), at(1))
    notes = tracker.process(run(dead_worker(), started=at(5)), at(5))
    assert kinds(notes) == [("update", opened.incident.id), ("reply", opened.incident.id)]
    assert notes[0].incident.reopen_count == 1 and notes[0].incident.status == "open"
    assert notes[1].lines[0].startswith("🔁 Reopened: failing again 4m after it resolved")
    # Resolved again, and back only after the grace: a new incident.
    tracker.process(run(started=at(6)), at(6))
    notes = tracker.process(run(dead_worker(), started=at(30)), at(30))
    assert [n.kind for n in notes] == ["open"] and notes[0].incident.id != opened.incident.id


def test_acknowledge_snooze_and_manual_resolve(store: Store) -> None:
    tracker = IncidentTracker(store, TrackerPolicy(manual_resolve_grace_s=600, reopen_grace_s=300))
    (opened,) = tracker.process(run(dead_worker(), started=at(0)), at(0))
    iid = opened.incident.id

    notes = tracker.acknowledge(iid, "U0ALICE", at(1))
    assert [n.kind for n in notes] == ["update", "reply"]
    assert notes[0].incident.ack_by == "U0ALICE" and notes[0].incident.ack_at == at(1)
    assert tracker.acknowledge(iid, "U0ALICE", at(2)) == []  # pressing twice changes nothing

    notes = tracker.snooze(iid, "U0ALICE", at(62), at(2))
    assert [n.kind for n in notes] == ["update", "reply"] and "Snoozed by U0ALICE for 1h" in notes[1].lines[0]
    # Snoozed: still tracked (count goes up, the root is edited silently), but no thread replies.
    notes = tracker.process(run(dead_worker(severity="warning"), started=at(3)), at(3))
    assert [n.kind for n in notes] == ["update"]
    assert notes[0].incident.count == 2 and notes[0].incident.muted(at(3))
    # Snooze over: replies again.
    notes = tracker.process(run(dead_worker(severity="critical"), started=at(63)), at(63))
    assert [n.kind for n in notes] == ["update", "reply"]

    notes = tracker.resolve(iid, "U0BOB", at(64))
    assert [n.kind for n in notes] == ["resolve"] and notes[0].incident.resolved_by == "U0BOB"
    assert "reopens if it still fails in 10m" in notes[0].lines[-1]
    with pytest.raises(IncidentError, match="already resolved"):
        tracker.resolve(iid, "U0BOB", at(65))
    with pytest.raises(IncidentError, match="no incident #999"):
        tracker.acknowledge(999, "U0BOB", at(65))
    # Still failing inside the grace: believed resolved, nothing opens.
    assert tracker.process(run(dead_worker(), started=at(66)), at(66)) == []
    assert tracker.list_incidents() == []
    # Still failing after the grace: the same incident reopens and says why.
    notes = tracker.process(run(dead_worker(), started=at(75)), at(75))
    assert kinds(notes) == [("update", iid), ("reply", iid)]
    assert "still failing 11m after U0BOB resolved it" in notes[1].lines[0]


def test_manual_resolve_that_holds_stays_resolved(store: Store) -> None:
    tracker = IncidentTracker(store, TrackerPolicy(manual_resolve_grace_s=600, reopen_grace_s=300))
    (opened,) = tracker.process(run(dead_worker(), started=at(0)), at(0))
    tracker.resolve(opened.incident.id, "U0BOB", at(1))
    assert tracker.process(run(started=at(2)), at(2)) == []
    # Weeks later the same worker dies again: that is a new incident, not the old one reopened.
    notes = tracker.process(run(dead_worker(), started=at(60 * 24 * 14)), at(60 * 24 * 14))
    assert [n.kind for n in notes] == ["open"] and notes[0].incident.id != opened.incident.id


def test_silenced_incident_is_tracked_quietly_and_announced_when_the_silence_ends(store: Store) -> None:
    tracker = IncidentTracker(store)
    add_silence(store, "gpu-3", "30m", reason="kernel upgrade", by="U0ALICE", now=at(0))
    # The silence names the worker; its consequences are silenced with it.
    notes = tracker.process(run(dead_worker(), orphaned_task(), started=at(1)), at(1))
    assert notes == []
    (incident,) = tracker.list_incidents()
    assert incident.muted(at(1)) and not incident.announced and incident.count == 1
    # An unrelated problem is not silenced.
    notes = tracker.process(run(dead_worker(), orphaned_task(), backlog(), started=at(2)), at(2))
    assert [n.kind for n in notes] == ["open"] and notes[0].incident.primary.check == "queues.backlog"
    # The silence expires while gpu-3 is still dead: now the channel hears about it.
    notes = tracker.process(run(dead_worker(), orphaned_task(), backlog(), started=at(31)), at(31))
    opened = [n for n in notes if n.kind == "open"]
    assert len(opened) == 1 and opened[0].reason == "unmuted" and opened[0].incident.id == incident.id
    assert opened[0].incident.count == 3


def test_silenced_incident_that_resolves_never_posts(store: Store) -> None:
    tracker = IncidentTracker(store)
    add_silence(store, "agents.stale", "1h", now=at(0))
    assert tracker.process(run(dead_worker(), started=at(1)), at(1)) == []
    assert tracker.process(run(started=at(2)), at(2)) == []
    assert tracker.list_incidents("resolved")[0].resolve_reason == "clean"


def test_a_new_tracker_over_the_same_file_continues_the_incident(tmp_path: Path) -> None:
    first = Store(tmp_path / "s.db")
    (opened,) = IncidentTracker(first).process(run(dead_worker(), started=at(0)), at(0))
    first.close()
    second = Store(tmp_path / "s.db")
    notes = IncidentTracker(second).process(run(dead_worker(), started=at(1)), at(1))
    assert kinds(notes) == [("update", opened.incident.id)]
    second.close()


def _as_written_by_the_previous_version(store: Store) -> None:
    """Rewrite the stored findings the way the version before typed `Finding.related` wrote them: the related
    subjects as dicts in `evidence.related`, a root's consequence fingerprints in `related`, no `consequences`."""
    with transaction(store) as conn:
        for m in rows(conn, "SELECT id, finding FROM incident_members"):
            doc = json.loads(m["finding"])
            doc["evidence"]["related"] = [{k: v for k, v in s.items() if v} for s in doc["related"]]
            doc["related"] = doc.pop("consequences")
            conn.execute("UPDATE incident_members SET finding = ? WHERE id = ?", (json.dumps(doc), m["id"]))


def test_an_incident_stored_by_the_previous_version_keeps_working(store: Store) -> None:
    """After an upgrade, incident rows hold findings in the old shape: they are read into `related` and
    `consequences` (grouping, silences and evidence comparison keep working; no spurious thread reply)."""
    tracker = IncidentTracker(store)
    root, task, queue = dead_worker(), orphaned_task(), unserved_queue()
    task.caused_by = queue.caused_by = root.fingerprint  # as the engine's correlation sets them
    root.consequences = sorted([task.fingerprint, queue.fingerprint])
    (opened,) = tracker.process(run(root, task, queue, started=at(0)), at(0))
    _as_written_by_the_previous_version(store)
    with transaction(store) as conn:
        stored = {m["check_id"]: m["finding"] for m in rows(conn, "SELECT check_id, finding FROM incident_members")}
    assert json.loads(stored["agents.orphaned_tasks"])["evidence"]["related"] == [{"kind": "worker", "id": "gpu-3"}]
    with pytest.raises(ValidationError):  # the old root's fingerprint list is not a list of subjects
        Finding.model_validate_json(stored["agents.stale"])

    view = tracker.get(opened.incident.id)
    assert view is not None
    findings = {m.check: m.finding for m in view.members}
    assert findings["agents.stale"].consequences == root.consequences and findings["agents.stale"].related == []
    assert findings["agents.orphaned_tasks"].related == [Subject(kind="worker", id="gpu-3")]
    assert "related" not in findings["agents.orphaned_tasks"].evidence
    # the next run with the same findings: the same incident, an edit of its root and no thread reply
    notes = tracker.process(run(dead_worker(), orphaned_task(), unserved_queue(), started=at(1)), at(1))
    assert kinds(notes) == [("update", opened.incident.id)]
    assert len(tracker.list_incidents()) == 1
    # a silence naming the worker matches the task it orphaned, as read from the old row
    add_silence(store, "worker:gpu-3", "1h", now=at(2))
    assert matching_silence(active_silences(store, at(2)), findings["agents.orphaned_tasks"]) is not None


def test_the_same_fingerprint_on_two_servers_is_two_incidents(store: Store) -> None:
    tracker = IncidentTracker(store)
    tracker.process(run(dead_worker(), server="prod", started=at(0)), at(0))
    tracker.process(run(dead_worker(), server="staging", started=at(0)), at(0))
    assert sorted(i.server for i in tracker.list_incidents()) == ["prod", "staging"]
    # A clean run on staging resolves only staging's.
    tracker.process(run(server="staging", started=at(1)), at(1))
    assert [i.server for i in tracker.list_incidents()] == ["prod"]


def test_info_and_error_findings_do_not_open_incidents(store: Store) -> None:
    tracker = IncidentTracker(store)
    info = backlog().model_copy(update={"severity": "info"})
    error = Finding(check="queues.backlog", severity="error", title="Check queues.backlog could not run",
                    subject=backlog().subject.model_copy(update={"kind": "server", "id": "http://prod:8008"}))
    assert tracker.process(run(info, error, started=at(0), statuses={"queues.backlog": "error"}), at(0)) == []


def test_a_consequence_that_recovers_is_noted_in_the_thread(store: Store) -> None:
    tracker = IncidentTracker(store)
    tracker.process(run(dead_worker(), orphaned_task(), started=at(0)), at(0))
    notes = tracker.process(run(dead_worker(), started=at(1)), at(1))
    assert [n.kind for n in notes] == ["update", "reply"]
    assert notes[1].lines == ("✅ agents.orphaned_tasks passes again for task train-t-1",)
    # ... and fails again later: back in the same incident.
    notes = tracker.process(run(dead_worker(), orphaned_task(), started=at(2)), at(2))
    assert [n.kind for n in notes] == ["update", "reply"] and "fails again" in notes[1].lines[0]
    assert len(tracker.list_incidents()) == 1


def test_key_evidence_ignores_ages_and_small_changes() -> None:
    assert key_evidence({"last_seen_age_s": 100, "age": "2m", "at": "x", "length": 50}) == {"length": 32.0}
    assert key_evidence({"length": 52}) == key_evidence({"length": 60})
    assert key_evidence({"length": 50}) != key_evidence({"length": 130})
    assert evidence_changes({"length": 50, "error": "a"}, {"length": 51, "error": "b"}) == ["error: a → b"]
