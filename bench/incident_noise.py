"""The incident zoo as the channel sees it (issue #13, the incident side): the scheduler's runner with the shipped
health, agents, queues and storage playbooks, the incident pipeline, the outbox and the fake Slack, for 15 rounds
while the simulator's clock moves a minute per round (the dead spot agent is dropped by the server on the way).

Prints root messages, thread replies after each thread's opening one, those replies that report an evidence change
(" → " or "silent"), RESOLVED roots, and in how many incidents the spot agent's orphaned task appears. Not part of
`python -m bench`; for a before/after, run it in two checkouts (copy this file into the other one):

    .venv/bin/python -m bench.incident_noise .
    cd /path/to/other && PYTHONPATH=. /path/to/.venv/bin/python -m bench.incident_noise .
A second argument (anything) prints each thread reply.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from pydantic import SecretStr
from slack_sdk import WebClient

from bot.config import ServerSettings, Settings
from bot.engine.playbook import load_playbook
from bot.incidents.pipeline import IncidentPipeline
from bot.schedule import Scheduler, playbook_runner
from bot.sim.server import SimServer
from bot.slack.delivery import Outbox, WebClientSender
from bot.store import Store
from tests.fakes.slack_history import HistoryFakeSlack

CHANNEL = "C0MLALERTS"
ORPHAN = "eval-detector-nightly"


def main(repo: Path, verbose: bool) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp())
    playbooks = [load_playbook(repo / "playbooks" / f"{n}.yaml") for n in ("health", "agents", "queues", "storage")]
    with HistoryFakeSlack() as slack, SimServer(scenario="incident-zoo") as sim:
        slack.add_channel("ml-alerts", channel_id=CHANNEL)
        key, secret = sim.keys[0]
        server = ServerSettings(name="sim", api_url=sim.api_url, web_url=sim.web_url, files_url=sim.files_url,
                                access_key=SecretStr(key), secret_key=SecretStr(secret))
        settings = Settings.model_validate({"slack": {"default_channel": "#ml-alerts"}, "storage": [sim.files_url]})
        store = Store(tmp / "store.db")
        box = Outbox(store)
        pipe = IncidentPipeline(store, outbox=box, settings=settings, playbooks=playbooks)
        sched = Scheduler(store, playbooks, run_playbook=playbook_runner(settings, store, pipe, server=server))
        sender = WebClientSender(WebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[]))
        for _ in range(15):
            for job in sched.jobs:
                sched.run_job(job)
            box.drain(sender, max_sends=5000)
            sim.clock.advance(60)
        messages = slack.channel_messages(CHANNEL)
        roots = [m for m in messages if not m.get("thread_ts")]
        replies = [m for m in messages if m.get("thread_ts")]
        first: dict[str, dict[str, object]] = {}
        for m in replies:
            first.setdefault(str(m["thread_ts"]), m)
        later = [m for m in replies if first[str(m["thread_ts"])] is not m]
        if verbose:
            for m in later:
                print("REPLY", str(m["text"])[:160].replace("\n", " | "))
        holding = store.db.execute(
            "SELECT count(DISTINCT incident_id) FROM incident_members WHERE subject_name = ?", (ORPHAN,)
        ).fetchone()[0]
        store.close()
    return {
        "roots": len(roots),
        "thread_replies_after_open": len(later),
        "replies_with_changes": sum(1 for m in later if any(w in str(m["text"]) for w in ("silent", "→"))),
        "resolved_roots": sum(1 for m in roots if str(m["text"]).startswith("✅")),
        "incidents_holding_the_spot_orphan": holding,
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), len(sys.argv) > 2), indent=1))
