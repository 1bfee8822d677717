"""PNG rendering of a `ChartSpec` with matplotlib's Agg backend (no display, no pyplot global state: each chart is
its own `Figure`, so charts can be drawn from several threads).

matplotlib is optional (the `charts` extra). `available()` answers without importing it (importing costs ~40 MB of
resident memory, which an idle `serve` should not pay); `render_png` imports it on first use. Without it the bot
says its trends in text, as before.

Readable at a glance in a Slack thread: 800 px wide, large type, the Okabe–Ito palette (safe for the common
colour-vision deficiencies) plus a distinct marker and dash per series so that nothing depends on colour alone,
a title, a unit on every y axis, times in UTC.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import logging
import threading
from dataclasses import dataclass
from typing import Any

from bot.charts.series import ChartSpec, Panel, alt_text

log = logging.getLogger(__name__)

# Okabe & Ito (2008), "Color Universal Design": distinguishable with protanopia, deuteranopia and tritanopia.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":", "-", "--", "-.", ":")
WIDTH_IN, PANEL_HEIGHT_IN, DPI = 8.0, 2.6, 100  # 800 px wide, 260 px per panel (+ title)

_IMPORT_LOCK = threading.Lock()
# matplotlib's text layout keeps process-wide caches; charts are rare (a digest, a backlog incident), so drawing
# one at a time costs nothing and rules out surprises when two scheduled jobs finish together
_RENDER_LOCK = threading.Lock()


def available() -> bool:
    """Whether matplotlib can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class RenderedChart:
    spec: ChartSpec
    png: bytes
    alt_text: str

    @property
    def filename(self) -> str:
        return self.spec.filename

    @property
    def title(self) -> str:
        return self.spec.title


def _mpl() -> tuple[Any, Any, Any]:
    with _IMPORT_LOCK:  # the first import builds the font cache: once, not from two threads at once
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.dates as mdates
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    return Figure, FigureCanvasAgg, mdates


def _text(label: str) -> str:
    """matplotlib reads `$…$` as maths: a queue called `a$b$` must show as typed."""
    return label.replace("$", r"\$")


def _seconds_axis(values: list[float]) -> tuple[float, str]:
    top = max(values, default=0.0)
    if top >= 2 * 3600:
        return 3600.0, "h"
    if top >= 120:
        return 60.0, "min"
    return 1.0, "s"


def render_png(spec: ChartSpec) -> bytes:
    """The chart as PNG bytes. Raises ImportError when matplotlib is missing (check `available()` first)."""
    Figure, FigureCanvasAgg, mdates = _mpl()
    with _RENDER_LOCK:
        return _draw(spec, Figure, FigureCanvasAgg, mdates)


def _draw(spec: ChartSpec, Figure: Any, FigureCanvasAgg: Any, mdates: Any) -> bytes:
    panels = list(spec.panels)
    fig = Figure(figsize=(WIDTH_IN, 0.7 + PANEL_HEIGHT_IN * len(panels)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False, sharex=all(p.lines for p in panels))[:, 0]
    fig.suptitle(_text(spec.title), fontsize=13, fontweight="bold")
    for ax, panel in zip(axes, panels, strict=True):
        _style(ax)
        if panel.stacks:
            _bars(ax, panel)
        else:
            _lines(ax, panel, mdates)
        if not panel.lines and not panel.stacks:
            ax.text(0.5, 0.5, "no data in this window", ha="center", va="center", transform=ax.transAxes,
                    fontsize=11, color="#555555")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def _style(ax: Any) -> None:
    ax.grid(True, axis="y", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=10)


def _lines(ax: Any, panel: Panel, mdates: Any) -> None:
    scale, unit = (_seconds_axis([v for s in panel.lines for v in s.values]) if panel.unit == "seconds"
                   else (1.0, ""))
    for i, series in enumerate(panel.lines):
        xs = [t for t, _ in series.points]
        ys = [v / scale for _, v in series.points]
        ax.plot(xs, ys, color=PALETTE[i % len(PALETTE)], linestyle=DASHES[i % len(DASHES)],
                marker=MARKERS[i % len(MARKERS)], markersize=4 if len(xs) <= 60 else 0, linewidth=2,
                label=_text(series.label))
    ax.set_ylabel(f"{panel.y_label} ({unit})" if unit else panel.y_label, fontsize=10)
    ax.set_ylim(bottom=0)
    if panel.unit == "count":
        ax.yaxis.get_major_locator().set_params(integer=True)
    locator = mdates.AutoDateLocator(tz="UTC", maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))
    ax.set_xlabel("time (UTC)", fontsize=9)
    if panel.lines:
        _legend(ax)


def _bars(ax: Any, panel: Panel) -> None:
    labels = [f"{d:%a %m-%d}" for d in panel.days]
    xs = list(range(len(labels)))
    bottoms = [0.0] * len(xs)
    for i, (label, values) in enumerate(panel.stacks):
        ax.bar(xs, values, bottom=bottoms, color=PALETTE[i % len(PALETTE)], label=_text(label),
               hatch=("", "//", "..", "xx", "\\\\", "oo", "--", "++")[i % 8], edgecolor="white", linewidth=0.5)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for x, total in zip(xs, bottoms, strict=True):
        if total:
            ax.text(x, total, f"{total:g}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(xs, labels)
    ax.set_ylabel(panel.y_label, fontsize=10)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("day (UTC)", fontsize=9)
    ax.set_ylim(0, max(bottoms, default=0) * 1.15 or 1)  # room for the totals above the bars
    if panel.stacks:
        _legend(ax)


def _legend(ax: Any) -> None:
    """Beside the plot, never over the data (constrained layout makes room for it)."""
    ax.legend(fontsize=9, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def render(specs: list[ChartSpec]) -> list[RenderedChart]:
    """Every chart that has data, rendered; [] when matplotlib is not installed (the text trends stand alone).
    A chart that fails to render is logged and left out: a chart is never worth losing the digest for."""
    if not specs or not available():
        return []
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop in this thread: the place for CPU work
    else:
        raise RuntimeError("charts are drawn off the event loop (a scheduler thread, or pool.io), never on it")
    out = []
    for spec in specs:
        if spec.empty:
            continue
        try:
            out.append(RenderedChart(spec, render_png(spec), alt_text(spec)))
        except ImportError:
            log.info("matplotlib cannot be imported: charts are off (pip install 'clearml-chatops[charts]')")
            return []
        except Exception:
            log.exception("rendering chart %s failed; leaving it out", spec.name)
    return out
