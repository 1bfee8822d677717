"""Canaries: checks that write, then read back what they wrote, so a server that answers but loses data is caught.

canary.events exercises the server's write path the way every SDK and agent uses it. It keeps one bot-owned task
(in a hidden project), posts a console line and a scalar with events.add_batch, and reads them back with
events.get_task_log and events.get_task_events. Each backend shows its own failure:
- MongoDB holds tasks and projects: finding, creating or reading the canary task fails with a server error;
- Elasticsearch holds events: add_batch fails ("General data error", a cluster_block_exception when its disk
  passed the flood-stage watermark and the indices turned read-only, clearml#201), or accepts the events but they
  never become readable, or reading events fails (unassigned shards);
- Redis holds the worker registry: workers.get_all fails with a server error (clearml-server#76).
One finding names the backend, what the server said and the fix.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bot.checks.common import CheckError, Duration, server_subject
from bot.clearml.errors import ClearMLError, ForbiddenError, ServerUnavailableError
from bot.engine.findings import Finding, Severity, fingerprint_for
from bot.engine.registry import CheckParams, check

if TYPE_CHECKING:
    from bot.engine.snapshot import Snapshot

Backend = Literal["mongodb", "elasticsearch", "redis"]
CANARY_TAG = "clearml-chatops-canary"
METRIC = "clearml-chatops canary"
_READ_ONLY = re.compile(
    r"cluster_block_exception|read[-_ ]only|flood[-_ ]stage|FORBIDDEN/12|TOO_MANY_REQUESTS/12", re.I
)

_FIX: dict[str, str] = {
    "read_only": (
        "Elasticsearch turned its indices read-only because its disk passed the flood-stage watermark (95 % by "
        "default): every task log and scalar is being dropped while the rest of the API answers. Free disk on the "
        "Elasticsearch volume (/opt/clearml/data/elastic_7 in the docker-compose install; delete old tasks' events "
        "or grow the volume), then clear the block if it stays: `curl -XPUT 'http://localhost:9200/_all/_settings' "
        "-H 'Content-Type: application/json' -d '{\"index.blocks.read_only_allow_delete\": null}'` from inside the "
        "clearml-elastic container (Elasticsearch 7.4+ lifts it by itself once usage falls below the high "
        "watermark)."
    ),
    "elasticsearch": (
        "Elasticsearch, where the server keeps task logs, scalars and plots, fails. On the server host: "
        "`docker logs clearml-elastic`, its cluster health (`curl localhost:9200/_cluster/health?pretty` inside the "
        "container: red means unassigned shards), its disk and memory (ES_JAVA_OPTS)."
    ),
    "not_readable": (
        "The server accepted the events but they cannot be read back: Elasticsearch is not storing or not serving "
        "them (read-only indices, unassigned shards, or a full disk). Check `docker logs clearml-elastic`, its "
        "cluster health and its disk; task logs and scalars written meanwhile are lost."
    ),
    "mongodb": (
        "MongoDB, where the server keeps tasks, projects and queues, fails: no task can be created or updated. On "
        "the server host: `docker logs clearml-mongo` (a crash loop after an upgrade that skipped 1.17 exits with "
        "code 62, clearml-server#267), its disk, and the apiserver's log (`docker logs clearml-apiserver`)."
    ),
    "redis": (
        "Redis, where the server keeps the worker registry, fails: agents cannot report and the worker list is "
        "wrong. On the server host: `docker logs clearml-redis` (an RDB file from a newer Redis stops it: \"Can't "
        "handle RDB format version\", clearml-server#273), and restart it; the apiserver needs it to answer "
        "(clearml-server#76)."
    ),
}


class CanaryEventsParams(CheckParams):
    project: str = Field(
        default="clearml-chatops/canaries", description="the bot-owned (hidden) project that holds the canary task"
    )
    task_name: str = Field(default="events canary", description="name of the canary task the bot writes to")
    read_timeout: Duration = Field(
        default=10.0, description="how long written events may take to become readable (the server refreshes at once)"
    )
    max_events: int = Field(
        default=2000, ge=10, description="reset the canary task (dropping its old events) once it holds this many"
    )


class _Failure(Exception):
    def __init__(self, backend: Backend, kind: str, step: str, error: ClearMLError | None = None, detail: str = ""):
        super().__init__(detail or (error.describe() if error else step))
        self.backend, self.kind, self.step, self.error, self.detail = backend, kind, step, error, detail


def _server_side(exc: ClearMLError) -> bool:
    """A failure of the server's backend (5xx), as opposed to the bot's request or permissions."""
    return isinstance(exc, ServerUnavailableError) and exc.reason == "http_5xx"


async def _mongo(step: str, call: Any) -> Any:
    try:
        return await call
    except ForbiddenError as exc:
        raise CheckError(
            f"the bot's API key may not {step} ({exc.describe()}): canary.events needs a key that can create tasks "
            "and projects, or leave canary.events out of the playbook"
        ) from None
    except ClearMLError as exc:
        if _server_side(exc):
            raise _Failure("mongodb", "mongodb", step, exc) from None
        raise


async def _canary_task(snap: Snapshot, params: CanaryEventsParams) -> tuple[str, int]:
    """(task id, events it holds): the existing canary task, else a new one in the hidden bot project."""
    client = snap.client
    found = await _mongo("find the canary task", client.call("tasks.get_all", {
        "name": f"^{re.escape(params.task_name)}$", "tags": [CANARY_TAG], "search_hidden": True,
        "only_fields": ["id", "status", "project", "last_iteration"], "order_by": ["-last_update"], "page": 0,
        "page_size": 1,
    }))
    tasks = [t for t in found.get("tasks") or [] if isinstance(t, dict) and t.get("id")]
    if tasks:
        return str(tasks[0]["id"]), -1
    projects = await _mongo("find the canary project", client.call("projects.get_all", {
        "name": f"^{re.escape(params.project)}$", "search_hidden": True, "only_fields": ["id", "name"],
    }))
    existing = [p for p in projects.get("projects") or [] if isinstance(p, dict) and p.get("name") == params.project]
    if existing:
        project_id = str(existing[0]["id"])
    else:
        created = await _mongo("create the canary project", client.call("projects.create", {
            "name": params.project, "system_tags": ["hidden"],
            "description": "Owned by clearml-chatops: canary tasks that check the server's write path.",
        }))
        project_id = str(created["id"])
    task = await _mongo("create the canary task", client.call("tasks.create", {
        "name": params.task_name, "type": "monitor", "project": project_id, "tags": [CANARY_TAG],
        "comment": "clearml-chatops writes one log line and one scalar here per canary.events run.",
    }))
    return str(task["id"]), 0


async def _write(snap: Snapshot, task_id: str, nonce: str, iteration: int) -> dict[str, Any]:
    now_ms = int(snap.now.timestamp() * 1000)
    events = [
        {"type": "log", "task": task_id, "timestamp": now_ms, "level": "info", "worker": "clearml-chatops",
         "msg": f"clearml-chatops canary {nonce}"},
        {"type": "training_stats_scalar", "task": task_id, "timestamp": now_ms, "iter": iteration,
         "metric": METRIC, "variant": "write", "value": float(iteration)},
    ]
    try:
        answer = await snap.client.call("events.add_batch", events)
    except ClearMLError as exc:
        kind = "read_only" if _READ_ONLY.search(exc.message) else "elasticsearch"
        if _server_side(exc) or kind == "read_only" or "EventsNotAdded" in exc.message or exc.code == 400:
            raise _Failure("elasticsearch", kind, "write events (events.add_batch)", exc) from None
        raise
    errors = int(answer.get("errors") or 0)
    if errors:
        info = answer.get("errors_info") or {}
        kind = "read_only" if _READ_ONLY.search(str(info)) else "elasticsearch"
        raise _Failure("elasticsearch", kind, "write events (events.add_batch)",
                       detail=f"events.add_batch added {answer.get('added')} of 2 events: {info}")
    return answer


async def _read_back(
    snap: Snapshot, task_id: str, nonce: str, iteration: int, timeout: float
) -> tuple[bool, bool, int]:
    """(log line found, scalar found, events the task holds), polling until both are found or `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            log = await snap.client.call("events.get_task_log", {"task": task_id, "batch_size": 20,
                                                                 "navigate_earlier": True})
            scalars = await snap.client.call("events.get_task_events", {
                "task": task_id, "event_type": "training_stats_scalar", "order": "desc", "batch_size": 20,
            })
        except ClearMLError as exc:
            if _server_side(exc):
                raise _Failure("elasticsearch", "elasticsearch", "read events back", exc) from None
            raise
        line = any(nonce in str(e.get("msg", "")) for e in log.get("events") or [] if isinstance(e, dict))
        scalar = any(
            isinstance(e, dict) and e.get("metric") == METRIC and int(e.get("iter") or -1) == iteration
            for e in scalars.get("events") or []
        )
        total = int(log.get("total") or 0) + int(scalars.get("total") or 0)
        if (line and scalar) or time.monotonic() >= deadline:
            return line, scalar, total
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 2.0)


async def _redis(snap: Snapshot) -> None:
    try:
        await snap.workers()
    except ClearMLError as exc:
        if _server_side(exc):
            raise _Failure("redis", "redis", "list workers (workers.get_all)", exc) from None
        raise


@check("canary.events", params=CanaryEventsParams)
async def canary_events(snap: Snapshot, params: CanaryEventsParams) -> list[Finding]:
    """The server's write path: a log line and a scalar written to a bot-owned task with events.add_batch and read
    back; a failure names the backend (Elasticsearch read-only or failing, MongoDB, Redis) and the fix.

    Writes (the canary task in the hidden project `project`, two events per run) need an API key allowed to create
    tasks. Critical when a backend fails; ok with the round-trip time otherwise.
    """
    subject = server_subject(snap)
    start = time.perf_counter()
    nonce = uuid.uuid4().hex[:12]
    task_id = ""
    try:
        await _redis(snap)
        task_id, held = await _canary_task(snap, params)
        iteration = int(time.time() * 1000) % (2**31)  # unique per run, readable back as the scalar's iteration
        if held < 0:  # an existing canary: keep it small
            total = await snap.client.call("events.get_task_log", {"task": task_id, "batch_size": 1})
            if int(total.get("total") or 0) >= params.max_events:
                await _mongo("reset the canary task", snap.client.call("tasks.reset", {"task": task_id, "force": True}))
        answer = await _write(snap, task_id, nonce, iteration)
        wrote_ms = (time.perf_counter() - start) * 1000
        line, scalar, total = await _read_back(snap, task_id, nonce, iteration, params.read_timeout)
        if not (line and scalar):
            missing = [name for name, ok in (("the log line", line), ("the scalar", scalar)) if not ok]
            raise _Failure(
                "elasticsearch", "not_readable", "read events back",
                detail=f"events.add_batch accepted {answer.get('added')} events, but {' and '.join(missing)} could "
                f"not be read back within {params.read_timeout:g} s",
            )
    except _Failure as failure:
        return [_failure_finding(snap, params, failure, task_id)]
    round_trip = (time.perf_counter() - start) * 1000
    snap.metrics["canary.events_ms"] = round(round_trip, 1)
    return [
        Finding(
            check="canary.events",
            severity="ok",
            title=f"Server write path healthy: a log line and a scalar written and read back in {round_trip:.0f} ms",
            detail="MongoDB (the canary task), Elasticsearch (events written and read) and Redis (the worker "
            "registry) all answered.",
            subject=subject,
            evidence={"task": task_id, "write_ms": round(wrote_ms, 1), "round_trip_ms": round(round_trip, 1),
                      "events_held": total},
            links=[snap.task_link(task_id)],
        )
    ]


def _failure_finding(snap: Snapshot, params: CanaryEventsParams, failure: _Failure, task_id: str) -> Finding:
    subject = server_subject(snap)
    backend_name = {"mongodb": "MongoDB", "elasticsearch": "Elasticsearch", "redis": "Redis"}[failure.backend]
    said = failure.detail or (failure.error.message if failure.error else "")
    headline = {
        "read_only": "Elasticsearch is read-only: task logs and scalars are being dropped",
        "not_readable": "Elasticsearch accepts events but they cannot be read back: logs and scalars are lost",
        "elasticsearch": "Elasticsearch fails: task logs and scalars cannot be written or read",
        "mongodb": "MongoDB fails: tasks cannot be created or updated",
        "redis": "Redis fails: the worker registry does not answer",
    }[failure.kind]
    severity: Severity = "critical"
    evidence: dict[str, Any] = {
        "backend": failure.backend,
        "failure": failure.kind,
        "step": failure.step,
        "server_said": said[:1000],
        "canary_task": task_id or None,
        "project": params.project,
    }
    if failure.error is not None:
        evidence["response"] = failure.error.evidence()
    return Finding(
        check="canary.events",
        severity=severity,
        title=f"{headline} (canary: {failure.step} failed)",
        detail=f"The canary could not {failure.step}: {said[:600]}. Backend: {backend_name}.",
        subject=subject,
        # one incident per backend, so a read-only Elasticsearch and a down MongoDB are not merged
        fingerprint=fingerprint_for("canary.events", subject, failure.backend),
        evidence=evidence,
        links=[snap.task_link(task_id)] if task_id else [snap.web],
        remediation=_FIX[failure.kind],
    )
