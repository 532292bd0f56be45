"""Rendering a label report: every format from the one fixed sample report, read back with the
tools a recipient would use (csv, openpyxl, Pillow, pypdf, pdftoppm)."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from PIL import Image, ImageStat
from pypdf import PdfReader

from imagelabels.reports.formatting import interval_label, shorten
from imagelabels.reports.model import Column, Report, Table
from imagelabels.reports.render import FORMATS, render_report, report_base_name
from imagelabels.reports.xlsx import sheet_title
from tests.reports_sample import LONG_URI, empty_report, sample_report

SHEETS = [
    "Summary",
    "Outcomes",
    "Top labels",
    "New labels",
    "Moderation hits",
    "Images per hour",
    "Images by prefix",
    "Near duplicates",
]


def names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def parse(text: str, column: Column) -> Any:
    """A CSV cell back to the model's type."""
    return {"int": int, "float": float, "percent": float, "datetime": datetime.fromisoformat}.get(
        column.type, str
    )(text)


def xlsx_value(value: Any) -> Any:
    """What a model value reads back as from XLSX: naive UTC datetimes, no empty strings (an
    empty cell is no cell)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    return None if value == "" else value


def with_labels(report: Report, *labels: str) -> Report:
    """``report`` with extra top labels (for hostile strings)."""
    top = report.table("top_labels")
    extra = tuple((len(top.rows) + i, label, 5, 50.0) for i, label in enumerate(labels, start=1))
    tables = tuple(dataclasses.replace(t, rows=t.rows + extra) if t is top else t for t in report.tables)
    return dataclasses.replace(report, tables=tables)


@pytest.fixture(scope="module", params=["daily", "weekly"])
def rendered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Report, list[Path]]:
    report = sample_report(request.param)
    out = tmp_path_factory.mktemp(request.param)
    return report, render_report(report, out)


def test_every_format_is_written_in_a_stable_order(rendered: tuple[Report, list[Path]]) -> None:
    report, paths = rendered
    base = report_base_name(report)
    assert base == f"label-report_{report.period}-labels_{report.interval_key}"
    assert names(paths) == [
        *(f"{base}_{t.name}.csv" for t in report.tables),
        f"{base}.xlsx",
        f"{base}_top_labels.png",
        f"{base}_images_over_time.png",
        f"{base}.pdf",
        f"{base}.json",
    ]
    assert sorted(p.name for p in paths[0].parent.iterdir()) == sorted(names(paths))  # no temp files left


def test_csv_files_parse_back_to_the_exact_rows(rendered: tuple[Report, list[Path]]) -> None:
    report, paths = rendered
    by_name = {p.name: p for p in paths}
    for t in report.tables:
        with by_name[f"{report_base_name(report)}_{t.name}.csv"].open(encoding="utf-8", newline="") as f:
            header, *rows = list(csv.reader(f))
        assert header == [c.name for c in t.columns]
        parsed = [tuple(parse(v, c) for v, c in zip(row, t.columns, strict=True)) for row in rows]
        assert parsed == list(t.rows), t.name
    hits = by_name[f"{report_base_name(report)}_moderation_hits.csv"].read_text(encoding="utf-8")
    assert "2026-11-23T09:14:03+00:00" in hits  # ISO 8601, with the offset
    assert LONG_URI in hits  # never shortened in the data


def test_xlsx_has_a_summary_and_one_typed_sheet_per_table(rendered: tuple[Report, list[Path]]) -> None:
    report, paths = rendered
    workbook = openpyxl.load_workbook(next(p for p in paths if p.suffix == ".xlsx"))
    assert workbook.sheetnames == SHEETS

    summary = [[c for c in row if c is not None] for row in workbook["Summary"].iter_rows(values_only=True)]
    assert [f"Label report: {report.name}"] in summary
    assert ["Processed", report.totals.processed] in summary
    assert ["Moderation hits", report.totals.moderation_hits] in summary
    assert ["Generated (UTC)", report.generated_at.replace(tzinfo=None)] in summary

    for t, ws in zip(report.tables, workbook.worksheets[1:], strict=True):
        assert ws.freeze_panes == "A2"
        header = [c.value for c in ws[1]]
        assert header[: len(t.columns)] == [
            c.title + {"datetime": " (UTC)", "percent": " (%)"}.get(c.type, "") for c in t.columns
        ]
        assert all(c.font.b for c in ws[1])
        assert ws.auto_filter.ref == f"A1:{chr(ord('A') + len(t.columns) - 1)}{len(t.rows) + 1}"
        rows = list(ws.iter_rows(min_row=2, max_row=len(t.rows) + 1, values_only=True))
        expected = [tuple(xlsx_value(v) for v in row) for row in t.rows]
        assert rows == expected, t.name
        for col, column in enumerate(t.columns, start=1):
            cells = [ws.cell(r, col) for r in range(2, len(t.rows) + 2)]
            if column.type == "percent":
                # a number (88.0 comes back as the int 88: XLSX stores numbers, not Python types)
                assert all(c.number_format == "0.0" and type(c.value) in (int, float) for c in cells)
            if column.type == "int":
                assert all(type(c.value) is int for c in cells)
            if column.type == "datetime":
                assert all(isinstance(c.value, datetime) and c.is_date for c in cells)
        assert all(8 <= ws.column_dimensions[chr(ord("A") + i)].width <= 60 for i in range(len(t.columns)))

    new_labels = workbook["New labels"]
    assert new_labels.max_row == 3
    assert new_labels["A3"].value == "Labels seen for the first time in this interval."
    moderation = workbook["Moderation hits"]
    assert moderation.column_dimensions["A"].width == 60  # the 217-character URI is capped


def test_xlsx_keeps_text_that_looks_like_a_formula_as_text(tmp_path: Path) -> None:
    report = with_labels(sample_report(), '=HYPERLINK("http://evil.example","click")', "bell\x07")
    (path,) = render_report(report, tmp_path, ["xlsx"])
    ws = openpyxl.load_workbook(path)["Top labels"]
    labels = {ws.cell(r, 2).value: ws.cell(r, 2).data_type for r in range(2, ws.max_row + 1)}
    assert labels['=HYPERLINK("http://evil.example","click")'] == "s"
    assert "bell" in labels  # the control character (not allowed in XLSX) is dropped, not fatal


def test_csv_defuses_text_that_a_spreadsheet_would_run_as_a_formula(tmp_path: Path) -> None:
    evil = '=HYPERLINK("http://evil.example","click")'
    report = with_labels(sample_report(), evil, "@SUM(A1)", "-1+2", "plain")
    paths = render_report(report, tmp_path, ["csv"])
    top = next(p for p in paths if p.name.endswith("_top_labels.csv"))
    with top.open(newline="", encoding="utf-8") as handle:
        labels = [row["label"] for row in csv.DictReader(handle)]
    assert "'" + evil in labels
    assert "'@SUM(A1)" in labels
    assert "'-1+2" in labels
    assert "plain" in labels
    assert evil not in labels


@pytest.mark.parametrize(
    ("title", "used", "expected"),
    [
        ("Top labels", set(), "Top labels"),
        ("Hits: a/b [1]?*", set(), "Hits- a-b -1---"),
        ("A very long table title that Excel would refuse", set(), "A very long table title that Ex"),
        ("Outcomes", {"outcomes"}, "Outcomes (2)"),
        ("outcomes", {"outcomes", "outcomes (2)"}, "outcomes (3)"),
        (
            "A very long table title that Excel would refuse",
            {"a very long table title that ex"},
            "A very long table title tha (2)",
        ),
        ("", set(), "Table"),
    ],
)
def test_sheet_titles_are_valid_and_unique(title: str, used: set[str], expected: str) -> None:
    assert sheet_title(title, used) == expected
    assert len(expected) <= 31


def assert_chart(path: Path) -> None:
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        width, height = image.size
        assert 1000 <= width <= 1400  # 8 inches at 150 dpi
        assert 300 <= height <= 1400
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None
        assert len(colours) > 20  # text, bars, antialiasing: not a blank canvas


def test_charts_are_real_images(rendered: tuple[Report, list[Path]]) -> None:
    _, paths = rendered
    charts = [p for p in paths if p.suffix == ".png"]
    assert len(charts) == 2
    for chart in charts:
        assert_chart(chart)
    with Image.open(charts[0]) as top, Image.open(charts[1]) as over_time:
        assert top.size[1] > over_time.size[1]  # twelve bars make the top-labels chart taller


def test_charts_of_an_empty_interval_say_so(tmp_path: Path) -> None:
    full = render_report(sample_report(), tmp_path / "full", ["png"])
    for report in (empty_report(), empty_report(zero_hours=False), empty_report("weekly")):
        empty = render_report(report, tmp_path / report.period, ["png"])
        for chart, data_chart in zip(empty, full, strict=True):
            assert_chart(chart)
            with Image.open(chart) as a, Image.open(data_chart) as b:
                assert a.size != b.size  # the message chart, not empty axes


def test_charts_do_not_interpret_labels_as_mathtext(tmp_path: Path) -> None:
    report = with_labels(sample_report(), r"price $\frac$ tag", "$5 and $10")
    (chart, _) = render_report(report, tmp_path, ["png"])
    assert_chart(chart)  # "$\frac$" as mathtext raises a ParseException


def pdf_text(path: Path) -> tuple[int, str]:
    reader = PdfReader(path)
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


def test_pdf_has_title_totals_charts_and_tables(rendered: tuple[Report, list[Path]]) -> None:
    report, paths = rendered
    pdf = next(p for p in paths if p.suffix == ".pdf")
    pages, text = pdf_text(pdf)
    # the near_duplicates table (last) spills onto a fifth page of the daily report; the weekly
    # one's last page had room for it
    assert pages == {"daily": 5, "weekly": 5}[report.period]
    assert report.name in text
    assert "Near duplicates" in text
    assert "cat-copy.jpg" in text.replace("\n", "")
    assert interval_label(report) in text
    for caption, value in [
        ("Processed", report.totals.processed),
        ("Indexed", report.totals.indexed),
        ("Rejected", report.totals.rejected),
        ("Distinct labels", 12),
    ]:
        assert caption in text
        assert f"{value:,}" in text
    assert "Café ☕" in text
    assert "<b>bold</b>" in text  # shown as written, not as markup
    assert "Straße & Brücke" in text
    assert f"Page 1 of {pages}" in text
    assert f"Page {pages} of {pages}" in text
    assert "No rows in this interval." in text  # the empty new_labels table
    assert LONG_URI not in text.replace("\n", "")  # shortened so it cannot overflow...
    assert "IMG_0001.jpg" in text.replace("\n", "")  # ...keeping the end that names the object
    if report.period == "weekly":
        assert "First 50 of 168 rows; the CSV/XLSX files hold all of them." in text
    else:
        assert "First 50 of" not in text


def test_every_pdf_page_renders_with_content(rendered: tuple[Report, list[Path]], tmp_path: Path) -> None:
    assert shutil.which("pdftoppm"), "needs poppler-utils (pdftoppm): run scripts/setup_system.sh"
    _, paths = rendered
    pdf = next(p for p in paths if p.suffix == ".pdf")
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == len(PdfReader(pdf).pages)
    for page in pages:
        with Image.open(page) as image:
            assert image.size[0] == pytest.approx(210 / 25.4 * 50, abs=2)  # A4 portrait
            variance = ImageStat.Stat(image.convert("L")).var[0]
        assert variance > 50, page.name


def test_pdf_never_substitutes_into_user_text(tmp_path: Path) -> None:
    report = with_labels(sample_report(), "{nb} pages", "**not bold**")
    (pdf,) = render_report(report, tmp_path, ["pdf"])
    _, text = pdf_text(pdf)
    assert "{nb} pages" in text  # fpdf2's page-count alias is off
    assert "**not bold**" in text  # markdown is off


def test_json_rebuilds_the_report(rendered: tuple[Report, list[Path]]) -> None:
    report, paths = rendered
    path = next(p for p in paths if p.suffix == ".json")
    text = path.read_text(encoding="utf-8")
    assert "Café ☕" in text  # UTF-8, not \u escapes
    assert Report.from_dict(json.loads(text)) == report


def test_rerendering_overwrites_the_same_files(tmp_path: Path) -> None:
    report = sample_report()
    first = render_report(report, tmp_path)
    pdf_before = next(p for p in first if p.suffix == ".pdf").read_bytes()
    second = render_report(dataclasses.replace(report, generated_at=report.generated_at), tmp_path)
    assert first == second
    assert sorted(tmp_path.iterdir()) == sorted(first)
    assert next(p for p in second if p.suffix == ".pdf").read_bytes() == pdf_before  # deterministic


def test_an_empty_report_renders_every_format(tmp_path: Path) -> None:
    report = empty_report(zero_hours=False)
    paths = render_report(report, tmp_path)
    assert len(paths) == len(report.tables) + 5
    for t in report.tables:
        with (tmp_path / f"{report_base_name(report)}_{t.name}.csv").open(encoding="utf-8") as f:
            assert list(csv.reader(f)) == [[c.name for c in t.columns]]
    assert openpyxl.load_workbook(tmp_path / f"{report_base_name(report)}.xlsx").sheetnames == SHEETS
    pages, text = pdf_text(tmp_path / f"{report_base_name(report)}.pdf")
    assert pages == 3
    assert text.count("No rows in this interval.") == len(report.tables)


def test_a_report_with_an_unknown_table_renders_it_generically(tmp_path: Path) -> None:
    extra = Table(
        "cameras",
        "Images by camera",
        (Column("camera", "Camera"), Column("share", "Share", "float")),
        (("Canon EOS", 0.25), ("Nikon Z", 0.75)),
    )
    report = dataclasses.replace(sample_report(), tables=(*sample_report().tables, extra))
    paths = render_report(report, tmp_path, ["csv", "xlsx", "pdf"])
    assert paths[len(report.tables) - 1].name.endswith("_cameras.csv")
    ws = openpyxl.load_workbook(paths[len(report.tables)])["Images by camera"]
    assert [c.value for c in ws[2]] == ["Canon EOS", 0.25]
    assert "Nikon Z" in pdf_text(paths[-1])[1]


def test_links_to_the_detail_view_are_in_csv_and_xlsx_and_left_out_of_the_pdf(tmp_path: Path) -> None:
    """A ``url`` column (the Image search page's detail view of each image): the CSV carries it,
    the XLSX makes it a clickable link, the printed PDF table leaves it out."""
    link = "https://airflow.example.com/image-search/?image=abc123"
    linked = Table(
        "near_duplicates",
        "Near duplicates",
        (
            Column("image", "Image"),
            Column("duplicate_of", "Near duplicate of"),
            Column("link", "Detail view", "url"),
        ),
        (("s3://b/copy.jpg", "s3://b/original.jpg", link), ("s3://b/other.jpg", "s3://b/x.jpg", "")),
    )
    tables = tuple(t for t in sample_report().tables if t.name != "near_duplicates")
    report = dataclasses.replace(sample_report(), tables=(*tables, linked))
    paths = render_report(report, tmp_path, ["csv", "xlsx", "pdf"])
    csv_path = next(p for p in paths if p.name.endswith("_near_duplicates.csv"))
    with csv_path.open(newline="", encoding="utf-8") as handle:
        assert [row["link"] for row in csv.DictReader(handle)] == [link, ""]
    ws = openpyxl.load_workbook(next(p for p in paths if p.suffix == ".xlsx"))["Near duplicates"]
    assert ws.cell(2, 3).value == link
    assert ws.cell(2, 3).hyperlink.target == link
    assert ws.cell(3, 3).hyperlink is None
    text = pdf_text(next(p for p in paths if p.suffix == ".pdf"))[1]
    assert "s3://b/copy.jpg" in text
    assert "airflow.example.com" not in text
    assert "Detail view" not in text


def test_unknown_formats_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'docx'.*supported: csv, xlsx, png, pdf, json"):
        render_report(sample_report(), tmp_path / "out", ["csv", "docx"])
    assert not (tmp_path / "out").exists()
    assert tuple(FORMATS) == ("csv", "xlsx", "png", "pdf", "json")


@pytest.mark.parametrize(
    ("period", "expected"),
    [("daily", "2026-11-23"), ("weekly", "2026-W48 (23\u201329 Nov 2026)")],
)
def test_interval_labels(period: str, expected: str) -> None:
    assert interval_label(sample_report(period)) == expected


def test_shorten_keeps_both_ends() -> None:
    assert shorten("short", 10) == "short"
    cut = shorten(LONG_URI, 60)
    assert len(cut) == 60
    assert cut.startswith("s3://acme-images/")
    assert cut.endswith("/IMG_0001.jpg")


def test_rendering_stays_off_pyplot_and_importing_stays_cheap(tmp_path: Path) -> None:
    """Importing the renderer loads none of the heavy libraries, and charts never touch pyplot
    (its global figure registry would leak in a long-lived worker)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from imagelabels.reports import render\n"
        "heavy = [m for m in ('matplotlib', 'openpyxl', 'fpdf') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from tests.reports_sample import sample_report\n"
        f"render.render_report(sample_report(), Path({str(tmp_path)!r}), ['png', 'pdf'])\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
