"""The report's two charts (top labels, images over time) as PNG, with matplotlib.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, never
pyplot: pyplot keeps global figure state (a leak in a long-lived worker, and shared between
concurrent tasks) and picks a GUI backend by itself. Styling is passed to each artist rather than
through ``rcParams`` for the same reason. Labels come from images and users, so every text
artist has ``parse_math=False`` (a label like ``$5 $10`` must not become mathtext).
"""

from __future__ import annotations

import io
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from imagelabels.reports.formatting import interval_label, shorten, to_utc
from imagelabels.reports.model import Report, Table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 150
WIDTH_IN = 8.0
BAR_COLOUR = "#3b6ea8"
TEXT_COLOUR = "#222222"
MUTED_COLOUR = "#666666"
GRID_COLOUR = "#d9d9d9"
EMPTY_MESSAGE = "No images in this interval"

MAX_BARS = 15  # top labels drawn; the tables hold the rest
LABEL_CHARS = 38  # longer labels are shortened in the middle so the bars keep their room
HOURLY_UP_TO = 48  # hours drawn one bar each; longer intervals are drawn per day


def chart_pngs(report: Report) -> tuple[bytes, bytes]:
    """The top-labels chart and the images-over-time chart, as PNG bytes, in that order."""
    return figure_png(top_labels_figure(report)), figure_png(images_over_time_figure(report))


def figure_png(fig: Figure) -> bytes:
    """``fig`` as PNG at :data:`DPI`, drawn by the Agg canvas (no pyplot, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def top_labels_figure(report: Report) -> Figure:
    """Horizontal bars of the most frequent labels, largest on top, counts at the bar ends."""
    rows = _column_pairs(_table_or_none(report, "top_labels"), "label", "images")
    rows = sorted(((str(label), int(n)) for label, n in rows if n), key=lambda r: -r[1])
    shown = rows[:MAX_BARS]
    height = 1.6 + 0.34 * len(shown) if shown else 2.6
    fig, ax = _figure(height)
    _title(ax, f"Top labels \u2014 {interval_label(report)}")
    if not shown:
        _empty(ax)
        return fig
    _subtitle(
        ax,
        f"Images per label; top {len(shown)} of {len(rows)} labels"
        if len(rows) > len(shown)
        else "Images per label",
    )
    positions = range(len(shown))
    counts = [n for _, n in shown]
    bars = ax.barh(positions, counts, height=0.68, color=BAR_COLOUR, zorder=2)
    ax.set_yticks(
        list(positions),
        labels=[shorten(label, LABEL_CHARS) for label, _ in shown],
        parse_math=False,
        fontsize=9.5,
        color=TEXT_COLOUR,
    )
    ax.invert_yaxis()  # largest on top
    ax.bar_label(bars, labels=[f"{n:,}" for n in counts], padding=4, fontsize=8.5, color=TEXT_COLOUR)
    ax.set_xlim(0, max(counts) * 1.12)
    ax.set_xlabel("Images", color=TEXT_COLOUR)
    _value_axis(ax, "x")
    ax.tick_params(axis="y", length=0)
    return fig


def images_over_time_figure(report: Report) -> Figure:
    """Images per hour (up to two days) or per day (weekly, monthly) as bars."""
    series = [
        (to_utc(hour), int(n or 0))
        for hour, n in _column_pairs(_table_or_none(report, "images_per_hour"), "hour", "images")
        if isinstance(hour, datetime)
    ]
    hourly = len(series) <= HOURLY_UP_TO and report.period in ("hourly", "daily")
    unit = "hour" if hourly else "day"
    fig, ax = _figure(3.6 if any(n for _, n in series) else 2.6)
    _title(ax, f"Images per {unit} \u2014 {interval_label(report)}")
    total = sum(n for _, n in series)
    if not total:
        _empty(ax)
        return fig
    if hourly:
        labels = _hour_labels([t for t, _ in series])
        counts = [n for _, n in series]
        peak = max(series, key=lambda s: s[1])
        peak_text = f"peak {peak[1]:,} at {peak[0]:%H:%M} UTC"
    else:
        days = Counter[datetime]()
        for t, n in series:
            days[t.replace(hour=0, minute=0, second=0, microsecond=0)] += n
        ordered = sorted(days.items())
        labels = _day_labels([d for d, _ in ordered])
        counts = [n for _, n in ordered]
        peak = max(ordered, key=lambda s: s[1])
        peak_text = f"peak {peak[1]:,} on {peak[0]:%a %d %b}"
    _subtitle(ax, f"{total:,} images in total; {peak_text}")
    positions = list(range(len(counts)))
    bars = ax.bar(positions, counts, width=0.8, color=BAR_COLOUR, zorder=2)
    if len(counts) <= 14:
        ax.bar_label(
            bars, labels=[f"{n:,}" if n else "" for n in counts], padding=2, fontsize=8.5, color=TEXT_COLOUR
        )
    ticks = [i for i, label in enumerate(labels) if label]
    ax.set_xticks(ticks, labels=[labels[i] for i in ticks], fontsize=8.5, color=TEXT_COLOUR)
    ax.set_xlim(-0.6, len(counts) - 0.4)
    ax.set_ylim(0, max(counts) * 1.15)
    ax.set_xlabel(f"{unit.capitalize()} (UTC)", color=TEXT_COLOUR)
    ax.set_ylabel("Images", color=TEXT_COLOUR)
    _value_axis(ax, "y")
    return fig


def _figure(height: float) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained", facecolor="white")
    ax = fig.add_subplot()
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#999999")
    ax.tick_params(colors=MUTED_COLOUR, labelcolor=TEXT_COLOUR)
    return fig, ax


def _title(ax: Axes, text: str) -> None:
    ax.set_title(
        text, loc="left", fontsize=12.5, fontweight="bold", color=TEXT_COLOUR, pad=22, parse_math=False
    )


def _subtitle(ax: Axes, text: str) -> None:
    ax.text(
        0, 1.02, text, transform=ax.transAxes, fontsize=9, color=MUTED_COLOUR, va="bottom", parse_math=False
    )


def _empty(ax: Axes) -> None:
    """A chart that says there is nothing to draw, instead of empty axes (or a crash)."""
    from matplotlib.patches import FancyBboxPatch

    ax.set_axis_off()
    ax.add_patch(
        FancyBboxPatch(
            (0.01, 0.06),
            0.98,
            0.84,
            boxstyle="round,pad=0,rounding_size=0.02",
            transform=ax.transAxes,
            facecolor="#f3f6fa",
            edgecolor="none",
        )
    )
    ax.text(
        0.5,
        0.45,
        EMPTY_MESSAGE,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=13,
        color=MUTED_COLOUR,
    )


def _value_axis(ax: Axes, axis: Literal["x", "y"]) -> None:
    """Integer ticks with thousands separators and a light grid on the value axis only."""
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(MaxNLocator(integer=True, nbins=6))
    target.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.grid(axis=axis, color=GRID_COLOUR, linewidth=0.8, zorder=0)
    ax.set_axisbelow(True)
    if axis == "x":
        ax.spines["left"].set_visible(True)
        ax.spines["bottom"].set_visible(False)
        ax.tick_params(axis="x", length=0)
    else:
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)


def _hour_labels(hours: list[datetime]) -> list[str]:
    """A label every 3 hours (6 beyond a day); the date under midnight when the chart spans days."""
    step = 3 if len(hours) <= 24 else 6
    many_days = len({h.date() for h in hours}) > 1
    labels = []
    for i, h in enumerate(hours):
        if h.hour % step:
            labels.append("")
        elif many_days and (h.hour == 0 or i == 0):
            labels.append(f"{h:%H:%M}\n{h:%d %b}")
        else:
            labels.append(f"{h:%H:%M}")
    return labels


def _day_labels(days: list[datetime]) -> list[str]:
    """Weekday and date for a week; every few days' date for a month (about ten labels)."""
    if len(days) <= 10:
        return [f"{d:%a}\n{d:%d %b}" for d in days]
    step = -(-len(days) // 10)
    return [f"{d:%d %b}" if i % step == 0 else "" for i, d in enumerate(days)]


def _table_or_none(report: Report, name: str) -> Table | None:
    return next((t for t in report.tables if t.name == name), None)


def _column_pairs(table: Table | None, first: str, second: str) -> list[tuple[Any, Any]]:
    """The values of two named columns, row by row; none when the table or a column is missing
    (a report without the table gets the "no images" chart, not a crash)."""
    if table is None:
        return []
    names = [c.name for c in table.columns]
    if first not in names or second not in names:
        return []
    i, j = names.index(first), names.index(second)
    return [(row[i], row[j]) for row in table.rows]
