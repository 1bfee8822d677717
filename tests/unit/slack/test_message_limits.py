"""Every message within Slack's real limits, total text included (`msg_blocks_too_long`): a run report and its
`--all` pages with hundreds of long findings, an incident with long evidence and many consequences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.config import Settings
from bot.engine.findings import Finding, Subject
from bot.engine.runner import CheckRun, RunResult
from bot.incidents.pipeline import IncidentPipeline
from bot.slack.delivery import Outbox
from bot.slack.incidents.messages import SlackIncidentRenderer
from bot.slack.messages.common import MAX_MESSAGE_TEXT, block_text_length, fit_lines
from bot.slack.messages.report import render_run, render_run_details
from bot.store import Store
from tests.fakes.slack_api import validate_message
from tests.unit._incidents_support import at, dead_worker, run


def big_run(checks: int = 34, per_check: int = 12) -> RunResult:
    findings = []
    for c in range(checks):
        for i in range(per_check):
            findings.append(Finding(
                check=f"queues.check{c}", severity=("critical", "warning", "error")[c % 3],
                title=f"Task {c}-{i} waits in a queue nobody serves " + "x" * 120,
                subject=Subject(kind="task", id=f"{c:016x}{i:016x}", name=f"task-{c}-{i}"),
                evidence={"queue": "gpu-" + "y" * 60, "waited": "3h 2m", "note": "z" * 90},
                remediation="Start an agent on the queue: " + "w" * 300,
                detail="d" * 300,
            ))
    return RunResult(playbooks=["health"], server="prod", server_url="http://prod", started_at=at(0), duration_s=1.0,
                     api_calls=3, findings=findings,
                     checks=[CheckRun(f"queues.check{c}", f"queues.check{c}", "health", "failed", 0.1, per_check)
                             for c in range(checks)])


def within_limits(text: str, blocks: list[dict[str, object]]) -> None:
    assert validate_message({"text": text, "blocks": blocks}) == []
    assert block_text_length(blocks) <= MAX_MESSAGE_TEXT


def test_run_all_is_split_into_messages_within_the_total_text_limit() -> None:
    """`/clearml run health --all` once posted one message of 34 sections and ~92k characters."""
    result = big_run()
    pages = render_run_details(result)
    assert len(pages) > 5
    total = 0
    for page in pages:
        blocks = page.blocks_as_dicts()
        within_limits(page.text, blocks)
        total += sum(1 for b in blocks if b["type"] == "section")
    # nothing lost: every finding's title is on some page
    shown = "".join(json.dumps(p.blocks_as_dicts()) for p in pages)
    assert all(f"Task {c}-{i} waits" in shown for c in range(34) for i in range(12))
    assert pages[0].text.endswith(f"(1/{len(pages)})")


def test_the_run_report_itself_stays_within_the_total_text_limit() -> None:
    message = render_run(big_run())
    blocks = message.blocks_as_dicts()
    within_limits(message.text, blocks)
    assert "more" in json.dumps(blocks)  # the rest is summarised with the command that shows it


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store.db")
    yield s  # type: ignore[misc]
    s.close()


def test_an_incident_with_long_evidence_and_many_consequences_fits(store: Store) -> None:
    cause = dead_worker()
    cause.evidence.update({f"field{i}": "v" * 2000 for i in range(10)})
    cause.detail = "d" * 5000
    cause.remediation = "r" * 5000
    consequences = [
        Finding(check="agents.orphaned_tasks", severity="warning", title="T" * 400 + f" {i}",
                subject=Subject(kind="task", id=f"t-{i}", name="n" * 300),
                evidence={"long": "l" * 3000}, related=[Subject(kind="worker", id="gpu-3")], detail="q" * 3000)
        for i in range(40)
    ]
    box = Outbox(store)
    pipe = IncidentPipeline(store, outbox=box, renderer=SlackIncidentRenderer(),
                            settings=Settings.model_validate({"slack": {"default_channel": "#a"}}))
    pipe.handle_run(run(cause, *consequences, started=at(0)), at(0))
    pipe.handle_run(run(cause, *consequences[:3], started=at(1)), at(1))
    rows = store.db.execute("SELECT key, payload FROM outbox").fetchall()
    assert len(rows) >= 3
    for key, payload in rows:
        body = json.loads(payload)
        within_limits(body["text"], body["blocks"])
        assert "Acknowledge" in payload or not key.endswith(":root")  # the root kept its blocks, not plain text


def test_fit_lines_says_how_many_were_left_out() -> None:
    lines = [f"line {i} " + "x" * 90 for i in range(100)]
    kept = fit_lines(lines, 1000)
    assert sum(len(line) + 1 for line in kept) <= 1000
    assert kept[-1] == f"_…and {100 - len(kept) + 1} more_"
    assert fit_lines(["a", "b"], 1000) == ["a", "b"]


def test_any_message_over_the_total_text_limit_is_cut_saying_so() -> None:
    """The safety net under every builder: a message Slack would refuse is cut, keeps its closing hints."""
    from bot.slack.messages.common import CUT_NOTE, SlackMessage, context, header, section

    message = SlackMessage(text="big", blocks=[header("Big"), *[section(f"{i} " + "x" * 2900) for i in range(40)],
                                               context("hint: narrow it down")])
    blocks = message.blocks_as_dicts()
    within_limits(message.text, blocks)
    assert blocks[0]["type"] == "header" and blocks[-1]["elements"][0]["text"] == "hint: narrow it down"
    assert blocks[-2]["text"]["text"] == CUT_NOTE
    small = SlackMessage(text="small", blocks=[section("a"), context("b")])
    assert small.blocks_as_dicts() == [b.to_dict() for b in small.blocks]
