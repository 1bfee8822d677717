"""Typed views of ClearML entities: only the fields the bot uses, tolerant of missing optional fields.

`from_api` never raises on a missing optional field (servers of different versions omit different
fields); the raw document stays available as `.raw` for checks that need more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def parse_time(value: Any) -> datetime | None:
    """ClearML datetimes: ISO-8601 with offset (Mongo or Redis precision), or epoch seconds/ms."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        seconds = value / 1000.0 if value > 1e11 else float(value)
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (ValueError, OverflowError, OSError):  # NaN, or outside what a datetime can hold: not a time
            return None
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _ref(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    # A field of the wrong type (a server bug, a proxy rewriting JSON) reads as empty, never as a crash.
    return value if isinstance(value, list) else []


def _strs(value: Any) -> list[str]:
    return [str(v) for v in _list(value) if isinstance(v, str | int | float)]


def _id(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and value != "" else None


@dataclass
class QueueRef:
    id: str
    name: str


@dataclass
class Worker:
    id: str
    ip: str = ""
    user: str = ""
    register_time: datetime | None = None
    last_activity_time: datetime | None = None
    last_report_time: datetime | None = None
    task_id: str | None = None
    task_name: str = ""
    queues: list[QueueRef] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, doc: dict[str, Any]) -> Worker:
        task = _ref(doc.get("task"))
        queues = [
            QueueRef(id=str(q.get("id", "")), name=str(q.get("name") or q.get("id") or ""))
            for q in _list(doc.get("queues"))
            if isinstance(q, dict)
        ]
        return cls(
            id=str(doc.get("id", "")),
            ip=str(doc.get("ip") or ""),
            user=str(_ref(doc.get("user")).get("name") or ""),
            register_time=parse_time(doc.get("register_time")),
            last_activity_time=parse_time(doc.get("last_activity_time")),
            last_report_time=parse_time(doc.get("last_report_time")),
            task_id=_id(task.get("id")),
            task_name=str(task.get("name") or ""),
            queues=queues,
            tags=_strs(doc.get("tags")),
            raw=doc,
        )

    @property
    def last_seen(self) -> datetime | None:
        """The most recent sign of life the server recorded."""
        times = [t for t in (self.last_activity_time, self.last_report_time) if t is not None]
        return max(times) if times else self.register_time


@dataclass
class QueueEntry:
    task_id: str
    added: datetime | None


@dataclass
class Queue:
    id: str
    name: str
    entries: list[QueueEntry] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    system_tags: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, doc: dict[str, Any]) -> Queue:
        entries = []
        for entry in _list(doc.get("entries")):
            if not isinstance(entry, dict):
                continue
            task = entry.get("task")
            task_id = _id(task.get("id") if isinstance(task, dict) else task)
            if task_id:
                entries.append(QueueEntry(task_id=str(task_id), added=parse_time(entry.get("added"))))
        return cls(
            id=str(doc.get("id", "")),
            name=str(doc.get("display_name") or doc.get("name") or doc.get("id") or ""),
            entries=entries,
            tags=_strs(doc.get("tags")),
            system_tags=_strs(doc.get("system_tags")),
            raw=doc,
        )

    def oldest_added(self) -> datetime | None:
        times = [e.added for e in self.entries if e.added is not None]
        return min(times) if times else None


@dataclass
class Task:
    """A task document. Common fields typed; everything else via `raw` / `get()`."""

    id: str
    name: str
    status: str
    type: str = ""
    project: str = ""
    user: str = ""
    status_reason: str = ""
    status_message: str = ""
    status_changed: datetime | None = None
    created: datetime | None = None
    started: datetime | None = None
    completed: datetime | None = None
    last_update: datetime | None = None
    last_worker: str = ""
    system_tags: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, doc: dict[str, Any]) -> Task:
        return cls(
            id=str(doc.get("id", "")),
            name=str(doc.get("name") or ""),
            status=str(doc.get("status") or "unknown"),
            type=str(doc.get("type") or ""),
            project=str(doc.get("project") or ""),
            user=str(doc.get("user") or ""),
            status_reason=str(doc.get("status_reason") or ""),
            status_message=str(doc.get("status_message") or ""),
            status_changed=parse_time(doc.get("status_changed")),
            created=parse_time(doc.get("created")),
            started=parse_time(doc.get("started")),
            completed=parse_time(doc.get("completed")),
            last_update=parse_time(doc.get("last_update")),
            last_worker=str(doc.get("last_worker") or ""),
            system_tags=_strs(doc.get("system_tags")),
            tags=_strs(doc.get("tags")),
            raw=doc,
        )

    def get(self, dotted: str, default: Any = None) -> Any:
        """`task.get("script.requirements.pip")`: a nested field, or `default` if any part is missing."""
        node: Any = self.raw
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node
