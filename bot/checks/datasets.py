"""Checks: datasets (half-uploaded versions, corrupted files, broken lineage).

A ClearML dataset version is a `data_processing` task tagged `dataset` in a hidden project; its file list
is the `state` artifact (state.json) and its files are zip chunk artifacts. An interrupted upload leaves a
version running or aborted with files, a state without chunks, or entries never uploaded; a corrupted
store serves bytes whose sha256 no longer matches the state; a deleted parent breaks every child. These
checks find each case and say which version and which files.

The state of each dataset is downloaded once per run and shared by the three checks (Snapshot.memoized).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bot.checks.common import (
    Duration,
    OptionalDuration,
    Patterns,
    iso,
    matches_any,
    redact_evidence,
    redact_subjects,
    when,
)
from bot.engine.findings import SEVERITY_RANK, Finding, Severity, Subject
from bot.engine.registry import CheckParams, check
from bot.storage.datasets import (
    ArtifactReader,
    ChunkPlan,
    StateRead,
    artifacts_of,
    is_chunk_artifact,
    plan_chunks,
    read_state,
    verify_chunks,
)
from bot.storage.probe import StorageContext

if TYPE_CHECKING:
    from bot.clearml.models import Task
    from bot.engine.snapshot import Snapshot

FINAL = ("completed", "published", "closed")


# ================================================================================================
# Shared helpers


def dataset_project(snap_projects: dict[str, str], dataset: Task) -> str:
    """The user-facing project of a dataset: "vision" for the hidden project "vision/.datasets/cifar"."""
    full = snap_projects.get(dataset.project, "")
    return full.split("/.datasets", 1)[0] if "/.datasets" in full else full


def version_of(dataset: Task) -> str:
    runtime = dataset.get("runtime") or {}
    return str(runtime.get("version") or "") if isinstance(runtime, dict) else ""


def label(dataset: Task) -> str:
    version = version_of(dataset)
    return f"{dataset.name} {version}".strip() if version else dataset.name


def subject(dataset: Task) -> Subject:
    return Subject(kind="dataset", id=dataset.id, name=label(dataset))


def runtime_int(dataset: Task, key: str) -> int:
    runtime = dataset.get("runtime") or {}
    value = runtime.get(key) if isinstance(runtime, dict) else None
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


async def select_datasets(
    snap: Snapshot, projects: list[str], names: list[str], ids: list[str] | None = None
) -> list[Task]:
    datasets = await snap.datasets()
    if ids:
        wanted = set(ids)
        datasets = [d for d in datasets if d.id in wanted]
    if projects:
        names_by_id = await snap.projects()
        datasets = [
            d
            for d in datasets
            if matches_any(dataset_project(names_by_id, d), projects)
            or matches_any(names_by_id.get(d.project, ""), projects)
            or matches_any(d.project, projects)
        ]
    if names:
        datasets = [d for d in datasets if matches_any(d.name, names) or matches_any(label(d), names)]
    return datasets


async def state_of(snap: Snapshot, ctx: StorageContext, dataset: Task) -> StateRead:
    """The dataset's state.json, downloaded once per run for all dataset checks."""
    uri = str((artifacts_of(dataset).get("state") or {}).get("uri") or "")
    return await snap.memoized(("dataset_state", dataset.id, uri), lambda: read_state(ctx, dataset))


async def datasets_by_id(snap: Snapshot, ids: set[str]) -> dict[str, Task]:
    """Dataset tasks by id: from the snapshot's dataset list, else fetched by id (archived ones too)."""
    known = {d.id: d for d in await snap.datasets()}
    missing = ids - set(known)
    if missing:
        fetched = await snap.tasks_by_id(missing, extra_fields=("runtime", "execution.artifacts"))
        known.update(fetched)
    return {i: known[i] for i in ids if i in known}


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _worst(severities: list[Severity]) -> Severity:
    return max(severities, key=lambda s: SEVERITY_RANK[s])


# ================================================================================================
# datasets.incomplete


class IncompleteParams(CheckParams):
    age_thresholds = ("stale_after",)
    stale_after: OptionalDuration = Field(
        default=1800.0,
        description="an in-progress version whose last_update is older than this is an abandoned upload (the SDK "
        "pings every 30 s while uploading; the server itself aborts after 2 h); null disables",
    )
    projects: Patterns = Field(default_factory=list, description="dataset project globs (empty: all)")
    names: Patterns = Field(default_factory=list, description="dataset name globs (empty: all)")
    read_state: bool = Field(
        default=True,
        description="download state.json of finalized versions to find dirty states and entries without chunks",
    )
    max_listed: int = Field(default=20, ge=1, le=1000, description="file paths listed in the evidence")


@check("datasets.incomplete", params=IncompleteParams)
async def incomplete(snap: Snapshot, params: IncompleteParams) -> list[Finding]:
    """Dataset versions left half-uploaded or unusable.

    In progress with a stale last_update (the uploader died), aborted/failed with files, finalized without a
    `state` artifact or with an unreadable one, a state marked dirty, file entries never uploaded (local_path
    set, no chunk), or entries whose chunk artifact is missing from the version (or the parent version named
    by parent_dataset_id). Finalized versions that cannot serve their files are critical; interrupted uploads
    are warnings.
    """
    datasets = await select_datasets(snap, params.projects, params.names)
    ctx = StorageContext.from_snapshot(snap)
    secrets = ctx.secrets()
    final = [d for d in datasets if d.status in FINAL]
    states: dict[str, StateRead] = {}
    if params.read_state and final:
        reads = await asyncio.gather(*(state_of(snap, ctx, d) for d in final))
        states = {r.dataset_id: r for r in reads}
    owners_needed: set[str] = set()
    for read in states.values():
        if read.state:
            owners_needed |= {e.parent_dataset_id for e in read.state.file_entries if e.parent_dataset_id}
    owners = await datasets_by_id(snap, owners_needed) if owners_needed else {}

    findings: list[Finding] = []
    for ds in datasets:
        problems: list[tuple[str, Severity, str]] = []  # (kind, severity, text)
        evidence: dict[str, Any] = {
            "dataset": {"id": ds.id, "name": ds.name, "version": version_of(ds), "status": ds.status},
            "last_update": when(snap, ds.last_update),
            "file_count": runtime_int(ds, "ds_file_count"),
            "total_size": runtime_int(ds, "ds_total_size"),
        }
        files = runtime_int(ds, "ds_file_count")
        age = snap.age_s(ds.last_update)
        if (
            ds.status == "in_progress"
            and params.stale_after is not None
            and age is not None
            and age > params.stale_after
        ):
            problems.append(
                (
                    "stale_in_progress",
                    "warning",
                    f"still in progress but not updated for {when(snap, ds.last_update)['age']}: the upload "
                    "was most likely interrupted",
                )
            )
        if ds.status in ("stopped", "failed") and files > 0:
            reason = f" ({ds.status_reason})" if ds.status_reason else ""
            problems.append(
                (
                    "interrupted",
                    "warning",
                    f"{ds.status}{reason} with {files} files registered: the upload did not finish",
                )
            )
        if ds.status in FINAL:
            artifacts = artifacts_of(ds)
            if "state" not in artifacts:
                problems.append(
                    ("no_state", "critical", f"{ds.status} but has no `state` artifact: Dataset.get() cannot load it")
                )
            elif params.read_state:
                read = states.get(ds.id)
                if read is not None and read.error and read.state is None:
                    problems.append(("state_unreadable", "critical", read.error))
                elif read is not None and read.state is not None:
                    state = read.state
                    if state.dirty:
                        problems.append(
                            ("dirty", "warning", "state.json is marked dirty: files were added after the last upload")
                        )
                    unuploaded = [e.relative_path for e in state.file_entries if not e.artifact_name or e.local_path]
                    if unuploaded:
                        problems.append(
                            (
                                "unuploaded_files",
                                "critical",
                                f"{len(unuploaded)} file entr{'y' if len(unuploaded) == 1 else 'ies'} were "
                                "never uploaded (local_path set, no chunk)",
                            )
                        )
                        evidence["unuploaded_files"] = unuploaded[: params.max_listed]
                    missing: list[dict[str, str]] = []
                    for entry in state.file_entries:
                        if not entry.artifact_name or entry.local_path:
                            continue
                        owner_id = entry.parent_dataset_id or ds.id
                        owner = ds if owner_id == ds.id else owners.get(owner_id)
                        owner_artifacts = artifacts if owner is ds else (artifacts_of(owner) if owner else None)
                        if owner_artifacts is None or entry.artifact_name not in owner_artifacts:
                            missing.append(
                                {"path": entry.relative_path, "chunk": entry.artifact_name, "dataset": owner_id}
                            )
                    if missing:
                        chunks = sorted({m["chunk"] for m in missing})
                        problems.append(
                            (
                                "missing_chunk",
                                "critical",
                                f"{len(missing)} files point at chunk artifacts that do not exist "
                                f"({', '.join(chunks[:5])})",
                            )
                        )
                        evidence["missing_chunk_files"] = missing[: params.max_listed]
                    referenced = {
                        e.artifact_name
                        for e in state.file_entries
                        if e.artifact_name and (e.parent_dataset_id or ds.id) == ds.id
                    }
                    orphans = sorted(k for k in artifacts if is_chunk_artifact(k) and k not in referenced)
                    if orphans:
                        evidence["unreferenced_chunks"] = orphans
        if not problems:
            continue
        severity = _worst([p[1] for p in problems])
        evidence["problems"] = [{"kind": k, "severity": s, "detail": t} for k, s, t in problems]
        kinds = [k for k, _, _ in problems]
        findings.append(
            Finding(
                check="datasets.incomplete",
                severity=severity,
                title=f"Dataset '{label(ds)}' is incomplete: " + ", ".join(k.replace("_", " ") for k in kinds),
                detail="; ".join(t for _, _, t in problems),
                subject=subject(ds),
                evidence=redact_evidence(evidence, secrets),
                links=[snap.dataset_link(ds)],
                remediation=_incomplete_fix(kinds, ds),
            )
        )
    return findings


def _incomplete_fix(kinds: list[str], ds: Task) -> str:
    tips = []
    if "stale_in_progress" in kinds or "interrupted" in kinds:
        tips.append(
            f"Re-run the upload: `Dataset.get(dataset_id='{ds.id}')` reopens an aborted version, then "
            "`upload()` and `finalize()`; or delete this version (`clearml-data delete --id ...`) and create it "
            "again. Look at the uploading machine's log for why it stopped (storage errors, killed process)."
        )
    if {"no_state", "state_unreadable", "unuploaded_files", "missing_chunk", "dirty"} & set(kinds):
        tips.append(
            "This version cannot serve all its files: recreate it from the source data (`clearml-data create` "
            "+ `add` + `upload` + `close`), and point consumers at the new version id. If the storage lost "
            "objects, check storage.probe for that storage."
        )
    return " ".join(tips)


# ================================================================================================
# datasets.integrity


class IntegrityParams(CheckParams):
    ids: list[str] = Field(default_factory=list, description="dataset version ids to verify")
    projects: Patterns = Field(default_factory=list, description="dataset project globs")
    names: Patterns = Field(default_factory=list, description="dataset name globs")
    verify: Literal["exists", "hash"] = Field(
        default="exists",
        description="`exists`: every chunk artifact is recorded and its URI answers (cheap); `hash`: download "
        "every chunk and re-hash every file with sha256 (reads the whole dataset)",
    )
    statuses: list[str] = Field(
        default_factory=lambda: list(FINAL),
        description="dataset statuses to verify (explicit `ids` are verified whatever their status)",
    )
    max_datasets: int = Field(default=20, ge=1, le=10000, description="at most this many (most recent first)")
    workers: int | None = Field(default=None, ge=1, le=256, description="hashing threads (default: CPU count)")
    downloads: int = Field(default=4, ge=1, le=64, description="chunks downloaded at the same time")
    timeout: Duration = Field(default=60.0, description="read timeout per chunk request")
    local_copy: str | None = Field(
        default=None,
        description="with `verify: hash`, hash the files of a local copy (e.g. what `clearml-data get` or "
        "Dataset.get_local_copy() produced) instead of downloading the chunks: a directory path, where `{id}`, "
        "`{name}` and `{version}` are replaced per dataset",
    )
    max_listed: int = Field(default=20, ge=1, le=1000, description="file paths listed in the evidence")
    on_agent: str | None = Field(
        default=None,
        description="a queue name: instead of reading the chunks on the bot's machine, enqueue a verification task "
        "there; an agent near the storage re-hashes every file (always `verify: hash`) and the bot reads only its "
        "JSON result (results arrive on a later run)",
    )
    agent_project: str = Field(
        default="clearml-chatops/verification", description="with `on_agent`: the bot-owned (hidden) project"
    )
    pickup_timeout: Duration = Field(
        default=3600.0, description="with `on_agent`: a verification task waiting longer than this warns"
    )
    run_timeout: Duration = Field(
        default=43200.0, description="with `on_agent`: a verification running longer than this warns"
    )
    every: Duration = Field(default=86400.0, description="with `on_agent`: verify again this long after a round")
    retry_after: Duration = Field(
        default=3600.0, description="with `on_agent`: send a failed verification again after this long"
    )
    log_lines: int = Field(default=30, ge=5, le=500, description="with `on_agent`: log lines quoted on failure")


@check("datasets.integrity", params=IntegrityParams)
async def integrity(snap: Snapshot, params: IntegrityParams) -> list[Finding]:
    """Dataset versions whose files can no longer be served intact.

    For the datasets chosen by `ids`, `projects` or `names` (default: the most recent finalized versions):
    download the state and verify its sha256 against the `state` artifact's hash; check that every chunk a
    file entry needs exists on its version (or parent version) and that its URI answers. With `verify: hash`,
    download every chunk (file server with the API token, S3 through boto3) and re-hash every file (sha256, in
    parallel, bounded memory), reporting mismatched and missing files. An intact version gives an `ok`
    finding with what was verified. Progress: `bot.storage.datasets.set_progress_hook(...)`.

    With `on_agent: <queue>` the reading and hashing run on an agent of that queue (bot/checks/datasets_agent.py):
    the run with no result dispatches a verification task (`info`), a later run turns its result into the same
    findings; a verification that fails or waits past `pickup_timeout` is a warning on the queue with its log.
    """
    datasets = await select_datasets(snap, params.projects, params.names, params.ids or None)
    findings: list[Finding] = []
    if params.ids:
        found = {d.id for d in datasets}
        lost = [i for i in params.ids if i not in found]
        if lost:
            extra = await snap.tasks_by_id(lost, extra_fields=("runtime", "execution.artifacts"))
            datasets += [t for t in extra.values() if "dataset" in t.system_tags]
            for missing_id in lost:
                if missing_id not in extra or "dataset" not in extra[missing_id].system_tags:
                    findings.append(
                        Finding(
                            check="datasets.integrity",
                            severity="error",
                            title=f"datasets.integrity: dataset {missing_id} does not exist",
                            detail=f"No dataset version with id {missing_id} (parameter `ids`).",
                            subject=Subject(kind="dataset", id=missing_id, name=""),
                            remediation="Copy the version id from the web UI's Datasets page (or `clearml-data list`).",
                        )
                    )
    else:
        datasets = [d for d in datasets if d.status in params.statuses]
    datasets.sort(key=lambda d: d.last_update or d.created or snap.now, reverse=True)
    datasets = datasets[: params.max_datasets]
    ctx = StorageContext.from_snapshot(snap)
    secrets = ctx.secrets()
    if params.on_agent:
        from bot.checks.datasets_agent import integrity_on_agent

        return findings + await integrity_on_agent(snap, params, datasets, secrets)
    async with ArtifactReader(ctx, timeout_s=params.timeout) as reader:
        for ds in datasets:
            findings.append(await _verify_one(snap, ctx, reader, ds, params, secrets))
    return findings


def _integrity_finding(
    ds: Task,
    evidence: dict[str, Any],
    related: list[Subject],
    links: list[str],
    secrets: list[str],
    severity: Severity,
    title: str,
    detail: str,
    remediation: str = "",
) -> Finding:
    """One `datasets.integrity` finding about a dataset version (the local and the on-agent paths alike)."""
    return Finding(
        check="datasets.integrity",
        severity=severity,
        title=title,
        detail=detail,
        subject=subject(ds),
        evidence=redact_evidence(evidence, secrets),
        related=redact_subjects(related, secrets),
        links=links,
        remediation=remediation,
    )


async def _verify_one(
    snap: Snapshot,
    ctx: StorageContext,
    reader: ArtifactReader,
    ds: Task,
    params: IntegrityParams,
    secrets: list[str],
) -> Finding:
    started = time.perf_counter()
    evidence: dict[str, Any] = {
        "dataset": {"id": ds.id, "name": ds.name, "version": version_of(ds), "status": ds.status},
        "verify": params.verify,
    }
    links = [snap.dataset_link(ds)]

    def done(severity: Severity, title: str, detail: str, remediation: str = "") -> Finding:
        evidence["duration_s"] = round(time.perf_counter() - started, 3)
        return _integrity_finding(ds, evidence, [], links, secrets, severity, title, detail, remediation)

    read = await state_of(snap, ctx, ds)
    evidence["state"] = {
        "uri": read.uri,
        "sha256": read.sha256,
        "expected_sha256": read.expected_sha256,
        "size": read.size,
    }
    if read.state is None:
        return done(
            "critical",
            f"Dataset '{label(ds)}' cannot be verified: {read.error}",
            read.error or "",
            "Without a readable state the version's file list is lost; recreate the version from its source "
            "data. See datasets.incomplete for the same version.",
        )
    state = read.state
    owners_needed = {e.parent_dataset_id or ds.id for e in state.file_entries}
    owners = await datasets_by_id(snap, owners_needed - {ds.id})
    owners[ds.id] = ds
    artifacts_by_dataset = {oid: artifacts_of(task) for oid, task in owners.items()}
    plans, plan_problems = plan_chunks(state, ds.id, artifacts_by_dataset)
    if params.local_copy and params.verify == "hash":
        # every file the state lists, looked up in the local copy (which has them whatever chunk they came from)
        folder = params.local_copy.format(id=ds.id, name=ds.name, version=version_of(ds))
        evidence["local_copy"] = folder
        # the playbook (admin-written) names this folder: reads may use it. Only the template's fixed prefix is a
        # root (a dataset name like `../..` must not widen it).
        fixed = params.local_copy.split("{", 1)[0]
        ctx.local_roots.append(os.path.abspath(os.path.expanduser(fixed or folder)))
        plans = [
            ChunkPlan(
                "local copy",
                ds.id,
                "file://" + os.path.abspath(os.path.expanduser(folder)),
                None,
                list(state.file_entries),
            )
        ]
        plan_problems = []
    report = await verify_chunks(
        reader,
        plans,
        hash_files=params.verify == "hash",
        dataset_id=ds.id,
        dataset_name=label(ds),
        workers=params.workers,
        downloads=params.downloads,
    )
    owner_related = [Subject(kind="dataset", id=oid, name=label(t)) for oid, t in owners.items() if oid != ds.id]
    evidence["duration_s"] = round(time.perf_counter() - started, 3)
    return judge_integrity(
        snap, ds, params, secrets, evidence, links,
        state_hash_ok=read.hash_ok,
        files=len(state.file_entries),
        chunks=len(plans),
        files_ok=report.files_ok,
        bytes_hashed=report.bytes_hashed,
        bytes_downloaded=report.bytes_downloaded,
        mismatched=report.mismatched,
        missing=plan_problems + report.missing,
        chunk_problems=report.chunk_problems,
        owner_related=owner_related,
    )


def judge_integrity(
    snap: Snapshot,
    ds: Task,
    params: IntegrityParams,
    secrets: list[str],
    evidence: dict[str, Any],
    links: list[str],
    *,
    state_hash_ok: bool | None,
    files: int,
    chunks: int,
    files_ok: int,
    bytes_hashed: int,
    bytes_downloaded: int,
    mismatched: list[dict[str, Any]],
    missing: list[dict[str, Any]],
    chunk_problems: list[dict[str, Any]],
    owner_related: list[Subject],
    mismatched_count: int | None = None,
    missing_count: int | None = None,
    hashed: bool | None = None,
) -> Finding:
    """The finding for one verified version, from what was found (on this machine or by an agent)."""
    hashed = params.verify == "hash" if hashed is None else hashed
    n_mismatched = len(mismatched) if mismatched_count is None else mismatched_count
    n_missing = len(missing) if missing_count is None else missing_count
    evidence.update(
        files=files,
        chunks=chunks,
        files_verified=files_ok,
        bytes_hashed=bytes_hashed,
        bytes_downloaded=bytes_downloaded,
        mismatched_count=n_mismatched,
        missing_count=n_missing,
        mismatched=mismatched[: params.max_listed],
        missing=missing[: params.max_listed],
        chunk_problems=chunk_problems[: params.max_listed],
    )
    problems: list[str] = []
    if state_hash_ok is False:
        problems.append("state.json does not match its recorded sha256")
    if n_mismatched:
        problems.append(f"{_n(n_mismatched, 'file')} {'differ' if n_mismatched != 1 else 'differs'} "
                        "from the recorded sha256")
    if n_missing:
        problems.append(f"{_n(n_missing, 'file')} cannot be found")
    elif chunk_problems:
        problems.append("; ".join(p["problem"] for p in chunk_problems[:3]))

    def done(severity: Severity, title: str, detail: str, remediation: str = "") -> Finding:
        return _integrity_finding(ds, evidence, owner_related, links, secrets, severity, title, detail, remediation)

    if problems:
        examples = [m["path"] for m in mismatched[:3]] + [m["path"] for m in missing[:3]]
        return done(
            "critical",
            f"Dataset '{label(ds)}' is damaged: " + "; ".join(problems),
            ("Affected files: " + ", ".join(str(e) for e in examples)) if examples else "; ".join(problems),
            "Consumers of this version will get wrong or missing files (Dataset.get_local_copy only compares "
            "sizes). Recreate the version from its source data, or re-upload the affected chunks; check the "
            "storage that holds the chunks (storage.probe) for lost or rewritten objects.",
        )
    what = (
        f"{_n(files_ok, 'file')} re-hashed (sha256, {bytes_hashed} bytes)"
        if hashed
        else f"{_n(chunks, 'chunk')} present for {_n(files_ok, 'file')}"
    )
    return done("ok", f"Dataset '{label(ds)}' is intact: {what}", f"state.json sha256 matches; {what}.")


# ================================================================================================
# datasets.lineage


class LineageParams(CheckParams):
    projects: Patterns = Field(default_factory=list, description="dataset project globs (empty: all)")
    names: Patterns = Field(default_factory=list, description="dataset name globs (empty: all)")
    statuses: list[str] = Field(
        default_factory=lambda: [*FINAL, "in_progress"],
        description="check versions in these statuses (aborted/failed versions are datasets.incomplete's job)",
    )


@check("datasets.lineage", params=LineageParams)
async def lineage(snap: Snapshot, params: LineageParams) -> list[Finding]:
    """Dataset versions whose parent versions are missing or not finalized.

    Reads each version's dependency graph (state.json) and looks up every ancestor: one that no longer exists
    (deleted) makes the child impossible to download in full (critical); one that is not completed/published
    (still uploading, aborted, failed) may hold partial files (warning).
    """
    datasets = [d for d in await select_datasets(snap, params.projects, params.names) if d.status in params.statuses]
    ctx = StorageContext.from_snapshot(snap)
    secrets = ctx.secrets()
    with_state = [d for d in datasets if "state" in artifacts_of(d)]
    reads = await asyncio.gather(*(state_of(snap, ctx, d) for d in with_state))
    ancestors: dict[str, list[str]] = {}
    for ds, read in zip(with_state, reads, strict=True):
        if read.state is None:
            continue
        graph = read.state.dependency_graph
        ids: list[str] = []
        for node, parents in graph.items():
            for pid in [node, *parents]:
                if pid and pid != ds.id and pid not in ids:
                    ids.append(pid)
        if ids:
            ancestors[ds.id] = ids
    if not ancestors:
        return []
    lookup = await datasets_by_id(snap, {a for ids in ancestors.values() for a in ids})
    findings: list[Finding] = []
    for ds in with_state:
        ids = ancestors.get(ds.id)
        if not ids:
            continue
        missing = [a for a in ids if a not in lookup]
        unfinal = [lookup[a] for a in ids if a in lookup and lookup[a].status not in FINAL]
        if not missing and not unfinal:
            continue
        severity: Severity = "critical" if missing else "warning"
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} parent version{'s' if len(missing) != 1 else ''} missing ({', '.join(missing[:3])})"
            )
        if unfinal:
            parts.append("not finalized: " + ", ".join(f"'{label(p)}' ({p.status})" for p in unfinal[:3]))
        evidence = {
            "dataset": {"id": ds.id, "name": ds.name, "version": version_of(ds), "status": ds.status},
            "ancestors": ids,
            "missing_parents": missing,
            "unfinalized_parents": [
                {
                    "id": p.id,
                    "name": p.name,
                    "version": version_of(p),
                    "status": p.status,
                    "last_update": iso(p.last_update),
                }
                for p in unfinal
            ],
        }
        related = [Subject(kind="dataset", id=p.id, name=label(p)) for p in unfinal] + [
            Subject(kind="dataset", id=m) for m in missing
        ]
        remediation = []
        if missing:
            remediation.append(
                "A parent version was deleted: this version's inherited files cannot be downloaded. Recreate the "
                "version without that parent (`Dataset.create(..., parent_datasets=[...])` with an existing "
                "parent, then add the files), or restore the deleted version."
            )
        if unfinal:
            remediation.append(
                "Finalize the parent (`Dataset.get(dataset_id=...).finalize()` once its upload is complete) or "
                "rebase this version on a finalized parent; an unfinished parent may hold partial files."
            )
        findings.append(
            Finding(
                check="datasets.lineage",
                severity=severity,
                title=f"Dataset '{label(ds)}' has a broken lineage: " + "; ".join(parts),
                detail="; ".join(parts),
                subject=subject(ds),
                evidence=redact_evidence(evidence, secrets),
                related=redact_subjects(related, secrets),
                links=[snap.dataset_link(ds)] + [snap.dataset_link(p) for p in unfinal[:3]],
                remediation=" ".join(remediation),
            )
        )
    return findings


__all__ = ["FINAL", "dataset_project", "label", "select_datasets", "state_of"]
