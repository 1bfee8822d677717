"""Idempotency keys in the action_runs table: one winner across threads and connections, retry after a
failure, takeover of an abandoned run, success locks for good."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.actions import runs
from bot.actions.base import Actor
from bot.store import Store

NOW = datetime(2026, 11, 26, 14, 2, tzinfo=UTC)
ANA, BOB = Actor("U1", "ana"), Actor("U2", "bob")


def claim(store: Store, actor: Actor, key: str = "k1", now: datetime = NOW) -> runs.RunRow | None:
    return runs.claim(store, key, actor=actor, action="clone", server="prod", subject="t1", now=now)


def test_exactly_one_claim_wins_across_connections(tmp_path: Path) -> None:
    stores = [Store(tmp_path / "store.db") for _ in range(4)]  # like separate processes
    results: list[runs.RunRow | None] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        results.append(claim(stores[i % 4], ANA if i % 2 else BOB))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8  # every claim answered: none failed "database is locked"
    assert results.count(None) == 1
    assert all(r is not None and r.status == "running" for r in results if r is not None)


def test_failed_runs_may_be_retried_ok_runs_never(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.db")
    assert claim(store, ANA) is None
    runs.finish(store, "k1", status="failed", outcome={"text": "ClearML down"}, now=NOW)
    assert claim(store, BOB) is None  # the retry button
    runs.finish(store, "k1", status="ok", outcome={"text": "Cloned by @bob"}, now=NOW + timedelta(minutes=1))
    again = claim(store, ANA)
    assert again is not None and again.status == "ok" and again.actor_label == "@bob"
    assert again.outcome == {"text": "Cloned by @bob"} and again.finished_at == NOW + timedelta(minutes=1)


def test_an_abandoned_running_claim_is_taken_over_after_a_while(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.db")
    assert claim(store, ANA) is None
    busy = claim(store, BOB, now=NOW + timedelta(minutes=5))
    assert busy is not None and busy.status == "running"
    assert claim(store, BOB, now=NOW + timedelta(seconds=runs.STALE_AFTER_S + 1)) is None
