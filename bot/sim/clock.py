"""The simulator's clock: real time plus an offset that tests (and demos) can advance.

Every timestamp the simulator writes or compares comes from here, so `advance(3600)` makes a worker that
last reported "20 s ago" look an hour stale, exactly as if an hour had passed on a real server.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class SimClock:
    """Wall-clock time shifted by an adjustable offset (seconds)."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self._offset = float(offset_s)
        self._lock = threading.Lock()

    @property
    def offset(self) -> float:
        return self._offset

    def advance(self, seconds: float) -> None:
        """Move simulated time forward (negative values move it back; useful only in tests)."""
        with self._lock:
            self._offset += float(seconds)

    def time(self) -> float:
        """Simulated epoch seconds."""
        return time.time() + self._offset

    def now(self) -> datetime:
        """Simulated now, timezone-aware UTC, microsecond precision (like Redis-backed worker fields)."""
        return datetime.fromtimestamp(self.time(), UTC)

    def now_ms(self) -> datetime:
        """Simulated now truncated to milliseconds, like the Mongo-backed task/queue fields of a real server."""
        return ms_precision(self.now())


def ms_precision(value: datetime) -> datetime:
    """Drop sub-millisecond digits (Mongo stores datetimes with millisecond precision)."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def to_epoch_ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)
