"""Silences: parsing the command, what a pattern matches, listing, cancelling, and expiring by themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.incidents.silences import (
    SilenceError,
    active_silences,
    add_silence,
    cancel_silence,
    matching_silence,
    parse_silence_args,
)
from bot.slack.incidents.messages import render_silences
from bot.store import Store
from tests.unit._incidents_support import at, backlog, dead_worker, orphaned_task, storage_down


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store.db")
    yield s  # type: ignore[misc]
    s.close()


def test_parse_the_command() -> None:
    assert parse_silence_args("agents.stale 2h kernel upgrade on gpu boxes") == (
        "agents.stale", 7200.0, "kernel upgrade on gpu boxes")
    assert parse_silence_args("worker:gpu-* 90m") == ("worker:gpu-*", 5400.0, "")
    for bad, message in [("", "needs a pattern and a duration"), ("agents.stale", "needs a pattern and a duration"),
                         ("agents.stale soon", "not a duration"), ("* 1h", "would silence every check"),
                         ("agents.stale 0s", "must be positive"), ("agents.stale 90d", "longer than the longest")]:
        with pytest.raises(SilenceError, match=message):
            parse_silence_args(bad)


@pytest.mark.parametrize(
    ("pattern", "silenced"),
    [
        ("agents.stale", {"stale"}),
        ("agents.*", {"stale", "orphaned"}),
        ("gpu-3", {"stale", "orphaned"}),  # the worker, and what names it as its cause
        ("worker:gpu-*", {"stale", "orphaned"}),
        ("agents.stale:gpu-*", {"stale"}),
        ("cpu", {"backlog"}),  # a queue by name
        ("queue:q-cpu", {"backlog"}),  # ... or by id
        ("s3://ml-artifacts/*", {"storage"}),
        ("datasets.*", set()),
    ],
)
def test_what_a_pattern_matches(store: Store, pattern: str, silenced: set[str]) -> None:
    add_silence(store, pattern, "1h", now=at(0))
    findings = {"stale": dead_worker(), "orphaned": orphaned_task(), "backlog": backlog(), "storage": storage_down()}
    active = active_silences(store, at(1))
    assert {name for name, f in findings.items() if matching_silence(active, f)} == silenced


def test_list_cancel_and_expire(store: Store) -> None:
    a = add_silence(store, "agents.*", "30m", reason="maintenance", by="U0ALICE", now=at(0))
    b = add_silence(store, "queues.backlog", "2h", now=at(0))
    assert [s.id for s in active_silences(store, at(1))] == [a.id, b.id]  # soonest to end first
    text = json.dumps(render_silences(active_silences(store, at(10)), at(10)).blocks_as_dicts())
    assert f"#{a.id} `agents.*` for 20m more by U0ALICE: maintenance" in text
    # Expired: gone without anyone doing anything.
    assert [s.id for s in active_silences(store, at(30))] == [b.id]
    cancelled = cancel_silence(store, b.id, by="U0BOB", now=at(31))
    assert cancelled is not None and cancelled.cancelled_by == "U0BOB" and not cancelled.active(at(31))
    assert cancel_silence(store, b.id, now=at(32)) is None
    assert active_silences(store, at(32)) == []
    assert "Nothing is silenced." in json.dumps(render_silences([], at(32)).blocks_as_dicts())
