"""SimServer: the ClearML API simulator as real HTTP servers on loopback (API on one port, file server on
another), with a Python API for tests and demos to control time, faults and state.

    from bot.sim.server import SimServer

    with SimServer(scenario="basic") as sim:
        print(sim.api_url, sim.files_url, sim.keys[0])
        sim.clock.advance(600)                       # ten simulated minutes pass
        sim.set_fault("tasks.get_all", status=500, traceback=True, times=1)
        sim.state.tasks[...]                         # inspect (hold sim.state.lock while iterating)
"""

from __future__ import annotations

import contextlib
import copy
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from bot.sim.api import ApiApp, Response
from bot.sim.clock import SimClock
from bot.sim.files import FilesApp
from bot.sim.scenario import build_state, load_scenario_data
from bot.sim.state import EndpointFault, SimState

ScenarioArg = str | Path | dict[str, Any]


class _Handler(BaseHTTPRequestHandler):
    """One connection; dispatches every request (any method) to the owning SimServer."""

    protocol_version = "HTTP/1.1"
    server_version = "clearml"
    sys_version = ""
    server: _HTTPServer
    _server_header = "clearml"

    def version_string(self) -> str:
        return self._server_header

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header follows the simulated clock (clients may use it as the server's "now").
        return self.server.owner.api.http_date()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.verbose:
            super().log_message(format, *args)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline().strip().split(b";", 1)[0]
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        body = self._read_body()
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        owner = self.server.owner
        if self.server.kind == "api":
            latency = owner.state.faults.latency_ms
            if latency > 0:
                time.sleep(latency / 1000.0)
            response = owner.api.handle(self.command, path, query, headers, body, self.client_address[0])
        else:
            response = owner.files.handle(self.command, path, query, headers, body)
        self._send(response)

    def _send(self, response: Response) -> None:
        extra = dict(response.headers)
        self._server_header = extra.pop("Server", "clearml")
        length = extra.pop("X-Content-Length", None)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", length or str(len(response.body)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: SimServer, kind: str) -> None:
        self.owner = owner
        self.kind = kind
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-request are normal (timeouts, killed agents): no traceback for those."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and not self.owner.verbose:  # resets, broken pipes, timeouts
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Drop idle keep-alive connections so their handler threads end with the server."""
        with self.connections_lock:
            conns = list(self.connections)
            self.connections.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()


class SimServer:
    """The ClearML API + file server simulator.

    `scenario`: a shipped scenario name ("basic"), a path to a YAML file, or a scenario dict (e.g. from
    `bot.sim.fleet.generate_fleet`). `keys`: credentials to accept instead of the scenario's (None -> the
    scenario's keys, or the default demo pair). `port`/`files_port` 0 pick free ports.
    """

    def __init__(
        self,
        scenario: ScenarioArg = "basic",
        host: str = "127.0.0.1",
        port: int = 0,
        files_port: int = 0,
        latency_ms: float = 0,
        keys: list[tuple[str, str]] | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        self.clock = SimClock()
        self.host = host
        self._port = port
        self._files_port = files_port
        self._keys_override = [(str(k), str(s)) for k, s in keys] if keys else None
        self._initial_latency = float(latency_ms or 0)
        self.verbose = verbose
        self._api_server: _HTTPServer | None = None
        self._files_server: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._files_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._started = False
        # Parse first, so a broken scenario file fails before any port is opened.
        self._scenario_data: dict[str, Any] | None = load_scenario_data(scenario)
        # Bind now: the file-server URL is part of the state (dataset artifact URIs), and building a
        # 200k-task fleet twice would be slow. Nothing is served until start().
        self._api_server = _HTTPServer((self.host, self._port), self, "api")
        try:
            self._files_server = _HTTPServer((self.host, self._files_port), self, "files")
            self._port = self._api_server.server_address[1]
            self._files_port = self._files_server.server_address[1]
            self.state: SimState = build_state(self._scenario_data, self.clock, files_url=self.files_url,
                                               keys=self._keys_override)
        except BaseException:
            self._close_sockets()
            raise
        self._scenario_data = None  # the state holds what it needs; free a big fleet's spec
        if self._initial_latency:
            self.state.faults.latency_ms = self._initial_latency
        self.api = ApiApp(self.state)
        self.files = FilesApp(self.api)

    def _close_sockets(self) -> None:
        for server in (self._api_server, self._files_server):
            if server is not None:
                server.server_close()
        self._api_server = self._files_server = None

    # ------------------------------------------------------------------ lifecycle
    def _url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    def start(self) -> SimServer:
        """Serve both ports (bound by the constructor); returns once listening."""
        with self._lock:
            if self._started:
                return self
            if self._api_server is None:
                raise RuntimeError("a stopped SimServer cannot be restarted; create a new one")
            self._started = True
            thread = threading.Thread(target=self._api_server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"sim-api-{self._port}", daemon=True)
            thread.start()
            self._threads = [thread]
            self._apply_fileserver_enabled()
        return self

    def stop(self) -> None:
        """Stop serving, close the ports and every open connection."""
        with self._lock:
            for server in (self._api_server, self._files_server):
                if server is None:
                    continue
                serving = self._started if server.kind == "api" else self._files_thread is not None
                if serving:
                    server.shutdown()
                server.server_close()
                server.close_connections()
            for thread in self._threads:
                thread.join(timeout=5)
            if self._files_thread is not None:
                self._files_thread.join(timeout=5)
            self._api_server = self._files_server = None
            self._files_thread = None
            self._threads = []
            self._started = False

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _install(self, state: SimState) -> None:
        self.state = state
        self.api.state = state

    def _apply_fileserver_enabled(self) -> None:
        """Serve the files port, or close it (connection refused) when the scenario disables the file server."""
        if self._api_server is None or not self._started:
            return
        enabled = self.state.faults.fileserver_enabled
        if enabled and self._files_thread is None:
            if self._files_server is None or self._files_server.socket.fileno() < 0:
                self._files_server = _HTTPServer((self.host, self._files_port), self, "files")
            thread = threading.Thread(target=self._files_server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"sim-files-{self._files_port}", daemon=True)
            thread.start()
            self._files_thread = thread
        elif not enabled and self._files_server is not None:
            if self._files_thread is not None:
                self._files_server.shutdown()
                self._files_thread.join(timeout=5)
                self._files_thread = None
            self._files_server.server_close()
            self._files_server.close_connections()

    # ------------------------------------------------------------------ addresses and credentials
    @property
    def api_url(self) -> str:
        return self._url(self._port)

    @property
    def files_url(self) -> str:
        return self._url(self._files_port)

    @property
    def web_url(self) -> str:
        # The simulator has no web UI; links point at the API host.
        return self.api_url

    @property
    def keys(self) -> list[tuple[str, str]]:
        with self.state.lock:
            return [(c.key, c.secret) for c in self.state.credentials.values()]

    def env(self) -> dict[str, str]:
        """The CLEARML_* environment variables that point a ClearML client at this simulator."""
        key, secret = self.keys[0]
        return {
            "CLEARML_API_HOST": self.api_url,
            "CLEARML_WEB_HOST": self.web_url,
            "CLEARML_FILES_HOST": self.files_url,
            "CLEARML_API_ACCESS_KEY": key,
            "CLEARML_API_SECRET_KEY": secret,
        }

    # ------------------------------------------------------------------ state
    def load_scenario(self, scenario: ScenarioArg) -> None:
        """Replace the whole state (tasks, queues, workers, files and faults) by a scenario's, keeping the
        clock, the ports and the token secret (clients stay logged in)."""
        data = load_scenario_data(scenario)
        state = build_state(data, self.clock, files_url=self.files_url, keys=self._keys_override)
        with self.state.lock:
            self._install(state)
        self._apply_fileserver_enabled()

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """(endpoint, payload) of every API request received since start (or reset_calls)."""
        with self.state.lock:
            return [(name, copy.deepcopy(payload)) for name, payload in self.api.calls]

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(HTTP method, path) of every API request, e.g. ("GET", "/v2.23/tasks.get_all")."""
        with self.state.lock:
            return list(self.api.requests)

    def reset_calls(self) -> None:
        with self.state.lock:
            self.api.calls.clear()
            self.api.requests.clear()

    def calls_to(self, endpoint: str) -> list[dict[str, Any]]:
        """Payloads of the calls made to one endpoint."""
        return [payload for name, payload in self.calls if name == endpoint]

    # ------------------------------------------------------------------ faults
    def set_fault(
        self,
        endpoint: str,
        status: int | None = None,
        subcode: int = 0,
        message: str | None = None,
        traceback: bool = False,
        html: bool = False,
        times: int | None = None,
    ) -> None:
        """Make an endpoint (or fnmatch pattern, e.g. "tasks.*") fail: an API error envelope with the given
        status/subcode/message (500 with `traceback` puts a Python traceback in error_stack), or with `html`
        a proxy's HTML error page (default status 502) and no envelope. `times`: fail only N times."""
        fault = EndpointFault(
            status=status if status is not None else (502 if html else 500),
            subcode=subcode, message=message, traceback=traceback, html=html, times=times,
        )
        with self.state.lock:
            self.state.faults.endpoints[endpoint] = fault

    def clear_faults(self) -> None:
        """Remove every endpoint fault, accept logins again and drop the added latency."""
        with self.state.lock:
            faults = self.state.faults
            faults.endpoints.clear()
            faults.reject_logins = False
            faults.latency_ms = 0
            faults.fail_uploads = faults.fail_deletes = False
            faults.events_read_only = faults.events_drop_writes = False
            faults.fileserver_enabled = True
        self._apply_fileserver_enabled()

    @property
    def reject_logins(self) -> bool:
        return self.state.faults.reject_logins

    @reject_logins.setter
    def reject_logins(self, value: bool) -> None:
        self.state.faults.reject_logins = bool(value)

    @property
    def latency_ms(self) -> float:
        return self.state.faults.latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        self.state.faults.latency_ms = float(value)

    @property
    def token_ttl_s(self) -> int:
        return self.state.faults.token_ttl_s

    @token_ttl_s.setter
    def token_ttl_s(self, value: int) -> None:
        self.state.faults.token_ttl_s = int(value)

    @property
    def fileserver_enabled(self) -> bool:
        return self.state.faults.fileserver_enabled

    @fileserver_enabled.setter
    def fileserver_enabled(self, value: bool) -> None:
        self.state.faults.fileserver_enabled = bool(value)
        self._apply_fileserver_enabled()

    # ------------------------------------------------------------------ helpers for tests and demos
    def issue_token(self, user: str | None = None, ttl_s: int | None = None) -> str:
        """A valid API token (as auth.login would give), e.g. for file-server requests in tests."""
        with self.state.lock:
            identity = self.api.identity_for_user(user or self.state.default_user["id"])
            return self.api.issue_token(identity, ttl_s)

    def task_id(self, name: str) -> str:
        """Id of the first task with this name."""
        with self.state.lock:
            for doc in self.state.tasks.values():
                if doc.get("name") == name:
                    return str(doc["id"])
        raise KeyError(f"no task named {name!r}")

    def queue_id(self, name: str) -> str:
        with self.state.lock:
            queue = self.state.queue_by_name(name)
        if queue is None:
            raise KeyError(f"no queue named {name!r}")
        return str(queue["id"])

    def iter_tasks(self) -> Iterator[dict[str, Any]]:
        """Rendered copies of every task (a snapshot)."""
        with self.state.lock:
            self.state.run_watchdog()
            docs = [copy.deepcopy(self.state.render_task(d)) for d in self.state.tasks.values()]
        yield from docs
