"""Small helpers shared by every check module: parameter types, name matching, subjects and evidence.

This module is imported by all of `bot/checks/*`; its names are a stable API for check authors:

- `Duration`, `OptionalDuration`: pydantic field types that accept "90s", "2m", "6h", "1h30m" or a number of
  seconds and hold seconds as a float.
- `Patterns`: a list of shell-style globs (`gpu-*`, `*:gpu?`); `matches_any(name, patterns)`.
- `iso(dt)`, `when(snap, dt)`: JSON-safe timestamps, and `{"at", "age_s", "age"}` evidence for a moment.
- `server_subject`, `worker_subject`, `queue_subject`, `task_subject`: `Subject` builders.
- `task_ref(task_id, task)`: a compact evidence entry for a task.
- `redact_subjects(subjects, secrets)`: a finding's `related` subjects with secrets redacted from ids and names.
- `severity_for(value, warning, critical)`: the usual two-threshold escalation.
- `worker_age_s`, `is_live`, `workers_by_queue`, `worker_ref`: worker liveness on the server's clock.
- `entry_times`, `oldest_waits`: when queue entries were enqueued (entry `added`, else the task's
  `status_changed`).
- `CheckError`: raise it when a check cannot do its job (odd response shape, missing permission); the runner
  turns it into an `error` finding that carries the message.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field

from bot.durations import format_duration, parse_duration
from bot.engine.findings import Severity, Subject
from bot.errors import BotError
from bot.redact import redact, redact_tree

if TYPE_CHECKING:
    from bot.clearml.models import Queue, Task, Worker
    from bot.engine.snapshot import Snapshot


class CheckError(BotError, RuntimeError):
    """A check could not do its job; the message says why (and what to change) for the error finding."""


def _seconds(value: Any) -> float:
    # parse_duration raises ValueError with the accepted forms, which pydantic reports with the param name
    return parse_duration(value)


def _optional_seconds(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
        return None
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]
"""Seconds; accepts "90s", "2m", "6h", "1d", "1h30m" or a number (seconds)."""

OptionalDuration = Annotated[float | None, BeforeValidator(_optional_seconds)]
"""Like `Duration`, but `null` / "off" disables the threshold."""


def _patterns(value: Any) -> list[str]:
    # a single string is a common slip in YAML (`queues: gpu-*`): accept it as a one-element list
    if isinstance(value, str):
        return [value]
    return value  # pydantic validates the list type


Patterns = Annotated[list[str], BeforeValidator(_patterns)]
"""Shell-style globs matched case-sensitively against names or ids: `*`, `?`, `[abc]`."""


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """True if `name` matches one of the globs (case-sensitive, as ClearML ids and names are)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def selected(names: Iterable[str], patterns: Sequence[str]) -> bool:
    """True if any of `names` (e.g. a queue's name and id) matches one of the globs."""
    return any(matches_any(n, patterns) for n in names if n)


# -- time -------------------------------------------------------------------------------------------


def iso(dt: datetime | None) -> str | None:
    """ISO-8601 with offset, second precision; None stays None (evidence must be JSON-serialisable)."""
    if dt is None:
        return None
    return dt.replace(microsecond=0).isoformat()


def when(snap: Snapshot, dt: datetime | None) -> dict[str, Any]:
    """Evidence for a moment: ISO time, age in seconds on the server's clock, and a short human age."""
    age = snap.age_s(dt)
    return {"at": iso(dt), "age_s": None if age is None else int(age), "age": format_duration(age)}


def human(seconds: float | None) -> str:
    return format_duration(seconds)


def severity_for(value: float | None, warning: float | None, critical: float | None) -> Severity | None:
    """`critical` if value >= critical, `warning` if value >= warning, else None (a None threshold is off)."""
    if value is None:
        return None
    if critical is not None and value >= critical:
        return "critical"
    if warning is not None and value >= warning:
        return "warning"
    return None


# -- subjects and evidence --------------------------------------------------------------------------


def server_subject(snap: Snapshot, url: str | None = None) -> Subject:
    """The ClearML server itself (id = its API URL), or one of its hosts (web, files) by URL."""
    return Subject(kind="server", id=url or snap.server.api_url, name=snap.server.name)


def worker_subject(worker_id: str) -> Subject:
    return Subject(kind="worker", id=worker_id, name=worker_id)


def queue_subject(queue: Queue) -> Subject:
    return Subject(kind="queue", id=queue.id, name=queue.name)


def task_subject(task_id: str, task: Task | None = None) -> Subject:
    return Subject(kind="task", id=task_id, name=task.name if task is not None else "")


def task_ref(task_id: str, task: Task | None = None) -> dict[str, Any]:
    """`{"id", "name", "status"}` for evidence; name/status empty when the task document is not at hand."""
    return {
        "id": task_id,
        "name": task.name if task is not None else "",
        "status": task.status if task is not None else "",
    }


def redact_evidence(evidence: Any, secrets: Iterable[str]) -> Any:
    """`evidence` with every string redacted (values of secret-named keys blanked whole), for the checks that read
    text which may hold a secret the runner does not know (a storage key in a log line, a URL's password)."""
    return redact_tree(evidence, list(secrets), keep=frozenset())


def redact_subjects(subjects: Iterable[Subject], secrets: Iterable[str]) -> list[Subject]:
    """`subjects` (a finding's `related`) with every secret in their ids and names redacted, for the checks that
    redact their own evidence (the runner redacts every finding again at its boundary)."""
    known = list(secrets)
    return [s.model_copy(update={"id": redact(s.id, known) or "?", "name": redact(s.name, known)}) for s in subjects]


# -- workers ----------------------------------------------------------------------------------------


def worker_age_s(snap: Snapshot, worker: Worker) -> float | None:
    """Seconds since the worker's last sign of life (activity or report), on the server's clock."""
    return snap.age_s(worker.last_seen)


def is_live(snap: Snapshot, worker: Worker, stale_after: float) -> bool:
    """A worker is live if the server heard from it within `stale_after` seconds."""
    age = worker_age_s(snap, worker)
    return age is not None and age <= stale_after


def workers_by_queue(workers: Iterable[Worker]) -> dict[str, list[Worker]]:
    """Queue id -> the registered workers listening on it (from each worker's `queues`)."""
    out: dict[str, list[Worker]] = {}
    for worker in workers:
        for ref in worker.queues:
            if ref.id:
                out.setdefault(ref.id, []).append(worker)
    return out


def worker_ref(snap: Snapshot, worker: Worker) -> dict[str, Any]:
    """Compact evidence for a worker: id, last seen (ISO + age), running task."""
    age = worker_age_s(snap, worker)
    return {
        "id": worker.id,
        "last_seen": iso(worker.last_seen),
        "last_seen_age_s": None if age is None else int(age),
        "task": {"id": worker.task_id, "name": worker.task_name} if worker.task_id else None,
    }


# -- queues ----------------------------------------------------------------------------------------


async def entry_times(snap: Snapshot, queues: Iterable[Queue]) -> dict[tuple[str, str], tuple[datetime | None, str]]:
    """(queue id, task id) -> (enqueue time, source) for every entry of `queues`.

    The source is "entry.added"; entries without `added` (older servers) fall back to the task's
    `status_changed` ("status_changed"), fetched in one batched `tasks.get_all` by id.
    """
    out: dict[tuple[str, str], tuple[datetime | None, str]] = {}
    undated: list[tuple[str, str]] = []
    for q in queues:
        for e in q.entries:
            if e.added is not None:
                out[(q.id, e.task_id)] = (e.added, "entry.added")
            else:
                undated.append((q.id, e.task_id))
    if undated:
        docs = await snap.tasks_by_id(tid for _, tid in undated)
        for key in undated:
            doc = docs.get(key[1])
            out[key] = (doc.status_changed if doc is not None else None, "status_changed")
    return out


async def oldest_waits(snap: Snapshot, queues: Iterable[Queue]) -> dict[str, tuple[str, datetime | None]]:
    """Queue id -> (task id, enqueue time) of the entry that has waited longest, for queues with entries."""
    queues = list(queues)
    times = await entry_times(snap, queues)
    out: dict[str, tuple[str, datetime | None]] = {}
    for q in queues:
        dated = [(times[(q.id, e.task_id)][0], e.task_id) for e in q.entries if times[(q.id, e.task_id)][0]]
        if dated:
            added, task_id = min(dated, key=lambda pair: pair[0])  # type: ignore[arg-type, return-value]
            out[q.id] = (task_id, added)
        elif q.entries:
            out[q.id] = (q.entries[0].task_id, None)  # FIFO: index 0 is the one that waited longest
    return out
