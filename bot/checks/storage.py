"""Checks: storage (the ClearML file server, S3/GCS/Azure buckets, where tasks write, failed uploads).

Artifacts, models and dataset chunks are only as reachable as the storage they were written to. These
checks probe the storage the fleet is configured to use (write -> read -> delete, like the SDK's own
upload test), look for tasks that wrote to places other machines cannot reach, and read the console
logs of failed tasks for upload errors, pointing each one at the storage it concerns so an incident can
tie the failing uploads to the failing probe (`Finding.related`).

Helpers at the bottom (project filter, log tails, redaction, storage-error patterns) are shared by the
reproducibility and dataset checks.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bot.checks.common import (
    CheckError,
    Duration,
    Patterns,
    iso,
    matches_any,
    redact_evidence,
    redact_subjects,
    server_subject,
)
from bot.clearml.errors import ClearMLError, NotFoundError
from bot.config import StorageTarget
from bot.diagnosis.storage_errors import match_storage_errors
from bot.engine.findings import Finding, Severity, Subject
from bot.engine.registry import CheckParams, check
from bot.redact import redact
from bot.storage import results as r
from bot.storage.credentials import locate
from bot.storage.fileserver import probe_fileserver
from bot.storage.probe import StorageContext, probe_target
from bot.storage.results import ProbeResult
from bot.storage.urls import is_internal_name, is_loopback_host, parse_storage_url

if TYPE_CHECKING:
    from bot.clearml.models import Task
    from bot.config import StorageTarget
    from bot.engine.snapshot import Snapshot


# ================================================================================================
# Remediation per failure class: our words, naming the setting (filled in from the probe result).

_FIX: dict[str, str] = {
    r.NO_CREDENTIALS: "No credentials were found for this storage. Set them in {setting} (the bot reads its "
    "storage targets' key_env/secret_env, then clearml.conf `sdk.aws.s3`, then the AWS environment), and "
    "give the agents the same credentials in their clearml.conf.",
    r.PARTIAL_CREDENTIALS: "Only half of the key pair is set. Set the missing half in {setting}.",
    r.INVALID_ACCESS_KEY: "The storage service does not know this access key (deleted, rotated, or from "
    "another account/endpoint). Put a valid access key in {setting}.",
    r.SIGNATURE_MISMATCH: "The secret key does not match the access key (or the request was signed for the "
    "wrong region/endpoint). Correct {setting}.",
    r.REGION_MISMATCH: "The bucket lives in another region than the one configured. Set {setting} to the "
    "bucket's region.",
    r.EXPIRED_TOKEN: "The temporary session token expired or is invalid. Refresh it ({setting}) or use "
    "long-lived keys / an instance role.",
    r.ACCESS_DENIED: "The credentials may not use this bucket. Grant them access: {setting}.",
    r.ACCESS_DENIED_WRITE: "Uploads are denied, so artifacts, models and dataset chunks cannot be stored. "
    "Grant write access: {setting}.",
    r.ACCESS_DENIED_READ: "Objects can be written but not read back, so downloads (datasets, input models) "
    "will fail. Grant read access: {setting}.",
    r.ACCESS_DENIED_DELETE: "Writes work but deletes are denied. The clearml SDK tests an output URI by "
    "writing and deleting a file, so `Task.init(output_uri=...)` fails with `Insufficient permissions "
    "(delete failed)`. Grant delete access: {setting}. A probe object may be left behind (see evidence).",
    r.NO_SUCH_BUCKET: "The bucket does not exist at this endpoint. Create it, or fix {setting}.",
    r.ENDPOINT_UNREACHABLE: "The storage endpoint cannot be reached from the bot. Check the host/port in "
    "{setting}, that the service is running, and firewalls between the bot, the agents and the storage.",
    r.TLS: "The TLS connection to the storage failed. Fix {setting}.",
    r.TIMEOUT: "The storage endpoint accepted the connection but did not answer in time. Check its health "
    "and load, or the network path ({setting}).",
    r.CONTENT_MISMATCH: "What was read back differs from what was written: something between the client and "
    "the storage rewrites objects (a proxy, a gateway, a broken volume). Check {setting}.",
    r.UNAUTHORIZED: "The file server refused the ClearML API token, so SDK uploads to it fail with 401. "
    "Check {setting}.",
    r.UPLOAD_REFUSED: "The file server refused the upload. Check {setting}.",
    r.DOWNLOAD_FAILED: "The file server accepted the upload but could not serve it back. Check {setting}.",
    r.DELETE_REFUSED: "The file server refused to delete the probe file; uploads work but cleanup (task "
    "resets, artifact deletion) will fail. Check {setting}.",
    r.MISSING_LIBRARY: "The bot cannot probe this kind of storage yet: {setting}.",
    r.CONFIG_ERROR: "The storage configuration could not be used: fix {setting}.",
    r.UNEXPECTED: "The probe failed in an unexpected way; see the message. Check {setting}.",
}

# Failures that leave the storage usable for uploads are warnings; everything else breaks uploads.
_WARNING_ONLY = {r.DELETE_REFUSED}
_INFO_ONLY = {r.MISSING_LIBRARY}


def _fix(result: ProbeResult) -> str:
    template = _FIX.get(result.error or "", _FIX[r.UNEXPECTED])
    return template.format(setting=f"`{result.setting}`" if result.setting else "the storage settings")


def _severity(result: ProbeResult, slow_ms: float | None) -> Severity:
    if result.error in _INFO_ONLY:
        return "info"
    if result.error in _WARNING_ONLY:
        return "warning"
    if result.error:
        return "critical"
    if slow_ms is not None and any((s.latency_ms or 0) > slow_ms for s in result.steps):
        return "warning"
    return "ok"


def _slow_steps(result: ProbeResult, slow_ms: float | None) -> list[str]:
    if slow_ms is None:
        return []
    return [f"{s.name} {s.latency_ms:.0f} ms" for s in result.steps if (s.latency_ms or 0) > slow_ms]


def _latency_summary(result: ProbeResult) -> str:
    return ", ".join(f"{s.name} {s.latency_ms:.0f} ms" for s in result.steps if s.latency_ms is not None)


def _probe_finding(
    check_id: str,
    subject: Subject,
    result: ProbeResult,
    slow_ms: float | None,
    secrets: list[str],
    *,
    label: str,
    links: list[str] | None = None,
    related: list[Subject] | None = None,
) -> Finding:
    severity = _severity(result, slow_ms)
    evidence = result.evidence()
    if result.error:
        step = result.failed_step
        title = f"{label}: {HUMAN.get(result.error, result.error.replace('_', ' '))}" + (
            f" (at the {step} step)"
            if step
            and step not in ("credentials", "bucket")
            and result.error
            not in (r.ACCESS_DENIED_WRITE, r.ACCESS_DENIED_READ, r.ACCESS_DENIED_DELETE, r.DELETE_REFUSED)
            else ""
        )
        detail = result.message
        remediation = _fix(result)
    elif severity == "warning":
        slow = _slow_steps(result, slow_ms)
        title = f"{label} is slow ({', '.join(slow)})"
        detail = f"Every step worked, but some took longer than {slow_ms:.0f} ms: {_latency_summary(result)}."
        remediation = (
            "Uploads and downloads of artifacts and datasets will be slow too. Check the storage's load and "
            "the network path; raise `slow_ms` in the playbook if this latency is normal here."
        )
    else:
        title = f"{label} works (write, read back, delete in {result.total_ms:.0f} ms)"
        detail = _latency_summary(result)
        remediation = ""
    return Finding(
        check=check_id,
        severity=severity,
        title=redact(title, secrets),
        detail=redact(detail, secrets),
        subject=subject,
        evidence=redact_evidence(evidence, secrets),
        related=redact_subjects(related or [], secrets),
        links=links or [],
        remediation=redact(remediation, secrets),
    )


# ================================================================================================
# storage.fileserver


class FileserverParams(CheckParams):
    timeout: Duration = Field(
        default=10.0,
        description="per-request timeout. 10 s: the file server answers a 1 KB request in milliseconds when healthy",
    )
    slow_ms: float | None = Field(
        default=2000.0,
        ge=0,
        description="a step slower than this (ms) is a warning; null turns it off",
    )
    payload_bytes: int = Field(
        default=1024,
        ge=64,
        le=16 * 1024 * 1024,
        description="size of the probe file",
    )
    probe_prefix: str = Field(
        default=".clearml-chatops-probe/",
        description="folder on the file server the probe file goes to (deleted again at once)",
    )


@check("storage.fileserver", params=FileserverParams)
async def fileserver(snap: Snapshot, params: FileserverParams) -> list[Finding]:
    """The ClearML file server answers, and a probe file goes up, comes back identical and is deleted.

    GET / (ping), POST a small random file with the API token (as the SDK uploads artifacts), GET it back
    and compare the bytes, DELETE it; each step timed. Failures are classified: unreachable, TLS, timeout,
    the token refused (401), upload refused, content mismatch, delete refused.
    """
    files_url = snap.server.files_url.rstrip("/")
    result = await probe_fileserver(
        snap.client,
        None,
        prefix=params.probe_prefix,
        timeout_s=params.timeout,
        payload_bytes=params.payload_bytes,
        name="file server",
    )
    subject = Subject(kind="storage", id=files_url, name="ClearML file server")
    secrets = snap.server.secrets()
    return [
        _probe_finding("storage.fileserver", subject, result, params.slow_ms, secrets, label=f"File server {files_url}")
    ]


# ================================================================================================
# storage.probe


class ProbeParams(CheckParams):
    urls: list[str] = Field(
        default_factory=list,
        description="extra storage URLs to probe besides the bot config's `storage:` targets (s3://, gs://, "
        "azure://, http(s):// file servers); their credentials come from clearml.conf / the environment",
    )
    discover: bool = Field(
        default=False,
        description="also probe the object stores (s3://, gs://, azure:// bucket roots) that recent tasks use as "
        "output.destination, so storage nobody listed in the config is tested too (the files host is left to "
        "storage.fileserver). Off by default: it makes the bot contact hosts named in task data, not only the "
        "ones its config names",
    )
    discover_window: Duration = Field(
        default=24 * 3600.0, description="tasks whose status changed within this window are used for `discover`"
    )
    max_discovered: int = Field(default=10, ge=0, le=100, description="at most this many discovered roots")
    only: Patterns = Field(
        default_factory=list,
        description="probe only the targets whose URL or name matches one of these globs (empty: all)",
    )
    timeout: Duration = Field(
        default=10.0,
        description="connect/read timeout per request; boto3 retries at most once, so a dead endpoint costs seconds",
    )
    slow_ms: float | None = Field(
        default=3000.0,
        ge=0,
        description="a step slower than this (ms) is a warning; null turns it off",
    )
    payload_bytes: int = Field(default=1024, ge=64, le=16 * 1024 * 1024, description="size of the probe object")
    concurrency: int = Field(default=4, ge=1, le=32, description="targets probed at the same time")


async def discovered_roots(snap: Snapshot, ctx: StorageContext, window_s: float, limit: int) -> dict[str, list[Task]]:
    """Bucket-level roots of recent tasks' output.destination (object stores only) that no configured
    target covers: root -> the tasks using it (most recent first)."""
    from bot.storage.credentials import match_target

    if limit <= 0:
        return {}
    tasks = await snap.tasks(changed_within=timedelta(seconds=window_s), extra_fields=("output.destination",))
    roots: dict[str, list[Task]] = {}
    for task in tasks:
        dest = task.get("output.destination")
        if not isinstance(dest, str) or not dest.strip():
            continue
        loc = locate(dest.strip(), ctx.targets, ctx.conf)
        # http roots other than the files host are misconfigurations storage.destinations reports; probing
        # them would upload to hosts nobody configured.
        if loc.kind not in ("s3", "gcs", "azure") or not loc.bucket:
            continue
        if match_target(loc, ctx.targets, ctx.conf) is not None:
            continue
        roots.setdefault(loc.root, []).append(task)
    return dict(list(roots.items())[:limit])


@check("storage.probe", params=ProbeParams)
async def probe(snap: Snapshot, params: ProbeParams) -> list[Finding]:
    """Each storage target accepts a probe object: write, read back, delete.

    For every configured target (the bot config's `storage:`, the playbook's `urls`) and, with `discover`, every
    object store recent tasks write to (s3:// incl. MinIO/S3-compatible endpoints, gs://, azure://, a file
    server URL): credentials found (bot config key_env/secret_env, clearml.conf sdk.aws.s3 / sdk.google.storage
    / sdk.azure.storage, the cloud SDK's environment), bucket exists, write -> read -> delete of a probe object
    under the target's probe_prefix, with latency. Errors are classified (no credentials, invalid access key,
    signature or region mismatch, access denied on write/read/delete, no such bucket, endpoint unreachable,
    TLS) and name the setting to fix. A discovered bucket the bot has no credentials for is a warning (the
    agents may have them); every other failure is critical. GCS and Azure need their client libraries;
    without them an info finding says what to install.
    """

    ctx = StorageContext.from_snapshot(snap, params.urls)
    discovered: dict[str, list[Task]] = {}
    if params.discover:
        discovered = await discovered_roots(snap, ctx, params.discover_window, params.max_discovered)
        ctx.targets += [StorageTarget(url=root) for root in discovered]
    targets = [
        t
        for t in ctx.targets
        if not params.only or matches_any(t.url, params.only) or matches_any(t.label, params.only)
    ]
    if not targets:
        return [_refused_finding(snap, url) for url in ctx.refused] + [
            Finding(
                check="storage.probe",
                severity="info",
                title="No storage targets to probe",
                detail="The bot's config defines no `storage:` targets, the playbook passes no `urls`, and no "
                "recent task writes to an object store, so only the file server is tested (storage.fileserver).",
                subject=server_subject(snap),
                remediation="List the buckets your tasks write to under `storage:` in the bot's config file "
                "(url, and key_env/secret_env naming the environment variables holding the keys), or pass "
                "`urls:` to this check in the playbook.",
            )
        ]
    secrets = ctx.secrets()
    gate = asyncio.Semaphore(params.concurrency)

    async def one(target: StorageTarget) -> Finding:
        async with gate:
            result = await probe_target(ctx, target, timeout_s=params.timeout, payload_bytes=params.payload_bytes)
        subject = Subject(kind="storage", id=target.url, name=target.label)
        related: list[Subject] = []
        if result.kind == "http" and ctx.is_files_url(target.url):
            # the same host storage.fileserver probes: let an incident tie the two together
            related.append(Subject(kind="storage", id=snap.server.files_url.rstrip("/"), name="ClearML file server"))
        users = discovered.get(target.url)
        finding = _probe_finding(
            "storage.probe",
            subject,
            result,
            params.slow_ms,
            secrets,
            label=f"Storage {target.label}",
            related=related,
        )
        if users is not None:
            evidence = dict(finding.evidence)
            evidence["discovered_from"] = [{"id": t.id, "name": t.name} for t in users[:5]]
            evidence["tasks_using_it"] = len(users)
            update: dict[str, Any] = {"evidence": evidence, "links": [snap.task_link(t) for t in users[:3]]}
            if result.error == r.NO_CREDENTIALS:
                update["severity"] = "warning"
                update["remediation"] = (
                    f"{len(users)} recent task(s) write to {target.url}, but the bot has no credentials for it, so "
                    "it cannot test it. Add it under `storage:` in the bot's config with key_env/secret_env (the "
                    "same keys the agents use in clearml.conf `sdk.aws.s3`), or set `discover: false`."
                )
            finding = finding.model_copy(update=update)
        return finding

    findings = list(await asyncio.gather(*(one(t) for t in targets)))
    return findings + [_refused_finding(snap, url) for url in ctx.refused]


def _refused_finding(snap: Snapshot, url: str) -> Finding:
    return Finding(
        check="storage.probe",
        severity="error",
        title=f"Not probed: {url} is not a configured storage location",
        detail="A playbook's `urls` may only name places the bot's configuration already knows: a `storage:` "
        "target (or a path under one), the ClearML server's own hosts, or an s3:// bucket clearml.conf has "
        "credentials for. Anything else is never contacted, so a playbook cannot make the bot reach arbitrary hosts.",
        subject=Subject(kind="storage", id=url, name=url),
        remediation="Add the location under `storage:` in the bot's config file (an admin's decision), or remove it "
        "from the playbook's `urls`.",
    )


# ================================================================================================
# storage.destinations


class DestinationsParams(CheckParams):
    window: Duration = Field(
        default=24 * 3600.0,
        description="look at tasks whose status changed within this window (default 24h: yesterday's runs).",
    )
    projects: Patterns = Field(
        default_factory=list,
        description="only tasks in projects whose name (or id) matches one of these globs (empty: all)",
    )
    allowed: Patterns = Field(
        default_factory=list,
        description="extra storage roots that are fine even if not configured, as globs on the bucket-level URL "
        "(`s3://ml-*`, `https://files.example.com*`)",
    )
    unknown_hosts: Literal["auto", "warn", "ignore"] = Field(
        default="auto",
        description="hosts that are neither the files host nor a configured storage target: `warn`, `ignore`, "
        "or `auto` (warn only when the bot's config lists storage targets; without them the bot cannot know which "
        "buckets are legitimate, so it flags only local and container-internal addresses)",
    )
    include_models: bool = Field(
        default=True,
        description="also check the URIs of the tasks' output models (one models.get_all call).",
    )


@dataclass
class _BadUri:
    where: str  # output.destination | artifact:<key> | model:<name>
    uri: str
    reason: str  # loopback | internal | unknown_host | local_path
    host: str


def _classify_uri(
    uri: str, ctx: StorageContext, params: DestinationsParams, known_roots: set[str], known_hosts: set[str]
) -> tuple[str, str] | None:
    """(reason, host) when `uri` points somewhere other machines cannot (or should not) use."""
    text = uri.strip()
    if not text:
        return None
    loc = locate(text, ctx.targets, ctx.conf)
    if loc.kind == "file":
        if text.startswith(("file://", "/")) or re.match(r"^[A-Za-z]:\\", text):
            return "local_path", ""
        return None  # a relative name, not a URI
    if loc.kind == "unknown":
        return None
    root = loc.root.lower()
    host = loc.hostname
    if ctx.is_files_url(text) or root in known_roots or (host and host in known_hosts and loc.kind == "http"):
        return None
    if params.allowed and (matches_any(root, params.allowed) or matches_any(text, params.allowed)):
        return None
    if host and is_loopback_host(host):
        return "loopback", loc.host or host
    if host and is_internal_name(host):
        return "internal", loc.host or host
    policy = params.unknown_hosts
    if policy == "auto":
        policy = "warn" if ctx.targets else "ignore"
    if policy == "warn":
        return "unknown_host", loc.host or loc.root
    return None


_REASON_TEXT = {
    "loopback": "points at the machine that ran the task (localhost/127.0.0.1): nobody else can fetch it",
    "internal": "uses a container-internal host name that resolves only inside that docker/k8s network",
    "unknown_host": "is neither the ClearML files host nor a configured storage target",
    "local_path": "is a local file path on the machine that ran the task",
}


@check("storage.destinations", params=DestinationsParams)
async def destinations(snap: Snapshot, params: DestinationsParams) -> list[Finding]:
    """Recent tasks writing artifacts or models where other machines cannot read them.

    Looks at `output.destination`, artifact URIs and output-model URIs of tasks whose status changed
    within `window`: localhost/127.0.0.1, container-internal names (`fileserver`, `clearml-fileserver`,
    any host without dots), local paths, and (when storage targets are configured) hosts that are neither
    a target nor the files host. One warning per task naming the URIs.
    """
    project_ids = await project_filter(snap, params.projects)
    if project_ids == []:
        return []
    tasks = await snap.tasks(
        changed_within=timedelta(seconds=params.window),
        projects=project_ids,
        extra_fields=("output.destination", "execution.artifacts", "models.output"),
    )
    tasks = [t for t in tasks if "dataset" not in t.system_tags]  # dataset chunks: datasets.* checks
    ctx = StorageContext.from_snapshot(snap)
    known_roots = {locate(t.url, ctx.targets, ctx.conf).root.lower() for t in ctx.targets}
    known_hosts = {locate(t.url, ctx.targets, ctx.conf).hostname for t in ctx.targets} - {""}
    files_host = parse_storage_url(snap.server.files_url).hostname

    model_uris: dict[str, list[tuple[str, str]]] = {}
    if params.include_models:
        model_uris = await _output_model_uris(snap, tasks)

    findings: list[Finding] = []
    secrets = ctx.secrets()
    for task in tasks:
        bad: list[_BadUri] = []
        candidates: list[tuple[str, str]] = []
        dest = task.get("output.destination")
        if isinstance(dest, str) and dest:
            candidates.append(("output.destination", dest))
        for art in task.get("execution.artifacts") or []:
            if isinstance(art, dict) and art.get("uri") and art.get("mode", "output") == "output":
                candidates.append((f"artifact:{art.get('key', '?')}", str(art["uri"])))
        candidates += model_uris.get(task.id, [])
        for where, uri in candidates:
            got = _classify_uri(uri, ctx, params, known_roots, known_hosts)
            if got:
                bad.append(_BadUri(where, uri, got[0], got[1]))
        if not bad:
            continue
        reasons = sorted({b.reason for b in bad})
        first = bad[0]
        if reasons == ["unknown_host"]:
            title = f"Task '{task.name}' stores outputs on storage the bot does not know: {_short_uri(first.uri)}"
        else:
            title = f"Task '{task.name}' stores outputs where other machines cannot read them: {_short_uri(first.uri)}"
        detail = "; ".join(f"{b.where} = {b.uri} {_REASON_TEXT[b.reason]}" for b in bad[:5])
        fix = []
        if {"loopback", "internal"} & set(reasons):
            fix.append(
                "Give the SDK and the agents an address every machine can resolve: set `api.files_server` in "
                f"clearml.conf (or CLEARML_FILES_HOST) to the public files URL ({snap.server.files_url}), "
                "and `sdk.development.default_output_uri` / `Task.init(output_uri=...)` to a reachable bucket "
                "or that URL. Already-stored artifacts keep their old URI: re-run the tasks or re-upload."
            )
        if "local_path" in reasons:
            fix.append(
                "Set an output_uri (a bucket or the file server) so outputs are uploaded, not left on "
                "the worker's disk."
            )
        if "unknown_host" in reasons:
            fix.append(
                "If this storage is intended, add it under `storage:` in the bot's config (so it is "
                "probed) or to this check's `allowed` parameter; otherwise fix the task's output_uri."
            )
        roots = [rid for rid in dict.fromkeys(_root_id(b.uri, ctx) for b in bad) if rid]
        findings.append(
            Finding(
                check="storage.destinations",
                severity="warning",
                title=redact(title, secrets),
                detail=redact(detail, secrets),
                subject=Subject(kind="task", id=task.id, name=task.name),
                evidence=redact_evidence(
                    {
                        "task": {
                            "id": task.id,
                            "name": task.name,
                            "status": task.status,
                            "status_changed": iso(task.status_changed),
                        },
                        "uris": [{"where": b.where, "uri": b.uri, "reason": b.reason, "host": b.host} for b in bad],
                        "files_host": files_host,
                    },
                    secrets,
                ),
                related=redact_subjects([Subject(kind="storage", id=rid) for rid in roots[:5]], secrets),
                links=[snap.task_link(task)],
                remediation=" ".join(fix),
                actions=["clone"],
            )
        )
    return findings


def _short_uri(uri: str, limit: int = 80) -> str:
    return uri if len(uri) <= limit else uri[: limit - 1] + "…"


async def _output_model_uris(snap: Snapshot, tasks: list[Task]) -> dict[str, list[tuple[str, str]]]:
    """task id -> [(where, uri)] for the tasks' output models, from one paged models.get_all."""
    ids = [t.id for t in tasks if t.get("models.output")]
    if not ids:
        return {}
    out: dict[str, list[tuple[str, str]]] = {}
    try:
        for start in range(0, len(ids), 500):
            docs = await snap.client.get_all(
                "models.get_all",
                {"task": ids[start : start + 500], "only_fields": ["id", "name", "uri", "task"]},
                key="models",
            )
            for doc in docs:
                if doc.get("uri") and doc.get("task"):
                    out.setdefault(str(doc["task"]), []).append(
                        (f"model:{doc.get('name', doc.get('id'))}", str(doc["uri"]))
                    )
    except NotFoundError:
        return {}  # a server (or simulator) without models.get_all: artifacts and destinations still count
    return out


# ================================================================================================
# storage.upload_failures

# Extra fields of the failed-task list; repro.failure_causes asks for the same list so one fetch serves both.
FAILED_TASK_FIELDS: tuple[str, ...] = ("output.destination",)

_URI_IN_LINE = re.compile(r"\b(?:s3|gs|azure|https?)://[^\s'\"<>),\]]+", re.I)


def storage_uris(lines: Iterable[str], api_url: str = "") -> list[str]:
    """Storage URIs mentioned in `lines` (the API server's own URL excluded), in order, no repeats."""
    seen: list[str] = []
    api = api_url.rstrip("/").lower()
    for line in lines:
        for match in _URI_IN_LINE.finditer(line):
            uri = match.group(0).rstrip(".:;")
            if api and uri.lower().startswith(api):
                continue
            if uri not in seen:
                seen.append(uri)
    return seen


def _root_id(uri: str, ctx: StorageContext) -> str:
    """The storage subject id a URI belongs to: a configured target's URL, the files URL, or the URI's
    bucket-level root. Matches the subject ids of storage.probe / storage.fileserver findings."""
    from bot.storage.credentials import match_target

    loc = locate(uri, ctx.targets, ctx.conf)
    target = match_target(loc, ctx.targets, ctx.conf)
    if target is not None:
        return target.url
    if ctx.is_files_url(uri):
        return ctx.server.files_url.rstrip("/")
    return loc.root


class UploadFailuresParams(CheckParams):
    window: Duration = Field(
        default=24 * 3600.0,
        description="failed tasks whose status changed within this window (default 24h)",
    )
    projects: Patterns = Field(
        default_factory=list,
        description="only tasks in projects whose name (or id) matches (empty: all)",
    )
    lines: int = Field(
        default=200,
        ge=10,
        le=5000,
        description="console lines read from the end of each failed task's log.",
    )
    max_tasks: int = Field(
        default=200,
        ge=1,
        le=5000,
        description="at most this many of the most recent failed tasks are read (one events.get_task_log call each)",
    )
    max_lines: int = Field(
        default=8,
        ge=1,
        le=100,
        description="matching lines kept in the evidence per task",
    )


@check("storage.upload_failures", params=UploadFailuresParams)
async def upload_failures(snap: Snapshot, params: UploadFailuresParams) -> list[Finding]:
    """Recently failed tasks whose console log shows upload or storage errors.

    Reads the log tail of each failed task in the window and matches the storage errors the clearml SDK
    and boto3 print (upload exceptions, insufficient write/delete permissions, unreachable endpoint,
    invalid access key, signature mismatch, missing credentials, TLS errors on upload, no such bucket).
    Evidence: the matching lines, secrets redacted; `related` points at the storage target or host the
    lines name, so an incident can group them with a failing storage.probe.
    """
    project_ids = await project_filter(snap, params.projects)
    if project_ids == []:
        return []
    tasks = await snap.tasks(
        status=["failed"],
        changed_within=timedelta(seconds=params.window),
        projects=project_ids,
        extra_fields=FAILED_TASK_FIELDS,
    )
    tasks = tasks[: params.max_tasks]
    logs = await log_tails(snap, tasks, params.lines)
    ctx = StorageContext.from_snapshot(snap)
    secrets = ctx.secrets()
    findings: list[Finding] = []
    for task in tasks:
        lines = logs.get(task.id)
        if not lines:
            continue
        hits = match_storage_errors([*lines, task.status_message, task.status_reason])
        if not hits:
            continue
        kinds = sorted({k for _, k in hits}, key=lambda k: r.ERROR_CLASSES.index(k))
        roots = _failure_roots([line for line, _ in hits], lines, task, ctx, snap.server.api_url)
        where = f" ({roots[0]})" if roots else ""
        shown = [redact(line.strip(), secrets)[:500] for line, _ in hits[: params.max_lines]]
        findings.append(
            Finding(
                check="storage.upload_failures",
                severity="warning",
                title=redact(
                    f"Task '{task.name}' failed on a storage error: {HUMAN.get(kinds[0], kinds[0])}{where}", secrets
                ),
                detail=shown[0] if shown else "",
                subject=Subject(kind="task", id=task.id, name=task.name),
                evidence={
                    "task": {
                        "id": task.id,
                        "name": task.name,
                        "status": task.status,
                        "status_changed": iso(task.status_changed),
                        "status_reason": task.status_reason,
                    },
                    "error_classes": kinds,
                    "lines": shown,
                    "matches": len(hits),
                    "storage": [redact(u, secrets) for u in roots],
                },
                related=redact_subjects([Subject(kind="storage", id=rid) for rid in roots[:5] if rid], secrets),
                links=[snap.task_link(task)],
                remediation=_upload_fix(kinds, roots),
                actions=["requeue", "clone"],
            )
        )
    return findings


HUMAN: dict[str, str] = {
    r.NO_CREDENTIALS: "no credentials",
    r.PARTIAL_CREDENTIALS: "half of the key pair missing",
    r.INVALID_ACCESS_KEY: "invalid access key",
    r.SIGNATURE_MISMATCH: "signature mismatch (wrong secret key)",
    r.REGION_MISMATCH: "region mismatch",
    r.EXPIRED_TOKEN: "expired session token",
    r.ACCESS_DENIED: "access denied",
    r.ACCESS_DENIED_WRITE: "write access denied",
    r.ACCESS_DENIED_READ: "read access denied",
    r.ACCESS_DENIED_DELETE: "delete access denied",
    r.NO_SUCH_BUCKET: "no such bucket",
    r.ENDPOINT_UNREACHABLE: "storage endpoint unreachable",
    r.TLS: "TLS error",
    r.TIMEOUT: "timeout",
    r.UPLOAD_REFUSED: "upload failed",
    r.CONTENT_MISMATCH: "content read back differs",
    r.UNAUTHORIZED: "API token refused",
    r.DOWNLOAD_FAILED: "download failed",
    r.DELETE_REFUSED: "delete refused",
    r.MISSING_LIBRARY: "client library not installed",
    r.CONFIG_ERROR: "configuration error",
    r.UNEXPECTED: "unexpected error",
}


def _failure_roots(hit_lines: list[str], lines: list[str], task: Task, ctx: StorageContext, api_url: str) -> list[str]:
    """The storage subjects a failed upload points at, most specific first: object-store URIs named in the
    matching lines, then anywhere in the log, then http URIs (an S3 endpoint URL on the same host as an
    object-store URI is the same storage and is dropped), else the task's output.destination."""
    uris = storage_uris(hit_lines, api_url) + storage_uris(lines, api_url)
    objects = [u for u in uris if not u.lower().startswith("http")]
    roots: list[str] = []
    object_hosts: set[str] = set()
    for uri in objects:
        rid = _root_id(uri, ctx)
        object_hosts.add(locate(uri, ctx.targets, ctx.conf).hostname)
        if rid not in roots:
            roots.append(rid)
    for uri in uris:
        if not uri.lower().startswith("http"):
            continue
        loc = locate(uri, ctx.targets, ctx.conf)
        if loc.hostname in object_hosts or loc.hostname.startswith("s3.") or ".s3." in loc.hostname:
            continue  # the S3 endpoint of a bucket already listed (or AWS's own endpoint)
        rid = _root_id(uri, ctx)
        if rid not in roots:
            roots.append(rid)
    dest = task.get("output.destination")
    if not roots and isinstance(dest, str) and dest:
        roots.append(_root_id(dest, ctx))
    return roots


def _upload_fix(kinds: list[str], roots: list[str]) -> str:
    target = roots[0] if roots else "the storage named in the log"
    first = kinds[0]
    specific = {
        r.ACCESS_DENIED_WRITE: f"The credentials the task used may not write to {target}: grant s3:PutObject "
        "(or the equivalent) to them.",
        r.ACCESS_DENIED_DELETE: f"The SDK's upload test writes and deletes a file; deletes are denied on "
        f"{target}. Grant s3:DeleteObject or use a bucket/prefix where the key may delete.",
        r.INVALID_ACCESS_KEY: "The access key in the agent's clearml.conf (`sdk.aws.s3`) is unknown to the "
        "storage: replace it.",
        r.SIGNATURE_MISMATCH: "The secret key in the agent's clearml.conf (`sdk.aws.s3`) does not match the "
        "access key (or the region is wrong): fix it.",
        r.REGION_MISMATCH: "Set the bucket's real region in `sdk.aws.s3.region` (or the bucket's credentials entry).",
        r.NO_SUCH_BUCKET: f"The bucket in {target} does not exist: create it or fix the task's output_uri.",
        r.NO_CREDENTIALS: "The worker has no credentials for this bucket: add them to the agent's clearml.conf "
        "(`sdk.aws.s3.credentials` with bucket, key, secret and, for MinIO, host) or its environment.",
        r.ENDPOINT_UNREACHABLE: f"The worker cannot reach {target}: for MinIO the URL must carry the host "
        "(s3://host:9000/bucket) and clearml.conf needs a matching `sdk.aws.s3.credentials` entry with "
        "`host`; otherwise check DNS/firewalls from the workers.",
        r.TLS: "TLS failed on upload: set `secure: false` for an http MinIO endpoint, or give the workers the "
        "storage's CA (`verify` in the bucket's credentials entry / REQUESTS_CA_BUNDLE).",
        r.UPLOAD_REFUSED: f"The upload to {target} failed: check that storage (run storage.probe / "
        "storage.fileserver) and the lines in the evidence.",
    }.get(first, "")
    return (specific + " Then requeue the task (or clone it) to produce its outputs again.").strip()


# ================================================================================================
# Shared helpers (also used by bot.checks.repro and bot.checks.datasets)


async def project_filter(snap: Snapshot, patterns: list[str]) -> list[str] | None:
    """Project ids matching the globs (on name or id); None = no filter; [] = nothing matches."""
    if not patterns:
        return None
    projects = await snap.projects()
    return sorted(pid for pid, name in projects.items() if matches_any(name, patterns) or matches_any(pid, patterns))


async def log_tails(snap: Snapshot, tasks: list[Task], lines: int, concurrency: int = 8) -> dict[str, list[str]]:
    """task id -> last `lines` console lines. A task whose log cannot be read is left out; when no log at
    all can be read, the check fails with an error naming the cause (a fleet-wide permission or server
    problem must not pass as "no problems found")."""
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(task: Task) -> tuple[str, list[str] | None]:
        async with gate:
            try:
                return task.id, await snap.task_log(task.id, lines)
            except ClearMLError as exc:
                errors.append(exc.describe())
                return task.id, None

    got = await asyncio.gather(*(one(t) for t in tasks))
    out = {tid: log for tid, log in got if log is not None}
    if tasks and not out and errors:
        raise CheckError(f"could not read any task console log (events.get_task_log): {errors[0]}")
    return out


