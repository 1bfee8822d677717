"""A tiny raw HTTP(S) server on loopback that answers canned responses per path.

For the client's fault-shape tests (HTML proxy pages, tracebacks, slow answers, token expiry, TLS): real
sockets, no mocks. Routes map a path ("tasks.get_all") to a `Canned` response, a list of them (served in
turn, the last one repeating) or a function of the request.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt


@dataclass
class Canned:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class RawRequest:
    method: str
    path: str  # without the leading "/"
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Route = Canned | list[Canned] | Callable[[RawRequest], Canned]


def envelope(
    data: dict[str, Any] | None = None,
    *,
    code: int = 200,
    subcode: int = 0,
    msg: str = "OK",
    endpoint: str = "",
    error_stack: str | None = "",
) -> Canned:
    """A response in the ClearML `meta`/`data` envelope, HTTP status == result_code."""
    rid = uuid.uuid4().hex
    meta = {
        "id": rid,
        "trx": rid,
        "endpoint": {"name": endpoint, "requested_version": "2.31", "actual_version": "2.4"},
        "result_code": code,
        "result_subcode": subcode,
        "result_msg": msg,
        "error_stack": error_stack,
        "error_data": {},
    }
    return Canned(status=code, body={"meta": meta, "data": data if data is not None else {}})


def make_token(
    *, ttl_s: float = 3600, api_version: str = "2.31", server_version: str = "2.0.0", iat: float | None = None
) -> str:
    now = time.time() if iat is None else iat
    claims = {
        "identity": {"user": "u1", "company": "c1", "role": "user"},
        "session_id": uuid.uuid4().hex,  # like the real server: two logins never yield the same token
        "iat": int(now),
        "exp": int(now + ttl_s),
        "api_version": api_version,
        "server_version": server_version,
        "feature_set": "basic",
    }
    return jwt.encode(claims, "fake-clearml-server-secret-0123456789abcdef", algorithm="HS256")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RawServer:
    """`with RawServer({"debug.ping": envelope({"msg": "ok"})}) as srv: srv.url`"""

    def __init__(
        self,
        routes: dict[str, Route] | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        date: dt.datetime | None = None,
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[RawRequest] = []
        self.date = date  # a fixed Date header (to fake clock skew); else the real time
        self._lock = threading.Lock()
        self._tls = tls
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = RawRequest(
                    self.command, self.path.lstrip("/"), dict(self.headers.items()), self.rfile.read(length)
                )
                canned = server._answer(request)
                if canned.delay_s:
                    time.sleep(canned.delay_s)
                body = canned.body
                if isinstance(body, dict | list):
                    payload = json.dumps(body).encode()
                    ctype = "application/json"
                else:
                    payload = body.encode() if isinstance(body, str) else body
                    ctype = "text/html; charset=utf-8"
                try:
                    self.send_response(canned.status)
                    headers = {"Content-Type": ctype, **canned.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout tests)

            def date_time_string(self, timestamp: float | None = None) -> str:
                if server.date is not None:
                    return format_datetime(server.date.astimezone(dt.UTC), usegmt=True)
                return super().date_time_string(timestamp)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        # a short poll interval keeps stop() (and so every test) fast
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    def _answer(self, request: RawRequest) -> Canned:
        with self._lock:
            self.requests.append(request)
            route = self.routes.get(request.path)
            if isinstance(route, list):
                return route.pop(0) if len(route) > 1 else route[0]
        if route is None:
            return envelope(code=404, msg=f"Unable to find endpoint for name {request.path} and version 2.31")
        if isinstance(route, Canned):
            return route
        return route(request)

    def start(self) -> RawServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> RawServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- TLS material generated at test time --------------------------------------------------------------


def make_cert(
    directory: Path,
    *,
    common_name: str = "localhost",
    san_dns: tuple[str, ...] = ("localhost",),
    san_ip: tuple[str, ...] = ("127.0.0.1",),
    expired: bool = False,
) -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM files) made with `cryptography`."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = (
        (now - dt.timedelta(days=30), now - dt.timedelta(days=1))
        if expired
        else (now - dt.timedelta(days=1), now + dt.timedelta(days=30))
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in san_dns]
    alt_names += [x509.IPAddress(ipaddress.ip_address(i)) for i in san_ip]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{common_name}{'-expired' if expired else ''}.pem"
    key_path = directory / f"{common_name}{'-expired' if expired else ''}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
