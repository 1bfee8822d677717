"""`clearml-chatops serve [--http] [--port N] [--host H] [--playbooks DIR]`: run the Slack bot.

Besides answering Slack, `serve` runs the background (bot/slack/background.py): the durable outbox's worker, the
scheduled playbooks feeding the incident threads, the digest, and the reproduce watcher. SIGTERM stops them in
order: no new scheduled runs, running commands and button jobs finish, the outbox sends what is queued (briefly;
the rest waits in the store for the next start), the store closes.

Socket Mode by default (`SLACK_BOT_TOKEN`, `SLACK_APP_TOKEN`; no public URL needed). `--http` serves Slack's requests
on `/slack/events` (`SLACK_SIGNING_SECRET`) through uvicorn and Bolt's Starlette adapter. Both modes serve
`GET /healthz` on the port: 200 only when the Slack connection is up (HTTP mode: `auth.test` answers ok, cached for
30 s; Socket Mode: the websocket is connected) and the store is writable, else 503 with the reason. The container's
HEALTHCHECK and Kubernetes probes use it (`python -m bot.slack.healthcheck`).

Missing or refused tokens, a bad config or an unwritable store exit with code 2 and one clear message.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.config import ConfigError, Settings, load_settings
from bot.errors import BotError
from bot.heap import settle_startup_heap
from bot.slack.app import SlackAuthError, create_app, playbooks_directory, services_of, shutdown_app
from bot.slack.client import api_base_url
from bot.slack.commands.listeners import acks_without_io
from bot.store import Store, StoreError

log = logging.getLogger(__name__)

EXIT_SETUP = 2
DEFAULT_PORT = 3000
EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"


class SetupError(BotError):
    """The bot cannot start: a token is missing or refused, a port is taken, ... The message says what to fix."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http",
        action="store_true",
        help=f"HTTP mode: receive Slack's requests on {EVENTS_PATH} (needs SLACK_SIGNING_SECRET and a public URL); "
        "default: Socket Mode (needs SLACK_APP_TOKEN, no public URL)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port for {EVENTS_PATH} and {HEALTH_PATH} (default: $PORT or {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument("--host", default=None, help="address to listen on (default: 0.0.0.0)")
    parser.add_argument(
        "--playbooks",
        dest="playbooks_dir",
        metavar="DIR",
        default=None,
        help="playbooks directory (default: the config file's `playbooks`, else ./playbooks)",
    )


# ------------------------------------------------------------------------------------------------------------
# Health


def store_writable(path: Path) -> tuple[bool, str]:
    """Can the store take a write now? Takes SQLite's write lock and lets it go (no data written)."""
    if str(path) == ":memory:":
        return True, "in memory"
    if not path.exists():
        return False, f"{path} does not exist"
    try:
        conn = sqlite3.connect(str(path), timeout=2, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # fails on a read-only file or directory, or a lock held too long
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return False, f"{path}: {exc}"
    return True, str(path)


class Health:
    """What /healthz reports. Slack's side is cached briefly so that probes do not hammer auth.test."""

    def __init__(self, token: str, base_url: str, store_path: Path, *, ttl_s: float = 30.0) -> None:
        # A client without retry handlers: a probe must answer quickly, not sleep through Retry-After.
        self._client = WebClient(token=token, base_url=base_url, timeout=5)
        self._store_path = store_path
        self._ttl = ttl_s
        self._cached: tuple[float, bool, str] | None = None
        self._lock = threading.Lock()
        self.socket_handler: Any = None  # set in Socket Mode
        self.outbox_depth: Any = None  # () -> messages not yet sent: reported, not a health condition

    def slack(self) -> tuple[bool, str]:
        if self.socket_handler is not None:
            connected = bool(self.socket_handler.client.is_connected())
            return connected, "socket mode: connected" if connected else "socket mode: not connected"
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._ttl:
                return self._cached[1], self._cached[2]
            try:
                resp = self._client.auth_test()
                result = (bool(resp.get("ok")), f"auth.test ok (team {resp.get('team') or '?'})")
            except SlackApiError as exc:
                result = (False, f"auth.test: {exc.response.get('error') if exc.response is not None else exc}")
            except (SlackClientError, OSError) as exc:
                result = (False, f"auth.test: {type(exc).__name__}")
            self._cached = (now, *result)
            return result

    def check(self) -> tuple[bool, dict[str, Any]]:
        slack_ok, slack_detail = self.slack()
        store_ok, store_detail = store_writable(self._store_path)
        ok = slack_ok and store_ok
        detail: dict[str, Any] = {
            "ok": ok,
            "slack": {"ok": slack_ok, "detail": slack_detail},
            "store": {"ok": store_ok, "detail": store_detail},
        }
        if self.outbox_depth is not None and store_ok:
            try:
                detail["outbox"] = {"pending": int(self.outbox_depth())}
            except Exception:  # informational only: never turns the probe red
                pass
        return ok, detail


def _acks_on_loop(body: bytes) -> bool:
    """A slash command whose ack does no I/O (bot/slack/commands/listeners.py): safe to dispatch on the event loop.
    Interactions (`payload=`) and events (JSON) go to a thread: their listeners may read the store."""
    if b"command=" not in body:
        return False
    form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=64)
    if "payload" in form or "command" not in form:
        return False
    return acks_without_io((form.get("text") or [""])[0], form["command"][0])


MAX_BODY_BYTES = 1_000_000  # Slack's own payloads are a few kB; anything near this is not from Slack
MAX_TIMESTAMP_DIGITS = 12  # epoch seconds have 10; a longer "number" only serves to overflow slack_sdk's int math


def _refuse(status: int, error: str) -> Response:
    # Connection: close: a refused body may still be arriving; the client must not reuse this connection for more.
    return JSONResponse({"ok": False, "error": error}, status_code=status, headers={"Connection": "close"})


async def read_capped(request: Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `limit` bytes: the declared Content-Length is
    checked before anything is read, and a chunked (or lying) body is cut off while streaming, so memory never
    holds more than `limit` + one chunk."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.strip().isdigit() or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def signature_problem(headers: Mapping[str, str], body: bytes, signing_secret: str | None) -> str | None:
    """Why a request to /slack/events is not Slack's (None when it is): checked here, before Bolt, so that a forged
    request costs nothing and Bolt's verifier (which logs the whole body when a signature fails) never sees one."""
    stamp = (headers.get("x-slack-request-timestamp") or "").strip()
    if not stamp.isdigit() or len(stamp) > MAX_TIMESTAMP_DIGITS:
        return "invalid request timestamp"
    if signing_secret is None:
        return None
    from slack_sdk.signature import SignatureVerifier

    if not SignatureVerifier(signing_secret).is_valid(body, stamp, headers.get("x-slack-signature") or ""):
        return "invalid request signature"
    return None


class _NoBodies(logging.Filter):
    """Drop Bolt's "Invalid request signature detected (... body: ...)" lines: an unauthenticated sender chooses that
    body, so logging it lets anyone write megabytes into the bot's logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "body:" not in str(record.msg)


logging.getLogger("slack_bolt.RequestVerification").addFilter(_NoBodies())


def build_asgi(app: App | None, health: Health, signing_secret: str | None = None) -> Starlette:
    """Starlette app: POST /slack/events (HTTP mode) and GET /healthz. Requests to /slack/events are bounded before
    any work: size (Content-Length, then streaming), timestamp shape and signature (`signing_secret`)."""

    async def events(request: Request) -> Response:
        body = await read_capped(request)
        if body is None:
            log.warning("refused a request to %s larger than %d bytes", EVENTS_PATH, MAX_BODY_BYTES)
            return _refuse(413, f"request body over {MAX_BODY_BYTES} bytes")
        problem = signature_problem(request.headers, body, signing_secret)
        if problem is not None:
            return _refuse(401, problem)
        try:
            bolt_request = to_bolt_request(request, body)
            if _acks_on_loop(body):
                # verify, parse, ack: microseconds of CPU, no I/O. A hop to a worker thread would cost more than
                # the work (and, with fifty at once, a queue for the thread pool and the GIL): do it right here.
                bolt_response = app.dispatch(bolt_request)  # type: ignore[union-attr]
            else:
                # Bolt's App is synchronous: dispatch in a worker thread so that a listener reading the store or
                # files never blocks the event loop (the adapter's own handler calls dispatch on the loop).
                bolt_response = await run_in_threadpool(app.dispatch, bolt_request)  # type: ignore[union-attr]
        except Exception as exc:
            # A shape Slack never sends (`"user": false`, `"actions": {}`) trips Bolt's own parsing before any
            # listener runs: refuse it plainly instead of a 500 with a traceback.
            log.warning("refused a malformed request to %s: %s", EVENTS_PATH, type(exc).__name__)
            return JSONResponse({"ok": False, "error": "malformed Slack request"}, status_code=400)
        return to_starlette_response(bolt_response)

    async def healthz(request: Request) -> Response:
        ok, detail = await run_in_threadpool(health.check)
        return JSONResponse(detail, status_code=200 if ok else 503)

    from bot.metrics import metrics_route

    routes = [Route(HEALTH_PATH, healthz, methods=["GET", "HEAD"]), metrics_route()]
    if app is not None:
        routes.append(Route(EVENTS_PATH, events, methods=["POST"]))
    return Starlette(routes=routes)


def report_interrupted(services: Any, interrupted: list[Any]) -> None:
    """Tell each interrupted action's thread (where it was clicked) that it was cut short by a restart: the audit log
    alone reaches nobody. Queued in the durable outbox under a key per run, so a second restart does not repeat it."""
    from bot.slack.messages.common import SlackMessage, code, mention, neutral, section

    for run in interrupted:
        where = run.context or {}
        channel, thread = where.get("channel"), where.get("thread_ts") or where.get("message_ts")
        if not channel or run.via != "slack":
            continue
        when = run.started_at.astimezone(UTC).strftime("%H:%M UTC")
        who = mention(run.actor_id) if run.via == "slack" else neutral(run.actor_name or run.actor_id)
        text = (f":warning: The {neutral(run.action)} of {code(run.subject, 80)} that {who} started at {when} was "
                "interrupted: the bot restarted while it ran. Part of it may have been done: check the current "
                "state in ClearML before clicking again (the audit log has it as `interrupted`).")
        message = SlackMessage(text=f"{run.action} of {run.subject} was interrupted by a restart",
                               blocks=[section(text)])
        try:
            incident = where.get("incident")
            if incident is not None:
                from bot.incidents.tracker import root_key

                services.outbox.enqueue(f"interrupted:{run.key}", channel, "reply", message.as_payload(),
                                        root_key=root_key(int(incident)))
            else:
                services.outbox.enqueue(f"interrupted:{run.key}", channel, "reply", message.as_payload(),
                                        thread_ts=thread)
        except Exception:  # the audit row is written; only the telling failed
            log.exception("could not queue the interrupted-action note for %s", run.key)


# ------------------------------------------------------------------------------------------------------------
# The server


class BotServer:
    """The bot with its web server; `run()` blocks (signals stop it), `start()`/`stop()` are for tests."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: bool = False,
        host: str | None = None,
        port: int | None = None,
        playbooks_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        store: Store | None = None,
        socket_ping_interval: float = 10.0,
    ) -> None:
        self.settings = settings
        # Socket Mode: seconds between pings, which is also how often a dropped connection is noticed and redone
        self.socket_ping_interval = socket_ping_interval
        self.http = http
        self.env = os.environ if env is None else env
        self.host = host or "0.0.0.0"
        self.port = port if port is not None else int(self.env.get("PORT") or DEFAULT_PORT)
        self.playbooks_dir = playbooks_directory(settings, playbooks_dir)
        self.store = store
        self._own_store = store is None
        self.app: App | None = None
        self.health: Health | None = None
        self.background: Any = None  # bot.slack.background.Background
        self._unwatch: Any = None  # stops /metrics reading the outbox before the store closes
        self.socket_handler: Any = None
        self._server: Any = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._signing_secret: str | None = None

    # -- setup ------------------------------------------------------------------------------------------------
    def _token(self, name: str, prefix: str, what: str) -> str:
        value = (self.env.get(name) or "").strip()
        if not value:
            raise SetupError(
                f"{name} is not set: {what}. See docs/slack.md (create the app from manifest.yml, install it, copy "
                "the tokens)."
            )
        if not value.startswith(prefix):
            raise SetupError(f"{name} does not look like a {prefix}… token: {what}.")
        return value

    def setup(self) -> None:
        """Tokens, store, app, Slack connection, listening socket; undoes what it did if a step fails."""
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        bot_token = self._token("SLACK_BOT_TOKEN", "xoxb-", "the Bot User OAuth Token (OAuth & Permissions)")
        if self.http:
            signing_secret = (self.env.get("SLACK_SIGNING_SECRET") or "").strip()
            if not signing_secret:
                raise SetupError(
                    "SLACK_SIGNING_SECRET is not set: HTTP mode verifies every request with it (Basic Information → "
                    "App Credentials → Signing Secret). Without --http the bot uses Socket Mode instead."
                )
            app_token = None
        else:
            signing_secret = None
            app_token = self._token(
                "SLACK_APP_TOKEN",
                "xapp-",
                "Socket Mode needs an app-level token with connections:write (Basic Information → App-Level Tokens);"
                " or run with --http",
            )
        self._bind()  # a taken port fails before anything talks to Slack
        if self.store is None:
            self.store = Store(self.settings.store_path)
        from bot.actions.runs import recover_interrupted

        interrupted = recover_interrupted(self.store)  # actions a killed process left half-done: audited, not redone
        for run in interrupted:
            log.warning("action %s on %s by %s was interrupted by a restart; audited as interrupted", run.action,
                        run.subject, run.actor_name or run.actor_id)
        self._signing_secret = signing_secret
        base_url = api_base_url(self.settings)
        extra = [t for t in (app_token,) if t]
        try:
            self.app = create_app(
                self.settings,
                store=self.store,
                token=bot_token,
                signing_secret=signing_secret,
                socket_mode=not self.http,
                playbooks_dir=self.playbooks_dir,
                extra_secrets=extra,
            )
        except SlackAuthError as exc:
            raise SetupError(str(exc)) from None
        except (SlackClientError, OSError) as exc:
            raise SetupError(f"cannot reach the Slack API at {base_url}: {type(exc).__name__}: {exc}") from None
        self.health = Health(bot_token, base_url, self.store.path)
        if not self.http:
            self._connect_socket(app_token or "")
        from bot.slack.background import Background

        services = services_of(self.app)
        report_interrupted(services, interrupted)  # queued now, sent by the outbox worker once it runs
        self.background = Background(services, bot_token).start()
        settle_startup_heap()  # scheduled runs' collections skip what startup loaded (bot/heap.py)
        self.health.outbox_depth = services.outbox.durable.depth if services.outbox.durable is not None else None
        if services.outbox.durable is not None:
            from bot.metrics import watch_outbox

            self._unwatch = watch_outbox(services.outbox.durable)  # /metrics reads the queue depth at scrape time

    def _connect_socket(self, app_token: str) -> None:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        assert self.app is not None and self.health is not None
        handler = SocketModeHandler(self.app, app_token, ping_interval=self.socket_ping_interval)
        try:
            handler.connect()
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else str(exc)
            raise SetupError(
                f"Slack refused SLACK_APP_TOKEN ({error}): create an app-level token with the connections:write "
                "scope (Basic Information → App-Level Tokens) and enable Socket Mode"
            ) from None
        except (SlackClientError, OSError) as exc:
            raise SetupError(f"cannot open the Socket Mode connection: {type(exc).__name__}: {exc}") from None
        self.socket_handler = handler
        self.health.socket_handler = handler

    def _bind(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise SetupError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self.port = int(sock.getsockname()[1])

    def _uvicorn(self) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would kill the process before the
            bot drains its work pool and closes the store; here a signal only asks for a graceful stop."""

            def handle_exit(self, sig: int, frame: Any) -> None:
                if self.should_exit and sig == signal.SIGINT:
                    self.force_exit = True  # a second Ctrl-C: stop waiting for open connections
                self.should_exit = True

        assert self.health is not None
        asgi = build_asgi(self.app if self.http else None, self.health, self._signing_secret)
        config = uvicorn.Config(  # log_config=None: uvicorn's lines go through the bot's handler (one line, redacted)
            asgi, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=10, log_config=None
        )
        return Server(config)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    # -- running ----------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Set up and serve until SIGINT/SIGTERM (uvicorn handles the signals in the main thread)."""
        self.setup()
        self._server = self._uvicorn()
        mode = f"HTTP mode on {self.url}{EVENTS_PATH}" if self.http else "Socket Mode"
        log.info(
            "Slack bot ready (%s); health on %s%s; playbooks from %s", mode, self.url, HEALTH_PATH, self.playbooks_dir
        )
        print(f"clearml-chatops serve: ready ({mode}); health: {self.url}{HEALTH_PATH}", file=sys.stderr, flush=True)
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self.close()
        return 0

    def start(self, timeout: float = 10.0) -> BotServer:
        """Set up and serve in a background thread (in-process tests)."""
        self.setup()
        self._server = self._uvicorn()
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise SetupError("the web server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        self.close()

    def close(self) -> None:
        if self.socket_handler is not None:
            try:
                self.socket_handler.close()
            except Exception:  # closing a dead socket must not hide the real reason we stop
                log.debug("socket mode close failed", exc_info=True)
            self.socket_handler = None
        if self.background is not None:
            self.background.stop_scheduling()  # no new runs; a running one may finish
        if self.app is not None:
            shutdown_app(self.app)  # commands and button jobs finish (they may queue messages)
            self.app = None
        if self.background is not None:
            self.background.stop_outbox()  # send what is queued, briefly; the rest goes at the next start
            self.background = None
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.store is not None and self._own_store:
            self.store.close()
            self.store = None


def _setup_logging() -> None:
    # One line per event, LOG_FORMAT=text|json, LOG_LEVEL; secrets redacted on every handler (docs/operations.md).
    from bot.logs import setup_logging

    setup_logging()


def _register_secrets(settings: Settings) -> None:
    """The ClearML keys of every configured server never appear in a log line, whatever variables hold them."""
    from bot.logs import add_secrets
    from bot.slack.commands.lookups import configured_servers

    add_secrets(s for server in configured_servers(settings) for s in server.secrets())


def main(args: argparse.Namespace) -> int:
    """Entry point for `clearml-chatops serve`; returns the exit code (2 for set-up problems)."""
    _setup_logging()
    try:
        settings = load_settings(getattr(args, "config", None))
        _register_secrets(settings)
        server = BotServer(
            settings,
            http=bool(getattr(args, "http", False)),
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            playbooks_dir=getattr(args, "playbooks_dir", None),
        )
        return server.run()
    except (SetupError, ConfigError, StoreError) as exc:
        print(f"clearml-chatops serve: {exc}", file=sys.stderr)
        return EXIT_SETUP
