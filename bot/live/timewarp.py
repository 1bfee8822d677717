"""Run the simulator's clock faster than wall time.

Real agents report on wall time. With agents reporting every `interval / rate` wall seconds and the simulator's
clock running `rate` times faster, every report interval is `interval` seconds on the server's clock, so checks
with production thresholds see production-like ages, and minutes of agent life pass in seconds:

    with TimeWarp(sim.clock, rate=15):      # agents started with report_interval_s=2 -> every 30 s of sim time
        ...                                 # 100 simulated seconds take ~7 wall seconds
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from bot.sim.clock import SimClock


class TimeWarp:
    def __init__(self, clock: SimClock, rate: float, step_s: float = 0.02) -> None:
        if rate < 1:
            raise ValueError("rate must be at least 1 (time never runs backwards)")
        self.clock = clock
        self.rate = float(rate)
        self.step_s = step_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_sim: float | None = None

    def start(self) -> TimeWarp:
        self.started_sim = self.clock.time()
        self._thread = threading.Thread(target=self._run, name="timewarp", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.step_s):
            now = time.monotonic()
            # The clock already follows wall time; add the rest, in small steps so ages grow smoothly.
            self.clock.advance((now - last) * (self.rate - 1))
            last = now

    def elapsed_sim_s(self) -> float:
        """Simulated seconds since start()."""
        return self.clock.time() - (self.started_sim or self.clock.time())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TimeWarp:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
