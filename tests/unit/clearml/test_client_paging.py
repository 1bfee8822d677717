"""get_all paging: nothing capped at 500, de-duplication, and items changing between pages."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from bot.clearml.client import ClearMLClient, _next_window, sort_like_server
from tests.fakes.clearml_raw import Canned, RawRequest, RawServer, envelope, make_token
from tests.unit.clearml.test_client_errors import client, run

MAX_PAGE = 500


class Collection:
    """A get_all endpoint with the real server's paging semantics: order_by (+ id appended), page/page_size
    (page_size clamped to 500, default 500), scroll_id/size (a stored offset), `status` filter."""

    def __init__(self, docs: list[dict[str, Any]], *, scroll: bool = True) -> None:
        self.docs = docs
        self.scroll = scroll
        self.scrolls: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []
        self.before_request: Callable[[int], None] | None = None  # mutate the data between requests

    def __call__(self, request: RawRequest) -> Canned:
        body = request.json() or {}
        if self.before_request is not None:
            self.before_request(len(self.requests))
        self.requests.append(body)
        docs = [d for d in self.docs if not body.get("status") or d["status"] in body["status"]]
        order = list(body.get("order_by") or [])
        if order and not any(o.lstrip("-") == "id" for o in order):
            order.append("id")
        docs = sort_like_server(docs, order) if order else docs
        data: dict[str, Any] = {}
        if self.scroll and "scroll_id" in body:
            scroll_id = body["scroll_id"] or uuid.uuid4().hex
            start = self.scrolls.get(scroll_id, 0)
            chunk = docs[start : start + body["size"]]
            self.scrolls[scroll_id] = start + len(chunk)
            data["scroll_id"] = scroll_id
        else:
            size = min(body.get("page_size", MAX_PAGE), MAX_PAGE)
            start = body.get("page", 0) * size
            chunk = docs[start : start + size]
        fields = body.get("only_fields")
        if fields and all(f.startswith("-") for f in fields):
            chunk = [{k: v for k, v in d.items() if f"-{k}" not in fields} for d in chunk]
        elif fields:
            chunk = [{k: v for k, v in d.items() if k in fields or k == "id"} for d in chunk]
        data["tasks"] = [dict(d) for d in chunk]
        return envelope(data)


def make_docs(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": uuid.uuid4().hex,
            "name": f"task {i}",
            "status": "queued",
            "last_update": f"2024-01-01T00:{i % 60:02d}:00",
        }
        for i in range(n)
    ]


def serve(coll: Collection, coro: Callable[[ClearMLClient], Any], *, api_version: str = "2.31") -> Any:
    login = envelope({"token": make_token(api_version=api_version)})
    with RawServer({"auth.login": login, "tasks.get_all": coll}) as srv:

        async def go() -> Any:
            async with client(srv.url) as cl:
                return await coro(cl)

        return run(go())


def ids(docs: list[dict[str, Any]]) -> list[str]:
    return [d["id"] for d in docs]


def test_next_window_overlaps_and_advances() -> None:
    assert _next_window(0, 500, 10) == (0, 500)
    for end in (500, 990, 1234, 5000, 99_990, 200_000, 1_000_003):
        page, size = _next_window(end, 500, 10)
        offset = page * size
        assert 250 <= size <= 500
        assert offset <= end - 10, end  # overlap with what was read
        assert offset + size - end >= 300, end  # and real progress


def test_beyond_500_every_item_exactly_once() -> None:
    docs = make_docs(1234)
    coll = Collection(docs)
    result = serve(coll, lambda cl: cl.get_all("tasks.get_all", {"only_fields": ["id", "name"]}, key="tasks"))
    assert len(result) == 1234 and set(ids(result)) == {d["id"] for d in docs}
    assert ids(result) == sorted(ids(result))  # id order when the caller gave none
    assert all(r["page_size"] <= 500 and r["order_by"] == ["id"] for r in coll.requests)
    assert len(coll.requests) == 3


def test_exact_multiple_of_page_size() -> None:
    coll = Collection(make_docs(1000))
    result = serve(coll, lambda cl: cl.get_all("tasks.get_all", {}, key="tasks"))
    assert len({d["id"] for d in result}) == len(result) == 1000


def test_requested_order_is_restored_locally() -> None:
    docs = make_docs(700)
    coll = Collection(docs)
    payload = {"order_by": ["-last_update"], "only_fields": ["id", "name"]}
    result = serve(coll, lambda cl: cl.get_all("tasks.get_all", payload, key="tasks"))
    assert ids(result) == ids(sort_like_server(docs, ["-last_update", "id"]))
    assert "last_update" in coll.requests[0]["only_fields"]  # needed to sort locally
    assert payload == {"order_by": ["-last_update"], "only_fields": ["id", "name"]}  # caller's dict untouched


def test_exclusion_projection_is_left_alone() -> None:
    coll = Collection(make_docs(600))
    payload = {"order_by": ["-last_update"], "only_fields": ["-script"]}
    result = serve(coll, lambda cl: cl.get_all("tasks.get_all", payload, key="tasks"))
    assert len(result) == 600 and all(r["only_fields"] == ["-script"] for r in coll.requests)


def test_tasks_leaving_the_filter_between_pages_lose_nothing() -> None:
    docs = make_docs(1500)
    coll = Collection(docs)
    by_id = sorted(docs, key=lambda d: d["id"])
    leaving = [d["id"] for d in by_id[100:160]]  # already read when they start running

    def mutate(n: int) -> None:
        if n == 1:  # between the first and the second page: 60 tasks on page 1 start running
            for d in docs:
                if d["id"] in leaving:
                    d["status"] = "in_progress"

    coll.before_request = mutate
    result = serve(coll, lambda cl: cl.get_all("tasks.get_all", {"status": ["queued"]}, key="tasks"))
    got = ids(result)
    assert len(got) == len(set(got))
    # every task that stayed queued throughout is there (no unseen task slid past a page boundary)
    assert {d["id"] for d in docs if d["status"] == "queued"} <= set(got)
    assert set(got) <= {d["id"] for d in docs}


def test_status_change_between_pages_is_not_counted_twice() -> None:
    docs = make_docs(1200)
    coll = Collection(docs)

    def mutate(n: int) -> None:
        # a task read on page 1 changes status (and last_update); with -last_update ordering it would
        # jump to the front and shift everything by one
        if n in (1, 2):
            victim = sorted(docs, key=lambda d: d["id"])[50 + n]
            victim["status"], victim["last_update"] = "in_progress", "2030-01-01T00:00:00"

    coll.before_request = mutate
    result = serve(coll, lambda cl: cl.get_all("tasks.get_all", {"order_by": ["-last_update"]}, key="tasks"))
    got = ids(result)
    assert len(got) == len(set(got)) == 1200
    fresh = {d["id"]: d for d in result}
    for d in docs:
        if d["status"] == "in_progress":
            assert fresh[d["id"]]["status"] in ("queued", "in_progress")


def test_scroll_strategy() -> None:
    docs = make_docs(1100)
    coll = Collection(docs)
    result = serve(coll, lambda cl: cl.get_all("tasks.get_all", {}, key="tasks", strategy="scroll"))
    assert len(set(ids(result))) == len(result) == 1100
    assert all("scroll_id" in r and r["size"] == 500 for r in coll.requests)
    assert coll.requests[0]["scroll_id"] == "" and coll.requests[1]["scroll_id"]


def test_scroll_falls_back_to_pages_when_ignored() -> None:
    coll = Collection(make_docs(700), scroll=False)
    result = serve(coll, lambda cl: cl.get_all("tasks.get_all", {}, key="tasks", strategy="scroll"))
    assert len(set(ids(result))) == len(result) == 700
    assert "page" in coll.requests[-1]


def test_scroll_not_used_before_api_2_15() -> None:
    coll = Collection(make_docs(600))

    async def go(cl: ClearMLClient) -> list[dict[str, Any]]:
        await cl.login()
        return await cl.get_all("tasks.get_all", {}, key="tasks", strategy="scroll")

    result = serve(coll, go, api_version="2.13")
    assert len(result) == 600 and all("scroll_id" not in r for r in coll.requests)


def test_max_items() -> None:
    coll = Collection(make_docs(1400))
    top = serve(coll, lambda cl: cl.get_all("tasks.get_all", {"order_by": ["-last_update"]}, key="tasks", max_items=30))
    assert len(top) == 30 and coll.requests == [{"order_by": ["-last_update", "id"], "page": 0, "page_size": 30}]
    coll.requests.clear()
    many = serve(coll, lambda cl: cl.get_all("tasks.get_all", {}, key="tasks", max_items=800))
    assert len(set(ids(many))) == len(many) == 800 and len(coll.requests) == 2


def test_endpoint_that_ignores_paging() -> None:
    docs = make_docs(40)

    def everything(request: RawRequest) -> Canned:
        return envelope({"tasks": docs})

    result = serve(everything, lambda cl: cl.get_all("tasks.get_all", {}, key="tasks", page_size=10))  # type: ignore[arg-type]
    assert len(result) == 40
