"""datasets.integrity with `on_agent: <queue>`: the hashing runs on one of the user's own clearml-agents.

Terabytes of chunks stay next to the storage: the bot enqueues a verification task (the standalone script
bot/checks/agent_scripts/verify_dataset.py, no repository, standard library only) into the queue; the agent that
pulls it reads the dataset states and chunks, re-hashes every file and uploads one JSON result, registered as the
task's output artifact `verification`. The bot reads only that document (from the file server, under the
storage read policy) and turns it into the same findings the local path gives.

A round spans runs, like queues.canary: one reused task per queue (tagged, in a hidden bot-owned project), never
more than one in flight. The run that finds no task (or a finished one older than `every`, or one that did not
cover every selected version) dispatches a round and reports `info` "verification dispatched"; runs while it
waits or runs report `info`; the run after it finished reports the results. A verification task that fails, or
is not picked up within `pickup_timeout`, is one warning on the queue with the task's log tail.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.checks.common import queue_subject, selected, server_subject
from bot.clearml.models import parse_time
from bot.diagnosis.failure_causes import CAUSES, classify_failure
from bot.engine.findings import Finding, Severity, Subject
from bot.storage.datasets import ArtifactError, artifacts_of, read_artifact
from bot.storage.probe import StorageContext

if TYPE_CHECKING:
    from bot.checks.datasets import IntegrityParams
    from bot.clearml.models import Queue, Task
    from bot.engine.snapshot import Snapshot

VERIFY_TAG = "clearml-chatops-dataset-verification"
VERIFY_PREFIX = "dataset verification: "
JOB_SECTION = "clearml-chatops verification"  # the task's configuration object the script reads its job from
# The previous round's result, kept on the task while the next round runs (tasks.reset drops the artifact), so a
# damaged version stays reported instead of flapping for the length of each re-verification.
LAST_SECTION = "clearml-chatops last result"
RESULT_ARTIFACT = "verification"
ENQUEUED_KEY = "clearml_chatops_enqueued"
ENTRY_POINT = "clearml_chatops_verify_dataset.py"
MAX_RESULT_BYTES = 64 << 20
SCRIPT_PATH = Path(__file__).with_name("agent_scripts") / "verify_dataset.py"
_FIELDS = ["id", "name", "status", "status_reason", "status_message", "status_changed", "started", "completed",
           "last_worker", "runtime", "configuration", "execution.artifacts", "last_update", "project"]


def verification_script() -> str:
    return SCRIPT_PATH.read_text(encoding="utf-8")


async def _verification_task(snap: Snapshot, queue: Queue) -> dict[str, Any] | None:
    found = await snap.client.call("tasks.get_all", {
        "tags": [VERIFY_TAG], "name": f"^{re.escape(VERIFY_PREFIX + queue.name)}$", "search_hidden": True,
        "only_fields": _FIELDS, "order_by": ["-last_update"], "page": 0, "page_size": 1,
    })
    docs = [t for t in found.get("tasks") or [] if isinstance(t, dict) and t.get("name") == VERIFY_PREFIX + queue.name]
    return docs[0] if docs else None


def _job_of(doc: dict[str, Any] | None, name: str = JOB_SECTION) -> dict[str, Any]:
    section = ((doc or {}).get("configuration") or {}).get(name) or {}
    try:
        job = json.loads(section.get("value") or "{}")
    except (TypeError, ValueError):
        return {}
    return job if isinstance(job, dict) else {}


def _needs_boto3(datasets: list[Task]) -> bool:
    return any(str(a.get("uri") or "").startswith("s3://") for d in datasets for a in artifacts_of(d).values())


async def _dispatch(snap: Snapshot, params: IntegrityParams, queue: Queue, doc: dict[str, Any] | None,
                    datasets: list[Task], previous: dict[str, Any] | None = None) -> str:
    """Create (or reset) the queue's verification task with this round's job, then enqueue it; returns its id."""
    from bot.checks.canary import _project_id

    client = snap.client
    job = {"datasets": [d.id for d in datasets], "max_listed": params.max_listed,
           "round": f"{snap.now.timestamp():.0f}"}
    script = {"binary": "python3", "entry_point": ENTRY_POINT, "working_dir": ".", "diff": verification_script(),
              # s3:// chunks are read with boto3: the agent installs it like any task requirement
              "requirements": {"pip": "boto3\n"} if _needs_boto3(datasets) else {}}
    configuration = {JOB_SECTION: {"name": JOB_SECTION, "type": "json", "value": json.dumps(job),
                                   "description": "the dataset versions the clearml-chatops verification checks"}}
    previous = previous or _job_of(doc, LAST_SECTION)
    if previous:
        configuration[LAST_SECTION] = {"name": LAST_SECTION, "type": "json", "value": json.dumps(previous),
                                       "description": "the previous round's result, read by clearml-chatops"}
    if doc is None:
        created = await client.call("tasks.create", {
            "name": VERIFY_PREFIX + queue.name, "type": "data_processing",
            "project": await _project_id(snap, params.agent_project, "Owned by clearml-chatops: tasks that verify "
                                         "dataset versions on the agents next to their storage."),
            "tags": [VERIFY_TAG],
            "comment": "clearml-chatops sends this task to re-hash dataset chunks next to the storage; the result "
            "is its `verification` artifact.",
            "script": script, "configuration": configuration,
        })
        task_id = str(created["id"])
    else:
        task_id = str(doc["id"])
        if doc.get("status") != "created":
            await client.call("tasks.reset", {"task": task_id, "force": True})
        await client.call("tasks.edit", {"task": task_id, "force": True, "script": script,
                                         "configuration": configuration})
    await client.call("tasks.edit", {"task": task_id, "runtime": {ENQUEUED_KEY: round(snap.now.timestamp(), 3)}})
    await client.call("tasks.enqueue", {"task": task_id, "queue": queue.id,
                                        "status_reason": "clearml-chatops dataset verification"})
    return task_id


def _since(snap: Snapshot, value: Any) -> float | None:
    moment = parse_time(value)
    return None if moment is None else max(0.0, (snap.now - moment).total_seconds())


async def integrity_on_agent(snap: Snapshot, params: IntegrityParams, datasets: list[Task],
                             secrets: list[str]) -> list[Finding]:
    from bot.checks.datasets import label, subject, version_of

    queue_name = str(params.on_agent)
    known = await snap.queues()
    queues = [q for q in known if queue_name in (q.name, q.id)] or [
        q for q in known if selected((q.name, q.id), [queue_name])]
    if not queues:
        return [Finding(
            check="datasets.integrity", severity="error",
            title=f"datasets.integrity: queue {queue_name!r} (on_agent) does not exist",
            detail=f"No queue is named {queue_name!r}, so the verification cannot be sent to an agent.",
            subject=server_subject(snap),
            remediation="Set `on_agent` to the name of a queue an agent near the dataset storage serves "
            "(`clearml-agent daemon --queue NAME`), or remove it to verify on the bot's machine.",
        )]
    queue = queues[0]
    doc = await _verification_task(snap, queue)
    status = str((doc or {}).get("status") or "")
    task_id = str((doc or {}).get("id") or "")
    job = _job_of(doc)
    covered = set(job.get("datasets") or [])
    queue_evidence = {"id": queue.id, "name": queue.name}

    def note(ds: Task, title: str, detail: str) -> Finding:
        return Finding(
            check="datasets.integrity", severity="info", title=f"Dataset '{label(ds)}': {title}", detail=detail,
            subject=subject(ds),
            evidence={"dataset": {"id": ds.id, "name": ds.name, "version": version_of(ds), "status": ds.status},
                      "on_agent": queue_evidence, "verification_task": task_id or None, "task_status": status},
            links=[snap.dataset_link(ds)] + ([snap.task_link(task_id)] if task_id else []),
        )

    def on_queue(severity: Severity, title: str, detail: str, remediation: str, extra: dict[str, Any]) -> Finding:
        return Finding(
            check="datasets.integrity", severity=severity, title=f"Dataset verification on queue {queue.name}: {title}",
            detail=detail, subject=queue_subject(queue),
            evidence={"queue": queue_evidence, "verification_task": task_id, "status": status,
                      "datasets": [d.id for d in datasets], **extra},
            links=[snap.task_link(task_id), snap.queue_link(queue.id)], remediation=remediation,
        )

    async def dispatch(reason: str, previous: dict[str, Any] | None = None) -> list[Finding]:
        nonlocal task_id, status
        task_id = await _dispatch(snap, params, queue, doc, datasets, previous)
        status = "queued"
        return [note(ds, f"verification dispatched to queue {queue.name}",
                     f"{reason} An agent of queue {queue.name} re-hashes the chunks next to the storage; a later run "
                     "reports the result.") for ds in datasets]

    def from_result(result: dict[str, Any], covered_ids: set[str],
                    waiting: Any = None) -> tuple[list[Finding], list[Task]]:
        """Findings for the selected versions the result covers; the others (to verify in the next round) get
        `waiting(ds)` when given."""
        reports = {str(r.get("id")): r for r in result.get("datasets") or [] if isinstance(r, dict)}
        age = _result_age(snap, result)
        out: list[Finding] = []
        pending: list[Task] = []
        for ds in datasets:
            report = reports.get(ds.id)
            if report is None or ds.id not in covered_ids:
                pending.append(ds)
                if waiting is not None:
                    out.append(waiting(ds))
                continue
            out.append(_from_report(snap, params, secrets, ds, report, doc or {}, result, queue_evidence, age))
        return out, pending

    previous = _job_of(doc, LAST_SECTION)
    previous_covered = {str(r.get("id")) for r in previous.get("datasets") or [] if isinstance(r, dict)}

    if not datasets:
        return []
    if doc is None or status == "created":
        return await dispatch("No verification has run yet.")

    if status == "queued":
        enqueued = ((doc.get("runtime") or {}).get(ENQUEUED_KEY))
        waited = snap.now.timestamp() - float(enqueued) if isinstance(enqueued, int | float) else None
        if waited is not None and waited > params.pickup_timeout:
            return [on_queue(
                "warning", f"no agent picked it up in {waited / 60:.0f} min",
                f"The verification task has waited {waited / 60:.0f} minutes in queue {queue.name} (pickup timeout "
                f"{params.pickup_timeout / 60:.0f} min): the datasets stay unverified.",
                f"Start an agent on this queue near the storage (`clearml-agent daemon --queue {queue.name}`), or "
                "point `on_agent` at a served queue (queues.canary tells whether it pulls work).",
                {"waited_s": int(waited)},
            )]
        return from_result(previous, previous_covered,
                           lambda ds: note(ds, f"verification waiting in queue {queue.name}", ""))[0]

    if status == "in_progress":
        worker = str(doc.get("last_worker") or "?")
        ran = _since(snap, doc.get("started"))
        if ran is not None and ran > params.run_timeout:
            tail = await snap.task_log(task_id, params.log_lines)
            return [on_queue(
                "warning", f"still running on {worker} after {ran / 3600:.1f} h",
                f"The verification has run for {ran / 3600:.1f} hours (run timeout {params.run_timeout / 3600:.1f} "
                "h): the agent may be stuck reading the storage.",
                "Read the log tail below; abort the verification task to free the agent, and narrow the selection "
                "(`ids`, `names`, `max_datasets`) if the datasets are very large.",
                {"worker": worker, "running_s": int(ran), "log_tail": tail[-params.log_lines:]},
            )]
        return from_result(previous, previous_covered,
                           lambda ds: note(ds, f"being verified by agent {worker} (queue {queue.name})", ""))[0]

    if status in ("failed", "stopped"):
        tail = await snap.task_log(task_id, params.log_lines)
        cause_id, hits = classify_failure(tail, str(doc.get("status_reason") or ""),
                                          str(doc.get("status_message") or ""))
        cause = next(c for c in CAUSES if c.id == cause_id)
        worker = str(doc.get("last_worker") or "?")
        said = next((line for line in reversed(tail) if "verification FAILED" in line), "")
        finding = on_queue(
            "warning", f"the verification task {status} on agent {worker} ({cause.title})",
            "The datasets could not be verified: " + (said or (hits[-1] if hits else str(doc.get("status_reason")
                                                                                         or status)))[:400],
            cause.remediation if cause_id != "unknown" else "Read the log tail below: the script says what it could "
            "not reach (API server, file server, storage credentials on the agent's host).",
            {"worker": worker, "cause": cause_id, "log_tail": tail[-params.log_lines:]},
        )
        since = _since(snap, doc.get("completed") or doc.get("status_changed"))
        if since is not None and since >= params.retry_after:
            await _dispatch(snap, params, queue, doc, datasets)
            finding.evidence["redispatched"] = True
        return [finding] + from_result(previous, previous_covered)[0]

    # completed (or published/closed): the result
    ctx = StorageContext.from_snapshot(snap)
    artifact = artifacts_of_doc(doc).get(RESULT_ARTIFACT)
    result: dict[str, Any] | None = None
    problem = ""
    if artifact is None or not artifact.get("uri"):
        problem = "the task completed without a `verification` artifact"
    else:
        try:
            raw = await read_artifact(ctx, str(artifact["uri"]), MAX_RESULT_BYTES)
            expected = str(artifact.get("hash") or "").lower()
            if expected and hashlib.sha256(raw).hexdigest() != expected:
                problem = "the result document does not match the sha256 the task recorded"
            else:
                result = json.loads(raw.decode("utf-8"))
                if not isinstance(result, dict) or result.get("task") != task_id:
                    problem, result = "the result document belongs to another task", None
        except ArtifactError as exc:
            problem = f"the result could not be read: {exc}"
        except (UnicodeDecodeError, ValueError) as exc:
            problem = f"the result is not valid JSON: {exc}"
    if result is None:
        tail = await snap.task_log(task_id, params.log_lines)
        return [on_queue("warning", "no readable result", f"The verification task completed but {problem}.",
                         "Read the log tail below; the agent's host must reach the file server to upload the result "
                         "(api.files_server in its clearml.conf).",
                         {"problem": problem, "log_tail": tail[-params.log_lines:]})]

    # kept with the result: a reset task forgets its worker and completion time
    result.setdefault("worker", doc.get("last_worker"))
    result.setdefault("completed", str(doc.get("completed") or ""))
    findings, pending = from_result(result, covered)
    age = _result_age(snap, result)
    stale = age is not None and age >= params.every
    if pending or stale:
        reason = (f"{len(pending)} selected version(s) were not in the last round." if pending
                  else f"The last verification finished {age / 3600:.0f} h ago (every {params.every / 3600:.0f} h).")
        dispatched = await dispatch(reason, previous=result)
        findings += [f for f in dispatched if f.subject.id in {d.id for d in pending}]
    return findings


def _result_age(snap: Snapshot, result: dict[str, Any]) -> float | None:
    """Seconds since the round completed, by the server's clock (the task's `completed`); the agent's own clock
    (`finished`) only when the server's is unknown."""
    age = _since(snap, result.get("completed"))
    if age is None and isinstance(result.get("finished"), int | float):
        age = max(0.0, snap.now.timestamp() - float(result["finished"]))
    return age


def artifacts_of_doc(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = (doc.get("execution") or {}).get("artifacts") or []
    if isinstance(raw, dict):
        raw = [dict(v, key=v.get("key", k)) for k, v in raw.items() if isinstance(v, dict)]
    return {str(a.get("key")): a for a in raw if isinstance(a, dict) and a.get("key")}


def _from_report(snap: Snapshot, params: IntegrityParams, secrets: list[str], ds: Task, report: dict[str, Any],
                 doc: dict[str, Any], result: dict[str, Any], queue_evidence: dict[str, Any],
                 age: float | None) -> Finding:
    from bot.checks.common import redact_evidence
    from bot.checks.datasets import judge_integrity, label, subject, version_of

    task_id = str(result.get("task") or doc.get("id") or "")
    state = report.get("state") if isinstance(report.get("state"), dict) else {}
    evidence: dict[str, Any] = {
        "dataset": {"id": ds.id, "name": ds.name, "version": version_of(ds), "status": ds.status},
        "verify": "hash",
        "on_agent": {**queue_evidence, "task": task_id, "worker": result.get("worker") or doc.get("last_worker"),
                     "host": result.get("host"), "finished_age_s": None if age is None else int(age),
                     "next_round": str(doc.get("status") or "") in ("created", "queued", "in_progress")},
        "state": {k: state.get(k) for k in ("uri", "sha256", "expected_sha256", "size")},
        "duration_s": report.get("duration_s"),
    }
    links = [snap.dataset_link(ds), snap.task_link(task_id)]
    if report.get("error"):
        error = str(report["error"])[:500]
        return Finding(
            check="datasets.integrity", severity="critical",
            title=f"Dataset '{label(ds)}' cannot be verified: {error}", detail=error, subject=subject(ds),
            evidence=redact_evidence(evidence, secrets), links=links,
            remediation="Without a readable state the version's file list is lost; recreate the version from its "
            "source data. See datasets.incomplete for the same version.",
        )
    expected = str(state.get("expected_sha256") or "").lower()
    actual = str(state.get("sha256") or "").lower()
    hash_ok = None if not (expected and actual) else expected == actual

    def items(key: str) -> list[dict[str, Any]]:
        return [x for x in report.get(key) or [] if isinstance(x, dict)]

    def count(key: str) -> int:
        value = report.get(f"{key}_count")
        return int(value) if isinstance(value, int) else len(items(key))

    return judge_integrity(
        snap, ds, params, secrets, evidence, links,
        state_hash_ok=hash_ok, files=int(report.get("files") or 0), chunks=int(report.get("chunks") or 0),
        files_ok=int(report.get("files_verified") or 0), bytes_hashed=int(report.get("bytes_hashed") or 0),
        bytes_downloaded=int(report.get("bytes_downloaded") or 0), mismatched=items("mismatched"),
        missing=items("missing"), chunk_problems=items("chunk_problems"),
        owner_related=[Subject(kind="dataset", id=str(i)) for i in report.get("related_ids") or [] if i],
        mismatched_count=count("mismatched"), missing_count=count("missing"), hashed=True,
    )


__all__ = ["JOB_SECTION", "RESULT_ARTIFACT", "VERIFY_TAG", "integrity_on_agent", "verification_script"]
