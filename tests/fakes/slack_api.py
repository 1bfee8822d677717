"""A fake Slack on loopback: the Web API, `response_url` endpoints, and a Socket Mode websocket server.

It records every call, answers the methods the bot uses the way Slack does (channel membership, fresh `ts`, error
codes), validates message payloads against Block Kit's limits (a violation is recorded and answered with
`invalid_blocks`, so a test that renders an oversized message fails loudly), and can be told to misbehave:
429 with Retry-After, 500, or any Slack error (`not_in_channel`, `channel_not_found`, `invalid_auth`, ...).

    with FakeSlack() as slack:
        client = WebClient(token=slack.bot_token, base_url=slack.base_url)
        slack.add_channel("ml-alerts", private=True, member=False)
        slack.fail("chat.postMessage", status=429, retry_after=1, times=2)
        ...
        posts = slack.wait_for("chat.postMessage", count=1)

Socket Mode: `slack.start_socket_mode()` makes `apps.connections.open` answer a `ws://127.0.0.1:PORT/...` URL served
here; `push_envelope(...)` sends an envelope to the connected client and `wait_ack(envelope_id)` returns its ack.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BOT_TOKEN = "xoxb-fake-0000000000-0000000000000-FAKEBOTTOKEN000000000000"
APP_TOKEN = "xapp-1-A0FAKE-0000000000000-FAKEAPPTOKEN00000000000000000000000000000000"
BOT_USER_ID = "U0FAKEBOT"
TEAM_ID = "T0FAKETEAM"
# the workspace's own domain: auth.test's `url`, and the base of every chat.getPermalink answer
WORKSPACE_URL = "https://fake.slack.test/"
# methods whose arguments Slack reads from the query string or a form body only (a JSON body is ignored)
FORM_ONLY_METHODS = frozenset({"chat.getPermalink"})

# Block Kit limits checked here (see the Block Kit reference; slack_sdk checks most of these too, but raw dicts and
# the block count are not checked on the client side).
LIMITS = {
    "blocks": 50,
    "section_text": 3000,
    "section_fields": 10,
    "field_text": 2000,
    "header_text": 150,
    "context_elements": 10,
    "actions_elements": 25,
    "button_text": 75,
    "button_value": 2000,
    "button_url": 3000,
    "action_id": 255,
    "block_id": 255,
    "confirm_title": 100,
    "confirm_text": 300,
    "confirm_button": 30,
    "markdown_text": 12000,
    "message_text": 11000,
}
KNOWN_BLOCKS = {"section", "header", "context", "divider", "actions", "image", "input", "rich_text", "markdown"}


def validate_view(view: Any) -> list[str]:
    """Problems with a `views.publish` view (a Home tab), as Slack would see them ([] when fine)."""
    if isinstance(view, str):
        try:
            view = json.loads(view)
        except ValueError:
            return ["view is not valid JSON"]
    if not isinstance(view, dict):
        return ["view is not an object"]
    problems = [] if view.get("type") == "home" else [f"view type {view.get('type')!r} is not 'home'"]
    if len(str(view.get("private_metadata") or "")) > 3000:
        problems.append("private_metadata > 3000")
    # a view has no top-level text; its blocks are checked like a message's, with the Home tab's 100-block limit
    return problems + validate_message({"text": "-", "blocks": view.get("blocks") or []}, max_blocks=100,
                                       max_text=None)


def validate_message(payload: dict[str, Any], *, max_blocks: int = LIMITS["blocks"],
                     max_text: int | None = LIMITS["message_text"]) -> list[str]:
    """Problems with a message payload, as Slack would see them ([] when fine)."""
    problems: list[str] = []
    text = payload.get("text")
    blocks = payload.get("blocks")
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return ["blocks is not valid JSON"]
    if not (isinstance(text, str) and text.strip()):
        problems.append("no top-level text fallback")
    if blocks is None:
        return problems
    if not isinstance(blocks, list):
        return [*problems, "blocks is not a list"]
    if len(blocks) > max_blocks:
        problems.append(f"{len(blocks)} blocks > {max_blocks}")
    total = _text_length(blocks)
    if max_text is not None and total > max_text:  # msg_blocks_too_long (undocumented threshold, ~11.3k seen)
        problems.append(f"msg_blocks_too_long: {total} characters of block text > {max_text}")
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict) or block.get("type") not in KNOWN_BLOCKS:
            problems.append(f"{where}: unknown block {block!r:.80}")
            continue
        if len(str(block.get("block_id", ""))) > LIMITS["block_id"]:
            problems.append(f"{where}: block_id too long")
        kind = block["type"]
        if kind == "section":
            t = (block.get("text") or {}).get("text", "")
            if len(t) > LIMITS["section_text"]:
                problems.append(f"{where}: section text {len(t)} > {LIMITS['section_text']}")
            fields = block.get("fields") or []
            if len(fields) > LIMITS["section_fields"]:
                problems.append(f"{where}: {len(fields)} fields > {LIMITS['section_fields']}")
            for f in fields:
                if len(f.get("text", "")) > LIMITS["field_text"]:
                    problems.append(f"{where}: field text too long")
            if not t and not fields:
                problems.append(f"{where}: section without text or fields")
            if block.get("accessory"):
                problems.extend(_element_problems(block["accessory"], where + ".accessory"))
        elif kind == "header":
            t = (block.get("text") or {}).get("text", "")
            if (block.get("text") or {}).get("type") != "plain_text":
                problems.append(f"{where}: header text must be plain_text")
            if len(t) > LIMITS["header_text"] or not t:
                problems.append(f"{where}: header text length {len(t)} (1..{LIMITS['header_text']})")
        elif kind == "context":
            elements = block.get("elements") or []
            if not elements or len(elements) > LIMITS["context_elements"]:
                problems.append(f"{where}: {len(elements)} context elements (1..{LIMITS['context_elements']})")
        elif kind == "actions":
            elements = block.get("elements") or []
            if not elements or len(elements) > LIMITS["actions_elements"]:
                problems.append(f"{where}: {len(elements)} action elements (1..{LIMITS['actions_elements']})")
            for j, element in enumerate(elements):
                problems.extend(_element_problems(element, f"{where}.elements[{j}]"))
        elif kind == "markdown" and len(block.get("text", "")) > LIMITS["markdown_text"]:
            problems.append(f"{where}: markdown text too long")
    return problems


def _text_length(value: Any) -> int:
    """Characters of text in blocks (every `text` string, at any depth)."""
    if isinstance(value, dict):
        return sum(len(v) if k == "text" and isinstance(v, str) else _text_length(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_text_length(v) for v in value)
    return 0


def _element_problems(element: dict[str, Any], where: str) -> list[str]:
    problems = []
    if element.get("type") == "button":
        if len((element.get("text") or {}).get("text", "")) > LIMITS["button_text"]:
            problems.append(f"{where}: button text too long")
        if len(element.get("value", "")) > LIMITS["button_value"]:
            problems.append(f"{where}: button value too long")
        if len(element.get("url", "")) > LIMITS["button_url"]:
            problems.append(f"{where}: button url too long")
    if len(element.get("action_id", "")) > LIMITS["action_id"]:
        problems.append(f"{where}: action_id too long")
    confirm = element.get("confirm")
    if confirm:
        for key, limit in (
            ("title", "confirm_title"),
            ("text", "confirm_text"),
            ("confirm", "confirm_button"),
            ("deny", "confirm_button"),
        ):
            if len((confirm.get(key) or {}).get("text", "")) > LIMITS[limit]:
                problems.append(f"{where}: confirm {key} too long")
    return problems


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    headers: dict[str, str]
    at: float
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))

    @property
    def text_blob(self) -> str:
        """Everything a user could read in this call's message."""
        return json.dumps({k: self.args.get(k) for k in ("text", "blocks")})


@dataclass
class Channel:
    id: str
    name: str
    private: bool = False
    member: bool = True
    archived: bool = False
    is_im: bool = False


@dataclass
class Fault:
    method: str  # a method name, "*" for any, or "response_url"
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    times: int | None = 1  # None: forever
    channel: str | None = None  # only for calls to this channel (id or name)


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of posts (fifty commands' placeholders) overflowed it and
    # the kernel's one-second SYN retry showed up as a slow bot. Slack's edge has no such queue.
    request_queue_size = 128


class FakeSlack:
    def __init__(self, *, strict: bool = True, bot_token: str = BOT_TOKEN, app_token: str = APP_TOKEN) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.strict = strict
        self.calls: list[Call] = []
        self.responses: list[Call] = []  # response_url posts
        self.violations: list[str] = []
        self.channels: dict[str, Channel] = {}
        self.messages: dict[str, dict[str, dict[str, Any]]] = {}  # channel id -> ts -> message
        self.usergroups: dict[str, list[str]] = {}
        self.views: dict[str, dict[str, Any]] = {}  # user id -> the Home view last published for them
        self.uploads: dict[str, dict[str, Any]] = {}  # file id -> {filename, length, alt_txt, data (after upload)}
        self.files: list[dict[str, Any]] = []  # shared files: id, title, alt_txt, data, channel, thread_ts
        self.emails: dict[str, str] = {}  # e-mail -> user id (users.lookupByEmail)
        self.dms: dict[str, str] = {}  # user id -> the bot's DM channel id with them (conversations.open)
        self.faults: list[Fault] = []
        self.latency: dict[str, float] = {}
        # scopes of the bot token, sent as X-OAuth-Scopes (as Slack does) when set; None sends no header
        self.scopes: list[str] | None = None
        self._lock = threading.Condition()
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._response_uses: dict[str, int] = {}
        self.socket: SocketModeFake | None = None
        self.add_channel("general", channel_id="C0GENERAL")

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._handle(self)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-slack", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.socket is not None:
            self.socket.stop()
            self.socket = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeSlack.start() first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, name: str | None = None) -> str:
        return f"{self.url}/response/{name or uuid.uuid4().hex[:12]}"

    # -- set-up -----------------------------------------------------------------------------------------------
    def add_user(self, user_id: str, email: str) -> None:
        """A workspace member users.lookupByEmail finds."""
        with self._lock:
            self.emails[email.lower()] = user_id

    def add_channel(
        self,
        name: str,
        *,
        private: bool = False,
        member: bool = True,
        channel_id: str | None = None,
        archived: bool = False,
        is_im: bool = False,
    ) -> Channel:
        prefix = "D" if is_im else ("G" if private else "C")
        cid = channel_id or f"{prefix}0{name.upper().replace('-', '')[:8]}{next(self._ids):03d}"
        channel = Channel(cid, name.lstrip("#"), private, member, archived, is_im)
        with self._lock:
            self.channels[cid] = channel
            self.messages.setdefault(cid, {})
        return channel

    def fail(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: int | None = None,
        times: int | None = 1,
        channel: str | None = None,
    ) -> Fault:
        """Make the next `times` calls of `method` fail: status 429 (with Retry-After), 500, or a Slack error."""
        if status == 429 and error is None:
            error = "ratelimited"
        fault = Fault(method, status, error, retry_after, times, channel)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    # -- queries ----------------------------------------------------------------------------------------------
    def calls_to(self, method: str, predicate: Callable[[Call], bool] | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and (predicate is None or predicate(c))]

    def wait_for(
        self, method: str, count: int = 1, *, timeout: float = 15.0, predicate: Callable[[Call], bool] | None = None
    ) -> list[Call]:
        """Wait until at least `count` calls of `method` (matching `predicate`) were answered."""
        deadline = time.monotonic() + timeout
        source = self.responses if method == "response_url" else None
        with self._lock:
            while True:
                pool = source if source is not None else [c for c in self.calls if c.method == method]
                found = [c for c in pool if predicate is None or predicate(c)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    methods = [c.method for c in self.calls]
                    raise AssertionError(
                        f"waited {timeout}s for {count} x {method}, got {len(found)}; calls so far: {methods}; "
                        f"response_url posts: {len(self.responses)}; violations: {self.violations}"
                    )
                self._lock.wait(min(remaining, 0.1))

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        with self._lock:
            return self.messages.get(self._resolve(channel) or channel, {}).get(ts)

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages.get(self._resolve(channel) or channel, {}).values())

    def web_api_methods(self) -> set[str]:
        with self._lock:
            return {c.method for c in self.calls if c.method != "upload"}  # the upload URL is not a Web API method

    # -- request handling -------------------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        parts = urlsplit(req.path)
        args: dict[str, Any] = dict(parse_qsl(parts.query))
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
        method_name = parts.path[len("/api/"):] if parts.path.startswith("/api/") else ""
        if raw:
            if ctype == "application/json" and method_name in FORM_ONLY_METHODS:
                pass  # Slack reads these methods' arguments from the query or a form body only
            elif ctype == "application/json":
                try:
                    body = json.loads(raw)
                    if isinstance(body, dict):
                        args.update(body)
                except ValueError:
                    pass
            else:
                args.update(dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)))
        headers = {k.lower(): v for k, v in req.headers.items()}
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else args.pop("token", None)
        if parts.path.startswith("/response/"):
            status, body, extra = self._response_url(parts.path.rsplit("/", 1)[-1], args, headers)
        elif parts.path.startswith("/upload/"):
            status, body, extra = self._upload(parts.path.rsplit("/", 1)[-1], raw)
        elif parts.path.startswith("/api/"):
            method = parts.path[len("/api/") :]
            status, body, extra = self._api(method, args, token, headers)
        else:
            status, body, extra = 404, {"ok": False, "error": "not_found"}, {}
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "text/plain")
        req.send_header("Content-Length", str(len(payload)))
        for k, v in extra.items():
            req.send_header(k, v)
        req.end_headers()
        req.wfile.write(payload)

    def _take_fault(self, method: str, channel: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.method not in (method, "*"):
                continue
            if fault.channel is not None and self._resolve(fault.channel) != self._resolve(channel or ""):
                continue
            if fault.times is not None:
                if fault.times <= 0:
                    continue
                fault.times -= 1
            return fault
        return None

    def _record(self, call: Call, into: list[Call]) -> None:
        with self._lock:
            into.append(call)
            self._lock.notify_all()

    def _api(
        self, method: str, args: dict[str, Any], token: str | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if (delay := self.latency.get(method) or self.latency.get("*")) is not None:
            time.sleep(delay)
        call = Call(method, args, token, headers, time.time())
        with self._lock:
            fault = self._take_fault(method, args.get("channel"))
        extra: dict[str, str] = {}
        if fault is not None:
            if fault.status == 429:
                extra["Retry-After"] = str(fault.retry_after if fault.retry_after is not None else 1)
            call.status, call.response = fault.status, {"ok": False, "error": fault.error or "internal_error"}
        else:
            call.response = self._answer(method, args, token)
        if self.scopes is not None and token == self.bot_token:
            extra["X-OAuth-Scopes"] = ",".join(self.scopes)
        self._record(call, self.calls)
        return call.status, call.response, extra

    def _resolve(self, channel: str) -> str | None:
        if channel in self.channels:
            return channel
        name = channel.lstrip("#")
        for cid, ch in self.channels.items():
            if ch.name == name:
                return cid
        return None

    def _ts_now(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        if method == "apps.connections.open":
            if token != self.app_token:
                return {"ok": False, "error": "invalid_auth"}
            if self.socket is None:
                return {"ok": False, "error": "socket_mode_not_enabled"}
            return {"ok": True, "url": self.socket.url}
        if token != self.bot_token:
            return {"ok": False, "error": "invalid_auth" if token else "not_authed"}
        with self._lock:
            return self._bot_method(method, args)

    def _bot_method(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": WORKSPACE_URL,
                "team": "Fake Team",
                "user": "clearml-chatops",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": "B0FAKEBOT",
                "is_enterprise_install": False,
            }
        if method in ("chat.postMessage", "chat.update", "chat.postEphemeral", "chat.delete"):
            return self._chat(method, args)
        if method == "chat.getPermalink":
            return self._permalink(args)
        if method == "conversations.info":
            cid = self._resolve(str(args.get("channel", "")))
            ch = self.channels.get(cid or "")
            if ch is None or (ch.private and not ch.member):
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "channel": self._channel_doc(ch)}
        if method == "conversations.join":
            cid = self._resolve(str(args.get("channel", "")))
            ch = self.channels.get(cid or "")
            if ch is None or (ch.private and not ch.member):
                return {"ok": False, "error": "channel_not_found"}
            if ch.private:
                return {"ok": False, "error": "method_not_supported_for_channel_type"}
            ch.member = True
            return {"ok": True, "channel": self._channel_doc(ch)}
        if method == "conversations.list":
            visible = [self._channel_doc(c) for c in self.channels.values() if not c.private or c.member]
            return {"ok": True, "channels": visible, "response_metadata": {"next_cursor": ""}}
        if method == "conversations.members":
            cid = self._resolve(str(args.get("channel", "")))
            ch = self.channels.get(cid or "")
            if ch is None:
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "members": [BOT_USER_ID] if ch.member else [], "response_metadata": {"next_cursor": ""}}
        if method in ("views.publish", "files.getUploadURLExternal", "files.completeUploadExternal"):
            return self._views_and_files(method, args)
        if method == "users.lookupByEmail":
            user = self.emails.get(str(args.get("email", "")).lower())
            if user is None:
                return {"ok": False, "error": "users_not_found"}
            return {"ok": True, "user": {"id": user, "team_id": TEAM_ID, "profile": {"email": args.get("email")}}}
        if method == "conversations.open":
            user = str(args.get("users", ""))
            if not user or "," in user:
                return {"ok": False, "error": "user_not_found" if not user else "not_implemented"}
            if user not in self.dms:
                self.dms[user] = self.add_channel(f"dm-{user.lower()}", is_im=True).id
            return {"ok": True, "channel": {"id": self.dms[user]}}
        if method == "usergroups.users.list":
            group = str(args.get("usergroup", ""))
            if group not in self.usergroups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": list(self.usergroups[group])}
        return {"ok": False, "error": "unknown_method"}

    def _permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        """Like Slack: the channel by id, a message that exists; a reply's link carries its thread."""
        cid = str(args.get("channel", ""))
        ch = self.channels.get(cid)
        if ch is None or (ch.private and not ch.member):
            return {"ok": False, "error": "channel_not_found"}
        ts = str(args.get("message_ts", ""))
        message = self.messages.get(cid, {}).get(ts)
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        link = f"{WORKSPACE_URL}archives/{cid}/p{ts.replace('.', '')}"
        thread_ts = message.get("thread_ts")
        if thread_ts and thread_ts != ts:
            link += f"?thread_ts={thread_ts}&cid={cid}"
        return {"ok": True, "channel": cid, "permalink": link}

    @staticmethod
    def _channel_doc(ch: Channel) -> dict[str, Any]:
        return {
            "id": ch.id,
            "name": ch.name,
            "is_private": ch.private,
            "is_member": ch.member,
            "is_archived": ch.archived,
            "is_im": ch.is_im,
        }

    def _chat(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        raw_channel = str(args.get("channel", ""))
        # chat.update/delete need the id; postMessage/postEphemeral also take a #name
        cid = raw_channel if method in ("chat.update", "chat.delete") else self._resolve(raw_channel)
        ch = self.channels.get(cid or "")
        if ch is None:
            return {"ok": False, "error": "channel_not_found"}
        if ch.private and not ch.member:
            return {"ok": False, "error": "channel_not_found" if method != "chat.postMessage" else "not_in_channel"}
        if ch.archived:
            return {"ok": False, "error": "is_archived"}
        if method != "chat.delete":
            problems = validate_message(args)
            if problems:
                self.violations.extend(f"{method}: {p}" for p in problems)
                if self.strict:
                    return {"ok": False, "error": "invalid_blocks", "errors": problems}
        store = self.messages.setdefault(ch.id, {})
        if method == "chat.postMessage":
            thread_ts = args.get("thread_ts")
            if thread_ts and thread_ts not in store:
                return {"ok": False, "error": "thread_not_found"}
            ts = self._ts_now()
            message = {
                "ts": ts,
                "text": args.get("text"),
                "blocks": args.get("blocks"),
                "thread_ts": thread_ts,
                "user": BOT_USER_ID,
                "metadata": args.get("metadata"),
            }
            store[ts] = message
            return {"ok": True, "channel": ch.id, "ts": ts, "message": message}
        if method == "chat.update":
            ts = str(args.get("ts", ""))
            if ts not in store:
                return {"ok": False, "error": "message_not_found"}
            store[ts].update({"text": args.get("text"), "blocks": args.get("blocks"), "edited": True})
            return {"ok": True, "channel": ch.id, "ts": ts, "text": args.get("text")}
        if method == "chat.delete":
            ts = str(args.get("ts", ""))
            if store.pop(ts, None) is None:
                return {"ok": False, "error": "message_not_found"}
            return {"ok": True, "channel": ch.id, "ts": ts}
        # chat.postEphemeral
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        return {"ok": True, "message_ts": self._ts_now()}

    def _views_and_files(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "views.publish":
            user = str(args.get("user_id") or "")
            if not user.startswith("U"):
                return {"ok": False, "error": "invalid_arguments"}
            view = args.get("view")
            if isinstance(view, str):
                view = json.loads(view)
            problems = validate_view(view)
            if problems:
                self.violations.extend(f"views.publish: {p}" for p in problems)
                if self.strict:
                    return {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": problems}}
            self.views[user] = view
            return {"ok": True, "view": {"id": f"V0{next(self._ids):08d}", "type": "home", **view}}
        if self.scopes is not None and "files:write" not in self.scopes:
            return {"ok": False, "error": "missing_scope", "needed": "files:write"}
        if method == "files.getUploadURLExternal":
            try:
                length = int(args.get("length") or 0)
            except ValueError:
                length = 0
            if not args.get("filename") or length <= 0:
                return {"ok": False, "error": "invalid_arguments"}
            if len(str(args.get("alt_txt") or "")) > 1000:
                return {"ok": False, "error": "invalid_arguments"}
            file_id = f"F0{next(self._ids):08d}"
            self.uploads[file_id] = {"filename": args["filename"], "length": length, "alt_txt": args.get("alt_txt")}
            return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}
        # files.completeUploadExternal
        try:
            files = json.loads(str(args.get("files") or "[]"))
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        if not isinstance(files, list) or not files:
            return {"ok": False, "error": "invalid_arguments"}
        cid = self._resolve(str(args.get("channel_id") or "")) if args.get("channel_id") else None
        ch = self.channels.get(cid or "")
        if args.get("channel_id") and ch is None:
            return {"ok": False, "error": "channel_not_found"}
        if ch is not None and not ch.member:
            return {"ok": False, "error": "not_in_channel"}
        thread_ts = args.get("thread_ts") or None
        if thread_ts and (ch is None or thread_ts not in self.messages.get(ch.id, {})):
            return {"ok": False, "error": "invalid_thread_ts"}
        done = []
        for f in files:
            upload = self.uploads.get(str((f or {}).get("id")))
            if upload is None or "data" not in upload:
                return {"ok": False, "error": "file_not_found"}
            record = {"id": f["id"], "title": f.get("title") or upload["filename"], "name": upload["filename"],
                      "alt_txt": upload.get("alt_txt"), "data": upload["data"],
                      "channel": ch.id if ch else None, "thread_ts": thread_ts,
                      "initial_comment": args.get("initial_comment")}
            self.files.append(record)
            done.append({"id": f["id"], "title": record["title"], "name": record["name"]})
        if ch is not None:
            ts = self._ts_now()
            self.messages.setdefault(ch.id, {})[ts] = {
                "ts": ts, "text": args.get("initial_comment") or "", "thread_ts": thread_ts, "user": BOT_USER_ID,
                "files": done,
            }
        return {"ok": True, "files": done}

    def _upload(self, file_id: str, raw: bytes) -> tuple[int, Any, dict[str, str]]:
        """The upload URL files.getUploadURLExternal handed out: takes the bytes (Slack answers `OK - <size>`)."""
        with self._lock:
            upload = self.uploads.get(file_id)
            if upload is None:
                return 404, b"upload not found", {}
            if len(raw) != upload["length"]:
                return 400, b"length mismatch", {}
            upload["data"] = raw
            self.calls.append(Call("upload", {"file_id": file_id, "bytes": len(raw)}, None, {}, time.time()))
            self._lock.notify_all()
        return 200, f"OK - {len(raw)}".encode(), {}

    def files_in(self, channel: str, thread_ts: str | None = None) -> list[dict[str, Any]]:
        """Files shared into a channel (and thread, when given)."""
        with self._lock:
            cid = self._resolve(channel) or channel
            return [f for f in self.files if f["channel"] == cid and (thread_ts is None or f["thread_ts"] == thread_ts)]

    def _response_url(
        self, name: str, args: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        call = Call("response_url", args, None, headers, time.time())
        call.args["_url_id"] = name
        with self._lock:
            fault = self._take_fault("response_url", None)
            uses = self._response_uses.get(name, 0) + 1
            self._response_uses[name] = uses
        if fault is not None:
            call.status, call.response = fault.status, {"ok": False, "error": fault.error or "internal_error"}
            self._record(call, self.responses)
            return fault.status, call.response, {}
        if uses > 5:  # Slack: at most 5 posts per response_url
            call.status, call.response = 404, {"ok": False, "error": "used_url"}
            self._record(call, self.responses)
            return 404, b"used_url", {}
        if not (args.get("delete_original") and not args.get("text")):
            problems = validate_message(args)
            if problems:
                self.violations.extend(f"response_url: {p}" for p in problems)
                if self.strict:
                    call.status, call.response = 400, {"ok": False, "error": "invalid_blocks"}
                    self._record(call, self.responses)
                    return 400, b"invalid_blocks", {}
        call.response = {"ok": True}
        self._record(call, self.responses)
        return 200, b"ok", {}

    # -- Socket Mode ------------------------------------------------------------------------------------------
    def start_socket_mode(self) -> SocketModeFake:
        if self.socket is None:
            self.socket = SocketModeFake().start()
        return self.socket


class SocketModeFake:
    """The websocket side of Socket Mode: says hello, pushes envelopes, collects acks."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._connections: list[Any] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.received: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link/?ticket={uuid.uuid4().hex}"

    def start(self) -> SocketModeFake:
        ready = threading.Event()

        async def handler(connection: Any) -> None:
            with self._cond:
                self._connections.append(connection)
                self._cond.notify_all()
            await connection.send(
                json.dumps(
                    {
                        "type": "hello",
                        "num_connections": len(self._connections),
                        "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                        "connection_info": {"app_id": "A0FAKE"},
                    }
                )
            )
            try:
                async for raw in connection:
                    try:
                        message = json.loads(raw)
                    except ValueError:
                        continue
                    with self._cond:
                        self.received.append(message)
                        if isinstance(message, dict) and message.get("envelope_id"):
                            self.acks[message["envelope_id"]] = message
                        self._cond.notify_all()
            except Exception:  # a client going away mid-frame is normal here
                pass
            finally:
                with self._cond:
                    if connection in self._connections:
                        self._connections.remove(connection)
                    self._cond.notify_all()

        async def main() -> None:
            from websockets.asyncio.server import serve

            self._server = await serve(handler, "127.0.0.1", 0, ping_interval=None)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            await self._server.wait_closed()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(main())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-socket-mode", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("socket mode fake did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wait_connected(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._connections:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("no Socket Mode client connected")
                self._cond.wait(remaining)

    @property
    def connected(self) -> int:
        with self._cond:
            return len(self._connections)

    def push_envelope(
        self, payload: dict[str, Any], *, envelope_type: str = "slash_commands", accepts_response_payload: bool = True
    ) -> str:
        """Send one envelope to the first connected client; returns its envelope_id."""
        self.wait_connected()
        envelope_id = str(uuid.uuid4())
        frame = json.dumps(
            {
                "envelope_id": envelope_id,
                "type": envelope_type,
                "payload": payload,
                "accepts_response_payload": accepts_response_payload,
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        with self._cond:
            connection = self._connections[0]
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(connection.send(frame), self._loop).result(5)
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while envelope_id not in self.acks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no ack for envelope {envelope_id} within {timeout}s")
                self._cond.wait(remaining)
            return self.acks[envelope_id]

    def drop_connections(self) -> None:
        """Close every client connection (to test reconnects)."""
        assert self._loop is not None
        with self._cond:
            connections = list(self._connections)
        for connection in connections:
            asyncio.run_coroutine_threadsafe(connection.close(), self._loop).result(5)
