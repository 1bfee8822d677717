"""Fixtures for the listener tests: the bot's real services (`create_app`) over a fake Slack and the simulator, with
a work pool that holds what listeners hand over (tests/unit/slack/_listener_support.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from slack_bolt import BoltContext

from bot.config import Settings
from bot.sim.server import SimServer
from bot.slack.app import create_app, services_of, shutdown_app
from bot.slack.services import BotServices
from bot.store import Store
from tests.e2e.conftest import SIGNING_SECRET, sim_settings
from tests.fakes.slack_api import FakeSlack
from tests.unit.slack._listener_support import FakeAck, HeldPool, ServicesFactory


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        yield slack


@pytest.fixture
def listener_settings(sim: SimServer, fake_slack: FakeSlack, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The e2e tests' settings (server `prod` on the simulator, a store and playbooks under tmp_path), #general for
    incidents, and no Slack or ClearML setting from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(("SLACK_", "CLEARML_")):
            monkeypatch.delenv(name, raising=False)
    return sim_settings(sim, fake_slack, tmp_path, monkeypatch, default_channel="#general")


@pytest.fixture
def services_for(fake_slack: FakeSlack) -> Iterator[ServicesFactory]:
    """`services_for(settings)` -> `create_app`'s services (store, outbox, incident pipeline, action core, Home)
    with a HeldPool as their work pool; every app is shut down and its store closed after the test."""
    with ExitStack() as stack:

        def make(settings: Settings) -> BotServices:
            assert settings.store is not None
            store = Store(settings.store)
            stack.callback(store.close)
            app = create_app(settings, store=store, token=fake_slack.bot_token, signing_secret=SIGNING_SECRET,
                             pool=HeldPool())
            stack.callback(shutdown_app, app)
            return services_of(app)

        yield make


@pytest.fixture
def bot_services(listener_settings: Settings, services_for: ServicesFactory) -> BotServices:
    return services_for(listener_settings)


@pytest.fixture
def held(bot_services: BotServices) -> HeldPool:
    """The services' work pool: what the listener handed over, not yet run."""
    assert isinstance(bot_services.pool, HeldPool)
    return bot_services.pool


@pytest.fixture
def context(bot_services: BotServices) -> BoltContext:
    """What Bolt hands a listener: the services, as `create_app`'s middleware injects them."""
    return BoltContext({"services": bot_services})


@pytest.fixture
def ack() -> FakeAck:
    return FakeAck()
