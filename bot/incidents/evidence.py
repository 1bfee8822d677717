"""Comparing a finding's evidence between runs: what changed enough to tell people in the incident's thread, and
what changes every run by itself (ages, timestamps, probe names) and must not post a reply every minute."""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Keys whose values change every run without anything new happening (ages, timestamps, latencies, the random
# name of a probe object). Comparing them would post a thread reply every minute; they still show in the updated
# root message.
_VOLATILE = re.compile(
    r"(^|_)(age|ages|at|seen|last_seen|last_update|last_activity|last_report|updated|latency|elapsed|duration|ms|"
    r"s|ts|time|timestamp|checked|since|now|waited|wait|started|registered|probe_object|probe_key|object_key|"
    r"request_id|trace_id|nonce)$"
    # seconds-valued keys whatever follows (silent_s_range, wait_s_p50): ages and waits that grow by themselves
    r"|(^|_)s_"
)
# Inside text (a message, "gpu-box-5 has been silent for 8m"), the parts that change every run: times, durations,
# random ids and probe object names. Replaced by a placeholder before comparing.
_VOLATILE_TEXT = (
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d| ?UTC)?"), "<time>"),
    (re.compile(r"\b\d\d:\d\d(:\d\d)?( ?UTC)?\b"), "<time>"),
    (re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"), "<id>"),
    (re.compile(r"(?<![0-9A-Za-z])(?=[0-9A-Za-z]*\d)[0-9a-f]{8,}(?![0-9A-Za-z])"), "<id>"),
    (re.compile(r"(probe|chatops)[-_.][0-9A-Za-z_.-]+"), "<probe>"),
    # durations: 8m, 5h 1m, 2.5 s, 1d 3h, 340 ms
    (re.compile(r"\b\d+(\.\d+)?\s?(ms|s|sec|secs|m|min|mins|h|d|w)\b(\s\d+(\.\d+)?\s?(ms|s|m|h|d)\b)*"), "<dur>"),
)


def _bucket(value: float) -> float:
    """Numbers compared by order of magnitude (powers of two): 50 -> 52 is noise, 50 -> 130 is news."""
    if value == 0 or not math.isfinite(value):
        return value
    return math.copysign(2 ** math.floor(math.log2(abs(value))), value)


def stable_text(text: str) -> str:
    """`text` with its volatile parts (times, durations, random ids, probe names) replaced by placeholders."""
    for pattern, placeholder in _VOLATILE_TEXT:
        text = pattern.sub(placeholder, text)
    return text


def key_evidence(value: Any) -> Any:
    """The part of a finding's evidence whose change is worth a thread reply."""
    if isinstance(value, dict):
        return {
            k: key_evidence(v) for k, v in sorted(value.items()) if not _VOLATILE.search(str(k))
        }
    if isinstance(value, list):
        return [key_evidence(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return stable_text(value)
    if isinstance(value, int | float):
        return _bucket(float(value))
    return str(value)


def stable_evidence(value: Any) -> Any:
    """The evidence a thread reply may be about: volatile keys dropped, volatile text normalised, numbers kept
    exact (compared by ratio, see `_differs`)."""
    if isinstance(value, dict):
        return {
            k: stable_evidence(v) for k, v in sorted(value.items()) if not _VOLATILE.search(str(k))
        }
    if isinstance(value, list):
        return [stable_evidence(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return stable_text(value)
    return str(value)


def evidence_key(evidence: dict[str, Any]) -> str:
    """What is stored as a member's evidence baseline: the stable evidence last announced (or first seen)."""
    return json.dumps(stable_evidence(evidence), sort_keys=True, default=str)


def _differs(before: Any, after: Any) -> bool:
    """A change worth telling: numbers that at least doubled or halved (or crossed zero), anything else unequal."""
    number = (int, float)
    if isinstance(before, number) and isinstance(after, number) and not isinstance(before, bool) \
            and not isinstance(after, bool):
        if before == after:
            return False
        if before == 0 or after == 0 or (before < 0) != (after < 0):
            return True
        big, small = max(abs(before), abs(after)), min(abs(before), abs(after))
        return big / small >= 2
    if isinstance(before, dict) and isinstance(after, dict):
        return any(_differs(before.get(k), after.get(k)) for k in set(before) | set(after))
    if isinstance(before, list) and isinstance(after, list):
        if len(before) > 3 and len(after) > 3:  # a series (recent points, many subjects): news when it doubled
            return _differs(len(before), len(after))  # or halved, not when its window moved
        return len(before) != len(after) or any(_differs(a, b) for a, b in zip(before, after, strict=True))
    return bool(before != after)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def evidence_changes(old: dict[str, Any], new: dict[str, Any], baseline: dict[str, Any] | None = None) -> list[str]:
    """`key: old -> new` for the top-level keys whose stable evidence changed meaningfully against `baseline` (the
    evidence last announced; default: `old`). Shown with the previous run's values."""
    before = baseline if baseline is not None else stable_evidence(old)
    after = stable_evidence(new)
    out = []
    for k in sorted(set(before) | set(after)):
        if _differs(before.get(k), after.get(k)):
            out.append(f"{k}: {_short(old.get(k, '—'))} → {_short(new.get(k, '—'))}")
    return out
