"""How a report's values read, shared by every format (CSV, XLSX, PNG charts, PDF) and delivery:
UTC times, interval captions, headline figures, headers with units, cells, shortened keys.

Its own module so that :mod:`~imagelabels.reports.render` (which picks the formats) and the format
modules (:mod:`~imagelabels.reports.xlsx`, :mod:`~imagelabels.reports.pdf`,
:mod:`~imagelabels.reports.charts`) all import it and none imports another back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from imagelabels.reports.model import Column, Report, Table


def to_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive one is taken to be UTC already (the model
    says every time in a report is UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def interval_label(report: Report) -> str:
    """The interval as people say it: ``2026-11-23``, ``2026-11-23 13:00-14:00 UTC``,
    ``2026-W48 (23-29 Nov 2026)``, ``November 2026`` (chart and page titles)."""
    start, last = to_utc(report.start), to_utc(report.end) - timedelta(microseconds=1)
    if report.period == "hourly":
        return f"{start:%Y-%m-%d %H:%M}\u2013{to_utc(report.end):%H:%M} UTC"
    if report.period == "daily":
        return f"{start:%Y-%m-%d}"
    if report.period == "weekly":
        return f"{report.interval_key} ({_day_span(start, last)})"
    if report.period == "monthly":
        return f"{start:%B %Y}"
    return interval_range(report)


def interval_range(report: Report) -> str:
    """``2026-11-23 00:00 - 2026-11-24 00:00 UTC`` (an en dash): the exact ``[start, end)`` of the interval."""
    return f"{to_utc(report.start):%Y-%m-%d %H:%M} \u2013 {to_utc(report.end):%Y-%m-%d %H:%M} UTC"


def scope_label(report: Report) -> str:
    """The scope as one line (``bucket: acme-images · prefix: uploads/``); "all images" when none."""
    return " \u00b7 ".join(f"{k}: {v}" for k, v in report.scope.items()) or "all images"


def totals_items(report: Report) -> list[tuple[str, int]]:
    """The headline figures with their captions, in reading order (processed first)."""
    t = report.totals
    return [
        ("Processed", t.processed),
        ("Indexed", t.indexed),
        ("Indexed without labels", t.without_labels),
        ("Rejected", t.rejected),
        ("Failed", t.failed),
        ("Moderation hits", t.moderation_hits),
        ("Distinct labels", t.distinct_labels),
        ("New labels", t.new_labels),
    ]


def column_header(column: Column) -> str:
    """The human header, with the unit a bare number or time would otherwise hide."""
    if column.type == "datetime" and "UTC" not in column.title:
        return f"{column.title} (UTC)"
    if column.type == "percent" and "%" not in column.title:
        return f"{column.title} (%)"
    return column.title


# Spreadsheets run a cell that starts with one of these as a formula (CSV injection, OWASP).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any, column: Column) -> Any:
    """A cell for CSV: datetimes in ISO 8601 UTC, ``None`` empty, numbers as they are; text that
    a spreadsheet would run as a formula (an S3 key or label starting with ``=``, ``+``, ``-``,
    ``@``...) gets a leading ``'``, OWASP's advice, so opening the CSV in Excel runs nothing."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return to_utc(value).isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def display_cell(value: Any, column: Column) -> str:
    """A cell as text for people (PDF): thousands separators, one decimal for percents,
    datetimes to the second without the offset (the header says UTC)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return f"{to_utc(value):%Y-%m-%d %H:%M:%S}"
    if isinstance(value, bool):
        return str(value)
    if column.type == "percent" and isinstance(value, int | float):
        return f"{value:.1f}%"
    if column.type == "int" and isinstance(value, int | float):
        return f"{value:,.0f}"
    if column.type == "float" and isinstance(value, int | float):
        return f"{value:,.2f}"
    return str(value)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters in the middle (``s3://bucket/upl…/IMG_0001.jpg``):
    for keys and URIs both ends are what identify the object."""
    if len(text) <= limit:
        return text
    head = (limit - 1) * 2 // 5
    tail = limit - 1 - head
    return f"{text[:head]}\u2026{text[-tail:]}"


def numeric(column: Column) -> bool:
    """Whether a column holds numbers (right-aligned, typed cells)."""
    return column.type in ("int", "float", "percent")


def table_rows_note(table: Table, shown: int) -> str:
    """What a capped table says under it, e.g. ``first 50 of 312 rows; the CSV/XLSX hold all``."""
    return f"First {shown:,} of {len(table.rows):,} rows; the CSV/XLSX files hold all of them."


def _day_span(first: datetime, last: datetime) -> str:
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}\u2013{last.day} {last:%b %Y}"
    if first.year == last.year:
        return f"{first.day} {first:%b} \u2013 {last.day} {last:%b %Y}"
    return f"{first.day} {first:%b %Y} \u2013 {last.day} {last:%b %Y}"
