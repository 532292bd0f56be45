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
from pathlib import Path

from imagelabels.reports.formatting import csv_cell
from imagelabels.reports.model import Report

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


def _safe_name(name: str) -> str:
    return _UNSAFE_NAME.sub("-", name).strip("-.") or "report"
