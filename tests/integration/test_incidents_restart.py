"""Restarts: new processes (killed with SIGKILL) and new Store objects over the same file.

Never a second incident for the same open fingerprint, never a second root message, and nothing lost: an
incident and the messages it causes commit together, and a message Slack took just before the kill is found
(by its dedupe key in the message metadata) instead of being posted again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.config import Settings
from bot.incidents.pipeline import IncidentPipeline
from bot.slack.delivery import Outbox, WebClientSender
from bot.store import Store
from tests.fakes.slack_history import HistoryFakeSlack
from tests.unit._incidents_support import at, dead_worker, orphaned_task, run

REPO = Path(__file__).resolve().parents[2]
SETTINGS = Settings.model_validate({"slack": {"default_channel": "#ml-alerts"}})


@pytest.fixture
def slack() -> Iterator[HistoryFakeSlack]:
    with HistoryFakeSlack() as fake:
        fake.add_channel("ml-alerts", channel_id="C0MLALERTS")
        yield fake


def sender(slack: HistoryFakeSlack) -> WebClientSender:
    return WebClientSender(WebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[]))  # type: ignore[arg-type]


def child(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (the repository importable), as `serve` would run it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def roots(slack: HistoryFakeSlack) -> list[dict[str, object]]:
    return [m for m in slack.channel_messages("C0MLALERTS") if not m.get("thread_ts")]


def test_killed_between_slack_accepting_the_root_and_recording_it(tmp_path: Path, slack: HistoryFakeSlack) -> None:
    db = tmp_path / "store.db"
    store = Store(db)
    IncidentPipeline(store, outbox=Outbox(store), settings=SETTINGS).handle_run(
        run(dead_worker(), orphaned_task(), started=at(0)), at(0))
    store.close()

    # A bot process drains the outbox and is killed right after Slack answered the root's chat.postMessage.
    proc = child(f"""
        import os, signal
        from datetime import datetime
        from slack_sdk import WebClient
        from bot.slack.delivery import Outbox, WebClientSender
        from bot.store import Store

        store = Store({str(db)!r})
        real = WebClientSender(WebClient(token={slack.bot_token!r}, base_url={slack.base_url!r}, retry_handlers=[]))

        def dying(message):
            real(message)
            os.kill(os.getpid(), signal.SIGKILL)

        Outbox(store).drain(dying, datetime.fromisoformat({at(0).isoformat()!r}))
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(roots(slack)) == 1

    # The restarted bot: finds the root on Slack instead of posting it again, then threads the reply under it.
    store = Store(db)
    box = Outbox(store)
    assert box.get("incident:1:root")["uncertain"] == 1  # type: ignore[index]
    report = box.drain(sender(slack), at(1))
    assert report.reconciled == 1 and report.pending == 0
    (root,) = roots(slack)
    assert box.get("incident:1:root")["ts"] == root["ts"]  # type: ignore[index]
    thread = [m for m in slack.channel_messages("C0MLALERTS") if m.get("thread_ts") == root["ts"]]
    assert len(thread) == 1 and str(thread[0]["text"]).startswith("Opened")

    # The next runs (yet another Store object) update and resolve the same incident in the same thread.
    store.close()
    store = Store(db)
    box = Outbox(store)
    pipe = IncidentPipeline(store, outbox=box, settings=SETTINGS)
    notes = pipe.handle_run(run(dead_worker(), orphaned_task(), started=at(2)), at(2))
    assert [(n.kind, n.incident.id) for n in notes] == [("update", 1)]
    notes = pipe.handle_run(run(started=at(3)), at(3))
    assert [(n.kind, n.incident.id) for n in notes] == [("resolve", 1)]
    box.drain(sender(slack), at(3))
    (root,) = roots(slack)
    assert str(root["text"]).startswith("✅ [RESOLVED]")
    assert len(pipe.tracker.list_incidents("all")) == 1
    store.close()


def test_killed_in_the_middle_of_handling_a_run(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    # The process dies after the tracker wrote the incident but before its message was queued.
    proc = child(f"""
        import os, signal
        from datetime import datetime
        from bot.config import Settings
        from bot.incidents.pipeline import IncidentPipeline, TextRenderer
        from bot.slack.delivery import Outbox
        from bot.store import Store
        from tests.unit._incidents_support import dead_worker, run

        class Dies(TextRenderer):
            def root(self, incident, now):
                os.kill(os.getpid(), signal.SIGKILL)

        store = Store({str(db)!r})
        settings = Settings.model_validate({{"slack": {{"default_channel": "#ml-alerts"}}}})
        now = datetime.fromisoformat({at(0).isoformat()!r})
        IncidentPipeline(store, outbox=Outbox(store), renderer=Dies(), settings=settings).handle_run(
            run(dead_worker(), started=now), now)
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = Store(db)
    pipe = IncidentPipeline(store, outbox=Outbox(store), settings=SETTINGS)
    # All or nothing: no incident that believes it was announced without a message to announce it.
    assert pipe.tracker.list_incidents("all") == []
    notes = pipe.handle_run(run(dead_worker(), started=at(1)), at(1))
    assert [n.kind for n in notes] == ["open"]
    keys = [r[0] for r in store.db.execute("SELECT key FROM outbox ORDER BY id").fetchall()]
    assert keys == ["incident:1:root", "incident:1:1:reply"]
    store.close()


def test_a_bot_restarted_mid_incident_opens_nothing_new(tmp_path: Path, slack: HistoryFakeSlack) -> None:
    db = tmp_path / "store.db"
    for minute in range(4):  # four "processes", one run each
        store = Store(db)
        box = Outbox(store)
        IncidentPipeline(store, outbox=box, settings=SETTINGS).handle_run(
            run(dead_worker(age_s=600 + 60 * minute), started=at(minute)), at(minute))
        box.drain(sender(slack), at(minute))
        store.close()
    store = Store(db)
    incidents = IncidentPipeline(store, outbox=Outbox(store)).tracker.list_incidents("all")
    assert len(incidents) == 1 and incidents[0].count == 4
    assert len(roots(slack)) == 1
    assert len(slack.calls_to("chat.update")) == 3
    store.close()


def test_incident_zoo_on_schedule_with_a_restart_in_the_middle(tmp_path: Path, slack: HistoryFakeSlack) -> None:
    """The simulator's incident-zoo through the scheduler's jobs, the real checks, the pipeline and the outbox:
    one thread per problem, updated in place, nothing new after a restart, all resolved once the faults are
    cleared, and a digest that says so."""
    from pydantic import SecretStr

    from bot.config import ServerSettings
    from bot.engine.playbook import load_playbook
    from bot.schedule import Scheduler, playbook_runner
    from bot.sim.server import SimServer

    db = tmp_path / "store.db"
    playbooks = [load_playbook(REPO / "playbooks" / f"{name}.yaml") for name in ("health", "agents", "queues")]

    def bot(sim: SimServer) -> tuple[Store, Outbox, IncidentPipeline, Scheduler]:
        """What `serve` builds at start."""
        key, secret = sim.keys[0]
        server = ServerSettings(name="sim", api_url=sim.api_url, web_url=sim.web_url, files_url=sim.files_url,
                                access_key=SecretStr(key), secret_key=SecretStr(secret))
        settings = SETTINGS.model_copy(update={"storage": [sim.files_url]})
        store = Store(db)
        box = Outbox(store)
        pipe = IncidentPipeline(store, outbox=box, settings=settings, playbooks=playbooks)
        sched = Scheduler(store, playbooks, run_playbook=playbook_runner(settings, store, pipe, server=server),
                          run_digest=lambda trigger: pipe.post_digest(), digest=None)
        return store, box, pipe, sched

    def tick(sched: Scheduler, box: Outbox) -> None:
        for job_id in sched.jobs:
            assert sched.run_job(job_id) == "ok"
        box.drain(sender(slack), max_sends=1000)

    with SimServer(scenario="incident-zoo") as sim:
        store, box, pipe, sched = bot(sim)
        tick(sched, box)
        opened = {i.id for i in pipe.tracker.list_incidents()}
        assert opened and len(roots(slack)) == len(opened)
        worker = next(i for i in pipe.tracker.list_incidents()
                      if i.anchor.kind == "worker" and {m.check for m in i.consequences} >= {
                          "agents.orphaned_tasks", "agents.unserved_queues"})
        assert worker.cause is not None and worker.cause.check == "agents.stale"
        tick(sched, box)
        store.close()  # the bot is restarted here

        store, box, pipe, sched = bot(sim)
        tick(sched, box)
        assert {i.id for i in pipe.tracker.list_incidents()} == opened
        assert len(roots(slack)) == len(opened)

        sim.load_scenario("healthy")  # the faults are cleared
        tick(sched, box)
        # the zoo's agents are not in the healthy fleet: gone from the server is not recovered (#13), so their
        # incidents stay open as gone, and a person resolves them; everything else resolved by itself
        left = pipe.tracker.list_incidents("open")
        assert left and all(v.firing and all(m.gone for m in v.firing) for v in left)
        assert {m.subject.kind for v in left for m in v.gone} == {"worker"}
        for v in left:
            pipe.resolve(v.id, "U0ALICE")
        assert pipe.tracker.list_incidents("open") == []
        digest = pipe.post_digest(channel="#ml-alerts")
        box.drain(sender(slack))
        store.close()

    assert len(digest.resolved) + digest.more["resolved"] == len(opened) and digest.state == "ok"
    assert len(roots(slack)) == len(opened) + 1  # one root per incident, and the digest
    for message in roots(slack)[:-1]:
        assert str(message["text"]).startswith("✅ [RESOLVED]")
    assert "All clear" in str(roots(slack)[-1]["text"])
