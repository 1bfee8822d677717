"""The Home tab's Block Kit builder on hand-made data: Slack's limits with everything at its worst (many servers,
incidents, pools, a long result), ClearML text escaped, the state words, and the incident cache in front of ClearML
(one fetch for many concurrent opens, a new one after the TTL)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from bot.incidents.digest import Trend
from bot.slack.home.messages import (
    DigestTrends,
    FleetState,
    HomeData,
    HomeResult,
    IncidentLine,
    NextRun,
    PoolState,
    QueueLine,
    fleet_state,
    render_home,
)
from bot.slack.home.state import FleetCache
from bot.slack.messages.common import section
from tests.fakes.slack_api import validate_view

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
EVIL = "<!channel> *bold* <https://evil.example|click> & co"


def fleet(name: str = "prod", **kw: object) -> FleetState:
    base: dict[str, object] = dict(
        server=name, web_url="https://app.example", fetched_at=NOW - timedelta(seconds=12), reachable=True,
        agents={"alive": 5, "stale": 1, "dead": 1},
        pools=tuple(PoolState(f"pool-{i}-{EVIL}", alive=i, stale=1, dead=0) for i in range(15)),
        queues=tuple(QueueLine(f"q{i}-{EVIL}", 30 - i, 3600.0 + i, f"https://app.example/q{i}") for i in range(10)),
        queues_total=40, waiting_total=300, api_calls=3,
    )
    base.update(kw)
    return FleetState(**base)  # type: ignore[arg-type]


def data(servers: int = 1, incidents: int = 3) -> HomeData:
    return HomeData(
        now=NOW,
        fleets=tuple(fleet(f"srv{i}") for i in range(servers)),
        incidents=tuple(IncidentLine(i, "srv0", "critical" if i % 3 == 0 else "warning", f"Agent {EVIL} #{i}",
                                     NOW - timedelta(hours=i), None if i % 2 else "<@U0BOB>", None,
                                     f"https://slack.com/archives/C0X/p{i}") for i in range(1, incidents + 1)),
        next_runs=(NextRun("health", "playbook", "*/5 * * * *", NOW + timedelta(minutes=3), "ok"),
                   NextRun("digest", "digest", "0 9 * * *", None, None)),
        digest=DigestTrends(NOW - timedelta(hours=1), "2 open incidents", (
            Trend("agents.alive", "agents alive", 5.0, 7.0, "higher", "count"),
            Trend("queues.wait_median_s", "median queue wait", 600.0, 1200.0, "lower", "seconds"))),
        playbooks=tuple(f"pb{i}" for i in range(12)),
    )


def test_a_full_home_stays_within_slacks_limits_and_escapes_clearml_text() -> None:
    result = HomeResult("`run health`", [section(f"line {i}") for i in range(50)], at=NOW)
    view = render_home(data(servers=4, incidents=60), result)
    assert validate_view(view) == []
    assert len(view["blocks"]) <= 100
    text = json.dumps(view["blocks"], ensure_ascii=False)
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "more open incidents" in text or "…and" in text
    assert "cut to fit the Home tab" in text  # the long result was cut, the rest of the tab still shows


def test_the_home_reads_right_for_one_server() -> None:
    view = render_home(data())
    assert validate_view(view) == []
    blocks = view["blocks"]
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["text"] == "🔴 srv0: critical"
    text = json.dumps(blocks, ensure_ascii=False)
    assert "5 alive · 1 stale · 1 dead" in text and "300 tasks waiting in 40 queues" in text
    assert "oldest 1h" in text and "…30 more queues not shown" in text
    assert "not acknowledged" in text and "acknowledged by <@U0BOB>" in text and "|thread>" in text
    assert "in 3m (09:03 UTC)" in text and "agents alive: 5 (before 7, :warning: worse)" in text
    assert "median queue wait: 10m (before 20m, :white_check_mark: better)" in text
    assert "asked 12s ago" in text


def test_state_words() -> None:
    calm = fleet(agents={"alive": 3, "stale": 0, "dead": 0}, pools=(PoolState("gpu", 3),))
    assert fleet_state(calm, ()) == "ok"
    assert fleet_state(fleet(agents={"alive": 3, "stale": 0, "dead": 0}, pools=(PoolState("gpu-*", 1, 0, 0, 3, 4),)),
                       ()) == "warning"  # expected agents missing
    assert fleet_state(fleet(reachable=False, error="refused"), ()) == "critical"
    down = render_home(HomeData(NOW, (fleet(reachable=False, error=f"connect {EVIL}"),), (), (), None, ()))
    assert validate_view(down) == [] and "did not answer" in json.dumps(down) and "doctor" in json.dumps(down)
    healthy = render_home(HomeData(NOW, (calm,), (), (), None, ()))
    assert "srv" not in healthy["blocks"][0]["text"]["text"] and "all good" in healthy["blocks"][0]["text"]["text"]
    assert "No open incidents." in json.dumps(healthy)


def test_the_fleet_cache_shares_one_fetch_and_expires() -> None:
    clock = [0.0]
    calls: list[str] = []

    async def fetch(server: object) -> FleetState:
        calls.append(server.name)
        await asyncio.sleep(0.01)
        return fleet(server.name)

    class Server:
        name = "prod"

    async def main() -> None:
        cache = FleetCache(fetch, ttl_s=30.0, clock=lambda: clock[0])
        states = await asyncio.gather(*(cache.get(Server()) for _ in range(50)))  # type: ignore[arg-type]
        assert len(calls) == 1 and all(s is states[0] for s in states)
        clock[0] = 20.0
        await cache.get(Server())  # type: ignore[arg-type]
        assert len(calls) == 1
        await cache.get(Server(), max_age_s=10.0)  # type: ignore[arg-type]
        assert len(calls) == 2
        clock[0] = 100.0
        await cache.get(Server())  # type: ignore[arg-type]
        assert len(calls) == 3

    asyncio.run(main())
