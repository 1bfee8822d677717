"""Google Cloud Storage and Azure Blob probes, used only when their client libraries are installed.

They are optional dependencies: without them the probe reports which package to install instead of
failing. Like the S3 probe these functions block and run in a worker thread.
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from typing import Any

from bot.storage import results as r
from bot.storage.credentials import AzureAccess, GCSAccess
from bot.storage.results import ProbeResult

GCS_PACKAGE = "google-cloud-storage"
AZURE_PACKAGE = "azure-storage-blob"
PROBE_HEADER = b"clearml-chatops storage probe\n"


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def gcs_available() -> bool:
    return has_module("google.cloud.storage")


def azure_available() -> bool:
    return has_module("azure.storage.blob")


def missing_library(kind: str, url: str, name: str = "") -> ProbeResult:
    package = GCS_PACKAGE if kind == "gcs" else AZURE_PACKAGE
    result = ProbeResult(target=url, kind=kind, name=name, missing_library=package)
    return result.fail(
        r.MISSING_LIBRARY,
        f"cannot probe {url}: the Python package {package} is not installed where the bot runs",
        f"install it next to the bot: pip install {package}",
        "credentials",
    )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _key(prefix_key: str, prefix: str) -> str:
    return "/".join(p for p in (prefix_key.strip("/"), prefix.strip("/"), f"{uuid.uuid4().hex}.probe") if p)


def _run_steps(result: ProbeResult, steps: list[tuple[str, Any]], classify: Any, probe_key: str) -> ProbeResult:
    """Run (name, callable) steps in order; the first failure stops the write path (delete still runs
    when the write succeeded, so a failed read does not leave the probe object behind)."""
    wrote = False
    for name, fn in steps:
        if result.error and (name != "delete" or not wrote):
            break
        start = time.perf_counter()
        try:
            ok = fn()
        except Exception as exc:
            result.add(name, False, _ms(start))
            result.fail(*classify(exc, name), name)
            continue
        if ok is False:
            result.add(name, False, _ms(start), "content differs")
            result.fail(
                r.CONTENT_MISMATCH,
                "the probe object read back differs from what was written",
                "the storage endpoint / proxy",
                name,
            )
            continue
        result.add(name, True, _ms(start))
        if name == "write":
            wrote, result.probe_key = True, probe_key
        if name == "delete" and result.ok:
            result.probe_key = None
    return result


def probe_gcs_sync(
    access: GCSAccess, *, prefix: str, timeout_s: float, payload_bytes: int = 1024, name: str = ""
) -> ProbeResult:
    loc = access.location
    if not gcs_available():
        return missing_library("gcs", loc.url, name)
    from google.cloud import storage as gcs  # type: ignore[import-not-found,unused-ignore]

    result = ProbeResult(target=loc.url, kind="gcs", name=name, credentials_source=access.source)

    def classify(exc: Exception, step: str) -> tuple[str, str, str]:
        kind = type(exc).__name__
        text = " ".join(str(exc).split())[:300]
        if kind in ("DefaultCredentialsError", "RefreshError"):
            return r.NO_CREDENTIALS, f"no usable Google credentials: {text}", access.setting
        if kind == "NotFound" and step == "bucket":
            return r.NO_SUCH_BUCKET, f"bucket {loc.bucket} does not exist", f"the bucket name in {loc.root}"
        if kind in ("Forbidden", "Unauthorized"):
            denied = {
                "write": r.ACCESS_DENIED_WRITE,
                "read": r.ACCESS_DENIED_READ,
                "delete": r.ACCESS_DENIED_DELETE,
            }.get(step, r.ACCESS_DENIED)
            return denied, f"access denied on {step} in {loc.root}: {text}", f"the IAM roles of {access.source}"
        if kind in ("ConnectionError", "ConnectTimeout", "TransportError"):
            return r.ENDPOINT_UNREACHABLE, f"cannot reach Google Cloud Storage: {text}", "network / proxy"
        return r.UNEXPECTED, f"{step} failed: {kind}: {text}", access.setting

    try:
        if access.credentials_json:
            client = gcs.Client.from_service_account_json(access.credentials_json, project=access.project)
        else:
            client = gcs.Client(project=access.project)
    except Exception as exc:
        result.add("credentials", False)
        return result.fail(*classify(exc, "credentials"), "credentials")
    result.add("credentials", True, detail=access.source)
    bucket = client.bucket(loc.bucket)
    key = _key(loc.key, prefix)
    blob = bucket.blob(key)
    payload = PROBE_HEADER + os.urandom(max(0, payload_bytes - len(PROBE_HEADER)))

    def check_bucket() -> bool:
        if not bucket.exists(timeout=timeout_s):
            raise _named("NotFound", f"bucket {loc.bucket} not found")
        return True

    return _run_steps(
        result,
        [
            ("bucket", check_bucket),
            ("write", lambda: blob.upload_from_string(payload, timeout=timeout_s) or True),
            ("read", lambda: blob.download_as_bytes(timeout=timeout_s) == payload),
            ("delete", lambda: blob.delete(timeout=timeout_s) or True),
        ],
        classify,
        f"{loc.root}/{key}",
    )


def probe_azure_sync(
    access: AzureAccess, *, prefix: str, timeout_s: float, payload_bytes: int = 1024, name: str = ""
) -> ProbeResult:
    loc = access.location
    if not azure_available():
        return missing_library("azure", loc.url, name)
    from azure.storage.blob import BlobServiceClient  # type: ignore[import-not-found,unused-ignore]

    result = ProbeResult(
        target=loc.url, kind="azure", name=name, credentials_source=access.source, endpoint=f"https://{loc.host}"
    )
    if not access.account_key:
        result.add("credentials", False)
        return result.fail(r.NO_CREDENTIALS, f"no account key for {loc.root}", access.setting, "credentials")

    def classify(exc: Exception, step: str) -> tuple[str, str, str]:
        kind = type(exc).__name__
        status = getattr(exc, "status_code", None)
        text = " ".join(str(exc).split())[:300]
        if kind == "ClientAuthenticationError":
            return r.SIGNATURE_MISMATCH, f"Azure rejected the account key: {text}", access.setting
        if kind == "ResourceNotFoundError" and step == "bucket":
            return r.NO_SUCH_BUCKET, f"container {loc.bucket} does not exist", f"the container in {loc.root}"
        if status == 403:
            denied = {
                "write": r.ACCESS_DENIED_WRITE,
                "read": r.ACCESS_DENIED_READ,
                "delete": r.ACCESS_DENIED_DELETE,
            }.get(step, r.ACCESS_DENIED)
            return denied, f"access denied on {step} in {loc.root}", access.setting
        if kind in ("ServiceRequestError", "ServiceRequestTimeoutError"):
            return r.ENDPOINT_UNREACHABLE, f"cannot reach https://{loc.host}: {text}", "the account name in the URL"
        return r.UNEXPECTED, f"{step} failed: {kind}: {text}", access.setting

    try:
        service = BlobServiceClient(
            account_url=f"https://{loc.host}",
            credential=access.account_key,
            connection_timeout=timeout_s,
            read_timeout=timeout_s,
        )
        container = service.get_container_client(loc.bucket)
    except Exception as exc:
        result.add("credentials", False)
        return result.fail(*classify(exc, "credentials"), "credentials")
    result.add("credentials", True, detail=access.source)
    key = _key(loc.key, prefix)
    payload = PROBE_HEADER + os.urandom(max(0, payload_bytes - len(PROBE_HEADER)))
    return _run_steps(
        result,
        [
            ("bucket", lambda: container.get_container_properties() is not None),
            ("write", lambda: container.upload_blob(key, payload, overwrite=True) is not None),
            ("read", lambda: container.download_blob(key).readall() == payload),
            ("delete", lambda: container.delete_blob(key) or True),
        ],
        classify,
        f"{loc.root}/{key}",
    )


def _named(name: str, message: str) -> Exception:
    return type(name, (Exception,), {})(message)
