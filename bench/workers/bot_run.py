"""The bot's side of benchmarks 1, 2 and 4: run one playbook against the simulator, exactly as `clearml-chatops
run` does (one client, one snapshot, every check concurrently), with the client's call log switched on.

    python -m bench.workers.bot_run --playbook playbooks/health.yaml --calls-out calls.json

Prints one RESULT line: wall time of the run, API calls, bytes received, calls per endpoint, the detections per
check, CPU seconds and the peak RSS of this process. The call log (endpoint, payload, start, end) goes to
--calls-out for the replay baseline; --findings-out writes the findings as `run --format json` has them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.common import cpu_s, emit, peak_rss_mb


def detections(findings: list[Any]) -> dict[str, int]:
    """Problem subjects per check; a check that hit max_findings reports its true total in a summary finding."""
    out: dict[str, int] = {}
    summaries: dict[str, int] = {}
    for f in findings:
        if f.severity not in ("warning", "critical"):
            continue
        if f.fingerprint.endswith(f"|summary|{f.subject.id}") and "total" in f.evidence:
            summaries[f.check] = int(f.evidence["total"])
            continue
        out[f.check] = out.get(f.check, 0) + 1
    out.update(summaries)
    return out


async def run(playbook: Path, calls_out: Path | None, findings_out: Path | None = None) -> dict[str, Any]:
    from bot.clearml.client import ClearMLClient
    from bot.config import load_settings, resolve_server
    from bot.engine.playbook import load_playbook
    from bot.engine.registry import load_builtin_checks
    from bot.engine.runner import run_playbooks
    from bot.engine.snapshot import Snapshot
    from bot.heap import settle_startup_heap

    load_builtin_checks()
    settings = load_settings(None)
    server = resolve_server(settings)
    pb = load_playbook(playbook)
    settle_startup_heap()  # as `clearml-chatops run` does before its run (bot/cli.py)
    cpu0 = cpu_s()
    started = time.perf_counter()
    client = ClearMLClient(server, record_calls=True)
    try:
        snap = Snapshot(client, server, settings)
        result = await run_playbooks([pb], settings, server, snapshot=snap, trigger="bench")
    finally:
        await client.aclose()
    wall = time.perf_counter() - started
    log = client.stats.log or []
    if calls_out is not None:
        calls_out.write_text(json.dumps([{"endpoint": e, "payload": p, "start": s, "end": t} for e, p, s, t in log]))
    if findings_out is not None:
        findings_out.write_text(json.dumps([f.model_dump(mode="json") for f in result.findings]))
    errors = [f"{c.id}: {c.error}" for c in result.checks if c.status in ("error", "timeout")]
    return {
        "wall_s": wall,
        "run_s": result.duration_s,
        "api_calls": result.api_calls,
        "bytes_received": result.bytes_received,
        "calls_by_endpoint": result.calls_by_endpoint,
        "task_pages": result.calls_by_endpoint.get("tasks.get_all", 0),
        "detections": detections(result.findings),
        "check_errors": errors,
        "cpu_s": cpu_s() - cpu0,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--playbook", type=Path, required=True)
    parser.add_argument("--calls-out", type=Path)
    parser.add_argument("--findings-out", type=Path)
    args = parser.parse_args()
    emit(asyncio.run(run(args.playbook, args.calls_out, args.findings_out)))


if __name__ == "__main__":
    main()
