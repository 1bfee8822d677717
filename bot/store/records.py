"""Rows the store keeps for the engine's learned baselines, as plain records (bot/engine/baseline.py reads them):
defined here so that the store imports nothing of the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class PoolCount:
    count: int
    queues: tuple[str, ...] = ()


@dataclass(frozen=True)
class PoolObservation:
    """The pools registered at one run: pattern -> how many workers and the queue ids they served."""

    at: datetime
    pools: dict[str, PoolCount] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentVersionSeen:
    """What server.compatibility read from a worker's task log: the clearml-agent version in its banner (None:
    the log had none), which task's log, and when. The store keeps the latest per worker, so later runs read only
    the logs of workers whose version is not known yet (or that re-registered since, e.g. after an upgrade)."""

    worker: str
    version: str | None
    task_id: str
    task_name: str
    seen_at: datetime
