"""Parsing storage URLs the way the clearml SDK reads them.

ClearML addresses S3-compatible storage in two forms: `s3://bucket/prefix` (AWS) and
`s3://host:port/bucket/prefix` (MinIO and friends: the endpoint host is the first path component).
Bucket names cannot contain a colon, so a first component with a port is a host; a first component
equal to a host the configuration names (a storage target's endpoint or a clearml.conf `host`) is one too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

KIND_BY_SCHEME: dict[str, str] = {
    "s3": "s3",
    "gs": "gcs",
    "azure": "azure",
    "http": "http",
    "https": "http",
    "file": "file",
}


@dataclass(frozen=True)
class StorageLocation:
    """One parsed storage URL. `host` is the endpoint (MinIO host:port, http host:port, azure account)."""

    url: str
    scheme: str
    kind: str  # s3 | gcs | azure | http | file | unknown
    host: str | None
    bucket: str  # bucket / container; "" for http and file
    key: str  # object key or path inside the bucket (no leading slash)

    @property
    def hostname(self) -> str:
        """The host without port, lower case ("" when there is none)."""
        if not self.host:
            return ""
        host = self.host.lower()
        if host.startswith("["):  # [::1]:8081
            return host[1:].split("]", 1)[0]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    @property
    def root(self) -> str:
        """The bucket-level URL (what a storage target or a clearml.conf credentials entry names)."""
        if self.kind == "s3":
            return f"s3://{self.host}/{self.bucket}" if self.host else f"s3://{self.bucket}"
        if self.kind == "gcs":
            return f"gs://{self.bucket}"
        if self.kind == "azure":
            return f"azure://{self.host}/{self.bucket}"
        if self.kind == "http":
            return f"{self.scheme}://{self.host}"
        return self.url

    def join(self, *parts: str) -> str:
        """This location's URL with `parts` appended to the key."""
        base = self.url.rstrip("/")
        tail = "/".join(p.strip("/") for p in parts if p)
        return f"{base}/{tail}" if tail else base


def parse_storage_url(url: str, known_hosts: Iterable[str] = ()) -> StorageLocation:
    """Parse `url`; an unknown scheme gives kind "unknown" (a plain path gives kind "file")."""
    text = url.strip()
    if "://" not in text:
        return StorageLocation(url=text, scheme="file", kind="file", host=None, bucket="", key=text)
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    kind = KIND_BY_SCHEME.get(scheme, "unknown")
    if kind == "http":
        parts = urlsplit(text)
        return StorageLocation(text, scheme, kind, parts.netloc or None, "", parts.path.lstrip("/"))
    if kind == "file":
        return StorageLocation(text, scheme, kind, None, "", "/" + rest.lstrip("/"))
    components = [c for c in rest.split("/")]
    first = components[0] if components else ""
    if kind == "s3":
        hosts = {h.lower().split("://", 1)[-1].rstrip("/") for h in known_hosts if h}
        if ":" in first or first.lower() in hosts:
            bucket = components[1] if len(components) > 1 else ""
            return StorageLocation(text, scheme, kind, first, bucket, "/".join(components[2:]))
        return StorageLocation(text, scheme, kind, None, first, "/".join(components[1:]))
    if kind == "azure":
        # azure://<account>.blob.core.windows.net/<container>/<path>
        container = components[1] if len(components) > 1 else ""
        return StorageLocation(text, scheme, kind, first, container, "/".join(components[2:]))
    return StorageLocation(text, scheme, kind, None, first, "/".join(components[1:]))


def is_loopback_host(hostname: str) -> bool:
    """localhost, 127.0.0.0/8, ::1 or 0.0.0.0: only reachable from the machine that wrote the URL."""
    name = hostname.lower().strip("[]")
    if name in ("localhost", "localhost.localdomain", "0.0.0.0", "ip6-localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name.endswith(".localhost")
    return address.is_loopback or address.is_unspecified


def is_internal_name(hostname: str) -> bool:
    """A bare name without dots ("fileserver", "clearml-fileserver", "minio"): a docker-compose or
    Kubernetes service name that resolves only inside that network."""
    name = hostname.lower().strip("[]")
    if not name or "." in name or ":" in name:
        return False
    return not is_loopback_host(name)
