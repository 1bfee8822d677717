"""Helpers shared by tests (others may add theirs here)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from bot.config import ServerSettings

if TYPE_CHECKING:
    from bot.slack.services import BotServices
    from tests.e2e.conftest import HttpBot
    from tests.fakes.slack_history import HistoryFakeSlack


# The fleet checks as a playbook's `checks:` section (appended to a playbook's name/description/schedule).
FLEET_CHECKS_YAML = """\
checks:
  - check: agents.stale
  - check: agents.orphaned_tasks
  - check: agents.unserved_queues
  - check: queues.backlog
  - check: queues.stuck_queued
"""


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


def cityscapes_datasets() -> list[dict[str, Any]]:
    """Two versions of a simulated dataset, the newer one with a corrupt file (for the integrity check's scenarios)."""
    return [
        {"name": "cityscapes-seg", "project": "perception", "version": "1.1.0", "status": "completed",
         "last_update": "-10d", "files": [{"path": "leftImg8bit/aachen.png", "size": 2500, "seed": 10}]},
        {"name": "cityscapes-seg", "project": "perception", "version": "1.2.0", "status": "completed",
         "last_update": "-2d", "parents": ["cityscapes-seg@1.1.0"], "chunk_size": 4096,
         "files": [{"path": "leftImg8bit/bochum.png", "size": 2500, "seed": 11},
                   {"path": "gtFine/bochum_labelIds.png", "content": "labels-v2"}],
         "faults": {"corrupt_file": "gtFine/bochum_labelIds.png"}},
    ]


def services(bot: HttpBot) -> BotServices:
    """The running bot's services (store, outbox, incidents, ...)."""
    from bot.slack.app import services_of

    return services_of(bot.server.app)  # type: ignore[arg-type]


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy (that value), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


@contextmanager
def alerts_slack(channel_id: str) -> Iterator[HistoryFakeSlack]:
    """A fake Slack with a #ml-alerts channel (id `channel_id`); on leaving, asserts that every Web API method the
    bot called is in the scope table the manifest is checked against."""
    from bot.slack.client import METHOD_SCOPES
    from tests.fakes.slack_history import HistoryFakeSlack

    with HistoryFakeSlack() as fake:
        fake.add_channel("ml-alerts", channel_id=channel_id)
        yield fake
    assert fake.web_api_methods() <= set(METHOD_SCOPES), fake.web_api_methods() - set(METHOD_SCOPES)


def block_actions_body(
    action_id: str,
    value: str,
    *,
    user: str,
    channel: str,
    message_ts: str,
    block_id: str,
    blocks: list[dict[str, Any]],
    response_url: str,
    message_text: str = "a message with buttons",
    thread_ts: str | None = None,
    state: dict[str, Any] | None = None,
    action_ts: str | None = None,
) -> dict[str, Any]:
    """A `block_actions` payload as Slack sends it when `user` clicks button `action_id` (value `value`) of the
    channel message `message_ts`, whose blocks (`blocks`, the clicked message's as Slack sends them) hold it."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower()[2:], "team_id": "T0FAKETEAM"},
        "api_app_id": "A0FAKE",
        "team": {"id": "T0FAKETEAM"},
        "channel": {"id": channel},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "message": {"ts": message_ts, "text": message_text, "blocks": blocks,
                    **({"thread_ts": thread_ts} if thread_ts else {})},
        "state": {"values": state or {}},
        "response_url": response_url,
        "trigger_id": "1.2.3",
        "actions": [{"type": "button", "action_id": action_id, "block_id": block_id, "value": value,
                     "action_ts": action_ts or str(time.time())}],
    }
