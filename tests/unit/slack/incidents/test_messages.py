"""The incident renderer, the action buttons and the digest as Block Kit: always within Slack's limits (checked by the
fake Slack's validator), with a text fallback, buttons signed for the right subject, and no secret."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.actions import ActionDeps, ActionOutcome
from bot.actions.tokens import Signer
from bot.config import Settings
from bot.engine.findings import Finding, Subject
from bot.engine.runner import CheckRun, RunResult
from bot.incidents.pipeline import IncidentPipeline, Rendered
from bot.incidents.silences import add_silence
from bot.slack.actions.buttons import ButtonMaker
from bot.slack.actions.messages import (
    QUEUE_SELECT,
    peek,
    render_outcome_private,
    render_outcome_reply,
    replace_buttons,
)
from bot.slack.incidents.messages import (
    SlackIncidentRenderer,
    TakenAction,
    render_incident_list,
    render_schedules,
    render_silences,
)
from bot.slack.messages.report import render_run
from bot.store import Store
from tests.fakes.slack_api import validate_message
from tests.unit._incidents_support import at, backlog, dead_worker, orphaned_task, run, unserved_queue

SECRET = "s3cr3t-clearml-key-PLANTED-0042"
QUEUES = [(f"{i:032x}", f"queue-{i}") for i in range(150)]  # more than a select takes


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.db")
    yield s
    s.close()


@pytest.fixture
def maker(store: Store) -> ButtonMaker:
    # a rotate backend for the gpu workers: without one there is no "Restart agent" button
    settings = Settings.model_validate({"actions": {"rotate": {"backends": [
        {"match": "gpu-*", "type": "command",
         "argv": ["ssh", "{host}", "sudo", "systemctl", "restart", "clearml-agent"]}
    ]}}})
    return ButtonMaker(settings, store, ActionDeps(signer=Signer(b"unit-test-signing-key-0123456789")))


def payload(message: Rendered) -> dict[str, Any]:
    return {"text": message.text, "blocks": message.blocks}


def buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"] if e["type"] == "button"]


def renderer(maker: ButtonMaker, taken: list[TakenAction] | None = None) -> SlackIncidentRenderer:
    return SlackIncidentRenderer(
        buttons=lambda f, server: maker.for_finding(f, server), queues=lambda server: QUEUES,
        actions_taken=lambda view: taken or [], secrets=lambda: [SECRET],
    )


def pipeline(store: Store, r: SlackIncidentRenderer, sent: list[tuple[str, str, Rendered]]) -> IncidentPipeline:
    settings = Settings.model_validate({"slack": {"default_channel": "#ml-alerts"}})
    return IncidentPipeline(store, renderer=r, settings=settings, sink=lambda ch, kind, m: sent.append((ch, kind, m)))


def test_a_correlated_incident_root_names_cause_and_consequences_with_signed_buttons(
    store: Store, maker: ButtonMaker
) -> None:
    sent: list[tuple[str, str, Rendered]] = []
    pipe = pipeline(store, renderer(maker), sent)
    pipe.handle_run(run(dead_worker(), orphaned_task(), unserved_queue(), started=at(0)), at(0))
    (post, first) = [m for _, kind, m in sent if kind in ("post", "reply")]
    body = payload(post)
    assert validate_message(body) == []
    assert post.text.startswith("🔴 [CRITICAL] Worker gpu-3 silent")
    shown = json.dumps(body)
    assert "Likely cause" in shown and "Consequences (2)" in shown and "train-t-1" in shown
    texts = {b["text"]["text"]: b for b in buttons(body["blocks"])}
    assert {"Acknowledge", "Snooze 1h", "Snooze 4h", "Snooze 24h", "Resolve"} <= set(texts)
    # the suggested actions, each signed for its own subject: rotate the worker, requeue / abort the task
    assert peek(texts["Restart agent gpu-3"]["value"])["j"] == "gpu-3"  # type: ignore[index]
    assert peek(texts["Requeue train-t-1"]["value"])["j"] == "t-1"  # type: ignore[index]
    assert texts["Restart agent gpu-3"]["style"] == "danger" and texts["Abort train-t-1"]["style"] == "danger"
    assert "`ssh gpu-3 sudo systemctl restart clearml-agent`" in texts["Restart agent gpu-3"]["confirm"]["text"]["text"]
    assert texts["Abort train-t-1"]["confirm"]["style"] == "danger"
    select = [e for b in body["blocks"] if b["type"] == "actions" for e in b["elements"]
              if e.get("action_id") == QUEUE_SELECT]
    assert len(select) == 1 and len(select[0]["options"]) == 100  # Slack's limit for a select
    assert "Opened" in json.dumps(payload(first))


def test_an_action_already_taken_replaces_its_button_with_the_outcome_line(store: Store, maker: ButtonMaker) -> None:
    taken = [TakenAction("requeue", "t-1", "✅ Requeued by <@U1> at 14:02 UTC → <http://x|train-t-1>")]
    sent: list[tuple[str, str, Rendered]] = []
    pipeline(store, renderer(maker, taken), sent).handle_run(run(dead_worker(), orphaned_task(), started=at(0)), at(0))
    body = payload(sent[0][2])
    assert "Requeued by <@U1>" in json.dumps(body)
    assert "Requeue train-t-1" not in {b["text"]["text"] for b in buttons(body["blocks"])}
    assert "Abort train-t-1" in {b["text"]["text"] for b in buttons(body["blocks"])}


def test_huge_incidents_stay_within_limits_and_secrets_are_redacted(store: Store, maker: ButtonMaker) -> None:
    long = "x" * 5000
    findings = [dead_worker()]
    for i in range(60):
        f = orphaned_task(task=f"t-{i}")
        findings.append(f.model_copy(update={"title": f"Task t-{i} is orphaned {long}", "detail": f"{SECRET} {long}",
                                             "remediation": long}))
    sent: list[tuple[str, str, Rendered]] = []
    pipe = pipeline(store, renderer(maker), sent)
    pipe.handle_run(run(*findings, started=at(0)), at(0))
    pipe.handle_run(run(*findings[:30], started=at(5)), at(5))  # half recover: update + reply
    pipe.acknowledge(1, "<@U0ANA>", at(6))
    pipe.snooze(1, "<@U0ANA>", seconds=3600, now=at(7))
    pipe.handle_run(run(started=at(80)), at(80))  # all clean: resolved
    assert len(sent) >= 6
    for _channel, kind, message in sent:
        body = payload(message)
        assert validate_message(body) == [], (kind, validate_message(body))
        assert SECRET not in json.dumps(body) and SECRET not in message.text
        if kind != "reply":
            assert len(buttons(body["blocks"])) <= 5 + 10
    final = sent[-2][2] if sent[-1][1] == "reply" else sent[-1][2]
    assert final.text.startswith("✅ [RESOLVED]") and buttons(final.blocks or []) == []  # type: ignore[arg-type]


def test_the_digest_after_a_mixed_day_fits_one_message(store: Store, maker: ButtonMaker) -> None:
    sent: list[tuple[str, str, Rendered]] = []
    pipe = pipeline(store, renderer(maker), sent)
    for hour in range(24):
        findings = [backlog(queue=f"q-{i}", length=60 + hour) for i in range(hour % 7 * 5)]
        if hour < 12:
            findings += [dead_worker(worker=f"gpu-{hour}"), orphaned_task(task=f"t-{hour}", worker=f"gpu-{hour}")]
        result = run(*findings, started=at(hour * 60), checks=("agents.stale", "agents.orphaned_tasks",
                                                                "queues.backlog"))
        pipe.handle_run(result, at(hour * 60), run_id=store.record_run(result))
    digest = pipe.post_digest(at(24 * 60), channel="#ml-alerts")
    message = sent[-1][2]
    body = payload(message)
    assert validate_message(body) == []
    shown = json.dumps(body, ensure_ascii=False)
    assert "Digest" in message.text and "Resolved" in shown and "Top offenders" in shown and "Trends" in shown
    assert digest.more["resolved"] or len(digest.resolved) > 5


def test_action_replies_private_notes_and_button_replacement(store: Store, maker: ButtonMaker) -> None:
    failed = ActionOutcome(status="failed", action="requeue", server="prod", subject="t-1", text="Requeue failed",
                           mrkdwn="Requeue failed: the ClearML server is unavailable", retry=True, audit_id=7,
                           detail=["done: tasks.stop(task=t-1)", "FAILED: tasks.enqueue(task=t-1): unavailable"])
    follow = maker.after(failed, {"queue": "q1"})
    assert [b.text for b in follow] == ["Retry: requeue"]
    assert peek(follow[0].value)["p"] == {"queue": "q1"}  # type: ignore[index]
    reply = render_outcome_reply(failed, buttons=follow, queues=QUEUES[:3])
    assert validate_message({"text": reply.text, "blocks": reply.blocks_as_dicts()}) == []
    refused = failed.model_copy(update={"status": "failed", "retry": False,
                                        "error": "the ClearML server refused the status change: x (400/110)"})
    assert [b.text for b in maker.after(refused, {})] == ["Clone instead"]
    denied = failed.model_copy(update={"status": "denied", "text": "Not allowed: @x is not allowed to requeue."})
    assert "actions.allow" in json.dumps(render_outcome_private(denied).blocks_as_dicts())
    # the clicked block loses the buttons for that subject (and the select, when no button needs it any more)
    r1 = maker.make("requeue", "t-1", server="prod", subject_label="task t-1", text="Requeue t-1")
    r2 = maker.make("abort", "t-2", server="prod", subject_label="task t-2", text="Abort t-2")
    assert r1 is not None and r2 is not None
    from bot.slack.actions.messages import actions_block

    block = actions_block([r1, r2], block_id="acts:3", queues=QUEUES[:2])
    assert block is not None
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "report"}}, block.to_dict()]
    out = [b.to_dict() for b in replace_buttons(blocks, "acts:3", "t-1", "✅ Requeued by <@U1>") or []]
    assert out[1]["text"]["text"] == "✅ Requeued by <@U1>"
    assert [e.get("text", {}).get("text") for e in out[2]["elements"]] == ["Abort t-2"]  # the select went too


def test_run_report_gets_one_actions_block_per_group_within_limits(maker: ButtonMaker) -> None:
    findings = []
    for c in range(30):
        for i in range(4):
            findings.append(Finding(check=f"agents.check{c}", severity="critical", title=f"task {c}-{i} orphaned",
                                    subject=Subject(kind="task", id=f"{c:016x}{i:016x}", name=f"task-{c}-{i}"),
                                    actions=["requeue", "abort"]))
    result = RunResult(playbooks=["health"], server="prod", server_url="http://prod", started_at=at(0),
                       duration_s=1.0, api_calls=3, findings=findings,
                       checks=[CheckRun(f"agents.check{c}", f"agents.check{c}", "health", "failed", 0.1, 4)
                               for c in range(30)])
    message = render_run(result, buttons=lambda f: maker.for_finding(f, "prod"), queues=QUEUES)
    body = {"text": message.text, "blocks": message.blocks_as_dicts()}
    assert validate_message(body) == []
    groups = [b for b in body["blocks"] if b["type"] == "actions"]
    assert groups and all(len(b["elements"]) == 3 * 2 + 1 for b in groups)  # 3 findings shown x 2 actions + select
    assert "more" in json.dumps(body)  # the rest is summarised


def test_lists_for_incidents_silences_and_schedules(store: Store, maker: ButtonMaker) -> None:
    sent: list[tuple[str, str, Rendered]] = []
    pipe = pipeline(store, renderer(maker), sent)
    pipe.handle_run(run(dead_worker(), orphaned_task(), backlog(), started=at(0)), at(0))
    views = pipe.tracker.list_incidents("open")
    listing = render_incident_list(views, at(10), threads=lambda i: f"https://slack.com/archives/C1/p{i}")
    assert validate_message({"text": listing.text, "blocks": listing.blocks_as_dicts()}) == []
    assert "https://slack.com/archives/C1/p1" in json.dumps(listing.blocks_as_dicts())
    silence = add_silence(store, "agents.*", "2h", reason="kernel upgrade", by="<@U0ANA>", now=at(0))
    shown = render_silences([silence], at(0) + timedelta(minutes=30))
    assert "kernel upgrade" in json.dumps(shown.blocks_as_dicts()) and "unsilence" in json.dumps(
        shown.blocks_as_dicts())
    assert validate_message({"text": shown.text, "blocks": shown.blocks_as_dicts()}) == []
    schedules = render_schedules([], at(0))
    assert "No scheduled playbooks" in json.dumps(schedules.blocks_as_dicts())
