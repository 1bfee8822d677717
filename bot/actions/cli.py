"""Terminal front end of the actions: `clearml-chatops act …` and `clearml-chatops audit`.

    clearml-chatops act clone|requeue|abort|rotate|reproduce|prioritize SUBJECT
        [--queue Q] [--server NAME] [--dry-run] [--yes] [--format text|json]
        [--name NAME (clone)] [--requeue/--no-requeue] [--task ID] (rotate) [--wait] [--param K=V] (reproduce)

Shows the plan (the exact calls), asks for confirmation on the terminal unless --yes, then executes through
the same `execute_action` the Slack buttons use; audited as the local OS user. Without a terminal to ask on
and without --yes it refuses (exit 2) rather than guessing.

Exit codes: 0 done (or dry run), 1 not done (refused, failed, denied, cancelled), 2 usage or configuration
error. The lead's bot/cli.py wires `add_act_arguments`/`act_main` and `add_audit_arguments`/`audit_main`;
`python -m bot.actions.cli act|audit …` runs them standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from bot.actions import audit as audit_mod
from bot.actions.base import ActionError, ActionOutcome, ActionRequest, Actor, Refusal, get_spec
from bot.actions.executor import ActionDeps, execute_action, plan_action
from bot.config import ConfigError, Settings, load_settings
from bot.durations import format_duration
from bot.engine.findings import ACTION_IDS

if TYPE_CHECKING:
    from bot.store import Store

EXIT_OK, EXIT_NOT_DONE, EXIT_USAGE = 0, 1, 2


def _err(message: str) -> None:
    print(f"clearml-chatops: {message}", file=sys.stderr)


def _has(parser: argparse.ArgumentParser, dest: str) -> bool:
    return any(a.dest == dest for a in parser._actions)


def add_act_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTION_IDS, help="what to do")
    parser.add_argument("subject", help="a task id (or its web UI link); for rotate, a worker id")
    parser.add_argument("--queue", help="queue name or id (clone/reproduce: where to run; requeue: instead of "
                        "the original queue; prioritize: which queue when the task is in several)")
    parser.add_argument("--server", help="server name from the config file (default: the default one)")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="show exactly which calls would be made, make none")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--name", help="clone: name of the new task")
    parser.add_argument("--requeue", action=argparse.BooleanOptionalAction, default=None,
                        help="rotate: requeue the task the agent was running (default: actions.rotate.requeue_task)")
    parser.add_argument("--task", help="rotate: the task to requeue when the server no longer lists the worker")
    parser.add_argument("--wait", action="store_true", help="reproduce: watch the re-run and print the comparison")
    parser.add_argument("--poll", default="30s", help="reproduce --wait: how often to look (default 30s)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="any other action parameter, e.g. metric_rel_tol=0.02 (JSON values accepted)")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    if not _has(parser, "config"):
        parser.add_argument("--config", help="the bot's YAML config file (default: $CLEARML_CHATOPS_CONFIG)")


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("n", nargs="?", type=int, default=20, help="how many rows (newest first, default 20)")
    # besides the actions: what `/clearml silence` / `unsilence` and the incident buttons write
    parser.add_argument("--action", choices=[*ACTION_IDS, "silence", "unsilence", "incident.ack",
                                             "incident.snooze", "incident.resolve"])
    parser.add_argument("--subject", help="a task or worker id, or a silence's pattern")
    parser.add_argument("--outcome", help="ok, denied, failed, dry_run, expired, tampered, duplicate, refused, …")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    if not _has(parser, "config"):
        parser.add_argument("--config", help="the bot's YAML config file (default: $CLEARML_CHATOPS_CONFIG)")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    fields = get_spec(args.action).params_model.model_fields
    params: dict[str, Any] = {}
    for name in ("queue", "name", "requeue", "task"):
        value = getattr(args, name, None)
        if value is None:
            continue
        if name not in fields:
            raise ActionError(f"--{name} does not apply to {args.action}")
        params[name] = value
    for item in args.param or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ActionError(f"--param {item!r}: use KEY=VALUE")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def _print_outcome(outcome: ActionOutcome, fmt: str) -> None:
    if fmt == "json":
        json.dump(outcome.model_dump(mode="json"), sys.stdout, indent=2)
        print()
        return
    print(outcome.text)
    for line in outcome.detail:
        print(f"  {line}")


def _confirm(prompt: str) -> bool | None:
    """True/False from the terminal; None when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        return None
    print(prompt, end="", flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _open(args: argparse.Namespace) -> tuple[Settings, Store] | None:
    """The config and the store, or None after saying on stderr which setting is wrong (exit 2)."""
    from bot.store import Store, StoreError

    try:
        settings = load_settings(args.config)
        return settings, Store(settings.store_path)
    except (ConfigError, StoreError) as exc:
        _err(str(exc))
        return None


def act_main(args: argparse.Namespace) -> int:
    opened = _open(args)
    if opened is None:
        return EXIT_USAGE
    settings, store = opened
    try:
        return _act(args, settings, store)
    finally:
        store.close()


def _act(args: argparse.Namespace, settings: Any, store: Any) -> int:
    actor = Actor.terminal()
    deps = ActionDeps()
    try:
        params = _params(args)
        request = ActionRequest(action=args.action, subject=args.subject, server=args.server, params=params,
                                dry_run=args.dry_run or None)
    except ActionError as exc:
        _err(str(exc))
        return EXIT_USAGE
    dry = bool(args.dry_run or settings.actions.dry_run)
    try:
        plan = asyncio.run(plan_action(request, settings=settings, actor=actor, deps=deps))
    except (ActionError, ConfigError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except Refusal:
        plan = None  # execute_action re-plans, reports and audits the refusal
    except Exception:  # ClearML down, ...: same, so the attempt is audited with its error
        plan = None
    if plan is not None:
        if args.format == "text":
            print(plan.render())
        if not dry and not args.yes:
            answer = _confirm("Proceed? [y/N] ")
            if answer is None:
                _err("refusing to act without confirmation: stdin is not a terminal. Re-run with --yes to "
                     "confirm non-interactively (or --dry-run to only see the plan)")
                return EXIT_USAGE
            if not answer:
                audit_mod.record(store, actor=actor, action=plan.action, server=plan.server, subject=plan.subject,
                                 outcome="cancelled", params=params, detail=plan.lines())
                print("Cancelled: nothing done.")
                return EXIT_NOT_DONE
        request.confirmed_plan = plan.digest
    outcome = asyncio.run(execute_action(request, settings=settings, store=store, actor=actor, deps=deps))
    _print_outcome(outcome, args.format)
    if outcome.status not in ("ok", "dry_run"):
        if outcome.alternative:
            print(f"  try: clearml-chatops act {outcome.alternative} {outcome.subject}", file=sys.stderr)
        if outcome.retry:
            print("  this looks transient: run the same command again to retry", file=sys.stderr)
        return EXIT_NOT_DONE
    if args.action == "reproduce" and args.wait and outcome.watch_id is not None:
        return _wait(args, settings, store, outcome.watch_id, deps)
    return EXIT_OK


def _wait(args: argparse.Namespace, settings: Any, store: Any, watch_id: int, deps: ActionDeps) -> int:
    from bot.actions.reproduce import watch_until_done
    from bot.durations import parse_duration

    try:
        poll = parse_duration(args.poll)
    except ValueError as exc:
        _err(f"--poll: {exc}")
        return EXIT_USAGE
    print(f"Watching the re-run (every {format_duration(poll)}; Ctrl-C stops watching, not the task)…",
          file=sys.stderr)
    result = asyncio.run(watch_until_done(store, settings, watch_id, deps=deps, poll_s=poll))
    print(result.text)
    return EXIT_OK if result.status == "done" else EXIT_NOT_DONE


def audit_main(args: argparse.Namespace) -> int:
    opened = _open(args)
    if opened is None:
        return EXIT_USAGE
    _settings, store = opened
    try:
        rows = audit_mod.recent(store, args.n, action=args.action, subject=args.subject, outcome=args.outcome)
    finally:
        store.close()
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=2, default=str)
        print()
    else:
        print(audit_mod.format_rows(rows))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clearml-chatops")
    sub = parser.add_subparsers(dest="command", required=True)
    add_act_arguments(sub.add_parser("act", help="run a remediation action"))
    add_audit_arguments(sub.add_parser("audit", help="show the audit trail of actions"))
    args = parser.parse_args(argv)
    try:
        return act_main(args) if args.command == "act" else audit_main(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
