"""The outbox's sender: one queued message -> one Slack Web API call (bot/slack/delivery/queue.py has the why)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.slack.delivery.queue import METADATA_EVENT, OutboxMessage, SendResult
from bot.targets import is_channel_id, is_dm_target, slack_user_ref

if TYPE_CHECKING:
    from slack_sdk import WebClient

log = logging.getLogger("bot.outbox")  # one logger name for the outbox's queue, sender and worker


class WebClientSender:
    """Sends outbox messages with a slack_sdk WebClient.

    Give it a client with `retry_handlers=[]`: slack_sdk's RateLimitErrorRetryHandler sleeps through Retry-After
    inside the call (holding the drain thread, hiding the 429 from the outbox, which handles it durably), and its
    connection-error and server-error handlers re-post a message whose first attempt may have gone through; the
    outbox retries instead, after checking whether the message is already there.

    Scopes: `chat:write` (+ `chat:write.public`); `find_posted` needs `channels:history` + `groups:history` (to
    find a message that may have been sent just before a crash) and `channels:read` + `groups:read` (to turn a
    `#name` into an id)."""

    def __init__(self, client: WebClient, *, max_pages: int = 5) -> None:
        self.client = client
        self.max_pages = max_pages
        self._ids: dict[str, str] = {}

    def __call__(self, message: OutboxMessage) -> SendResult:
        if message.kind == "file":
            return self._upload(message)
        p = message.payload  # redacted when it was queued (`Outbox.enqueue`): the row is what Slack gets
        common: dict[str, Any] = {"text": p["text"]}
        if p.get("blocks"):
            common["blocks"] = p["blocks"]
        channel = message.channel_id or message.channel
        if is_dm_target(channel):
            channel = self.dm_channel(channel)
        if message.kind == "update":
            resp = self.client.chat_update(channel=channel, ts=message.target_ts, **common)
            return SendResult(ts=resp.get("ts") or message.target_ts, channel=resp.get("channel"))
        if message.kind == "ephemeral":
            extra = {"thread_ts": message.thread_ts} if message.thread_ts else {}
            resp = self.client.chat_postEphemeral(channel=channel, user=p["user"], **common, **extra)
            return SendResult(ts=resp.get("message_ts"), channel=None)
        metadata = p.get("metadata") or {"event_type": METADATA_EVENT, "event_payload": {}}
        metadata = {**metadata, "event_payload": {**metadata.get("event_payload", {}), "outbox_key": message.key}}
        extra = {}
        if message.kind == "reply":
            extra["thread_ts"] = message.thread_ts
            if p.get("reply_broadcast"):
                extra["reply_broadcast"] = True
        resp = self.client.chat_postMessage(
            channel=channel, metadata=metadata, unfurl_links=bool(p.get("unfurl_links", False)), **common, **extra
        )
        return SendResult(ts=resp.get("ts"), channel=resp.get("channel"))

    def _upload(self, message: OutboxMessage) -> SendResult:
        """A file (a chart) into a channel or a thread: `files_upload_v2` (files.getUploadURLExternal, the upload,
        files.completeUploadExternal; scope files:write). Title, alt text and comment were redacted when queued."""
        import base64

        spec = dict(message.payload["file"])
        content = base64.b64decode(spec.pop("content_b64"))
        channel = message.channel_id or self.channel_id(message.channel)  # the upload takes ids only
        extra: dict[str, Any] = {"thread_ts": message.thread_ts} if message.thread_ts else {}
        comment = message.payload.get("initial_comment")
        if comment:
            extra["initial_comment"] = comment
        self.client.files_upload_v2(channel=channel, content=content, filename=spec.get("filename") or "chart.png",
                                    title=spec.get("title") or None, alt_txt=spec.get("alt_txt") or None, **extra)
        return SendResult(ts=None, channel=channel)

    def find_posted(self, message: OutboxMessage, since: datetime) -> SendResult | None:
        """The message with this outbox key if Slack has it (posted before a crash), else None.

        Scans the channel's (or thread's) newest `max_pages` pages rather than asking for messages newer than
        `since`: Slack's clock and ours may disagree, and the message we look for is among the newest anyway."""
        if is_dm_target(message.channel):
            # reading a DM's history needs im:history, which the bot does not ask for: a DM posted just before a
            # crash may be sent once more (the channel's root message, which matters, is reconciled)
            return None
        channel = message.channel_id or self.channel_id(message.channel)
        cursor: str | None = None
        for _ in range(self.max_pages):
            args: dict[str, Any] = {"channel": channel, "include_all_metadata": True, "limit": 200}
            if cursor:
                args["cursor"] = cursor
            if message.kind == "reply" and message.thread_ts:
                resp = self.client.conversations_replies(ts=message.thread_ts, **args)
            else:
                resp = self.client.conversations_history(**args)
            for m in resp.get("messages") or []:
                payload = (m.get("metadata") or {}).get("event_payload") or {}
                if payload.get("outbox_key") == message.key:
                    return SendResult(ts=m.get("ts"), channel=channel)
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return None

    def dm_channel(self, target: str) -> str:
        """"dm:U123" or "dm:alice@example.com" -> the id of the bot's DM with that user (users.lookupByEmail for an
        address, then conversations.open; cached). Slack's errors (users_not_found, missing_scope) propagate: the
        outbox retries or fails the message, naming them."""
        if target in self._ids:
            return self._ids[target]
        kind, value = slack_user_ref(target)
        user = value
        if kind == "email":
            user = str(self.client.users_lookupByEmail(email=value)["user"]["id"])
        channel = str(self.client.conversations_open(users=user)["channel"]["id"])
        self._ids[target] = channel
        return channel

    def channel_id(self, channel: str) -> str:
        """`#name` or `name` -> id via conversations.list (cached); ids pass through."""
        if is_channel_id(channel):
            return channel
        name = channel.lstrip("#")
        if name in self._ids:
            return self._ids[name]
        cursor: str | None = None
        for _ in range(20):
            args: dict[str, Any] = {"types": "public_channel,private_channel", "exclude_archived": True, "limit": 1000}
            if cursor:
                args["cursor"] = cursor
            resp = self.client.conversations_list(**args)
            for c in resp.get("channels") or []:
                self._ids[c.get("name", "")] = c.get("id", "")
            if name in self._ids:
                return self._ids[name]
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return channel


