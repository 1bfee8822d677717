"""get_all query semantics (filters, ordering, paging, projection) on plain documents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bot.sim.errors import ApiError
from bot.sim.query import (
    compile_date_filter,
    compile_list_filter,
    order_items,
    paging,
    parse_when,
    project,
    split_only_fields,
)

DOCS: list[dict[str, Any]] = [
    {"id": "1", "tags": ["a", "b"], "status": "failed"},
    {"id": "2", "tags": ["a"], "status": "completed"},
    {"id": "3", "tags": [], "status": "queued"},
    {"id": "4", "status": "failed"},
]


def select(field: str, spec: list[Any]) -> list[str]:
    pred = compile_list_filter(field, spec)
    return [d["id"] for d in DOCS if pred(d)]


@pytest.mark.parametrize(
    ("field", "spec", "expected"),
    [
        ("status", ["failed", "queued"], ["1", "3", "4"]),
        ("status", ["-failed"], ["2", "3"]),
        ("tags", ["a", "-b"], ["2"]),
        ("tags", ["__$all", "a", "b"], ["1"]),
        ("tags", ["__$any", "b", "__$not", "a"], ["1", "3", "4"]),
        ("tags", ["__$all", "a", "__$not", "b"], ["2"]),
        ("tags", [None], ["3", "4"]),
        ("tags", ["b", None], ["1", "3", "4"]),
        ("status", "queued", ["3"]),
    ],
)
def test_list_field_semantics(field: str, spec: list[Any], expected: list[str]) -> None:
    assert select(field, spec) == expected


def test_list_field_errors() -> None:
    with pytest.raises(ApiError) as info:
        compile_list_filter("tags", ["__$bogus", "a"])
    assert (info.value.code, info.value.subcode) == (400, 16)
    with pytest.raises(ApiError):
        compile_list_filter("tags", ["a", "__$not"])


def test_dates() -> None:
    stamp = datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert parse_when("2024-01-01 12:00:00") == stamp
    assert parse_when("2024-01-01T12:00:00Z") == stamp
    assert parse_when(stamp.timestamp()) == stamp
    assert parse_when(str(int(stamp.timestamp() * 1000))) == stamp
    assert parse_when("yesterday") is None
    docs = [{"id": "old", "t": datetime(2023, 1, 1, tzinfo=UTC)}, {"id": "new", "t": datetime(2025, 1, 1, tzinfo=UTC)},
            {"id": "none"}]
    pred = compile_date_filter("t", [">2024-01-01"])
    assert pred is not None and [d["id"] for d in docs if pred(d)] == ["new"]
    pred = compile_date_filter("t", [">=2022-01-01", "<2024-06-01"])
    assert pred is not None and [d["id"] for d in docs if pred(d)] == ["old"]
    rng = compile_date_filter("t", [None, "2024-01-01"])  # a plain [min, max] range: null min matches missing
    assert rng is not None and [d["id"] for d in docs if rng(d)] == ["old", "none"]
    assert compile_date_filter("t", [">garbage"]) is None  # ignored, like the server


def test_paging_rules() -> None:
    assert paging({}) == (0, 500)
    assert paging({"page": 2, "page_size": 100}) == (200, 100)
    assert paging({"page_size": 10000}) == (0, 500)
    for bad, code in (({"page": 1}, (400, 11)), ({"page": -1, "page_size": 1}, (400, 12)),
                      ({"page_size": 0}, (400, 12)), ({"page": "x", "page_size": 1}, (400, 12))):
        with pytest.raises(ApiError) as info:
            paging(bad)
        assert (info.value.code, info.value.subcode) == code


def test_ordering() -> None:
    docs = [{"id": "b", "n": 2}, {"id": "a", "n": 2}, {"id": "c"}, {"id": "d", "n": 1}]
    assert [d["id"] for d in order_items(docs, ["-n"])] == ["a", "b", "d", "c"]
    assert [d["id"] for d in order_items(docs, ["n"])] == ["d", "a", "b", "c"]  # empties last either way
    mixed = [{"id": "x", "v": "s"}, {"id": "y", "v": 3}, {"id": "z", "v": None}]
    assert [d["id"] for d in order_items(mixed, ["id", "v"])] == ["x", "y", "z"]


def test_projection() -> None:
    doc = {"id": "1", "name": "n", "script": {"requirements": {"pip": "x"}, "diff": "d"},
           "execution": {"artifacts": [{"key": "a", "uri": "u"}, {"key": "b"}]}}
    inc, exc = split_only_fields(["name", "script.requirements.pip", "execution.artifacts.key", "nothing.here"])
    assert project(doc, inc, exc) == {"id": "1", "name": "n", "script": {"requirements": {"pip": "x"}},
                                      "execution": {"artifacts": [{"key": "a"}, {"key": "b"}]}}
    inc, exc = split_only_fields(["-script.diff", "-execution"])
    assert project(doc, inc, exc) == {"id": "1", "name": "n", "script": {"requirements": {"pip": "x"}}}
    assert doc["script"]["diff"] == "d"  # the stored document is untouched
