"""ClearML misbehaving, through the real client against the simulator: down at start, down mid-run, 5 s per call,
token expiry mid-run, results shifting between pages, an older server. The bot keeps serving, reports the fault
as a finding or a clear message, and recovers by itself."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import bot.sim.scenario as sim_scenario
from bot.clearml.client import ClearMLClient
from bot.config import Settings
from bot.engine.playbook import CheckEntry, Playbook, find_playbooks, load_playbook
from bot.engine.runner import RunResult, run_playbooks
from bot.engine.snapshot import Snapshot
from bot.sim.fleet import generate_fleet
from bot.sim.server import SimServer
from bot.slack.serve import BotServer
from tests.e2e.conftest import HttpBot, bot_env, sim_settings
from tests.fakes.slack_api import Call, FakeSlack
from tests.helpers import AfterFirstTasksPage, server_settings

REPO = Path(__file__).resolve().parents[2]
SimFactory = Callable[..., SimServer]


def playbook(*checks: str) -> Playbook:
    return Playbook(name="faults", checks=[CheckEntry(check=c) for c in checks])


def run(pb: Playbook, sim: SimServer, **kw: Any) -> RunResult:
    server = server_settings(sim, timeout_s=kw.pop("timeout_s", 5.0), retries=kw.pop("retries", 0))
    return asyncio.run(run_playbooks([pb], Settings(), server, **kw))


def bugs(result: RunResult) -> list[str]:
    """Error findings that come from the bot's own code (a Python exception), not from ClearML's answers."""
    markers = ("KeyError", "TypeError", "AttributeError", "ValueError", "IndexError", "(at ")
    return [f.detail for f in result.findings if f.severity == "error" and any(m in f.detail for m in markers)]


@pytest.fixture
def bot_factory(fake_slack: FakeSlack, tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Iterator[Any]:
    """`make(sim, **settings_updates)` -> an HttpBot serving HTTP in this process; stopped at teardown."""
    started: list[BotServer] = []

    def make(sim: SimServer, **updates: Any) -> HttpBot:
        settings = sim_settings(sim, fake_slack, tmp_path, clean_env).model_copy(update=updates)
        server = BotServer(settings, http=True, host="127.0.0.1", port=0, env=bot_env(fake_slack)).start()
        started.append(server)
        return HttpBot(server, fake_slack, sim, settings)

    yield make
    for server in started:
        server.stop()


def final_text(bot: HttpBot, n: int) -> str:
    """The text of the n-th command's final message (the placeholder replaced by chat.update)."""
    updates: list[Call] = bot.slack.wait_for("chat.update", count=n, timeout=30)
    return str(updates[n - 1].args.get("text")) + str(updates[n - 1].args.get("blocks"))


# -- down at start, and back -------------------------------------------------------------------------------------


def test_clearml_down_at_start_is_reported_and_the_bot_recovers_when_it_returns(
    sim_factory: SimFactory, bot_factory: Callable[..., HttpBot]
) -> None:
    sim = sim_factory("basic")
    api_port, files_port = (int(u.rsplit(":", 1)[1]) for u in (sim.api_url, sim.files_url))
    sim.stop()  # nothing listens there any more: connection refused
    bot = bot_factory(sim)  # the bot starts anyway: ClearML is not needed to serve

    resp, _ = bot.command("status")
    assert resp.status_code == 200
    text = final_text(bot, 1)
    assert "unreachable" in text and "connection refused" in text
    resp, _ = bot.command("run health")
    assert resp.status_code == 200
    text = final_text(bot, 2)
    assert "server.reachable" in text or "unreachable" in text.lower() or "refused" in text

    # ClearML comes back on the same address: the next command works, no restart of the bot
    sim_factory("basic", port=api_port, files_port=files_port)
    bot.command("status")
    text = final_text(bot, 3)
    assert "unreachable" not in text and "refused" not in text
    assert "basic" in text.lower() or "agents" in text.lower()


# -- a 500 with a traceback, an HTML page from a proxy ------------------------------------------------------------


def test_500_with_a_traceback_and_a_proxy_page_are_told_plainly_and_pass(
    sim_factory: SimFactory, bot_factory: Callable[..., HttpBot]
) -> None:
    sim = sim_factory("basic")
    bot = bot_factory(sim)
    sim.set_fault("workers.get_all", status=500, message="mongo timed out", traceback=True)
    bot.command("agents")
    text = final_text(bot, 1)
    assert "mongo timed out" in text and "500" in text
    assert "Traceback" not in text and "apiserver" not in text  # the server's stack stays on the server

    sim.clear_faults()
    sim.set_fault("workers.get_all", html=True, status=502)
    bot.command("agents")
    text = final_text(bot, 2)
    assert "502" in text and "proxy" in text and "<html" not in text

    sim.clear_faults()  # the proxy is fixed: the same command works, nothing to restart
    bot.command("agents")
    text = final_text(bot, 3)
    assert "failed" not in text.lower() and "gpu" in text.lower()


# -- down in the middle of a run -----------------------------------------------------------------------------------


def test_clearml_going_down_mid_run_ends_the_run_with_findings(sim_factory: SimFactory) -> None:
    sim = sim_factory("basic", latency_ms=150)
    pb = playbook("server.reachable", "server.credentials", "agents.stale", "agents.orphaned_tasks",
                  "queues.backlog", "queues.stuck_queued", "repro.failure_causes")
    out: list[RunResult] = []
    runner = threading.Thread(target=lambda: out.append(run(pb, sim)))
    runner.start()
    deadline = time.monotonic() + 10
    while not sim.calls_to("auth.login") and time.monotonic() < deadline:
        time.sleep(0.01)
    sim.stop()  # the server dies while the run's requests are in flight
    runner.join(timeout=30)
    assert out, "the run did not finish after ClearML went down"
    result = out[0]
    assert {c.id for c in result.checks} == {e.check for e in pb.checks}  # every check reported something
    assert result.exit_code == 1
    lost = [f for f in result.findings if f.severity in ("error", "critical")]
    assert lost and all("ClearML" in f.detail or "refused" in f.detail or "closed" in f.detail or
                        f.check.startswith("server.") for f in lost)
    assert not bugs(result)


# -- 5 s per call, with a run deadline ------------------------------------------------------------------------------


def test_five_seconds_per_call_hits_the_run_deadline_and_the_bot_keeps_serving(
    sim_factory: SimFactory, bot_factory: Callable[..., HttpBot]
) -> None:
    sim = sim_factory("basic", latency_ms=5000)
    bot = bot_factory(sim, run_deadline="1s")
    resp, _ = bot.command("run health")
    assert resp.status_code == 200  # acked at once, whatever ClearML's latency
    # while the run waits on ClearML, an instant command is answered in its ack
    resp, _ = bot.command("help")
    assert resp.status_code == 200 and "run <playbook>" in resp.text
    text = final_text(bot, 1)
    assert "run deadline" in text and "1s" in text  # the checks that did not finish are reported as timed out


# -- the session token expires mid-run --------------------------------------------------------------------------------


def test_token_expiring_mid_run_costs_exactly_one_relogin(sim_factory: SimFactory) -> None:
    sim = sim_factory("basic")
    sim.token_ttl_s = 600
    pb = playbook("server.credentials", "agents.stale", "agents.orphaned_tasks", "queues.backlog",
                  "queues.stuck_queued", "agents.unserved_queues")

    async def go() -> tuple[RunResult, RunResult]:
        server = server_settings(sim, timeout_s=5.0, retries=0)
        async with ClearMLClient(server) as client:
            first = await run_playbooks([pb], Settings(), server, snapshot=Snapshot(client, server, Settings()))
            # An hour passes on the server: the token the client holds (and believes fresh) has expired there, so
            # every concurrent request of the next run gets 401/30 at once.
            sim.clock.advance(3600)
            second = await run_playbooks([pb], Settings(), server, snapshot=Snapshot(client, server, Settings()))
            return first, second

    first, second = asyncio.run(go())
    assert len(sim.calls_to("auth.login")) == 2  # the first login, and one shared re-login for all the 401s
    assert [c.status for c in second.checks if c.status in ("error", "timeout")] == []
    assert [f.detail for f in first.findings + second.findings if f.severity == "error"] == []


# -- results shifting between pages ---------------------------------------------------------------------------------


def test_tasks_changing_status_mid_scan_are_neither_counted_twice_nor_lost(sim_factory: SimFactory) -> None:
    sim = sim_factory(generate_fleet(workers=20, queues=6, tasks=1300, seed=11))
    wanted = ["completed", "failed"]
    with sim.state.lock:
        docs = sorted((d for d in sim.state.tasks.values() if "hidden" not in (d.get("system_tags") or [])),
                      key=lambda d: d["id"])
    in_set = [d["id"] for d in docs if d["status"] in wanted]
    out_of_set = [d["id"] for d in docs if d["status"] not in wanted]
    assert len(in_set) > 600  # more than one page
    flip = in_set[:40]  # completed <-> failed: still wanted, with a new status
    leave = in_set[40:70]  # read on the first page, then leave the set: everything after them moves up
    enter = out_of_set[-20:]  # join the set late, far behind the first page
    staying = set(in_set) - set(leave)

    def change() -> None:
        with sim.state.lock:
            for task_id in flip:
                doc = sim.state.tasks[task_id]
                doc["status"] = "failed" if doc["status"] == "completed" else "completed"
            for task_id in leave:
                sim.state.tasks[task_id]["status"] = "stopped"
            for task_id in enter:
                sim.state.tasks[task_id]["status"] = "failed"

    async def scan() -> list[dict[str, Any]]:
        server = server_settings(sim, timeout_s=5.0)
        async with ClearMLClient(server, transport=AfterFirstTasksPage(change)) as client:
            return await client.get_all("tasks.get_all", {"status": wanted, "only_fields": ["id", "status"]},
                                        key="tasks")

    tasks = asyncio.run(scan())
    ids = [t["id"] for t in tasks]
    assert len(ids) == len(set(ids))  # none twice, though some changed status between pages
    assert staying <= set(ids)  # none lost, though the listing moved under the scan
    assert set(ids) <= set(in_set) | set(enter)
    assert len(sim.calls_to("tasks.get_all")) >= 2


# -- an older server -------------------------------------------------------------------------------------------------


def _old_server_scenario(api_version: str, version: str) -> dict[str, Any]:
    data = sim_scenario.load_scenario_data("incident-zoo")  # includes merged
    data.setdefault("server", {}).update({"api_version": api_version, "version": version})
    return data


def test_an_older_server_is_reported_and_every_check_still_runs(sim_factory: SimFactory) -> None:
    sim = sim_factory(_old_server_scenario("2.20", "1.9.2"))
    # An endpoint this server version lacks answers as clearml-server does: 404/0 "Unable to find endpoint".
    sim.set_fault("queues.get_queue_metrics", status=404,
                  message="Unable to find endpoint for name queues.get_queue_metrics and version 2.31")
    playbooks = [load_playbook(p) for p in find_playbooks(REPO / "playbooks")]
    settings = Settings(storage=[sim.files_url + "/probes/"])
    server = server_settings(sim, timeout_s=5.0, retries=0)
    result = asyncio.run(run_playbooks(playbooks, settings, server, trigger="cli"))
    assert not bugs(result), bugs(result)
    version = [f for f in result.findings if f.check == "server.version"]
    assert version and version[0].severity == "warning" and "1.9.2" in version[0].title + version[0].detail
    assert version[0].remediation
    missing = [f for f in result.findings if "Unable to find endpoint" in f.detail]
    assert all(f.severity == "error" for f in missing)
    # The rest of the fleet is still diagnosed against the old server.
    assert {"agents.stale", "agents.orphaned_tasks", "queues.backlog"} <= {
        f.check for f in result.findings if f.severity in ("warning", "critical")}


def test_a_server_before_scroll_is_paged_instead(sim_factory: SimFactory) -> None:
    sim = sim_factory(_old_server_scenario("2.14", "1.0.2"))

    async def listing() -> list[dict[str, Any]]:
        server = server_settings(sim, timeout_s=5.0)
        async with ClearMLClient(server) as client:
            await client.login()
            return await client.get_all("tasks.get_all", {"only_fields": ["id"]}, key="tasks", strategy="scroll")

    tasks = asyncio.run(listing())
    calls = sim.calls_to("tasks.get_all")
    assert tasks and all("scroll_id" not in c and "size" not in c for c in calls)
    assert all("page" in c for c in calls)
