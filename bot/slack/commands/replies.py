"""One slash command's conversation with its user: a "running…" placeholder in the channel, replaced by the
result (`chat.update`); mistakes answered privately; and when the bot cannot post in the channel (a private channel
it was not invited to, a DM), a private answer through the command's `response_url` that names the channel and says
how to fix it.

All methods block (they are Slack writes through the outbox); jobs call them through `WorkPool.io`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from bot.slack.commands.help import render_channel_problem
from bot.slack.delivery.sink import Posted, SlackSink, SlackWriteError
from bot.slack.messages.common import SlackMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandRequest:
    """The fields of a slash command payload the bot uses (same shape over HTTP and Socket Mode)."""

    command: str
    text: str
    user_id: str
    channel_id: str
    channel_name: str = ""
    response_url: str | None = None
    team_id: str | None = None
    # when the command arrived (the read window's clock, monotonic): shared ClearML data fetched no earlier than the
    # window before it may answer it, however long it waited for the work pool
    received_at: float = field(default_factory=time.monotonic, compare=False)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], *, received_at: float | None = None) -> CommandRequest:
        return cls(
            received_at=time.monotonic() if received_at is None else received_at,
            command=str(payload.get("command") or "/clearml"),
            text=str(payload.get("text") or ""),
            user_id=str(payload.get("user_id") or ""),
            channel_id=str(payload.get("channel_id") or ""),
            channel_name=str(payload.get("channel_name") or ""),
            response_url=payload.get("response_url") or None,
            team_id=payload.get("team_id") or None,
        )


class Reply:
    def __init__(self, outbox: SlackSink, request: CommandRequest) -> None:
        self.outbox = outbox
        self.request = request
        self.posted: Posted | None = None
        self.private = False  # the channel refused us: everything goes to the user privately

    def start(self, placeholder: SlackMessage) -> None:
        """Post the placeholder where the command was typed; fall back to a private answer if we cannot."""
        try:
            self.posted = self.outbox.post(self.request.channel_id, placeholder)
        except SlackWriteError as exc:
            self.private = True
            note = exc.explain() + " I'll answer you privately here meanwhile."
            log.info("cannot post in %s (%s): answering privately", self.request.channel_id, exc.error)
            self.ephemeral(render_channel_problem(note))

    def finish(self, message: SlackMessage) -> None:
        """Replace the placeholder with the result (or send it privately)."""
        if self.posted is not None and not self.private:
            try:
                self.outbox.update(self.posted, message)
                return
            except SlackWriteError as exc:
                log.warning("could not update the placeholder (%s): posting the result anew", exc.error)
                try:
                    self.posted = self.outbox.post(self.request.channel_id, message)
                    return
                except SlackWriteError:
                    pass
        self.ephemeral(message)

    def reject(self, message: SlackMessage) -> None:
        """The user's input was wrong: remove the placeholder from the channel and tell only them."""
        if self.posted is not None:
            try:
                self.outbox.delete(self.posted)
            except SlackWriteError as exc:
                log.warning("could not delete the placeholder: %s", exc.error)
            self.posted = None
        self.ephemeral(message)

    def thread(self, message: SlackMessage) -> Posted | None:
        """A reply in the thread under the result (e.g. every finding of `run --all`)."""
        if self.posted is None or self.private:
            self.ephemeral(message)
            return None
        try:
            return self.outbox.post(self.posted.channel, message, thread_ts=self.posted.ts)
        except SlackWriteError as exc:
            log.warning("thread reply failed: %s", exc.error)
            return None

    def ephemeral(self, message: SlackMessage) -> None:
        """Only the user sees it (`SlackSink.tell_privately`: response_url, else chat.postEphemeral)."""
        self.outbox.tell_privately(message, user=self.request.user_id, channel=self.request.channel_id,
                                   response_url=self.request.response_url)
