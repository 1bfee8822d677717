"""The one way out to Slack for unattended writes: a durable queue (queue.py), the sender that turns a queued
message into a Web API call (sender.py) and the worker thread that drains the queue through it (worker.py).
Reports of scheduled runs are queued by reports.py; interactive writes, and the `SlackSink` the rest of the bot
holds (the incident pipeline's MessageSink), are sink.py."""

from bot.slack.delivery.queue import (
    DrainReport,
    MessageKind,
    Outbox,
    OutboxError,
    OutboxMessage,
    Sender,
    SendResult,
)
from bot.slack.delivery.sender import WebClientSender
from bot.slack.delivery.worker import OutboxWorker

__all__ = ["DrainReport", "MessageKind", "Outbox", "OutboxError", "OutboxMessage", "OutboxWorker", "SendResult",
           "Sender", "WebClientSender"]
