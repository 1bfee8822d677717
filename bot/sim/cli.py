"""`clearml-chatops sim`: run the ClearML API simulator in the foreground until Ctrl-C / SIGTERM.

    clearml-chatops sim --scenario incident-zoo
    clearml-chatops sim --scenario ./my-scenario.yaml --port 0 --latency-ms 50
    clearml-chatops sim --fleet workers=2000,queues=300,tasks=200000

It prints the URLs and the CLEARML_* lines to export so that the clearml SDK, clearml-agent or this bot
talk to it. The keys it prints are the simulator's own demo credentials, not secrets.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any, TextIO

from bot.sim.fleet import generate_fleet, parse_fleet_spec
from bot.sim.scenario import ScenarioError, list_scenarios
from bot.sim.server import SimServer

EXIT_OK = 0
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `sim` subcommand's options."""
    shipped = ", ".join(list_scenarios()) or "none"
    parser.add_argument("--scenario", default="basic", metavar="NAME|FILE",
                        help=f"a shipped scenario ({shipped}) or a scenario YAML file (default: basic)")
    parser.add_argument("--fleet", metavar="workers=N,queues=N,tasks=N",
                        help="serve a generated fleet instead of a scenario, e.g. workers=2000,queues=300,"
                             "tasks=200000 (optional seed=N)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8008,
                        help="API server port (default: 8008, like clearml-server; 0 picks a free port)")
    parser.add_argument("--files-port", type=int, default=0,
                        help="file server port (default: a free port, printed at start; clearml-server uses 8081)")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay added to every API call")
    parser.add_argument("--keys", action="append", metavar="KEY:SECRET",
                        help="accept these credentials instead of the scenario's demo keys (repeatable)")


def _parse_keys(values: list[str] | None) -> list[tuple[str, str]] | None:
    if not values:
        return None
    keys = []
    for value in values:
        key, sep, secret = value.partition(":")
        if not sep or not key or not secret:
            raise ValueError(f"--keys takes KEY:SECRET, got {value!r}")
        keys.append((key, secret))
    return keys


def _print_banner(sim: SimServer, label: str, out: TextIO) -> None:
    with sim.state.lock:
        counts = (f"{len(sim.state.tasks)} tasks, {len(sim.state.queues)} queues, "
                  f"{len(sim.state.workers)} workers, {len(sim.state.projects)} projects")
    lines = [
        f"ClearML API simulator serving {label} ({counts})",
        f"  API server:   {sim.api_url}",
        f"  File server:  {sim.files_url}" + ("" if sim.fileserver_enabled else "  (disabled by the scenario)"),
        f"  Web UI links: {sim.web_url}",
        "",
        "Point the clearml SDK, clearml-agent or clearml-chatops at it (demo credentials):",
    ]
    lines += [f"  export {name}={value}" for name, value in sim.env().items()]
    lines += ["", "Press Ctrl-C to stop."]
    print("\n".join(lines), file=out, flush=True)


def main(args: argparse.Namespace, *, stop: threading.Event | None = None, out: TextIO | None = None) -> int:
    """Run the simulator until Ctrl-C/SIGTERM (or until `stop` is set, for tests). Returns the exit code."""
    out = out or sys.stdout
    try:
        keys = _parse_keys(getattr(args, "keys", None))
        scenario: Any
        if getattr(args, "fleet", None):
            spec = parse_fleet_spec(args.fleet)
            label = "fleet " + ", ".join(f"{k}={v}" for k, v in spec.items())
            started = time.monotonic()
            print(f"Generating {label}…", file=sys.stderr, flush=True)
            scenario = generate_fleet(**spec)
        else:
            scenario = args.scenario
            label = f"scenario {args.scenario}"
            started = time.monotonic()
        sim = SimServer(scenario, host=args.host, port=args.port, files_port=args.files_port,
                        latency_ms=args.latency_ms, keys=keys)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ScenarioError as exc:
        print(f"error: broken scenario: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        ports = f"{args.port}, {args.files_port}" if args.files_port else str(args.port)
        print(f"error: cannot listen on {args.host} (port{'s' if args.files_port else ''} {ports}): "
              f"{exc.strerror or exc}; pass --port 0 for a free port", file=sys.stderr)
        return EXIT_USAGE
    stop = stop or threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        sim.start()
        if getattr(args, "fleet", None):
            print(f"Loaded in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        _print_banner(sim, label, out)
        while not stop.wait(0.5):
            pass
        print("Stopping the simulator.", file=sys.stderr, flush=True)
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clearml-chatops sim", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


if __name__ == "__main__":  # python -m bot.sim.cli
    sys.exit(main(build_parser().parse_args()))
