"""Result types of storage probes, shared by the S3, GCS, Azure and file-server probes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Failure classes a probe can report. Each maps to one thing the user changes (named in `setting`).
NO_CREDENTIALS = "no_credentials"
PARTIAL_CREDENTIALS = "partial_credentials"
INVALID_ACCESS_KEY = "invalid_access_key"
SIGNATURE_MISMATCH = "signature_mismatch"
REGION_MISMATCH = "region_mismatch"
EXPIRED_TOKEN = "expired_token"
ACCESS_DENIED = "access_denied"  # on the bucket itself
ACCESS_DENIED_WRITE = "access_denied_write"
ACCESS_DENIED_READ = "access_denied_read"
ACCESS_DENIED_DELETE = "access_denied_delete"
NO_SUCH_BUCKET = "no_such_bucket"
ENDPOINT_UNREACHABLE = "endpoint_unreachable"
TLS = "tls"
TIMEOUT = "timeout"
CONTENT_MISMATCH = "content_mismatch"
UNAUTHORIZED = "unauthorized"  # file server refused the token
UPLOAD_REFUSED = "upload_refused"
DOWNLOAD_FAILED = "download_failed"
DELETE_REFUSED = "delete_refused"
MISSING_LIBRARY = "missing_library"
CONFIG_ERROR = "config_error"
UNEXPECTED = "unexpected"

ERROR_CLASSES: tuple[str, ...] = (
    NO_CREDENTIALS,
    PARTIAL_CREDENTIALS,
    INVALID_ACCESS_KEY,
    SIGNATURE_MISMATCH,
    REGION_MISMATCH,
    EXPIRED_TOKEN,
    ACCESS_DENIED,
    ACCESS_DENIED_WRITE,
    ACCESS_DENIED_READ,
    ACCESS_DENIED_DELETE,
    NO_SUCH_BUCKET,
    ENDPOINT_UNREACHABLE,
    TLS,
    TIMEOUT,
    CONTENT_MISMATCH,
    UNAUTHORIZED,
    UPLOAD_REFUSED,
    DOWNLOAD_FAILED,
    DELETE_REFUSED,
    MISSING_LIBRARY,
    CONFIG_ERROR,
    UNEXPECTED,
)


@dataclass
class ProbeStep:
    """One step of a probe (credentials, bucket, ping, write, read, delete) and how long it took."""

    name: str
    ok: bool
    latency_ms: float | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.name, "ok": self.ok}
        if self.latency_ms is not None:
            out["latency_ms"] = round(self.latency_ms, 1)
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class ProbeResult:
    """The outcome of probing one storage location. Texts never contain secrets (callers redact)."""

    target: str  # the URL probed
    kind: str  # s3 | gcs | azure | http | file | unknown
    name: str = ""
    steps: list[ProbeStep] = field(default_factory=list)
    error: str | None = None  # one of ERROR_CLASSES, None when every step passed
    message: str = ""  # what went wrong, in words
    setting: str = ""  # the setting to fix
    failed_step: str | None = None
    credentials_source: str = ""
    endpoint: str | None = None
    probe_key: str | None = None  # the object written (left behind when the delete failed)
    missing_library: str | None = None  # pip package that enables this kind of probe

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def total_ms(self) -> float:
        return round(sum(s.latency_ms or 0.0 for s in self.steps), 1)

    def latency(self, step: str) -> float | None:
        for s in self.steps:
            if s.name == step:
                return s.latency_ms
        return None

    def add(self, name: str, ok: bool, latency_ms: float | None = None, detail: str = "") -> ProbeStep:
        step = ProbeStep(name, ok, latency_ms, detail)
        self.steps.append(step)
        return step

    def fail(self, error: str, message: str, setting: str = "", step: str | None = None) -> ProbeResult:
        """Record the (first) failure; later failures (e.g. cleanup) do not overwrite it."""
        if self.error is None:
            self.error, self.message, self.setting, self.failed_step = error, message, setting, step
        return self

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "kind": self.kind,
            "ok": self.ok,
            "steps": [s.as_dict() for s in self.steps],
            "total_ms": self.total_ms,
        }
        if self.endpoint:
            out["endpoint"] = self.endpoint
        if self.credentials_source:
            out["credentials_source"] = self.credentials_source
        if self.error:
            out.update(error=self.error, message=self.message, failed_step=self.failed_step)
            if self.setting:
                out["setting"] = self.setting
        if self.probe_key and self.error:
            out["probe_object"] = self.probe_key
        if self.missing_library:
            out["install"] = f"pip install {self.missing_library}"
        return out
