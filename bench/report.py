"""Rows of the results table, and printing them.

Every benchmark returns its raw figures plus a list of `Row`s: one line of the table each, with our figure, the
baseline's, their ratio, the target and whether it was met.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    bench: str  # "1 fleet L", "2 failures", ...
    figure: str  # what is measured
    ours: float | None
    baseline: float | None
    baseline_name: str
    unit: str
    ratio: float | None = None  # ours / baseline unless given
    target: str = ""  # e.g. "<= 1.5x", "< 200 ms"
    met: bool | None = None  # None: no target

    def __post_init__(self) -> None:
        if self.ratio is None and self.ours is not None and self.baseline:
            self.ratio = self.ours / self.baseline

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _num(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:.0f} MB" if value >= 10 else f"{value:.1f} MB"
    if unit == "MB/s":
        return f"{value:.0f} MB/s"
    if unit == "%":
        return f"{value:.2f} %"
    if float(value).is_integer():
        return f"{int(value):,}{' ' + unit if unit else ''}"
    return f"{value:,.2f}{' ' + unit if unit else ''}"


def render(rows: list[Row]) -> str:
    header = ("bench", "figure", "ratio", "ours", "baseline", "target", "met")
    lines = []
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "—"
        met = "" if r.met is None else ("yes" if r.met else "NO")
        lines.append((r.bench, r.figure, ratio, _num(r.ours, r.unit), f"{_num(r.baseline, r.unit)} ({r.baseline_name})"
                      if r.baseline_name else _num(r.baseline, r.unit), r.target, met))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)
