"""The store: the one home of the bot's state (SQLite through sqlite-utils, WAL mode, 0600).

- `core.py`: `Store`, the process's one connection and its lock; runs, findings and the learned baselines.
- `sql.py`: `transaction(store)` (one atomic unit of work, joined by nested users) and the small SQL helpers.
- `schema.py`: table creation for every table (runs, findings, baselines, actions, audit, incidents, silences,
  digests, the scheduler's state, the outbox).
- `records.py`: the plain records the store returns for the engine's baselines.

It imports nothing of the features: they hand it what to write (see `RunRecord`).
"""

from bot.store import schema
from bot.store.core import (
    AGENT_VERSIONS_KEEP_S,
    FLEET_POOLS_KEEP_S,
    RunRecord,
    Store,
    StoreError,
    store_hint,
)
from bot.store.records import AgentVersionSeen, PoolCount, PoolObservation
from bot.store.sql import execute_idempotent, insert, iso, locked, parse_iso, row, rows, transaction, update, utc

__all__ = [
    "AGENT_VERSIONS_KEEP_S",
    "FLEET_POOLS_KEEP_S",
    "AgentVersionSeen",
    "PoolCount",
    "PoolObservation",
    "RunRecord",
    "Store",
    "StoreError",
    "execute_idempotent",
    "insert",
    "iso",
    "locked",
    "parse_iso",
    "row",
    "rows",
    "schema",
    "store_hint",
    "transaction",
    "update",
    "utc",
]
