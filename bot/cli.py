"""`clearml-chatops`: the terminal front end. Thin: parse, call the engine, render.

Exit codes: 0 nothing warning or worse, 1 something is, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot import __version__
from bot.config import ConfigError, IntervalSchedule, ServerSettings, Settings, load_settings, resolve_server
from bot.durations import parse_duration
from bot.engine.playbook import Playbook, PlaybookError, find_playbooks, load_playbook, resolve_playbook
from bot.engine.registry import load_builtin_checks
from bot.errors import UsageError
from bot.heap import settle_startup_heap

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _err(message: str) -> None:
    print(f"clearml-chatops: {message}", file=sys.stderr)


def _playbooks_dir(args: argparse.Namespace, settings: Settings | None) -> Path:
    """`--playbooks DIR`, the config's `playbooks`, ./playbooks, else the playbooks shipped with the package."""
    from bot.engine.playbook_sources import playbooks_location

    return playbooks_location(getattr(args, "playbooks_dir", None), settings.playbooks if settings else None).path


def _load_playbooks(refs: list[str], directory: Path) -> list[Playbook]:
    return [load_playbook(resolve_playbook(ref, directory)) for ref in refs]


def _open_store(settings: Settings) -> Any:
    from bot.store import Store

    return Store(settings.store_path)


# ------------------------------------------------------------------------------------------------ run


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    playbooks = _load_playbooks(args.playbooks, _playbooks_dir(args, settings))
    server_name = args.server
    if server_name is None:
        named = {pb.server for pb in playbooks if pb.server}
        if len(named) > 1:
            raise UsageError(
                f"the playbooks name different servers ({', '.join(sorted(named))}): "
                "run them separately or pass --server"
            )
        server_name = named.pop() if named else None
    server = resolve_server(settings, server_name)
    return execute_run(playbooks, settings, server, output=args.format, verbose=args.verbose, store=not args.no_store)


def execute_run(
    playbooks: list[Playbook],
    settings: Settings,
    server: ServerSettings,
    *,
    output: str = "text",
    verbose: bool = False,
    store: bool = True,
) -> int:
    from bot.engine.runner import run_playbooks
    from bot.report import render_text

    db = None
    if store:
        try:
            db = _open_store(settings)
        except Exception as exc:  # the report matters more than the history: say so, do not fail the run
            _err(f"warning: run not saved to the store: {exc}")
    history = (lambda window_s: db.pool_history(server.api_url, window_s)) if db is not None else None
    versions = (lambda: db.agent_versions(server.api_url)) if db is not None else None
    settle_startup_heap()  # the run's collections skip what startup loaded (bot/heap.py)
    result = asyncio.run(run_playbooks(playbooks, settings, server, trigger="cli", fleet_history=history,
                                       agent_versions=versions))
    if db is not None:
        try:
            db.record_run(result)
        except Exception as exc:
            _err(f"warning: run not saved to the store: {exc}")
        finally:
            db.close()
    if output == "json":
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_text(result, verbose=verbose)
    unreachable = [f for f in result.findings if f.check in ("server.reachable", "server.credentials")
                   and f.severity == "critical"]
    if unreachable:
        _err(f"{unreachable[0].title}: {unreachable[0].remediation}")
    return result.exit_code


# ------------------------------------------------------------------------------------------- validate


def cmd_validate(args: argparse.Namespace) -> int:
    bad = 0
    for ref in args.playbooks:
        try:
            pb = load_playbook(resolve_playbook(ref, _playbooks_dir(args, None)))
        except PlaybookError as exc:
            print(f"FAIL {exc}")
            bad += 1
            continue
        schedule = f", schedule {pb.schedule}" if pb.schedule else ""
        print(f"ok   {pb.path}: playbook `{pb.name}` with {len(pb.checks)} checks{schedule}")
    return EXIT_USAGE if bad else EXIT_OK


# --------------------------------------------------------------------------------------------- checks


def _describe_default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    from bot.durations import format_duration

    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    is_duration = any(
        getattr(getattr(m, "func", None), "__name__", "") in ("_seconds", "_optional_seconds") for m in field.metadata
    )
    if is_duration and isinstance(value, int | float):
        return format_duration(value)
    return json.dumps(value, default=str)


def _params_in_order(spec: Any) -> list[tuple[str, Any]]:
    """A check's own parameters first; the shared `max_findings` last."""
    fields = list(spec.params_model.model_fields.items())
    return [f for f in fields if f[0] != "max_findings"] + [f for f in fields if f[0] == "max_findings"]


def cmd_checks(args: argparse.Namespace) -> int:
    registry = load_builtin_checks()
    if args.format == "json":
        out = []
        for spec in sorted(registry.values(), key=lambda s: s.id):
            out.append(
                {
                    "id": spec.id,
                    "summary": spec.summary,
                    "description": spec.description,
                    "severities": spec.severities,
                    "params": {
                        name: {"default": _describe_default(f), "description": f.description or ""}
                        for name, f in _params_in_order(spec)
                    },
                }
            )
        json.dump(out, sys.stdout, indent=2)
        print()
        return EXIT_OK
    area = None
    for spec in sorted(registry.values(), key=lambda s: s.id):
        if spec.area != area:
            area = spec.area
            print(f"\n## {area}")
        print(f"\n{spec.id}\n  {spec.summary}")
        if spec.description:
            for line in spec.description.splitlines():
                print(f"  {line}")
        if spec.severities:
            print("  severity:")
            for level in ("info", "warning", "critical"):
                if level in spec.severities:
                    print(f"    {level}: {spec.severities[level]}")
        params = _params_in_order(spec)
        if params:
            print("  parameters:")
            for name, field in params:
                desc = f" — {field.description}" if field.description else ""
                print(f"    {name} (default {_describe_default(field)}){desc}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------ playbooks


def cmd_playbooks(args: argparse.Namespace) -> int:
    """Every playbook in use, and where it came from (your directory or the ones shipped with the package)."""
    from bot.engine.playbook_sources import playbooks_location, shipped_playbooks_dir

    settings = load_settings(args.config)
    location = playbooks_location(args.playbooks_dir, settings.playbooks)
    listed: list[dict[str, Any]] = []
    for path in find_playbooks(location.path) if location.path.is_dir() else []:
        entry: dict[str, Any] = {"name": path.stem, "path": str(path), "origin": location.origin,
                                 "source": location.describe()}
        try:
            pb = load_playbook(path)
        except PlaybookError as exc:
            entry["error"] = str(exc)
        else:
            schedule = pb.cron or (f"every {pb.schedule.every}" if isinstance(pb.schedule, IntervalSchedule) else "")
            entry.update(name=pb.name, description=pb.description, checks=len(pb.checks), schedule=schedule)
        listed.append(entry)
    shipped = shipped_playbooks_dir()
    unused = [] if location.shipped or shipped is None else [p.stem for p in find_playbooks(shipped)]
    if args.format == "json":
        json.dump({"directory": str(location.path), "origin": location.origin, "source": location.describe(),
                   "playbooks": listed, "shipped_not_used": unused}, sys.stdout, indent=2)
        print()
        return EXIT_OK
    if not listed:
        print(f"No playbooks in {location.path} ({location.describe()}): add YAML files there, or remove the "
              "directory to use the shipped ones.")
    else:
        print(f"{len(listed)} playbooks from {location.path} ({location.describe()}):")
    width = max((len(e["name"]) for e in listed), default=0)
    for e in listed:
        if "error" in e:
            print(f"  {e['name']:<{width}}  does not load: {e['error']}")
            continue
        extra = f" · {e['schedule']}" if e["schedule"] else ""
        print(f"  {e['name']:<{width}}  {e['path']}  ({e['checks']} checks{extra})")
        if e["description"]:
            print(f"  {'':<{width}}  {e['description']}")
    if unused:
        print(f"\nThe {len(unused)} playbooks shipped with clearml-chatops ({', '.join(unused)}) are not used: "
              f"{location.describe()} replaces them. Copy the ones you want from {shipped}.")
    elif location.shipped:
        print("\nTo change them: copy them into ./playbooks (or a directory given with --playbooks DIR) and edit "
              "the copies; that directory then replaces the shipped ones.")
    return EXIT_OK


# -------------------------------------------------------------------------------------------- history


def cmd_history(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    since = None
    if args.since:
        try:
            since = datetime.now(UTC) - timedelta(seconds=parse_duration(args.since))
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from None
    if args.metric:
        return _metric_history(settings, args.metric, since or datetime.now(UTC) - timedelta(days=1), args.format)
    store = _open_store(settings)
    rows = store.history(check=args.check, since=since, limit=args.limit)
    store.close()
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=2)
        print()
        return EXIT_OK
    if not rows:
        scope = (f" for {args.check}" if args.check else "") + (f" in the last {args.since}" if args.since else "")
        print(f"No findings recorded{scope}.")
        return EXIT_OK
    for row in rows:
        subject = row["subject_name"] or row["subject_id"]
        print(
            f"{row['at'][:19]}  {row['severity']:<8} {row['check_id']:<26} "
            f"{row['subject_kind']} {subject}: {row['title']}"
        )
    return EXIT_OK


def _metric_history(settings: Settings, metric: str, since: datetime, output: str) -> int:
    """`history --metric NAME`: one per-run gauge (agents.alive, queues.pending, agents.alive[gpu-train], …) as a
    sparkline per server, with first / min / max / last."""
    from bot.charts.series import metric_history, sparkline
    from bot.durations import format_duration

    store = _open_store(settings)
    try:
        points = metric_history(store, metric, since)
    finally:
        store.close()
    if output == "json":
        json.dump([{"at": at.isoformat(), "server": server, "value": value} for at, server, value in points],
                  sys.stdout, indent=2)
        print()
        return EXIT_OK
    if not points:
        print(f"No values of {metric} recorded since {since:%Y-%m-%d %H:%M} UTC (per-run metrics are recorded by "
              "`serve`'s scheduled runs; names: agents.alive, agents.registered, queues.pending, "
              "queues.wait_median_s, run.problems, agents.alive[<queue>], queues.length[<queue>]).")
        return EXIT_OK
    seconds = metric.split("[", 1)[0].endswith("_s")  # queues.wait_median_s, queues.wait_s[q], run.duration_s
    fmt: Callable[[float], str] = format_duration if seconds else (lambda v: f"{v:g}")
    by_server: dict[str, list[float]] = {}
    for _, server, value in points:
        by_server.setdefault(server, []).append(value)
    width = 60  # the newest values when there are more runs than columns
    for server, values in by_server.items():
        shown = values[-width:]
        print(f"{server}  {metric}  {sparkline(shown)}  first {fmt(values[0])} · min {fmt(min(values))} · "
              f"max {fmt(max(values))} · last {fmt(values[-1])}  ({len(values)} runs since "
              f"{since:%Y-%m-%d %H:%M} UTC{', last ' + str(width) + ' drawn' if len(values) > width else ''})")
    return EXIT_OK


# --------------------------------------------------------------------------------------------- digest


def cmd_digest(args: argparse.Namespace) -> int:
    """The channel digest now, from the store (`serve` and `run` record what it reads): since the last scheduled
    digest, or `--since`. Not recorded: the schedule's next digest is unaffected. `--png DIR` also writes the
    digest's charts as PNG files (the ones `serve` posts in the digest's thread); `--post` sends it to Slack."""
    from bot.incidents.digest_on_demand import digest_channel, digest_json, digest_now
    from bot.incidents.pipeline import TextRenderer

    settings = load_settings(args.config)
    now = datetime.now(UTC)
    since = None
    if args.since:
        try:
            since = now - timedelta(seconds=parse_duration(args.since))
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from None
    client = None
    if args.post is not None:
        from bot.slack.client import make_web_client

        token = os.environ.get("SLACK_BOT_TOKEN")
        if not token:
            raise UsageError("--post needs SLACK_BOT_TOKEN (the Bot User OAuth Token, xoxb-…)")
        client = make_web_client(token, settings)
    store = _open_store(settings)
    try:
        digest = digest_now(store, settings, now, since=since,
                            permalink=_permalinks_from(client) if client is not None else None)
        if client is not None:
            from bot.slack.commands.lookups import configured_servers

            servers = configured_servers(settings)  # their keys never reach Slack either
            secrets = [str(client.token or ""), *(s for server in servers for s in server.secrets())]
            return _post_digest(digest, args.post or digest_channel(settings), client, secrets)
        if args.format == "json":
            json.dump(digest_json(digest), sys.stdout, indent=2)
            print()
        else:
            print(TextRenderer().digest(digest).text)
        if args.png:
            return _write_charts(store, digest.period_start, digest.period_end, Path(args.png))
    finally:
        store.close()
    return EXIT_OK


def _permalinks_from(client: Any) -> Callable[[str, str], str | None]:
    """Incident thread links from Slack (chat.getPermalink), for a digest posted from the terminal."""
    from slack_sdk.errors import SlackClientError

    def permalink(channel_id: str, ts: str) -> str | None:
        try:
            return str(client.chat_getPermalink(channel=channel_id, message_ts=ts)["permalink"])
        except (SlackClientError, OSError, KeyError):
            return None

    return permalink


def _post_digest(digest: Any, channel: str | None, client: Any, secrets: list[str]) -> int:
    """Post the digest through the Slack sink, the one way a direct write leaves (redacted with `secrets`)."""
    from bot.slack.delivery.sink import SlackSink, SlackWriteError
    from bot.slack.incidents.messages import SlackIncidentRenderer

    if not channel:
        raise UsageError("--post needs a channel: --post '#channel', or set slack.digest.channel or "
                         "slack.default_channel in the config file")
    rendered = SlackIncidentRenderer(secrets=lambda: secrets).digest(digest)
    try:
        posted = SlackSink(client, secrets=lambda: secrets).post(channel, rendered)
    except SlackWriteError as exc:
        if exc.error.startswith("connection_error"):
            _err(f"cannot reach Slack to post the digest: {exc.error.split(': ', 1)[-1]}; try again")
        else:
            _err(f"Slack refused the digest for {channel}: {exc.error} (invite the bot to the channel, or check the "
                 "token)")
        return EXIT_PROBLEMS
    print(f"Digest posted to {channel} (ts {posted.ts}).")
    return EXIT_OK


def _write_charts(store: Any, start: datetime, end: datetime, directory: Path) -> int:
    from bot.charts import render
    from bot.charts.series import digest_charts

    if not render.available():
        raise UsageError("--png needs matplotlib: pip install 'clearml-chatops[charts]'")
    specs = digest_charts(store, start, end)
    if not specs:
        print(f"\nNo chart: no run metrics between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC.")
        return EXIT_OK
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--png {directory}: cannot create the directory ({exc.strerror})") from None
    print()
    for chart in render.render(specs):
        path = directory / chart.filename
        path.write_bytes(chart.png)
        print(f"wrote {path} ({len(chart.png) // 1024} KB): {chart.alt_text}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    if args.live:  # real clearml-agents, a real failure and the bot's fix (bot/live/demo.py)
        from bot.live.demo import main as live_demo

        return live_demo(args)
    if args.quick or args.state_dir:
        raise UsageError("--quick and --state-dir only go with --live")
    from bot.sim.server import SimServer

    settings = load_settings(args.config) if args.config else Settings()
    directory = _playbooks_dir(args, settings)
    paths = find_playbooks(directory)
    if not paths:
        raise UsageError(f"no playbooks found in {directory}: add some there or pass --playbooks DIR")
    playbooks = [load_playbook(p) for p in paths]
    with SimServer(scenario=args.scenario) as sim:
        key, secret = sim.keys[0]
        from pydantic import SecretStr

        server = ServerSettings(
            name=f"simulator ({args.scenario})",
            api_url=sim.api_url,
            web_url=sim.web_url,
            files_url=sim.files_url,
            access_key=SecretStr(key),
            secret_key=SecretStr(secret),
        )
        # The simulator's own file server is the demo's storage target.
        demo_settings = settings.model_copy(update={"storage": [*settings.storage, sim.files_url]})
        print(f"Simulator with scenario `{args.scenario}` at {sim.api_url}; running {len(playbooks)} playbooks…\n",
              file=sys.stderr)
        code = execute_run(playbooks, demo_settings, server, output=args.format, verbose=args.verbose,
                           store=False)
    return code


# ---------------------------------------------------------------------------------------------- main


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="the bot's YAML config file (default: $CLEARML_CHATOPS_CONFIG)")


def build_parser(wanted: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; `wanted` (the subcommand being run) limits which heavy modules get imported."""
    parser = argparse.ArgumentParser(
        prog="clearml-chatops",
        description="Diagnose a ClearML server with playbooks of checks, from the terminal or Slack.",
    )
    parser.add_argument("--version", action="version", version=f"clearml-chatops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="run playbooks against a ClearML server and print the findings")
    p.add_argument("playbooks", nargs="+", metavar="PLAYBOOK", help="a playbook file, or a name in --playbooks")
    p.add_argument("--server", help="server name from the config file (default: the playbook's or the only one)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--playbooks-dir", dest="playbooks_dir", help="where bare playbook names are looked up")
    p.add_argument("--verbose", "-v", action="store_true", help="list every finding, passed checks included")
    p.add_argument("--no-store", action="store_true", help="do not record the run in the store")
    _add_common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check playbook files without running them")
    p.add_argument("playbooks", nargs="+", metavar="PLAYBOOK")
    p.add_argument("--playbooks-dir", dest="playbooks_dir", help="where bare playbook names are looked up")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("checks", help="list every check with its parameters, defaults and what it detects")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_checks)

    p = sub.add_parser("playbooks", help="list the playbooks in use and where each one came from")
    p.add_argument("--playbooks", dest="playbooks_dir", help="playbooks directory (default: ./playbooks, else the "
                   "shipped ones)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    _add_common(p)
    p.set_defaults(func=cmd_playbooks)

    p = sub.add_parser("history", help="findings recorded by earlier runs")
    p.add_argument("--check", help="a check id (glob allowed, e.g. 'agents.*')")
    p.add_argument("--since", help="how far back, e.g. 24h, 7d")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--metric", help="instead: a per-run metric as a sparkline, e.g. agents.alive, queues.pending, "
                                    "agents.alive[gpu-train] (default --since 24h)")
    _add_common(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("digest", help="the channel digest now: open, new and resolved incidents, top offenders, "
                       "trends (not recorded: the scheduled digest is unaffected)")
    p.add_argument("--since", help="cover this long, e.g. 24h, 7d (default: since the last scheduled digest, or "
                   "slack.digest.period)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--png", metavar="DIR", help="also write the digest's charts as PNG files into DIR")
    p.add_argument("--post", nargs="?", const="", metavar="CHANNEL",
                   help="post it to Slack (SLACK_BOT_TOKEN), to CHANNEL or the digest's channel from the config")
    _add_common(p)
    p.set_defaults(func=cmd_digest)

    p = sub.add_parser("demo", help="start the simulator with a broken fleet and run every shipped playbook")
    p.add_argument("--scenario", default="incident-zoo", help="simulator scenario (default: incident-zoo)")
    p.add_argument("--playbooks", dest="playbooks_dir",
                   help="playbooks directory (default: ./playbooks, else the ones shipped with clearml-chatops)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--live", action="store_true",
                   help="instead: real clearml-agents run tasks, one is killed, the bot catches it, restarts it and "
                        "requeues its task (needs the [live] extra; about a minute)")
    p.add_argument("--quick", action="store_true", help="with --live: shorter tasks and intervals")
    p.add_argument("--state-dir", help="with --live: keep the agents' homes, logs and the store here")
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    _add_module(sub, wanted, "sim", "bot.sim.cli", "run the ClearML API simulator (a fake server from a scenario)")
    _add_module(sub, wanted, "serve", "bot.slack.serve", "run the Slack bot (Socket Mode, or --http)")
    _add_module(sub, wanted, "schedules", "bot.schedule", "list scheduled playbooks and their next run times")
    _add_module(sub, wanted, "act", "bot.actions.cli", "run a remediation action (clone, requeue, abort, rotate, …)",
                "add_act_arguments", "act_main")
    _add_module(sub, wanted, "audit", "bot.actions.cli", "show the audit log of actions", "add_audit_arguments",
                "audit_main")
    _add_module(sub, wanted, "doctor", "bot.doctor", "check the set-up: Slack, ClearML, storage, store, schedules")
    return parser


def _add_module(
    sub: Any, wanted: str | None, name: str, module: str, help_text: str, add: str = "add_arguments",
    run: str = "main",
) -> None:
    """A subcommand whose arguments and implementation live in its own package; imported only when it
    is the command being run (Bolt, boto3 and the simulator cost start-up time every other command)."""
    import importlib

    p = sub.add_parser(name, help=help_text)
    if wanted != name:
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    mod = importlib.import_module(module)
    getattr(mod, add)(p)
    if not any(a.dest == "config" for a in p._actions):
        _add_common(p)
    p.set_defaults(func=getattr(mod, run))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(wanted)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except (ConfigError, PlaybookError, UsageError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `clearml-chatops checks | head`: the reader left; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        from bot.sim.scenario import ScenarioError
        from bot.store import StoreError

        if isinstance(exc, StoreError | ScenarioError):
            _err(str(exc))
            return EXIT_USAGE
        if os.environ.get("CLEARML_CHATOPS_DEBUG"):
            raise
        from bot.redact import redact

        _err(
            f"unexpected error: {type(exc).__name__}: {redact(str(exc))} "
            "(set CLEARML_CHATOPS_DEBUG=1 for a traceback)"
        )
        return 3
