"""Signal, not noise, on the incident side: one incident per root cause (caused_by, a cascade over two runs, the
settle time), vanished subjects stay open as gone, no thread reply for volatile evidence, typed severity changes,
storms."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from bot.config import TrackerPolicy
from bot.engine.findings import Finding, Subject
from bot.engine.runner import RunResult
from bot.incidents.evidence import evidence_changes, key_evidence
from bot.incidents.tracker import IncidentTracker
from bot.store import Store
from tests.unit._incidents_support import (
    T0,
    at,
    backlog,
    dead_worker,
    fileserver_down,
    kinds,
    orphaned_task,
    run,
    temp_store,
    unserved_queue,
)

store = pytest.fixture(temp_store, name="store")


def listed(result: RunResult, **kinds_ids: set[str]) -> RunResult:
    """The run as if the server had listed exactly these workers / queues."""
    result.listed = {kind: ids for kind, ids in kinds_ids.items()}
    return result


def dataset_unreadable(fp_root: str | None, name: str = "ds-1") -> Finding:
    return Finding(
        check="datasets.readable", severity="warning", title=f"Dataset {name} cannot be read",
        subject=Subject(kind="dataset", id=name, name=name), evidence={"error": "http_500"}, caused_by=fp_root,
    )


# -- one incident per root cause ----------------------------------------------------------------------------------


def test_caused_by_in_the_same_run_is_one_incident_and_unrelated_faults_are_two(store: Store) -> None:
    tracker = IncidentTracker(store)
    root = fileserver_down()
    consequences = [dataset_unreadable(root.fingerprint), dataset_unreadable(root.fingerprint, "ds-2")]
    notes = tracker.process(run(root, *consequences, backlog(), started=at(0)), at(0))
    assert sorted(n.kind for n in notes) == ["open", "open"]
    incidents = tracker.list_incidents()
    assert len(incidents) == 2  # the file server with its datasets, and the unrelated backlog
    files = next(v for v in incidents if v.anchor.kind == "storage")
    assert files.cause is not None and files.cause.check == "storage.fileserver"
    assert {m.subject.id for m in files.consequences} == {"ds-1", "ds-2"}
    assert "(+2 consequences)" in files.title


def test_caused_by_a_root_from_an_earlier_run_joins_its_incident(store: Store) -> None:
    tracker = IncidentTracker(store)
    root = fileserver_down()
    tracker.process(run(root, started=at(0)), at(0))
    notes = tracker.process(run(root, dataset_unreadable(root.fingerprint), started=at(1)), at(1))
    assert kinds(notes) == [("update", 1), ("reply", 1)]
    assert notes[1].lines == ("➕ also affected: dataset ds-1: Dataset ds-1 cannot be read",)
    assert len(tracker.list_incidents("all")) == 1


def test_a_root_that_arrives_after_its_consequence_takes_over_the_incident(store: Store) -> None:
    """Run 1 sees only the consequence (the engine names its root, which has no finding yet); run 2 brings the root:
    one incident, now about the root, and the thread says the likely cause was found."""
    tracker = IncidentTracker(store)
    root = fileserver_down()
    first = tracker.process(run(dataset_unreadable(root.fingerprint), started=at(0)), at(0))
    assert kinds(first) == [("open", 1)] and first[0].incident.anchor.kind == "dataset"
    notes = tracker.process(run(root, dataset_unreadable(root.fingerprint), started=at(1)), at(1))
    assert [n.kind for n in notes] == ["update", "reply"]
    (inc,) = tracker.list_incidents("all")
    assert inc.anchor.kind == "storage" and inc.cause is not None and inc.cause.check == "storage.fileserver"
    assert [m.subject.id for m in inc.consequences] == ["ds-1"]
    assert any(line.startswith("🔎 Likely cause: storage files") for line in notes[1].lines)
    assert notes[0].severity_change == ("warning", "critical") and notes[1].escalated_to_critical


def test_settle_time_makes_a_cascade_over_two_runs_one_post(tmp_path: Path) -> None:
    """The agent dies in one run, its orphaned task shows up in the next (and the bot restarts in between): nothing
    is posted until the settle time is over, then one incident with both."""
    policy = TrackerPolicy(settle_s=60)
    store = Store(tmp_path / "store.db")
    start = T0
    assert IncidentTracker(store, policy).process(run(dead_worker(), started=start), start) == []
    store.close()
    store = Store(tmp_path / "store.db")  # a restart
    tracker = IncidentTracker(store, policy)
    later = start + timedelta(seconds=30)
    assert tracker.process(run(dead_worker(), orphaned_task(), started=later), later) == []
    assert tracker.announce_due(start + timedelta(seconds=59)) == []
    notes = tracker.announce_due(start + timedelta(seconds=61))
    assert kinds(notes) == [("open", 1)]
    assert {m.check for m in notes[0].incident.members} == {"agents.stale", "agents.orphaned_tasks"}
    assert tracker.announce_due(start + timedelta(seconds=90)) == []  # once
    # A new problem of a later run settles too; a run after its settle time announces it without the timer.
    assert kinds(tracker.process(run(dead_worker(), orphaned_task(), backlog(), started=at(2)), at(2))) == [
        ("update", 1)]
    notes = tracker.process(run(dead_worker(), orphaned_task(), backlog(), started=at(4)), at(4))
    assert kinds(notes) == [("update", 1), ("open", 2)]
    store.close()


def test_an_incident_that_recovers_within_the_settle_time_is_never_posted(store: Store) -> None:
    tracker = IncidentTracker(store, TrackerPolicy(settle_s=120))
    assert tracker.process(run(backlog(), started=at(0)), at(0)) == []
    assert tracker.process(run(started=at(1)), at(1)) == []
    assert tracker.announce_due(at(5)) == []
    (inc,) = tracker.list_incidents("all")
    assert inc.status == "resolved" and not inc.announced


# -- gone is not recovered --------------------------------------------------------------------------------------


def test_a_worker_the_server_dropped_stays_open_as_gone_with_its_orphan(store: Store) -> None:
    tracker = IncidentTracker(store)
    tracker.process(listed(run(dead_worker(), orphaned_task(), started=at(0)), worker={"gpu-3"}), at(0))
    # ten minutes after its last report the server stops listing the worker: agents.stale has nothing to say
    notes = tracker.process(listed(run(orphaned_task(), started=at(1)), worker=set()), at(1))
    assert [n.kind for n in notes] == ["update", "reply"]
    assert any(line.startswith("👻 worker gpu-3 is gone") for line in notes[1].lines)
    assert not any("passes again" in line for line in notes[1].lines)
    (inc,) = tracker.list_incidents("all")
    assert inc.status == "open" and [m.subject.id for m in inc.gone] == ["gpu-3"]
    assert inc.cause is not None and inc.cause.gone
    assert {m.check for m in inc.members if m.live} == {"agents.stale", "agents.orphaned_tasks"}  # nothing moved
    # the next runs say nothing new
    notes = tracker.process(listed(run(orphaned_task(), started=at(2)), worker=set()), at(2))
    assert [n.kind for n in notes] == ["update"]
    notes = tracker.process(listed(run(started=at(3)), worker=set()), at(3))  # the task was requeued by someone
    assert [n.kind for n in notes] == ["update", "reply"]
    assert tracker.list_incidents("open")[0].id == inc.id  # still open: the worker never came back
    # a person resolves it
    notes = tracker.resolve(inc.id, "U0ALICE", at(4))
    assert [n.kind for n in notes] == ["resolve"] and notes[0].incident.resolved_by == "U0ALICE"


def test_a_gone_worker_that_comes_back_healthy_resolves(store: Store) -> None:
    tracker = IncidentTracker(store)
    tracker.process(listed(run(dead_worker(), started=at(0)), worker={"gpu-3"}), at(0))
    tracker.process(listed(run(started=at(1)), worker=set()), at(1))
    notes = tracker.process(listed(run(started=at(2)), worker={"gpu-3"}), at(2))
    assert [n.kind for n in notes] == ["resolve"]
    assert "✅ agents.stale passes again for worker gpu-3 (listed by the server again)" in notes[0].lines


def test_a_deleted_queue_stays_open_as_gone_and_shows_so(store: Store) -> None:
    from bot.slack.incidents.messages import render_incident_list

    tracker = IncidentTracker(store)
    tracker.process(listed(run(backlog(queue="q-cpu"), started=at(0)), queue={"q-cpu", "q-gpu"}), at(0))
    notes = tracker.process(listed(run(started=at(1)), queue={"q-gpu"}), at(1))
    assert [n.kind for n in notes] == ["update", "reply"] and "queue cpu is gone" in notes[1].lines[0]
    (inc,) = tracker.list_incidents("open")
    listing = render_incident_list([inc], at(2), threads=lambda incident_id: None)
    assert "gone from the server" in json.dumps(listing.blocks_as_dicts())
    # listed again and healthy: resolved
    assert [n.kind for n in tracker.process(listed(run(started=at(2)), queue={"q-cpu"}), at(2))] == ["resolve"]


def test_a_subject_no_list_ever_held_recovers_normally(store: Store) -> None:
    """agents.missing reports a pool (`dynamic_worker:gpu-a10:*`) as a "worker": never listed, so it cannot vanish."""
    missing = Finding(check="agents.missing", severity="warning", title="1 of 2 expected agents",
                      subject=Subject(kind="worker", id="dynamic_worker:gpu-a10:*", name="dynamic_worker:gpu-a10:*"))
    tracker = IncidentTracker(store)
    tracker.process(listed(run(missing, checks=("agents.missing",), started=at(0)), worker={"gpu-3"}), at(0))
    notes = tracker.process(listed(run(checks=("agents.missing",), started=at(1)), worker={"gpu-3", "x"}), at(1))
    assert [n.kind for n in notes] == ["resolve"]


def test_a_run_that_did_not_list_workers_keeps_the_old_meaning(store: Store) -> None:
    """Hand-built runs (and checks that list nothing) carry no `listed`: a clean check is a recovery, as before."""
    tracker = IncidentTracker(store)
    tracker.process(run(dead_worker(), started=at(0)), at(0))
    assert [n.kind for n in tracker.process(run(started=at(1)), at(1))] == ["resolve"]


# -- thread replies only for meaningful changes -------------------------------------------------------------------


def test_volatile_evidence_earns_no_reply(store: Store) -> None:
    tracker = IncidentTracker(store)
    tracker.process(run(fileserver_down(), checks=("storage.fileserver",), started=at(0)), at(0))
    for minute in range(1, 39):  # 38 runs, each with a fresh random probe name and latency
        probe = f"{minute:02d}" + "ab3c9e1f7d2b4a6c8e0f1a2b3c4d5e"
        notes = tracker.process(run(fileserver_down(probe, 500 + minute), checks=("storage.fileserver",),
                                    started=at(minute)), at(minute))
        assert [n.kind for n in notes] == ["update"], notes
    orphan = orphaned_task()
    orphan.evidence["worker_state"] = "gpu-3 has been silent for 8m"
    tracker.process(run(orphan, started=at(40)), at(40))
    orphan = orphaned_task()
    orphan.evidence["worker_state"] = "gpu-3 has been silent for 9m"
    assert [n.kind for n in tracker.process(run(orphan, started=at(41)), at(41))] == ["update"]
    # a real change still is news
    changed = fileserver_down()
    changed.evidence["error"] = "connection_refused"
    notes = tracker.process(run(changed, checks=("storage.fileserver",), started=at(42)), at(42))
    assert [n.kind for n in notes] == ["update", "reply"]
    assert "error: http_500 → connection_refused" in notes[1].lines[0]


def test_volatile_text_is_normalised_before_comparing() -> None:
    assert key_evidence({"state": "stale in progress 5h 1m"}) == key_evidence({"state": "stale in progress 5h 2m"})
    assert key_evidence({"at_text": "since 2026-11-02T09:00:00+00:00"}) == key_evidence(
        {"at_text": "since 2026-11-02T09:07:13+00:00"})
    assert evidence_changes({"message": "probe 1a2b3c4d5e6f failed"}, {"message": "probe 9f8e7d6c5b4a failed"}) == []
    assert evidence_changes({"error": "AccessDenied"}, {"error": "NoSuchBucket"}) == [
        "error: AccessDenied → NoSuchBucket"]


def test_severity_change_is_typed_on_the_notification(store: Store) -> None:
    tracker = IncidentTracker(store)
    tracker.process(run(backlog(), started=at(0)), at(0))
    notes = tracker.process(run(backlog(severity="critical"), started=at(1)), at(1))
    assert all(n.severity_change == ("warning", "critical") for n in notes)
    assert notes[1].escalated_to_critical
    notes = tracker.process(run(backlog(), started=at(2)), at(2))
    assert notes[1].severity_change == ("critical", "warning") and not notes[1].escalated_to_critical
    notes = tracker.process(run(backlog(length=61), started=at(3)), at(3))
    assert [n.kind for n in notes] == ["update"] and notes[0].severity_change is None


# -- storms -------------------------------------------------------------------------------------------------------


def test_many_new_root_causes_in_one_run_are_one_storm_incident(store: Store) -> None:
    tracker = IncidentTracker(store, TrackerPolicy(storm_threshold=5))
    workers = [dead_worker(f"gpu-{i}") for i in range(40)]
    orphans = [orphaned_task(task=f"t-{i}", worker=f"gpu-{i}") for i in range(40)]
    notes = tracker.process(run(*workers, *orphans, started=at(0)), at(0))
    assert kinds(notes) == [("open", 1)]
    (storm,) = tracker.list_incidents()
    assert storm.storm == 40 and len(storm.members) == 80
    assert storm.title.startswith("Storm on prod: 80 problems started at once (40 likely causes")
    assert storm.severity == "critical"
    # the next run: the same problems are updates of the storm, a new unrelated one is its own incident
    notes = tracker.process(run(*workers, *orphans, backlog(), started=at(1)), at(1))
    assert sorted(kinds(notes)) == [("open", 2), ("update", 1)]
    # a few new ones stay under the threshold: ordinary incidents
    notes = tracker.process(run(*workers, *orphans, backlog(), unserved_queue(queue="q-9", worker="w-9"),
                                started=at(2)), at(2))
    assert ("open", 3) in kinds(notes)
    # the storm resolves when all of it does
    notes = tracker.process(run(backlog(), unserved_queue(queue="q-9", worker="w-9"), started=at(3)), at(3))
    assert ("resolve", 1) in kinds(notes)


def test_storm_threshold_zero_or_below_count_keeps_one_incident_per_cause(store: Store) -> None:
    tracker = IncidentTracker(store, TrackerPolicy(storm_threshold=0))
    tracker.process(run(*[dead_worker(f"gpu-{i}") for i in range(12)], started=at(0)), at(0))
    assert len(tracker.list_incidents()) == 12
    with pytest.raises(ValueError):
        TrackerPolicy(storm_threshold=1)


def test_incident_settings_defaults_and_validation() -> None:
    from pydantic import ValidationError

    from bot.config import Settings

    default = Settings().incidents.policy()
    assert default.settle_s == 60 and default.storm_threshold == 10 and default.resolve_after == 1
    custom = Settings.model_validate({"incidents": {"settle": "0s", "storm_threshold": 0, "refused_retry": "30s"}})
    assert custom.incidents.policy().settle_s == 0 and custom.incidents.refused_retry_s == 30
    for bad in ({"storm_threshold": 1}, {"settle": "soon"}, {"settle": -5}, {"surprise": 1}):
        with pytest.raises(ValidationError):
            Settings.model_validate({"incidents": bad})


def test_a_storm_still_settling_takes_in_the_next_runs_new_problems(store: Store) -> None:
    tracker = IncidentTracker(store, TrackerPolicy(storm_threshold=5, settle_s=60))
    first = [dead_worker(f"gpu-{i}") for i in range(6)]
    assert tracker.process(run(*first, started=T0), T0) == []
    later = T0 + timedelta(seconds=30)
    more = [dead_worker(f"cpu-{i}") for i in range(3)]
    assert tracker.process(run(*first, *more, started=later), later) == []
    notes = tracker.announce_due(T0 + timedelta(seconds=61))
    assert kinds(notes) == [("open", 1)]
    assert notes[0].incident.storm == 9 and len(tracker.list_incidents("all")) == 1


def test_a_slow_drift_is_told_once_it_doubles_and_consequences_only_when_they_change_state(store: Store) -> None:
    tracker = IncidentTracker(store)
    tracker.process(run(backlog(length=10), started=at(0)), at(0))
    # 10 -> 15 -> 19: each step small, never twice what was last told
    for minute, length in ((1, 15), (2, 19)):
        assert [n.kind for n in tracker.process(run(backlog(length=length), started=at(minute)), at(minute))] == [
            "update"]
    notes = tracker.process(run(backlog(length=21), started=at(3)), at(3))  # twice the 10 last told
    assert [n.kind for n in notes] == ["update", "reply"] and "length: 19 → 21" in notes[1].lines[0]
    assert [n.kind for n in tracker.process(run(backlog(length=30), started=at(4)), at(4))] == ["update"]
    # a consequence's evidence changing (its queue fills up) edits the root, the thread stays quiet
    other = IncidentTracker(store)
    other.process(run(dead_worker("gpu-7"), unserved_queue(queue="q-7", worker="gpu-7", length=2), started=at(5)),
                  at(5))
    notes = other.process(run(dead_worker("gpu-7"), unserved_queue(queue="q-7", worker="gpu-7", length=200),
                              started=at(6)), at(6))
    assert [n.kind for n in notes] == ["update"]


def test_a_finding_folded_into_its_root_is_not_a_recovery(store: Store) -> None:
    """Another playbook's run reports the backlog on its own; this run's correlation folds it into the unserved
    queue's finding (`suppressed`): the backlog did not pass, its incident keeps it."""
    from bot.engine.findings import SuppressedFinding

    tracker = IncidentTracker(store)
    tracker.process(run(backlog(queue="q-gpu"), started=at(0)), at(0))
    b = backlog(queue="q-gpu")
    root = unserved_queue(queue="q-gpu")
    root.suppressed = [SuppressedFinding(check=b.check, severity=b.severity, title=b.title, subject=b.subject,
                                         fingerprint=b.fingerprint)]
    root.suppressed_total = 1
    notes = tracker.process(run(root, started=at(1)), at(1))
    assert not any("passes again" in line for n in notes for line in n.lines)
    (inc,) = tracker.list_incidents("open")  # the root joined the backlog's incident: same queue
    assert {m.check for m in inc.members if m.state == "firing"} == {"queues.backlog", "agents.unserved_queues"}


def test_a_fleet_wide_silence_whose_agents_were_all_dropped_stays_open_as_gone(store: Store) -> None:
    mass = Finding(check="agents.stale", severity="critical", title="5 of 7 agents stopped reporting at the same time",
                   subject=Subject(kind="server", id="http://api:8008", name="agent fleet"),
                   fingerprint="agents.stale|mass|http://api:8008",
                   evidence={"count": 5, "silent_s_range": [120, 130], "workers": [f"w{i}" for i in range(5)]})
    tracker = IncidentTracker(store)
    everyone = {f"w{i}" for i in range(7)}
    tracker.process(listed(run(mass, started=at(0)), worker=everyone), at(0))
    grown = mass.model_copy(update={"evidence": {**mass.evidence, "silent_s_range": [400, 420]}})
    assert [n.kind for n in tracker.process(listed(run(grown, started=at(5)), worker=everyone), at(5))] == [
        "update"]  # the silence growing is not news
    notes = tracker.process(listed(run(started=at(11)), worker={"w5", "w6"}), at(11))
    assert [n.kind for n in notes] == ["update", "reply"]
    assert "no longer lists any of its 5 agents" in notes[1].lines[0]
    assert tracker.list_incidents("open")[0].gone
