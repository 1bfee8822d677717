"""The outbox (every Slack write) and the work pool (where slow work runs after the ack)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest

from bot.slack.client import api_base_url, make_web_client, retry_handlers
from bot.slack.delivery.sink import SlackSink, SlackWriteError
from bot.slack.messages.common import SlackMessage, section
from bot.slack.workpool import PoolBusyError, WorkPool
from tests.fakes.slack_api import FakeSlack

SECRET = "clearml-secret-PLANTED-123456"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def outbox(slack: FakeSlack) -> SlackSink:
    return SlackSink(make_web_client(slack.bot_token, base_url=slack.base_url), secrets=lambda: [SECRET])


def msg(text: str) -> SlackMessage:
    return SlackMessage(text=text, blocks=[section(text)])


def test_every_write_is_redacted(slack: FakeSlack, outbox: SlackSink) -> None:
    posted = outbox.post("#general", msg(f"key {SECRET} and xoxb-9999999999-leaky-token"))
    outbox.update(posted, msg(f"again {SECRET}"))
    outbox.ephemeral("C0GENERAL", "U1", msg(f"private {SECRET}"))
    outbox.respond(slack.response_url(), msg(f"response {SECRET}"))
    dump = json.dumps([c.args for c in slack.calls + slack.responses])
    assert SECRET not in dump and "xoxb-9999999999" not in dump and dump.count("[REDACTED]") >= 4
    assert outbox.sent["chat.postMessage"] == 1 and outbox.sent["response_url"] == 1


def test_ack_bodies_are_redacted_too(outbox: SlackSink) -> None:
    body = outbox.ack_body(msg(f"oops {SECRET}"))
    assert body["response_type"] == "ephemeral" and SECRET not in json.dumps(body)


def test_channel_errors_are_explained_naming_the_channel(slack: FakeSlack, outbox: SlackSink) -> None:
    private = slack.add_channel("secret-project", private=True, member=False)
    with pytest.raises(SlackWriteError) as err:
        outbox.post(private.id, msg("hi"))
    assert err.value.error == "not_in_channel" and err.value.is_channel_problem
    assert f"<#{private.id}>" in err.value.explain() and "/invite @clearml-chatops" in err.value.explain()
    with pytest.raises(SlackWriteError) as err:
        outbox.post("#does-not-exist", msg("hi"))
    assert err.value.error == "channel_not_found" and "#does-not-exist" in err.value.explain()
    slack.fail("chat.postMessage", error="invalid_auth")
    with pytest.raises(SlackWriteError) as err:
        outbox.post("#general", msg("hi"))
    assert "SLACK_BOT_TOKEN" in err.value.explain() and not err.value.is_channel_problem
    assert outbox.failed["chat.postMessage"] == 3


def test_retries_give_up_with_an_explained_error(slack: FakeSlack, outbox: SlackSink) -> None:
    outbox.client.retry_handlers = retry_handlers(max_server_error_retries=1)  # keep the backoff short here
    slack.fail("chat.postMessage", status=500, times=None)
    with pytest.raises(SlackWriteError) as err:
        outbox.post("#general", msg("hi"))
    assert err.value.status == 500
    assert len(slack.calls_to("chat.postMessage")) == 2  # the first try and one retry


def test_unknown_methods_must_be_declared_with_their_scopes(outbox: SlackSink) -> None:
    with pytest.raises(RuntimeError, match="METHOD_SCOPES"):
        outbox._call("conversations.kick", None, channel="C1", user="U1")


def test_api_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.config import Settings, SlackSettings

    monkeypatch.delenv("SLACK_API_URL", raising=False)
    assert api_base_url(None) == "https://slack.com/api/"
    assert (
        api_base_url(Settings(slack=SlackSettings(api_url="https://slack.acme.io/api"))) == "https://slack.acme.io/api/"
    )
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api/")
    assert api_base_url(Settings(slack=SlackSettings(api_url="https://x/api/"))) == "http://127.0.0.1:9/api/"


def test_work_pool_bounds_concurrency_and_refuses_when_full() -> None:
    pool = WorkPool(max_concurrent=2, max_waiting=3).start()
    gate = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()

    async def job() -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 5)
        with lock:
            running -= 1
        return 1

    try:
        futures = [pool.submit(job) for _ in range(5)]
        with pytest.raises(PoolBusyError) as err:
            pool.submit(job)
        assert err.value.waiting == 3
        gate.set()
        assert sum(f.result(timeout=10) for f in futures) == 5
        assert peak == 2
        assert pool.pending == 0
        assert pool.submit(job).result(timeout=10) == 1  # room again
    finally:
        gate.set()
        pool.stop()
    assert not pool.running
