"""A digest after a mixed day: state, counts by area and severity, new/ongoing/resolved, top offenders, trends
against the previous digest, links to the incident threads; and the digest settings schema."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.config import Settings
from bot.incidents.digest import DigestSettings, build_digest, metrics_from_result, thread_refs
from bot.incidents.pipeline import IncidentPipeline
from bot.slack.delivery import Outbox, SendResult
from bot.store import Store
from tests.unit._incidents_support import T0, backlog, dead_worker, orphaned_task, run, storage_down


def test_digest_after_a_mixed_day(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.db")
    box = Outbox(store)
    pipe = IncidentPipeline(store, outbox=box, settings=Settings.model_validate(
        {"slack": {"default_channel": "#ml-alerts"}}))
    day0 = T0 - timedelta(days=1)

    def hourly(hour: float, *findings: object, alive: int, wait: float) -> None:
        result = run(*findings, started=day0 + timedelta(hours=hour), metrics={"agents.alive": alive,  # type: ignore[arg-type]
                                                                               "queues.wait_median_s": wait})
        run_id = store.record_run(result)
        pipe.handle_run(result, result.started_at, run_id=run_id)

    # Day 0: a healthy fleet, but the cpu queue starts to back up in the evening; the digest at the end of it.
    for h in range(24):
        hourly(h, *([backlog()] if h >= 20 else []), alive=10, wait=60)
    first = pipe.post_digest(day0 + timedelta(hours=24), channel="#ml-platform")
    assert [d.id for d in first.new] == [1] and first.state == "warning"

    # Day 1: gpu-3 dies at 02:00 with its task, is fixed at 05:00; the backlog goes on all day;
    # the artifact store fails from 20:00.
    for h in range(24, 48):
        findings: list[object] = [backlog(length=80)]
        if 26 <= h < 29:
            findings += [dead_worker(), orphaned_task()]
        if h >= 44:
            findings.append(storage_down())
        hourly(h, *findings, alive=8 if 26 <= h < 29 else 9, wait=300)
    now = day0 + timedelta(hours=48)
    before_slack = build_digest(store, now, channel="#ml-platform")
    assert all(d.thread is None for d in before_slack.new)  # not posted yet: no link
    box.drain(lambda m: SendResult(ts=f"1700000000.{m.id:06d}", channel="C0ALERTS"), now, max_sends=1000)

    digest = build_digest(store, now, settings=DigestSettings(top=2), channel="#ml-platform")
    assert digest.period_start == day0 + timedelta(hours=24) and digest.period_end == now
    assert digest.previous_at == first.period_end
    assert digest.runs == 24 and digest.problem_runs == 24
    assert digest.state == "critical"
    assert digest.headline == "2 open incidents (1 critical, 1 warning)"
    assert digest.counts == {"agents": {"critical": 1, "warning": 1}, "queues": {"warning": 1},
                             "storage": {"critical": 1}}
    assert digest.open_counts == {"queues": {"warning": 1}, "storage": {"critical": 1}}
    assert [d.id for d in digest.new] == [2, 3]  # worst first, then oldest: the worker, then storage
    assert [d.id for d in digest.ongoing] == [1]
    assert [d.id for d in digest.resolved] == [2]
    worker = digest.resolved[0]
    assert worker.duration_s == 3 * 3600 and worker.members == 2 and worker.area == "agents"
    ts = box.get("incident:2:root")["ts"]  # type: ignore[index]
    # thread links are Slack's permalinks (chat.getPermalink), passed in; never built as slack.com/archives URLs
    assert worker.thread == ("C0ALERTS", ts) and worker.thread_url is None and ("C0ALERTS", ts) in thread_refs(digest)
    link = f"https://acme.slack.com/archives/C0ALERTS/p{ts.replace('.', '')}"
    linked = build_digest(store, now, settings=DigestSettings(top=2), channel="#ml-platform",
                          permalinks={("C0ALERTS", ts): link})
    assert linked.resolved[0].thread_url == link
    assert [(o.subject.id, o.runs) for o in digest.top_offenders] == [("q-cpu", 24), ("s3://ml-artifacts/", 4)]
    trends = {t.metric: t for t in digest.trends}
    assert (trends["queues.wait_median_s"].previous, trends["queues.wait_median_s"].current) == (60, 300)
    assert trends["queues.wait_median_s"].verdict == "worse" and trends["queues.wait_median_s"].direction == "up"
    assert (trends["agents.alive"].previous, trends["agents.alive"].current) == (10, 9)
    assert trends["agents.alive"].verdict == "worse"
    assert trends["run.problems"].current == 1 and trends["run.problems"].previous == 0

    # Posted through the pipeline: one message, recorded; the next digest starts where this one ended.
    posted = pipe.post_digest(now, channel="#ml-platform")
    row = box.get(f"digest:#ml-platform:{now.isoformat()}")
    assert row is not None and row["kind"] == "post" and "2 open incidents" in row["payload"]
    assert "median queue wait: 5m (before: 60s) \\u2197 worse" in row["payload"]  # up, and worse
    assert posted.headline == digest.headline
    later = build_digest(store, now + timedelta(hours=1), channel="#ml-platform")
    assert later.period_start == now and later.runs == 0 and [d.id for d in later.ongoing] == [3, 1]
    store.close()


def test_first_digest_covers_the_configured_period_and_lists_are_capped(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.db")
    pipe = IncidentPipeline(store, sink=lambda *a: None)
    for i in range(15):
        pipe.handle_run(run(backlog(queue=f"q-{i}"), started=T0), T0)
    digest = build_digest(store, T0 + timedelta(hours=1), settings=DigestSettings(period="6h", max_items=10))
    assert digest.period_start == T0 - timedelta(hours=5)
    assert len(digest.new) == 10 and digest.more["new"] == 5
    assert digest.trends and all(t.direction == "new" for t in digest.trends if t.previous is None)
    store.close()


def test_all_clear_digest(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.db")
    digest = build_digest(store, T0)
    assert digest.state == "ok" and digest.headline.startswith("All clear") and digest.runs == 0
    store.close()


def test_digest_settings_schema() -> None:
    assert DigestSettings.from_settings(Settings()) is None
    s = DigestSettings.from_settings(Settings.model_validate(
        {"slack": {"digest": {"schedule": {"every": "12h"}, "channel": "#d", "top": 3}}}))
    assert s is not None and s.channel == "#d" and s.top == 3 and s.period_s == 86400
    with pytest.raises(ValidationError, match="5 fields"):
        DigestSettings(schedule="every day")
    with pytest.raises(ValidationError):
        DigestSettings.model_validate({"schedul": "0 9 * * *"})


def test_metrics_per_run() -> None:
    result = run(backlog(), dead_worker(), statuses={"storage.probe": "error"}, metrics={"agents.alive": 3})
    metrics = metrics_from_result(result)
    assert metrics["run.problems"] == 2 and metrics["run.checks_errored"] == 1 and metrics["agents.alive"] == 3


class LinkingOutbox(Outbox):
    """A durable queue whose messages have permalinks, as the Slack sink's do (chat.getPermalink)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.asked: list[tuple[str, str]] = []

    def permalink(self, channel_id: str, ts: str, *, fetch: bool = True) -> str | None:
        self.asked.append((channel_id, ts))
        return f"https://acme.slack.com/archives/{channel_id}/p{ts.replace('.', '')}"


@pytest.mark.parametrize("linking", [True, False])
def test_the_digest_links_threads_through_the_sinks_permalink(tmp_path: Path, linking: bool) -> None:
    store = Store(tmp_path / "store.db")
    box = LinkingOutbox(store) if linking else Outbox(store)
    pipe = IncidentPipeline(store, outbox=box, settings=Settings.model_validate(
        {"slack": {"default_channel": "#ml-alerts"}}))
    pipe.handle_run(run(dead_worker(), started=T0), T0)
    box.drain(lambda m: SendResult(ts=f"1700000000.{m.id:06d}", channel="C0ALERTS"), T0, max_sends=10)
    ts = box.get("incident:1:root")["ts"]  # type: ignore[index]
    now = T0 + timedelta(hours=1)
    pipe.post_digest(now, channel="#ml-platform")
    payload = box.get(f"digest:#ml-platform:{now.isoformat()}")["payload"]  # type: ignore[index]
    link = f"https://acme.slack.com/archives/C0ALERTS/p{ts.replace('.', '')}"
    if isinstance(box, LinkingOutbox):
        assert box.asked == [("C0ALERTS", ts)] and link in payload
    else:  # the bare queue has no permalinks: the digest lists the incident without a link
        assert "https://" not in payload and "Worker gpu-3" in payload
    store.close()
