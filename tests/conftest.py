"""Fixtures for every test: ClearML API simulators on loopback, stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import ServerSettings
from bot.sim.server import SimServer
from tests.helpers import server_settings

SimFactory = Callable[..., SimServer]


@pytest.fixture
def sim_factory() -> Iterator[SimFactory]:
    """`sim_factory(scenario="basic", **SimServer kwargs)` -> a started SimServer; all are stopped at teardown."""
    started: list[SimServer] = []

    def make(scenario: str | Path | dict[str, Any] = "basic", **kwargs: Any) -> SimServer:
        sim = SimServer(scenario=scenario, **kwargs)
        started.append(sim)
        return sim.start()

    yield make
    for sim in reversed(started):
        sim.stop()


@pytest.fixture
def sim(sim_factory: SimFactory) -> SimServer:
    """A simulator serving the `basic` scenario."""
    return sim_factory("basic")


@pytest.fixture
def sim_server_settings(sim: SimServer) -> ServerSettings:
    """ServerSettings for the `sim` fixture's simulator."""
    return server_settings(sim)
