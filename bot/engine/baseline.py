"""The learned fleet baseline behind `agents.missing` with `expected: auto`.

Every run that listed the workers records which *pools* were registered (worker ids grouped by the pattern of
their pool: the host name with its numbers as `*`, the autoscaler resource of `dynamic_worker:<resource>:...`, the
Kubernetes glue's `clearml-id-*`), with how many workers and which queues they served. The store keeps these
observations (`Store.record_run`); the runner hands the recent ones to the snapshot (`Snapshot.fleet_history`),
so the check stays a pure function of the snapshot. A pool registered in most runs of the window is expected.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.store.records import PoolCount, PoolObservation

if TYPE_CHECKING:
    from bot.clearml.models import Worker

AUTOSCALED_PREFIX = "dynamic_worker:"


@dataclass(frozen=True)
class ExpectedPool:
    pattern: str
    seen_runs: int  # runs of the window in which the pool was registered
    total_runs: int
    typical: int  # median number of workers while registered
    queues: tuple[str, ...]

    @property
    def autoscaled(self) -> bool:
        return self.pattern.startswith(AUTOSCALED_PREFIX)


def pool_of(worker_id: str) -> str:
    """The pool a worker id belongs to, as a glob that matches its siblings.

    "dynamic_worker:gpu-a10:g5.xlarge:i-0ab12" -> "dynamic_worker:gpu-a10:*"; "clearml-id-3f2a9b" ->
    "clearml-id-*"; "gpu-node-01:gpu0" -> "gpu-node-*:*"; "train-003.cluster.local:gpu1" ->
    "train-*.cluster.local:*"; "runner-07" -> "runner-*"; "clearml-services" -> "clearml-services".
    """
    if worker_id.startswith(AUTOSCALED_PREFIX):
        parts = worker_id.split(":")
        return f"{AUTOSCALED_PREFIX}{parts[1]}:*" if len(parts) > 2 else worker_id
    if worker_id.startswith("clearml-id-"):
        return "clearml-id-*"
    host, sep, _slot = worker_id.partition(":")
    pattern = _DIGITS.sub("*", host)
    if "**" in pattern:
        pattern = _STARS.sub("*", pattern)
    return pattern + (":*" if sep else "")


# compiled once: every run maps each registered worker (thousands) to its pool
_DIGITS = re.compile(r"\d+")
_STARS = re.compile(r"\*+")


def observe(workers: list[Worker]) -> dict[str, PoolCount]:
    """The pools registered now, from the worker list."""
    counts: dict[str, int] = {}
    queues: dict[str, set[str]] = {}
    for w in workers:
        pool = pool_of(w.id)
        counts[pool] = counts.get(pool, 0) + 1
        queues.setdefault(pool, set()).update(q.id for q in w.queues if q.id)
    return {p: PoolCount(n, tuple(sorted(queues[p]))) for p, n in sorted(counts.items())}


def expected_pools(history: list[PoolObservation], share: float = 0.5) -> list[ExpectedPool]:
    """Pools registered in more than `share` of the runs in `history` (the caller picks the window)."""
    total = len(history)
    if not total:
        return []
    seen: dict[str, list[int]] = {}
    queues: dict[str, set[str]] = {}
    for obs in history:
        for pattern, pc in obs.pools.items():
            if pc.count > 0:
                seen.setdefault(pattern, []).append(pc.count)
                queues.setdefault(pattern, set()).update(pc.queues)
    out = []
    for pattern, counts in sorted(seen.items()):
        if len(counts) > share * total:
            typical = int(statistics.median(counts))
            out.append(ExpectedPool(pattern, len(counts), total, typical, tuple(sorted(queues[pattern]))))
    return out
