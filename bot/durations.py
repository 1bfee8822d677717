"""Durations as people write them in playbooks and config: 90s, 2m, 6h, 1d, 1h30m, or plain seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: str | float | int) -> float:
    """Seconds in `value`; raises ValueError with the accepted forms on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use e.g. 90s, 2m, 6h, 1d)")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration {value} is negative")
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (use e.g. 90s, 2m, 6h, 1d or 1h30m)")
    return total


def format_duration(seconds: float | None) -> str:
    """Short human form: 45s, 12m, 3h 5m, 2d 4h."""
    if seconds is None:
        return "unknown"
    s = round(seconds)
    if s < 90:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h {m}m" if m else f"{h}h"
    d, h = divmod(h, 24)
    return f"{d}d {h}h" if h else f"{d}d"
