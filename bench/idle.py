"""Benchmark 5: what `serve` costs while nothing happens.

Two `clearml-chatops serve --http` processes run side by side for the same window (60 s; 15 s with --quick)
against the same simulator and fake Slack (each in a process of its own): ours with 20 scheduled playbooks (cron
schedules whose next fire time is hours away, so nothing runs), the baseline with the same 20 playbooks and no
schedule. Both are sampled every second (psutil): CPU seconds used in the window and resident memory.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import running_sim
from bench.report import Row
from bench.serving import fake_slack, sample_process, serve, write_config

SCHEDULES = 20


def write_playbooks(directory: Path, *, scheduled: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    health = (Path(__file__).resolve().parent.parent / "playbooks" / "health.yaml").read_text()
    body = "\n".join(line for line in health.splitlines() if not line.startswith(("schedule:", "name:")))
    hour = (datetime.now(UTC).hour + 12) % 24  # far from now: no run fires during the window
    for i in range(SCHEDULES):
        schedule = f'schedule: "{i % 60} {hour} * * *"\n' if scheduled else ""
        (directory / f"health-{i:02d}.yaml").write_text(f"name: health-{i:02d}\n{schedule}{body}\n")
    return directory


def run(workdir: Path, *, quick: bool) -> tuple[dict[str, Any], list[Row]]:
    window = 15.0 if quick else 60.0
    ours_dir = write_playbooks(workdir / "idle-scheduled", scheduled=True)
    base_dir = write_playbooks(workdir / "idle-unscheduled", scheduled=False)
    samples: dict[str, list[tuple[float, float, float]]] = {"ours": [], "baseline": []}
    with running_sim(workdir / "sim-idle", scenario="basic") as sim, fake_slack(workdir) as slack:
        ours_cfg = write_config(workdir, sim, slack.base_url, ours_dir, name="idle-ours")
        base_cfg = write_config(workdir, sim, slack.base_url, base_dir, name="idle-base")
        with serve(workdir, sim, ours_cfg, name="idle-ours", log_level="INFO") as ours, serve(
                workdir, sim, base_cfg, name="idle-base", log_level="INFO") as base:
            time.sleep(3.0)  # let start-up work (store schema, first health probe) finish before the window
            stop = threading.Event()
            threads = [threading.Thread(target=sample_process, args=(p.proc.pid, stop, 1.0, samples[k]), daemon=True)
                       for k, p in (("ours", ours), ("baseline", base))]
            for t in threads:
                t.start()
            time.sleep(window)
            stop.set()
            for t in threads:
                t.join(timeout=5)
            log_ours = ours.log_path.read_text()
    detail: dict[str, Any] = {"window_s": window, "schedules": SCHEDULES}
    for key, series in samples.items():
        elapsed = series[-1][0] - series[0][0]
        cpu = series[-1][1] - series[0][1]
        detail[key] = {"cpu_s": cpu, "cpu_percent_of_a_core": 100 * cpu / elapsed, "rss_mb_end": series[-1][2],
                       "rss_mb_max": max(s[2] for s in series), "samples": len(series)}
    # serve logs "scheduled jobs: <id> (<schedule>), ..." at start: count ours, and check that none ran
    jobs_line = next((line for line in log_ours.splitlines() if "scheduled jobs:" in line), "")
    detail["ours_scheduled_playbooks"] = jobs_line.count("health-")
    detail["ours_runs_in_window"] = log_ours.count('Running job "health-')
    o, b = detail["ours"], detail["baseline"]
    name = f"5 idle serve {window:g} s"
    rows = [
        Row(name, f"CPU, {SCHEDULES} schedules (% of one core)", o["cpu_percent_of_a_core"],
            b["cpu_percent_of_a_core"], "no schedules", "%"),
        Row(name, f"RSS, {SCHEDULES} schedules", o["rss_mb_max"], b["rss_mb_max"], "no schedules", "MB"),
    ]
    return detail, rows
