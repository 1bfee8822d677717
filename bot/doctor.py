"""`clearml-chatops doctor`: checks the bot's own set-up the way the troubleshooting guide checks connectivity,
and prints a table with a fix for every failure. Exit code 0 when nothing failed, 1 otherwise.

What it checks, in order:
- the config file loads (else the rest of the checks use the environment only);
- Slack: the bot token (`auth.test`), its scopes (`X-OAuth-Scopes` against what the code calls), the app-level
  token for Socket Mode (`apps.connections.open`) or the signing secret for HTTP mode, and for every routed
  channel (slack.default_channel, slack.routes, each playbook's `channel`, the digest's) that it exists and the
  bot can post there (`conversations.info` / `conversations.list`: needs channels:read and groups:read);
- each ClearML server: reachable, credentials accepted, TLS valid, the file server round trip (the
  `server.reachable`, `server.credentials`, `server.tls` and `storage.fileserver` checks, whose findings carry
  the fix);
- each storage target of the config: a probe object written, read back and deleted (`storage.probe`);
- the store: opens, takes a write lock, passes SQLite's quick_check, has free disk space;
- every playbook loads and its schedule is valid (and the digest's), naming the next run.

Read-only apart from the probe objects (deleted again) and an unsent Socket Mode URL. Nothing secret is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bot.config import ConfigError, DigestSettings, Settings, SlackSettings, load_settings, resolve_server
from bot.redact import redact
from bot.routing import Router

if TYPE_CHECKING:
    from bot.config import ServerSettings, Settings
    from bot.engine.playbook import Playbook

Status = Literal["ok", "warn", "FAIL", "skip"]
EXIT_OK, EXIT_PROBLEMS = 0, 1
MIN_FREE_BYTES = 100 * 1024 * 1024
SERVER_CHECKS = ("server.reachable", "server.credentials", "server.tls", "storage.fileserver")


@dataclass
class Row:
    status: Status
    check: str  # what was checked: "slack.token", "clearml prod: server.credentials", "store", ...
    detail: str  # what was found
    fix: str = ""  # what to do (always set for FAIL and warn)


@dataclass
class Doctor:
    settings: Settings | None
    env: Any  # a Mapping[str, str]
    playbooks_dir: Path
    server: str | None = None
    slack: bool = True
    http: bool | None = None  # None: inferred from which Slack secrets are set
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self.rows: list[Row] = []
        self.secrets: list[str] = []
        self._playbooks: list[Playbook] = []

    def add(self, status: Status, check: str, detail: str, fix: str = "") -> None:
        self.rows.append(Row(status, check, redact(detail, self.secrets), redact(fix, self.secrets)))

    @property
    def failed(self) -> bool:
        return any(r.status == "FAIL" for r in self.rows)

    # -- the whole run ----------------------------------------------------------------------------------------
    def run(self) -> list[Row]:
        self.secrets = [v for k in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")
                        if (v := self.env.get(k))]
        self.check_action_rules()
        self.check_playbooks()  # first: their channels and servers are checked below
        if self.slack:
            self.check_slack()
        else:
            self.add("skip", "slack", "not checked (--no-slack)")
        self.check_servers()
        self.check_store()
        return self.rows

    def check_action_rules(self) -> None:
        """`actions.allow` names only actions the authorizer knows (`serve` refuses to start otherwise)."""
        from bot.actions.policy import Authorizer
        from bot.config import ConfigError

        if self.settings is None:
            return
        try:
            Authorizer(self.settings.actions)
        except ConfigError as exc:
            self.add("FAIL", "actions.allow", str(exc), "rename or remove that key in the bot's config file")

    # -- playbooks and schedules ------------------------------------------------------------------------------
    def check_playbooks(self) -> None:
        from bot.engine.playbook import PlaybookError, find_playbooks, load_playbook
        from bot.schedule import trigger_for

        directory = self.playbooks_dir
        if not directory.is_dir():
            self.add("warn", "playbooks", f"no playbooks directory at {directory}",
                     "pass --playbooks DIR or set `playbooks:` in the config file (serve reads the same)")
            return
        paths = find_playbooks(directory)
        if not paths:
            self.add("warn", "playbooks", f"no playbook files (*.yaml) in {directory}",
                     "add playbooks there (see README: Writing a playbook)")
        now = datetime.now(UTC)
        servers = set(self.settings.servers) if self.settings is not None else set()
        for path in paths:
            try:
                pb = load_playbook(path)
            except PlaybookError as exc:
                self.add("FAIL", f"playbook {path.name}", str(exc),
                         "fix the file as the message says (`clearml-chatops validate` checks it again)")
                continue
            self._playbooks.append(pb)
            if pb.server and servers and pb.server not in servers:
                self.add("FAIL", f"playbook {pb.name}", f"names server `{pb.server}`, which the config does not "
                         f"define (servers: {', '.join(sorted(servers))})",
                         f"fix `server:` in {path} or add the server to the config file")
                continue
            if pb.schedule is None:
                self.add("ok", f"playbook {pb.name}", f"{len(pb.checks)} checks, no schedule (runs on demand)")
                continue
            try:
                trigger, text, tz = trigger_for(pb.schedule, pb.timezone)
                nxt = trigger.get_next_fire_time(None, now)
            except Exception as exc:  # an unknown timezone, an interval APScheduler refuses
                self.add("FAIL", f"schedule {pb.name}", f"schedule of {path} is not usable: {exc}",
                         "use a 5-field cron string or {every: 5m}, and an IANA timezone such as Europe/Berlin")
                continue
            when = nxt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if nxt else "never"
            self.add("ok", f"schedule {pb.name}", f"{text} ({tz}); next run {when}")
        self._check_digest(now)

    def _check_digest(self, now: datetime) -> None:
        from bot.schedule import trigger_for

        try:
            digest = DigestSettings.from_settings(self.settings)
        except ConfigError as exc:
            self.add("FAIL", "schedule digest", str(exc), "fix slack.digest in the config file")
            return
        if digest is None or not digest.enabled:
            return
        try:
            trigger, text, tz = trigger_for(digest.schedule, digest.timezone)
            nxt = trigger.get_next_fire_time(None, now)
        except Exception as exc:
            self.add("FAIL", "schedule digest", f"slack.digest.schedule is not usable: {exc}",
                     "use a 5-field cron string or {every: 24h}, and an IANA timezone")
            return
        when = nxt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if nxt else "never"
        self.add("ok", "schedule digest", f"{text} ({tz}); next run {when}")

    # -- Slack --------------------------------------------------------------------------------------------------
    def _web_client(self, token: str) -> Any:
        from slack_sdk import WebClient

        from bot.slack.client import api_base_url, retry_handlers

        base = self.env.get("SLACK_API_URL") or api_base_url(self.settings)
        # a doctor must answer in seconds: one retry on a 429, none of slack_sdk's long waits
        return WebClient(token=token, base_url=base if base.endswith("/") else base + "/", timeout=10,
                         retry_handlers=retry_handlers(max_rate_limit_retries=1, max_server_error_retries=1))

    def check_slack(self) -> None:
        from slack_sdk.errors import SlackApiError, SlackClientError

        from bot.slack.client import OPTIONAL_SCOPES, required_bot_scopes

        token = (self.env.get("SLACK_BOT_TOKEN") or "").strip()
        if not token:
            self.add("FAIL", "slack.token", "SLACK_BOT_TOKEN is not set",
                     "copy the Bot User OAuth Token (xoxb-…) from the app's Install App page into SLACK_BOT_TOKEN "
                     "(or pass --no-slack to check only ClearML, storage and the store)")
            return
        if not token.startswith("xoxb-"):
            self.add("FAIL", "slack.token", "SLACK_BOT_TOKEN is not a bot token (it does not start with xoxb-)",
                     "use the Bot User OAuth Token from Install App, not a user or app-level token")
            return
        client = self._web_client(token)
        try:
            resp = client.auth_test()
        except SlackApiError as exc:
            error = _slack_error(exc)
            self.add("FAIL", "slack.token", f"Slack refused SLACK_BOT_TOKEN ({error})",
                     "copy the token again from Install App, or reinstall the app to the workspace")
            return
        except (SlackClientError, OSError) as exc:
            self.add("FAIL", "slack.token", f"cannot reach the Slack API at {client.base_url}: "
                     f"{type(exc).__name__}: {exc}",
                     "check the network and proxy settings (HTTPS_PROXY), or SLACK_API_URL / slack.api_url")
            return
        self.add("ok", "slack.token", f"auth.test ok: team {resp.get('team') or '?'} as "
                 f"@{resp.get('user') or '?'} ({resp.get('user_id') or '?'})")
        header = _header(resp.headers, "x-oauth-scopes")
        if header is None:
            self.add("warn", "slack.scopes", "Slack did not report the token's scopes (no X-OAuth-Scopes header)",
                     f"check by hand that the app has: {', '.join(sorted(required_bot_scopes()))}")
            scopes: set[str] | None = None
        else:
            scopes = {s.strip() for s in header.split(",") if s.strip()}
            missing = sorted(required_bot_scopes() - scopes - set(OPTIONAL_SCOPES))
            optional = sorted(set(OPTIONAL_SCOPES) - scopes)
            if missing:
                self.add("FAIL", "slack.scopes", f"the bot token lacks {', '.join(missing)}",
                         "add them under oauth_config.scopes.bot (manifest.yml has them) and reinstall the app")
            for scope in optional:  # the bot works without these, with less
                self.add("warn", f"slack.scope {scope}", f"the bot token lacks {scope}: {OPTIONAL_SCOPES[scope]}",
                         f"add {scope} under oauth_config.scopes.bot (manifest.yml has it) and reinstall the app")
            if not missing:
                self.add("ok", "slack.scopes", f"{len(scopes)} scopes, all {len(required_bot_scopes())} needed")
        self._check_mode()
        self._check_channels(client, scopes)

    def _check_mode(self) -> None:
        from slack_sdk.errors import SlackApiError, SlackClientError

        app_token = (self.env.get("SLACK_APP_TOKEN") or "").strip()
        secret = (self.env.get("SLACK_SIGNING_SECRET") or "").strip()
        http = self.http if self.http is not None else (bool(secret) and not app_token)
        if http:
            if secret:
                self.add("ok", "slack.signing_secret", "SLACK_SIGNING_SECRET is set (HTTP mode verifies every "
                         "request with it)")
            else:
                self.add("FAIL", "slack.signing_secret", "HTTP mode needs SLACK_SIGNING_SECRET, which is not set",
                         "copy Basic Information → App Credentials → Signing Secret, or use Socket Mode "
                         "(SLACK_APP_TOKEN)")
            return
        if not app_token:
            self.add("FAIL", "slack.app_token", "SLACK_APP_TOKEN is not set (Socket Mode, the default of serve)",
                     "create an app-level token with connections:write (Basic Information → App-Level Tokens), "
                     "or run serve --http with SLACK_SIGNING_SECRET")
            return
        if not app_token.startswith("xapp-"):
            self.add("FAIL", "slack.app_token", "SLACK_APP_TOKEN does not start with xapp-",
                     "use the app-level token (Basic Information → App-Level Tokens), not the bot token")
            return
        try:
            # Opens nothing: Slack hands out a one-time websocket URL, which is left unused.
            self._web_client(app_token).apps_connections_open(app_token=app_token)
        except SlackApiError as exc:
            self.add("FAIL", "slack.app_token", f"Slack refused SLACK_APP_TOKEN ({_slack_error(exc)})",
                     "create an app-level token with connections:write and enable Socket Mode in the app "
                     "(manifest: settings.socket_mode_enabled: true)")
            return
        except (SlackClientError, OSError) as exc:
            self.add("FAIL", "slack.app_token", f"cannot reach Slack for Socket Mode: {type(exc).__name__}",
                     "check the network and proxy settings")
            return
        self.add("ok", "slack.app_token", "apps.connections.open ok (Socket Mode can connect)")

    def routed_channels(self) -> dict[str, list[str]]:
        """channel -> where it is configured (for the fix text)."""
        out: dict[str, list[str]] = {}
        slack = self.settings.slack if self.settings is not None else None
        default = Router(slack or SlackSettings(), env=self.env).default_channel  # the routing's own rule
        if default:
            out.setdefault(default, []).append("slack.default_channel")
        for i, route in enumerate(slack.routes if slack else []):
            out.setdefault(route.channel, []).append(f"slack.routes[{i}]")
        for pb in self._playbooks:
            if pb.channel:
                out.setdefault(pb.channel, []).append(f"playbook {pb.name}")
        digest = (slack.digest or {}) if slack else {}
        if isinstance(digest, dict) and digest.get("channel"):
            out.setdefault(str(digest["channel"]), []).append("slack.digest.channel")
        return out

    def _check_channels(self, client: Any, scopes: set[str] | None) -> None:
        from slack_sdk.errors import SlackApiError, SlackClientError

        channels = self.routed_channels()
        if not channels:
            self.add("warn", "slack.channels", "no channel is configured for unattended reports (schedules, "
                     "incidents, digests)", "set slack.default_channel (or SLACK_DEFAULT_CHANNEL)")
            return
        public_ok = scopes is None or "chat:write.public" in scopes
        index: dict[str, dict[str, Any]] | None = None
        for channel, sources in channels.items():
            where = ", ".join(sources)
            name = f"slack.channel {channel}"
            try:
                if _is_channel_id(channel):
                    info: dict[str, Any] | None = client.conversations_info(channel=channel).get("channel")
                else:
                    if index is None:
                        index = _list_channels(client)
                    info = index.get(channel.lstrip("#").lower())
            except SlackApiError as exc:
                error = _slack_error(exc)
                if error == "missing_scope":
                    self.add("warn", name, "cannot check membership: the token lacks channels:read / groups:read",
                             f"add channels:read and groups:read to the app to let doctor check; until then make "
                             f"sure the bot is in {channel} if it is private (/invite @clearml-chatops)")
                    continue
                if error != "channel_not_found":
                    self.add("FAIL", name, f"Slack answered {error} for {channel} ({where})", "see the error code")
                    continue
                info = None
            except (SlackClientError, OSError) as exc:
                self.add("FAIL", name, f"cannot ask Slack about {channel}: {type(exc).__name__}",
                         "check the network")
                continue
            if info is None:
                self.add("FAIL", name, f"{channel} ({where}) does not exist, or is private and the bot is not in it",
                         f"fix the name in {where}, or /invite @clearml-chatops in that channel")
            elif info.get("is_archived"):
                self.add("FAIL", name, f"{channel} ({where}) is archived",
                         f"unarchive it or route to another channel in {where}")
            elif info.get("is_member"):
                self.add("ok", name, f"the bot is a member ({where})")
            elif info.get("is_private"):
                self.add("FAIL", name, f"{channel} ({where}) is private and the bot is not a member",
                         f"/invite @clearml-chatops in {channel}")
            elif public_ok:
                self.add("ok", name, f"public; the bot posts without joining (chat:write.public) ({where})")
            else:
                self.add("FAIL", name, f"{channel} ({where}): the bot is not a member and lacks chat:write.public",
                         f"/invite @clearml-chatops in {channel}, or add the chat:write.public scope")

    # -- ClearML servers and storage ----------------------------------------------------------------------------
    def check_servers(self) -> None:
        settings = self.settings or Settings()
        names: list[str | None] = [self.server] if self.server else (list(settings.servers) or [None])
        servers: list[ServerSettings] = []
        for name in names:
            try:
                server = resolve_server(settings, name)
            except ConfigError as exc:
                self.add("FAIL", f"clearml {name or 'default'}", str(exc),
                         "set the server in the config file or the CLEARML_* environment variables")
                continue
            self.secrets.extend(server.secrets())
            servers.append(server)
        for i, server in enumerate(servers):
            checks = list(SERVER_CHECKS)
            if i == 0:
                checks.append("storage.probe")  # storage targets are global: probed once, with the first server
            self._run_checks(settings, server, checks)

    def _run_checks(self, settings: Settings, server: ServerSettings, check_ids: list[str]) -> None:
        from bot.engine.playbook import CheckEntry, Playbook
        from bot.engine.runner import run_playbooks

        entries = [CheckEntry(check=c) for c in check_ids]
        if not settings.storage_targets:
            entries = [e for e in entries if e.check != "storage.probe"]
            self.add("skip", "storage targets", "none configured (`storage:` in the config file)",
                     "list the buckets your tasks write to under `storage:` to have them probed")
        playbook = Playbook(name="doctor", description="the bot's own set-up", checks=entries)
        try:
            result = asyncio.run(run_playbooks([playbook], settings, server, deadline_s=self.timeout_s,
                                               trigger="doctor"))
        except Exception as exc:  # run_playbooks reports check failures itself; this is a bug or a bad config
            self.add("FAIL", f"clearml {server.name}", f"{type(exc).__name__}: {exc}", "see the message")
            return
        label = f"clearml {server.name}"
        for finding in result.findings:
            check = f"{label}: {finding.check}"
            if finding.check == "storage.probe":
                check = f"storage {finding.subject.name or finding.subject.id}"
            detail = finding.title + (f" — {finding.detail}" if finding.detail and finding.severity != "ok" else "")
            if finding.severity in ("ok", "info"):
                self.add("ok", check, detail)
            elif finding.severity == "warning":
                self.add("warn", check, detail, finding.remediation or "see the detail")
            else:
                self.add("FAIL", check, detail, finding.remediation or "see the detail")

    # -- the store ----------------------------------------------------------------------------------------------
    def check_store(self) -> None:
        path = (self.settings or Settings()).store_path
        fix_path = "set `store:` in the config file to a writable path on a persistent volume"
        if path.exists():
            try:
                conn = sqlite3.connect(str(path), timeout=5, isolation_level=None)
                try:
                    conn.execute("BEGIN IMMEDIATE")  # the write lock; nothing is written
                    conn.execute("ROLLBACK")
                    check = conn.execute("PRAGMA quick_check").fetchone()
                finally:
                    conn.close()
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if "locked" in text or "busy" in text:
                    self.add("FAIL", "store", f"{path} is locked by another process for more than 5 s ({text})",
                             "find the process holding it (`fuser` / `lsof`); a running serve releases it within "
                             "milliseconds, so look for a stuck sqlite3 shell or a second bot on the same file")
                else:
                    self.add("FAIL", "store", f"{path}: {text}", fix_path)
                return
            except sqlite3.DatabaseError as exc:
                self.add("FAIL", "store", f"{path} is not a usable SQLite database: {exc}",
                         "move the file aside (the bot creates a new store) or restore it from a backup")
                return
            if not check or check[0] != "ok":
                self.add("FAIL", "store", f"{path} fails SQLite's integrity check: {check[0] if check else '?'}",
                         "restore the store from a backup, or move it aside to start a fresh one")
                return
            size = path.stat().st_size
            self.add("ok", "store", f"{path} writable, integrity ok, {size / 1e6:.1f} MB")
        else:
            parent = path.parent
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            if not os.access(parent, os.W_OK | os.X_OK):
                self.add("FAIL", "store", f"{path} does not exist and {parent} is not writable", fix_path)
                return
            self.add("ok", "store", f"{path} will be created on first use ({parent} is writable)")
        try:
            free = shutil.disk_usage(path.parent if path.parent.exists() else Path("/")).free
        except OSError:
            return
        if free < MIN_FREE_BYTES:
            self.add("warn", "store disk", f"only {free / 1e6:.0f} MB free next to {path}",
                     "free space or move the store: SQLite refuses writes on a full disk")


def _slack_error(exc: Any) -> str:
    response = getattr(exc, "response", None)
    try:
        return str(response.get("error") or "unknown_error") if response is not None else str(exc)
    except Exception:
        return str(exc)


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers or {}).items():
        if key.lower() == name:
            return value[0] if isinstance(value, list) and value else str(value)
    return None


def _is_channel_id(channel: str) -> bool:
    import re

    return bool(re.match(r"^[CGD][A-Z0-9]{6,}$", channel))


def _list_channels(client: Any, max_pages: int = 20) -> dict[str, dict[str, Any]]:
    """name -> channel for every channel the bot can see (public, and private ones it is in)."""
    out: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    for _ in range(max_pages):
        args: dict[str, Any] = {"types": "public_channel,private_channel", "limit": 1000}
        if cursor:
            args["cursor"] = cursor
        resp = client.conversations_list(**args)
        for ch in resp.get("channels") or []:
            out[str(ch.get("name", "")).lower()] = ch
        cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor:
            break
    return out


# -- output -----------------------------------------------------------------------------------------------------


def format_table(rows: list[Row]) -> str:
    width = min(40, max((len(r.check) for r in rows), default=5))
    lines = [f"{'STATUS':<6}  {'CHECK':<{width}}  RESULT"]
    for r in rows:
        lines.append(f"{r.status:<6}  {r.check:<{width}}  {r.detail}")
        if r.fix and r.status in ("FAIL", "warn"):
            lines.append(f"{'':<6}  {'':<{width}}  fix: {r.fix}")
    failed = sum(r.status == "FAIL" for r in rows)
    warned = sum(r.status == "warn" for r in rows)
    if failed:
        lines.append(f"\n{failed} problem(s) to fix" + (f", {warned} warning(s)" if warned else "") + ".")
    else:
        lines.append("\nAll good" + (f" ({warned} warning(s))" if warned else "") + ".")
    return "\n".join(lines)


# -- CLI --------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="the bot's YAML config file (default: $CLEARML_CHATOPS_CONFIG)")
    parser.add_argument("--server", help="check only this server (default: every configured server)")
    parser.add_argument("--playbooks", dest="playbooks_dir", metavar="DIR",
                        help="playbooks directory (default: the config file's `playbooks`, else ./playbooks)")
    parser.add_argument("--no-slack", dest="slack", action="store_false",
                        help="skip the Slack checks (terminal-only use)")
    parser.add_argument("--http", action="store_true", default=None,
                        help="check for HTTP mode (signing secret) instead of Socket Mode (app token)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for the ClearML and storage checks")
    parser.add_argument("--format", choices=["text", "json"], default="text")


def main(args: argparse.Namespace) -> int:

    settings: Settings | None
    config_row: Row | None = None
    try:
        settings = load_settings(getattr(args, "config", None))
        source = settings.config_path or "no config file (environment only)"
        config_row = Row("ok", "config", source)
    except ConfigError as exc:
        settings = None
        config_row = Row("FAIL", "config", str(exc), "fix the config file; the checks below use the environment")
    from bot.engine.playbook_sources import playbooks_location

    directory = playbooks_location(getattr(args, "playbooks_dir", None), settings.playbooks if settings else None).path
    doctor = Doctor(
        settings=settings,
        env=os.environ,
        playbooks_dir=directory,
        server=getattr(args, "server", None),
        slack=getattr(args, "slack", True),
        http=getattr(args, "http", None),
        timeout_s=float(getattr(args, "timeout", 30.0) or 30.0),
    )
    doctor.rows.append(config_row)
    doctor.run()
    if getattr(args, "format", "text") == "json":
        json.dump({"ok": not doctor.failed, "checks": [asdict(r) for r in doctor.rows]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_table(doctor.rows))
    return EXIT_PROBLEMS if doctor.failed else EXIT_OK
