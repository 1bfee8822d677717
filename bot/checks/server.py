"""Checks: server and connectivity.

Can the bot (and therefore the SDK and the agents, which use the same settings) reach the ClearML API server,
log in with the configured keys, trust its TLS certificates, and speak an API version the installed clearml SDK
expects? Each failure is named precisely (refused / DNS / timeout / TLS / HTML instead of the API / wrong keys)
because each has a different fix in a different setting.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import ipaddress
import re
import socket
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import Field

from bot.checks.common import CheckError, Duration, OptionalDuration, iso, server_subject
from bot.clearml.errors import (
    ClearMLError,
    CredentialsError,
    ForbiddenError,
    InvalidTokenError,
    NotFoundError,
    ServerUnavailableError,
)
from bot.engine.findings import Finding, Severity
from bot.engine.registry import CheckParams, check

if TYPE_CHECKING:
    from bot.config import ServerSettings
    from bot.engine.snapshot import Snapshot


# ------------------------------------------------------------------------------------------------
# Naming the setting to fix: the resolved ServerSettings records where the API host came from.


def api_host_setting(server: ServerSettings) -> str:
    """Where the API host was configured, as the user would write it (`servers.prod.api`, CLEARML_API_HOST...)."""
    match = re.search(r"\bapi from ([^;]+)", server.source or "")
    origin = match.group(1).strip() if match else ""
    if origin == "config file":
        return f"`servers.{server.name}.api` in the bot's config file"
    if origin.startswith("CLEARML_"):
        return f"`{origin}`"
    if origin:
        return f"`api.api_server` in {origin}"
    return (
        f"`servers.{server.name}.api` in the bot's config file, `CLEARML_API_HOST`, "
        "or `api.api_server` in clearml.conf"
    )


def credentials_setting(server: ServerSettings) -> str:
    return (
        f"`CLEARML_API_ACCESS_KEY` / `CLEARML_API_SECRET_KEY` (or the variables named by "
        f"`servers.{server.name}.credentials_env`, or `api.credentials` in clearml.conf)"
    )


def verify_setting(server: ServerSettings) -> str:
    return (
        f"`servers.{server.name}.verify` (true, false, or a CA bundle path), `CLEARML_API_HOST_VERIFY_CERT`, "
        "or `api.verify_certificate` in clearml.conf; the clearml SDK and agents read a private CA from "
        "`REQUESTS_CA_BUNDLE`"
    )


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def _port_hint(url: str) -> str:
    """A concrete guess when the URL points at the web UI or the file server instead of the API."""
    parts = urlsplit(url)
    for port, what in ((8080, "the web UI's"), (8081, "the file server's")):
        if parts.port == port:
            fixed = url.replace(f":{port}", ":8008", 1)
            return f" The URL uses port {port}, {what} default; the API server usually listens on 8008 ({fixed})."
    host = parts.hostname or ""
    if host.startswith(("app.", "files.")):
        api_host = "api." + host.split(".", 1)[1]
        return f" The host looks like the web UI or file server; the API is usually at {parts.scheme}://{api_host}."
    return ""


def unavailable_finding(
    check_id: str, snap: Snapshot, exc: ServerUnavailableError, *, during: str
) -> Finding:
    """A critical finding for a server that cannot be reached, naming the exact reason and the fix."""
    server = snap.server
    url = server.api_url
    where = _host_port(url)
    reason = exc.reason
    setting = api_host_setting(server)
    if reason == "refused":
        title = f"ClearML API server refuses connections at {where}"
        remediation = (
            f"Nothing accepts connections at {where}. Start the API server (docker compose: the `apiserver` "
            f"service) or correct the host/port in {setting}." + _port_hint(url)
        )
    elif reason == "dns":
        title = f"ClearML API host name does not resolve: {urlsplit(url).hostname}"
        remediation = (
            f"The name {urlsplit(url).hostname} is unknown to this machine's DNS. Fix the typo in {setting}, "
            "or add the name to DNS / /etc/hosts on every machine that runs the bot, the SDK or an agent."
        )
    elif reason == "timeout":
        title = f"ClearML API server at {where} does not answer in time"
        remediation = (
            f"The connection or the answer timed out (timeout {server.timeout_s:g}s). Look for a firewall or "
            "security group dropping the port, a proxy that needs `HTTPS_PROXY`/`NO_PROXY`, or an overloaded "
            f"server (mongo, elasticsearch, redis). Raise `servers.{server.name}.timeout` only for a slow link."
        )
    elif reason == "tls":
        title = f"TLS handshake with the ClearML API server at {where} failed"
        remediation = (
            f"The server's certificate is not trusted under the configured verification ({exc.message}). "
            f"Install a valid certificate on the server, or trust its CA via {verify_setting(server)}. "
            "Turning verification off hides a man-in-the-middle; prefer a CA bundle."
        )
    elif reason == "http_5xx":
        title = f"ClearML API server at {where} answers with server errors"
        remediation = (
            "The API server is up but failing. Read its log (`docker logs clearml-apiserver`) and check the "
            "services it needs: mongo, elasticsearch and redis (disk space, memory, container health)."
        )
    elif reason == "not_json":
        title = f"{where} answers, but not as the ClearML API (not JSON)"
        remediation = (
            "The URL reaches a web page (a proxy error page, a login portal, or the ClearML web UI) instead of "
            f"the API server. Point {setting} at the API server." + _port_hint(url)
        )
    else:
        title = f"Network error talking to the ClearML API server at {where}"
        remediation = f"Check the network path to {where} and the host in {setting}."
    return Finding(
        check=check_id,
        severity="critical",
        title=title,
        detail=f"{during} failed: {exc.describe()}",
        subject=server_subject(snap),
        evidence={
            "reason": reason,
            "endpoint": exc.endpoint,
            "http_status": exc.code or None,
            "message": exc.message,
            "api_url": url,
            "api_host_setting": setting,
        },
        links=[snap.web] if reason != "dns" else [],
        remediation=remediation,
    )


# ------------------------------------------------------------------------------------------------
# server.reachable


class ReachableParams(CheckParams):
    slow_after: Duration = Field(default=2.0, description="debug.ping latency above this is a warning")


@check("server.reachable", params=ReachableParams)
async def server_reachable(snap: Snapshot, params: ReachableParams) -> list[Finding]:
    """The API server answers `debug.ping` and `server.info`: latency, server and API versions.

    Critical when it cannot be reached, with the exact reason (connection refused, DNS, timeout, TLS, server
    errors, a non-API page such as the web UI or a proxy's HTML); warning when it is slow.
    """
    try:
        ping = await snap.ping()
    except ServerUnavailableError as exc:
        return [unavailable_finding("server.reachable", snap, exc, during="debug.ping")]
    except ClearMLError as exc:
        # A JSON answer with an API error to debug.ping: some other service, or a ClearML behind a path prefix
        return [
            Finding(
                check="server.reachable",
                severity="critical",
                title=f"{_host_port(snap.server.api_url)} answers debug.ping with an error",
                detail=exc.describe(),
                subject=server_subject(snap),
                evidence=exc.evidence(),
                remediation=(
                    f"The URL does not reach a ClearML API server's root. Check {api_host_setting(snap.server)} "
                    "(scheme, host, port, and no extra path unless a proxy strips it)."
                ),
            )
        ]
    latency_ms = float(ping.get("latency_ms") or 0.0)
    evidence: dict[str, Any] = {"latency_ms": latency_ms, "api_url": snap.server.api_url}
    try:
        info = await snap.server_info()
    except ClearMLError as exc:
        # ping works, info does not: the server is up but something in front of it filters or breaks endpoints
        evidence.update({"server_info_error": exc.describe()})
        return [
            Finding(
                check="server.reachable",
                severity="warning",
                title="ClearML API server answers ping but not server.info",
                detail=f"debug.ping took {latency_ms:.0f} ms; server.info failed: {exc.describe()}",
                subject=server_subject(snap),
                evidence=evidence,
                links=[snap.web],
                remediation=(
                    "A proxy may filter endpoints, or the API server is partly broken: read the apiserver log "
                    "and the proxy's configuration."
                ),
            )
        ]
    evidence.update(
        {
            "server_version": info.get("version"),
            "api_version": info.get("api_version"),
            "build": info.get("build"),
        }
    )
    versions = f"server {info.get('version') or '?'}, API {info.get('api_version') or '?'}"
    if latency_ms > params.slow_after * 1000:
        return [
            Finding(
                check="server.reachable",
                severity="warning",
                title=f"ClearML API server is slow: debug.ping took {latency_ms:.0f} ms",
                detail=f"{versions}; a ping above {params.slow_after * 1000:.0f} ms slows every agent and SDK call.",
                subject=server_subject(snap),
                evidence=evidence,
                links=[snap.web],
                remediation=(
                    "Check the API server's load (CPU, memory of the apiserver, mongo, elasticsearch containers) "
                    "and the network path; scale the apiserver horizontally behind the proxy if it is CPU-bound."
                ),
            )
        ]
    return [
        Finding(
            check="server.reachable",
            severity="ok",
            title=f"ClearML API server reachable ({latency_ms:.0f} ms)",
            detail=versions,
            subject=server_subject(snap),
            evidence=evidence,
            links=[snap.web],
        )
    ]


# ------------------------------------------------------------------------------------------------
# server.credentials


@check("server.credentials")
async def server_credentials(snap: Snapshot, params: CheckParams) -> list[Finding]:
    """The configured access key and secret log in and `users.get_current_user` answers.

    Tells wrong keys (401) from a wrong host (connection refused, DNS, an HTML page such as the web UI port)
    from a TLS failure from a timeout, each with the setting to fix.
    """
    server = snap.server
    subject = server_subject(snap)
    if not server.has_credentials:
        return [
            Finding(
                check="server.credentials",
                severity="critical",
                title="No ClearML API credentials configured",
                detail="The bot has no access key / secret key for this server, so it cannot read workers, "
                "queues or tasks.",
                subject=subject,
                evidence={"api_url": server.api_url},
                remediation=(
                    "Create a key pair in the web UI (Settings > Workspace > Create new credentials) and set "
                    f"{credentials_setting(server)}."
                ),
            )
        ]
    try:
        data = await snap.current_user()
    except CredentialsError as exc:
        return [
            Finding(
                check="server.credentials",
                severity="critical",
                title="ClearML rejects the configured API keys",
                detail=f"{exc.describe()}. The server is reachable, so the host is right and the keys are wrong "
                "(unknown, revoked, or from another server).",
                subject=subject,
                evidence={**exc.evidence(), "api_url": server.api_url},
                links=[f"{snap.web}/settings/workspace-configuration"],
                remediation=(
                    "Use a key pair created on this server (web UI: Settings > Workspace > Create new "
                    f"credentials) in {credentials_setting(server)}. Keys of another ClearML server, or of a "
                    "deleted user, are rejected with this same error."
                ),
            )
        ]
    except InvalidTokenError as exc:
        return [
            Finding(
                check="server.credentials",
                severity="critical",
                title="ClearML issues tokens that it then rejects",
                detail=exc.describe(),
                subject=subject,
                evidence=exc.evidence(),
                remediation=(
                    "Login works but the session token is refused: several apiserver replicas with different "
                    "`secure.auth.token_secret`, or a proxy rewriting the Authorization header. Give all replicas "
                    "the same secret and let the proxy pass the header through."
                ),
            )
        ]
    except ServerUnavailableError as exc:
        during = "Login (auth.login / users.get_current_user)"
        return [unavailable_finding("server.credentials", snap, exc, during=during)]
    except NotFoundError as exc:
        return [
            Finding(
                check="server.credentials",
                severity="critical",
                title=f"{_host_port(server.api_url)} does not serve the ClearML login endpoints",
                detail=exc.describe(),
                subject=subject,
                evidence=exc.evidence(),
                remediation=f"The URL answers JSON but is not a ClearML API server: check {api_host_setting(server)}."
                + _port_hint(server.api_url),
            )
        ]
    except ForbiddenError as exc:
        return [
            Finding(
                check="server.credentials",
                severity="warning",
                title="The API keys log in, but their role may not read the current user",
                detail=exc.describe(),
                subject=subject,
                evidence=exc.evidence(),
                remediation="Give the bot a key pair of a regular (non-guest) user so it can read workers, queues "
                "and tasks.",
            )
        ]
    user = data.get("user") if isinstance(data, dict) else None
    if not isinstance(user, dict):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckError(f"users.get_current_user answered without a `user` object (got keys {keys})")
    company = user.get("company") if isinstance(user.get("company"), dict) else {}
    name = str(user.get("name") or user.get("id") or "?")
    return [
        Finding(
            check="server.credentials",
            severity="ok",
            title=f"API keys accepted (user {name})",
            detail=f"Logged in as {name}" + (f" of company {company.get('name')}" if company.get("name") else ""),
            subject=subject,
            evidence={
                "user": {"id": user.get("id"), "name": user.get("name")},
                "company": {"id": company.get("id"), "name": company.get("name")},
                "role": user.get("role"),
            },
        )
    ]


# ------------------------------------------------------------------------------------------------
# server.tls


class TlsParams(CheckParams):
    warn_days: float = Field(default=21, description="days before expiry that give a warning")
    critical_days: float = Field(default=7, description="days before expiry that give a critical finding")
    timeout: OptionalDuration = Field(default=None, description="handshake timeout (default: the server's timeout)")
    report_plain_http: bool = Field(default=True, description="add an info note for hosts not using https")


def _context(verify: bool | str) -> ssl.SSLContext:
    """The SSL context the bot's own HTTP client uses for this verification setting."""
    if verify is False:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if isinstance(verify, str):
        path = Path(verify).expanduser()
        if path.is_dir():
            return ssl.create_default_context(capath=str(path))
        return ssl.create_default_context(cafile=str(path))
    try:
        import httpx

        return httpx.create_ssl_context(verify=True)  # certifi, or SSL_CERT_FILE / SSL_CERT_DIR, like the client
    except Exception:  # an httpx without create_ssl_context: the system store
        return ssl.create_default_context()


def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _handshake(host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> dict[str, Any]:
    """Open a TLS connection and return the peer certificate (DER and, when verified, parsed) and protocol."""
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx, server_hostname=host, ssl_handshake_timeout=timeout),
        timeout=timeout + 1,
    )
    try:
        obj = writer.get_extra_info("ssl_object")
        if obj is None:
            raise ssl.SSLError("no TLS session")
        return {
            "der": obj.getpeercert(binary_form=True),
            "parsed": obj.getpeercert() or {},
            "protocol": obj.version(),
            "cipher": (obj.cipher() or (None,))[0],
        }
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), timeout=2)
        except (OSError, TimeoutError, ssl.SSLError):
            pass


def _describe_cert(der: bytes | None, parsed: dict[str, Any]) -> dict[str, Any]:
    """Subject, issuer, SANs and validity of a certificate, from `cryptography` if installed, else `ssl`'s dict."""
    out: dict[str, Any] = {}
    if der:
        try:
            from cryptography import x509

            cert = x509.load_der_x509_certificate(der)
            out["subject"] = cert.subject.rfc4514_string()
            out["issuer"] = cert.issuer.rfc4514_string()
            out["not_before"] = cert.not_valid_before_utc
            out["not_after"] = cert.not_valid_after_utc
            try:
                san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                out["dns_names"] = [str(n) for n in san.get_values_for_type(x509.DNSName)]
                out["ip_addresses"] = [str(n) for n in san.get_values_for_type(x509.IPAddress)]
            except x509.ExtensionNotFound:
                out["dns_names"], out["ip_addresses"] = [], []
            out["self_signed"] = cert.subject == cert.issuer
            return out
        except ImportError:
            pass
        except ValueError as exc:
            out["parse_error"] = str(exc)
    if parsed:
        def _name(field: str) -> str:
            return ", ".join(f"{k}={v}" for rdn in parsed.get(field, ()) for k, v in rdn)

        out["subject"], out["issuer"] = _name("subject"), _name("issuer")
        for key, field in (("not_before", "notBefore"), ("not_after", "notAfter")):
            if parsed.get(field):
                out[key] = datetime.fromtimestamp(ssl.cert_time_to_seconds(parsed[field]), tz=UTC)
        sans = parsed.get("subjectAltName", ())
        out["dns_names"] = [v for k, v in sans if k == "DNS"]
        out["ip_addresses"] = [v for k, v in sans if k == "IP Address"]
    return out


def _tls_failure(exc: BaseException, host: str, port: int) -> tuple[str, str]:
    """(short kind, exact message) for a failed TLS connection."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or str(exc)
        lowered = message.lower()
        if "hostname mismatch" in lowered or "ip address mismatch" in lowered:
            return "hostname_mismatch", message
        if "expired" in lowered:
            return "expired", message
        if "self-signed" in lowered or "self signed" in lowered:
            return "self_signed", message
        if "local issuer" in lowered or "issuer certificate" in lowered:
            return "untrusted_issuer", message
        return "verify_failed", message
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or ""
        if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE") or "wrong version" in str(exc):
            return "not_tls", f"{host}:{port} does not speak TLS ({reason or exc}); is it a plain-http port?"
        return "tls_error", f"{reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", f"connection refused at {host}:{port}"
    if isinstance(exc, socket.gaierror):
        return "dns", f"{host} does not resolve ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout", f"no TLS handshake with {host}:{port} in time"
    return "network", f"{type(exc).__name__}: {exc}"


_TLS_ADVICE = {
    "self_signed": "The certificate is self-signed. Replace it with one from a trusted CA (e.g. Let's Encrypt), "
    "or distribute it as a CA bundle to the bot, the SDK and every agent",
    "untrusted_issuer": "The certificate was issued by a CA this machine does not trust (a private CA, or a missing "
    "intermediate certificate in the server's chain). Serve the full chain on the proxy, or trust the CA",
    "expired": "The certificate has expired: renew it on the proxy / load balancer in front of ClearML",
    "hostname_mismatch": "The certificate does not name this host. Reissue it with the host in its subjectAltName, "
    "or use the host name the certificate was issued for in the URL",
    "verify_failed": "The certificate chain does not verify",
    "not_tls": "An https URL points at a port that speaks plain HTTP: use http:// or the TLS port",
    "tls_error": "The TLS handshake failed (protocol or cipher mismatch, or a proxy interfering)",
}


class _Host:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.url = f"{parts.scheme}://{self.host_for_url}:{self.port}"
        self.roles: list[str] = []

    @property
    def host_for_url(self) -> str:
        try:
            if ipaddress.ip_address(self.host).version == 6:
                return f"[{self.host}]"
        except ValueError:
            pass
        return self.host


@check("server.tls", params=TlsParams)
async def server_tls(snap: Snapshot, params: TlsParams) -> list[Finding]:
    """TLS of every https host (API, web UI, files): chain valid under the configured verification, host name
    matches, days to expiry.

    Names the exact failure (self-signed, unknown issuer, expired, host name mismatch, plain HTTP on an https
    URL); warns `warn_days` before expiry and is critical `critical_days` before. Plain http hosts get an info note.
    """
    server = snap.server
    hosts: dict[tuple[str, str, int], _Host] = {}
    for role, url in (("api", server.api_url), ("web", server.web_url), ("files", server.files_url)):
        if not url:
            continue
        h = _Host(url)
        hosts.setdefault((h.scheme, h.host, h.port), h).roles.append(role)
    timeout = params.timeout if params.timeout is not None else server.timeout_s
    try:
        ctx = _context(server.verify)
    except (OSError, ssl.SSLError) as exc:
        raise CheckError(
            f"cannot load the CA bundle {server.verify!r} set in servers.{server.name}.verify / "
            f"CLEARML_API_HOST_VERIFY_CERT: {exc}"
        ) from None

    async def one(h: _Host) -> Finding | None:
        if h.scheme != "https":
            if not params.report_plain_http:
                return None
            return Finding(
                check="server.tls",
                severity="info",
                title=f"{', '.join(h.roles)} host {h.url} does not use TLS",
                detail="Keys, tokens and artifacts travel unencrypted. Fine on a closed lab network; "
                "put ClearML behind an https proxy anywhere else.",
                subject=server_subject(snap, h.url),
                evidence={"url": h.url, "roles": h.roles, "tls": False},
            )
        return await _check_https(snap, params, h, ctx, timeout)

    results = await asyncio.gather(*(one(h) for h in hosts.values()))
    return [f for f in results if f is not None]


async def _check_https(
    snap: Snapshot, params: TlsParams, h: _Host, ctx: ssl.SSLContext, timeout: float
) -> Finding:
    server = snap.server
    subject = server_subject(snap, h.url)
    evidence: dict[str, Any] = {"url": h.url, "roles": h.roles, "verify": server.verify}
    if server.verify is False:
        evidence["verification"] = "disabled"
    else:
        evidence["verification"] = "CA bundle" if isinstance(server.verify, str) else "default trust store"
    failure: tuple[str, str] | None = None
    session: dict[str, Any] = {}
    try:
        session = await _handshake(h.host, h.port, ctx, timeout)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        failure = _tls_failure(exc, h.host, h.port)

    if failure and failure[0] in ("refused", "dns", "timeout", "network", "not_tls"):
        kind, message = failure
        severity: Severity = "critical" if kind == "not_tls" else "warning"
        origin = api_host_setting(server) if "api" in h.roles else (
            f"`servers.{server.name}.web` / `.files`, CLEARML_WEB_HOST / CLEARML_FILES_HOST, or api.web_server / "
            "api.files_server in clearml.conf"
        )
        return Finding(
            check="server.tls",
            severity=severity,
            title=f"Cannot check TLS of {h.url}: {message}",
            detail=f"The {', '.join(h.roles)} host could not be reached over TLS.",
            subject=subject,
            evidence={**evidence, "failure": kind, "message": message},
            remediation=_TLS_ADVICE.get(kind, f"Check that {h.url} is up and reachable from this machine")
            + f"; the URL comes from {origin}.",
        )

    if failure:
        # Verification failed: look at the certificate without verifying so the finding can say what it is.
        try:
            session = await _handshake(h.host, h.port, _unverified_context(), timeout)
        except (OSError, ssl.SSLError, TimeoutError):
            session = {}
    cert = _describe_cert(session.get("der"), session.get("parsed") or {})
    not_after: datetime | None = cert.get("not_after")
    # The bot's own clock, not the server's: certificate validity is judged by each client's clock too.
    days_left = None if not_after is None else (not_after - datetime.now(UTC)).total_seconds() / 86400
    evidence.update(
        {
            "protocol": session.get("protocol"),
            "cipher": session.get("cipher"),
            "certificate": {
                "subject": cert.get("subject"),
                "issuer": cert.get("issuer"),
                "dns_names": cert.get("dns_names", []),
                "ip_addresses": cert.get("ip_addresses", []),
                "not_before": iso(cert.get("not_before")),
                "not_after": iso(not_after),
                "self_signed": cert.get("self_signed"),
            },
            "days_left": None if days_left is None else round(days_left, 1),
        }
    )
    links = [h.url]

    if failure:
        kind, message = failure
        evidence.update({"failure": kind, "message": message})
        return Finding(
            check="server.tls",
            severity="critical",
            title=f"TLS certificate of {h.url} is not trusted: {message}",
            detail=f"Every client that verifies certificates (the bot, the SDK, the agents, browsers for the web UI) "
            f"fails on the {', '.join(h.roles)} host with: {message}.",
            subject=subject,
            evidence=evidence,
            links=links,
            remediation=f"{_TLS_ADVICE.get(kind, 'Fix the certificate')}. To trust a private CA, set "
            f"{verify_setting(server)}.",
        )

    if days_left is not None and days_left < params.critical_days:
        severity = "critical"
    elif days_left is not None and days_left < params.warn_days:
        severity = "warning"
    else:
        severity = "info" if server.verify is False else "ok"
    expiry = "unknown expiry" if days_left is None else (
        f"expired {-days_left:.0f} days ago" if days_left < 0 else f"expires in {days_left:.0f} days"
    )
    if severity in ("warning", "critical"):
        title = f"TLS certificate of {h.url} {expiry} ({iso(not_after)})"
        remediation = (
            "Renew the certificate on the proxy / load balancer in front of ClearML (check that automatic renewal, "
            "e.g. certbot's timer, actually runs) before it expires: every agent and SDK call fails after that."
        )
    elif server.verify is False:
        title = f"TLS on {h.url} is not verified ({expiry})"
        remediation = (
            f"Certificate verification is turned off by {verify_setting(server)}; anyone on the path could "
            "impersonate the server. Prefer trusting the server's CA bundle."
        )
    else:
        title = f"TLS OK on {h.url} ({expiry}, {session.get('protocol') or 'TLS'})"
        remediation = ""
    if server.verify is False:
        # Say whether default verification would pass, so the user knows if turning it back on is safe.
        try:
            await _handshake(h.host, h.port, _context(True), timeout)
            evidence["default_verification"] = "passes"
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            evidence["default_verification"] = _tls_failure(exc, h.host, h.port)[1]
    return Finding(
        check="server.tls",
        severity=severity,
        title=title,
        detail=f"{', '.join(h.roles)} host; issuer {cert.get('issuer') or '?'}; valid until {iso(not_after) or '?'}.",
        subject=subject,
        evidence=evidence,
        links=links,
        remediation=remediation,
    )


# ------------------------------------------------------------------------------------------------
# server.version


def _version_tuple(value: Any) -> tuple[int, ...] | None:
    """"2.0.0-613" -> (2, 0, 0); "2.31" -> (2, 31); None for anything without a number."""
    if value is None:
        return None
    numbers = re.findall(r"\d+", str(value).split("-", 1)[0].split("+", 1)[0])
    return tuple(int(n) for n in numbers[:3]) if numbers else None


def _sentence(text: str) -> str:
    """Upper-case the first letter only (str.capitalize would lower-case "API" and "SDK")."""
    return text[:1].upper() + text[1:]


def _fmt(version: tuple[int, ...] | None) -> str:
    return ".".join(str(n) for n in version) if version else "?"


@functools.lru_cache(maxsize=4)
def bundled_api_versions(package: str) -> tuple[tuple[int, int], ...]:
    """The API versions an installed ClearML client package bundles (`backend_api/services/v2_23` -> (2, 23)).

    Found on disk without importing the package (importing clearml costs about half a second).
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return ()
    if spec is None or not spec.submodule_search_locations:
        return ()
    found: set[tuple[int, int]] = set()
    for root in spec.submodule_search_locations:
        services = Path(root) / "backend_api" / "services"
        if not services.is_dir():
            continue
        for child in services.iterdir():
            match = re.fullmatch(r"v(\d+)_(\d+)", child.name)
            if match and child.is_dir():
                found.add((int(match.group(1)), int(match.group(2))))
    return tuple(sorted(found))


def _package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


class VersionParams(CheckParams):
    min_server_version: str | None = Field(
        default=None, description='lowest acceptable server version, e.g. "1.16.0" (what your agents or pipelines need)'
    )
    min_api_version: str | None = Field(default=None, description='lowest acceptable API version, e.g. "2.26"')
    compare_sdk: bool = Field(default=True, description="warn when the server's API is older than the installed SDK's")


@check("server.version", params=VersionParams)
async def server_version(snap: Snapshot, params: VersionParams) -> list[Finding]:
    """Server and API versions against what the installed clearml SDK (and clearml-agent, if installed) bundle,
    and against configurable minimums.

    Warns when the server's API is older than the newest API version the SDK bundles (the SDK then falls back to
    older calls and newer features fail) or older than `min_server_version` / `min_api_version`.
    """
    info = await snap.server_info()  # an unreachable server raises: server.reachable reports that
    server_raw, api_raw = info.get("version"), info.get("api_version")
    server_v, api_v = _version_tuple(server_raw), _version_tuple(api_raw)
    sdk_api = bundled_api_versions("clearml")
    agent_api = bundled_api_versions("clearml_agent")
    evidence: dict[str, Any] = {
        "server_version": server_raw,
        "api_version": api_raw,
        "build": info.get("build"),
        "sdk": {"package": "clearml", "version": _package_version("clearml"),
                "api_versions": [_fmt(v) for v in sdk_api]},
    }
    if agent_api:
        evidence["agent"] = {"package": "clearml-agent", "version": _package_version("clearml-agent"),
                             "api_versions": [_fmt(v) for v in agent_api]}
    problems: list[str] = []
    remedies: list[str] = []
    if api_v is None:
        problems.append("the server does not report its API version (servers older than API 2.12 omit it)")
        remedies.append("upgrade the ClearML server")
    elif params.compare_sdk:
        for label, bundled in (("clearml SDK", sdk_api), ("clearml-agent", agent_api)):
            if bundled and api_v < bundled[-1]:
                problems.append(
                    f"the server's API {_fmt(api_v)} is older than the {label}'s newest bundled API "
                    f"{_fmt(bundled[-1])}"
                )
        if len(problems) > 0:
            remedies.append(
                "upgrade the ClearML server (docker compose pull && docker compose up -d for the server's compose "
                "file), or pin the SDK/agent to a release from the server's era"
            )
    if params.min_api_version and api_v is not None:
        wanted = _version_tuple(params.min_api_version)
        if wanted and api_v < wanted:
            problems.append(f"API {_fmt(api_v)} is older than the required {params.min_api_version}")
    if params.min_server_version:
        wanted = _version_tuple(params.min_server_version)
        if wanted and (server_v is None or server_v < wanted):
            problems.append(f"server {server_raw or '?'} is older than the required {params.min_server_version}")
    if params.min_api_version or params.min_server_version:
        evidence["required"] = {"server": params.min_server_version, "api": params.min_api_version}
        if problems and not remedies:
            remedies.append("upgrade the ClearML server to at least the required version")
    title_versions = f"server {server_raw or '?'}, API {api_raw or '?'}"
    if problems:
        return [
            Finding(
                check="server.version",
                severity="warning",
                title=f"ClearML server is older than its clients need ({title_versions})",
                detail=_sentence("; ".join(problems)) + ".",
                subject=server_subject(snap),
                evidence=evidence,
                links=[snap.web],
                remediation=_sentence("; ".join(remedies)) + ". Back up mongo and elasticsearch before upgrading.",
            )
        ]
    return [
        Finding(
            check="server.version",
            severity="ok",
            title=f"ClearML {title_versions}",
            detail=f"The installed clearml SDK bundles API {', '.join(_fmt(v) for v in sdk_api) or '?'}.",
            subject=server_subject(snap),
            evidence=evidence,
        )
    ]
