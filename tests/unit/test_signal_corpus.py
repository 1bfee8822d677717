"""The scored signal corpus (bench/signal): enough scenarios of every kind, each declaring its roots and healthy
subjects; and the scorer counts a consequence (`caused_by`) as belonging to its root, not as a false alarm."""

from __future__ import annotations

from bench.signal import Scenario, load_corpus, score
from bot.engine.findings import Finding, Subject


def test_the_corpus_covers_every_kind_of_scenario() -> None:
    corpus = load_corpus()
    assert len(corpus) >= 25
    names = [sc.name for sc in corpus]
    assert len(set(names)) == len(names)
    assert all(sc.healthy for sc in corpus)  # every scenario says which subjects must stay quiet
    for prefix in ("healthy-", "server-", "agents-", "queues-", "storage-", "repro-", "datasets-", "cascade-",
                   "two-", "fleet-"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert len([sc for sc in corpus if sc.name.startswith("healthy-") and not sc.roots]) >= 5
    assert all(len(sc.roots) == 2 for sc in corpus if sc.name.startswith("two-"))
    faults = {next(iter(f)) for sc in corpus for f in sc.faults}
    assert {"bad_credentials", "slow_server", "mass_silence", "fileserver_down"} <= faults
    # issue 15's checks: the 2 h watchdog, a known-bad agent/server pair, a read-only Elasticsearch
    assert {"watchdog_risk", "agent_version", "events_read_only"} <= faults
    assert any(sc.server_down for sc in corpus) and any(sc.history for sc in corpus)


def finding(check: str, severity: str, kind: str, name: str, caused_by: str | None = None) -> Finding:
    return Finding(check=check, severity=severity, title=f"{check} {name}",  # type: ignore[arg-type]
                   subject=Subject(kind=kind, id=name, name=name), caused_by=caused_by)  # type: ignore[arg-type]


def test_score_counts_consequences_with_their_root_and_strays_as_false_alarms() -> None:
    sc = Scenario(name="t", description="", fleet=None, scenario=None, faults=[], roots=[],
                  healthy=[{"kind": "*", "name": "*"}])
    agent = finding("agents.stale", "critical", "worker", "gpu-1:gpu0")
    orphan = finding("agents.orphaned_tasks", "critical", "task", "train-7", caused_by=agent.fingerprint)
    stray = finding("queues.backlog", "warning", "queue", "cpu")
    note = finding("agents.stale", "info", "worker", "gpu-2:gpu0")
    roots = [{"kind": "worker", "name": "gpu-1:*"}]
    found, problems, belonging, false_alarms, missed, strays = score(sc, roots, [agent, orphan, stray, note])
    assert (found, problems, belonging, false_alarms, missed) == (1, 3, 2, 1, [])
    assert strays == ["warning queues.backlog: queues.backlog cpu"]
    # a root named only by a consequence is not found
    assert score(sc, roots, [orphan])[0] == 0
