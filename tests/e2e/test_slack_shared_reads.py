"""Many people, one fleet: concurrent `/clearml status` through the signed HTTP endpoint share one set of ClearML
calls (counted from the simulator's call log), and a status typed a little later is answered from the read window
and says how old its data is. The window's clock is frozen and moved by the test: nothing depends on timing."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.sim.server import SimServer
from bot.slack.app import services_of
from bot.slack.serve import BotServer
from tests.e2e.conftest import HttpBot, bot_env, sim_settings
from tests.e2e.test_slack_commands import blocks_text
from tests.fakes.slack_api import FakeSlack

WINDOW_S = 5.0


class FrozenClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def windowed_bot(
    fake_slack: FakeSlack, sim_factory: object, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> Iterator[HttpBot]:
    sim: SimServer = sim_factory("basic", latency_ms=150)  # type: ignore[operator]
    settings = sim_settings(sim, fake_slack, tmp_path, clean_env).model_copy(update={"read_window": WINDOW_S})
    server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack))
    server.start()
    assert server.app is not None
    services_of(server.app).reads.clock = FrozenClock()
    try:
        yield HttpBot(server, fake_slack, sim, settings)
    finally:
        server.stop()


def _status_texts(bot: HttpBot, count: int, since: int) -> list[str]:
    updates = bot.slack.wait_for("chat.update", since + count, timeout=60)
    return [blocks_text(u) for u in updates[since:]]


def test_twenty_people_typing_status_at_once_cost_the_calls_of_one(windowed_bot: HttpBot) -> None:
    bot = windowed_bot
    assert bot.server.app is not None
    window = services_of(bot.server.app).reads
    clock: FrozenClock = window.clock  # type: ignore[assignment]
    bot.command("status")
    alone = _status_texts(bot, 1, 0)[0]
    calls_of_one = len(bot.sim.calls)
    assert calls_of_one >= 5 and "(shared)" not in alone

    clock.now += WINDOW_S + 1  # nothing left to share: the burst must ask ClearML itself
    bot.sim.reset_calls()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        acks = list(pool.map(lambda _: bot.command("status")[0].status_code, range(20)))
    assert acks == [200] * 20
    texts = _status_texts(bot, 20, 1)
    assert all("Agents" in t and "2 alive" in t for t in texts)  # everybody got the whole overview
    # single-flight: one set of reads for the twenty, and the token the first command got still serves
    assert len(bot.sim.calls) == calls_of_one - 1 and not bot.sim.calls_to("auth.login")

    # three seconds later: answered without ClearML, saying how old the data is
    clock.now += 3
    bot.sim.reset_calls()
    bot.command("status")
    later = _status_texts(bot, 1, 21)[0]
    assert bot.sim.calls == []
    assert "0 API calls" in later and "data 3 s old (shared)" in later

    # past the window: asked again, and no age shown
    clock.now += WINDOW_S
    bot.command("status")
    fresh = _status_texts(bot, 1, 22)[0]
    assert len(bot.sim.calls) == calls_of_one - 1  # every read asked again; the token of before still serves
    assert "(shared)" not in fresh
