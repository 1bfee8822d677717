"""Many people, one fleet: concurrent `/clearml status` through the signed HTTP endpoint share one set of ClearML
calls (counted from the simulator's call log), and a status typed right after is answered from the read window and
says how old its data is."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.sim.server import SimServer
from bot.slack.serve import BotServer
from tests.e2e.conftest import HttpBot, bot_env, sim_settings
from tests.e2e.test_slack_commands import blocks_text
from tests.fakes.slack_api import FakeSlack

WINDOW_S = 2.0


@pytest.fixture
def windowed_bot(
    fake_slack: FakeSlack, sim_factory: object, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> Iterator[HttpBot]:
    sim: SimServer = sim_factory("basic", latency_ms=150)  # type: ignore[operator]
    settings = sim_settings(sim, fake_slack, tmp_path, clean_env).model_copy(update={"read_window": WINDOW_S})
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack))
    server.start()
    try:
        yield HttpBot(server, fake_slack, sim, settings)
    finally:
        server.stop()


def _status_texts(bot: HttpBot, count: int, since: int) -> list[str]:
    updates = bot.slack.wait_for("chat.update", since + count, timeout=60)
    return [blocks_text(u) for u in updates[since:]]


def test_twenty_people_typing_status_at_once_cost_the_calls_of_one(windowed_bot: HttpBot) -> None:
    bot = windowed_bot
    bot.command("status")
    alone = _status_texts(bot, 1, 0)[0]
    calls_of_one = len(bot.sim.calls)
    assert calls_of_one >= 5 and "(shared)" not in alone

    time.sleep(WINDOW_S + 0.5)  # nothing left to share: the burst must ask ClearML itself
    bot.sim.reset_calls()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        acks = list(pool.map(lambda _: bot.command("status")[0].status_code, range(20)))
    assert acks == [200] * 20
    texts = _status_texts(bot, 20, 1)
    assert all("Agents" in t and "2 alive" in t for t in texts)  # everybody got the whole overview
    assert len(bot.sim.calls) == calls_of_one  # single-flight: one set of calls for the twenty

    # right after, within the window: answered without ClearML, saying how old the data is
    bot.sim.reset_calls()
    bot.command("status")
    last = _status_texts(bot, 1, 21)[0]
    assert bot.sim.calls == []
    assert "0 API calls" in last and "s old (shared)" in last
