"""The container: slim base, non-root, the `serve` entrypoint, a health check that runs, a volume for the store.
(Images cannot be pulled here, so the Dockerfile is checked as text, and the health probe as a program.)"""

from __future__ import annotations

import fnmatch
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from bot.slack import healthcheck

REPO = Path(__file__).resolve().parents[3]


def instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), " ".join(rest.split())))
    return out


def test_slim_base_images() -> None:
    bases = [rest.split()[0] for kw, rest in instructions() if kw == "FROM"]
    assert bases and all(b.startswith("python:3.11-slim") for b in bases)


def test_runs_as_a_non_root_user() -> None:
    steps = instructions()
    users = [rest for kw, rest in steps if kw == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, (kw, _) in enumerate(steps) if kw == "USER")
    last_from = max(i for i, (kw, _) in enumerate(steps) if kw == "FROM")
    assert last_user > last_from  # the runtime stage drops root
    assert any("useradd" in rest and users[-1] in rest for kw, rest in steps if kw == "RUN")


def test_entrypoint_health_check_and_volume() -> None:
    steps = dict(instructions())
    assert steps["ENTRYPOINT"] == '["clearml-chatops"]' and steps["CMD"] == '["serve"]'
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["clearml-chatops"] == "bot.cli:main"
    assert 'CMD ["python", "-m", "bot.slack.healthcheck"]' in steps["HEALTHCHECK"]
    assert steps["VOLUME"] == '["/data"]'
    assert "XDG_STATE_HOME=/data" in steps["ENV"]  # the store's default path lands on the volume
    assert "3000" in steps["EXPOSE"]


def test_copied_files_exist_and_are_not_docker_ignored() -> None:
    ignored = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip()]
    for kw, rest in instructions():
        if kw != "COPY" or rest.startswith("--from"):
            continue
        for source in rest.split()[:-1]:
            assert (REPO / source).exists(), source
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


def test_the_image_installs_the_shipped_playbooks_with_the_package() -> None:
    # `pip install .` in the build stage sees setup.py (packaging) and playbooks/ (the package data bot/playbooks);
    # the runtime stage has no /app/playbooks of its own, so a directory mounted there replaces the shipped ones.
    steps = instructions()
    install = next(i for i, (kw, rest) in enumerate(steps) if kw == "RUN" and "pip install" in rest)
    copied_before = [rest.split()[:-1] for kw, rest in steps[:install] if kw == "COPY"]
    sources = {source for group in copied_before for source in group}
    assert {"pyproject.toml", "setup.py", "bot", "playbooks"} <= sources
    last_from = max(i for i, (kw, _) in enumerate(steps) if kw == "FROM")
    assert not [rest for kw, rest in steps[last_from:] if kw == "COPY" and rest.split()[0] == "playbooks"]


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b'{"ok": true}' if self.status == 200 else b'{"ok": false}'
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_health_probe_program(health_server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    port = health_server.server_address[1]
    monkeypatch.setenv("PORT", str(port))
    _Health.status = 200
    assert healthcheck.main([]) == 0
    _Health.status = 503
    assert healthcheck.main([f"http://127.0.0.1:{port}/healthz"]) == 1
    health_server.shutdown()
    assert healthcheck.main(["http://127.0.0.1:9/healthz"]) == 1  # nothing listening
