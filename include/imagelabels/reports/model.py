"""A label report as data: an interval, its totals and named tables with typed columns.

Every format (CSV, XLSX, PDF, charts, the Slack/webhook summary) is rendered from this one
object, so they cannot disagree. It round-trips through JSON (``to_dict``/``from_dict``): the
report task stores it next to the rendered files and XCom carries only the reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# "url": a link people open (the Image search page's detail view); CSV, XLSX and JSON carry it,
# the PDF (a printed table) leaves it out
ColumnType = Literal["str", "int", "float", "percent", "datetime", "url"]

PERIODS = ("hourly", "daily", "weekly", "monthly")


@dataclass(frozen=True)
class Column:
    """One column: ``name`` is the machine name (CSV header), ``title`` the human header,
    ``type`` drives cell types and number formats (``percent`` holds 0-100 values, e.g. a
    Rekognition confidence)."""

    name: str
    title: str
    type: ColumnType = "str"


@dataclass(frozen=True)
class Table:
    """One table of the report (also one CSV file and one XLSX sheet)."""

    name: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]
    note: str = ""

    def as_dicts(self) -> list[dict[str, Any]]:
        """Rows keyed by column name (the JSON shape)."""
        return [dict(zip((c.name for c in self.columns), row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Totals:
    """The interval's headline figures.

    ``processed`` = ``indexed`` + ``rejected`` + ``failed``: every image the pipeline touched in
    the interval ends in exactly one of the three (a document, a permanent rejection with its
    reason, or a retryable failure that a later run or ``retry_failed`` picks up).
    """

    indexed: int
    rejected: int
    failed: int
    moderation_hits: int
    distinct_labels: int
    new_labels: int
    #: indexed with no label at all: no label search can find them (counted, never silent)
    without_labels: int = 0

    @property
    def processed(self) -> int:
        return self.indexed + self.rejected + self.failed


@dataclass(frozen=True)
class Report:
    """One report for one interval ``[start, end)`` (UTC)."""

    name: str
    period: str
    start: datetime
    end: datetime
    generated_at: datetime
    totals: Totals
    tables: tuple[Table, ...]
    scope: Mapping[str, str] = field(default_factory=dict)

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(f"report has no table {name!r}; tables: {[t.name for t in self.tables]}")

    @property
    def interval_key(self) -> str:
        """The interval as a file-name-safe key, the same on every rerun of the interval
        (``2026-11-28`` for a day, ``2026-11-28T13`` for an hour, ``2026-W48``, ``2026-11``)."""
        return interval_key(self.period, self.start)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "period": self.period,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "generated_at": self.generated_at.isoformat(),
            "scope": dict(self.scope),
            "totals": {
                "processed": self.totals.processed,
                "indexed": self.totals.indexed,
                "rejected": self.totals.rejected,
                "failed": self.totals.failed,
                "moderation_hits": self.totals.moderation_hits,
                "distinct_labels": self.totals.distinct_labels,
                "new_labels": self.totals.new_labels,
                "without_labels": self.totals.without_labels,
            },
            "tables": [
                {
                    "name": t.name,
                    "title": t.title,
                    "note": t.note,
                    "columns": [{"name": c.name, "title": c.title, "type": c.type} for c in t.columns],
                    "rows": [[_json_cell(v) for v in row] for row in t.rows],
                }
                for t in self.tables
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        totals = dict(data["totals"])
        totals.pop("processed", None)
        tables = []
        for t in data["tables"]:
            columns = tuple(Column(c["name"], c["title"], c["type"]) for c in t["columns"])
            rows = tuple(
                tuple(_parse_cell(v, c.type) for v, c in zip(row, columns, strict=True)) for row in t["rows"]
            )
            tables.append(Table(t["name"], t["title"], columns, rows, t.get("note", "")))
        return cls(
            name=data["name"],
            period=data["period"],
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(data["end"]),
            generated_at=datetime.fromisoformat(data["generated_at"]),
            totals=Totals(**totals),
            tables=tuple(tables),
            scope=dict(data.get("scope") or {}),
        )


def interval_key(period: str, start: datetime) -> str:
    """File-name-safe key of the interval that starts at ``start``."""
    if period == "hourly":
        return start.strftime("%Y-%m-%dT%H")
    if period == "daily":
        return start.strftime("%Y-%m-%d")
    if period == "weekly":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "monthly":
        return start.strftime("%Y-%m")
    raise ValueError(f"unknown report period {period!r}; expected one of {', '.join(PERIODS)}")


def _json_cell(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _parse_cell(value: Any, column_type: str) -> Any:
    if column_type == "datetime" and isinstance(value, str):
        return datetime.fromisoformat(value)
    return value


def table(
    name: str, title: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]], note: str = ""
) -> Table:
    """Build a :class:`Table` from lists (rows become tuples)."""
    return Table(name, title, tuple(columns), tuple(tuple(r) for r in rows), note)
