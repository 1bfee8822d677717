"""Charts through the durable outbox against the fake Slack Web API: files_upload_v2 (getUploadURLExternal, the
upload, completeUploadExternal) into the thread of a queued root, after the root; the PNG bytes leave the store
once sent; redaction of title and alt text (never of the bytes); missing_scope fails the file alone; a 429 on
the upload is retried after Retry-After; an upload interrupted by a crash is sent again (no metadata to look it
up by)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.charts.render import RenderedChart
from bot.charts.series import ChartSpec, Panel, Series
from bot.slack.delivery import Outbox as Durable
from bot.slack.delivery import OutboxError, WebClientSender
from bot.slack.delivery.sink import SlackSink
from bot.store import Store
from tests.fakes.slack_api import FakeSlack

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
SECRET = "xoxb-1234567890-abcdefghij"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # bytes that are not text: nothing may touch them


def chart(title: str = "Queue backlog") -> RenderedChart:
    spec = ChartSpec("queues", title, NOW - timedelta(hours=1), NOW,
                     (Panel("tasks waiting", "count", (Series("all", ((NOW, 1.0),)),)),))
    return RenderedChart(spec, PNG, f"{title}: 1 run, last 1")


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("ml-alerts", channel_id="C0MLALERTS")
        yield fake


def outbox(slack: FakeSlack, store: Store) -> tuple[SlackSink, WebClientSender]:
    client = WebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[])
    facade = SlackSink(client, secrets=lambda: [SECRET])
    facade.durable = Durable(store, secrets=lambda: [SECRET])  # the rows are redacted as they are written
    return facade, WebClientSender(client)


def test_a_chart_goes_into_the_thread_of_its_root_and_leaves_the_store_once_sent(slack: FakeSlack,
                                                                                   tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    facade, sender = outbox(slack, store)
    assert facade.durable is not None
    facade.enqueue("digest:1", "#ml-alerts", "post", {"text": "Digest"}, now=NOW)
    assert facade.enqueue_file("digest:1:chart:queues", "#ml-alerts", chart(f"Backlog {SECRET}"),
                               root_key="digest:1", now=NOW)
    assert not facade.enqueue_file("digest:1:chart:queues", "#ml-alerts", chart(), root_key="digest:1", now=NOW)
    report = facade.durable.drain(sender, NOW)
    assert report.sent == 2 and report.failed == 0
    root = facade.durable.get("digest:1")
    assert root is not None
    [shared] = slack.files_in("C0MLALERTS", root["ts"])
    assert shared["data"] == PNG and shared["name"] == "queues.png"
    assert SECRET not in shared["title"] and "[REDACTED]" in shared["title"] and SECRET not in shared["alt_txt"]
    order = [c.method for c in slack.calls]
    assert order == ["chat.postMessage", "files.getUploadURLExternal", "upload", "files.completeUploadExternal"]
    row = facade.durable.get("digest:1:chart:queues")
    assert row is not None and row["status"] == "sent"
    assert "content_b64" not in json.loads(row["payload"])["file"]  # the image is on Slack, not in the store


def test_missing_scope_fails_the_file_alone_and_rate_limits_are_retried(slack: FakeSlack, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    facade, sender = outbox(slack, store)
    assert facade.durable is not None
    slack.scopes = ["chat:write"]
    assert not facade.can_upload_files()
    facade.enqueue_file("f1", "#ml-alerts", chart(), now=NOW)
    facade.enqueue("p1", "#ml-alerts", "post", {"text": "after the chart"}, now=NOW)
    report = facade.durable.drain(sender, NOW)
    row = facade.durable.get("f1")
    assert row is not None and row["status"] == "failed" and "missing_scope" in row["last_error"]
    assert report.sent == 1 and slack.files == []  # the text still went out

    slack.scopes = None
    slack.fail("files.getUploadURLExternal", status=429, retry_after=7)
    facade.enqueue_file("f2", "#ml-alerts", chart(), now=NOW)
    report = facade.durable.drain(sender, NOW)
    assert report.paused_until is not None and (report.paused_until - NOW).total_seconds() == pytest.approx(7)
    report = facade.durable.drain(sender, NOW + timedelta(seconds=8))
    assert report.sent == 1 and len(slack.files) == 1


def test_an_upload_interrupted_by_a_crash_is_sent_again(slack: FakeSlack, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    facade, sender = outbox(slack, store)
    assert facade.durable is not None
    facade.enqueue_file("f1", "#ml-alerts", chart(), now=NOW)
    store.db.execute("UPDATE outbox SET status = 'sending' WHERE key = 'f1'")  # killed mid-upload
    restarted = Durable(store)
    assert restarted.get("f1")["uncertain"] == 1  # type: ignore[index]
    assert restarted.drain(sender, NOW).sent == 1 and len(slack.files) == 1


def test_a_file_without_its_bytes_is_refused(tmp_path: Path) -> None:
    durable = Durable(Store(tmp_path / "s.db"))
    with pytest.raises(OutboxError, match="content_b64"):
        durable.enqueue("f", "#c", "file", {"text": "chart", "file": {"filename": "a.png"}})


def test_a_file_queued_without_the_sink_leaves_no_secret_in_the_store_or_slack(slack: FakeSlack,
                                                                               tmp_path: Path) -> None:
    """The queue redacts as it writes the row (title, alt text, comment, filename), whoever queued it; the sender
    sends the row as it is. The bytes are left alone."""
    import base64

    planted = "PLANTED-known-secret-7781"
    store = Store(tmp_path / "s.db")
    durable = Durable(store, secrets=lambda: [planted])
    durable.enqueue("f1", "#ml-alerts", "file", {
        "text": f"chart {planted}", "initial_comment": f"from {planted}",
        "file": {"filename": "queues.png", "title": f"Backlog {planted}", "alt_txt": f"alt {SECRET}",
                 "content_b64": base64.b64encode(PNG).decode("ascii")}}, now=NOW)
    row = store.db.execute("SELECT payload FROM outbox WHERE key = 'f1'").fetchone()[0]
    assert planted not in row and SECRET not in row
    client = WebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[])
    assert durable.drain(WebClientSender(client), NOW).sent == 1
    [shared] = slack.files
    assert shared["data"] == PNG
    shown = json.dumps({k: v for k, v in shared.items() if k != "data"})
    assert planted not in shown and SECRET not in shown and "[REDACTED]" in shared["title"]
    assert "[REDACTED]" in shared["initial_comment"]
    store.close()
