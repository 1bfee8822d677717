"""Helpers shared by tests (others may add theirs here)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from bot.config import ServerSettings


def server_settings(sim: Any, **overrides: Any) -> ServerSettings:
    """ServerSettings pointing at a running SimServer, with its first key pair (name "sim")."""
    key, secret = sim.keys[0]
    values: dict[str, Any] = {
        "name": "sim",
        "api_url": sim.api_url,
        "web_url": sim.web_url,
        "files_url": sim.files_url,
        "access_key": SecretStr(key),
        "secret_key": SecretStr(secret),
    }
    values.update(overrides)
    return ServerSettings(**values)


def sim_request(
    sim: Any,
    endpoint: str,
    payload: dict[str, Any] | None = None,
    *,
    auth: str | tuple[str, str] | None = "token",
    method: str = "POST",
    version: str | None = None,
    headers: dict[str, str] | None = None,
    query: str = "",
    timeout: float = 10.0,
) -> httpx.Response:
    """One raw HTTP request to a SimServer's API. `auth`: "token" (a fresh valid JWT), a (key, secret) pair
    for Basic auth, or None for no Authorization header."""
    sent = dict(headers or {})
    if auth == "token":
        sent["Authorization"] = f"Bearer {sim.issue_token()}"
    elif isinstance(auth, tuple):
        sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    path = f"/v{version}/{endpoint}" if version else f"/{endpoint}"
    url = sim.api_url + path + (f"?{query}" if query else "")
    body = json.dumps(payload).encode() if payload is not None else b""
    return httpx.request(method, url, content=body, headers=sent, timeout=timeout)


def sim_data(sim: Any, endpoint: str, payload: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    """The `data` of a successful API call (asserts HTTP 200)."""
    resp = sim_request(sim, endpoint, payload, **kw)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


class AfterFirstTasksPage(httpx.AsyncHTTPTransport):
    """A real HTTP transport that runs `hook` once, right after the first tasks.get_all answer: a way to change
    the server's state between two pages of a listing."""

    def __init__(self, hook: Callable[[], None]) -> None:
        super().__init__()
        self.hook: Callable[[], None] | None = hook

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if self.hook is not None and request.url.path.endswith("/tasks.get_all"):
            hook, self.hook = self.hook, None
            hook()
        return response
