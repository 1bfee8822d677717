"""`clearml-chatops serve --http` in its own process, with the fake Slack API in another (benchmarks 3 and 5)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import PYTHON, REPO, BenchError, Sim, clean_env, free_port, stop_process

SIGNING_SECRET = "bench-signing-secret-0123456789abcdef"
FAKE_BOT_TOKEN = "xoxb-fake-0000000000-0000000000000-FAKEBOTTOKEN000000000000"


@dataclass
class FakeSlackProcess:
    proc: subprocess.Popen[str]
    base_url: str

    def dump(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("dump\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("CALLS "):
                result: dict[str, Any] = json.loads(line[len("CALLS ") :])
                return result
        raise BenchError("the fake Slack ended before answering")

    def response_url(self, name: str) -> str:
        return self.base_url.replace("/api/", f"/response/{name}")


@contextlib.contextmanager
def fake_slack(workdir: Path) -> Iterator[FakeSlackProcess]:
    proc = subprocess.Popen([PYTHON, "-m", "bench.workers.fake_slack"], cwd=REPO, env=clean_env(home=workdir),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("URL "):
            raise BenchError("the fake Slack did not start")
        yield FakeSlackProcess(proc, line.split()[1])
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        stop_process(proc)


def write_config(workdir: Path, sim: Sim, slack_url: str, playbooks: Path, name: str = "bot", extra: str = "") -> Path:
    config = workdir / f"{name}-config.yaml"
    config.write_text(
        extra +
        "servers:\n"
        "  sim:\n"
        f"    api: {sim.api_url}\n    web: {sim.env['CLEARML_WEB_HOST']}\n    files: {sim.files_url}\n"
        "    credentials_env: [BENCH_CLEARML_KEY, BENCH_CLEARML_SECRET]\n"
        f"store: {workdir / f'{name}-store.db'}\n"
        f"playbooks: {playbooks}\n"
        f"slack:\n  api_url: {slack_url}\n  default_channel: '#ml-alerts'\n"
    )
    return config


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str
    log_path: Path

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"


@contextlib.contextmanager
def serve(workdir: Path, sim: Sim, config: Path, name: str = "bot", timeout: float = 60,
          log_level: str = "WARNING") -> Iterator[Served]:
    """`python -m bot serve --http` on a free port; waits until /healthz answers 200."""
    port = free_port()
    key, secret = sim.keys
    env = clean_env({"SLACK_BOT_TOKEN": FAKE_BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                     "BENCH_CLEARML_KEY": key, "BENCH_CLEARML_SECRET": secret, "LOG_LEVEL": log_level}, home=workdir)
    log_path = workdir / f"{name}-serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([PYTHON, "-m", "bot", "serve", "--http", "--host", "127.0.0.1", "--port", str(port),
                                 "--config", str(config)], cwd=REPO, env=env, stdout=log, stderr=log, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_http(f"{url}/healthz", proc, timeout, log_path)
            yield Served(proc, url, log_path)
        finally:
            stop_process(proc)


def _wait_http(url: str, proc: subprocess.Popen[Any], timeout: float, log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text()[-2000:] if log_path else ""
            raise BenchError(f"the server exited with {proc.returncode} before serving: {tail}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer within {timeout:g} s")


@contextlib.contextmanager
def min_slack_app(workdir: Path) -> Iterator[str]:
    """The baseline app (bench.workers.min_slack_app); yields its events URL."""
    port = free_port()
    env = clean_env({"SLACK_SIGNING_SECRET": SIGNING_SECRET}, home=workdir)
    proc = subprocess.Popen([PYTHON, "-m", "bench.workers.min_slack_app", "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        url = f"http://127.0.0.1:{port}/slack/events"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, content=b"", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise BenchError("the baseline Slack app did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        stop_process(proc)


def sample_process(pid: int, stop: threading.Event, interval: float, out: list[tuple[float, float, float]]) -> None:
    """(time, cpu seconds, rss MB) of process `pid` every `interval` s until `stop` is set."""
    import psutil

    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            times = proc.cpu_times()
            rss = proc.memory_info().rss / 1e6
        except psutil.Error:
            return
        out.append((time.monotonic(), times.user + times.system, rss))
        stop.wait(interval)
