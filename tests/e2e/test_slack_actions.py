"""Action buttons end to end: signed `block_actions` payloads posted to the bot over real HTTP, ClearML answered by
the simulator, Slack recorded by the fake Web API. Asserted: the simulator's state (status, queue entries, the clone
and its parent), the audit rows, and what people see in Slack (thread replies, edited messages, private notes)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.actions import audit as audit_mod
from bot.actions.tokens import ENV_KEY, Signer
from bot.config import ActionAllow, ActionsSettings, Settings
from bot.sim.server import SimServer
from bot.slack.app import services_of
from bot.slack.serve import BotServer
from tests.e2e.conftest import FAILED_TASK, USER, HttpBot, bot_env, sim_settings
from tests.fakes.slack_api import Call, FakeSlack
from tests.helpers import block_actions_body

COMPLETED_TASK = "a1000000000000000000000000000003"  # eval-bert, completed, in the basic scenario
BOB, CAROL, MALLORY = "U0BOB", "U0CAROL", "U0MALLORY"
SIGNING_KEY = "e2e-button-signing-key-0123456789abcdef"
GROUP = "S0MLENG"


@pytest.fixture
def bot(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> Iterator[HttpBot]:
    """The bot with requeue and clone allowed for Alice and Bob, clone also for the ML user group (Carol)."""
    clean_env.setenv(ENV_KEY, SIGNING_KEY)
    fake_slack.usergroups[GROUP] = [CAROL]
    settings = allow(sim_settings(basic_sim, fake_slack, tmp_path, clean_env))
    with _serve(settings, fake_slack, basic_sim) as bot:
        yield bot


def allow(settings: Settings, **actions: Any) -> Settings:
    people = ActionAllow(users=[USER, BOB])
    return settings.model_copy(update={"actions": ActionsSettings(
        allow={"requeue": people, "abort": people, "reproduce": people,
               "clone": ActionAllow(users=[USER, BOB], usergroups=[GROUP])},
        **actions,
    )})


@contextmanager
def _serve(settings: Settings, slack: FakeSlack, sim: SimServer) -> Iterator[HttpBot]:
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(slack)).start()
    try:
        yield HttpBot(server, slack, sim, settings)
    finally:
        server.stop()


# -- helpers ------------------------------------------------------------------------------------------------------


def blocks_of(call: Call) -> list[dict[str, Any]]:
    blocks = call.args.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else list(blocks)


def text_of(call: Call) -> str:
    return str(call.args.get("text", "")) + "\n" + json.dumps(blocks_of(call), ensure_ascii=False)


def buttons_in(blocks: list[dict[str, Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """button text -> (block_id, element)."""
    out = {}
    for block in blocks:
        if block.get("type") == "actions":
            for element in block["elements"]:
                if element.get("type") == "button":
                    out[element["text"]["text"]] = (block.get("block_id", ""), element)
    return out


def diagnose(bot: HttpBot, task_id: str) -> Call:
    """`/clearml task <id>`: the diagnosis message (the placeholder's final edit)."""
    before = len(bot.slack.calls_to("chat.update"))
    bot.command(f"task {task_id}")
    return bot.slack.wait_for("chat.update", count=before + 1)[-1]


def click(
    bot: HttpBot,
    message: Call,
    button: str,
    *,
    user: str = USER,
    queue: str | None = None,
    value: str | None = None,
    thread_ts: str | None = None,
) -> str:
    """Press `button` of the message `message` edited in or posted; returns the response_url used."""
    blocks = blocks_of(message)
    block_id, element = buttons_in(blocks)[button]
    if value is not None:  # the message carries that value (Slack sends the clicked message's blocks with the click)
        element["value"] = value
    ts = message.args.get("ts") or message.response["ts"]
    channel = message.response.get("channel") or message.args["channel"]
    state: dict[str, Any] = {}
    if queue is not None:
        queue_id = bot.sim.queue_id(queue)
        state = {block_id: {"act_queue": {"type": "static_select",
                                          "selected_option": {"value": queue_id, "text": {"text": queue}}}}}
    response_url = bot.slack.response_url()
    payload = block_actions_body(
        element["action_id"], value if value is not None else element["value"], user=user, channel=channel,
        message_ts=ts, block_id=block_id, blocks=blocks, response_url=response_url,
        message_text=message.args.get("text"), thread_ts=thread_ts, state=state,
    )
    assert bot.action(payload).status_code == 200
    return response_url


def thread_replies(bot: HttpBot, ts: str, count: int = 1) -> list[Call]:
    return bot.slack.wait_for("chat.postMessage", count=count, predicate=lambda c: c.args.get("thread_ts") == ts)


def private_note(bot: HttpBot, response_url: str) -> Call:
    url_id = response_url.rsplit("/", 1)[-1]
    return bot.slack.wait_for("response_url", predicate=lambda c: c.args.get("_url_id") == url_id)[0]


def audit_rows(bot: HttpBot, n: int = 20) -> list[dict[str, Any]]:
    """Newest first; read on the bot's loop thread, which owns the actions' store connection."""
    services = services_of(bot.server.app)  # type: ignore[arg-type]
    store = services.action_store
    return services.on_loop(lambda: audit_mod.recent(store, n))  # type: ignore[no-any-return]


def task(bot: HttpBot, task_id: str) -> dict[str, Any]:
    with bot.sim.state.lock:
        return dict(bot.sim.state.tasks[task_id])


def queued_in(bot: HttpBot, queue: str) -> list[str]:
    with bot.sim.state.lock:
        found = bot.sim.state.queue_by_name(queue)
        return [e["task"] for e in (found or {}).get("entries", [])]


def wait_until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# -- tests --------------------------------------------------------------------------------------------------------


def test_requeue_from_a_task_diagnosis_into_a_chosen_queue(bot: HttpBot) -> None:
    message = diagnose(bot, FAILED_TASK)
    buttons = buttons_in(blocks_of(message))
    assert {"Requeue", "Clone"} <= set(buttons)
    assert buttons["Requeue"][1]["confirm"]["title"]["text"] == "Requeue task"
    assert "train-vit-failed" in buttons["Requeue"][1]["confirm"]["text"]["text"]
    assert any(e.get("action_id") == "act_queue" for b in blocks_of(message) if b["type"] == "actions"
               for e in b["elements"])

    click(bot, message, "Requeue", queue="default")
    ts = message.args["ts"]
    reply = thread_replies(bot, ts)[0]
    assert "Requeued by <@U0ALICE>" in text_of(reply) and "tasks.enqueue" in text_of(reply)
    assert task(bot, FAILED_TASK)["status"] == "queued"
    assert FAILED_TASK in queued_in(bot, "default") and FAILED_TASK not in queued_in(bot, "gpu")
    # the original message: the buttons for that task are replaced by the outcome line
    edit = bot.slack.wait_for("chat.update", count=2, predicate=lambda c: c.args.get("ts") == ts)[-1]
    assert "Requeued by <@U0ALICE>" in text_of(edit) and buttons_in(blocks_of(edit)) == {}
    assert "train-vit-failed" in text_of(edit)  # the diagnosis itself stays
    (row,) = [r for r in audit_rows(bot) if r["action"] == "requeue"]
    assert row["outcome"] == "ok" and row["actor_id"] == USER and row["subject"] == FAILED_TASK
    assert row["params"] == {"queue": bot.sim.queue_id("default")}
    assert bot.slack.violations == []


def test_clone_by_a_user_group_member_enqueues_the_clone_and_links_it(bot: HttpBot) -> None:
    message = diagnose(bot, FAILED_TASK)
    click(bot, message, "Clone", user=CAROL, queue="gpu")
    reply = thread_replies(bot, message.args["ts"])[0]
    assert "Cloned and enqueued by <@U0CAROL>" in text_of(reply)
    clones = [t for t in bot.sim.iter_tasks() if t.get("parent") == FAILED_TASK]
    assert len(clones) == 1
    clone = clones[0]
    assert clone["status"] == "queued" and clone["id"] in queued_in(bot, "gpu")
    assert "@carol" in clone["comment"]
    assert clone["id"] in text_of(reply)  # the message links the new task
    assert task(bot, FAILED_TASK)["status"] == "failed"  # the original is untouched
    assert bot.slack.calls_to("usergroups.users.list")[0].args["usergroup"] == GROUP
    (row,) = [r for r in audit_rows(bot) if r["action"] == "clone"]
    assert row["outcome"] == "ok" and row["created_ids"] == [clone["id"]]


def test_an_unauthorized_user_is_told_privately_and_audited(bot: HttpBot) -> None:
    message = diagnose(bot, FAILED_TASK)
    url = click(bot, message, "Requeue", user=MALLORY)
    note = private_note(bot, url)
    assert note.args["response_type"] == "ephemeral" and "not allowed to requeue" in text_of(note)
    assert "actions.allow" in text_of(note)
    (row,) = [r for r in audit_rows(bot) if r["action"] == "requeue"]
    assert row["outcome"] == "denied" and row["actor_id"] == MALLORY
    assert task(bot, FAILED_TASK)["status"] == "failed"
    assert not [c for c in bot.slack.calls_to("chat.postMessage") if c.args.get("thread_ts")]


def test_expired_and_tampered_buttons_are_refused_and_audited(bot: HttpBot) -> None:
    message = diagnose(bot, FAILED_TASK)
    signer = Signer(SIGNING_KEY.encode())
    stale = signer.issue("requeue", FAILED_TASK, server="prod", ttl_s=3600, now=time.time() - 2 * 86400)
    url = click(bot, message, "Requeue", value=stale)
    assert "expired" in text_of(private_note(bot, url))
    value = buttons_in(blocks_of(message))["Requeue"][1]["value"]
    mac = value.split(".")[1]
    forged = signer.issue("abort", FAILED_TASK, server="prod").split(".")[0] + "." + mac  # another action, old MAC
    url = click(bot, message, "Requeue", value=forged)
    assert "failed verification" in text_of(private_note(bot, url))
    outcomes = sorted(r["outcome"] for r in audit_rows(bot))
    assert outcomes == ["expired", "tampered"]
    assert task(bot, FAILED_TASK)["status"] == "failed"
    assert not bot.sim.calls_to("tasks.enqueue") and not bot.sim.calls_to("tasks.stop")


def test_two_people_clicking_at_once_run_it_once(bot: HttpBot) -> None:
    message = diagnose(bot, FAILED_TASK)
    bot.sim.latency_ms = 150  # slow enough that both clicks arrive while the first runs
    urls: dict[str, str] = {}

    def press(user: str) -> None:
        urls[user] = click(bot, message, "Requeue", user=user)

    threads = [threading.Thread(target=press, args=(u,)) for u in (USER, BOB)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until(lambda: len(audit_rows(bot)) == 2)
    rows = {r["actor_id"]: r["outcome"] for r in audit_rows(bot)}
    assert sorted(rows.values()) == ["duplicate", "ok"]
    second = next(u for u, outcome in rows.items() if outcome == "duplicate")
    note = private_note(bot, urls[second])
    assert "Already" in text_of(note)
    assert len(bot.sim.calls_to("tasks.enqueue")) == 1
    assert len(thread_replies(bot, message.args["ts"])) == 1


def test_requeue_of_a_completed_task_offers_clone_instead(bot: HttpBot) -> None:
    message = diagnose(bot, COMPLETED_TASK)
    assert "Requeue" not in buttons_in(blocks_of(message))  # not suggested for a finished task
    # an older message's signed requeue button for it (the task completed since)
    value = Signer(SIGNING_KEY.encode()).issue("requeue", COMPLETED_TASK, server="prod")
    click(bot, message, "Reproduce", value=value)
    reply = thread_replies(bot, message.args["ts"])[0]
    assert "completed" in text_of(reply) and "400/110" in text_of(reply)
    assert task(bot, COMPLETED_TASK)["status"] == "completed" and not bot.sim.calls_to("tasks.enqueue")
    assert audit_rows(bot)[0]["outcome"] == "refused"
    # the reply offers the alternative: clone, which works
    assert "Clone instead" in buttons_in(blocks_of(reply))
    click(bot, reply, "Clone instead", thread_ts=message.args["ts"])
    done = thread_replies(bot, message.args["ts"], count=2)[-1]
    assert "Cloned by <@U0ALICE>" in text_of(done)
    assert [t for t in bot.sim.iter_tasks() if t.get("parent") == COMPLETED_TASK]


def test_clearml_down_during_the_action_is_reported_audited_and_retryable(bot: HttpBot) -> None:
    message = diagnose(bot, FAILED_TASK)
    bot.sim.set_fault("tasks.*", status=503, message="upstream connect error")
    click(bot, message, "Requeue")
    reply = thread_replies(bot, message.args["ts"])[0]
    assert "unavailable" in text_of(reply) and "Retry" in text_of(reply)
    (row,) = audit_rows(bot)
    assert row["outcome"] == "failed" and "unavailable" in row["error"]
    assert task(bot, FAILED_TASK)["status"] == "failed"
    assert buttons_in(blocks_of(message)).keys() <= buttons_in(blocks_of(
        bot.slack.calls_to("chat.update")[-1])).keys()  # the original buttons stay: nothing changed
    bot.sim.clear_faults()
    click(bot, reply, "Retry: requeue", thread_ts=message.args["ts"])
    done = thread_replies(bot, message.args["ts"], count=2)[-1]
    assert "Requeued by <@U0ALICE>" in text_of(done)
    assert task(bot, FAILED_TASK)["status"] == "queued"
    assert [r["outcome"] for r in audit_rows(bot)] == ["ok", "failed"]


def test_the_server_refusing_the_status_change_offers_clone(bot: HttpBot) -> None:
    message = diagnose(bot, FAILED_TASK)
    bot.sim.set_fault("tasks.enqueue", status=400, subcode=110, message="Invalid task status (completed)")
    click(bot, message, "Requeue")
    reply = thread_replies(bot, message.args["ts"])[0]
    assert "refused the status change" in text_of(reply) and "400/110" in text_of(reply)
    assert "Clone instead" in buttons_in(blocks_of(reply)) and "Retry: requeue" not in buttons_in(blocks_of(reply))
    assert audit_rows(bot)[0]["outcome"] == "failed"


def test_reproduce_posts_the_comparison_into_the_thread(bot: HttpBot) -> None:
    message = diagnose(bot, COMPLETED_TASK)
    click(bot, message, "Reproduce", queue="default")
    ts = message.args["ts"]
    started = thread_replies(bot, ts)[0]
    assert "Reproduction started" in text_of(started) and "compares with the original" in text_of(started)
    (clone,) = [t for t in bot.sim.iter_tasks() if t.get("parent") == COMPLETED_TASK]
    assert clone["id"] in queued_in(bot, "default")
    background = bot.server.background
    assert background.tick_reproduce() == []  # still queued: nothing to say yet
    with bot.sim.state.lock:  # the re-run finishes like the original did
        original = bot.sim.state.tasks[COMPLETED_TASK]
        bot.sim.state.queues[bot.sim.queue_id("default")]["entries"] = []
        bot.sim.state.update_task(clone["id"], {"status": "completed", "started": original.get("started"),
                                                "completed": original.get("completed")})
    (result,) = background.tick_reproduce()
    assert result.status == "done"
    posted = thread_replies(bot, ts, count=2)[-1]
    assert "Re-run of eval-bert reproduced" in text_of(posted)
    assert "status: completed -&gt; completed" in text_of(posted)
    assert "metrics" in text_of(posted) and "environment: same code" in text_of(posted)


def test_dry_run_shows_the_calls_and_makes_none(
    fake_slack: FakeSlack, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv(ENV_KEY, SIGNING_KEY)
    settings = allow(sim_settings(basic_sim, fake_slack, tmp_path, clean_env), dry_run=True)
    with _serve(settings, fake_slack, basic_sim) as bot:
        message = diagnose(bot, FAILED_TASK)
        click(bot, message, "Requeue")
        reply = thread_replies(bot, message.args["ts"])[0]
        assert "Dry run" in text_of(reply) and "tasks.enqueue(task=a1000000000000000000000000000002" in text_of(reply)
        assert task(bot, FAILED_TASK)["status"] == "failed" and not bot.sim.calls_to("tasks.enqueue")
        assert audit_rows(bot)[0]["outcome"] == "dry_run"
        assert len(bot.slack.calls_to("chat.update")) == 1  # the diagnosis keeps its buttons


def test_audit_command_lists_the_attempts(bot: HttpBot) -> None:
    message = diagnose(bot, FAILED_TASK)
    url = click(bot, message, "Requeue", user=MALLORY)
    private_note(bot, url)
    resp, _ = bot.command("audit 5")
    body = resp.json()
    assert body["response_type"] == "ephemeral"
    dump = json.dumps(body)
    assert "denied" in dump and "requeue" in dump and "<@U0MALLORY>" in dump
