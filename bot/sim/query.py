"""get_all query semantics of clearml-server (database/model/base.py), re-implemented over dicts.

- list fields (id, status, tags, system_tags, ...): values OR-ed; legacy `-x` excludes; operators
  `__$all`/`__$and`, `__$any`/`__$or`, `__$not`, `__$nop`; `null` matches an empty/missing field;
- pattern fields (name, comment): a case-sensitive regular-expression search;
- datetime fields (status_changed, last_update, last_change): `>`, `>=`, `<`, `<=` prefixes, or a
  two-element [min, max] range; values are ISO-8601 (naive = UTC) or epoch seconds/milliseconds;
- range fields (created, started, last_iteration, ...): [min, max], inclusive, either may be null;
- paging: page/page_size (page_size capped at 500, and applied even when omitted), or scroll_id/size;
- order_by with `-` for descending (the first key's empty values always sort last; `id` breaks ties);
- only_fields with dot nesting and `-field` exclusion (`id` is always returned).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from bot.sim.errors import ApiError, validation

MAX_PAGE_SIZE = 500
MAX_SCROLLS = 10_000

Predicate = Callable[[dict[str, Any]], bool]

_ACCESS = re.compile(r"^(?P<prefix>>=|>|<=|<)?(?P<value>.*)$", re.S)
_EMPTY: tuple[Any, ...] = (None, "", [], {})


# ---------------------------------------------------------------------------------------------- values
def field_values(doc: Any, path: str) -> list[Any]:
    """Every value at a dotted path, flattening lists on the way (Mongo's array traversal)."""
    current: list[Any] = [doc]
    for part in path.split("."):
        nxt: list[Any] = []
        for value in current:
            if isinstance(value, dict):
                if part in value:
                    nxt.append(value[part])
            elif isinstance(value, list):
                nxt.extend(item[part] for item in value if isinstance(item, dict) and part in item)
        current = nxt
    flat: list[Any] = []
    for value in current:
        if isinstance(value, list):
            flat.extend(value)
        else:
            flat.append(value)
    return flat


def parse_when(value: Any) -> datetime | None:
    """A datetime from an ISO-8601 string (naive = UTC), or epoch seconds / milliseconds; None if unparsable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if number > 1e11:  # milliseconds
        number /= 1000.0
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- list fields
def compile_list_filter(field: str, data: Any) -> Predicate:
    """Predicate for a list-field condition such as system_tags=["-archived"] or ["__$all", "a", "__$not", "b"]."""
    values = data if isinstance(data, list | tuple) else [data]
    and_op, or_op = "and", "or"
    global_op: str | None = None
    context = or_op
    legacy = True
    allow_empty = False
    actions: dict[str, list[Any]] = {"in": [], "nin": [], "all": []}
    unary_not = False
    modifiers = {(and_op, True): "all", (and_op, False): "nin", (or_op, True): "in", (or_op, False): "nin"}
    for value in values:
        if value is None:
            unary_not = False
            global_op = global_op or and_op
            allow_empty = True
            continue
        if not isinstance(value, str):
            raise ApiError(400, 16, "invalid value type, string expected", field=field, value=str(value))
        if value == "__$nop":
            unary_not = False
            context, legacy = or_op, True
            global_op = global_op or and_op
            continue
        if value.startswith("__$"):
            if unary_not:
                raise ApiError(400, 16, "Value is expected after", field=field, operator="__$not")
            if value == "__$not":
                unary_not = True
                continue
            op = {"__$all": and_op, "__$and": and_op, "__$any": or_op, "__$or": or_op}.get(value)
            if op is None:
                raise ApiError(400, 16, "Unsupported operator", field=field, operator=value)
            context, legacy = op, False
            global_op = global_op or op
            continue
        global_op = global_op or and_op
        include = True
        if unary_not:
            include, unary_not = False, False
        elif legacy and value.startswith("-"):
            value = value[1:]
            if not value:
                raise ApiError(400, 16, "Missing value after the exclude prefix -", field=field, value=value)
            include = False
        actions[modifiers[(context, include)]].append(value)
    if unary_not:
        raise ApiError(400, 16, "Value is expected after", operator="__$not")
    combine_and = (global_op or and_op) == and_op
    in_set = frozenset(actions["in"])
    nin_set = frozenset(actions["nin"])
    all_set = frozenset(actions["all"])
    checks: list[Callable[[list[Any]], bool]] = []
    if in_set:
        checks.append(lambda vals: any(v in in_set for v in vals))
    if nin_set:
        checks.append(lambda vals: not any(v in nin_set for v in vals))
    if all_set:
        checks.append(lambda vals: all_set.issubset(vals))
    simple = "." not in field

    def predicate(doc: dict[str, Any]) -> bool:
        if simple:
            raw = doc.get(field)
            vals = raw if isinstance(raw, list) else ([] if raw is None else [raw])
        else:
            vals = [v for v in field_values(doc, field) if v is not None]
        if allow_empty and not vals:
            return True
        if not checks:
            return not allow_empty
        if combine_and:
            return all(check(vals) for check in checks)
        return any(check(vals) for check in checks)

    return predicate


def compile_list_query_filter(field: str, data: Any) -> Predicate:
    """The 2.27 `filters: {field: {any: {include, exclude}, all: {include, exclude}, op}}` form."""
    if not isinstance(data, dict):
        raise validation("invalid filter for field, dictionary expected", field=field, value=str(data))
    parts: list[Predicate] = []
    for key in ("any", "all"):
        cond = data.get(key)
        if not cond:
            continue
        include = list(cond.get("include") or [])
        exclude = list(cond.get("exclude") or [])
        if key == "any":
            spec = ["__$any", *include]
            inc_pred = compile_list_filter(field, spec) if include else None
            exc_preds = [compile_list_filter(field, [f"-{v}"]) for v in exclude if v]

            def any_pred(doc: dict[str, Any], inc: Predicate | None = inc_pred,
                         exc: list[Predicate] = exc_preds) -> bool:
                results = ([inc(doc)] if inc else []) + [p(doc) for p in exc]
                return any(results) if results else True

            parts.append(any_pred)
        else:
            spec = (["__$all", *include] if include else []) + [x for v in exclude for x in ("__$not", v)]
            if include or exclude:
                parts.append(compile_list_filter(field, spec))
    op_or = data.get("op", "and") == "or"
    if not parts:
        return lambda doc: True
    if op_or:
        return lambda doc: any(p(doc) for p in parts)
    return lambda doc: all(p(doc) for p in parts)


# ---------------------------------------------------------------------------------------------- dates and ranges
def compile_date_filter(field: str, data: Any) -> Predicate | None:
    """Datetime conditions: [">2024-01-01", "<=1700000000"] or a plain [min, max] range."""
    values = data if isinstance(data, list) else [data]
    if len(values) == 2 and not any(
        isinstance(v, str) and v[:1] in "<>" and v for v in values if v is not None
    ):
        return compile_range_filter(field, values, dates=True)
    conds: list[tuple[str, datetime]] = []
    for value in values:
        if value is None:
            continue
        match = _ACCESS.match(str(value))
        if not match:
            continue
        when = parse_when(match.group("value"))
        if when is None:  # the server silently ignores values it cannot parse
            continue
        conds.append((match.group("prefix") or "=", when))
    if not conds:
        return None
    low: datetime | None = None
    high: datetime | None = None
    low_incl = high_incl = True
    equal: list[datetime] = []
    for op, when in conds:  # fold the conditions into one interval (and equalities)
        if op in (">", ">="):
            if low is None or when > low or (when == low and op == ">"):
                low, low_incl = when, op == ">="
        elif op in ("<", "<="):
            if high is None or when < high or (when == high and op == "<"):
                high, high_incl = when, op == "<="
        else:
            equal.append(when)
    nested = "." in field

    def predicate(doc: dict[str, Any]) -> bool:
        value = next(iter(field_values(doc, field)), None) if nested else doc.get(field)
        if value is None or not isinstance(value, datetime):
            return False
        if low is not None and (value < low or (value == low and not low_incl)):
            return False
        if high is not None and (value > high or (value == high and not high_incl)):
            return False
        return all(value == e for e in equal)

    return predicate


def compile_range_filter(field: str, data: Any, *, dates: bool = False) -> Predicate:
    """[min, max] inclusive; a null min also matches documents without the field."""
    if not isinstance(data, list | tuple) or len(data) != 2:
        raise validation(f"Min and max values should be specified for range field {field}")
    low, high = data
    if low is None and high is None:
        raise validation(f"At least one of min or max values should be provided for field {field}")
    if dates:
        low = parse_when(low) if low is not None else None
        high = parse_when(high) if high is not None else None

    def predicate(doc: dict[str, Any]) -> bool:
        value = doc.get(field) if "." not in field else next(iter(field_values(doc, field)), None)
        if value is None:
            return low is None
        try:
            if low is not None and value < low:
                return False
            return not (high is not None and value > high)
        except TypeError:
            return False

    return predicate


def compile_pattern(field: str, pattern: Any, flags: int = 0) -> Predicate:
    try:
        regex = re.compile(str(pattern), flags)
    except re.error as exc:
        raise ApiError(400, 21, field=field, pattern=str(pattern), error=str(exc)) from None

    def predicate(doc: dict[str, Any]) -> bool:
        value = doc.get(field) if "." not in field else next(iter(field_values(doc, field)), None)
        return isinstance(value, str) and regex.search(value) is not None

    return predicate


# ---------------------------------------------------------------------------------------------- the query
class QuerySpec:
    """Which request fields filter how, per entity (the server's QueryParameterOptions)."""

    def __init__(
        self,
        *,
        list_fields: Sequence[str] = ("id", "tags", "system_tags"),
        pattern_fields: Sequence[str] = ("name",),
        datetime_fields: Sequence[str] = (),
        range_fields: Sequence[str] = (),
        eq_prefixes: Sequence[str] = (),
        range_prefixes: Sequence[str] = (),
    ) -> None:
        self.list_fields = tuple(list_fields)
        self.pattern_fields = tuple(pattern_fields)
        self.datetime_fields = tuple(datetime_fields)
        self.range_fields = tuple(range_fields)
        self.eq_prefixes = tuple(eq_prefixes)
        self.range_prefixes = tuple(range_prefixes)


def compile_query(data: dict[str, Any], spec: QuerySpec, skip: Iterable[str] = ()) -> list[Predicate]:
    """Predicates (AND-ed) for the request's filter fields; unknown fields are ignored, like the server.
    `skip`: list fields the caller already satisfied (by picking candidates from an index)."""
    preds: list[Predicate] = []
    for name in spec.pattern_fields:
        pattern = data.get(name)
        if pattern:
            preds.append(compile_pattern(name, pattern))
    filters = data.get("filters") or {}
    if not isinstance(filters, dict):
        raise ApiError(400, 16, "invalid value type, string expected", field=str(filters))
    for name, cond in filters.items():
        if name in spec.list_fields:
            preds.append(compile_list_query_filter(name, cond))
    for name in spec.list_fields:
        if name in data and name not in filters and name not in skip:
            preds.append(compile_list_filter(name, data[name]))
    for name in spec.range_fields:
        if data.get(name) is not None:
            preds.append(compile_range_filter(name, data[name], dates=name in ("created", "started")))
    for name, value in data.items():
        if any(name.startswith(p) for p in spec.range_prefixes) and value is not None:
            preds.append(compile_range_filter(name, value))
        elif any(name.startswith(p) for p in spec.eq_prefixes):
            preds.append(lambda doc, n=name, v=value: next(iter(field_values(doc, n)), None) == v)
    for name in spec.datetime_fields:
        if data.get(name) is not None:
            pred = compile_date_filter(name, data[name])
            if pred:
                preds.append(pred)
    for key, combine in (("_any_", any), ("_all_", all)):
        cond = data.get(key)
        if not cond:
            continue
        if not isinstance(cond, dict) or not cond.get("fields"):
            continue
        fields = list(cond["fields"])
        if cond.get("pattern") is not None:
            subs = [compile_pattern(f, cond["pattern"], re.IGNORECASE) for f in fields]
        elif cond.get("datetime") is not None:
            subs = [p for f in fields if f in spec.datetime_fields
                    if (p := compile_date_filter(f, cond["datetime"])) is not None]
        else:
            raise ApiError(400, 16, "incorrect field format", field=key)
        if subs:
            preds.append(lambda doc, s=subs, c=combine: c(p(doc) for p in s))
    text = data.get("search_text")
    if text:
        needle = str(text).lower()
        preds.append(lambda doc: any(needle in str(doc.get(f) or "").lower() for f in ("id", "name", "comment")))
    return preds


def matches(doc: dict[str, Any], preds: Sequence[Predicate]) -> bool:
    return all(pred(doc) for pred in preds)


# ---------------------------------------------------------------------------------------------- ordering
def _rank(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (6, value)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, datetime):
        return (7, value.timestamp())
    return (3, str(value))


def order_items(items: list[dict[str, Any]], order_by: Any) -> list[dict[str, Any]]:
    """Sort like the server: keys in order, `-` descending, first key's empties last, `id` breaks ties.

    Implemented as stable sorts from the last key to the first, each with a C-level itemgetter when the
    values allow it (200,000 tasks sort in a fraction of a second), else with a type-ranking key.
    """
    keys = order_by if isinstance(order_by, list) else [order_by]
    keys = [str(k) for k in keys if k]
    if not keys:
        return items
    if not any(k in ("id", "-id") for k in keys):
        keys.append("id")
    first = keys[0].lstrip("-")
    out = [d for d in items if _value(d, first) not in _EMPTY]
    empty = [d for d in items if _value(d, first) in _EMPTY]
    for part in (out, empty) if empty else (out,):
        for index, key in reversed(list(enumerate(keys))):
            if part is empty and index == 0:
                continue
            desc = key.startswith("-")
            name = key.lstrip("-")
            if "." not in name:
                try:  # sorted() leaves `part` intact when a comparison fails
                    part[:] = sorted(part, key=itemgetter(name), reverse=desc)
                    continue
                except (KeyError, TypeError):
                    pass  # missing or mixed-type values: rank them
                part.sort(key=lambda d, n=name: _rank(d.get(n)), reverse=desc)
            else:
                part.sort(key=lambda d, n=name: _rank(next(iter(field_values(d, n)), None)), reverse=desc)
    return out + empty if empty else out


def _value(doc: dict[str, Any], name: str) -> Any:
    if "." in name:
        return next(iter(field_values(doc, name)), None)
    return doc.get(name)


# ---------------------------------------------------------------------------------------------- paging
def _int_field(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise validation(f"{name} must be an integer", field=name)
    return value


def paging(data: dict[str, Any]) -> tuple[int, int]:
    """(start, size) from page/page_size, applying the server's 500 cap even when page_size is omitted."""
    page = _int_field(data, "page")
    if "page_size" in data and data["page_size"] is None and page is not None:
        raise ApiError(400, 11, "page_size is required when page is requested", field="page_size")
    page_size = _int_field(data, "page_size")
    if page is not None and page_size is None and "page_size" not in data:
        raise ApiError(400, 11, "page_size is required when page is requested", field="page_size")
    if page is not None and page < 0:
        raise validation("page must be >=0", field="page")
    if page_size is not None and page_size < 1:
        raise validation("page_size must be >0", field="page_size")
    size = min(page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    return (page or 0) * size, size


def scroll_size(data: dict[str, Any]) -> int:
    size = data.get("size")
    if not size or isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise validation("Integer size parameter greater than 1 should be provided when working with scroll")
    return size


def select_page(
    matched: list[dict[str, Any]], data: dict[str, Any], scrolls: dict[str, int], new_id: Callable[[], str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Apply scroll (when `scroll_id` is present, even null) or page/page_size; returns (items, extra fields)."""
    if "scroll_id" in data:
        size = scroll_size(data)
        scroll_id = data.get("scroll_id") or ""
        if scroll_id not in scrolls:  # unknown or expired ids silently start a new scroll
            scroll_id = new_id()
            scrolls[scroll_id] = 0
            while len(scrolls) > MAX_SCROLLS:  # expire the oldest, as the server's Redis TTL would
                del scrolls[next(iter(scrolls))]
        position = scrolls[scroll_id]
        if data.get("refresh_scroll"):
            size, position = max(position, size), 0
        items = matched[position : position + size]
        scrolls[scroll_id] = position + len(items)
        return items, {"scroll_id": scroll_id}
    start, size = paging(data)
    return matched[start : start + size], {}


# ---------------------------------------------------------------------------------------------- projection
def _pick(value: Any, parts: list[str]) -> Any:
    """The sub-document at a dotted path, shaped like Mongo's projection (parents kept, even if empty)."""
    if isinstance(value, list):
        return [_pick(item, parts) for item in value if isinstance(item, dict)]
    if not isinstance(value, dict):
        return _MISSING
    if parts[0] not in value:
        return {}
    if len(parts) == 1:
        return {parts[0]: value[parts[0]]}
    inner = _pick(value[parts[0]], parts[1:])
    return {} if inner is _MISSING else {parts[0]: inner}


class _Missing:
    pass


_MISSING: Any = _Missing()


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and into[key] is not value:
            merged = dict(into[key])
            _merge(merged, value)
            into[key] = merged
        elif isinstance(value, list) and isinstance(into.get(key), list) and into[key] is not value:
            into[key] = value if not into[key] else [
                {**a, **b} if isinstance(a, dict) and isinstance(b, dict) else b
                for a, b in zip(into[key], value, strict=False)
            ]
        else:
            into[key] = value


def _drop(doc: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    if parts[0] not in doc:
        return doc
    out = dict(doc)
    if len(parts) == 1:
        del out[parts[0]]
    elif isinstance(out[parts[0]], dict):
        out[parts[0]] = _drop(out[parts[0]], parts[1:])
    return out


def split_only_fields(only_fields: Any) -> tuple[list[list[str]], list[list[str]]]:
    fields = only_fields if isinstance(only_fields, list) else ([only_fields] if only_fields else [])
    include = [f.split(".") for f in fields if isinstance(f, str) and f and not f.startswith("-")]
    exclude = [f[1:].split(".") for f in fields if isinstance(f, str) and f.startswith("-") and len(f) > 1]
    return include, exclude


def project(doc: dict[str, Any], include: list[list[str]], exclude: list[list[str]]) -> dict[str, Any]:
    """only_fields projection of one document (shallow copies only where the projection cuts)."""
    if include:
        out: dict[str, Any] = {"id": doc.get("id")} if "id" in doc else {}
        for parts in include:
            picked = _pick(doc, parts)
            if isinstance(picked, dict):
                _merge(out, picked)
    else:
        out = doc
    for parts in exclude:
        out = _drop(out, parts)
    return out


def id_list(value: Any) -> list[str]:
    """A request field that may be one id or a list of ids."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def as_iterable(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list | tuple) else [value]
