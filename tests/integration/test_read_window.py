"""The shared read window (bot/engine/window.py) over the simulator: calls are counted from the simulator's own call
log. Concurrent identical reads cost one call; servers and credentials never share; 0 turns it off; data served from
the window says how old it is (findings, run results, the status reply)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from bot.clearml.client import ClearMLClient
from bot.config import ServerSettings, Settings
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import reuse_limit_s, run_playbooks
from bot.engine.snapshot import Snapshot
from bot.engine.window import ReadWindow
from bot.slack.commands import lookups
from bot.slack.commands.lookups import Meta, open_snapshot
from bot.slack.commands.messages import render_status
from tests.helpers import server_settings


class FakeClock:
    """Monotonic seconds that only move when the test says so (the window's notion of "now")."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _workers(server: ServerSettings, window: ReadWindow | None, n: int) -> list[int]:
    """n snapshots (one client each, as n commands have) asking for the workers at the same time."""

    async def one() -> int:
        async with ClearMLClient(server) as client:
            snap = Snapshot(client, server, Settings(), window=window)
            return len(await snap.workers())

    return list(await asyncio.gather(*(one() for _ in range(n))))


def test_concurrent_identical_reads_cost_one_call(sim_factory: Any) -> None:
    sim = sim_factory("basic", latency_ms=100)  # every request is still in flight when the others ask
    server = server_settings(sim)
    counts = asyncio.run(_workers(server, ReadWindow(5), 20))
    assert len(set(counts)) == 1 and counts[0] > 0  # everybody got the full list
    assert len(sim.calls_to("workers.get_all")) == 1
    assert len(sim.calls_to("auth.login")) == 1  # only the one client that asked ClearML logged in


def test_a_request_in_flight_is_shared_across_event_loops(sim_factory: Any) -> None:
    """Commands run on the work pool's loop, scheduled runs on loops of their own: they still share."""
    sim = sim_factory("basic", latency_ms=300)
    server = server_settings(sim)
    window = ReadWindow(5)
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append(asyncio.run(_workers(server, window, 3))))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4 and all(r == results[0][:1] * 3 for r in results)
    assert len(sim.calls_to("workers.get_all")) == 1


def test_window_zero_turns_sharing_off(sim_factory: Any) -> None:
    sim = sim_factory("basic", latency_ms=50)
    server = server_settings(sim)
    asyncio.run(_workers(server, ReadWindow(0), 5))
    assert len(sim.calls_to("workers.get_all")) == 5
    sim.reset_calls()
    asyncio.run(_workers(server, None, 3))
    assert len(sim.calls_to("workers.get_all")) == 3


def test_different_servers_never_share(sim_factory: Any) -> None:
    one, two = sim_factory("basic", latency_ms=100), sim_factory("basic", latency_ms=100)
    window = ReadWindow(5)

    async def both() -> None:
        await asyncio.gather(_workers(server_settings(one), window, 3), _workers(server_settings(two), window, 3))

    asyncio.run(both())
    assert len(one.calls_to("workers.get_all")) == 1
    assert len(two.calls_to("workers.get_all")) == 1


def test_different_credentials_never_share(sim_factory: Any) -> None:
    sim = sim_factory("basic", latency_ms=100, keys=[("KEYONE", "SECRETONE"), ("KEYTWO", "SECRETTWO")])
    first = server_settings(sim, access_key="KEYONE", secret_key="SECRETONE")
    second = server_settings(sim, name="sim-other-team", access_key="KEYTWO", secret_key="SECRETTWO")
    same_keys_other_name = server_settings(sim, name="alias", access_key="KEYONE", secret_key="SECRETONE")
    window = ReadWindow(5)

    async def all_three() -> None:
        await asyncio.gather(_workers(first, window, 3), _workers(second, window, 3),
                             _workers(same_keys_other_name, window, 3))

    asyncio.run(all_three())
    # one call per key pair; the alias (same URL, same keys) shared the first pair's call
    assert len(sim.calls_to("workers.get_all")) == 2
    assert len(sim.calls_to("auth.login")) == 2


def test_a_fresh_result_serves_the_next_command_and_says_how_old_it_is(sim_factory: Any) -> None:
    sim = sim_factory("basic")
    server = server_settings(sim)
    clock = FakeClock()
    window = ReadWindow(5, clock=clock)
    settings = Settings()

    async def status() -> tuple[Meta, lookups.StatusView]:
        meta = Meta()
        async with open_snapshot(settings, server, meta, window=window) as snap:
            view = await lookups.status(snap, meta, settings)
        return meta, view

    first_meta, first = asyncio.run(status())
    calls_of_one = len(sim.calls)
    assert first_meta.data_age_s is None and first_meta.api_calls == calls_of_one
    assert first.result is not None and all(f.data_age_s is None for f in first.result.findings)

    clock.now += 3  # three seconds later, the next person types `status`
    meta, view = asyncio.run(status())
    assert len(sim.calls) == calls_of_one  # no call at all
    assert meta.api_calls == 0 and meta.data_age_s == 3.0
    assert view.result is not None and view.result.data_age_s == 3.0
    assert view.result.findings and all(f.data_age_s == 3.0 for f in view.result.findings)
    assert view.agents == first.agents  # the same answer
    assert json.loads(json.dumps(view.result.to_json()))["data_age_s"] == 3.0
    context = json.dumps(render_status(view).blocks[-1].to_dict())
    assert "data 3 s old (shared)" in context

    clock.now += 3  # six seconds after the first fetch: past the window, asked again
    meta, _ = asyncio.run(status())
    assert len(sim.calls) > calls_of_one and meta.data_age_s is None and meta.api_calls > 0


def test_a_failed_read_is_not_served_from_the_window(sim_factory: Any) -> None:
    sim = sim_factory("basic")
    server = server_settings(sim)
    window = ReadWindow(5)
    sim.set_fault("workers.get_all", status=400, message="broken index", times=1)

    async def read() -> int | str:
        async with ClearMLClient(server) as client:
            try:
                return len(await Snapshot(client, server, Settings(), window=window).workers())
            except Exception as exc:
                return type(exc).__name__

    assert isinstance(asyncio.run(read()), str)
    assert isinstance(asyncio.run(read()), int)  # asked again, and this time it answered
    assert len(sim.calls_to("workers.get_all")) == 2


def test_scheduled_runs_reuse_only_data_fresh_enough_for_their_thresholds(sim_factory: Any) -> None:
    sim = sim_factory("basic")
    server = server_settings(sim)
    clock = FakeClock()
    window = ReadWindow(5, clock=clock)
    settings = Settings()
    strict = Playbook(name="strict", checks=[CheckEntry(check="agents.stale",
                                                        params={"stale_after": "20s", "dead_after": "60s"})])
    relaxed = Playbook(name="relaxed", checks=[CheckEntry(check="agents.stale",
                                                          params={"stale_after": "10m", "dead_after": "20m"})])
    assert reuse_limit_s([strict]) == 1.0  # 5 % of the shortest age threshold (notice_after's default is 60 s)
    assert reuse_limit_s([Playbook(name="v", checks=[CheckEntry(check="server.version")])]) is None

    async def run(pb: Playbook) -> Any:
        async with ClearMLClient(server) as client:
            return await run_playbooks([pb], settings, server, snapshot=Snapshot(client, server, settings,
                                                                                 window=window))

    asyncio.run(run(relaxed))
    assert len(sim.calls_to("workers.get_all")) == 1
    clock.now += 2
    reused = asyncio.run(run(relaxed))  # 2 s old data, within its 5 s allowance
    assert len(sim.calls_to("workers.get_all")) == 1 and reused.data_age_s == 2.0
    fresh = asyncio.run(run(strict))  # 2 s old data is more than its 1 s allowance: fetched anew
    assert len(sim.calls_to("workers.get_all")) == 2 and fresh.data_age_s is None


def test_commands_share_the_login_of_their_server_and_keys_only(sim_factory: Any) -> None:
    sim = sim_factory("basic", keys=[("KEYONE", "SECRETONE"), ("KEYTWO", "SECRETTWO")])
    first = server_settings(sim, access_key="KEYONE", secret_key="SECRETONE")
    second = server_settings(sim, access_key="KEYTWO", secret_key="SECRETTWO")
    clock = FakeClock()
    window = ReadWindow(5, clock=clock)

    async def workers(server: ServerSettings, w: ReadWindow) -> None:
        async with ClearMLClient(server, logins=w.logins) as client:
            await Snapshot(client, server, Settings(), window=w).workers()

    for _ in range(3):  # three commands, each past the window: every read asked again, one login for all
        asyncio.run(workers(first, window))
        clock.now += 10
    assert len(sim.calls_to("workers.get_all")) == 3 and len(sim.calls_to("auth.login")) == 1
    asyncio.run(workers(second, window))  # other keys: their own login, never the first pair's token
    assert len(sim.calls_to("auth.login")) == 2

    sim.reset_calls()
    off = ReadWindow(0)
    for _ in range(2):
        asyncio.run(workers(first, off))
    assert len(sim.calls_to("auth.login")) == 2  # window 0: as before, every client logs in
