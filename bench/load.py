"""Benchmark 7: the bot's load on the ClearML server, in calls and bytes per hour.

For each fleet (S, M, L of benchmark 1; the simulator in its own process, no added latency):

- **Scheduled hour**: the six shipped playbooks on their shipped schedules (health 5m, agents 10m, queues and storage
  15m, reproducibility 1h, datasets 6h: a sixth of one run per hour). The hour's twelve fire times (every 5 minutes)
  are played in order; at each, the playbooks due then run at the same moment, each in a thread and event loop of
  its own as `serve`'s scheduler runs them, every one through one shared read window (or none: window 0). The
  window's clock is simulated: 300 s pass between fire times, so nothing carries over from one to the next.
- **Outage hour**: 50 people type `/clearml status` every minute for an hour (`status` runs the health playbook plus
  the server, agent and queue views). Without the window, one status costs what it costs alone, 3,000 times over.
  With it, two patterns: all 50 at the same second each minute (what an alert causes), and 50 at random seconds of
  each minute (seeded), played in time order on a simulated clock.
- **The web UI**, for comparison, from clearml-web's source (allegroai/clearml-web, src/app/webapp-common/
  workers-and-queues/): the workers page dispatches `getWorkers` (`workers.get_all`) on an `interval(30000)`, the
  queues page `getQueues` (`queues.get_all_ex` with `only_fields: ['*', 'entries.task.name']`) and, with a queue
  selected, the same call for that queue, on an `interval(30000)`; their charts poll `workers.get_activity_report` /
  `queues.get_queue_metrics` every max(range / chart width, 40) s. The list calls' bytes are measured here by making
  them against the simulator; the chart endpoints are counted, not measured (the simulator does not implement
  `workers.get_activity_report`).

Calls and bytes are the bot's own client counters (every HTTP request to the API server, logins included; response
body bytes), the same counters `run --format json` reports.
"""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path
from typing import Any

import httpx

from bench.common import running_sim
from bench.fleet import FLEETS
from bench.report import Row

REPO = Path(__file__).resolve().parent.parent
HOUR_S = 3600
TICK_S = 300  # the greatest common divisor of the shipped intervals (5m, 10m, 15m, 1h, 6h)
PEOPLE = 50
WINDOW_S = 5.0  # the shipped default of `read_window`
UI_LIST_PERIOD_S = 30  # REFRESH_INTERVAL in workers.component.ts / queues.component.ts
UI_CHART_PERIOD_S = 40  # the smallest granularity of the stats charts (Math.max(..., 40))


class SimClock:
    """The read window's clock: simulated seconds that move only when the benchmark says."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


def _shipped() -> list[Any]:
    from bot.engine.playbook import find_playbooks, load_playbook

    return [load_playbook(p) for p in find_playbooks(REPO / "playbooks")]


def _every_s(playbook: Any) -> float | None:
    from bot.durations import parse_duration
    from bot.engine.playbook import IntervalSchedule

    if isinstance(playbook.schedule, IntervalSchedule):
        return parse_duration(playbook.schedule.every)
    return None


def _server(sim: Any) -> Any:
    from pydantic import SecretStr

    from bot.config import ServerSettings

    key, secret = sim.keys
    return ServerSettings(name="sim", api_url=sim.api_url, web_url=sim.env["CLEARML_WEB_HOST"],
                          files_url=sim.files_url, access_key=SecretStr(key), secret_key=SecretStr(secret))


def _run_in_thread(fn: Any) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def scheduled_runs(server: Any, playbooks: list[Any], window: Any) -> dict[str, float]:
    """Calls and bytes of the playbooks due at one fire time, run at the same moment (a thread and loop each)."""
    from bot.clearml.client import ClearMLClient
    from bot.config import Settings
    from bot.engine.runner import run_playbooks
    from bot.engine.snapshot import Snapshot

    totals = {"calls": 0.0, "bytes": 0.0}
    lock = threading.Lock()

    def one(pb: Any) -> None:
        async def go() -> None:
            client = ClearMLClient(server)
            try:
                snap = Snapshot(client, server, Settings(), window=window)
                await run_playbooks([pb], Settings(), server, snapshot=snap, trigger="schedule")
            finally:
                await client.aclose()
            with lock:
                totals["calls"] += client.stats.calls
                totals["bytes"] += client.stats.bytes_received

        asyncio.run(go())

    for thread in [_run_in_thread(lambda pb=pb: one(pb)) for pb in playbooks]:
        thread.join(600)
    return totals


def scheduled_hour(server: Any, window_s: float) -> dict[str, Any]:
    from bot.engine.window import ReadWindow

    playbooks = [pb for pb in _shipped() if _every_s(pb)]
    clock = SimClock()
    window = ReadWindow(window_s, clock=clock)
    calls = bytes_ = 0.0
    per_playbook_runs: dict[str, float] = {}
    for tick in range(0, HOUR_S, TICK_S):
        due = [pb for pb in playbooks if tick % int(_every_s(pb) or HOUR_S) == 0 and (_every_s(pb) or 0) <= HOUR_S]
        got = scheduled_runs(server, due, window)
        calls, bytes_ = calls + got["calls"], bytes_ + got["bytes"]
        for pb in due:
            per_playbook_runs[pb.name] = per_playbook_runs.get(pb.name, 0) + 1
        clock.now += TICK_S
    # playbooks scheduled less often than hourly: their share of one run per hour
    for pb in playbooks:
        every = _every_s(pb) or HOUR_S
        if every > HOUR_S:
            got = scheduled_runs(server, [pb], window)
            share = HOUR_S / every
            calls, bytes_ = calls + got["calls"] * share, bytes_ + got["bytes"] * share
            per_playbook_runs[pb.name] = share
            clock.now += TICK_S
    return {"calls": calls, "bytes": bytes_, "runs": per_playbook_runs, "window_s": window_s}


async def _status(server: Any, window: Any) -> tuple[int, int]:
    """One `/clearml status` as the bot answers it (health playbook plus the views): its client's calls and bytes."""
    from bot.clearml.client import ClearMLClient
    from bot.config import Settings
    from bot.slack.commands import lookups
    from bot.slack.commands.lookups import Meta, open_snapshot

    settings = Settings()
    client = ClearMLClient(server)
    try:
        meta = Meta()
        async with open_snapshot(settings, server, meta, client=client, window=window) as snap:
            await lookups.status(snap, meta, settings, _SHIPPED)
    finally:
        await client.aclose()
    return client.stats.calls, client.stats.bytes_received


_SHIPPED: list[Any] = []


def outage_hour(server: Any, *, minutes: int, seed: int = 7) -> dict[str, Any]:
    """50 people, one status each per minute, for `minutes` (scaled to an hour)."""
    from bot.engine.window import ReadWindow

    scale = 60 / minutes
    alone = asyncio.run(_status(server, None))

    clock = SimClock()
    window = ReadWindow(WINDOW_S, clock=clock)

    async def same_second() -> tuple[int, int]:
        got = await asyncio.gather(*(_status(server, window) for _ in range(PEOPLE)))
        return sum(c for c, _ in got), sum(b for _, b in got)

    together = [0, 0]
    for _ in range(minutes):
        calls, size = asyncio.run(same_second())
        together[0] += calls
        together[1] += size
        clock.now += 60

    rng = random.Random(seed)
    clock = SimClock()
    window = ReadWindow(WINDOW_S, clock=clock)
    spread = [0, 0]
    start = clock.now
    for minute in range(minutes):
        for offset in sorted(rng.uniform(0, 60) for _ in range(PEOPLE)):
            clock.now = start + minute * 60 + offset
            calls, size = asyncio.run(_status(server, window))
            spread[0] += calls
            spread[1] += size
    return {
        "one_status": {"calls": alone[0], "bytes": alone[1]},
        "no_window": {"calls": alone[0] * PEOPLE * 60, "bytes": alone[1] * PEOPLE * 60},
        "same_second": {"calls": together[0] * scale, "bytes": together[1] * scale},
        "random_seconds": {"calls": spread[0] * scale, "bytes": spread[1] * scale},
        "minutes_played": minutes,
    }


def web_ui(server: Any, sim: Any) -> dict[str, Any]:
    """What one open browser tab of the workers page, and of the queues page, asks per hour; list bytes measured."""
    key, secret = sim.keys
    with httpx.Client(base_url=sim.api_url, timeout=60) as http:
        token = http.post("/auth.login", auth=(key, secret)).json()["data"]["token"]
        headers = {"Authorization": f"Bearer {token}"}
        workers = http.post("/workers.get_all", json={}, headers=headers)
        queues = http.post("/queues.get_all_ex", json={"only_fields": ["*", "entries.task.name"]}, headers=headers)
        first = (queues.json()["data"]["queues"] or [{}])[0].get("id")
        one_queue = http.post("/queues.get_all_ex", json={"id": [first], "only_fields": ["*", "entries.task.name"]},
                              headers=headers)
    per_hour = HOUR_S / UI_LIST_PERIOD_S
    charts = HOUR_S / UI_CHART_PERIOD_S
    return {
        "workers_page": {"calls": per_hour + charts, "list_calls": per_hour,
                         "list_bytes": per_hour * len(workers.content), "chart_calls": charts},
        "queues_page": {"calls": 2 * per_hour + charts, "list_calls": 2 * per_hour,
                        "list_bytes": per_hour * (len(queues.content) + len(one_queue.content)), "chart_calls": charts},
        "bytes_per_call": {"workers.get_all": len(workers.content), "queues.get_all_ex": len(queues.content),
                           "queues.get_all_ex (one queue)": len(one_queue.content)},
    }


def run(workdir: Path, *, quick: bool) -> tuple[dict[str, Any], list[Row]]:
    _SHIPPED[:] = _shipped()
    fleets = [f for f in FLEETS if f[0] == "S"] if quick else FLEETS
    results = []
    for label, w, q, t in fleets:
        spec = f"workers={w},queues={q},tasks={t}"
        with running_sim(workdir / f"sim-load-{label}", fleet=spec) as sim:
            server = _server(sim)
            results.append({
                "label": label, "fleet": {"workers": w, "queues": q, "tasks": t},
                "scheduled_no_window": scheduled_hour(server, 0),
                "scheduled_window": scheduled_hour(server, WINDOW_S),
                "outage": outage_hour(server, minutes=3 if quick else 5),
                "web_ui": web_ui(server, sim),
            })
    rows: list[Row] = []
    for r in results:
        name = f"7 load {r['label']}"
        off, on = r["scheduled_no_window"], r["scheduled_window"]
        rows.append(Row(name, "scheduled hour: ClearML calls (window 5 s vs off)", on["calls"], off["calls"],
                        "no window", "calls/h"))
        rows.append(Row(name, "scheduled hour: MB received (window 5 s vs off)", on["bytes"] / 1e6,
                        off["bytes"] / 1e6, "no window", "MB/h"))
        out = r["outage"]
        rows.append(Row(name, "outage hour, 50 x status/min at once: calls", out["same_second"]["calls"],
                        out["no_window"]["calls"], "no window", "calls/h"))
        rows.append(Row(name, "outage hour, 50 x status/min at random seconds: calls", out["random_seconds"]["calls"],
                        out["no_window"]["calls"], "no window", "calls/h"))
        rows.append(Row(name, "outage hour, random seconds: MB received", out["random_seconds"]["bytes"] / 1e6,
                        out["no_window"]["bytes"] / 1e6, "no window", "MB/h"))
        ui = r["web_ui"]
        rows.append(Row(name, "scheduled hour vs one web UI tab on the workers page: calls", on["calls"],
                        ui["workers_page"]["calls"], "UI workers page", "calls/h"))
        rows.append(Row(name, "scheduled hour vs the workers page's list polling: MB", on["bytes"] / 1e6,
                        ui["workers_page"]["list_bytes"] / 1e6, "UI workers list", "MB/h"))
    return {"fleets": results, "window_s": WINDOW_S, "people": PEOPLE}, rows
