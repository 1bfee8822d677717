"""Restart a live-demo agent from another process: the program a `command` rotate backend runs.

    python -m bot.live.launcher restart --state /tmp/live-xyz --worker live-a:0

In production the same backend runs e.g. `ssh {host} sudo systemctl restart clearml-agent`; here the "host" is a
state directory written by `bot.live.agents.AgentFleet`. The old daemon is stopped if it still runs (killed if it
hangs), a new one is started detached (its own session, output to its agent.log, so the rotate command's captured
output ends when this program exits), and its pid is printed. Exit codes: 0 restarted, 1 the agent did not stay
up, 2 unknown worker or bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from bot.live.agents import AgentError, AgentFleet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot.live.launcher", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("restart", help="stop (if running) and start one agent again")
    p.add_argument("--state", required=True, help="the fleet's state directory")
    p.add_argument("--worker", required=True, help="the agent's worker id, e.g. live-a:0")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a clean stop before SIGKILL")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fleet = AgentFleet(args.state)
    try:
        fleet.agent_dir(args.worker)  # unknown worker -> exit 2 before touching anything
    except AgentError as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return 2
    try:
        old, _ = fleet.restart(args.worker, timeout=args.timeout)
        pid = fleet.wait_started(args.worker, seconds=1.0)
    except AgentError as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return 1
    before = f"stopped pid {old}" if old is not None else "it was not running"
    print(f"clearml-agent for {args.worker} restarted: pid {pid} ({before}); log {fleet.log_path(args.worker)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
