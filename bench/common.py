"""Shared plumbing for the benchmarks: the simulator in its own process, child processes that report one JSON
result line, clean environments, free ports, statistics.

Every party of a benchmark (the bot, each baseline, the simulator) runs in a process of its own so that one's
CPU and memory never count against another, and so that the clearml SDK's per-process configuration cannot leak
between runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RESULT_PREFIX = "RESULT "


class BenchError(RuntimeError):
    """A benchmark could not run (a child failed, the simulator did not start); the message says which."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: dict[str, str] | None = None, home: Path | None = None) -> dict[str, str]:
    """This process's environment without ClearML/Slack settings (nothing from the machine leaks in), plus
    `extra`. HOME points at an empty directory so that no ~/clearml.conf is read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_", "SLACK_"))}
    if home is not None:
        env["HOME"] = str(home)
        env["CLEARML_CONFIG_FILE"] = str(home / "no-such-clearml.conf")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def emit(result: dict[str, Any]) -> None:
    """What a child process prints as its last line: the harness parses it."""
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident set size (ru_maxrss is in KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(module: str, args: Sequence[str], env: dict[str, str], *, timeout: float = 600) -> dict[str, Any]:
    """Run `python -m module args...` and return the JSON of its RESULT line; BenchError with its stderr tail
    when it fails."""
    cmd = [PYTHON, "-m", module, *args]
    try:
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{module} did not finish within {timeout:g} s") from exc
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise BenchError(f"{module} {' '.join(args)} exited {proc.returncode}:\n{tail}")
    out: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return out


@dataclass
class Sim:
    """The ClearML API simulator running as `python -m bot sim` in a process of its own."""

    proc: subprocess.Popen[str]
    env: dict[str, str]  # the CLEARML_* variables it printed
    log_path: Path
    load_s: float
    _log: IO[str] | None = field(default=None, repr=False)

    @property
    def api_url(self) -> str:
        return self.env["CLEARML_API_HOST"]

    @property
    def files_url(self) -> str:
        return self.env["CLEARML_FILES_HOST"]

    @property
    def keys(self) -> tuple[str, str]:
        return self.env["CLEARML_API_ACCESS_KEY"], self.env["CLEARML_API_SECRET_KEY"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it does not exit; only this one process (by its pid)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)


def start_sim(
    workdir: Path,
    *,
    fleet: str | None = None,
    scenario: str | Path | None = None,
    latency_ms: float = 0,
    timeout: float = 300,
) -> Sim:
    """Start the simulator (free ports) and wait until it serves; its stderr goes to a log file in `workdir`."""
    args = [PYTHON, "-m", "bot", "sim", "--port", "0", "--files-port", "0"]
    if fleet:
        args += ["--fleet", fleet]
    elif scenario:
        args += ["--scenario", str(scenario)]
    if latency_ms:
        args += ["--latency-ms", str(latency_ms)]
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"sim-{int(time.time() * 1000)}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed by Sim.stop
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, env=clean_env(home=workdir), stdout=subprocess.PIPE, stderr=log,
                            text=True)
    env: dict[str, str] = {}
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            text = line.strip()
            if text.startswith("export CLEARML_"):
                name, _, value = text[len("export ") :].partition("=")
                env[name] = value
            if text.startswith("Press Ctrl-C"):
                ready.set()
        ready.set()  # EOF: the process ended

    threading.Thread(target=read, daemon=True, name="sim-stdout").start()
    if not ready.wait(timeout) or proc.poll() is not None or "CLEARML_API_HOST" not in env:
        stop_process(proc)
        log.close()
        raise BenchError(f"the simulator did not start: {log_path.read_text()[-2000:]}{''.join(lines)[-500:]}")
    return Sim(proc, env, log_path, time.perf_counter() - started, log)


@contextlib.contextmanager
def running_sim(workdir: Path, **kwargs: Any) -> Iterator[Sim]:
    sim = start_sim(workdir, **kwargs)
    try:
        yield sim
    finally:
        sim.stop()


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory removed afterwards (also on failure)."""
    import shutil

    path = Path(tempfile.mkdtemp(prefix=f"clearml-chatops-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return float(ordered[rank - 1])


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def sim_env(sim: Sim) -> dict[str, str]:
    """CLEARML_* variables for a child (the bot or the SDK) talking to `sim`."""
    return dict(sim.env)


# Calls and bytes the clearml SDK's requests sessions made (the SDK-based baselines count through this).
COUNTS = {"calls": 0, "bytes": 0}


def count_requests() -> None:
    """Count every HTTP request a `requests.Session` sends in this process into COUNTS."""
    import requests

    send = requests.Session.send

    def counting_send(self: requests.Session, request: Any, **kwargs: Any) -> Any:
        response = send(self, request, **kwargs)
        COUNTS["calls"] += 1
        COUNTS["bytes"] += len(response.content)
        return response

    requests.Session.send = counting_send  # type: ignore[method-assign]
