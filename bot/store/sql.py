"""Transactions and the small SQLite helpers every user of the store shares (incidents, silences, digests, the
outbox, the scheduler, actions, charts).

`Store` opens its connection in autocommit mode (`isolation_level=None`), so `with conn:` does *not* make a
group of statements atomic. Everything here that must be all-or-nothing (an incident change and the Slack
writes it causes; a message marked sent and its ts) goes through `transaction(store)`, which issues an explicit
`BEGIN IMMEDIATE` and joins an enclosing transaction instead of nesting (so the pipeline can wrap the tracker and
the outbox in one commit).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.store import Store


@contextmanager
def transaction(store: Store) -> Iterator[sqlite3.Connection]:
    """One atomic unit of work on the store's connection, serialized with every other user of the store.

    The store's RLock is held for the whole transaction: the connection is shared by the scheduler thread, the
    outbox worker and Slack listener threads, and SQLite transactions are per connection, not per thread.
    """
    with store._lock:
        conn: sqlite3.Connection = store.db.conn
        if conn.in_transaction:  # joined by an outer transaction() on this thread (the lock is re-entrant)
            yield conn
            return
        # IMMEDIATE takes the write lock up front: a busy database fails here, before any work is done.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


@contextmanager
def locked(store: Store) -> Iterator[sqlite3.Connection]:
    """The store's connection under its lock, without a transaction: each statement commits on its own (autocommit)
    and waits for another process's write lock with the busy timeout. For a plain read that must never take SQLite's
    write lock (a /metrics scrape), and for single statements whose atomicity SQLite already gives (the actions'
    INSERT OR IGNORE claim, a conditional UPDATE)."""
    with store._lock:
        yield store.db.conn


def execute_idempotent(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = (), *, attempts: int = 100,
                       pause_s: float = 0.02) -> sqlite3.Cursor:
    """One statement that may safely run twice (INSERT OR IGNORE, a conditional UPDATE), tried again while SQLite
    answers "database is locked" at once instead of waiting for the busy timeout, as it does when several
    connections have just opened the file or changed its schema."""
    for attempt in range(attempts):
        try:
            return conn.execute(sql, tuple(args))
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(pause_s)
    raise AssertionError("unreachable")


def rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, tuple(args))
    cols = [c[0] for c in cursor.description]
    return [dict(zip(cols, row, strict=True)) for row in cursor.fetchall()]


def row(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
    found = rows(conn, sql, args)
    return found[0] if found else None


def insert(conn: sqlite3.Connection, table: str, values: dict[str, Any]) -> int:
    cols = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    cursor = conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(values.values()))
    return int(cursor.lastrowid or 0)


def update(conn: sqlite3.Connection, table: str, pk: int, values: dict[str, Any]) -> None:
    if not values:
        return
    sets = ", ".join(f"{k} = ?" for k in values)
    conn.execute(f"UPDATE {table} SET {sets} WHERE id = ?", (*values.values(), pk))


# -- time ----------------------------------------------------------------------------------------------------
# Times are stored as ISO-8601 UTC strings with a fixed shape, so that string order is time order in SQL.


def utc(dt: datetime | None = None) -> datetime:
    """`dt` as an aware UTC datetime (naive values are taken as UTC); now when None."""
    if dt is None:
        return datetime.now(UTC)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return utc(dt).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return utc(datetime.fromisoformat(text))
