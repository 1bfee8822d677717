"""Baseline of benchmark 2: ClearML's own alerting service approach, reproduced.

ClearML ships `examples/services/monitoring/slack_alerts.py`: a `SlackMonitor` subclass of the SDK's
`clearml.automation.monitor.Monitor`. Every `refresh_rate` seconds (10 by default) `Monitor.monitor_step` calls
`Task.get_tasks(task_filter={"page": 0, "page_size": 100, "status_changed": [">" + previous poll time],
"status": ["failed"], "order_by": ["-last_update"], "system_tags": ["-archived", "-development"]})` and, for
each task returned, `process_task` reads the last 3 console reports (`get_reported_console_output(3)`), the
task's web page and project name, and posts one Slack message.

Here the SDK's real `Monitor` class does the polling (its `monitor_step`, unchanged), with the example's query
parameters and per-task work; only the Slack post is replaced by counting the message (the benchmark measures
the ClearML side). The orchestrator drives the polls through stdin ("poll" -> one `monitor_step`), so that it can
replay the burst between two polls; each poll prints a POLL line with the calls, bytes and alerts of that poll.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from bench.common import COUNTS, count_requests, emit, peak_rss_mb


def main() -> None:
    count_requests()
    from clearml import Task
    from clearml.automation.monitor import Monitor

    class AlertsMonitor(Monitor):  # type: ignore[misc]
        """The example's SlackMonitor, minus the Slack client: same query, same per-task reads."""

        def __init__(self) -> None:
            super().__init__()
            self.status_alerts = ["failed"]
            self.include_manual_experiments = False
            self.min_num_iterations = 0
            self.alerted: list[str] = []

        def get_query_parameters(self) -> dict[str, Any]:
            filter_tags = ["-archived"] + (["-development"] if not self.include_manual_experiments else [])
            return {"status": self.status_alerts, "order_by": ["-last_update"], "system_tags": filter_tags}

        def process_task(self, task: Task) -> None:
            if self.min_num_iterations and task.get_last_iteration() < self.min_num_iterations:
                return
            console = task.get_reported_console_output(number_of_reports=3)
            message = (
                f"Experiment ID <{task.get_output_log_web_page()}|{task.id}> *{task.status}*\n"
                f"Project: *{task.get_project_name()}*  -  Name: *{task.name}*\n"
                "```\n" + ("\n".join(console))[-2048:] + "\n```"
            )
            self.alerted.append(task.id)
            self.last_message = message  # the post to Slack the example makes here is not part of the benchmark

    monitor = AlertsMonitor()
    polls: list[dict[str, Any]] = []
    for line in sys.stdin:
        command = line.strip()
        if command != "poll":
            break
        calls, nbytes, alerted = COUNTS["calls"], COUNTS["bytes"], len(monitor.alerted)
        at = time.time()
        started = time.perf_counter()
        monitor.monitor_step()
        poll = {
            "at": at,
            "wall_s": time.perf_counter() - started,
            "api_calls": COUNTS["calls"] - calls,
            "bytes_received": COUNTS["bytes"] - nbytes,
            "alerts": len(monitor.alerted) - alerted,
        }
        polls.append(poll)
        print("POLL " + json.dumps(poll), flush=True)
    emit({"polls": polls, "alerted": sorted(set(monitor.alerted)), "peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
