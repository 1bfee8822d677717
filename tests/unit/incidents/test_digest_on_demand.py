"""Digests: trend lines whose arrow is the number's direction and whose word is the verdict, and
`clearml-chatops digest` on demand."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import Settings
from bot.incidents.digest import Digest, Trend, build_digest
from bot.incidents.pipeline import IncidentPipeline, TextRenderer
from bot.slack.incidents.messages import SlackIncidentRenderer
from bot.store import Store
from tests.unit._incidents_support import T0, dead_worker, run

TRENDS = [
    # fewer agents registered: the number goes down, and that is worse
    Trend("agents.registered", "agents registered", 2, 3, "higher", "count"),
    # longer queue waits: up, worse
    Trend("queues.wait_median_s", "median queue wait", 600, 60, "lower", "seconds"),
    # fewer problems per run: down, better
    Trend("run.problems", "problems per run", 1, 4, "lower", "count"),
    # more agents alive: up, better
    Trend("agents.alive", "agents alive", 9, 6, "higher", "count"),
    Trend("queues.pending", "tasks waiting in queues", 5, 5, "lower", "count"),
]


def digest_with_trends() -> Digest:
    return Digest(period_start=T0, period_end=T0 + timedelta(days=1), state="ok", headline="All clear: no open "
                  "incidents", runs=3, problem_runs=1, counts={}, open_counts={}, new=[], ongoing=[], resolved=[],
                  more={"new": 0, "ongoing": 0, "resolved": 0}, top_offenders=[], trends=TRENDS, metrics={})


def test_slack_trend_lines_show_the_direction_with_the_arrow_and_the_verdict_in_words() -> None:
    shown = json.dumps(SlackIncidentRenderer().digest(digest_with_trends()).blocks, ensure_ascii=False)
    assert "agents registered: *2* (before 3) :arrow_lower_right: worse" in shown
    assert "median queue wait: *10m* (before 60s) :arrow_upper_right: worse" in shown
    assert "problems per run: *1* (before 4) :arrow_lower_right: better" in shown
    assert "agents alive: *9* (before 6) :arrow_upper_right: better" in shown
    assert "tasks waiting in queues: *5* (before 5) :left_right_arrow: same" in shown
    assert ":arrow_upper_right: worse" not in shown.split("agents registered")[1].split("\\n")[0]


def test_text_trend_lines_say_the_same() -> None:
    text = TextRenderer().digest(digest_with_trends()).text
    assert "agents registered: 2 (before: 3) ↘ worse" in text
    assert "median queue wait: 10m (before: 60s) ↗ worse" in text
    assert "problems per run: 1 (before: 4) ↘ better" in text


@pytest.fixture
def config(tmp_path: Path) -> Path:
    store_path = tmp_path / "store.db"
    settings = Settings.model_validate({"store": str(store_path), "slack": {"default_channel": "#ml-alerts"}})
    store = Store(store_path)
    pipe = IncidentPipeline(store, settings=settings, sink=lambda *a: None)
    result = run(dead_worker(), started=T0)
    pipe.handle_run(result, T0, run_id=store.record_run(result))
    store.close()
    path = tmp_path / "bot.yaml"
    path.write_text(f"store: {store_path}\nslack:\n  default_channel: '#ml-alerts'\n")
    return path


def test_cli_digest_prints_the_digest_now_without_moving_the_schedules_period(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["digest", "--config", str(config), "--since", "3650d"]) == 0
    out = capsys.readouterr().out
    assert "Digest" in out and "1 open incident (1 critical)" in out and "Worker gpu-3" in out
    assert main(["digest", "--config", str(config), "--since", "3650d", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["headline"] == "1 open incident (1 critical)" and [i["id"] for i in doc["ongoing"] + doc["new"]] == [1]
    # on demand: not recorded, so the scheduled digest still covers everything since the last scheduled one
    store = Store(tmp_path / "store.db")
    try:
        assert build_digest(store, T0 + timedelta(hours=1)).previous_at is None
    finally:
        store.close()


def test_cli_digest_post_sends_it_to_slack(config: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.slack_api import FakeSlack

    with FakeSlack() as slack:
        config.write_text(config.read_text() + f"  api_url: {slack.base_url}\n")
        monkeypatch.setenv("SLACK_BOT_TOKEN", slack.bot_token)
        assert main(["digest", "--config", str(config), "--since", "3650d", "--post", "#general"]) == 0
        [call] = slack.calls_to("chat.postMessage")
        assert call.args["channel"] == "#general" and "1 open incident" in call.args["text"]
        assert slack.violations == []
    assert "Digest posted to #general" in capsys.readouterr().out
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    assert main(["digest", "--config", str(config), "--post"]) == 2
    assert "SLACK_BOT_TOKEN" in capsys.readouterr().err
