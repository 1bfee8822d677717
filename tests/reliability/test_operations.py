"""Operations: the Prometheus metrics the bot records (runs, checks, findings, ClearML and Slack calls, retries and
rate limits, the outbox, actions) and its structured, redacted log lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot import metrics
from bot.actions import audit
from bot.actions.base import Actor
from bot.config import Settings
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import run_playbooks
from bot.logs import add_secrets, setup_logging
from bot.sim.server import SimServer
from bot.slack.client import retry_handlers
from bot.slack.delivery import Outbox, WebClientSender
from bot.store import Store
from tests.fakes.slack_api import FakeSlack
from tests.helpers import server_settings


def value(name: str, **labels: str) -> float:
    return metrics.sample(name, labels)


def test_metrics_count_runs_checks_findings_clearml_slack_outbox_and_actions(
    sim_factory: Callable[..., SimServer], fake_slack: FakeSlack, tmp_path: Path
) -> None:
    metrics.enable()
    sim = sim_factory("basic")
    server = server_settings(sim, retries=1)
    p = "clearml_chatops_"
    before = {
        "runs": value(f"{p}runs_total", trigger="cli", result="problems"),
        "checks": value(f"{p}check_duration_seconds_count", check="agents.stale", status="ok"),
        "warnings": value(f"{p}findings_total", severity="warning"),
        "calls": value(f"{p}clearml_calls_total", server="sim", endpoint="workers.get_all"),
        "errors": value(f"{p}clearml_errors_total", server="sim", reason="http_5xx"),
        "retries": value(f"{p}clearml_retries_total", server="sim"),
        "posts": value(f"{p}slack_calls_total", method="chat.postMessage", result="ok"),
        "limited": value(f"{p}slack_rate_limited_total", method="chat.postMessage"),
        "sdk_retries": value(f"{p}slack_retries_total", method="auth.test", reason="rate_limited"),
        "denied": value(f"{p}actions_total", action="requeue", outcome="denied"),
    }

    # A run: one read fails once with a 500 (retried), the rest answer.
    sim.set_fault("queues.get_all", status=500, times=1)
    pb = Playbook(name="m", checks=[CheckEntry(check=c) for c in ("agents.stale", "queues.backlog")])
    asyncio.run(run_playbooks([pb], Settings(), server, trigger="cli"))
    assert value(f"{p}runs_total", trigger="cli", result="problems") == before["runs"] + 1
    assert value(f"{p}check_duration_seconds_count", check="agents.stale", status="ok") == before["checks"] + 1
    assert value(f"{p}findings_total", severity="warning") > before["warnings"]
    assert value(f"{p}clearml_calls_total", server="sim", endpoint="workers.get_all") == before["calls"] + 1
    assert value(f"{p}clearml_errors_total", server="sim", reason="http_5xx") == before["errors"] + 1
    assert value(f"{p}clearml_retries_total", server="sim") == before["retries"] + 1

    # Slack through the durable outbox: a 429 (rate limit), then the post; the queue depth is a gauge.
    store = Store(tmp_path / "store.db")
    outbox = Outbox(store)
    unwatch = metrics.watch_outbox(outbox)
    try:
        fake_slack.fail("chat.postMessage", status=429, retry_after=0)
        outbox.enqueue("k1", "#general", "post", {"text": "hello"})
        assert value(f"{p}outbox_depth") == 1
        sender = WebClientSender(WebClient(token=fake_slack.bot_token, base_url=fake_slack.base_url, retry_handlers=[]))
        now = datetime.now(UTC)
        outbox.drain(sender, now)
        assert value(f"{p}slack_rate_limited_total", method="chat.postMessage") == before["limited"] + 1
        outbox.drain(sender, now.replace(year=now.year + 1))  # long after the Retry-After
        assert value(f"{p}slack_calls_total", method="chat.postMessage", result="ok") == before["posts"] + 1
        assert value(f"{p}outbox_depth") == 0
    finally:
        unwatch()

    # Retries inside slack_sdk (sleeping through a Retry-After) are counted too.
    fake_slack.fail("auth.test", status=429, retry_after=0)
    WebClient(token=fake_slack.bot_token, base_url=fake_slack.base_url,
              retry_handlers=metrics.counting(retry_handlers())).auth_test()
    assert value(f"{p}slack_retries_total", method="auth.test", reason="rate_limited") == before["sdk_retries"] + 1

    # Actions: every audited attempt, by outcome.
    audit.record(store, actor=Actor(id="U1", name="ana", via="slack"), action="requeue", server="prod", subject="t1",
                 outcome="denied")
    assert value(f"{p}actions_total", action="requeue", outcome="denied") == before["denied"] + 1
    store.close()

    body, content_type = metrics.render()
    text = body.decode()
    assert content_type.startswith("text/plain") and "clearml_chatops_runs_total{" in text
    assert "_created" not in text  # no doubled series


@pytest.fixture
def log_buffer() -> Iterator[Callable[..., io.StringIO]]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)

    def install(**kw: str) -> io.StringIO:
        buffer = io.StringIO()
        setup_logging(stream=buffer, **kw)
        return buffer

    yield install
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_log_lines_are_one_per_event_json_or_text_and_never_hold_secrets(
    log_buffer: Callable[..., io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-secret-planted-0001")
    add_secrets(["clearml-secret-planted-0002"])
    log = logging.getLogger("bot.test")

    def events() -> None:
        log.info("posting to %s with %s", "#ml-alerts", "signing-secret-planted-0001", extra={"channel": "#ml"})
        log.warning("two\nlines and xoxb-123456789012-planted token")
        try:
            raise RuntimeError("login failed: clearml-secret-planted-0002 password=hunter2planted")
        except RuntimeError:
            log.exception("ClearML said no")

    buffer = log_buffer(fmt="json", level="INFO")
    events()
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 3  # one line per event, the traceback included
    docs = [json.loads(line) for line in lines]
    assert [d["level"] for d in docs] == ["INFO", "WARNING", "ERROR"]
    assert docs[0]["channel"] == "#ml" and docs[0]["logger"] == "bot.test"
    assert "Traceback" in docs[2]["exc"] and "RuntimeError" in docs[2]["exc"]

    text = log_buffer(fmt="text", level="INFO")
    events()
    text_lines = text.getvalue().splitlines()
    assert len(text_lines) == 3 and "channel=\"#ml\"" in text_lines[0] and "exc=Traceback" in text_lines[2]

    everything = buffer.getvalue() + text.getvalue()
    for secret in ("signing-secret-planted-0001", "clearml-secret-planted-0002", "xoxb-123456789012-planted",
                   "hunter2planted"):
        assert secret not in everything
    assert everything.count("REDACTED") >= 8


def test_log_format_and_level_come_from_the_environment(
    log_buffer: Callable[..., io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    buffer = log_buffer()
    logging.getLogger("bot.test").info("not shown")
    logging.getLogger("bot.test").warning("shown")
    assert [json.loads(line)["msg"] for line in buffer.getvalue().splitlines()] == ["shown"]
    monkeypatch.setenv("LOG_FORMAT", "yaml")
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        log_buffer()
