"""Render a :class:`~imagelabels.reports.model.Report` to files: CSV, XLSX, PNG charts, PDF, JSON.

Every format is rendered from the one ``Report``, generically from the tables' typed columns, so
a new table appears in the CSV/XLSX/PDF without code here; only the two charts know particular
tables (``top_labels`` and ``images_per_hour``). File names are keyed by the report's interval
(``label-report_<name>_<interval_key>``), so a rerun of an interval overwrites the same files
instead of adding new ones, and each file is written to a temporary name and renamed so a
reader (delivery, a browser) never sees half a file.

Matplotlib, openpyxl and fpdf2 are imported inside the functions that use them: DAG files import
this package and must stay cheap to parse.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from imagelabels.reports.model import Column, Report, Table

FORMATS = ("csv", "xlsx", "png", "pdf", "json")

# what the charts are called in file names (``<base>_<chart>.png``), in the order they are written
CHART_NAMES = ("top_labels", "images_over_time")

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def render_report(report: Report, out_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``report`` in each of ``formats`` into ``out_dir``; return the paths written.

    The paths come in the order of ``formats`` (and, within a format, tables in report order),
    so callers and tests can rely on it. Formats are checked before anything is written: a typo
    in a report's configuration fails the task instead of delivering half a report.
    """
    unknown = [f for f in formats if f not in _RENDERERS]
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; supported: {', '.join(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for fmt in dict.fromkeys(formats):  # a format listed twice is rendered once
        paths.extend(_RENDERERS[fmt](report, out_dir))
    return paths


def report_base_name(report: Report) -> str:
    """``label-report_<name>_<interval_key>``: the stem every file of this report shares."""
    return f"label-report_{_safe_name(report.name)}_{report.interval_key}"


def render_csv(report: Report, out_dir: Path) -> list[Path]:
    """One CSV per table (``<base>_<table>.csv``): header = column names, UTF-8, datetimes in
    ISO 8601 (UTC), percents as plain numbers, so any tool can load it without guessing."""
    paths = []
    for t in report.tables:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow([c.name for c in t.columns])
        writer.writerows([csv_cell(v, c) for v, c in zip(row, t.columns, strict=True)] for row in t.rows)
        path = out_dir / f"{report_base_name(report)}_{_safe_name(t.name)}.csv"
        write_bytes(path, buffer.getvalue().encode("utf-8"))
        paths.append(path)
    return paths


def render_json(report: Report, out_dir: Path) -> list[Path]:
    """``<base>.json`` = ``report.to_dict()``: delivery rebuilds the Report from it
    (``Report.from_dict``) without recomputing the aggregations."""
    path = out_dir / f"{report_base_name(report)}.json"
    text = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    write_bytes(path, text.encode("utf-8"))
    return [path]


def render_xlsx(report: Report, out_dir: Path) -> list[Path]:
    """``<base>.xlsx``: a Summary sheet, then one typed sheet per table (see :mod:`.xlsx`)."""
    from imagelabels.reports.xlsx import xlsx_bytes

    path = out_dir / f"{report_base_name(report)}.xlsx"
    write_bytes(path, xlsx_bytes(report))
    return [path]


def render_png(report: Report, out_dir: Path) -> list[Path]:
    """The two charts, ``<base>_top_labels.png`` and ``<base>_images_over_time.png``."""
    from imagelabels.reports.charts import chart_pngs

    paths = []
    for name, png in zip(CHART_NAMES, chart_pngs(report), strict=True):
        path = out_dir / f"{report_base_name(report)}_{name}.png"
        write_bytes(path, png)
        paths.append(path)
    return paths


def render_pdf(report: Report, out_dir: Path) -> list[Path]:
    """``<base>.pdf``: title page with the totals, the charts, then every table (see :mod:`.pdf`)."""
    from imagelabels.reports.pdf import pdf_bytes

    path = out_dir / f"{report_base_name(report)}.pdf"
    write_bytes(path, pdf_bytes(report))
    return [path]


_RENDERERS: dict[str, Callable[[Report, Path], list[Path]]] = {
    "csv": render_csv,
    "xlsx": render_xlsx,
    "png": render_png,
    "pdf": render_pdf,
    "json": render_json,
}


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a reader sees the
    old file or the new one, never a partial one (a rerun overwrites in place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- shared by the formats -------------------------------------------------------------------


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


def _safe_name(name: str) -> str:
    return _UNSAFE_NAME.sub("-", name).strip("-.") or "report"


def _day_span(first: datetime, last: datetime) -> str:
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}\u2013{last.day} {last:%b %Y}"
    if first.year == last.year:
        return f"{first.day} {first:%b} \u2013 {last.day} {last:%b %Y}"
    return f"{first.day} {first:%b %Y} \u2013 {last.day} {last:%b %Y}"
