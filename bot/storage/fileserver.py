"""The ClearML file server protocol, probed the way the SDK uses it.

GET / answers "OK"; an upload is a multipart POST to / whose field name is the target path; GET <path>
downloads; DELETE <path> removes. Auth is the API session token as `Authorization: Bearer` (the file
server validates it against the API server), which `client.fileserver` attaches.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from bot.storage import results as r
from bot.storage.results import ProbeResult
from bot.storage.urls import parse_storage_url

if TYPE_CHECKING:
    from bot.clearml.client import ClearMLClient

PROBE_HEADER = b"clearml-chatops file server probe\n"
FILES_SETTING = "the server's files URL (servers.<name>.files, CLEARML_FILES_HOST or api.files_server)"


def classify_http_exception(exc: BaseException, endpoint: str, setting: str = FILES_SETTING) -> tuple[str, str, str]:
    """(error class, message, setting) for an exception raised while talking HTTP to a file server."""
    import httpx

    from bot.clearml.errors import ClearMLError, CredentialsError, InvalidTokenError, ServerUnavailableError

    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, CredentialsError | InvalidTokenError):
        return (
            r.UNAUTHORIZED,
            f"no API token for the file server: the ClearML API refused the credentials ({text})",
            "the ClearML API access/secret key (CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY)",
        )
    if isinstance(exc, ServerUnavailableError):
        if exc.reason == "tls":
            return r.TLS, f"TLS failure talking to {endpoint}: {text}", "servers.<name>.verify (CA bundle)"
        if exc.reason == "timeout":
            return r.TIMEOUT, f"{endpoint} did not answer in time", setting
        return r.ENDPOINT_UNREACHABLE, f"cannot reach {endpoint} ({exc.reason}): {text}", setting
    if isinstance(exc, ClearMLError):
        return r.UNEXPECTED, f"{endpoint}: {text}", setting
    if isinstance(exc, httpx.TimeoutException):
        return r.TIMEOUT, f"{endpoint} did not answer in time ({type(exc).__name__})", setting
    if isinstance(exc, httpx.ConnectError):
        low = text.lower()
        if "ssl" in low or "certificate" in low or "tls" in low:
            return r.TLS, f"TLS failure talking to {endpoint}: {text}", "servers.<name>.verify (CA bundle)"
        return r.ENDPOINT_UNREACHABLE, f"cannot connect to {endpoint}: {text or type(exc).__name__}", setting
    if isinstance(exc, httpx.HTTPError | OSError):
        return r.ENDPOINT_UNREACHABLE, f"{endpoint}: {type(exc).__name__}: {text}", setting
    return r.UNEXPECTED, f"{endpoint}: {type(exc).__name__}: {text}", setting


def _body_hint(response: Any) -> str:
    try:
        text = response.text
    except Exception:
        return ""
    return " ".join(str(text).split())[:200]


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


async def probe_fileserver(
    client: ClearMLClient,
    base_url: str | None = None,
    *,
    prefix: str = ".clearml-chatops-probe/",
    timeout_s: float = 10.0,
    payload_bytes: int = 1024,
    name: str = "",
    setting: str = FILES_SETTING,
) -> ProbeResult:
    """ping -> upload -> download (compare) -> delete on the file server at `base_url` (default: the
    server's files URL). Never raises."""
    root_url = (base_url or client.server.files_url).rstrip("/")
    loc = parse_storage_url(root_url)
    root = f"{loc.scheme}://{loc.host}" if loc.host else root_url
    result = ProbeResult(target=root_url, kind="http", name=name, endpoint=root, credentials_source="ClearML API token")
    # relative paths go to the configured files host; other hosts get full URLs
    own_files = root_url.startswith(client.server.files_url.rstrip("/"))

    def where(path: str) -> str:
        return path if own_files and not path.startswith("http") else f"{root}/{path.lstrip('/')}"

    start = time.perf_counter()
    try:
        resp = await client.fileserver("GET", where("/"), timeout=timeout_s)
    except Exception as exc:
        result.add("ping", False, _ms(start))
        return result.fail(*classify_http_exception(exc, root, setting), "ping")
    if resp.status_code >= 400 and resp.status_code not in (401, 403):
        result.add("ping", False, _ms(start), f"HTTP {resp.status_code}")
        return result.fail(
            r.ENDPOINT_UNREACHABLE,
            f"{root} answered HTTP {resp.status_code} to GET / "
            f"(is this a ClearML file server?) {_body_hint(resp)}".strip(),
            setting,
            "ping",
        )
    result.add("ping", True, _ms(start))

    base_key = loc.key.strip("/")
    rel = "/".join(p for p in (base_key, prefix.strip("/"), f"{uuid.uuid4().hex}.probe") if p)
    payload = PROBE_HEADER + os.urandom(max(0, payload_bytes - len(PROBE_HEADER)))
    start = time.perf_counter()
    try:
        resp = await client.fileserver(
            "POST",
            where("/"),
            files={rel: (rel.rsplit("/", 1)[-1], payload, "application/octet-stream")},
            timeout=timeout_s,
        )
    except Exception as exc:
        result.add("write", False, _ms(start))
        return result.fail(*classify_http_exception(exc, root, setting), "write")
    if resp.status_code in (401, 403):
        result.add("write", False, _ms(start), f"HTTP {resp.status_code}")
        return result.fail(
            r.UNAUTHORIZED,
            f"the file server refused the API token (HTTP {resp.status_code}: {_body_hint(resp)})",
            "the ClearML API credentials, and the file server's auth settings (fileserver.auth / "
            "the API server it validates tokens against)",
            "write",
        )
    if resp.status_code >= 300:
        result.add("write", False, _ms(start), f"HTTP {resp.status_code}")
        return result.fail(
            r.UPLOAD_REFUSED,
            f"upload refused: HTTP {resp.status_code} {_body_hint(resp)}".strip(),
            "the file server's storage (disk full? read-only volume?) and its logs",
            "write",
        )
    result.add("write", True, _ms(start))
    result.probe_key = f"{root}/{rel}"

    start = time.perf_counter()
    try:
        resp = await client.fileserver("GET", where(rel), timeout=timeout_s)
        if resp.status_code >= 300:
            result.add("read", False, _ms(start), f"HTTP {resp.status_code}")
            result.fail(
                r.DOWNLOAD_FAILED,
                f"the probe file was accepted but GET answered HTTP {resp.status_code}",
                "the file server's storage volume and its logs",
                "read",
            )
        elif resp.content != payload:
            result.add("read", False, _ms(start), f"got {len(resp.content)} bytes, sent {len(payload)}")
            result.fail(
                r.CONTENT_MISMATCH,
                "the probe file came back different from what was uploaded "
                "(a proxy rewriting bodies, or a broken storage volume)",
                setting,
                "read",
            )
        else:
            result.add("read", True, _ms(start))
    except Exception as exc:
        result.add("read", False, _ms(start))
        result.fail(*classify_http_exception(exc, root, setting), "read")

    start = time.perf_counter()
    try:
        resp = await client.fileserver("DELETE", where(rel), timeout=timeout_s)
        if resp.status_code >= 300:
            result.add("delete", False, _ms(start), f"HTTP {resp.status_code}")
            result.fail(
                r.DELETE_REFUSED,
                f"the file server refused to delete the probe file: HTTP {resp.status_code} {_body_hint(resp)}".strip(),
                "the file server's delete permission (volume permissions, fileserver auth)",
                "delete",
            )
        else:
            result.add("delete", True, _ms(start))
            if result.ok:
                result.probe_key = None
    except Exception as exc:
        result.add("delete", False, _ms(start))
        result.fail(*classify_http_exception(exc, root, setting), "delete")
    return result
