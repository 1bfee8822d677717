"""Async ClearML REST client on httpx: login, envelope parsing, typed errors, bounded retries, paging.

One `httpx.AsyncClient` (one connection pool) per ClearML server. Requests are `POST {api_url}/{endpoint}`
with a JSON body and no version prefix, so the server answers with its newest implementation. Errors are
the typed exceptions of `bot.clearml.errors`; their messages are redacted and never carry keys or tokens.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import html
import json
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
import jwt

from bot import __version__
from bot.clearml.errors import (
    ClearMLError,
    CredentialsError,
    InvalidTokenError,
    ServerUnavailableError,
    error_from_envelope,
)
from bot.config import ServerSettings
from bot.redact import redact

log = logging.getLogger(__name__)


class CallCounter(Protocol):
    """Where the client counts its requests, failures and retries (bot/metrics.py implements it). The client is
    handed one instead of importing metrics, so the REST layer depends on nothing above it."""

    def clearml_call(self, server: str, endpoint: str) -> None: ...

    def clearml_error(self, server: str, reason: str) -> None: ...

    def clearml_retry(self, server: str) -> None: ...


class _NoCounter:
    def clearml_call(self, server: str, endpoint: str) -> None:
        pass

    def clearml_error(self, server: str, reason: str) -> None:
        pass

    def clearml_retry(self, server: str) -> None:
        pass


# The counter of clients not handed one: nothing until `install_counter` (bot.metrics.enable() installs itself).
_default_counter: CallCounter = _NoCounter()


def install_counter(counter: CallCounter | None) -> None:
    """Make `counter` the default of every client not handed its own (None: count nothing)."""
    global _default_counter
    _default_counter = counter if counter is not None else _NoCounter()

T = TypeVar("T")

USER_AGENT = f"clearml-chatops/{__version__}"

# Re-login when less than this is left on the token (the SDK uses 360 s).
TOKEN_REFRESH_MARGIN_S = 300.0
# Scroll (scroll_id/size) exists from API 2.15 on.
SCROLL_MIN_API = (2, 15)
# Server-side maximum page size (services._mongo.max_page_size); larger requests are silently clamped.
MAX_PAGE_SIZE = 500

# Actions that only read. Anything else (clone, enqueue, stop, reset, dequeue, move_task_to_front, ...) is a
# write and is never retried automatically: a retry after a lost response could apply it twice.
_READ_PREFIXES = ("get", "ping", "info", "peek", "validate", "supported", "fixed_users")
_READ_ENDPOINTS = frozenset(
    {
        "events.debug_images",
        "events.plots",
        "events.scalar_metrics_iter_histogram",
        "events.vector_metrics_iter_histogram",
        "events.multi_task_scalar_metrics_iter_histogram",
        "events.download_task_log",
    }
)
# `get_*` names that change state: get_next_task pops a queue entry.
_WRITE_ENDPOINTS = frozenset({"queues.get_next_task"})

_RETRYABLE_REASONS = frozenset({"refused", "timeout", "http_5xx", "not_json", "network"})
_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def is_read_endpoint(endpoint: str) -> bool:
    """Whether `service.action` only reads (and may therefore be retried)."""
    if endpoint in _WRITE_ENDPOINTS:
        return False
    if endpoint in _READ_ENDPOINTS:
        return True
    action = endpoint.rpartition(".")[2]
    return action.startswith(_READ_PREFIXES)


@dataclass
class CallStats:
    """Per-client request accounting (one client per server and run)."""

    calls: int = 0  # every HTTP request to the API server, login and retries included
    bytes_received: int = 0  # response body bytes (API, files and probes)
    by_endpoint: dict[str, int] = field(default_factory=dict)  # "tasks.get_all" -> count
    retries: int = 0
    errors: int = 0  # API requests that ended in an error (transport or envelope)
    logins: int = 0
    other_requests: int = 0  # file server requests and probes (not API calls)
    log: list[tuple[str, dict[str, Any], float, float]] | None = None
    # (endpoint, payload, t_start, t_end), times in seconds since the client was created (monotonic)


@dataclass
class _DateMark:
    server: datetime  # the Date header (second precision)
    mono: float  # time.monotonic() when it was received


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _to_int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _api_tuple(version: Any) -> tuple[int, int] | None:
    match = re.match(r"^\s*(\d+)\.(\d+)", str(version or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """exc, its causes/contexts and exception-group members (anyio groups multi-address failures)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(c for c in (current.__context__, current.__cause__) if c is not None)
        stack.extend(getattr(current, "exceptions", None) or ())


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}"


def _tls_problem(exc: BaseException, url: str) -> str | None:
    """The exact TLS failure named from the ssl exception in the chain, with what to do about it."""
    host = _host_port(url)
    for err in _exception_chain(exc):
        if isinstance(err, ssl.SSLCertVerificationError):
            detail = (err.verify_message or err.reason or str(err)).rstrip(".")
            hint = "trust the server's CA (verify: /path/to/ca-bundle.pem) or fix the server certificate"
            if "mismatch" in (detail or "").lower():
                hint = "use the host name the certificate was issued for, or reissue the certificate"
            elif "expired" in (detail or "").lower():
                hint = "renew the server certificate"
            return f"TLS certificate verify failed for {host}: {detail}; {hint}"
        if isinstance(err, ssl.SSLError):
            reason = err.reason or str(err)
            if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"):
                return f"TLS handshake with {host} failed ({reason}): the server does not speak TLS there; use http://"
            return f"TLS error with {host}: {reason}"
    return None


def _page_title(text: str) -> str | None:
    match = _TITLE_RE.search(text)
    if not match:
        return None
    title = " ".join(html.unescape(match.group(1)).split())
    return title[:120] or None


def _next_window(end: int, size: int, overlap: int) -> tuple[int, int]:
    """(page, page_size) for the next page: it starts at least `overlap` items before `end` (what was read so
    far) so that the items already seen there anchor it, and reaches as far past `end` as possible.

    The server computes offset = page * page_size, so a page_size is chosen that puts a page boundary
    slightly before `end` (e.g. end=500 -> page 1 of 490 = items 490..979).
    """
    if end <= overlap:
        return 0, size
    best_progress, best = 0, (0, size)
    for s in range(size, max(overlap, size // 2), -1):
        offset = ((end - overlap) // s) * s
        progress = offset + s - end
        if progress > best_progress:
            best_progress, best = progress, (offset // s, s)
    if best_progress > 0:
        return best
    # Practically unreachable: an aligned page that contains `end` (no overlap to check against).
    return end // size, size


def _sort_value(value: Any) -> tuple[int, Any]:
    # Rank by type so that mixed types never raise; ISO timestamps of one server sort as strings.
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True, default=str))


def _dotted(doc: dict[str, Any], path: str) -> Any:
    current: Any = doc
    for part in path.split("."):
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


def sort_like_server(docs: list[dict[str, Any]], order_by: list[str]) -> list[dict[str, Any]]:
    """Sort documents as the server's `order_by` would: `-` prefix descending, missing values last."""
    result = list(docs)
    for key in reversed(order_by):
        desc = key.startswith("-")
        name = key.lstrip("-+")
        present = [d for d in result if _dotted(d, name) is not None]
        missing = [d for d in result if _dotted(d, name) is None]
        present.sort(key=lambda d: _sort_value(_dotted(d, name)), reverse=desc)
        result = present + missing
    return result


def credential_key(server: ServerSettings) -> str:
    """Who is asking whom: API URL, TLS verification and the key pair, hashed (a key never holds a secret). Two
    configured names for the same server and keys are one identity; anything else never is."""
    access = server.access_key.get_secret_value() if server.access_key is not None else ""
    secret = server.secret_key.get_secret_value() if server.secret_key is not None else ""
    raw = "\x00".join((server.api_url.rstrip("/").lower(), str(server.verify), access, secret))
    return hashlib.sha256(raw.encode()).hexdigest()


class SharedLogins:
    """Tokens shared by the clients of one process that talk to one server with one key pair (as the SDK keeps one
    session per process): a command or run that opens a client of its own does not log in again while a token
    another client got is fresh. Thread-safe; tokens stay in memory only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, dict[str, Any]]] = {}

    def get(self, key: str) -> tuple[str, dict[str, Any]] | None:
        with self._lock:
            return self._tokens.get(key)

    def put(self, key: str, token: str, claims: dict[str, Any]) -> None:
        with self._lock:
            self._tokens[key] = (token, claims)

    def drop(self, key: str, token: str) -> None:
        """Forget `token` (the server refused it) unless another client already replaced it."""
        with self._lock:
            if self._tokens.get(key, ("",))[0] == token:
                del self._tokens[key]


class ClearMLClient:
    """Async client of one ClearML API server. Use `async with ClearMLClient(server) as client:`."""

    def _count(self) -> CallCounter:
        return self._counter if self._counter is not None else _default_counter

    def __init__(
        self,
        server: ServerSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        record_calls: bool = False,
        max_connections: int = 20,
        retry_base_s: float = 0.2,
        retry_budget_s: float = 2.5,
        page_overlap: int = 10,
        logins: SharedLogins | None = None,
        counter: CallCounter | None = None,
    ) -> None:
        self.server = server
        self._counter = counter  # None: the installed default, looked up at each call
        self._logins = logins
        self._login_key = credential_key(server) if logins is not None else ""
        self.stats = CallStats(log=[] if record_calls else None)
        self._api = server.api_url.rstrip("/")
        self._files = server.files_url.rstrip("/")
        self._retry_base_s = retry_base_s
        self._retry_budget_s = retry_budget_s  # no retry starts later than this after the first attempt
        self._page_overlap = max(1, page_overlap)
        self._t0 = time.monotonic()
        self._token: str | None = None
        self._claims: dict[str, Any] = {}
        self._login_generation = 0
        self._login_lock = asyncio.Lock()
        self._date: _DateMark | None = None
        self._now_cache: tuple[_DateMark, float, datetime] | None = None
        self._verify_error: str | None = None
        verify: bool | ssl.SSLContext = True
        if isinstance(server.verify, str):
            try:
                verify = ssl.create_default_context(
                    cafile=server.verify if not _is_dir(server.verify) else None,
                    capath=server.verify if _is_dir(server.verify) else None,
                )
            except (OSError, ssl.SSLError) as exc:
                # Reported on every request (reason "tls") rather than at construction, so that a check can
                # turn it into a finding.
                self._verify_error = f"the CA bundle {server.verify} (verify) could not be loaded: {exc}"
        else:
            verify = _shared_ssl_context(bool(server.verify))
        self._http = httpx.AsyncClient(
            transport=transport,
            verify=verify,
            timeout=httpx.Timeout(server.timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"X-ClearML-Client": USER_AGENT, "User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"ClearMLClient(server={self.server.name!r}, api_url={self._api!r})"

    async def __aenter__(self) -> ClearMLClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- what the login told us ---------------------------------------------------------------------
    @property
    def api_version(self) -> str | None:
        """The server's API version from the login JWT (e.g. "2.31"), None before login."""
        value = self._claims.get("api_version")
        return str(value) if value is not None else None

    @property
    def server_version(self) -> str | None:
        value = self._claims.get("server_version")
        return str(value) if value is not None else None

    @property
    def token_expires_at(self) -> datetime | None:
        exp = self._claims.get("exp")
        return datetime.fromtimestamp(float(exp), tz=UTC) if isinstance(exp, int | float) else None

    def supports_scroll(self) -> bool:
        version = _api_tuple(self.api_version)
        return version is not None and version >= SCROLL_MIN_API

    # -- clock ------------------------------------------------------------------------------------
    def server_time(self) -> datetime | None:
        """The server's clock: the latest response's Date header plus the local (monotonic) time since."""
        mark = self._date
        if mark is None:
            return None
        mono = time.monotonic()
        cached = self._now_cache
        # Checks ask for "now" once per worker, entry or task (tens of thousands of times in a fleet-wide run):
        # within a millisecond of the last answer, that answer is still right to the precision ages use.
        if cached is not None and cached[0] is mark and mono - cached[1] < 0.001:
            return cached[2]
        value = mark.server + timedelta(seconds=mono - mark.mono)
        self._now_cache = (mark, mono, value)
        return value

    def _note_date(self, response: httpx.Response) -> None:
        raw = response.headers.get("date")
        if not raw:
            return
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        self._date = _DateMark(when.astimezone(UTC), time.monotonic())

    def _now_epoch(self) -> float:
        server_now = self.server_time()
        return server_now.timestamp() if server_now is not None else time.time()

    # -- secrets ----------------------------------------------------------------------------------
    def _secrets(self) -> list[str]:
        secrets = self.server.secrets()
        if self._token:
            secrets.append(self._token)
        return secrets

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    # -- authentication ---------------------------------------------------------------------------
    def _token_fresh(self) -> bool:
        if not self._token:
            return False
        exp = self._claims.get("exp")
        if not isinstance(exp, int | float):
            return True  # no expiry we can read: keep it until the server says 401/30
        iat = self._claims.get("iat")
        margin = TOKEN_REFRESH_MARGIN_S
        if isinstance(iat, int | float) and exp > iat:
            margin = min(margin, (exp - iat) / 2)  # short-lived tokens must not force a login per call
        return float(exp) - self._now_epoch() > margin

    async def token(self) -> str:
        """The cached token; logs in first when there is none or less than 5 minutes are left."""
        if self._token_fresh():
            assert self._token is not None
            return self._token
        async with self._login_lock:
            # Whoever held the lock before us may have logged in already: concurrent callers share it.
            if self._token_fresh():
                assert self._token is not None
                return self._token
            if self._adopt_shared():
                assert self._token is not None
                return self._token
            return await self._login_locked()

    def _adopt_shared(self) -> bool:
        """Take the token another client of this process got for the same server and keys, if it is fresh."""
        shared = self._logins.get(self._login_key) if self._logins is not None else None
        if shared is None:
            return False
        mine = self._token, self._claims
        self._token, self._claims = shared
        if self._token_fresh():
            return True
        self._token, self._claims = mine
        return False

    async def login(self) -> str:
        """`auth.login` with Basic auth; returns the (cached) token. Callers that wait while another
        login is running get that login's token instead of logging in again."""
        generation = self._login_generation
        async with self._login_lock:
            if self._login_generation != generation and self._token:
                return self._token
            return await self._login_locked()

    async def _invalidate(self, token: str) -> None:
        async with self._login_lock:
            if self._token == token:
                self._token = None
            if self._logins is not None:
                self._logins.drop(self._login_key, token)

    async def _login_locked(self) -> str:
        access, secret = self.server.access_key, self.server.secret_key
        if access is None or secret is None or not access.get_secret_value() or not secret.get_secret_value():
            raise CredentialsError(
                "auth.login",
                0,
                0,
                f"no ClearML credentials configured for server `{self.server.name}`: set CLEARML_API_ACCESS_KEY"
                " and CLEARML_API_SECRET_KEY (or the config file's access_key_env/secret_key_env)",
            )
        basic = base64.b64encode(f"{access.get_secret_value()}:{secret.get_secret_value()}".encode()).decode()
        data = await self._with_retries(
            "auth.login",
            True,
            lambda: self._send("auth.login", {}, {"Authorization": f"Basic {basic}"}, None),
        )
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise ClearMLError("auth.login", 200, 0, "the server's auth.login answer has no token")
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            claims = {}  # not a JWT we can read: use it until the server rejects it
        self._token, self._claims = token, claims if isinstance(claims, dict) else {}
        if self._logins is not None:
            self._logins.put(self._login_key, self._token, self._claims)
        self._login_generation += 1
        self.stats.logins += 1
        log.debug("logged in to %s (api %s)", self.server.name, self.api_version)
        return token

    # -- API calls --------------------------------------------------------------------------------
    async def call(
        self,
        endpoint: str,
        payload: dict[str, Any] | list[dict[str, Any]] | None = None,
        *,
        auth: bool = True,
        read: bool | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """POST `{api}/{endpoint}` with a JSON body; the envelope's `data`, or a typed ClearMLError.

        Reads (inferred from the action name unless `read` is given) are retried on ServerUnavailableError
        with exponential backoff and jitter, within `retry_budget_s`; writes are never retried. A list payload is
        sent as newline-delimited JSON, the body batched endpoints (events.add_batch) take, as the SDK sends it.
        """
        body: dict[str, Any] | list[dict[str, Any]] = payload if payload is not None else {}
        is_read = is_read_endpoint(endpoint) if read is None else read
        if auth:
            # Logging in is idempotent and retried on its own, even when the call itself is a write.
            await self.token()

        async def attempt() -> dict[str, Any]:
            if not auth:
                return await self._send(endpoint, body, {}, timeout)
            token = await self.token()
            try:
                return await self._send(endpoint, body, {"Authorization": f"Bearer {token}"}, timeout)
            except InvalidTokenError:
                # 401/30: the token expired or was revoked. Log in again (once, shared) and retry once.
                await self._invalidate(token)
                token = await self.token()
                return await self._send(endpoint, body, {"Authorization": f"Bearer {token}"}, timeout)

        return await self._with_retries(endpoint, is_read, attempt)

    async def _with_retries(self, endpoint: str, is_read: bool, attempt: Callable[[], Awaitable[T]]) -> T:
        start = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except ServerUnavailableError as exc:
                retryable = exc.reason in _RETRYABLE_REASONS and not (
                    exc.reason == "not_json" and exc.code < 500  # an HTML 200/404 will not change
                )
                delay = min(2.0, self._retry_base_s * 2 ** (tries - 1)) * random.uniform(0.5, 1.0)
                in_budget = time.monotonic() - start + delay <= self._retry_budget_s
                if not (is_read and retryable and tries <= self.server.retries and in_budget):
                    if tries > 1:
                        exc.attempts = tries
                        exc.message = f"{exc.message} (after {tries} attempts)"
                        exc.args = (exc.describe(),)
                    raise
                self.stats.retries += 1
                self._count().clearml_retry(self.server.name)
                log.debug("%s: %s; retry %d in %.2f s", endpoint, exc.reason, tries, delay)
                await asyncio.sleep(delay)

    async def _send(
        self,
        endpoint: str,
        payload: dict[str, Any] | list[dict[str, Any]],
        headers: dict[str, str],
        timeout: float | None,
    ) -> dict[str, Any]:
        """One HTTP request to the API server, parsed into `data` or raised as a typed error."""
        if self._verify_error:
            self.stats.errors += 1
            raise ServerUnavailableError(endpoint, "tls", self._redact(self._verify_error))
        url = f"{self._api}/{endpoint}"
        if isinstance(payload, list):
            content = b"\n".join(json.dumps(item, default=_json_default).encode() for item in payload)
        else:
            content = json.dumps(payload, default=_json_default).encode()
        self.stats.calls += 1
        self.stats.by_endpoint[endpoint] = self.stats.by_endpoint.get(endpoint, 0) + 1
        self._count().clearml_call(self.server.name, endpoint)
        t_start = time.monotonic()
        try:
            response = await self._http.post(
                url,
                content=content,
                headers={"Content-Type": "application/json", **headers},
                timeout=httpx.Timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self.stats.errors += 1
            error = self._transport_error(endpoint, url, exc, timeout)
            self._count().clearml_error(self.server.name, error.reason)
            raise error from None
        finally:
            if self.stats.log is not None:
                logged = {"events": payload} if isinstance(payload, list) else json.loads(content)
                self.stats.log.append((endpoint, logged, t_start - self._t0, time.monotonic() - self._t0))
        self.stats.bytes_received += len(response.content)
        self._note_date(response)
        try:
            return self._parse(endpoint, response)
        except ClearMLError as exc:
            self.stats.errors += 1
            self._count().clearml_error(self.server.name, getattr(exc, "reason", None) or f"api_{exc.code}")
            raise

    def _parse(self, endpoint: str, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        try:
            body = _decode_json(response.content) if response.content else None
        except ValueError:
            body = None
        meta = body.get("meta") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(meta, dict):
            raise self._not_json(endpoint, response, is_json=body is not None)
        code = _to_int(meta.get("result_code"), status) or status
        subcode = _to_int(meta.get("result_subcode"))
        if 200 <= code < 300 and status < 300:
            data = body.get("data")
            return data if isinstance(data, dict) else {}
        if code < 400:
            code = status if status >= 400 else 500
        # result_msg only: on 500/0 error_stack holds a server traceback, which is noise (and may leak).
        message = str(meta.get("result_msg") or "").strip()
        message = message.splitlines()[0][:500] if message else f"HTTP {status}"
        raise error_from_envelope(endpoint, code, subcode, self._redact(message))

    def _not_json(self, endpoint: str, response: httpx.Response, *, is_json: bool) -> ServerUnavailableError:
        status = response.status_code
        host = _host_port(str(response.request.url))
        ctype = response.headers.get("content-type", "no content type").split(";")[0]
        if 300 <= status < 400 and response.headers.get("location"):
            message = (
                f"HTTP {status} from {host}: redirected to {response.headers['location']}; "
                "configure the API host as that URL"
            )
        elif not response.content:
            message = f"HTTP {status} from {host} with an empty body instead of a ClearML API response"
        elif is_json:
            message = f"HTTP {status} from {host}: JSON without the ClearML `meta` envelope (not a ClearML API server?)"
        else:
            title = _page_title(response.text)
            page = f', page title "{title}"' if title else ""
            message = (
                f"HTTP {status} from {host}: not a ClearML API response ({ctype}{page}); "
                "a proxy or web server answered instead of the API server"
            )
        return ServerUnavailableError(endpoint, "not_json", self._redact(message), code=status)

    def _transport_error(
        self, endpoint: str, url: str, exc: httpx.HTTPError | httpx.InvalidURL, timeout: float | None
    ) -> ServerUnavailableError:
        host = _host_port(url)
        reason, message = "network", f"network error talking to {host}: {exc or type(exc).__name__}"
        tls = _tls_problem(exc, url)
        chain = list(_exception_chain(exc))
        if isinstance(exc, httpx.TimeoutException):
            kind = type(exc).__name__.replace("Timeout", "").lower() or "request"
            limit = timeout if timeout is not None else self.server.timeout_s
            reason, message = "timeout", f"no answer from {host} within {limit:g} s ({kind} timeout)"
        elif tls:
            reason, message = "tls", tls
        elif any(isinstance(e, socket.gaierror) for e in chain):
            reason = "dns"
            message = f"cannot resolve host {urlsplit(url).hostname}: check the API host name"
        elif any(isinstance(e, ConnectionRefusedError) for e in chain):
            reason, message = "refused", f"connection refused by {host}: is the ClearML API server running there?"
        elif isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            message = f"invalid URL {url}: {exc}"
        elif isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            message = f"{host} closed the connection without an HTTP answer ({exc or type(exc).__name__})"
        return ServerUnavailableError(endpoint, reason, self._redact(message))

    # -- paging -----------------------------------------------------------------------------------
    async def get_all(
        self,
        endpoint: str,
        payload: dict[str, Any],
        *,
        key: str,
        page_size: int = MAX_PAGE_SIZE,
        max_items: int | None = None,
        strategy: Literal["page", "scroll"] = "page",
    ) -> list[dict[str, Any]]:
        """Every item of a get_all endpoint (list under `key`), de-duplicated by id, never capped at 500.

        strategy "page" (default): page/page_size windows that overlap the previous one by a few items; the
        overlap must contain an item already seen (the anchor), else items moved up between requests and
        the client steps back, so an item leaving the filtered set cannot push an unseen one past the
        window boundary. When everything is requested the server is asked for id order (immutable: a task
        changing status does not move) and the caller's `order_by` is applied locally.
        strategy "scroll": scroll_id/size (API >= 2.15; else falls back to pages). On clearml-server a scroll
        is a stored offset (GetManyScrollState.position), so it has the same shifting risks without the
        overlap check; de-duplication still applies.
        """
        page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        base = {k: v for k, v in payload.items() if k not in ("page", "page_size", "scroll_id", "size")}
        if strategy == "scroll" and (self.api_version is None or self.supports_scroll()):
            items = await self._scroll(endpoint, base, key, page_size, max_items)
            if items is not None:
                return items
        return await self._pages(endpoint, base, key, page_size, max_items)

    async def _scroll(
        self, endpoint: str, base: dict[str, Any], key: str, size: int, max_items: int | None
    ) -> list[dict[str, Any]] | None:
        seen: dict[str, dict[str, Any]] = {}
        anonymous: list[dict[str, Any]] = []
        scroll_id = ""
        while True:
            data = await self.call(endpoint, {**base, "scroll_id": scroll_id, "size": size}, read=True)
            if not scroll_id and "scroll_id" not in data:
                return None  # the server ignored scroll: page instead
            docs = [d for d in data.get(key) or [] if isinstance(d, dict)]
            for doc in docs:
                doc_id = doc.get("id")
                if isinstance(doc_id, str):
                    seen[doc_id] = doc  # a later sighting is fresher
                else:
                    anonymous.append(doc)
            scroll_id = str(data.get("scroll_id") or "")
            done = len(docs) < size or not scroll_id
            if done or (max_items is not None and len(seen) + len(anonymous) >= max_items):
                items = list(seen.values()) + anonymous
                return items[:max_items] if max_items is not None else items

    async def _pages(
        self, endpoint: str, base: dict[str, Any], key: str, size: int, max_items: int | None
    ) -> list[dict[str, Any]]:
        order_by = base.get("order_by")
        order = [order_by] if isinstance(order_by, str) else list(order_by or [])
        local_order: list[str] | None = None
        if max_items is None and not base.get("search_text") and not any(str(o).startswith("@") for o in order):
            # Everything is wanted: page in id order (immutable) and restore the requested order locally.
            local_order = [str(o) for o in order] or None
            base["order_by"] = ["id"]
            if local_order and _inclusive(base.get("only_fields")):
                wanted = [o.lstrip("-+") for o in local_order]
                base["only_fields"] = [*base["only_fields"], *(f for f in wanted if f not in base["only_fields"])]
        elif not any(str(o).lstrip("-+") == "id" for o in order):
            base["order_by"] = [*order, "id"]  # a unique tiebreak keeps page boundaries stable
        if _inclusive(base.get("only_fields")) and "id" not in base["only_fields"]:
            base["only_fields"] = [*base["only_fields"], "id"]  # de-duplication and anchoring need ids

        if max_items is not None and max_items <= size:
            data = await self.call(endpoint, {**base, "page": 0, "page_size": max_items}, read=True)
            return _dedupe([d for d in data.get(key) or [] if isinstance(d, dict)])[:max_items]

        seen: dict[str, dict[str, Any]] = {}
        anonymous: list[dict[str, Any]] = []
        overlap = max(1, min(self._page_overlap, size // 4))
        end = 0  # items read so far, as an offset into the server's current ordering
        step_backs = 0  # for the current window
        step_back_budget = 20  # for the whole listing: a server that keeps shifting cannot loop us forever
        idle_pages = 0
        while True:
            page, page_len = _next_window(end, size, overlap)
            offset = page * page_len
            data = await self.call(endpoint, {**base, "page": page, "page_size": page_len}, read=True)
            docs = [d for d in data.get(key) or [] if isinstance(d, dict)]
            if len(docs) > page_len:
                # The endpoint ignores paging and returned everything at once.
                return _finish(_dedupe(docs), local_order, max_items)
            anchored = not seen or any(d.get("id") in seen for d in docs)
            if offset > 0 and not anchored and step_backs < 3 and step_back_budget > 0:
                # No known item in the overlap: items before it left the result set meanwhile and unseen
                # ones moved into territory already read. Step back a page to pick them up.
                step_backs += 1
                step_back_budget -= 1
                end = max(0, offset - size)
                log.debug("%s: page %d lost its anchor; stepping back to %d", endpoint, page, end)
                continue
            step_backs = 0
            new = 0
            for doc in docs:
                doc_id = doc.get("id")
                if not isinstance(doc_id, str):
                    anonymous.append(doc)
                    new += 1
                    continue
                if doc_id not in seen:
                    new += 1
                seen[doc_id] = doc  # same position, fresher content
            end = offset + len(docs)
            if len(docs) < page_len:
                break
            if max_items is not None and len(seen) + len(anonymous) >= max_items:
                break
            idle_pages = idle_pages + 1 if new == 0 else 0
            if idle_pages >= 3:
                log.warning("%s: three full pages without a new item; stopping paging", endpoint)
                break
        return _finish(list(seen.values()) + anonymous, local_order, max_items)

    # -- files and probes -------------------------------------------------------------------------
    async def fileserver(
        self,
        method: str,
        path_or_url: str,
        *,
        content: bytes | None = None,
        files: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """A request to the file server with `Authorization: Bearer <token>`. The token is only sent to
        URLs under the configured files_url (like the SDK), never to another host. Any HTTP status is
        returned as is; transport failures raise ServerUnavailableError (GET/HEAD are retried)."""
        if re.match(r"^[a-z][a-z0-9+.-]*://", path_or_url, re.IGNORECASE):
            url = path_or_url
        else:
            url = f"{self._files}/{path_or_url.lstrip('/')}"
        headers: dict[str, str] = {}
        if self.server.has_credentials and (url == self._files or url.startswith(self._files + "/")):
            headers["Authorization"] = f"Bearer {await self.token()}"
        verb = method.upper()

        async def attempt() -> httpx.Response:
            return await self._plain(
                "fileserver", verb, url, headers=headers, content=content, files=files, timeout=timeout
            )

        return await self._with_retries("fileserver", verb in ("GET", "HEAD"), attempt)

    async def probe(self, url: str, *, timeout: float | None = None) -> httpx.Response:
        """A plain GET (no credentials, redirects followed) of any host, for health checks; honours verify.
        Transport failures raise ServerUnavailableError with the same reasons as API calls."""
        return await self._plain("probe", "GET", url, timeout=timeout, follow_redirects=True)

    async def _plain(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        files: dict[str, Any] | None = None,
        timeout: float | None = None,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        if self._verify_error and url.lower().startswith("https:"):
            raise ServerUnavailableError(endpoint, "tls", self._redact(self._verify_error))
        self.stats.other_requests += 1
        try:
            response = await self._http.request(
                method,
                url,
                headers=headers,
                content=content,
                files=files,
                timeout=httpx.Timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                follow_redirects=follow_redirects,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._transport_error(endpoint, url, exc, timeout) from None
        self.stats.bytes_received += len(response.content)
        return response


# Bodies at least this large are decoded with the cyclic GC paused (see _decode_json).
_GC_PAUSE_BYTES = 64 * 1024


def _decode_json(content: bytes) -> Any:
    """json.loads; large bodies with the cyclic garbage collector paused. Decoding a 2 MB worker list allocates
    ~100k containers, which triggers a hundred or more collections (gen1/gen2 ones walk the whole heap) that cannot
    find anything: decoded JSON holds no reference cycles. Measured: ~15% of a fleet-wide health run's CPU."""
    if len(content) < _GC_PAUSE_BYTES or not gc.isenabled():
        return json.loads(content)
    gc.disable()
    try:
        return json.loads(content)
    finally:
        gc.enable()


_SSL_CONTEXTS: dict[bool, ssl.SSLContext] = {}


def _shared_ssl_context(verify: bool) -> ssl.SSLContext:
    """httpx's own default context (certifi's CAs, or SSL_CERT_FILE/SSL_CERT_DIR), built once per process: loading
    the CA bundle costs ~40 ms of CPU, which every run (one client each) paid again even for http:// servers."""
    context = _SSL_CONTEXTS.get(verify)
    if context is None:
        context = _SSL_CONTEXTS.setdefault(verify, httpx.create_ssl_context(verify=verify))
    return context


def _is_dir(path: str) -> bool:
    return os.path.isdir(os.path.expanduser(path))


def _inclusive(fields: Any) -> bool:
    """An only_fields list of inclusions (adding a field to an exclusion list would change its meaning)."""
    return isinstance(fields, list) and bool(fields) and not any(str(f).startswith("-") for f in fields)


def _dedupe(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    anonymous: list[dict[str, Any]] = []
    for doc in docs:
        doc_id = doc.get("id")
        if isinstance(doc_id, str):
            seen[doc_id] = doc
        else:
            anonymous.append(doc)
    return list(seen.values()) + anonymous


def _finish(docs: list[dict[str, Any]], local_order: list[str] | None, max_items: int | None) -> list[dict[str, Any]]:
    if local_order:
        docs = sort_like_server(docs, [*local_order, "id"])
    return docs[:max_items] if max_items is not None else docs
