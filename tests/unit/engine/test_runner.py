"""The runner: checks run concurrently over one snapshot; failures and slowness never stop a run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from bot.config import ServerSettings, Settings
from bot.engine.findings import Finding, Subject
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.registry import REGISTRY, CheckParams, check
from bot.engine.runner import run_playbooks
from bot.engine.snapshot import Snapshot

SERVER = ServerSettings(name="unit", api_url="http://127.0.0.1:9", web_url="http://w", files_url="http://f")


class Stats:
    calls = 0
    bytes_received = 0
    by_endpoint: dict[str, int] = {}


class CountingClient:
    """Stands in for the HTTP client at the snapshot's seam: counts fetches of one collection."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.fetches = 0

    async def call(self, endpoint: str, payload: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        self.fetches += 1
        self.stats.calls += 1
        await asyncio.sleep(0.05)
        return {"workers": [{"id": "w1", "last_activity_time": "2026-11-26T10:00:00+00:00"}]}

    def server_time(self) -> None:
        return None

    async def aclose(self) -> None:
        pass


class Many(CheckParams):
    count: int = 3


@pytest.fixture
def test_checks() -> Iterator[None]:
    @check("server.unit_boom")
    async def boom(snap: Snapshot, params: CheckParams) -> list[Finding]:
        """Always raises."""
        raise KeyError("last_activity_time")

    @check("server.unit_slow")
    async def slow(snap: Snapshot, params: CheckParams) -> list[Finding]:
        """Never finishes in time."""
        await asyncio.sleep(30)
        return []

    @check("agents.unit_many", params=Many)
    async def many(snap: Snapshot, params: Many) -> list[Finding]:
        """One warning per worker and index."""
        workers = await snap.workers()
        return [
            Finding(check="agents.unit_many", severity="warning", title=f"w{i}",
                    subject=Subject(kind="worker", id=f"{workers[0].id}-{i}"))
            for i in range(params.count)
        ]

    yield
    for cid in ("server.unit_boom", "server.unit_slow", "agents.unit_many"):
        REGISTRY.pop(cid, None)


def playbook(*entries: CheckEntry) -> Playbook:
    return Playbook(name="unit", checks=list(entries))


def run(pb: Playbook, client: CountingClient, deadline: float = 5) -> Any:
    snap = Snapshot(client, SERVER, Settings())  # type: ignore[arg-type]
    return asyncio.run(run_playbooks([pb], Settings(), SERVER, deadline_s=deadline, snapshot=snap))


def test_a_raising_check_becomes_an_error_finding_and_others_report(test_checks: None) -> None:
    result = run(playbook(CheckEntry(check="server.unit_boom"), CheckEntry(check="agents.unit_many")), CountingClient())
    errors = [f for f in result.findings if f.severity == "error"]
    assert len(errors) == 1 and errors[0].check == "server.unit_boom"
    assert "KeyError" in errors[0].detail and "last_activity_time" in errors[0].detail
    assert sum(1 for f in result.findings if f.check == "agents.unit_many") == 3
    assert {c.id: c.status for c in result.checks} == {"server.unit_boom": "error", "agents.unit_many": "failed"}
    assert result.exit_code == 1


def test_the_deadline_reports_unfinished_checks(test_checks: None) -> None:
    result = run(playbook(CheckEntry(check="server.unit_slow"), CheckEntry(check="agents.unit_many")),
                 CountingClient(), deadline=0.5)
    statuses = {c.id: c.status for c in result.checks}
    assert statuses["server.unit_slow"] == "timeout"
    assert statuses["agents.unit_many"] == "failed"
    assert result.duration_s < 5
    assert any("run deadline of 0.5s" in f.detail for f in result.findings)


def test_concurrent_checks_share_one_fetch(test_checks: None) -> None:
    client = CountingClient()
    result = run(
        playbook(*(CheckEntry(check="agents.unit_many", name=f"copy {i}", params={"count": 1}) for i in range(5))),
        client,
    )
    assert client.fetches == 1
    assert result.api_calls == 1


def test_max_findings_keeps_the_worst_and_summarises(test_checks: None) -> None:
    result = run(playbook(CheckEntry(check="agents.unit_many", params={"count": 250, "max_findings": 10})),
                 CountingClient())
    findings = [f for f in result.findings if f.check == "agents.unit_many"]
    assert len(findings) == 11
    summary = [f for f in findings if f.evidence.get("total") == 250]
    assert len(summary) == 1 and summary[0].evidence["omitted"] == 240


def test_severity_cap_from_the_playbook(test_checks: None) -> None:
    result = run(playbook(CheckEntry(check="agents.unit_many", severity="info")), CountingClient())
    assert {f.severity for f in result.findings} == {"info"}
    assert result.exit_code == 0


def test_the_same_check_in_two_playbooks_reports_each_subject_once(test_checks: None) -> None:
    client = CountingClient()
    snap = Snapshot(client, SERVER, Settings())  # type: ignore[arg-type]
    pbs = [playbook(CheckEntry(check="agents.unit_many", params={"count": 2})) for _ in range(2)]
    result = asyncio.run(run_playbooks(pbs, Settings(), SERVER, deadline_s=5, snapshot=snap))
    assert sorted(f.subject.id for f in result.findings) == ["w1-0", "w1-1"]
    assert len(result.checks) == 2
