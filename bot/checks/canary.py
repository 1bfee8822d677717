"""Canaries: checks that write, then read back what they wrote, so a server that answers but loses data is caught.

server.events_canary exercises the server's write path the way every SDK and agent uses it. It keeps one bot-owned task
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
import functools
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bot.checks.common import CheckError, Duration, Patterns, server_subject
from bot.clearml.errors import ClearMLError, ForbiddenError, ServerUnavailableError
from bot.diagnosis.failure_causes import CAUSES, classify_failure
from bot.engine.findings import Finding, Severity, fingerprint_for
from bot.engine.registry import CheckParams, check
from bot.errors import BotError

if TYPE_CHECKING:
    from bot.clearml.models import Queue
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


class _Failure(BotError):
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
            f"the bot's API key may not {step} ({exc.describe()}): server.events_canary needs a key that can "
            "create tasks and projects, or leave server.events_canary out of the playbook"
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
        "comment": "clearml-chatops writes one log line and one scalar here per server.events_canary run.",
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


@check("server.events_canary", params=CanaryEventsParams)
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
            # every event type of the task (log lines and scalars): get_task_events without event_type
            try:
                total = await snap.client.call("events.get_task_events", {"task": task_id, "batch_size": 1})
            except ClearMLError as exc:
                if _server_side(exc):
                    raise _Failure("elasticsearch", "elasticsearch", "count the canary's events", exc) from None
                raise
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
    snap.metrics["server.events_canary_ms"] = round(round_trip, 1)
    return [
        Finding(
            check="server.events_canary",
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
        check="server.events_canary",
        severity=severity,
        title=f"{headline} (canary: {failure.step} failed)",
        detail=f"The canary could not {failure.step}: {said[:600]}. Backend: {backend_name}.",
        subject=subject,
        # one incident per backend, so a read-only Elasticsearch and a down MongoDB are not merged
        fingerprint=fingerprint_for("server.events_canary", subject, failure.backend),
        evidence=evidence,
        links=[snap.task_link(task_id)] if task_id else [snap.web],
        remediation=_FIX[failure.kind],
    )


# ================================================================================================
# queues.canary

QUEUE_CANARY_TAG = "clearml-chatops-queue-canary"
QUEUE_CANARY_PREFIX = "queue canary: "
ENQUEUED_KEY = "clearml_chatops_enqueued"  # runtime key: when the bot enqueued the canary (epoch seconds)
# The canary itself: a standalone script (no repository, no requirements) the agent runs as any task.
CANARY_SCRIPT = (
    "import platform, sys, time\n"
    "print('clearml-chatops queue canary: python %s on %s' % (sys.version.split()[0], platform.node()))\n"
    "print('clearml-chatops queue canary: done at %.0f' % time.time())\n"
)


class CanaryQueueParams(CheckParams):
    queues: Patterns = Field(
        default=[], description="queue name globs to send a canary to (empty: none; each canary occupies an agent "
        "for the seconds it takes to set up and run)",
    )
    project: str = Field(default="clearml-chatops/canaries", description="the bot-owned (hidden) project")
    pickup_timeout: Duration = Field(default=600.0, description="a canary not picked up within this time is critical")
    run_timeout: Duration = Field(default=900.0, description="a picked-up canary not finished within this time warns")
    every: Duration = Field(default=3600.0, description="send a new canary this long after the last one completed")
    retry_after: Duration = Field(default=1800.0, description="send a new canary this long after one failed")
    log_lines: int = Field(default=30, ge=5, le=500, description="lines of the agent's log quoted when it fails")


_CANARY_FIELDS = ["id", "name", "status", "status_reason", "status_message", "status_changed", "started", "completed",
                  "last_worker", "execution.queue", "runtime", "project", "last_update"]


async def _queue_canaries(snap: Snapshot) -> dict[str, dict[str, Any]]:
    """Queue name -> its canary task document (one per queue, reused)."""
    docs = await snap.client.get_all(
        "tasks.get_all",
        {"tags": [QUEUE_CANARY_TAG], "search_hidden": True, "only_fields": _CANARY_FIELDS,
         "order_by": ["-last_update"]},
        key="tasks",
    )
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        name = str(doc.get("name") or "")
        if name.startswith(QUEUE_CANARY_PREFIX):
            out.setdefault(name[len(QUEUE_CANARY_PREFIX):], doc)
    return out


async def _project_id(snap: Snapshot, name: str, description: str = "") -> str:
    found = await snap.client.call("projects.get_all", {
        "name": f"^{re.escape(name)}$", "search_hidden": True, "only_fields": ["id", "name"],
    })
    existing = [p for p in found.get("projects") or [] if isinstance(p, dict) and p.get("name") == name]
    if existing:
        return str(existing[0]["id"])
    created = await snap.client.call("projects.create", {
        "name": name, "system_tags": ["hidden"],
        "description": description
        or "Owned by clearml-chatops: canary tasks that check the server's write path and the queues.",
    })
    return str(created["id"])


async def _send_canary(snap: Snapshot, params: CanaryQueueParams, queue_id: str, queue_name: str,
                       doc: dict[str, Any] | None) -> str:
    """Create (or reset) the queue's canary, stamp the enqueue time, enqueue it; returns its id."""
    client = snap.client
    if doc is None:
        created = await client.call("tasks.create", {
            "name": QUEUE_CANARY_PREFIX + queue_name, "type": "testing",
            "project": await _project_id(snap, params.project), "tags": [QUEUE_CANARY_TAG],
            "comment": "clearml-chatops sends this task through the queue to measure pickup and run time.",
            "script": {"binary": "python3", "entry_point": "clearml_chatops_canary.py", "working_dir": ".",
                       "diff": CANARY_SCRIPT, "requirements": {}},
        })
        task_id = str(created["id"])
    else:
        task_id = str(doc["id"])
        if doc.get("status") != "created":
            await client.call("tasks.reset", {"task": task_id, "force": True})
    await client.call("tasks.edit", {"task": task_id, "runtime": {ENQUEUED_KEY: round(snap.now.timestamp(), 3)}})
    await client.call("tasks.enqueue", {"task": task_id, "queue": queue_id,
                                        "status_reason": "clearml-chatops queue canary"})
    return task_id


def _seconds_between(later: Any, earlier: Any) -> float | None:
    from bot.clearml.models import parse_time

    a, b = parse_time(later), parse_time(earlier)
    return None if a is None or b is None else max(0.0, (a - b).total_seconds())


@check("queues.canary", params=CanaryQueueParams)
async def canary_queue(snap: Snapshot, params: CanaryQueueParams) -> list[Finding]:
    """A tiny canary task sent through each selected queue: time to pickup and to completion, and a finding with
    the agent's log tail when no agent picks it up or it fails there.

    One reused canary task per queue (tagged, in the hidden bot project, reset between rounds), never more than one
    in flight, and none sent while the queue has a backlog. A round spans runs: the run that sends the canary
    reports the previous round; a canary waiting longer than `pickup_timeout` is critical, a failed one too.
    """
    if not params.queues:
        return []
    from bot.checks.common import selected, worker_ref, workers_by_queue

    queues = [q for q in await snap.queues() if selected((q.name, q.id), params.queues)]
    if not queues:
        return []
    canaries = await _queue_canaries(snap)
    listeners = workers_by_queue(await snap.workers())
    now = snap.now.timestamp()
    findings: list[Finding] = []
    for queue in queues:
        doc = canaries.get(queue.name)
        status = str(doc.get("status")) if doc else ""
        enqueued = ((doc or {}).get("runtime") or {}).get(ENQUEUED_KEY)
        enqueued = float(enqueued) if isinstance(enqueued, int | float) else None
        mine = str(doc["id"]) if doc else ""
        others = [e for e in queue.entries if e.task_id != mine]
        serving = listeners.get(queue.id, [])
        evidence: dict[str, Any] = {
            "queue": {"id": queue.id, "name": queue.name},
            "canary": {"id": mine, "status": status} if doc else None,
            "agents": [worker_ref(snap, w) for w in serving],
        }

        finding = functools.partial(_queue_finding, snap, queue, mine, evidence)

        if status == "queued":
            entry = next((e for e in queue.entries if e.task_id == mine), None)
            if enqueued is None and entry is not None and entry.added is not None:
                enqueued = entry.added.timestamp()  # enqueued by hand or by an older bot: the entry's own time
            waited = now - enqueued if enqueued is not None else None
            position = next((i for i, e in enumerate(queue.entries) if e.task_id == mine), None)
            if position:
                findings.append(finding("ok", f"canary waiting behind {position} task(s)",
                                        "The canary is not blamed for the wait of a busy queue."))
            elif waited is not None and waited > params.pickup_timeout:
                live = [w for w in serving if (snap.age_s(w.last_seen) or 1e9) <= 120]
                why = (
                    f"{len(live)} live agent(s) listen to it ({', '.join(w.id for w in live[:5])}) but none pulled "
                    "the canary: they may be busy, or unable to pull (an agent version that registers but never "
                    "takes tasks, e.g. clearml-agent 2.0.0 on an open-source server, clearml-agent#241)"
                    if live else "no live agent listens to it"
                )
                findings.append(finding(
                    "critical", f"no agent picked up the canary in {waited / 60:.0f} min",
                    f"The canary was enqueued {waited / 60:.0f} minutes ago (pickup timeout "
                    f"{params.pickup_timeout / 60:.0f} min) and is first in line; {why}.",
                    "Check the agents of this queue: their logs (`docker logs` / the daemon's console), that they "
                    "poll this queue (`clearml-agent daemon --queue " + queue.name + "`), and server.compatibility "
                    "for agent versions that do not pull tasks; rotate a stuck agent.",
                    {"waited_s": int(waited), "pickup_timeout_s": params.pickup_timeout},
                ))
            else:
                findings.append(finding("ok", "canary waiting for an agent",
                                        f"Enqueued {0 if waited is None else waited:.0f} s ago."))
            continue
        if status == "in_progress":
            ran = _seconds_between(snap.now, doc.get("started")) if doc else None
            worker_id = str((doc or {}).get("last_worker") or "")
            if ran is not None and ran > params.run_timeout:
                tail = await snap.task_log(mine, params.log_lines)
                findings.append(finding(
                    "warning", f"canary picked up by {worker_id or '?'} but not finished after {ran / 60:.0f} min",
                    "The agent took the canary (a two-line script without requirements) but has not finished it: "
                    "environment setup is hanging (pip, docker pull) or the agent is stuck.",
                    "Read the log tail below and the agent's own log; abort the canary to free the agent.",
                    {"worker": worker_id, "running_s": int(ran), "log_tail": tail[-params.log_lines:]},
                ))
            else:
                findings.append(finding("ok", f"canary running on {worker_id or '?'}", ""))
            continue

        if status in ("failed", "stopped"):
            since = _seconds_between(snap.now, doc.get("completed") or doc.get("status_changed")) if doc else None
            tail = await snap.task_log(mine, params.log_lines)
            cause_id, hits = classify_failure(tail, str(doc.get("status_reason") or ""),
                                              str(doc.get("status_message") or ""))
            cause = next(c for c in CAUSES if c.id == cause_id)
            worker_id = str(doc.get("last_worker") or "")
            findings.append(finding(
                "critical", f"the canary {status} on agent {worker_id or '?'} ({cause.title})",
                f"A two-line script with no requirements did not complete on this queue's agent: "
                f"{(hits[-1] if hits else doc.get('status_reason') or status)[:300]}",
                cause.remediation,
                {"worker": worker_id, "cause": cause_id, "log_tail": tail[-params.log_lines:]},
            ))
            if since is not None and since >= params.retry_after and not others:
                await _send_canary(snap, params, queue.id, queue.name, doc)
            continue

        if status in ("completed", "published", "closed") and doc is not None:
            started = parse_started(doc)
            pickup = max(0.0, started - enqueued) if started is not None and enqueued is not None else None
            run_s = _seconds_between(doc.get("completed"), doc.get("started"))
            findings.append(finding(
                "ok", f"canary picked up in {pickup or 0:.0f} s by {doc.get('last_worker') or '?'}, done in "
                f"{run_s or 0:.0f} s", "",
                extra={"pickup_s": None if pickup is None else round(pickup, 1),
                       "run_s": None if run_s is None else round(run_s, 1), "worker": doc.get("last_worker")},
            ))
            snap.metrics[f"queues.canary.{queue.name}.pickup_s"] = round(pickup or 0, 1)
            since = _seconds_between(snap.now, doc.get("completed"))
            if since is not None and since >= params.every and not others:
                await _send_canary(snap, params, queue.id, queue.name, doc)
            continue

        # no canary yet, or a draft: send one unless the queue is busy
        if others:
            findings.append(finding("ok", f"canary skipped: {len(others)} task(s) waiting",
                                    "A canary is sent only to an empty queue, so it never delays real work."))
            continue
        task_id = await _send_canary(snap, params, queue.id, queue.name, doc)
        evidence["canary"] = {"id": task_id, "status": "queued"}
        findings.append(finding("ok", "canary sent", "Its pickup and run times are reported by the next runs."))
    return findings


def _queue_finding(snap: Snapshot, queue: Queue, canary_id: str, evidence: dict[str, Any], severity: Severity,
                   title: str, detail: str, remediation: str = "", extra: dict[str, Any] | None = None) -> Finding:
    from bot.checks.common import queue_subject

    return Finding(
        check="queues.canary", severity=severity, title=f"Queue {queue.name}: {title}", detail=detail,
        subject=queue_subject(queue), evidence={**evidence, **(extra or {})}, remediation=remediation,
        links=[snap.queue_link(queue.id)] + ([snap.task_link(canary_id)] if canary_id else []),
    )


def parse_started(doc: dict[str, Any]) -> float | None:
    from bot.clearml.models import parse_time

    started = parse_time(doc.get("started"))
    return started.timestamp() if started is not None else None
