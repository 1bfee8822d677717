"""Benchmark 2: failed-task detection, against ClearML's own alerting service approach.

1. The simulator serves fleet S (200 workers, 50 queues, 20k tasks). Acting as agents, this process starts 1,000
   of its draft tasks (`tasks.started`) and gives each a console log whose tail names a cause.
2. The baseline (bench.workers.slack_alerts: the SDK's `Monitor` with `slack_alerts.py`'s query) polls once.
3. The burst: the agents fail all 1,000 tasks (`tasks.failed`, concurrently), well within one 10 s poll interval.
4. The baseline polls again 10 s after its first poll, and once more 10 s later (what it missed stays missed: the
   next query starts after its previous poll).
5. The bot runs `repro.failure_causes` over the same window (from the baseline's first poll to now), twice: with
   the shipped playbook's parameters (`max_tasks: 200`), and with `max_tasks: 1000`.

Counted: failures each side reports, API calls and bytes received per poll (per run for the bot).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.common import PYTHON, REPO, RESULT_PREFIX, BenchError, clean_env, run_child, running_sim, stop_process
from bench.report import Row

FLEET = "workers=200,queues=50,tasks=20000"
BURST = 1000
POLL_INTERVAL_S = 10.0  # slack_alerts.py --refresh_rate default
LOG_TAILS = [  # (weight, lines): what the failed runs printed last
    (4, ["Traceback (most recent call last):", '  File "train.py", line 3, in <module>',
         "ModuleNotFoundError: No module named 'timm'"]),
    (3, ["Epoch 3/90", "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"]),
    (2, ["Traceback (most recent call last):", '  File "train.py", line 88, in step',
         "ZeroDivisionError: division by zero"]),
    (1, ["Epoch 1/90", "loss=0.693"]),
]


class Agents:
    """A plain HTTP client of the simulator's API acting as the fleet's agents."""

    def __init__(self, api_url: str, key: str, secret: str) -> None:
        self.api = api_url.rstrip("/")
        self.http = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=16))
        token = self.http.post(f"{self.api}/auth.login", auth=(key, secret)).json()["data"]["token"]
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"{self.api}/{endpoint}", json=payload)
        body = response.json()
        if response.status_code != 200:
            raise BenchError(f"{endpoint}: {body.get('meta', {}).get('result_msg')}")
        data: dict[str, Any] = body.get("data") or {}
        return data

    def drafts(self, n: int) -> list[str]:
        ids: list[str] = []
        page = 0
        while len(ids) < n:
            got = self.call("tasks.get_all", {"status": ["created"], "only_fields": ["id"], "order_by": ["id"],
                                              "page": page, "page_size": 500})["tasks"]
            ids += [t["id"] for t in got]
            if len(got) < 500:
                break
            page += 1
        if len(ids) < n:
            raise BenchError(f"the fleet has only {len(ids)} draft tasks, {n} needed")
        return ids[:n]

    def each(self, endpoint: str, ids: list[str], extra: dict[str, Any] | None = None) -> None:
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda tid: self.call(endpoint, {"task": tid, **(extra or {})}), ids))

    def logs(self, ids: list[str]) -> dict[str, int]:
        plan = [lines for weight, lines in LOG_TAILS for _ in range(weight)]
        events, kinds = [], {}
        now_ms = int(time.time() * 1000)
        for n, tid in enumerate(ids):
            lines = plan[n % len(plan)]
            kinds[lines[-1][:40]] = kinds.get(lines[-1][:40], 0) + 1
            events += [{"task": tid, "type": "log", "timestamp": now_ms + i, "msg": msg, "level": "info"}
                       for i, msg in enumerate(lines)]
        for start in range(0, len(events), 2000):
            body = "\n".join(json.dumps(e) for e in events[start : start + 2000])
            response = self.http.post(f"{self.api}/events.add_batch", content=body.encode())
            if response.status_code != 200:
                raise BenchError(f"events.add_batch: HTTP {response.status_code}")
        return kinds

    def close(self) -> None:
        self.http.close()


def write_playbook(path: Path, window_s: int, max_tasks: int) -> Path:
    path.write_text(
        "name: failures\nchecks:\n"
        "  - check: repro.failure_causes\n"
        f"    params: {{window: {window_s}s, lines: 200, max_tasks: {max_tasks}, include_non_responsive: true}}\n"
    )
    return path


def reported(findings: list[dict[str, Any]]) -> int:
    """Failed tasks the bot's findings account for: the sum of every finding's task count."""
    return sum(int(f["evidence"].get("count") or 0) for f in findings if f["check"] == "repro.failure_causes")


def run(workdir: Path, *, quick: bool) -> tuple[dict[str, Any], list[Row]]:
    with running_sim(workdir / "sim-failures", fleet=FLEET) as sim:
        env = clean_env(sim.env, home=workdir)
        agents = Agents(sim.api_url, *sim.keys)
        try:
            ids = agents.drafts(BURST)
            agents.each("tasks.started", ids)
            kinds = agents.logs(ids)
            # ours on a quiet interval (nothing failed yet): what a poll costs when there is nothing to report
            quiet_pb = write_playbook(workdir / "failures-quiet.yaml", int(POLL_INTERVAL_S), 200)
            quiet = run_child("bench.workers.bot_run", ["--playbook", str(quiet_pb)], env)
            monitor = subprocess.Popen([PYTHON, "-m", "bench.workers.slack_alerts"], cwd=REPO, env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       text=True)
            try:
                polls = [_poll(monitor)]
                burst_started = time.time()
                agents.each("tasks.failed", ids, {"status_reason": "worker execution exit code 1"})
                burst_s = time.time() - burst_started
                for _ in range(2):
                    time.sleep(max(0.0, polls[-1]["at"] + POLL_INTERVAL_S - time.time()))
                    polls.append(_poll(monitor))
                assert monitor.stdin is not None
                out, _ = monitor.communicate("quit\n", timeout=120)
            finally:
                stop_process(monitor)
            lines = [line for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
            if not lines:
                raise BenchError("the slack_alerts baseline printed no result")
            theirs = json.loads(lines[-1][len(RESULT_PREFIX) :])
            ours = {}
            for max_tasks in (200, BURST):
                # the window: from the baseline's first poll to now (+2 s for the Date header's whole seconds)
                window = math.ceil(time.time() - polls[0]["at"]) + 2
                pb = write_playbook(workdir / f"failures-{max_tasks}.yaml", window, max_tasks)
                findings_file = workdir / f"failures-{max_tasks}.json"
                result = run_child("bench.workers.bot_run", ["--playbook", str(pb), "--findings-out",
                                                             str(findings_file)], env)
                findings = json.loads(findings_file.read_text())
                result["reported"] = reported(findings)
                result["window_s"] = window
                result["findings"] = [{"title": f["title"], "severity": f["severity"],
                                       "count": f["evidence"].get("count")} for f in findings]
                ours[f"max_tasks_{max_tasks}"] = result
        finally:
            agents.close()

    alerted = len(theirs["alerted"])
    detail = {
        "fleet": FLEET,
        "burst": BURST,
        "burst_s": burst_s,
        "log_tails": kinds,
        "theirs": {"polls": polls, "alerted": alerted},
        "ours": ours,
        "ours_quiet": {k: quiet[k] for k in ("api_calls", "bytes_received", "calls_by_endpoint", "wall_s")},
    }
    busy = polls[1]
    rows = [
        Row("2 failures", f"failures reported of {BURST} (shipped params)", ours["max_tasks_200"]["reported"],
            alerted, "slack_alerts.py", "", target=f"= {BURST}", met=ours["max_tasks_200"]["reported"] == BURST),
        Row("2 failures", "API calls per poll (shipped params)", ours["max_tasks_200"]["api_calls"],
            busy["api_calls"], "slack_alerts.py", ""),
        Row("2 failures", "MB received per poll (shipped params)", ours["max_tasks_200"]["bytes_received"] / 1e6,
            busy["bytes_received"] / 1e6, "slack_alerts.py", "MB"),
        Row("2 failures", f"failures classified by cause of {BURST} (max_tasks {BURST})",
            ours[f"max_tasks_{BURST}"]["reported"], alerted, "slack_alerts.py", ""),
        Row("2 failures", f"API calls per poll (max_tasks {BURST})", ours[f"max_tasks_{BURST}"]["api_calls"],
            busy["api_calls"], "slack_alerts.py", ""),
        Row("2 failures", f"MB received per poll (max_tasks {BURST})",
            ours[f"max_tasks_{BURST}"]["bytes_received"] / 1e6, busy["bytes_received"] / 1e6, "slack_alerts.py",
            "MB"),
        Row("2 failures", "API calls per failure reported (shipped params)",
            ours["max_tasks_200"]["api_calls"] / max(1, ours["max_tasks_200"]["reported"]),
            busy["api_calls"] / max(1, alerted), "slack_alerts.py", ""),
        Row("2 failures", "API calls of a poll with nothing to report", quiet["api_calls"], polls[0]["api_calls"],
            "slack_alerts.py", ""),
        Row("2 failures", "failures reported by the next poll", None, polls[2]["alerts"], "slack_alerts.py", ""),
    ]
    return detail, rows


def _poll(monitor: subprocess.Popen[str]) -> dict[str, Any]:
    assert monitor.stdin is not None and monitor.stdout is not None
    monitor.stdin.write("poll\n")
    monitor.stdin.flush()
    for line in monitor.stdout:
        if line.startswith("POLL "):
            result: dict[str, Any] = json.loads(line[len("POLL ") :])
            return result
    raise BenchError("the slack_alerts baseline ended before answering a poll")
