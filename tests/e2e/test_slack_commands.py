"""Every `/clearml` subcommand over real HTTP: signed slash commands into the bot (uvicorn + Bolt), ClearML answered by
the simulator, Slack's side recorded by the fake Web API; the assertions read what a user would see."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.sim.server import SimServer
from bot.slack.serve import BotServer
from tests.e2e.conftest import (
    FAILED_TASK,
    QUEUED_TASK,
    RUNNING_TASK,
    UNKNOWN_TASK,
    USER,
    HttpBot,
    bot_env,
    sim_settings,
)
from tests.fakes.slack_api import Call, FakeSlack


def blocks_text(call: Call | dict[str, Any]) -> str:
    args = call.args if isinstance(call, Call) else call
    blocks = args.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return str(args.get("text", "")) + "\n" + json.dumps(blocks, ensure_ascii=False)


def result_of(bot: HttpBot, timeout: float = 20.0) -> tuple[Call, Call]:
    """The placeholder post and the chat.update that replaced it."""
    post = bot.slack.wait_for("chat.postMessage", timeout=timeout)[0]
    update = bot.slack.wait_for("chat.update", timeout=timeout)[0]
    assert update.args["ts"] == post.response["ts"] and update.args["channel"] == post.response["channel"]
    return post, update


def test_status_acks_at_once_then_replaces_the_placeholder_with_the_overview(http_bot: HttpBot) -> None:
    start = time.monotonic()
    resp, _ = http_bot.command("status")
    assert resp.status_code == 200 and time.monotonic() - start < 2.0
    assert resp.content in (b"", b"{}") or not resp.json().get("text")  # an empty ack: the answer comes as a message
    post, update = result_of(http_bot)
    assert post.args["channel"] == "C0GENERAL"
    assert "Running" in post.args["text"] and f"<@{USER}>" in blocks_text(post)
    text = blocks_text(update)
    assert update.args["text"].startswith("prod:")
    assert "Server" in text and "reachable" in text and "Agents" in text and "2 alive" in text
    assert "default" in text and "1 waiting" in text  # the queued task's queue has a backlog
    assert "API call" in text and "requested by" in text  # the context line
    assert http_bot.slack.violations == []
    # the final message is what the channel now shows
    shown = http_bot.slack.message("C0GENERAL", post.response["ts"])
    assert shown is not None and shown.get("edited")


def test_help_and_empty_text_answer_privately_in_the_ack(http_bot: HttpBot) -> None:
    for text in ("help", "", "   "):
        resp, _ = http_bot.command(text)
        body = resp.json()
        assert body["response_type"] == "ephemeral"
        dump = json.dumps(body)
        for sub in (
            "run <playbook>",
            "status",
            "agents",
            "queues",
            "task <id|url>",
            "diff",
            "dataset",
            "playbooks",
            "checks",
        ):
            assert sub in dump
    assert http_bot.slack.calls_to("chat.postMessage") == []


def test_unknown_subcommand_suggests_the_closest(http_bot: HttpBot) -> None:
    resp, _ = http_bot.command("stauts")
    body = resp.json()
    assert body["response_type"] == "ephemeral"
    assert "stauts" in body["text"] and "/clearml status" in body["text"]
    resp, _ = http_bot.command("agnets gpu")
    assert "/clearml agents" in resp.json()["text"]
    resp, _ = http_bot.command("%%% $$$ ???")
    dump = json.dumps(resp.json())
    assert "I don't know the subcommand" in dump and "/clearml status" in dump  # the usage list


def test_bad_arguments_get_usage_with_what_to_type(http_bot: HttpBot) -> None:
    cases = {
        "task": "needs a task id",
        "task not-an-id": "is not a task id",
        "diff " + FAILED_TASK: "needs two task ids",
        "queues now please": "takes no arguments",
        "run": "needs a playbook name",
        "run health --everything": "has no option",
        "run health prod extra": "at most 2 arguments",
        "task " + "f" * 5000: "characters long",
        "dataset x" + "y" * 400: "characters long",
    }
    for text, expected in cases.items():
        resp, _ = http_bot.command(text)
        assert resp.status_code == 200
        body = resp.json()
        assert body["response_type"] == "ephemeral", text
        assert expected in json.dumps(body), (text, body["text"])
        assert len(json.dumps(body)) < 6000  # a huge argument is never echoed back whole
    assert http_bot.slack.calls_to("chat.postMessage") == []


def test_agents_with_a_pattern(http_bot: HttpBot) -> None:
    http_bot.command("agents gpu")
    _, update = result_of(http_bot)
    text = blocks_text(update)
    assert "gpu-box-1:gpu0" in text and "cpu-box-1:0" not in text
    assert "train-resnet" in text  # what it is running


def test_queues(http_bot: HttpBot) -> None:
    http_bot.command("queues")
    _, update = result_of(http_bot)
    text = blocks_text(update)
    for queue in ("default", "gpu", "services"):
        assert queue in text
    assert "1 waiting" in text


def test_task_diagnosis_of_a_failed_task_from_its_web_link(http_bot: HttpBot) -> None:
    link = f"{http_bot.sim.web_url}/projects/abc/experiments/{FAILED_TASK}/output/log"
    http_bot.command(f"task <{link}>")
    _, update = result_of(http_bot)
    text = blocks_text(update)
    assert "train-vit-failed" in text and "failed" in text
    assert "missing_module" in text and "No module named" in text and "timm" in text
    assert "gpu-box-1:gpu0" in text  # its worker
    # the cause's button first: a missing module needs fixed requirements (clone); a plain rerun would fail again
    assert 0 <= text.index("clone it and run the copy") < text.index("requeue it (stop")


def test_task_diagnosis_of_a_queued_task_shows_its_queue_position(http_bot: HttpBot) -> None:
    http_bot.command(f"task {QUEUED_TASK}")
    _, update = result_of(http_bot)
    text = blocks_text(update)
    assert "queued" in text and "position 1 of 1" in text and "default" in text
    assert "Environment capture gaps" in text  # this task recorded no requirements


def test_unknown_task_id_removes_the_placeholder_and_answers_privately(http_bot: HttpBot) -> None:
    _, response_url = http_bot.command(f"task {UNKNOWN_TASK}")
    post = http_bot.slack.wait_for("chat.postMessage")[0]
    http_bot.slack.wait_for("chat.delete")
    reply = http_bot.slack.wait_for("response_url")[0]
    assert reply.args["response_type"] == "ephemeral"
    assert reply.args["_url_id"] == response_url.rsplit("/", 1)[-1]
    text = blocks_text(reply)
    assert UNKNOWN_TASK in text and "400/101" in text and "/clearml task" in text
    assert http_bot.slack.message("C0GENERAL", post.response["ts"]) is None  # nothing left in the channel
    assert http_bot.slack.calls_to("chat.update") == []


def test_a_link_to_another_clearml_server_is_refused_at_once(http_bot: HttpBot) -> None:
    resp, _ = http_bot.command(f"task https://app.other-clearml.example.com/projects/x/experiments/{FAILED_TASK}")
    body = resp.json()
    assert body["response_type"] == "ephemeral"
    assert "app.other-clearml.example.com" in body["text"] and "prod" in json.dumps(body)
    assert http_bot.slack.calls_to("chat.postMessage") == []


def test_diff_two_tasks(http_bot: HttpBot) -> None:
    http_bot.command(f"diff {RUNNING_TASK} {FAILED_TASK}")
    _, update = result_of(http_bot)
    text = blocks_text(update)
    assert "train-resnet" in text and "train-vit-failed" in text
    assert "commit.version_num" in text and "numpy" in text


def test_playbooks_and_checks_lists(http_bot: HttpBot) -> None:
    body = http_bot.command("playbooks")[0].json()
    dump = json.dumps(body)
    assert body["response_type"] == "ephemeral"
    assert "health" in dump and "agents" in dump
    assert "broken" in dump and "agents.stael" in dump and "agents.stale" in dump  # what to fix, with the suggestion
    body = http_bot.command("checks")[0].json()
    dump = json.dumps(body)
    for check_id in ("server.reachable", "agents.stale", "queues.backlog", "repro.compare", "datasets.integrity"):
        assert check_id in dump


def test_run_posts_the_report_and_records_the_run(http_bot: HttpBot) -> None:
    http_bot.command("run health")
    _, update = result_of(http_bot)
    text = blocks_text(update)
    assert update.args["text"].startswith("health on prod")
    assert "queues.backlog" in text and "3 checks ran" in text
    assert "API call" in text
    store = http_bot.server.store
    assert store is not None
    runs = store.runs()
    assert runs and runs[0]["trigger"] == "slack" and json.loads(runs[0]["playbooks"]) == ["health"]


def test_run_all_posts_every_finding_in_the_thread(http_bot: HttpBot) -> None:
    http_bot.command("run health --all")
    post, _ = result_of(http_bot)
    replies = http_bot.slack.wait_for("chat.postMessage", count=2)
    thread = [c for c in replies if c.args.get("thread_ts") == post.response["ts"]]
    assert thread and "queues.backlog" in blocks_text(thread[0])


def test_unknown_or_broken_playbook_is_answered_privately(http_bot: HttpBot) -> None:
    body = http_bot.command("run helth")[0].json()
    assert body["response_type"] == "ephemeral" and "Did you mean `health`" in body["text"]
    body = http_bot.command("run broken")[0].json()
    assert "agents.stael" in body["text"] and "did you mean `agents.stale`" in body["text"]
    body = http_bot.command("run ../../etc/passwd")[0].json()
    assert "not a playbook name" in body["text"]
    body = http_bot.command("run health staging")[0].json()
    assert "no server `staging`" in body["text"] and "`prod`" in body["text"]
    assert http_bot.slack.calls_to("chat.postMessage") == []


def test_a_check_that_fails_at_run_time_is_reported_in_the_report(http_bot: HttpBot) -> None:
    http_bot.sim.set_fault("workers.get_all", status=403, subcode=20, message="Forbidden (not allowed for role)")
    http_bot.command("run health")
    _, update = result_of(http_bot)
    text = blocks_text(update)
    assert "could not run" in text and "agents.stale" in text and "Forbidden" in text


@pytest.fixture
def verify_bot(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> Any:
    """The bot with `actions.allow.verify_hashes` naming USER (the hash check is guarded like an action)."""
    from bot.config import ActionAllow, ActionsSettings

    settings = sim_settings(basic_sim, fake_slack, tmp_path, clean_env)
    allow = {"verify_hashes": ActionAllow(users=[USER])}
    settings = settings.model_copy(update={"actions": ActionsSettings(allow=allow)})
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack)).start()
    try:
        yield HttpBot(server, fake_slack, basic_sim, settings)
    finally:
        server.stop()


def test_dataset_then_verify_hashes_button_posts_into_the_thread(verify_bot: HttpBot) -> None:
    http_bot = verify_bot
    http_bot.command("dataset dac1d9d5694d5fb69a31633e9c88164a")
    post, update = result_of(http_bot)
    blocks = update.args["blocks"]
    text = blocks_text(update)
    assert "cifar" in text and "v1.0.0" in text and "dac1d9d5694d5fb69a31633e9c88164a" in text
    assert update.args["text"] == "Dataset cifar v1.0.0: completed, nothing missing"
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert len(buttons) == 1 and buttons[0]["action_id"] == "dataset_verify_hashes" and "confirm" in buttons[0]
    # The user presses the button: a block_actions payload, signed like every request.
    resp = http_bot.action(
        {
            "type": "block_actions",
            "user": {"id": USER, "username": "alice"},
            "api_app_id": "A0FAKE",
            "team": {"id": "T0FAKETEAM"},
            "channel": {"id": post.response["channel"], "name": "general"},
            "message": {"ts": post.response["ts"], "text": update.args["text"]},
            "container": {"type": "message", "message_ts": post.response["ts"], "channel_id": "C0GENERAL"},
            "response_url": http_bot.slack.response_url(),
            "trigger_id": "1.2.3",
            "actions": [
                {
                    "type": "button",
                    "action_id": "dataset_verify_hashes",
                    "block_id": "b1",
                    "value": buttons[0]["value"],
                    "action_ts": str(time.time()),
                }
            ],
        }
    )
    assert resp.status_code == 200
    thread = http_bot.slack.wait_for(
        "chat.postMessage", predicate=lambda c: c.args.get("thread_ts") == post.response["ts"]
    )[0]
    assert "hash check" in blocks_text(thread)
    final = http_bot.slack.wait_for("chat.update", count=2)[-1]
    assert final.args["ts"] == thread.response["ts"]
    assert final.args["text"] == "dataset-verify on prod: all checks passed"
    assert "intact" in blocks_text(final) and "re-hashed" in blocks_text(final)  # the basic scenario's dataset is fine


def test_a_tampered_verify_button_is_refused_privately(http_bot: HttpBot) -> None:
    response_url = http_bot.slack.response_url()
    http_bot.action(
        {
            "type": "block_actions",
            "user": {"id": USER},
            "team": {"id": "T0FAKETEAM"},
            "channel": {"id": "C0GENERAL"},
            "message": {"ts": "1.000001"},
            "response_url": response_url,
            "actions": [
                {
                    "type": "button",
                    "action_id": "dataset_verify_hashes",
                    "value": '{"server": "evil", "dataset": "../../etc"}',
                    "action_ts": "1",
                }
            ],
        }
    )
    reply = http_bot.slack.wait_for("response_url")[0]
    assert "cannot verify" in blocks_text(reply)
    assert http_bot.slack.calls_to("chat.postMessage") == []


def test_status_and_agents_on_a_broken_fleet(
    fake_slack: FakeSlack, sim_factory: Callable[..., SimServer], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    sim = sim_factory("incident-zoo")
    settings = sim_settings(sim, fake_slack, tmp_path, clean_env)
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack)).start()
    try:
        bot = HttpBot(server, fake_slack, sim, settings)
        bot.command("status")
        status = fake_slack.wait_for("chat.update")[0]
        bot.command("agents")
        agents = fake_slack.wait_for("chat.update", count=2)[1]
    finally:
        server.stop()
    assert "critical" in status.args["text"]
    text = blocks_text(status)
    assert "Failing checks" in text and "agents.stale" in text and "queues.backlog" in text
    assert "no live agent" in text  # a queue with waiting tasks that nobody serves
    text = blocks_text(agents)
    assert "dead" in text and "stale" in text and "alive" in text
    assert fake_slack.violations == []
