"""The ClearML client against the ClearML API simulator (real HTTP on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from bot.clearml.client import ClearMLClient
from bot.clearml.errors import (
    CredentialsError,
    NotFoundError,
    ServerUnavailableError,
    StatusTransitionError,
)
from bot.config import ServerSettings
from bot.sim.fleet import generate_fleet
from bot.sim.server import SimServer
from tests.helpers import AfterFirstTasksPage, server_settings

T = TypeVar("T")


def settings_for(sim: Any, **kw: Any) -> ServerSettings:
    return server_settings(sim, **{"timeout_s": 5.0, "retries": 2, **kw})


def with_client(sim: Any, body: Callable[[ClearMLClient], Awaitable[T]], **kw: Any) -> T:
    async def go() -> T:
        async with ClearMLClient(settings_for(sim), retry_base_s=0.01, **kw) as cl:
            return await body(cl)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def basic() -> Iterator[Any]:
    with SimServer("basic") as sim:
        yield sim


@pytest.fixture
def sim(basic: Any) -> Iterator[Any]:
    basic.clear_faults()
    basic.reset_calls()
    yield basic
    basic.clear_faults()


def test_login_and_fleet_listing(sim: Any) -> None:
    async def body(cl: ClearMLClient) -> dict[str, Any]:
        ping = await cl.call("debug.ping", {}, auth=False)
        info = await cl.call("server.info", {}, auth=False)
        user = await cl.call("users.get_current_user", {})
        workers = await cl.call("workers.get_all", {"last_seen": 0})
        queues = await cl.get_all("queues.get_all", {"only_fields": ["id", "name", "entries"]}, key="queues")
        tasks = await cl.get_all(
            "tasks.get_all", {"only_fields": ["id", "name", "status"], "order_by": ["-last_update"]}, key="tasks"
        )
        return {
            "ping": ping,
            "info": info,
            "user": user,
            "workers": workers,
            "queues": queues,
            "tasks": tasks,
            "api": cl.api_version,
            "stats": cl.stats,
        }

    out = with_client(sim, body)
    assert out["ping"]["msg"] == "ClearML server"
    assert out["api"] == out["info"]["api_version"]
    assert out["user"]["user"]["id"]
    assert {w["id"] for w in out["workers"]["workers"]} >= {"gpu-box-1:gpu0", "cpu-box-1:0"}
    assert {q["name"] for q in out["queues"]} >= {"default", "gpu", "services"}
    visible = [t for t in sim.iter_tasks() if "hidden" not in (t.get("system_tags") or [])]
    assert sorted(t["id"] for t in out["tasks"]) == sorted(t["id"] for t in visible)
    assert {"in_progress", "failed", "completed"} <= {t["status"] for t in out["tasks"]}
    assert out["stats"].logins == 1 and out["stats"].errors == 0
    assert {name for name, _ in sim.calls} >= {"auth.login", "tasks.get_all", "queues.get_all"}


def test_not_found_and_status_transition(sim: Any) -> None:
    completed = next(t for t in sim.iter_tasks() if t["status"] == "completed")
    default_queue = sim.queue_id("default")

    async def body(cl: ClearMLClient) -> list[Exception]:
        errors: list[Exception] = []
        for endpoint, payload in (
            ("tasks.get_by_id", {"task": "0" * 32}),
            ("queues.get_by_id", {"queue": "0" * 32}),
            ("tasks.enqueue", {"task": completed["id"], "queue": default_queue}),
        ):
            try:
                await cl.call(endpoint, payload)
            except Exception as exc:
                errors.append(exc)
        return errors

    task_missing, queue_missing, transition = with_client(sim, body)
    assert isinstance(task_missing, NotFoundError) and (task_missing.code, task_missing.subcode) == (400, 101)
    assert isinstance(queue_missing, NotFoundError) and queue_missing.subcode == 701
    assert isinstance(transition, StatusTransitionError) and (transition.code, transition.subcode) == (400, 110)
    assert transition.endpoint == "tasks.enqueue" and "status" in transition.message.lower()
    assert len(sim.calls_to("tasks.enqueue")) == 1


def test_clone_and_enqueue_a_failed_task(sim: Any) -> None:
    failed = next(t for t in sim.iter_tasks() if t["status"] == "failed")

    async def body(cl: ClearMLClient) -> tuple[dict[str, Any], dict[str, Any]]:
        clone = await cl.call("tasks.clone", {"task": failed["id"]})
        queued = await cl.call("tasks.enqueue", {"task": clone["id"], "queue": sim.queue_id("default")})
        return clone, queued

    clone, queued = with_client(sim, body)
    assert clone["id"] != failed["id"] and queued["queued"] == 1


def test_faults_reads_retry_writes_do_not(sim: Any) -> None:
    sim.set_fault("tasks.get_all", status=500, traceback=True, times=2)
    sim.set_fault("tasks.stop", status=502, html=True, times=1)
    running = next(t for t in sim.iter_tasks() if t["status"] == "in_progress")

    async def body(cl: ClearMLClient) -> tuple[list[dict[str, Any]], Exception | None]:
        tasks = await cl.get_all("tasks.get_all", {"only_fields": ["id"]}, key="tasks")
        try:
            await cl.call("tasks.stop", {"task": running["id"]})
        except ServerUnavailableError as exc:
            return tasks, exc
        return tasks, None

    tasks, stop_error = with_client(sim, body)
    assert tasks and len(sim.calls_to("tasks.get_all")) == 3  # two 500s, then the answer
    assert isinstance(stop_error, ServerUnavailableError) and stop_error.reason == "not_json"
    assert stop_error.code == 502 and len(sim.calls_to("tasks.stop")) == 1


def test_500_traceback_never_reaches_the_message(sim: Any) -> None:
    sim.set_fault("tasks.get_by_id", status=500, traceback=True)

    async def body(cl: ClearMLClient) -> ServerUnavailableError:
        with pytest.raises(ServerUnavailableError) as info:
            await cl.call("tasks.get_by_id", {"task": "x"})
        return info.value

    err = with_client(sim, body)
    assert err.reason == "http_5xx" and err.code == 500
    assert "Traceback" not in str(err) and "File " not in str(err)


def test_rejected_login(sim: Any) -> None:
    sim.reject_logins = True

    async def body(cl: ClearMLClient) -> CredentialsError:
        with pytest.raises(CredentialsError) as info:
            await cl.call("workers.get_all", {})
        return info.value

    err = with_client(sim, body)
    assert (err.code, err.subcode) == (401, 22) and err.endpoint == "auth.login"
    key, secret = sim.keys[0]
    assert key not in str(err) and secret not in str(err)


def test_expired_token_relogin_and_server_clock(sim: Any) -> None:
    ttl = sim.token_ttl_s
    sim.token_ttl_s = 600

    async def body(cl: ClearMLClient) -> tuple[int, Any, Any]:
        await cl.call("workers.get_all", {})
        sim.clock.advance(3600)  # an hour passes on the server: the token has expired there
        try:
            await cl.call("workers.get_all", {})  # 401/30 -> one re-login -> retried
            return cl.stats.logins, cl.server_time(), sim.clock.now()
        finally:
            sim.clock.advance(-3600)

    try:
        logins, server_now, sim_now = with_client(sim, body)
    finally:
        sim.token_ttl_s = ttl
    assert logins == 2
    assert abs(server_now - sim_now) < timedelta(seconds=2)  # the client follows the server's clock


@pytest.fixture(scope="module")
def fleet() -> Iterator[Any]:
    with SimServer(generate_fleet(workers=40, queues=8, tasks=1600, seed=7)) as sim:
        yield sim


def visible_tasks(sim: Any, status: str | None = None) -> set[str]:
    return {
        t["id"]
        for t in sim.iter_tasks()
        if "hidden" not in (t.get("system_tags") or []) and (status is None or t["status"] == status)
    }


@pytest.mark.parametrize("strategy", ["page", "scroll"])
def test_paging_beyond_500(fleet: Any, strategy: str) -> None:
    fleet.reset_calls()
    expected = visible_tasks(fleet)
    assert len(expected) > 1000

    async def body(cl: ClearMLClient) -> list[dict[str, Any]]:
        payload = {"only_fields": ["id", "status", "last_update"], "order_by": ["-last_update"]}
        return await cl.get_all("tasks.get_all", payload, key="tasks", strategy=strategy)  # type: ignore[arg-type]

    tasks = with_client(fleet, body)
    ids = [t["id"] for t in tasks]
    assert len(ids) == len(set(ids)) and set(ids) == expected
    stamps = [t["last_update"] for t in tasks]
    assert stamps == sorted(stamps, reverse=True)  # the requested order, whichever way it was fetched
    calls = fleet.calls_to("tasks.get_all")
    assert len(calls) <= len(expected) // 450 + 2
    assert all(c.get("page_size", c.get("size", 0)) <= 500 for c in calls)


def test_tasks_leaving_the_filter_while_paging(fleet: Any) -> None:
    statuses = ["queued", "completed", "failed", "created", "published", "in_progress"]
    matching = sorted(
        t["id"] for t in fleet.iter_tasks() if t["status"] in statuses and "hidden" not in (t.get("system_tags") or [])
    )
    leaving = set(matching[:120])  # on the first page in id order
    staying = set(matching) - leaving
    originals = {t["id"]: t["status"] for t in fleet.iter_tasks() if t["id"] in leaving}

    def abort_read_tasks() -> None:
        # between pages: tasks already read leave the filtered set, so the rest of the listing moves up
        with fleet.state.lock:
            for task_id in leaving:
                fleet.state.tasks[task_id]["status"] = "stopped"

    async def body(cl: ClearMLClient) -> list[dict[str, Any]]:
        return await cl.get_all("tasks.get_all", {"status": statuses, "only_fields": ["id", "status"]}, key="tasks")

    try:
        tasks = with_client(fleet, body, transport=AfterFirstTasksPage(abort_read_tasks))
    finally:
        with fleet.state.lock:
            for task_id, status in originals.items():
                fleet.state.tasks[task_id]["status"] = status
    ids = [t["id"] for t in tasks]
    assert len(ids) == len(set(ids))
    assert staying <= set(ids)  # nothing that stayed in the set slid past a page boundary
    assert set(ids) <= set(matching)
