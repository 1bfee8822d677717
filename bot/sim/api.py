"""Request processing of the simulated API server, independent of the HTTP transport.

`ApiApp.handle()` takes a method, path, query string, headers and body and returns (status, headers, body),
doing what clearml-server's service_repo does: parse `/v<MAJOR.MINOR>/<service>.<action>`, pick the endpoint
implementation for the requested version, merge query-string arguments into the JSON body, authenticate
(Basic on any endpoint, Bearer JWT from auth.login, or the browser cookie), run the handler and wrap the
result in the meta/data envelope. Configured faults (failing endpoints, HTML proxy pages, rejected logins)
are applied here too.
"""

from __future__ import annotations

import base64
import binascii
import copy
import fnmatch
import json
import re
import traceback as tb
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import formatdate
from typing import Any

import jwt

from bot.sim.errors import ApiError
from bot.sim.state import SimState

MAX_RECORDED_CALLS = 200_000
_PATH = re.compile(r"^/?(v(?P<version>\d+\.?\d+)/)?(?P<name>[a-zA-Z_]\w+\.[a-zA-Z_]\w+)/?$")
_INVALID_CREDENTIALS = "Unauthorized (invalid credentials) (failed to locate provided credentials)"


def version_tuple(version: str) -> tuple[int, ...]:
    parts = version.split(".")
    return tuple(int(p) for p in parts if p.isdigit()) or (0,)


@dataclass(frozen=True)
class Identity:
    user: str
    company: str
    role: str
    user_name: str
    company_name: str

    def as_dict(self) -> dict[str, str]:
        return {
            "user": self.user,
            "company": self.company,
            "role": self.role,
            "user_name": self.user_name,
            "company_name": self.company_name,
        }


@dataclass
class Call:
    """One API call as handlers see it."""

    app: ApiApp
    state: SimState
    name: str
    data: dict[str, Any]
    requested_version: str
    identity: Identity | None
    client_ip: str
    worker_header: str | None = None
    batched: list[Any] | None = None
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def user(self) -> str:
        return self.identity.user if self.identity else ""

    @property
    def company(self) -> str:
        return self.state.company["id"]

    def now(self) -> datetime:
        return self.state.clock.now_ms()


Handler = Callable[[Call], dict[str, Any] | None]


@dataclass
class Endpoint:
    name: str
    versions: tuple[str, ...]  # minimal versions of the implementations, ascending
    handler: Handler
    auth: bool = True
    batched: bool = False


REGISTRY: dict[str, Endpoint] = {}


def endpoint(
    name: str, versions: tuple[str, ...] = ("1.0",), *, auth: bool = True, batched: bool = False
) -> Callable[[Handler], Handler]:
    """Register a handler; `versions` are the min_version of each server implementation (for actual_version)."""

    def register(func: Handler) -> Handler:
        REGISTRY[name] = Endpoint(name, versions, func, auth, batched)
        return func

    return register


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d*", value):
        return float(value)
    return value


def merge_query(data: dict[str, Any], query: str) -> dict[str, Any]:
    """Query-string arguments merged into the body: numbers/booleans coerced, `a.b=1` nested, repeats listed."""
    if not query:
        return data
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        value: Any = [_coerce(v) for v in values] if len(values) > 1 else _coerce(values[0])
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                target[part] = nxt
            target = nxt
        target[parts[-1]] = value
    return data


def fake_traceback(endpoint_name: str, message: str) -> str:
    """A Python traceback shaped like the one clearml-server returns in error_stack on 500/0."""
    service, _, action = endpoint_name.partition(".")
    return (
        "Traceback (most recent call last):\n"
        '  File "/opt/clearml/apiserver/service_repo/service_repo.py", line 288, in handle_call\n'
        "    ret = endpoint.func(call, company, call.data_model)\n"
        f'  File "/opt/clearml/apiserver/services/{service}.py", line 412, in {action}\n'
        f"    res = {service}_bll.{action}(company_id, call.data)\n"
        '  File "/opt/clearml/apiserver/database/errors.py", line 94, in translate_errors_context\n'
        "    raise errors.server_error.GeneralError(str(ex))\n"
        f"RuntimeError: {message}\n"
    )


def html_error_page(status: int) -> bytes:
    """The body an nginx/ELB-style proxy returns when the API server behind it is down."""
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Temporarily Unavailable",
              504: "Gateway Time-out"}.get(status, "Error")
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


class ApiApp:
    """The API server's request pipeline over a SimState."""

    def __init__(self, state: SimState, secret: str | None = None) -> None:
        self.state = state
        self.secret = secret or uuid.uuid4().hex
        # Bounded, so a simulator serving a long benchmark or demo does not grow without end.
        self.calls: deque[tuple[str, dict[str, Any]]] = deque(maxlen=MAX_RECORDED_CALLS)
        self.requests: deque[tuple[str, str]] = deque(maxlen=MAX_RECORDED_CALLS)  # (HTTP method, path)
        # Endpoint modules register themselves on import.
        from bot.sim import ep_misc, ep_queues, ep_tasks, ep_workers, ep_write  # noqa: F401

    # ------------------------------------------------------------------ tokens
    def issue_token(self, identity: Identity, expiration_sec: int | None = None) -> str:
        faults = self.state.faults
        ttl = int(expiration_sec) if expiration_sec else int(faults.token_ttl_s)
        ttl = min(ttl, 31536000)
        now = int(self.state.clock.time())
        payload = {
            "identity": identity.as_dict(),
            "iat": now,
            "exp": now + ttl,
            "session_id": uuid.uuid4().hex,
            "entities": {},
            "env": "sim",
            "api_version": self.state.server["api_version"],
            "server_version": self.state.server["version"],
            "server_build": self.state.server.get("build", ""),
            "feature_set": "basic",
        }
        return jwt.encode(payload, self.secret, algorithm="HS256")

    def identity_from_token(self, token: str) -> Identity:
        """Validate a JWT issued by this simulator; 401/30 with pyjwt's reason otherwise."""
        try:
            payload = jwt.decode(
                token, self.secret, algorithms=["HS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
            exp = payload.get("exp")
            if exp is not None and float(exp) <= self.state.clock.time():
                raise jwt.ExpiredSignatureError("Signature has expired")
        except jwt.InvalidTokenError as exc:
            raise ApiError(401, 30, "invalid jwt token", reason=str(exc.args[0]) if exc.args else "") from None
        ident = payload.get("identity") or {}
        if not ident.get("user"):
            raise ApiError(401, 30, "token missing identity")
        return Identity(
            user=ident.get("user", ""),
            company=ident.get("company", ""),
            role=ident.get("role", "user"),
            user_name=ident.get("user_name", ""),
            company_name=ident.get("company_name", ""),
        )

    def identity_from_basic(self, auth_data: str) -> Identity:
        try:
            decoded = base64.b64decode(auth_data.encode()).decode("latin-1")
        except (binascii.Error, ValueError) as exc:
            raise ApiError(401, 21, str(exc)) from None
        key, _, secret = decoded.partition(":")
        cred = self.state.credentials.get(key)
        if cred is None or cred.secret != secret:
            raise ApiError(401, 22, replacement=_INVALID_CREDENTIALS)
        return self.identity_for_user(cred.user)

    def identity_for_user(self, user_id: str) -> Identity:
        user = self.state.users.get(user_id) or {"name": user_id, "role": "user"}
        return Identity(
            user=user_id,
            company=self.state.company["id"],
            role=user.get("role", "user"),
            user_name=user.get("name", user_id),
            company_name=self.state.company["name"],
        )

    def authenticate(self, headers: dict[str, str], cookies: dict[str, str]) -> Identity:
        auth = headers.get("authorization", "")
        if not auth:
            token = cookies.get("clearml_token_basic")
            if token:
                return self.identity_from_token(token)
            raise ApiError(401, 20)
        auth_type, _, auth_data = auth.strip().partition(" ")
        if auth_type == "Bearer":
            return self.identity_from_token(auth_data.strip())
        if auth_type == "Basic":
            return self.identity_from_basic(auth_data.strip())
        raise ApiError(401, 10)

    # ------------------------------------------------------------------ pipeline
    def handle(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        client_ip: str = "127.0.0.1",
    ) -> Response:
        """Process one request. `headers` keys must be lower-case."""
        self.requests.append((method, path))
        call_id = uuid.uuid4().hex
        trx = headers.get("x-clearml-trx") or headers.get("x-trains-trx") or call_id
        match = _PATH.match(path)
        if not match:
            return self._envelope(call_id, trx, None, None, None, 400, 0, f"Invalid request path {path}", {},
                                  error=True)
        name = match.group("name")
        # unversioned calls get the server's newest API version, as clearml-server answers them
        requested = match.group("version") or str(self.state.server["api_version"])
        req_tuple = version_tuple(requested)
        ep = REGISTRY.get(name)
        actual = None
        if ep is not None:
            for v in ep.versions:
                if version_tuple(v) <= req_tuple:
                    actual = v
        if ep is None or actual is None:
            self.calls.append((name, {}))
            return self._envelope(
                call_id, trx, name, requested, None, 404, 0,
                f"Unable to find endpoint for name {name} and version {requested}", {}, error=True,
            )
        cookies = _parse_cookies(headers.get("cookie", ""))
        data: dict[str, Any] = {}
        batched: list[Any] | None = None
        try:
            if headers.get("content-encoding"):
                raise ApiError(415, 0, replacement=f"Content encoding is not supported ({headers['content-encoding']})")
            if ep.batched:
                batched = _parse_batch(body)
            elif body.strip():
                try:
                    parsed = json.loads(body)
                except ValueError as exc:
                    raise ApiError(400, 0, replacement=f"Failed to decode JSON object: {exc}") from None
                if parsed is None:
                    parsed = {}
                if not isinstance(parsed, dict):
                    raise ApiError(400, 12, "request body must be a JSON object")
                data = parsed
            data = merge_query(data, query)
        except ApiError as exc:
            self.calls.append((name, data))
            return self._error(call_id, trx, name, requested, actual, exc)
        # A copy: handlers may normalize call.data in place.
        self.calls.append((name, copy.deepcopy(data) if batched is None else {"events": batched}))

        fault_response = self._apply_fault(call_id, trx, name, requested, actual)
        if fault_response is not None:
            return fault_response

        with self.state.lock:
            self.state.run_watchdog()  # the server's periodic watchdog, caught up before the request is served
            try:
                identity: Identity | None = None
                if ep.auth:
                    identity = self.authenticate(headers, cookies)
                elif headers.get("authorization"):
                    try:
                        identity = self.authenticate(headers, cookies)
                    except ApiError:
                        identity = None
                call = Call(
                    app=self, state=self.state, name=name, data=data, requested_version=requested,
                    identity=identity, client_ip=headers.get("x-real-ip") or client_ip,
                    worker_header=headers.get("x-clearml-worker") or headers.get("x-trains-worker"),
                    batched=batched, cookies=cookies,
                )
                result = ep.handler(call)
                extra_headers: dict[str, str] = {}
                if name == "auth.login" and isinstance(result, dict) and result.get("token"):
                    extra_headers["Set-Cookie"] = f"clearml_token_basic={result['token']}; Path=/"
                response = self._envelope(call_id, trx, name, requested, actual, 200, 0, "OK", result or {})
                response.headers.update(extra_headers)
                return response
            except ApiError as exc:
                return self._error(call_id, trx, name, requested, actual, exc)
            except Exception as exc:  # a simulator bug: answer like the server does on an unexpected error
                return self._envelope(
                    call_id, trx, name, requested, actual, 500, 0, f"General server error ({exc})", {},
                    error=True, error_stack=tb.format_exc(),
                )

    def _apply_fault(self, call_id: str, trx: str, name: str, requested: str, actual: str) -> Response | None:
        faults = self.state.faults
        if name == "auth.login" and faults.reject_logins:
            return self._error(call_id, trx, name, requested, actual,
                               ApiError(401, 22, replacement=_INVALID_CREDENTIALS))
        with self.state.lock:
            fault = faults.endpoints.get(name)
            if fault is None:
                for pattern, candidate in faults.endpoints.items():
                    if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(name, pattern):
                        fault = candidate
                        break
            if fault is None:
                return None
            if fault.times is not None:
                if fault.times <= 0:
                    return None
                fault.times -= 1
        status = fault.status
        if fault.html:
            return Response(status, html_error_page(status), "text/html", {"Server": "nginx/1.25.3"})
        exc = ApiError(status, fault.subcode, replacement=fault.message) if fault.message else ApiError(
            status, fault.subcode)
        stack = fake_traceback(name, exc.message) if fault.traceback else None
        return self._envelope(call_id, trx, name, requested, actual, status, fault.subcode, exc.message, {},
                              error=True, error_stack=stack)

    def _error(self, call_id: str, trx: str, name: str, requested: str, actual: str | None,
               exc: ApiError) -> Response:
        return self._envelope(call_id, trx, name, requested, actual, exc.code, exc.subcode, exc.message, {},
                              error=True, error_stack=exc.error_stack)

    def _envelope(
        self,
        call_id: str,
        trx: str,
        name: str | None,
        requested: str | None,
        actual: str | None,
        code: int,
        subcode: int,
        msg: str,
        data: dict[str, Any],
        *,
        error: bool = False,
        error_stack: str | None = None,
    ) -> Response:
        meta = {
            "id": call_id,
            "trx": trx,
            "endpoint": {"name": name, "requested_version": requested, "actual_version": actual},
            "result_code": code,
            "result_subcode": subcode,
            "result_msg": msg,
            "error_stack": error_stack if error else "",
            "error_data": {},
        }
        return Response(code, dumps({"meta": meta, "data": data}))

    def http_date(self) -> str:
        """The Date header follows the simulated clock, so age checks based on it agree with the data."""
        return formatdate(self.state.clock.time(), usegmt=True)


def _parse_cookies(raw: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in raw.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            cookies[key] = value
    return cookies


def _parse_batch(body: bytes) -> list[Any]:
    """events.add_batch bodies: newline-delimited JSON objects (a JSON array is accepted too)."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise ApiError(400, 0, replacement=f"Failed to decode JSON object: {exc}") from None
        return items if isinstance(items, list) else [items]
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise ApiError(400, 0, replacement=f"Failed to decode JSON object: {exc}") from None
    return out
