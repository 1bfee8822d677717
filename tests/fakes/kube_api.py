"""A fake Kubernetes API server on loopback: just enough of core/v1 pods for the rotate backend, over real HTTP
so the official kubernetes client is exercised end to end (URL building, auth header, JSON decoding).

Serves GET/LIST (with labelSelector: `k=v`, `k==v`, `k!=v`, `k`, `!k`) and DELETE of pods; records every
request (`requests`) and every delete (`deletes`: namespace, name, body). A deleted pod that belongs to a
ReplicaSet (label `pod-template-hash`) is replaced by a fresh pod with a new name, like a Deployment would.
With `token` set, requests without `Authorization: Bearer <token>` get 401.
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: Any


@dataclass
class FakeKube:
    token: str | None = None
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    deletes: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def add_pod(self, name: str, namespace: str = "default", labels: dict[str, str] | None = None) -> dict[str, Any]:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(labels or {}),
                "uid": secrets.token_hex(16),
                "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "spec": {"containers": [{"name": "clearml-agent", "image": "allegroai/clearml-agent:latest"}]},
            "status": {"phase": "Running"},
        }
        with self.lock:
            self.pods[(namespace, name)] = pod
        return pod

    def pod_names(self, namespace: str = "default") -> list[str]:
        with self.lock:
            return sorted(name for ns, name in self.pods if ns == namespace)


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _handler(kube: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _handle(self, method: str) -> None:
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            query = urllib.parse.parse_qs(parts.query)
            with kube.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}  # clients differ in header case
                kube.requests.append(Recorded(method, parts.path, query, headers, body))
            if kube.token and self.headers.get("Authorization") != f"Bearer {kube.token}":
                self._reply(401, _status(401, "Unauthorized", "Unauthorized"))
                return
            segs = parts.path.strip("/").split("/")
            # /api/v1/namespaces/{ns}/pods[/{name}]
            if len(segs) >= 5 and segs[:3] == ["api", "v1", "namespaces"] and segs[4] == "pods":
                namespace = segs[3]
                name = segs[5] if len(segs) > 5 else None
                if name is None and method == "GET":
                    selector = (query.get("labelSelector") or [""])[0]
                    with kube.lock:
                        items = [p for (ns, _), p in kube.pods.items()
                                 if ns == namespace and _matches(p["metadata"]["labels"], selector)]
                    self._reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                                      "items": items})
                    return
                if name is not None:
                    with kube.lock:
                        pod = kube.pods.get((namespace, name))
                    if pod is None:
                        self._reply(404, _status(404, "NotFound", f'pods "{name}" not found'))
                        return
                    if method == "GET":
                        self._reply(200, pod)
                        return
                    if method == "DELETE":
                        self._delete(namespace, name, pod, body)
                        return
            self._reply(404, _status(404, "NotFound", f"the fake serves no {method} {parts.path}"))

        def _delete(self, namespace: str, name: str, pod: dict[str, Any], body: Any) -> None:
            with kube.lock:
                kube.pods.pop((namespace, name), None)
                kube.deletes.append({"namespace": namespace, "name": name, "body": body})
            labels = pod["metadata"]["labels"]
            if "pod-template-hash" in labels:  # the ReplicaSet brings a replacement
                base = name.rsplit("-", 1)[0]
                kube.add_pod(f"{base}-{secrets.token_hex(3)}", namespace, labels)
            gone = json.loads(json.dumps(pod))
            gone["metadata"]["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._reply(200, gone)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    kube = FakeKube(token="kube-test-token-" + secrets.token_hex(8))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(kube))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    kube.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield kube
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
