"""Message builders are pure: findings and look-up results in, Block Kit models out, always within Slack's limits,
with a text fallback, grouped and summarised readably, and with no secret in them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from slack_sdk.models.blocks import ActionsBlock, Block

from bot.engine.findings import Finding, Subject
from bot.engine.runner import CheckRun, RunResult
from bot.slack.commands.help import PlaybookInfo, render_checks, render_help, render_playbooks
from bot.slack.commands.lookups import (
    AgentsView,
    DatasetView,
    DiffView,
    EnvGap,
    FailingCheck,
    FailureCause,
    Meta,
    QueueState,
    QueuesView,
    StatusView,
    TaskBrief,
    TaskDiagnosis,
    WorkerState,
)
from bot.slack.commands.messages import (
    render_agents,
    render_dataset,
    render_diff,
    render_queues,
    render_status,
    render_task,
)
from bot.slack.messages.common import MAX_BLOCKS, SlackMessage, chunk_lines, escape, link
from bot.slack.messages.report import ReportOptions, render_run, render_run_details, summary_phrase
from tests.fakes.slack_api import validate_message

SECRET = "s3cr3t-clearml-key-PLANTED-0042"
META = Meta(
    server="prod",
    server_url="https://api.clearml.example",
    web_url="https://app.clearml.example",
    duration_s=1.234,
    api_calls=7,
)


def finding(check: str, severity: str, i: int, **kw: Any) -> Finding:
    return Finding(
        check=check,
        severity=severity,  # type: ignore[arg-type]
        title=kw.pop("title", f"{check} problem number {i}"),
        subject=Subject(kind="worker", id=f"worker-{i}", name=f"worker-{i}"),
        evidence=kw.pop("evidence", {"silent_s": 600 + i, "queues": ["gpu", "cpu"]}),
        related=kw.pop("related", [Subject(kind="queue", id="related-queue-x")]),
        links=[f"https://app.clearml.example/workers?id=worker-{i}"],
        remediation=kw.pop("remediation", "Restart the agent."),
        **kw,
    )


def result(findings: list[Finding], checks: int = 5, playbook: str = "health") -> RunResult:
    return RunResult(
        playbooks=[playbook],
        server="prod",
        server_url="https://api.clearml.example",
        started_at=datetime(2026, 11, 26, tzinfo=UTC),
        duration_s=2.5,
        api_calls=12,
        findings=findings,
        checks=[CheckRun(f"check.{i}", f"check.{i}", playbook, "ok", 0.1) for i in range(checks)],
    )


def as_payload(message: SlackMessage) -> dict[str, Any]:
    return {"text": message.text, "blocks": message.blocks_as_dicts()}


def assert_within_limits(message: SlackMessage) -> dict[str, Any]:
    payload = as_payload(message)  # slack_sdk validates each block here
    assert validate_message(payload) == []
    assert len(payload["blocks"]) <= MAX_BLOCKS
    assert message.text and len(message.text) <= 300
    return payload


def test_a_clean_run() -> None:
    message = render_run(result([]))
    payload = assert_within_limits(message)
    assert message.text == "health on prod: all checks passed"
    assert payload["blocks"][0]["type"] == "header" and "🟢" in payload["blocks"][0]["text"]["text"]
    context = payload["blocks"][-1]
    assert context["type"] == "context"
    line = json.dumps(context)
    assert "prod" in line and "2.5 s" in line and "12 API calls" in line


def test_findings_are_grouped_by_severity_then_check_with_the_worst_examples() -> None:
    findings = [finding("agents.stale", "warning", i) for i in range(5)] + [
        finding("agents.stale", "critical", 10),
        finding("queues.backlog", "critical", 11),
        finding("server.tls", "info", 12),
    ]
    message = render_run(result(findings), opts=ReportOptions(requested_by="U123"))
    payload = assert_within_limits(message)
    texts = [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section"]
    order = [t.split("*")[1] for t in texts[1:]]  # "<emoji> *check* — n findings"
    assert order == [
        "agents.stale",
        "queues.backlog",
        "agents.stale",
        "server.tls",
    ]  # critical, critical, warning, info
    warning_group = texts[3]
    assert "5 findings" in warning_group and "…and 2 more" in warning_group and "--all" in warning_group
    assert "<https://app.clearml.example/workers?id=worker-0|worker-0>" in warning_group  # the subject link
    assert "silent: 10m" in warning_group and "→ Restart the agent." in warning_group
    assert "related" not in warning_group  # machine-only data (the related subjects) stays out
    assert message.text == "health on prod: 2 critical · 5 warnings · 1 note"
    assert "<@U123>" in json.dumps(payload["blocks"][-1])


def test_thousands_of_findings_stay_within_one_message_and_say_how_to_see_the_rest() -> None:
    findings = [finding(f"agents.check{c:02d}", "warning", i) for c in range(60) for i in range(30)]
    findings += [finding("queues.backlog", "critical", i) for i in range(40)]
    message = render_run(result(findings))
    payload = assert_within_limits(message)
    last_section = [b for b in payload["blocks"] if b["type"] == "section"][-1]["text"]["text"]
    assert last_section.startswith("_…and ") and "more warnings" in last_section
    assert "`/clearml run health --all`" in last_section
    shown = sum(1 for b in payload["blocks"] if b["type"] == "section") - 2
    hidden_checks = 60 - (shown - 1)
    assert f"{hidden_checks * 30} more warnings" in last_section
    assert payload["blocks"][-1]["type"] == "context"


def test_huge_texts_are_clipped_not_refused() -> None:
    big = finding(
        "repro.failure_causes",
        "critical",
        1,
        title="x" * 5000,
        remediation="y" * 5000,
        evidence={"lines": ["z" * 4000], "message": "w" * 4000},
    )
    message = render_run(result([big] * 3))
    assert_within_limits(message)


def test_details_pages_list_every_finding() -> None:
    findings = [finding(f"agents.check{c:02d}", "warning", i) for c in range(60) for i in range(30)]
    pages = render_run_details(result(findings))
    assert len(pages) > 1
    everything = json.dumps([as_payload(p) for p in pages])
    for c in range(60):
        assert f"agents.check{c:02d}" in everything
    assert "worker-29" in everything
    for page in pages:
        assert_within_limits(page)


def test_secrets_and_markup_in_findings_are_neutralised() -> None:
    f = finding(
        "storage.upload_failures",
        "warning",
        1,
        title="Upload failed <!channel> & <https://evil.example|click>",
        evidence={"line": f"aws_secret_access_key={SECRET} token xoxb-1234567890-abcdefghij"},
    )
    message = render_run(result([f]), secrets=[SECRET])
    dump = json.dumps(as_payload(message))
    assert SECRET not in dump and "xoxb-1234567890" not in dump
    assert "<!channel>" not in dump and "&lt;!channel&gt;" in dump  # no @channel ping from a task name
    assert "evil.example|click" not in dump.replace("&lt;https://evil.example|click&gt;", "")


def test_summary_phrase() -> None:
    assert summary_phrase([]) == "all checks passed"
    assert summary_phrase([finding("a.b", "error", 1)]) == "1 error"
    assert summary_phrase([finding("a.b", "critical", 1), finding("a.b", "warning", 2)]) == "1 critical · 1 warning"


def test_helpers() -> None:
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    assert link("https://x.example/a", "A") == "<https://x.example/a|A>"
    assert link("javascript:alert(1)", "A") == "A"
    assert link(None, "A|B") == "A¦B"
    chunks = chunk_lines(["a" * 2000, "b" * 2000, "c" * 10])
    assert chunks == ["a" * 2000, "b" * 2000 + "\n" + "c" * 10]
    with pytest.raises(ValueError):
        SlackMessage(text=" ")


def test_message_refuses_more_than_fifty_blocks() -> None:
    from slack_sdk.models.blocks import DividerBlock

    blocks: list[Block] = [DividerBlock() for _ in range(51)]
    with pytest.raises(ValueError, match="at most 50"):
        SlackMessage(text="x", blocks=blocks)


# -- look-ups ---------------------------------------------------------------------------------------------------


def workers(n: int) -> list[WorkerState]:
    states = ("alive", "stale", "dead")
    return [
        WorkerState(
            f"gpu-box-{i}:gpu0",
            states[i % 3],
            30.0 * i,
            f"{i:032x}" if i % 2 else None,
            f"train-{i}",
            ["gpu", "gpu-large"],
            f"https://app/w?id={i}",
            f"https://app/t/{i}",
        )
        for i in range(n)
    ]


def test_agents_view_with_thousands_of_agents() -> None:
    view = AgentsView(META, None, 120, 480, workers(2000), 2000)
    message = render_agents(view, requested_by="U1")
    payload = assert_within_limits(message)
    dump = json.dumps(payload)
    assert "more agents" in dump and "/clearml agents <pattern>" in dump
    assert message.text.startswith("Agents on prod:")


def test_agents_view_empty_and_filtered() -> None:
    empty = render_agents(AgentsView(META, "nope*", 120, 480, [], 12))
    assert "No registered agent matching `nope*` (of 12)" in json.dumps(as_payload(empty))
    none = render_agents(AgentsView(META, None, 120, 480, [], 0))
    assert "clearml-agent daemon" in json.dumps(as_payload(none))


def test_queues_view() -> None:
    queues = [
        QueueState(f"q{i}", f"queue-{i}", i % 4, 3600.0 * i if i % 4 else None, i % 2, 2, f"https://app/q/{i}")
        for i in range(500)
    ]
    payload = assert_within_limits(render_queues(QueuesView(META, queues)))
    assert "nobody serves it" in json.dumps(payload)


def test_status_view_states() -> None:
    down = StatusView(META, reachable=False, error="debug.ping: connection refused")
    payload = assert_within_limits(render_status(down))
    assert "unreachable" in payload["text"] and "connection refused" in json.dumps(payload)
    up = StatusView(
        META,
        reachable=True,
        latency_ms=12.3,
        version="2.0.0",
        api_version="2.31",
        agents={"alive": 3, "stale": 1, "dead": 2},
        busy=2,
        backlog=[QueueState("q", "gpu", 9, 7200, 0, 1, "https://app/q")],
        failing=[
            FailingCheck("agents.stale", "critical", 3, "Agent gpu-1 silent"),
            FailingCheck("queues.backlog", "warning", 1, "Queue gpu backed up"),
        ],
        playbook="health",
    )
    message = render_status(up)
    payload = assert_within_limits(message)
    dump = json.dumps(payload)
    assert message.text == "prod: 1 critical, 1 warning"
    assert "3 alive (2 busy)" in dump and "9 waiting" in dump and "no live agent" in dump and "agents.stale" in dump


def test_task_view() -> None:
    diag = TaskDiagnosis(
        meta=META,
        id="a" * 32,
        name="train <b>",
        status="failed",
        type="training",
        project="vision",
        user="u",
        status_reason="exit code 1",
        status_message=f"password={SECRET}",
        link="https://app/t",
        worker=WorkerState("gpu-1", "dead", 9000, None, "", ["gpu"], "https://app/w"),
        worker_id="gpu-1",
        queue="gpu",
        queue_link="https://app/q",
        queue_workers_alive=0,
        failure=FailureCause(
            "missing_module",
            "missing Python module",
            "Add it to the requirements.",
            ["ModuleNotFoundError: No module named 'timm'", "`weird` line"],
        ),
        env_gaps=[EnvGap("unpinned_requirements", "torch, numpy")],
        actions=["requeue", "clone"],
        notes=["Its agent is gone."],
    )
    message = render_task(diag, secrets=[SECRET])
    payload = assert_within_limits(message)
    dump = json.dumps(payload)
    assert SECRET not in dump and "train &lt;b&gt;" in dump
    assert "missing Python module" in dump and "timm" in dump and "unpinned requirements" in dump
    assert "requeue it" in dump


def test_diff_and_dataset_views() -> None:
    diff = DiffView(
        META,
        TaskBrief("a" * 32, "A", "completed", "https://app/a"),
        TaskBrief("b" * 32, "B", "failed", "https://app/b"),
        findings=[],
        differences=[(f"requirements pkg{i}", "==1.0", "==2.0") for i in range(800)],
    )
    assert_within_limits(render_diff(diff))
    same = DiffView(META, diff.a, diff.b, findings=[])
    assert "No difference" in json.dumps(as_payload(render_diff(same)))
    ds = DatasetView(
        META,
        "d" * 32,
        "cifar",
        "vision",
        "1.0.0",
        "completed",
        "https://app/d",
        file_count=3,
        total_size=5 * 1024 * 1024,
        can_verify=True,
        findings=[finding("datasets.incomplete", "critical", 1)],
    )
    message = render_dataset(ds, button_value='{"server":"prod","dataset":"ddd"}')
    payload = assert_within_limits(message)
    assert "incomplete or broken" in message.text and "5.0 MB" in json.dumps(payload)
    actions = [b for b in message.blocks if isinstance(b, ActionsBlock)]
    assert len(actions) == 1
    no_button = render_dataset(ds)  # without a value (e.g. rendered for the CLI) there is no button
    assert not [b for b in no_button.blocks if isinstance(b, ActionsBlock)]


def test_help_lists_and_playbooks() -> None:
    assert_within_limits(render_help("/ops"))
    assert "/ops run <playbook>" in json.dumps(as_payload(render_help("/ops")))
    infos = [PlaybookInfo(f"pb{i}", "desc " * 50, 3, "*/5 * * * *", "#ops") for i in range(300)]
    infos.append(PlaybookInfo("broken", error="broken.yaml:3: unknown check `x`"))
    assert_within_limits(render_playbooks(infos, "playbooks"))
    from bot.engine.registry import REGISTRY, load_builtin_checks

    load_builtin_checks()
    assert_within_limits(render_checks(list(REGISTRY.values())))
