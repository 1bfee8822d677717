"""Benchmark 3: slash-command acknowledgement under load.

The simulator (fleet S, 300 ms added to every ClearML call) and the fake Slack API each run in a process of their
own; the bot runs `python -m bot serve --http` (a third process) with the health playbook. This process sends
signed `/clearml status` requests over HTTP: one alone, then 50 at once, and measures each HTTP answer (the ack:
Slack's limit is 3 s) and, from the fake Slack's log, when each final message (the placeholder's replacement,
`chat.update`) was posted.

Baseline, side by side: the same requests to the least a Slack app must do (bench.workers.min_slack_app: uvicorn +
Starlette + signature check, answer 200). For the final message, the baseline is the same command sent alone.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
from slack_sdk.signature import SignatureVerifier

from bench.common import BenchError, median, percentile, running_sim
from bench.report import Row
from bench.serving import SIGNING_SECRET, FakeSlackProcess, fake_slack, min_slack_app, serve, write_config

FLEET = "workers=200,queues=50,tasks=20000"
LATENCY_MS = 300
CONCURRENT = 50
ACK_TARGET_MS = 200.0


def signed_request(text: str, user: str, response_url: str) -> tuple[bytes, dict[str, str]]:
    form = {
        "token": "legacy", "team_id": "T0FAKETEAM", "team_domain": "fake", "channel_id": "C0GENERAL",
        "channel_name": "general", "user_id": user, "user_name": user.lower(), "command": "/clearml", "text": text,
        "api_app_id": "A0FAKE", "response_url": response_url, "trigger_id": "1.2.3",
    }
    body = urllib.parse.urlencode(form)
    ts = str(int(time.time()))
    signature = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=ts, body=body) or ""
    headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
               "Content-Type": "application/x-www-form-urlencoded"}
    return body.encode(), headers


async def burst(url: str, slack: FakeSlackProcess, n: int, tag: str) -> tuple[float, list[float]]:
    """n signed `/clearml status` at once; (send time, ack latencies in ms). Signing happens before the clock."""
    requests = [signed_request("status", f"U0{tag.upper()}{i:03d}", slack.response_url(f"{tag}{i}"))
                for i in range(n)]
    limits = httpx.Limits(max_connections=n + 5, max_keepalive_connections=n + 5)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one(body: bytes, headers: dict[str, str]) -> float:
            start = time.perf_counter()
            response = await client.post(url, content=body, headers=headers)
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise BenchError(f"{url} answered {response.status_code}: {response.text[:200]}")
            return elapsed

        sent = time.time()
        latencies = await asyncio.gather(*(one(b, h) for b, h in requests))
    return sent, list(latencies)


def finals_after(slack: FakeSlackProcess, since: float, count: int, timeout: float = 180) -> list[float]:
    """Seconds from `since` to each final message (chat.update of a placeholder) posted after it."""
    deadline = time.monotonic() + timeout
    while True:
        calls = slack.dump()["calls"]
        updates = sorted(c["at"] - since for c in calls if c["method"] == "chat.update" and c["at"] >= since)
        if len(updates) >= count:
            return updates[:count]
        if time.monotonic() > deadline:
            raise BenchError(f"only {len(updates)} of {count} final messages within {timeout:g} s")
        time.sleep(0.25)


def run(workdir: Path, *, quick: bool) -> tuple[dict[str, Any], list[Row]]:
    # The shipped playbooks (the bot reads them all for every command), without their schedules: nothing may run
    # in the background of the measurement.
    playbooks = workdir / "slash-playbooks"
    playbooks.mkdir(parents=True, exist_ok=True)
    for shipped in sorted((Path(__file__).resolve().parent.parent / "playbooks").glob("*.yaml")):
        lines = shipped.read_text().splitlines()
        (playbooks / shipped.name).write_text("\n".join(x for x in lines if not x.startswith("schedule:")) + "\n")
    concurrent = 20 if quick else CONCURRENT
    reps = 1 if quick else 3
    bursts: list[dict[str, Any]] = []
    with running_sim(workdir / "sim-slash", fleet=FLEET, latency_ms=LATENCY_MS) as sim, fake_slack(workdir) as slack:
        config = write_config(workdir, sim, slack.base_url, playbooks)
        with serve(workdir, sim, config) as bot, min_slack_app(workdir) as baseline_url:
            # warm-up (first request of each process, first ClearML login), not measured
            asyncio.run(burst(bot.events_url, slack, 1, "warm"))
            asyncio.run(burst(baseline_url, slack, 1, "basewarm"))
            finals_after(slack, 0, 1)

            sent, single_ack = asyncio.run(burst(bot.events_url, slack, 1, "one"))
            single_final = finals_after(slack, sent, 1)[0]
            _, base_single = asyncio.run(burst(baseline_url, slack, 1, "baseone"))
            for rep in range(reps):
                _, base_acks = asyncio.run(burst(baseline_url, slack, concurrent, f"base{rep}x"))
                sent, acks = asyncio.run(burst(bot.events_url, slack, concurrent, f"many{rep}x"))
                finals = finals_after(slack, sent, concurrent)  # also: the next burst starts on a quiet bot
                bursts.append({
                    "ours": {"ack_p50_ms": median(acks), "ack_p99_ms": percentile(acks, 99), "ack_max_ms": max(acks),
                             "final_p50_s": median(finals), "final_p99_s": percentile(finals, 99),
                             "final_max_s": max(finals)},
                    "baseline": {"ack_p50_ms": median(base_acks), "ack_p99_ms": percentile(base_acks, 99),
                                 "ack_max_ms": max(base_acks)},
                })
            violations = slack.dump()["violations"]

    def med(side: str, key: str) -> float:
        return median([b[side][key] for b in bursts])

    ours = {k: med("ours", k) for k in bursts[0]["ours"]}
    base = {k: med("baseline", k) for k in bursts[0]["baseline"]}
    detail = {
        "fleet": FLEET, "latency_ms": LATENCY_MS, "concurrent": concurrent, "bursts": bursts,
        "single": {"ack_ms": single_ack[0], "final_s": single_final, "baseline_ack_ms": base_single[0]},
        "ours": ours, "baseline": base, "slack_violations": violations,
    }
    name = f"3 slash x{concurrent}"
    rows = [
        Row(name, "ack latency p50", ours["ack_p50_ms"], base["ack_p50_ms"], "minimal app", "ms"),
        Row(name, "ack latency p99", ours["ack_p99_ms"], base["ack_p99_ms"], "minimal app", "ms",
            target=f"< {ACK_TARGET_MS:g} ms", met=ours["ack_p99_ms"] < ACK_TARGET_MS),
        Row(name, "final message p50", ours["final_p50_s"], single_final, "one command alone", "s"),
        Row(name, "final message p99", ours["final_p99_s"], single_final, "one command alone", "s"),
        Row(name, "ack latency, one command alone", single_ack[0], base_single[0], "minimal app", "ms"),
    ]
    return detail, rows
