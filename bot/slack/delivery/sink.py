"""The Slack sink: the one seam through which the bot writes to Slack (posts, updates, deletes, ephemeral messages,
`response_url` replies).

Two paths:
- *interactive* writes (a command's "running…" placeholder and its result, private answers) are sent at once,
  retried by the WebClient's handlers (429 + Retry-After, 5xx, connection errors): someone is waiting for them,
  and if the bot dies meanwhile the person simply types the command again;
- *unattended* writes (incident root messages, their updates and thread replies, digests, scheduled reports,
  action outcomes, reproduce results) go through `enqueue()` into the durable outbox (bot/slack/delivery: a
  SQLite queue with dedupe keys, per-channel order, backoff honouring Retry-After, crash reconciliation), drained
  by its worker thread that `serve` starts. Nobody would notice if one of those were lost, so they must not be.

Every payload is redacted once on its way out, as a last line of defence whatever the builders did: interactive
writes here (`_payload`, `ack_body`, `publish_home`), queued ones by the durable outbox as it writes the row
(`queue.redact_payload`, with the same secrets: `create_app` hands them to both), so the store never holds a secret
either and the sender sends the rows as they are.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from bot import metrics
from bot.errors import BotError
from bot.redact import redact_tree
from bot.slack.client import BOT_DISPLAY_NAME, METHOD_SCOPES, retry_handlers
from bot.slack.delivery.queue import plain
from bot.slack.messages.common import SlackMessage, fallback_text
from bot.targets import is_channel_id

if TYPE_CHECKING:
    from datetime import datetime

    from bot.charts.render import RenderedChart
    from bot.slack.delivery.queue import MessageKind
    from bot.slack.delivery.queue import Outbox as DurableOutbox

log = logging.getLogger(__name__)

def channel_label(channel: str) -> str:
    """How to name a channel in a message: a mention for ids (Slack shows the name), `#name` otherwise."""
    if is_channel_id(channel):
        return f"<#{channel}> (`{channel}`)"
    return channel if channel.startswith("#") else f"#{channel}"


# Slack errors that mean "this channel cannot take the bot's message", each with what to do about it.
_CHANNEL_FIXES: dict[str, str] = {
    "not_in_channel": "I am not a member of {ch}. It is probably a private channel: invite me there with "
    "`/invite @{bot}` (or pick another channel in the config).",
    "channel_not_found": "The channel {ch} does not exist, or it is private and I am not in it. Check the name in "
    "the config (`slack.default_channel`, `slack.routes`, the playbook's `channel`), or invite me with "
    "`/invite @{bot}`.",
    "is_archived": "The channel {ch} is archived: unarchive it or route the messages elsewhere.",
    "restricted_action": "A workspace setting forbids me to post in {ch}.",
    "no_permission": "I lack the permission to post in {ch}.",
    "too_many_attachments": "The message for {ch} was too large.",
    "invalid_blocks": "Slack refused the message layout for {ch} (a bug in the bot: please report it).",
    "msg_too_long": "The message for {ch} was too long (a bug in the bot: please report it).",
}


# Where Slack's response_urls point (commands and interactions: https://hooks.slack.com/commands|actions/…).
SLACK_RESPONSE_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})


def response_url_allowed(url: str, api_base_url: str | None = None) -> bool:
    """True for https on Slack's hook hosts, or on the host the bot's Slack API base URL names (a test fake, a
    proxy an admin configured): never for an arbitrary host a request body names."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.username or parts.password:
        return False
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" and host in SLACK_RESPONSE_HOSTS and port in (None, 443):
        return True
    if api_base_url:
        base = urlsplit(api_base_url)
        default = {"https": 443, "http": 80}
        if (parts.scheme, host, port or default.get(parts.scheme)) == (
            base.scheme, (base.hostname or "").lower(), base.port or default.get(base.scheme)
        ) and base.hostname not in (None, "slack.com", "www.slack.com"):
            return True
    return False


class SlackWriteError(BotError):
    """A Slack write that failed for good (after retries); `explain()` says what to do, naming the channel."""

    def __init__(self, method: str, error: str, *, channel: str | None = None, status: int | None = None) -> None:
        self.method = method
        self.error = error
        self.channel = channel
        self.status = status
        super().__init__(f"{method} failed: {error}" + (f" (channel {channel})" if channel else ""))

    @property
    def is_channel_problem(self) -> bool:
        return self.error in _CHANNEL_FIXES and self.error not in ("invalid_blocks", "msg_too_long")

    def explain(self) -> str:
        label = channel_label(self.channel) if self.channel else "that channel"
        fix = _CHANNEL_FIXES.get(self.error)
        if fix:
            return fix.format(ch=label, bot=BOT_DISPLAY_NAME)
        if self.error == "ratelimited":
            return f"Slack kept rate-limiting my messages to {label}; try again in a minute."
        if self.error in ("invalid_auth", "token_revoked", "account_inactive", "not_authed"):
            return "Slack rejected my token: an admin must reinstall the app or update SLACK_BOT_TOKEN."
        return f"Slack refused the message for {label}: `{self.error}`."


class OutgoingMessage(Protocol):
    """What a write takes: a `SlackMessage`, or the incident pipeline's `Rendered` (blocks as objects or dicts)."""

    def as_payload(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Posted:
    """Where a posted message lives: `channel` is the channel id Slack answered with (names become ids)."""

    channel: str
    ts: str


class SlackSink:
    """All Slack writes: interactive ones at once, unattended ones into the durable outbox (`durable`). The incident
    pipeline's `MessageSink`. Thread-safe: the WebClient is, and the counters are under a lock."""

    def __init__(
        self,
        client: WebClient,
        *,
        secrets: Callable[[], Iterable[str]] | None = None,
        webhook_timeout: int = 10,
    ) -> None:
        self.client = client
        self._secrets = secrets or (lambda: ())
        self._webhook_timeout = webhook_timeout
        self._lock = threading.Lock()
        self.sent: Counter[str] = Counter()  # method -> successful calls (for /metrics and tests)
        self.failed: Counter[str] = Counter()
        self.durable: DurableOutbox | None = None  # set by create_app; drained by the worker `serve` starts
        self._scopes: set[str] | None = None
        self._scopes_known = False
        self._permalinks: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._permalink_client: WebClient | None = None

    # -- unattended writes: the durable outbox ----------------------------------------------------------------
    def enqueue(
        self,
        key: str,
        channel: str,
        kind: MessageKind,
        message: dict[str, Any],
        *,
        root_key: str | None = None,
        supersede: bool = False,
        thread_ts: str | None = None,
        ts: str | None = None,
        user: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Queue an unattended write in the durable outbox (the incident pipeline's `MessageSink`: the queue's
        `enqueue`, plus `thread_ts`/`ts`/`user`). False when `key` was queued before (dedupe).

        `message`: a payload dict (`text`, `blocks`, ...: `SlackMessage.as_payload()`, `Rendered.as_payload()`).
        `root_key` names a message this outbox posted (an incident root); `thread_ts` / `ts` (+ a channel *id*) a
        message posted otherwise (a command's answer)."""
        durable = self._queue()
        payload = dict(message)
        if payload.get("blocks"):
            # Block objects -> dicts now: slack_sdk checks Block Kit's limits here, before anything is stored
            payload["blocks"] = plain(payload["blocks"])
        for name, value in (("thread_ts", thread_ts), ("ts", ts), ("user", user)):
            if value:
                payload[name] = value
        if isinstance(payload.get("text"), str):  # the top-level text is mrkdwn to Slack: `<!channel>` there pings
            payload["text"] = fallback_text(payload["text"])
        return durable.enqueue(key, channel, kind, payload, root_key=root_key, supersede=supersede, now=now)

    def enqueue_file(
        self,
        key: str,
        channel: str,
        chart: RenderedChart,
        *,
        root_key: str | None = None,
        thread_ts: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Queue a chart upload (files_upload_v2) in the durable outbox: into the thread of the message `root_key`
        names (a digest, an incident root) or `thread_ts`, else into the channel. Title and alt text are redacted
        by the queue like every row; the PNG bytes are stored base64 until sent, then dropped from the row."""
        import base64

        described: dict[str, Any] = {"text": chart.title, "file": {
            "filename": chart.filename, "title": chart.title, "alt_txt": chart.alt_text,
            "content_b64": base64.b64encode(chart.png).decode("ascii")}}
        if thread_ts:
            described["thread_ts"] = thread_ts
        return self._queue().enqueue(key, channel, "file", described, root_key=root_key, now=now)

    def token_scopes(self) -> set[str] | None:
        """The bot token's scopes (auth.test's X-OAuth-Scopes), asked once; None when Slack does not say."""
        with self._lock:
            if self._scopes_known:
                return self._scopes
        scopes: set[str] | None = None
        try:
            resp = self.client.auth_test()
            headers = {k.lower(): v for k, v in (resp.headers or {}).items()}
            raw = headers.get("x-oauth-scopes")
            if isinstance(raw, list):
                raw = raw[0] if raw else None
            if raw is not None:
                scopes = {p.strip() for p in str(raw).split(",") if p.strip()}
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.info("cannot read the token's scopes (%s): assuming every scope is granted", type(exc).__name__)
            return None  # not cached: ask again next time
        with self._lock:
            self._scopes, self._scopes_known = scopes, True
        return scopes

    def can_upload_files(self) -> bool:
        """False when the token's scopes are known and lack files:write (then charts are left out, text stays)."""
        scopes = self.token_scopes()
        return scopes is None or "files:write" in scopes

    def publish_home(self, user: str, view: dict[str, Any]) -> None:
        """`views.publish` of a user's App Home (interactive: someone just opened the tab; retried by the client's
        handlers, not queued: an old Home view is worth nothing after a restart). Redacted like every write."""
        self._call("views.publish", user, user_id=user, view=redact_tree(view, self._secrets()))

    # -- the incident pipeline's MessageSink (bot/incidents/pipeline.py): roots a channel refused ---------------
    def refused_posts(self, key_like: str, errors: Iterable[str]) -> list[dict[str, Any]]:
        return self._queue().refused_posts(key_like, errors)

    def retire(self, key: str, new_key: str) -> bool:
        return self._queue().retire(key, new_key)

    def requeue_orphans(self, root_key: str, channel: str, now: datetime | None = None) -> int:
        return self._queue().requeue_orphans(root_key, channel, now)

    def _queue(self) -> DurableOutbox:
        if self.durable is None:
            raise RuntimeError("no durable outbox attached: create_app() attaches one")
        return self.durable

    def message_ref(self, key: str) -> tuple[str, str] | None:
        """(channel id, ts) of a message the durable outbox posted (an incident root), once it is on Slack."""
        return self.durable.message_ref(key) if self.durable is not None else None

    def key_of_posted(self, channel_id: str, ts: str, like: str) -> str | None:
        """The durable outbox's key of the post at (channel id, ts) matching `like` (bot/slack/delivery/queue.py)."""
        return self.durable.key_of_posted(channel_id, ts, like) if self.durable is not None else None

    # -- reads ------------------------------------------------------------------------------------------------
    MAX_PERMALINKS = 5000

    PERMALINK_TIMEOUT_S = 2

    def permalink(self, channel_id: str, ts: str, *, fetch: bool = True) -> str | None:
        """A link to a message in the workspace's own domain (`chat.getPermalink`), cached: a message's permalink
        never changes. None when Slack cannot give one (the message was deleted, Slack is unreachable) or, with
        `fetch=False`, when it is not cached yet: callers show no link then, and a later call asks again. A call
        waits at most PERMALINK_TIMEOUT_S and is not retried (answers in the ack path use it too)."""
        key = (channel_id, ts)
        with self._lock:
            cached = self._permalinks.get(key)
            if cached is not None:
                self._permalinks.move_to_end(key)
                return cached
        if not fetch:
            return None
        method = "chat.getPermalink"
        assert method in METHOD_SCOPES
        try:
            # the SDK's own method: Slack reads this one's arguments from the query string, not a JSON body
            data = self._link_client().chat_getPermalink(channel=channel_id, message_ts=ts).data
        except SlackApiError as exc:
            self._count(method, False)
            log.warning("slack %s for %s %s failed: %s", method, channel_id, ts,
                        exc.response.get("error") if exc.response is not None else "unknown_error")
            return None
        except (SlackClientError, OSError) as exc:
            self._count(method, False)
            log.warning("slack %s for %s %s failed: %s", method, channel_id, ts, type(exc).__name__)
            return None
        self._count(method, True)
        link = data.get("permalink") if isinstance(data, dict) else None
        if not isinstance(link, str) or not link.startswith("https://"):
            return None
        with self._lock:
            self._permalinks[key] = link
            while len(self._permalinks) > self.MAX_PERMALINKS:
                self._permalinks.popitem(last=False)
        return link

    def _link_client(self) -> WebClient:
        with self._lock:
            if self._permalink_client is None:
                self._permalink_client = WebClient(token=self.client.token, base_url=self.client.base_url,
                                                   timeout=self.PERMALINK_TIMEOUT_S, retry_handlers=[])
            return self._permalink_client

    def usergroup_members(self, group: str) -> list[str]:
        """Members of a Slack user group (`usergroups.users.list`, scope usergroups:read). Raises SlackWriteError
        (despite the name: the same error vocabulary) when Slack refuses, e.g. `missing_scope`, `no_such_subteam`."""
        method = "usergroups.users.list"
        assert method in METHOD_SCOPES
        try:
            # the SDK's own method: read methods take form/query arguments, not a JSON body
            data = self.client.usergroups_users_list(usergroup=group).data
        except SlackApiError as exc:
            error = str(exc.response.get("error") or "unknown_error") if exc.response is not None else "unknown_error"
            raise SlackWriteError(method, error) from None
        except (SlackClientError, OSError) as exc:
            raise SlackWriteError(method, f"connection_error: {type(exc).__name__}") from None
        users = data.get("users") if isinstance(data, dict) else None
        return [str(u) for u in users or []]

    # -- payloads ---------------------------------------------------------------------------------------------
    def _payload(self, message: OutgoingMessage) -> dict[str, Any]:
        return redact_tree(plain(message.as_payload()), self._secrets())

    def ack_body(self, message: SlackMessage, *, ephemeral: bool = True) -> dict[str, Any]:
        """The body for an immediate `ack(...)` reply (not a Web API write, but redacted the same way)."""
        body = self._payload(message)
        body["response_type"] = "ephemeral" if ephemeral else "in_channel"
        return body

    def _count(self, method: str, ok: bool) -> None:
        with self._lock:
            (self.sent if ok else self.failed)[method] += 1
        metrics.slack_call(method, "ok" if ok else "error")

    def _call(self, method: str, target: str | None, /, **kwargs: Any) -> dict[str, Any]:
        if method not in METHOD_SCOPES:  # keeps the scope table (and so the manifest) honest
            raise RuntimeError(f"{method} is not in bot.slack.client.METHOD_SCOPES: add it with its scopes")
        try:
            response = self.client.api_call(method, json=kwargs)
        except SlackApiError as exc:
            self._count(method, False)
            error = str(exc.response.get("error") or "unknown_error") if exc.response is not None else "unknown_error"
            status = exc.response.status_code if exc.response is not None else None
            log.warning("slack %s to %s failed: %s", method, target, error)
            raise SlackWriteError(method, error, channel=target, status=status) from None
        except (SlackClientError, OSError) as exc:  # connection refused, timeouts after the retries
            self._count(method, False)
            log.warning("slack %s to %s failed: %s", method, target, type(exc).__name__)
            raise SlackWriteError(method, f"connection_error: {type(exc).__name__}", channel=target) from None
        self._count(method, True)
        return dict(response.data) if isinstance(response.data, dict) else {}

    # -- writes -----------------------------------------------------------------------------------------------
    def post(
        self, channel: str, message: OutgoingMessage, *, thread_ts: str | None = None, reply_broadcast: bool = False
    ) -> Posted:
        extra: dict[str, Any] = {}
        if thread_ts:
            extra["thread_ts"] = thread_ts
            if reply_broadcast:
                extra["reply_broadcast"] = True
        data = self._call("chat.postMessage", channel, channel=channel, **self._payload(message), **extra)
        return Posted(channel=str(data.get("channel") or channel), ts=str(data.get("ts")))

    def update(self, posted: Posted, message: SlackMessage) -> None:
        self._call("chat.update", posted.channel, channel=posted.channel, ts=posted.ts, **self._payload(message))

    def delete(self, posted: Posted) -> None:
        self._call("chat.delete", posted.channel, channel=posted.channel, ts=posted.ts)

    def ephemeral(self, channel: str, user: str, message: SlackMessage, *, thread_ts: str | None = None) -> None:
        extra = {"thread_ts": thread_ts} if thread_ts else {}
        self._call("chat.postEphemeral", channel, channel=channel, user=user, **self._payload(message), **extra)

    def tell_privately(
        self,
        message: SlackMessage,
        *,
        user: str,
        channel: str | None,
        response_url: str | None = None,
        thread_ts: str | None = None,
    ) -> bool:
        """Only `user` sees it: through `response_url` when there is one (works in any channel, even one the bot is
        not in), else (or when that fails) chat.postEphemeral in `channel`. Never raises: a failure is logged.
        Returns whether the message got through."""
        if response_url:
            try:
                self.respond(response_url, message, ephemeral=True)
                return True
            except SlackWriteError as exc:
                log.warning("response_url failed (%s): trying chat.postEphemeral", exc.error)
        if not (channel and user):
            log.error("could not reach user %s at all: no response_url and no channel", user or "?")
            return False
        try:
            self.ephemeral(channel, user, message, thread_ts=thread_ts)
            return True
        except SlackWriteError as exc:
            log.error("could not reach user %s at all: %s", user, exc.explain())
            return False

    def respond(
        self,
        response_url: str,
        message: SlackMessage | None = None,
        *,
        ephemeral: bool = True,
        replace_original: bool = False,
        delete_original: bool = False,
    ) -> None:
        """A reply through a command's or action's `response_url` (works where the bot is not a member)."""
        body: dict[str, Any] = {}
        if message is not None:
            body.update(self._payload(message))
            body["response_type"] = "ephemeral" if ephemeral else "in_channel"
        if replace_original:
            body["replace_original"] = True
        if delete_original:
            body["delete_original"] = True
        if not response_url_allowed(response_url, self.client.base_url):
            # a response_url is a field of the request body: only Slack's own hosts get the bot's answers
            self._count("response_url", False)
            log.warning("refused to post to a response_url outside Slack's hosts")
            raise SlackWriteError("response_url", "untrusted_response_url")
        webhook = WebhookClient(response_url, timeout=self._webhook_timeout, retry_handlers=retry_handlers())
        try:
            resp = webhook.send_dict(body)
        except (SlackClientError, OSError, ValueError) as exc:  # ValueError: not a URL at all (urllib)
            self._count("response_url", False)
            raise SlackWriteError("response_url", f"connection_error: {type(exc).__name__}") from None
        if resp.status_code != 200:
            self._count("response_url", False)
            raise SlackWriteError("response_url", resp.body or f"http_{resp.status_code}", status=resp.status_code)
        self._count("response_url", True)
