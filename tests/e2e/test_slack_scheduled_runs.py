"""A scheduled run under `serve` is the same run as the demo's (bot/schedule.playbook_runner), and `/clearml run` is
the same run too: both read the store's history. Here agents.missing with its learned baseline (`expected: auto`):
after a week of the usual fleet, a pool that is gone is posted to Slack as an incident ("usually 6"), and the typed
run says so too. Without the history the check stays silent.

`serve --http` in process against the simulator and the fake Slack; the test runs the scheduled job itself."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_slack_incidents import CHANNEL, in_process, roots, write_config
from tests.helpers import alerts_slack, services, wait_until
from tests.integration.test_signal_baseline import mixed_fleet, without

PLAYBOOK = """
name: pools
description: Are the usual agent pools there (learned from the store's history)?
schedule: "0 0 1 1 *"
checks:
  - check: agents.missing
    params: {expected: auto}
"""


def a_week_of_the_last_pools(store_path: Path) -> None:
    """Copy the pools the last run recorded back over the last week, one run an hour (on a connection of the
    test's own: the bot's is not for other threads)."""
    with sqlite3.connect(store_path, timeout=10) as db:
        server_url, pools = db.execute("SELECT server_url, pools FROM fleet_pools ORDER BY at DESC LIMIT 1").fetchone()
        now = datetime.now(UTC)
        db.executemany("INSERT INTO fleet_pools (run_id, at, server_url, pools) VALUES (?, ?, ?, ?)",
                       [(100000 + i, (now - timedelta(hours=i)).isoformat(timespec="microseconds"), server_url, pools)
                        for i in range(1, 169)])


def test_a_scheduled_run_under_serve_reports_the_pool_that_is_gone(
    sim_factory: Any, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    fleet = mixed_fleet()
    sim = sim_factory(scenario=fleet)
    with alerts_slack(CHANNEL) as slack, in_process(
            write_config(tmp_path, sim, slack, {"pools": PLAYBOOK}), sim, slack, clean_env) as bot:
        s = services(bot)
        assert s.scheduler is not None and s.outbox.durable is not None
        assert s.scheduler.run_job("playbook:pools", "test") == "ok"  # the fleet as usual: recorded
        a_week_of_the_last_pools(bot.settings.store_path)
        assert s.scheduler.run_job("playbook:pools", "test") == "ok"
        wait_until(lambda: s.outbox.durable.depth() == 0, what="the outbox drained")
        assert not [m for m in roots(slack) if "runner-" in str(m.get("text"))]  # nothing missing yet

        broken = without(fleet, "runner-")  # the runner-* pool is gone while work waits in the queue it served
        runner_queues = {q for w in fleet["workers"] if w["id"].startswith("runner-") for q in w["queues"]}
        queue = next(q for q in broken["queues"] if q["id"] in runner_queues)
        queue["entries"] = [{"task": broken["tasks"][-1]["id"], "added": -600}]
        broken["tasks"][-1].update(status="queued", execution={"queue": queue["id"]})
        sim.load_scenario(broken)
        s.reads.clear()  # the shared read window would answer with the fleet of a moment ago
        assert s.scheduler.run_job("playbook:pools", "test") == "ok"

        def posted() -> list[dict[str, Any]]:
            return [m for m in roots(slack) if "runner-" in str(m.get("text"))]

        [root] = wait_until(posted, what="the missing pool posted as an incident")
        shown = str(root["text"]) + json.dumps(root.get("blocks") or [], ensure_ascii=False)
        assert "usually 6" in shown and "runner-*" in shown

        # typed in Slack, the same playbook reads the same history (on the work pool's I/O threads)
        bot.command("run pools")
        answer = slack.wait_for("chat.update", predicate=lambda c: "pools on prod" in str(c.args.get("text")))[0]
        assert "usually 6" in json.dumps(answer.args, ensure_ascii=False)

