"""The report as a PDF (fpdf2): a title page with the totals, the two charts, then every table.

Text is set in DejaVu Sans, which ships inside matplotlib, so unicode labels and keys render
without a system font. Nothing from a label, key or scope is interpreted: fpdf2's markdown and
HTML stay off, and "page x of n" is not done with fpdf2's page-count alias (which would also
replace the alias inside a label) but by laying the document out twice. Long tables are
capped (the CSV/XLSX hold every row) and long cells are shortened in the middle and wrapped, so
nothing runs off the page.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from imagelabels.reports.formatting import (
    column_header,
    display_cell,
    interval_label,
    interval_range,
    numeric,
    scope_label,
    shorten,
    table_rows_note,
    to_utc,
    totals_items,
)
from imagelabels.reports.model import Column, Report, Table

if TYPE_CHECKING:
    from fpdf import FPDF

MAX_ROWS = 50  # per table in the PDF
CELL_CHARS = 140  # a cell longer than this is shortened in the middle (then wrapped)
MARGIN = 16.0  # mm
FONT = "DejaVu"
TABLE_FONT_SIZE = 8.5
CELL_PADDING_X = 1.8

ACCENT = (59, 110, 168)
TEXT = (34, 34, 34)
MUTED = (102, 102, 102)
CARD = (241, 245, 250)
ZEBRA = (246, 248, 251)
RULE = (200, 208, 218)


def pdf_bytes(report: Report) -> bytes:
    """The whole PDF as bytes."""
    from imagelabels.reports.charts import chart_pngs

    pngs = chart_pngs(report)
    pages = _layout(report, pngs, None).pages_count  # the first pass only counts the pages
    return bytes(_layout(report, pngs, pages).output())


def _layout(report: Report, pngs: tuple[bytes, ...], pages: int | None) -> FPDF:
    pdf = _document(report, pages)
    _title_page(pdf, report)
    pdf.add_page()
    _charts(pdf, pngs)
    pdf.add_page()
    for t in report.tables:
        _table(pdf, t)
    return pdf


def _document(report: Report, pages: int | None) -> FPDF:
    """An A4 document with the DejaVu fonts and a footer (report, interval, page x of n)."""
    import matplotlib
    from fpdf import FPDF

    footer_text = f"Label report {report.name} \u00b7 {interval_label(report)}"

    class ReportPDF(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_draw_color(*RULE)
            self.set_line_width(0.2)
            self.line(MARGIN, self.get_y() - 1.5, self.w - MARGIN, self.get_y() - 1.5)
            self.set_font(FONT, "", 7.5)
            self.set_text_color(*MUTED)
            width = (self.w - 2 * MARGIN) / 2
            self.cell(width, 5, shorten(footer_text, 90), align="L")
            page = f"Page {self.page_no()}" + (f" of {pages}" if pages else "")
            self.cell(width, 5, page, align="R")

    pdf = ReportPDF(orientation="portrait", unit="mm", format="A4")
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdf.add_font(FONT, "", fonts / "DejaVuSans.ttf")
    pdf.add_font(FONT, "B", fonts / "DejaVuSans-Bold.ttf")
    pdf.add_font(FONT, "I", fonts / "DejaVuSans-Oblique.ttf")
    pdf.alias_nb_pages("")  # off: fpdf2 would replace "{nb}" anywhere, labels included
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(True, margin=18)
    pdf.set_title(f"Label report {report.name} {interval_label(report)}")
    pdf.set_creator("imagelabels")
    pdf.set_creation_date(to_utc(report.generated_at))  # the same report renders the same bytes
    return pdf


def _title_page(pdf: FPDF, report: Report) -> None:
    pdf.add_page()
    width = pdf.epw
    pdf.set_y(22)
    pdf.set_font(FONT, "B", 9)
    pdf.set_text_color(*ACCENT)
    pdf.set_char_spacing(1.5)
    pdf.cell(width, 5, "LABEL REPORT", new_x="LMARGIN", new_y="NEXT")
    pdf.set_char_spacing(0)
    pdf.ln(2)
    pdf.set_font(FONT, "B", 24)
    pdf.set_text_color(*TEXT)
    pdf.multi_cell(width, 11, report.name, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 14)
    pdf.set_text_color(*MUTED)
    pdf.multi_cell(
        width,
        8,
        f"{report.period.capitalize()} report \u00b7 {interval_label(report)}",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(4)
    pdf.set_draw_color(*ACCENT)
    pdf.set_line_width(0.8)
    pdf.line(MARGIN, pdf.get_y(), MARGIN + 30, pdf.get_y())
    pdf.ln(7)

    details = (
        ("Period", report.period),
        ("Interval", interval_range(report)),
        ("Scope", scope_label(report)),
        ("Generated", f"{to_utc(report.generated_at):%Y-%m-%d %H:%M:%S} UTC"),
    )
    for key, value in details:
        pdf.set_font(FONT, "", 9)
        pdf.set_text_color(*MUTED)
        pdf.cell(32, 6.5, key)
        pdf.set_font(FONT, "", 10)
        pdf.set_text_color(*TEXT)
        pdf.multi_cell(width - 32, 6.5, shorten(value, 300), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(8)

    _heading(pdf, "Totals")
    items = totals_items(report)
    _cards(pdf, items[:4], highlight_first=True)
    pdf.ln(4)
    _cards(pdf, items[4:], highlight_first=False)
    pdf.ln(10)

    _heading(pdf, "In this report")
    entries = [("Charts", "top labels; images over time")] + [
        (t.title or t.name, f"{len(t.rows):,} row{'' if len(t.rows) == 1 else 's'}") for t in report.tables
    ]
    for title, what in entries:
        pdf.set_font(FONT, "", 10)
        pdf.set_text_color(*TEXT)
        pdf.cell(70, 6.5, shorten(title, 40))
        pdf.set_text_color(*MUTED)
        pdf.cell(width - 70, 6.5, what, new_x="LMARGIN", new_y="NEXT")


def _cards(pdf: FPDF, items: list[tuple[str, int]], *, highlight_first: bool) -> None:
    """A row of figure cards: the big number with its caption under it."""
    gap, height = 4.0, 24.0
    card_width = (pdf.epw - gap * (len(items) - 1)) / len(items)
    top = pdf.get_y()
    for i, (caption, value) in enumerate(items):
        x = MARGIN + i * (card_width + gap)
        accent = highlight_first and i == 0
        pdf.set_fill_color(*(ACCENT if accent else CARD))
        pdf.rect(x, top, card_width, height, style="F", round_corners=True, corner_radius=2)
        pdf.set_xy(x + 4, top + 4)
        pdf.set_font(FONT, "B", 20 if len(f"{value:,}") <= 9 else 14)
        pdf.set_text_color(*((255, 255, 255) if accent else TEXT))
        pdf.cell(card_width - 8, 9, f"{value:,}")
        pdf.set_xy(x + 4, top + 14.5)
        pdf.set_font(FONT, "", 9)
        pdf.set_text_color(*((225, 235, 247) if accent else MUTED))
        pdf.cell(card_width - 8, 5, caption)
    pdf.set_xy(MARGIN, top + height)


def _charts(pdf: FPDF, pngs: tuple[bytes, ...]) -> None:
    """The charts at page width, one under the other, on a new page when one does not fit."""
    from PIL import Image

    _heading(pdf, "Charts")
    for png in pngs:
        with Image.open(io.BytesIO(png)) as image:
            px_width, px_height = image.size
        height = pdf.epw * px_height / px_width
        if pdf.get_y() + height > pdf.h - pdf.b_margin:
            pdf.add_page()
        pdf.image(io.BytesIO(png), x=MARGIN, y=pdf.get_y(), w=pdf.epw)
        pdf.set_y(pdf.get_y() + height + 8)


def _table(pdf: FPDF, table: Table) -> None:
    """One table: its heading, then the rows (the header repeated on every page), capped at
    :data:`MAX_ROWS` with a note that says where the rest are. Link columns (``url``) are left
    out: a printed URL is not a link (the XLSX and CSV carry them)."""
    from fpdf.fonts import FontFace

    printed = [i for i, column in enumerate(table.columns) if column.type != "url"]
    table = replace(
        table,
        columns=tuple(table.columns[i] for i in printed),
        rows=tuple(tuple(row[i] for i in printed) for row in table.rows),
    )
    if pdf.get_y() > pdf.h - pdf.b_margin - 45:  # keep a heading with its first rows
        pdf.add_page()
    _heading(pdf, table.title or table.name)
    count = f"{len(table.rows):,} row{'' if len(table.rows) == 1 else 's'}"
    _small(pdf, f"{count}. {table.note}" if table.note else count)
    if not table.rows:
        pdf.set_font(FONT, "I", 9.5)
        pdf.set_text_color(*MUTED)
        pdf.cell(pdf.epw, 7, "No rows in this interval.", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(8)
        return
    shown = table.rows[:MAX_ROWS]
    cells = [
        [shorten(display_cell(v, c), CELL_CHARS) for v, c in zip(row, table.columns, strict=True)]
        for row in shown
    ]
    headers = [column_header(c) for c in table.columns]
    widths = _col_widths(pdf, table.columns, headers, cells)
    pdf.set_font(FONT, "", TABLE_FONT_SIZE)
    pdf.set_text_color(*TEXT)
    pdf.set_draw_color(*RULE)
    pdf.set_line_width(0.2)
    with pdf.table(
        col_widths=widths,
        text_align=tuple("RIGHT" if numeric(c) else "LEFT" for c in table.columns),
        headings_style=FontFace(emphasis="BOLD", color=(255, 255, 255), fill_color=ACCENT),
        cell_fill_color=ZEBRA,
        cell_fill_mode="ROWS",
        borders_layout="HORIZONTAL_LINES",
        line_height=4.4,
        padding=(1.2, CELL_PADDING_X),
        markdown=False,
        wrapmode="WORD",
        repeat_headings=1,
        width=pdf.epw,
    ) as out:
        out.row(headers)
        for row in cells:
            out.row(row)
    if len(table.rows) > len(shown):
        pdf.ln(1.5)
        _small(pdf, table_rows_note(table, len(shown)))
    pdf.ln(8)


def _col_widths(
    pdf: FPDF, columns: tuple[Column, ...], headers: list[str], cells: list[list[str]]
) -> tuple[float, ...]:
    """Column widths (mm) from the content: a column whose longest cell fits in its fair share
    gets exactly that (so short labels and numbers never wrap), the wide ones (URIs) share what
    is left in proportion to their length and wrap inside it. Room to spare goes to the text
    columns, so the numbers stay next to each other instead of spreading across the page."""
    natural = []
    for i, header in enumerate(headers):
        pdf.set_font(FONT, "B", TABLE_FONT_SIZE)
        widest = pdf.get_string_width(header)
        pdf.set_font(FONT, "", TABLE_FONT_SIZE)
        widest = max([widest, *(pdf.get_string_width(row[i]) for row in cells)])
        natural.append(widest + 2 * CELL_PADDING_X + 1)
    widths = list(natural)
    wide = set(range(len(widths)))
    available = pdf.epw
    while wide:
        share = available / len(wide)
        fits = {i for i in wide if natural[i] <= share}
        if not fits:
            total = sum(natural[i] for i in wide)
            for i in wide:
                widths[i] = available * natural[i] / total
            break
        wide -= fits
        available -= sum(natural[i] for i in fits)
    spare = pdf.epw - sum(widths)
    text = [i for i, c in enumerate(columns) if not numeric(c)] or list(range(len(columns)))
    if spare > 0:
        for i in text:
            widths[i] += spare / len(text)
    return tuple(widths)


def _heading(pdf: FPDF, text: str) -> None:
    pdf.set_font(FONT, "B", 13)
    pdf.set_text_color(*TEXT)
    pdf.multi_cell(pdf.epw, 7, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1.5)


def _small(pdf: FPDF, text: str) -> None:
    pdf.set_font(FONT, "", 8.5)
    pdf.set_text_color(*MUTED)
    pdf.multi_cell(pdf.epw, 4.5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
