"""The durable outbox: every Slack write (post, update, thread reply, ephemeral) is a row in SQLite first.

Why: Slack rate-limits (429 + Retry-After), has bad minutes (5xx, timeouts), and the bot can be killed at any
moment. A message that only lives in memory is lost in all three cases; a message sent twice makes a second
incident thread. So:

- `enqueue()` writes the message with a *dedupe key* (`INSERT OR IGNORE`): queueing the same logical message
  twice (a retried pipeline step, a replayed button) is a no-op. Call it inside the same `transaction()` as the
  state change that causes it, and the two commit together.
- `drain(sender, now)` sends due messages in enqueue order *per channel* (a retrying message holds back the
  later messages of its channel, so a thread never reads out of order), through an injected sender (the real
  one is `WebClientSender`, a thin slack_sdk WebClient wrapper). Transient failures (429, 5xx, timeouts,
  connection errors) are retried with exponential backoff; a 429's Retry-After pauses the whole outbox for that
  long, because Slack's limits are per method and workspace, not per message. Permanent errors
  (channel_not_found, not_in_channel, invalid_auth, ...) mark the message failed with a reason that says what
  to fix; its thread replies and updates fail with it.
- A thread reply or an update names its root by key (`root_key`); it waits until the root is posted, then uses
  the root's ts (and channel id: `chat.update` needs the id, routing may give a `#name`).
- Updates to the same message can *supersede* each other: a queued, not yet sent update is dropped when a newer
  one for the same message arrives (the root message shows state, and only the latest state matters; during a
  429 storm this is what keeps the backlog from growing with every run).

Exactly once across `kill -9`: a row is marked `sending` (committed) before the HTTP call and `sent` with its ts
(committed) after it. A crash in between leaves `sending`; the next process marks such rows *uncertain*. Posts
and replies carry their dedupe key in Slack message metadata (`event_payload.outbox_key`), so before re-sending
an uncertain one we look for it with `conversations.history` / `conversations.replies` (include_all_metadata)
and, if it is there, record its ts instead of posting again. Updates are idempotent (same content, same ts) and
are simply re-sent. Ephemeral messages cannot be looked up, so an uncertain one is dropped (marked failed):
showing a user a stale reply twice is worse than not at all. The residual window: if the lookup itself fails
(missing `channels:history`/`groups:history` scope, Slack down), `unverifiable` decides: "resend" (default;
at-least-once, a duplicate is possible) or "fail" (at-most-once, the message is marked failed for a human).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bot import metrics
from bot.errors import BotError
from bot.redact import redact_tree
from bot.store import insert, iso, locked, parse_iso, row, rows, schema, transaction, update, utc

if TYPE_CHECKING:
    from bot.store import Store

log = logging.getLogger("bot.outbox")  # one logger name for the outbox's queue, sender and worker

MessageKind = Literal["post", "update", "reply", "ephemeral", "file"]
KINDS: tuple[str, ...] = ("post", "update", "reply", "ephemeral", "file")
SLACK_METHODS = {"post": "chat.postMessage", "reply": "chat.postMessage", "update": "chat.update",
                 "ephemeral": "chat.postEphemeral", "file": "files.completeUploadExternal"}
METADATA_EVENT = "clearml_chatops"

# Slack errors that no retry can fix, with what to do about them. {channel} is filled in.
PERMANENT_ERRORS: dict[str, str] = {
    "channel_not_found": "channel {channel} was not found: check the routing (playbook `channel`, slack.routes, "
    "slack.default_channel); a private channel needs the bot invited first",
    "not_in_channel": "the bot is not a member of {channel}: invite it there (`/invite @<bot>`)",
    "is_archived": "channel {channel} is archived: route its messages to another channel",
    "invalid_auth": "Slack rejected the bot token (invalid_auth): set a valid SLACK_BOT_TOKEN and restart",
    "not_authed": "no bot token was sent (not_authed): set SLACK_BOT_TOKEN and restart",
    "account_inactive": "the bot's token belongs to a deactivated account or uninstalled app: reinstall the app",
    "token_revoked": "the bot token was revoked: reinstall the app and set the new SLACK_BOT_TOKEN",
    "token_expired": "the bot token expired: refresh or reinstall, then set SLACK_BOT_TOKEN",
    "missing_scope": "the bot token lacks a scope for this call: add it to manifest.yml and reinstall the app",
    "restricted_action": "the workspace does not let the bot post in {channel}",
    "message_not_found": "the message to update no longer exists in {channel} (deleted?)",
    "cant_update_message": "Slack refused to edit the message in {channel} (not posted by this bot?)",
    "edit_window_closed": "the message in {channel} can no longer be edited",
    "msg_too_long": "the message is too long for Slack: a renderer bug, please report it",
    "invalid_blocks": "Slack rejected the message's blocks: a renderer bug, please report it",
    "invalid_blocks_format": "Slack rejected the message's blocks: a renderer bug, please report it",
    "no_text": "the message has no text: a renderer bug, please report it",
    "invalid_arguments": "Slack rejected the call's arguments: a bug, please report it",
    "user_not_in_channel": "the user is not in {channel}, so an ephemeral message cannot reach them",
}
# These make every later message fail the same way: stop the drain for a while instead of burning the queue.
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"})
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout", "team_added_to_org"}
)


class OutboxError(BotError, ValueError):
    """A message that cannot be queued as asked (missing root, unknown kind)."""


@dataclass(frozen=True)
class OutboxMessage:
    """A row of the outbox as handed to a sender: `thread_ts` / `target_ts` / `channel_id` come from the root."""

    id: int
    key: str
    channel: str
    kind: MessageKind
    payload: dict[str, Any]
    root_key: str | None
    attempts: int
    created_at: datetime
    uncertain: bool = False
    attempt_started_at: datetime | None = None
    channel_id: str | None = None  # the channel id when known (from the root's response), else None
    thread_ts: str | None = None  # for replies: the root's ts
    target_ts: str | None = None  # for updates: the ts of the message to edit

    @property
    def text(self) -> str:
        return str(self.payload.get("text") or "")


@dataclass(frozen=True)
class SendResult:
    ts: str | None
    channel: str | None = None  # the channel id Slack answered with


class Sender(Protocol):
    """Does one Slack call for a message; raises slack_sdk's SlackApiError (or a network error) on failure.

    Optionally also `find_posted(message, since) -> SendResult | None`, used to reconcile a message that may
    have been sent just before a crash."""

    def __call__(self, message: OutboxMessage) -> SendResult: ...


@dataclass
class DrainReport:
    sent: int = 0
    reconciled: int = 0
    retried: int = 0
    failed: int = 0
    pending: int = 0
    next_due: datetime | None = None  # when the next message becomes due (None: nothing waiting)
    paused_until: datetime | None = None
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Outcome:
    kind: Literal["sent", "retry", "failed", "paused"]
    error: str = ""


class Outbox:
    def __init__(
        self,
        store: Store,
        *,
        base_backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        max_age_s: float = 24 * 3600.0,
        max_unknown_attempts: int = 5,
        auth_pause_s: float = 300.0,
        unverifiable: Literal["resend", "fail"] = "resend",
        rng: random.Random | None = None,
        recover: bool = True,
        secrets: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        """One Outbox per process: `recover` treats every `sending` row as left over by a crashed process.

        `secrets`: the known secrets (ClearML keys, Slack tokens) redacted from every row before it is written, with
        every credential-looking string (`redact_payload`): a queued message is in SQLite, so this is where bot text
        leaves for the store and, later, for Slack; the sender sends the rows as they are."""
        self.store = store
        self.secrets = secrets or (lambda: ())
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_age_s = max_age_s
        self.max_unknown_attempts = max_unknown_attempts
        self.auth_pause_s = auth_pause_s
        self.unverifiable = unverifiable
        self.rng = rng  # None: no jitter (tests); production passes random.Random() to spread retries
        self.paused_until: datetime | None = None
        self.last_auth_error: str | None = None
        self._drain_lock = threading.Lock()
        self._reconciled = 0
        self._listeners: list[Callable[[], None]] = []
        ensure_schema(store)
        if recover:
            self.recover()

    # -- queueing ---------------------------------------------------------------------------------------------

    def enqueue(
        self,
        key: str,
        channel: str,
        kind: MessageKind,
        payload: dict[str, Any],
        *,
        root_key: str | None = None,
        supersede: bool = False,
        now: datetime | None = None,
    ) -> bool:
        """Queue one Slack write; False if a message with this key is already queued (or was sent).

        `payload`: `text` (always: it is the notification and accessibility fallback), optional `blocks` (dicts,
        or slack_sdk Block objects), `metadata`, `reply_broadcast`, `user` (ephemeral), `unfurl_links`. For an
        update or reply, `root_key` names the message posted by this outbox that it edits or answers; for
        messages not posted through the outbox, give `payload["ts"]` / `payload["thread_ts"]` instead (and,
        for an update, the channel *id*: `chat.update` does not take a `#name`)."""
        if kind not in KINDS:
            raise OutboxError(f"unknown message kind {kind!r}: one of {', '.join(KINDS)}")
        if kind == "update" and not (root_key or payload.get("ts")):
            raise OutboxError("an update needs root_key (or payload['ts']): which message does it edit?")
        if kind == "ephemeral" and not payload.get("user"):
            raise OutboxError("an ephemeral message needs payload['user']")
        if kind == "file" and not (isinstance(payload.get("file"), dict) and payload["file"].get("content_b64")):
            raise OutboxError("a file needs payload['file'] with filename, title, alt_txt and content_b64")
        if not str(payload.get("text") or "").strip():
            raise OutboxError("a message needs a top-level `text` (notifications and screen readers use it)")
        now = utc(now)
        body = json.dumps(redact_payload(plain(payload), self.secrets()), default=str)
        with transaction(self.store) as conn:
            if row(conn, "SELECT id FROM outbox WHERE key = ?", (key,)) is not None:
                return False
            if supersede and kind == "update" and root_key:
                # Only rows never attempted: one in flight (or uncertain) may already be on Slack.
                conn.execute(
                    "UPDATE outbox SET status = 'superseded', last_error = ? WHERE root_key = ? AND kind = 'update' "
                    "AND status = 'pending' AND attempts = 0",
                    (f"superseded by {key}", root_key),
                )
            insert(
                conn,
                "outbox",
                {
                    "key": key,
                    "channel": channel,
                    "kind": kind,
                    "root_key": root_key,
                    "payload": body,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": iso(now),
                    "created_at": iso(now),
                },
            )
        for listener in list(self._listeners):
            listener()
        return True

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called after each enqueue (the worker thread uses it to wake up at once)."""
        self._listeners.append(callback)

    # -- sending ----------------------------------------------------------------------------------------------

    def recover(self) -> int:
        """Rows left `sending` by a process that died mid-call: pending again, but *uncertain* (look before
        re-posting). Returns how many."""
        with transaction(self.store) as conn:
            cursor = conn.execute("UPDATE outbox SET status = 'pending', uncertain = 1 WHERE status = 'sending'")
            count = cursor.rowcount
        if count:
            log.warning("outbox: %d message(s) were being sent when the bot stopped; checking Slack before resending",
                        count)
        return count

    def drain(self, sender: Sender, now: datetime | None = None, *, max_sends: int = 100) -> DrainReport:
        """Send what is due at `now`, in order per channel. Safe to call from one thread at a time (a second
        concurrent call returns at once)."""
        now = utc(now)
        report = DrainReport()
        if not self._drain_lock.acquire(blocking=False):
            return report
        try:
            attempts = 0
            while attempts < max_sends:
                if self.paused_until is not None and now < self.paused_until:
                    break
                batch, orphans, _ = self._due(now)
                report.failed += orphans
                if not batch:
                    break
                stop = False
                for message in batch:
                    attempts += 1
                    outcome = self._send(message, sender, now)
                    if outcome.kind == "sent":
                        report.sent += 1
                    elif outcome.kind == "retry":
                        report.retried += 1
                        report.errors.append(outcome.error)
                    elif outcome.kind == "failed":
                        report.failed += 1
                        report.errors.append(outcome.error)
                    else:  # paused: rate limited or auth failure, stop everything
                        report.errors.append(outcome.error)
                        stop = True
                        break
                    if attempts >= max_sends:
                        break
                if stop:
                    break
            report.reconciled = self._reconciled
            self._reconciled = 0
        finally:
            self._drain_lock.release()
        report.paused_until = self.paused_until if self.paused_until and self.paused_until > now else None
        report.pending, report.next_due = self._backlog(now)
        return report

    def _due(self, now: datetime) -> tuple[list[OutboxMessage], int, datetime | None]:
        """The head message of each channel if it is due, how many orphans were failed (their root failed), and
        when the earliest head that is not due yet will be (so the worker sleeps exactly until then)."""
        out: list[OutboxMessage] = []
        blocked: set[str] = set()
        waiting_roots: set[str] = set()
        orphans = 0
        next_due: datetime | None = None
        with transaction(self.store) as conn:
            pending = rows(conn, "SELECT * FROM outbox WHERE status = 'pending' ORDER BY id")
            roots: dict[str, dict[str, Any] | None] = {}
            for r in pending:
                channel = r["channel"]
                if channel in blocked:
                    continue
                root: dict[str, Any] | None = None
                if r["root_key"]:
                    if r["root_key"] in waiting_roots:
                        continue
                    if r["root_key"] not in roots:
                        roots[r["root_key"]] = row(conn, "SELECT * FROM outbox WHERE key = ?", (r["root_key"],))
                    root = roots[r["root_key"]]
                    if root is None or root["status"] in ("failed", "superseded"):
                        why = "was never queued" if root is None else f"failed: {root['last_error']}"
                        self._fail(conn, r, f"its root message {r['root_key']} {why}", now)
                        orphans += 1
                        continue
                    if root["status"] != "sent":
                        # Wait for the root; later messages of the channel that do not depend on it still go.
                        waiting_roots.add(r["root_key"])
                        continue
                due = parse_iso(r["next_attempt_at"]) or now
                blocked.add(channel)  # one message per channel per round, and nothing overtakes a retrying one
                if due > now:
                    next_due = due if next_due is None else min(next_due, due)
                    continue
                out.append(self._message(r, root))
        return out, orphans, next_due

    def _send(self, message: OutboxMessage, sender: Sender, now: datetime) -> _Outcome:
        with transaction(self.store) as conn:
            # Durable before the call: after a crash, `sending` says "this may already be on Slack".
            conn.execute(
                "UPDATE outbox SET status = 'sending', attempts = attempts + 1, attempt_started_at = ? WHERE id = ?",
                (iso(now), message.id),
            )
        if message.uncertain:
            settled = self._reconcile(message, sender, now)
            if settled is not None:
                return settled
        try:
            result = sender(message)
        except Exception as exc:
            metrics.slack_call(SLACK_METHODS[message.kind], _classify(exc)[1])
            return self._failed_attempt(message, exc, now)
        metrics.slack_call(SLACK_METHODS[message.kind])
        with transaction(self.store) as conn:
            conn.execute(
                "UPDATE outbox SET status = 'sent', ts = ?, channel_id = ?, sent_at = ?, last_error = NULL, "
                "uncertain = 0 WHERE id = ?",
                (result.ts or message.target_ts, result.channel or message.channel_id, iso(now), message.id),
            )
            if message.kind == "file":  # the bytes are on Slack now: keep the row, not the image
                payload = {**message.payload, "file": {k: v for k, v in message.payload["file"].items()
                                                       if k != "content_b64"}}
                conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (json.dumps(payload), message.id))
        return _Outcome("sent")

    def _reconcile(self, message: OutboxMessage, sender: Sender, now: datetime) -> _Outcome | None:
        """An uncertain message: was it posted before the crash? None means "go ahead and send"."""
        if message.kind in ("update", "file"):
            # an update is idempotent; a file (a chart) carries no metadata to look it up by, and showing a chart
            # twice after a crash mid-upload is better than not at all
            return None
        if message.kind == "ephemeral":
            with transaction(self.store) as conn:
                r = row(conn, "SELECT * FROM outbox WHERE id = ?", (message.id,))
                assert r is not None
                self._fail(conn, r, "interrupted by a restart; ephemeral messages cannot be checked, so not resent",
                           now)
            return _Outcome("failed", "ephemeral interrupted by a restart")
        finder = getattr(sender, "find_posted", None)
        since = message.attempt_started_at or message.created_at
        if finder is not None:
            try:
                found = finder(message, since)
            except Exception as exc:
                status, error, _ = _classify(exc)
                if status == 0 or (status or 0) >= 500 or status == 429 or error in TRANSIENT_ERRORS:
                    # Slack is unwell: posting now would likely fail too, and blindly could double-post.
                    # Retry later (the row stays uncertain), with the usual backoff and Retry-After.
                    return self._failed_attempt(message, exc, now)
                log.warning("outbox: cannot check whether %s was already posted (%s): %s", message.key, error,
                            "resending" if self.unverifiable == "resend" else "marking it failed")
                if self.unverifiable == "fail":
                    with transaction(self.store) as conn:
                        r = row(conn, "SELECT * FROM outbox WHERE id = ?", (message.id,))
                        assert r is not None
                        self._fail(conn, r, f"may or may not have been posted before a restart ({exc})", now)
                    return _Outcome("failed", str(exc))
            else:
                if found is not None:
                    with transaction(self.store) as conn:
                        conn.execute(
                            "UPDATE outbox SET status = 'sent', ts = ?, channel_id = ?, sent_at = ?, uncertain = 0, "
                            "last_error = 'reconciled after a restart' WHERE id = ?",
                            (found.ts, found.channel or message.channel_id, iso(now), message.id),
                        )
                    self._reconciled += 1
                    return _Outcome("sent")
                return None
        elif self.unverifiable == "fail":
            with transaction(self.store) as conn:
                r = row(conn, "SELECT * FROM outbox WHERE id = ?", (message.id,))
                assert r is not None
                self._fail(conn, r, "may or may not have been posted before a restart (no way to check)", now)
            return _Outcome("failed", "unverifiable")
        return None

    def _failed_attempt(self, message: OutboxMessage, exc: Exception, now: datetime) -> _Outcome:
        status, error, retry_after = _classify(exc)
        with transaction(self.store) as conn:
            r = row(conn, "SELECT * FROM outbox WHERE id = ?", (message.id,))
            assert r is not None
            channel = message.channel
            if error in PERMANENT_ERRORS:
                reason = f"{error}: {PERMANENT_ERRORS[error].format(channel=channel)}"
                self._fail(conn, r, reason, now)
                if error in AUTH_ERRORS:
                    self.last_auth_error = reason
                    self.paused_until = now + timedelta(seconds=self.auth_pause_s)
                    log.error("outbox: %s; pausing Slack writes for %ss", reason, int(self.auth_pause_s))
                    return _Outcome("paused", reason)
                log.error("outbox: message %s failed: %s", message.key, reason)
                return _Outcome("failed", reason)
            age = (now - message.created_at).total_seconds()
            described = f"HTTP {status}: {error}" if status else error
            if age > self.max_age_s:
                self._fail(conn, r, f"gave up after {int(age)}s of errors; last: {described}", now)
                return _Outcome("failed", described)
            if status == 429 or error == "ratelimited":
                wait = retry_after if retry_after is not None else 30.0
                resume = now + timedelta(seconds=wait)
                update(conn, "outbox", r["id"], {"status": "pending", "next_attempt_at": iso(resume),
                                                 "last_error": f"rate limited; Retry-After {wait:g}s"})
                self.paused_until = max(self.paused_until or resume, resume)
                return _Outcome("paused", f"rate limited for {wait:g}s")
            known_transient = status == 0 or (status is not None and status >= 500) or error in TRANSIENT_ERRORS
            if not known_transient and r["attempts"] >= self.max_unknown_attempts:
                self._fail(conn, r, f"{described} (after {r['attempts']} attempts)", now)
                return _Outcome("failed", described)
            delay = min(self.max_backoff_s, self.base_backoff_s * 2 ** max(0, r["attempts"] - 1))
            if retry_after is not None:
                delay = max(delay, retry_after)
            if self.rng is not None:
                delay *= self.rng.uniform(0.8, 1.2)
            resume = now + timedelta(seconds=delay)
            values: dict[str, Any] = {"status": "pending", "next_attempt_at": iso(resume), "last_error": described}
            if message.kind in ("post", "reply") and (status == 0 or (status or 0) >= 500):
                # A timeout or a 5xx does not say the message was not posted (the request may have been
                # processed before the answer was lost): look for it before posting it again.
                values["uncertain"] = 1
            update(conn, "outbox", r["id"], values)
        log.warning("outbox: %s not sent (%s); retrying in %.1fs", message.key, described, delay)
        return _Outcome("retry", described)

    def _fail(self, conn: Any, r: dict[str, Any], reason: str, now: datetime) -> None:
        update(conn, "outbox", r["id"], {"status": "failed", "last_error": reason, "failed_at": iso(now)})

    def _message(self, r: dict[str, Any], root: dict[str, Any] | None) -> OutboxMessage:
        payload = json.loads(r["payload"])
        channel_id = (root or {}).get("channel_id") or r["channel_id"]
        thread_ts = payload.get("thread_ts")
        target_ts = payload.get("ts")
        if root is not None:
            if r["kind"] == "update":
                target_ts = root["ts"]
            else:
                thread_ts = root["ts"]
        return OutboxMessage(
            id=r["id"],
            key=r["key"],
            channel=r["channel"],
            kind=r["kind"],
            payload=payload,
            root_key=r["root_key"],
            attempts=r["attempts"],
            created_at=parse_iso(r["created_at"]),  # type: ignore[arg-type]
            uncertain=bool(r["uncertain"]),
            attempt_started_at=parse_iso(r["attempt_started_at"]),
            channel_id=channel_id,
            thread_ts=thread_ts,
            target_ts=target_ts,
        )

    def _backlog(self, now: datetime) -> tuple[int, datetime | None]:
        ready, _, later = self._due(now)
        with transaction(self.store) as conn:
            r = row(conn, "SELECT count(*) AS n FROM outbox WHERE status = 'pending'")
        assert r is not None
        due = now if ready else later
        if due is not None and self.paused_until is not None and self.paused_until > now:
            due = max(due, self.paused_until)
        return int(r["n"]), due

    # -- inspection and repair --------------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        with transaction(self.store) as conn:
            return row(conn, "SELECT * FROM outbox WHERE key = ?", (key,))

    def message_ref(self, key: str) -> tuple[str, str] | None:
        """(channel id, ts) of a sent message, e.g. an incident's root, for links and `thread_ts`."""
        r = self.get(key)
        if r is None or r["status"] != "sent" or not r["ts"]:
            return None
        return (r["channel_id"] or r["channel"], r["ts"])

    def key_of_posted(self, channel_id: str, ts: str, like: str) -> str | None:
        """The key of the post now at (channel id, ts) whose key matches the SQL LIKE pattern `like` (e.g.
        "incident:%:root": which incident a click in a thread belongs to); None when none is. A plain read: a click
        never takes SQLite's write lock."""
        with locked(self.store) as conn:
            found = rows(conn, "SELECT key, channel_id FROM outbox WHERE ts = ? AND kind = 'post' AND key LIKE ?",
                         (ts, like))
        return next((str(r["key"]) for r in found if not r["channel_id"] or r["channel_id"] == channel_id), None)

    def permalink(self, channel_id: str, ts: str, *, fetch: bool = True) -> str | None:
        """None: the queue has no Slack client to ask for a permalink (the `SlackSink` in front of it has). Part of
        the incident pipeline's `MessageSink`, which a bare queue also serves (tests, benchmarks)."""
        return None

    def depth(self) -> int:
        """Messages not yet sent (for /metrics and /healthz)."""
        with transaction(self.store) as conn:
            r = row(conn, "SELECT count(*) AS n FROM outbox WHERE status IN ('pending', 'sending')")
        return int(r["n"]) if r else 0

    def failed_count(self) -> int:
        """Messages that failed for good (for /metrics): a plain read under the store's lock, so a scrape never
        takes SQLite's write lock."""
        with locked(self.store) as conn:
            r = row(conn, "SELECT count(*) AS n FROM outbox WHERE status = 'failed'")
        return int(r["n"]) if r else 0

    def failed(self, limit: int = 50) -> list[dict[str, Any]]:
        with transaction(self.store) as conn:
            return rows(conn, "SELECT * FROM outbox WHERE status = 'failed' ORDER BY id DESC LIMIT ?", (limit,))

    def refused_posts(self, key_like: str, errors: Iterable[str]) -> list[dict[str, Any]]:
        """Failed posts whose key matches `key_like` (SQL LIKE) and whose error is one of `errors` (channel
        problems a re-route can fix: not_in_channel, channel_not_found)."""
        codes = tuple(errors)
        with transaction(self.store) as conn:
            found = rows(conn, "SELECT * FROM outbox WHERE status = 'failed' AND kind = 'post' AND key LIKE ? "
                               "ORDER BY id", (key_like,))
        return [r for r in found if str(r["last_error"] or "").split(":", 1)[0] in codes]

    def retire(self, key: str, new_key: str) -> bool:
        """Rename a message's key, freeing `key` for a new message (an incident root posted again elsewhere).
        Messages already sent or failed under it follow the rename; pending ones stay with `key` (the new one)."""
        with transaction(self.store) as conn:
            if row(conn, "SELECT id FROM outbox WHERE key = ?", (key,)) is None:
                return False
            conn.execute("UPDATE outbox SET key = ? WHERE key = ?", (new_key, key))
            conn.execute("UPDATE outbox SET root_key = ? WHERE root_key = ? AND status IN ('sent', 'superseded')",
                         (new_key, key))
        return True

    def requeue_orphans(self, root_key: str, channel: str, now: datetime | None = None) -> int:
        """Thread replies (and files) that failed because their root failed: pending again under the root now queued as
        `root_key` in `channel`. Failed edits are dropped (superseded): the new root shows the current state."""
        now = utc(now)
        with transaction(self.store) as conn:
            conn.execute("UPDATE outbox SET status = 'superseded', last_error = 'root re-posted' WHERE root_key = ? "
                         "AND status = 'failed' AND kind = 'update'", (root_key,))
            return conn.execute(
                "UPDATE outbox SET status = 'pending', channel = ?, attempts = 0, next_attempt_at = ?, created_at = ?, "
                "last_error = NULL WHERE root_key = ? AND status = 'failed' AND kind IN ('reply', 'file')",
                (channel, iso(now), iso(now), root_key),
            ).rowcount

    def retry_failed(self, *, channel: str | None = None, now: datetime | None = None) -> int:
        """Requeue failed messages (after the channel was fixed or the bot invited). Returns how many."""
        sql = "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, created_at = ? " \
              "WHERE status = 'failed'"
        args: list[Any] = [iso(utc(now)), iso(utc(now))]
        if channel is not None:
            sql += " AND channel = ?"
            args.append(channel)
        with transaction(self.store) as conn:
            count = conn.execute(sql, args).rowcount
        self.paused_until = None
        return count

    def prune(self, now: datetime | None = None, *, keep_days: float = 30.0) -> int:
        """Delete old superseded/failed rows and old sent non-root rows. Roots are kept: a long incident may
        still need their ts."""
        cutoff = iso(utc(now) - timedelta(days=keep_days))
        with transaction(self.store) as conn:
            return conn.execute(
                "DELETE FROM outbox WHERE created_at < ? AND (status IN ('superseded', 'failed') "
                "OR (status = 'sent' AND kind != 'post'))",
                (cutoff,),
            ).rowcount


def ensure_schema(store: Store) -> None:
    schema.ensure_outbox(store)  # bot/store/schema.py


def plain(value: Any) -> Any:
    """slack_sdk Block Kit objects -> dicts (`to_dict()` also enforces Block Kit limits before anything is sent)."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def redact_payload(payload: dict[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A queued message as it may be stored and sent: every text redacted (`redact_tree`: text, blocks, metadata, a
    file's filename, title, alt text and initial comment), except a file's bytes (`content_b64` is not text)."""
    file = payload.get("file")
    if not (isinstance(file, dict) and "content_b64" in file):
        return redact_tree(payload, secrets)
    content = file["content_b64"]
    redacted = redact_tree({**payload, "file": {k: v for k, v in file.items() if k != "content_b64"}}, secrets)
    redacted["file"]["content_b64"] = content
    return redacted


def _classify(exc: Exception) -> tuple[int | None, str, float | None]:
    """(HTTP status or 0 for network errors, Slack error code or exception name, Retry-After seconds)."""
    from slack_sdk.errors import SlackApiError

    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", None)
        data = getattr(response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        headers = getattr(response, "headers", {}) or {}
        retry_after = None
        for name in ("Retry-After", "retry-after"):
            raw = headers.get(name)
            if isinstance(raw, list):
                raw = raw[0] if raw else None
            if raw is not None:
                try:
                    retry_after = max(0.0, float(raw))
                except ValueError:
                    retry_after = None
                break
        return status, str(error or (f"http_{status}" if status else "unknown_error")), retry_after
    return 0, f"{type(exc).__name__}: {exc}", None
