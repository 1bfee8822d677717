"""Hand-made findings and runs for the incident, digest and outbox tests (time is always passed in)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.engine.findings import Finding, Subject
from bot.engine.runner import CheckRun, RunResult
from bot.incidents.views import Notification
from bot.store import Store

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CHECKS = ("agents.stale", "agents.orphaned_tasks", "agents.unserved_queues", "queues.backlog", "storage.probe",
          "storage.upload_failures")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def dead_worker(worker: str = "gpu-3", severity: str = "critical", age_s: int = 600) -> Finding:
    return Finding(
        check="agents.stale", severity=severity, title=f"Worker {worker} silent for {age_s // 60}m",  # type: ignore[arg-type]
        subject=Subject(kind="worker", id=worker, name=worker),
        evidence={"last_seen_age_s": age_s, "queues": ["gpu"], "task": "t-1"},
        remediation="Restart the agent or rotate the machine.", actions=["rotate"],
    )


def orphaned_task(task: str = "t-1", worker: str = "gpu-3", severity: str = "warning") -> Finding:
    return Finding(
        check="agents.orphaned_tasks", severity=severity, title=f"Task {task} is orphaned",  # type: ignore[arg-type]
        subject=Subject(kind="task", id=task, name=f"train-{task}"),
        evidence={"last_worker": worker, "last_update_age_s": 900}, related=[Subject(kind="worker", id=worker)],
        remediation="Requeue the task.", actions=["requeue", "abort"],
    )


def unserved_queue(queue: str = "q-gpu", worker: str = "gpu-3", length: int = 4) -> Finding:
    return Finding(
        check="agents.unserved_queues", severity="critical", title=f"Queue {queue} has no live worker",
        subject=Subject(kind="queue", id=queue, name="gpu"),
        evidence={"length": length, "oldest_wait_s": 700}, related=[Subject(kind="worker", id=worker)],
        remediation="Start an agent on the queue.",
    )


def backlog(queue: str = "q-cpu", length: int = 60, severity: str = "warning") -> Finding:
    return Finding(
        check="queues.backlog", severity=severity, title=f"Queue cpu has {length} waiting",  # type: ignore[arg-type]
        subject=Subject(kind="queue", id=queue, name="cpu"),
        evidence={"length": length, "oldest_wait_s": 1200},
    )


def storage_down(url: str = "s3://ml-artifacts/") -> Finding:
    return Finding(
        check="storage.probe", severity="critical", title=f"{url} fails its probe",
        subject=Subject(kind="storage", id=url, name=url), evidence={"error": "AccessDenied on write"},
    )


def upload_failure(task: str, url: str = "s3://ml-artifacts/") -> Finding:
    return Finding(
        check="storage.upload_failures", severity="warning", title=f"Task {task} failed to upload",
        subject=Subject(kind="task", id=task, name=task),
        evidence={"lines": ["botocore AccessDenied"]}, related=[Subject(kind="storage", id=url)],
    )


def run(
    *findings: Finding,
    started: datetime = T0,
    statuses: dict[str, str] | None = None,
    checks: tuple[str, ...] = CHECKS,
    playbook: str = "health",
    server: str = "prod",
    metrics: dict[str, Any] | None = None,
) -> RunResult:
    """A run in which every check of `checks` ran (status `ok`, or `failed` when it reported something)."""
    statuses = statuses or {}
    runs = []
    for check in checks:
        reported = any(f.check == check for f in findings)
        runs.append(CheckRun(check, check, playbook, statuses.get(check, "failed" if reported else "ok"), 0.1,
                             sum(1 for f in findings if f.check == check)))
    result = RunResult(
        playbooks=[playbook], server=server, server_url=f"http://{server}:8008", started_at=started,
        duration_s=0.5, api_calls=7, findings=list(findings), checks=runs, trigger="schedule",
    )
    if metrics is not None:
        result.metrics = metrics  # type: ignore[attr-defined]
    return result


def fileserver_down(probe: str = "3f2a9c1be0d44b8c9a7e5d6c1b2a3f40", ms: int = 532) -> Finding:
    """storage.fileserver failing; every run has its own probe object and latency (volatile evidence)."""
    return Finding(
        check="storage.fileserver", severity="critical", title="File server http://files:8081 refuses uploads",
        subject=Subject(kind="storage", id="http://files:8081", name="files"),
        evidence={"target": "http://files:8081", "ok": False, "total_ms": ms, "error": "http_500",
                  "message": f"PUT http://files:8081/.clearml-chatops-probe/{probe}.probe returned 500 after {ms} ms",
                  "probe_object": f".clearml-chatops-probe/{probe}.probe",
                  "steps": [{"step": "write", "ok": False, "ms": ms}]},
    )


def kinds(notes: list[Notification]) -> list[tuple[str, int]]:
    """(kind, incident id) of each notification, for comparing what the tracker said."""
    return [(n.kind, n.incident.id) for n in notes]


def settings(**slack: Any) -> Settings:
    """Settings with #ml-alerts as the default channel, plus the given `slack` settings."""
    return Settings.model_validate({"slack": {"default_channel": "#ml-alerts", **slack}})


def temp_store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store under tmp_path, closed afterwards; a test module registers it as its `store` fixture with
    `store = pytest.fixture(temp_store, name="store")`."""
    s = Store(tmp_path / "store.db")
    yield s
    s.close()
