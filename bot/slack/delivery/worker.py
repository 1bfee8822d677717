"""The outbox's worker thread: drains the queue through the sender (bot/slack/delivery/queue.py has the why)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from bot.slack.delivery.queue import DrainReport, Outbox, Sender

log = logging.getLogger("bot.outbox")  # one logger name for the outbox's queue, sender and worker


class OutboxWorker:
    """Drains the outbox in a background thread: at once after an enqueue, else when the next retry is due."""

    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        idle_s: float = 5.0,
    ) -> None:
        self.outbox = outbox
        self.sender = sender
        self.clock = clock
        self.idle_s = idle_s
        self.last_report: DrainReport | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        outbox.add_listener(self._wake.set)

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="outbox-worker", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            now = self.clock()
            try:
                report = self.outbox.drain(self.sender, now)
                self.last_report = report
                wait = self.idle_s
                if report.next_due is not None:
                    wait = min(self.idle_s, max(0.05, (report.next_due - now).total_seconds()))
            except Exception:  # a store hiccup must not kill the worker: log it and try again later
                log.exception("outbox worker: drain failed")
                wait = self.idle_s
            self._wake.wait(wait)
