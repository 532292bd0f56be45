"""The report as an Excel workbook (openpyxl): a Summary sheet, then one typed sheet per table.

Cells keep their types (numbers are numbers, times are Excel datetimes) so people can sort,
filter and chart in Excel without re-parsing text, which is the point of XLSX over CSV.
"""

from __future__ import annotations

import io
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from imagelabels.reports.formatting import (
    column_header,
    display_cell,
    interval_range,
    scope_label,
    to_utc,
    totals_items,
)
from imagelabels.reports.model import Column, Report, Table

if TYPE_CHECKING:
    from openpyxl.cell.cell import Cell
    from openpyxl.worksheet.worksheet import Worksheet

NUMBER_FORMATS = {
    "int": "#,##0",
    "float": "#,##0.00",
    "percent": "0.0",
    "datetime": "yyyy-mm-dd hh:mm:ss",
}
HEADER_FILL = "DCE6F1"
MAX_WIDTH = 60  # characters; longer cells (S3 URIs) are cut off visually, never in the data
MIN_WIDTH = 8
SHEET_TITLE_CHARS = 31  # Excel's limit
_INVALID_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")


def xlsx_bytes(report: Report) -> bytes:
    """The workbook as bytes: "Summary" first, then the tables in report order."""
    from openpyxl import Workbook

    workbook = Workbook()
    summary = workbook.active
    assert summary is not None  # a new workbook always has its first sheet
    summary.title = "Summary"
    _summary_sheet(summary, report)
    used = {"summary"}
    for t in report.tables:
        title = sheet_title(t.title or t.name, used)
        used.add(title.lower())
        _table_sheet(workbook.create_sheet(title), t)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def sheet_title(title: str, used: set[str]) -> str:
    """A valid sheet title for ``title``: no ``[]:*?/\\``, at most 31 characters, and unique
    (case-insensitively, as Excel compares them) among ``used`` (lower-cased titles)."""
    base = _INVALID_SHEET_CHARS.sub("-", title).strip("' ") or "Table"
    candidate = base[:SHEET_TITLE_CHARS]
    n = 2
    while candidate.lower() in used:
        suffix = f" ({n})"
        candidate = base[: SHEET_TITLE_CHARS - len(suffix)] + suffix
        n += 1
    return candidate


def _summary_sheet(ws: Worksheet, report: Report) -> None:
    from openpyxl.styles import Font

    ws["A1"] = f"Label report: {report.name}"
    _force_text(ws["A1"])
    ws["A1"].font = Font(bold=True, size=14)
    details: list[tuple[str, Any]] = [
        ("Period", report.period),
        ("Interval", interval_range(report)),
        ("Scope", scope_label(report)),
        ("Generated (UTC)", _naive_utc(report.generated_at)),
    ]
    for row, (key, value) in enumerate(details, start=3):
        ws.cell(row, 1, key).font = Font(bold=True)
        cell = ws.cell(row, 2, value)
        if isinstance(value, datetime):
            cell.number_format = NUMBER_FORMATS["datetime"]
        else:
            _force_text(cell)
    first = 3 + len(details) + 1
    _header(ws, first, ("Total", "Images"))
    for row, (caption, value) in enumerate(totals_items(report), start=first + 1):
        ws.cell(row, 1, caption)
        ws.cell(row, 2, value).number_format = NUMBER_FORMATS["int"]
    ws.column_dimensions["A"].width = 20
    ws.column_dimensions["B"].width = min(
        MAX_WIDTH, max(16, len(interval_range(report)) + 2, len(scope_label(report)) + 2)
    )


def _table_sheet(ws: Worksheet, table: Table) -> None:
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    headers = [column_header(c) for c in table.columns]
    _header(ws, 1, headers)
    for r, row in enumerate(table.rows, start=2):
        for c, (value, column) in enumerate(zip(row, table.columns, strict=True), start=1):
            cell = ws.cell(r, c, _cell_value(value, column))
            if column.type in NUMBER_FORMATS and cell.value is not None:
                cell.number_format = NUMBER_FORMATS[column.type]
            if isinstance(cell.value, str):
                _force_text(cell)
            if column.type == "url" and str(value).startswith(("https://", "http://")):
                cell.hyperlink = str(value)  # ours (image_page_url), never a value from an image
                cell.style = "Hyperlink"
    ws.freeze_panes = "A2"
    last = get_column_letter(max(1, len(table.columns)))
    ws.auto_filter.ref = f"A1:{last}{len(table.rows) + 1}"
    for c, (header, column) in enumerate(zip(headers, table.columns, strict=True), start=1):
        values = (display_cell(row[c - 1], column) for row in table.rows)
        width = max([len(header) + 3, *(len(v) for v in values)]) + 2  # + room for the filter arrow
        ws.column_dimensions[get_column_letter(c)].width = max(MIN_WIDTH, min(MAX_WIDTH, width))
    if table.note:
        cell = ws.cell(len(table.rows) + 3, 1, table.note)
        cell.font = Font(italic=True, color="666666")
        _force_text(cell)


def _header(ws: Worksheet, row: int, titles: Any) -> None:
    from openpyxl.styles import Border, Font, PatternFill, Side

    fill = PatternFill("solid", start_color=HEADER_FILL, end_color=HEADER_FILL)
    border = Border(bottom=Side(style="thin", color="8EA9C8"))
    for c, title in enumerate(titles, start=1):
        cell = ws.cell(row, c, title)
        cell.font = Font(bold=True)
        cell.fill = fill
        cell.border = border
        _force_text(cell)


def _cell_value(value: Any, column: Column) -> Any:
    """A typed cell value: Excel has no time zones, so datetimes become naive UTC (the header
    says UTC); control characters, which the XLSX format cannot hold, are dropped from text."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if isinstance(value, datetime):
        return _naive_utc(value)
    if isinstance(value, str):
        return ILLEGAL_CHARACTERS_RE.sub("", value)
    return value


def _naive_utc(value: datetime) -> datetime:
    return to_utc(value).replace(tzinfo=None)


def _force_text(cell: Cell) -> None:
    """Keep a string a string: openpyxl stores text starting with ``=`` as a formula, and a
    label or S3 key must never run as one in the reader's Excel."""
    if isinstance(cell.value, str):
        cell.data_type = "s"
