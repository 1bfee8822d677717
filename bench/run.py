"""Run the benchmarks, print the table, write the JSON.

    .venv/bin/python -m bench                       # all six (about 8 minutes on 2 cores)
    .venv/bin/python -m bench --quick               # smaller and fewer rounds (about 2 minutes)
    .venv/bin/python -m bench --only fleet,slash    # some of them
    .venv/bin/python -m bench --only signal         # the scored scenario corpus (bench/signal/*.yaml)
    .venv/bin/python -m bench --json out.json       # default: bench/results.json

Every figure is a ratio against a baseline measured side by side in the same run (docs/benchmarks.md says what
each baseline is). Exit code 0 when every target with a verdict is met, 1 when one is missed, 2 when a benchmark
could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import datasets, failures, fleet, idle, load, signal, slash
from bench.common import REPO, temp_dir
from bench.report import Row, render

BENCHMARKS: dict[str, Callable[..., tuple[dict[str, Any], list[Row]]]] = {
    "fleet": fleet.run,
    "failures": failures.run,
    "slash": slash.run,
    "datasets": datasets.run,
    "idle": idle.run,
    "signal": signal.run,
    "load": load.run,
}


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _merged(path: Path, meta: dict[str, Any], rows: list[tuple[str, Row]], results: dict[str, Any], *,
            partial: bool) -> dict[str, Any]:
    """The JSON to write. A run of some benchmarks (`--only`) replaces theirs and keeps the others' figures from
    the file (each benchmark says which run it came from in `meta.runs`); a run of all of them replaces the file."""
    run = {k: meta[k] for k in ("date", "commit", "quick")}
    document: dict[str, Any] = {"meta": meta, "table": [], "benchmarks": {}}
    if partial and path.exists():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
        if isinstance(previous, dict):
            runs = dict(previous.get("meta", {}).get("runs") or {})
            old_run = {k: previous.get("meta", {}).get(k) for k in ("date", "commit", "quick")}
            for name, detail in (previous.get("benchmarks") or {}).items():
                if name not in results:
                    document["benchmarks"][name] = detail
                    runs.setdefault(name, old_run)
            # rows written before rows named their benchmark are kept only with a benchmark that is kept
            kept = [r for r in previous.get("table") or [] if r.get("benchmark") not in results]
            document["table"] = [r for r in kept if r.get("benchmark") in document["benchmarks"]]
            meta = {**meta, "runs": runs}
    meta = {**meta, "runs": {**meta.get("runs", {}), **{name: run for name in results}}}
    document["meta"] = meta
    document["table"] += [{**r.to_json(), "benchmark": name} for name, r in rows]
    document["benchmarks"].update(results)
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer rounds")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results.json", help="where to write results")
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()] or list(BENCHMARKS)
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _commit(),
        "quick": args.quick,
        "load_average_start": os.getloadavg(),
    }
    results: dict[str, Any] = {}
    rows: list[tuple[str, Row]] = []
    failed: list[str] = []
    for name in chosen:
        print(f"[bench] {name}…", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            with temp_dir(name) as workdir:
                detail, got = BENCHMARKS[name](workdir, quick=args.quick)
        except Exception as exc:  # one benchmark failing must not lose the others' figures
            failed.append(name)
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            print(f"[bench] {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        detail["duration_s"] = round(time.monotonic() - started, 1)
        results[name] = detail
        rows += [(name, r) for r in got]
        print(f"[bench] {name} done in {detail['duration_s']:g} s", file=sys.stderr, flush=True)
    meta["load_average_end"] = os.getloadavg()

    print()
    print(render([r for _, r in rows]))
    if "fleet" in results and "fleets" in results["fleet"]:
        print("\nHealth playbook cost against fleet size (the bot's process, median of the rounds):")
        print(fleet.curve(results["fleet"]))
    document = _merged(args.json, meta, rows, results, partial=bool(args.only.strip()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=1, default=str))
    print(f"\nJSON: {args.json}")
    if failed:
        print(f"could not run: {', '.join(failed)} (see the JSON for the traceback)", file=sys.stderr)
        return 2
    return 1 if any(r.met is False for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
