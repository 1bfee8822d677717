"""Baseline B of benchmark 1: a bare httpx client replays exactly the calls the bot made (from its call log),
concurrently as the bot made them, and does nothing else (no parsing, no checks).

    python -m bench.workers.replay --calls calls.json

"As the bot made them": a call starts as soon as every call that had ended before it started in the bot's run
has ended in the replay; calls that overlapped in the bot's run overlap here. So the replay keeps the bot's
dependency order (a page after the page before it, names after the lists that name them) with zero time between
calls: its wall time is what the bot's calls cost by themselves, and the bot's wall time minus it is the bot's
own overhead. Bodies are sent byte for byte as logged; the login is the same `auth.login` with Basic auth.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import cpu_s, emit, peak_rss_mb


async def replay(calls: list[dict[str, Any]]) -> dict[str, Any]:
    api = os.environ["CLEARML_API_HOST"].rstrip("/")
    key, secret = os.environ["CLEARML_API_ACCESS_KEY"], os.environ["CLEARML_API_SECRET_KEY"]
    basic = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
    n = len(calls)
    # predecessors: every call that had ended before this one started (in the bot's timeline)
    preds = [[i for i in range(n) if calls[i]["end"] <= calls[j]["start"]] for j in range(n)]
    done = [asyncio.Event() for _ in range(n)]
    token: dict[str, str] = {}
    stats = {"calls": 0, "bytes": 0, "errors": 0}
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    # The timer includes creating the client (its TLS context), as the bot's wall time includes creating its own.
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def one(j: int) -> None:
            for i in preds[j]:
                await done[i].wait()
            call = calls[j]
            endpoint = call["endpoint"]
            headers = {"Content-Type": "application/json"}
            if endpoint == "auth.login":
                headers["Authorization"] = basic
            elif endpoint not in ("debug.ping", "server.info"):
                headers["Authorization"] = f"Bearer {token['value']}"
            body = json.dumps(call["payload"]).encode()
            response = await http.post(f"{api}/{endpoint}", content=body, headers=headers)
            stats["calls"] += 1
            stats["bytes"] += len(response.content)
            if response.status_code != 200:
                stats["errors"] += 1
            if endpoint == "auth.login":
                token["value"] = response.json()["data"]["token"]
            done[j].set()

        await asyncio.gather(*(one(j) for j in range(n)))
        wall = time.perf_counter() - started
    return {"wall_s": wall, "api_calls": stats["calls"], "bytes_received": stats["bytes"], "errors": stats["errors"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=Path, required=True)
    args = parser.parse_args()
    calls = json.loads(args.calls.read_text())
    cpu0 = cpu_s()
    result = asyncio.run(replay(calls))
    result.update(cpu_s=cpu_s() - cpu0, peak_rss_mb=peak_rss_mb())
    emit(result)


if __name__ == "__main__":
    main()
