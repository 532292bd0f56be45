"""A realistic, fixed label report built by hand, for tests of rendering and delivery.

It carries the awkward cases every format must survive: unicode labels (``Café ☕``), a label
that looks like markup (``<b>bold</b>``), a 200-character S3 key, an empty table and one row per
hour of the interval (zeros included), so tests need no Elasticsearch to get a report.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from imagelabels.reports.model import Column, Report, Table, Totals, table

START = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday, so the weekly variant is ISO week 48

# a 200-character key (no spaces to break a line at)
_FOLDERS = "uploads/" + "/".join(["customer-archive-2026"] * 9)
LONG_KEY = _FOLDERS[: 200 - len("/IMG_0001.jpg")] + "/IMG_0001.jpg"
LONG_URI = f"s3://acme-images/{LONG_KEY}"

TOP_LABELS = (
    ("Person", 412, 98.71),
    ("Outdoors", 305, 93.4),
    ("Nature", 251, 91.25),
    ("Café ☕", 198, 88.0),
    ("Building", 160, 95.5),
    ("<b>bold</b>", 121, 77.3),
    ("Dog", 97, 96.08),
    ("Car", 84, 99.1),
    ("Tree", 63, 86.42),
    ("Food", 41, 90.0),
    ("Sky", 27, 97.66),
    ("Straße & Brücke", 9, 81.5),
)

# a realistic day: quiet at night, a morning peak and an afternoon peak (UTC)
HOURLY_SHAPE = (0, 0, 1, 0, 2, 5, 12, 28, 47, 61, 58, 52, 44, 49, 63, 71, 66, 48, 31, 20, 12, 7, 3, 1)


def sample_report(period: str = "daily") -> Report:
    """A fixed report of one ``daily`` (the default) or ``weekly`` interval from ``START``.

    The totals agree with the tables (indexed images = the hourly sum = the ``indexed`` outcome),
    so a test can check either against the other.
    """
    days = {"daily": 1, "weekly": 7}[period]
    end = START + timedelta(days=days)
    # every day a little different, so a weekly chart is not flat; the last day is empty
    per_hour = [
        (START + timedelta(days=d, hours=h), 0 if d == 6 else count * (d + 2) // 2)
        for d in range(days)
        for h, count in enumerate(HOURLY_SHAPE)
    ]
    indexed = sum(images for _, images in per_hour)
    rejected = {"too large": 7, "unsupported format": 3, "not an image": 1}
    failed = {"throttled": 2}
    moderation = (
        (LONG_URI, "Suggestive", 91.2, START + timedelta(hours=9, minutes=14, seconds=3)),
        (
            "s3://acme-images/uploads/2026/11/23/beach-0042.jpg",
            "Swimwear",
            87.55,
            START + timedelta(hours=14, minutes=2),
        ),
        (
            "s3://acme-images/uploads/2026/11/23/ünïcødé ☕.png",
            "Alcohol",
            70.0,
            START + timedelta(hours=16, minutes=45),
        ),
    )
    tables = (
        table(
            "outcomes",
            "Outcomes",
            [Column("outcome", "Outcome"), Column("reason", "Reason"), Column("images", "Images", "int")],
            [("indexed", "", indexed)]
            + [("rejected", reason, n) for reason, n in rejected.items()]
            + [("failed", reason, n) for reason, n in failed.items()],
        ),
        table(
            "top_labels",
            "Top labels",
            [
                Column("rank", "Rank", "int"),
                Column("label", "Label"),
                Column("images", "Images", "int"),
                Column("avg_confidence", "Avg. confidence", "percent"),
            ],
            [(rank, label, images, conf) for rank, (label, images, conf) in enumerate(TOP_LABELS, start=1)],
        ),
        table(
            "new_labels",
            "New labels",
            [Column("label", "Label"), Column("images", "Images", "int")],
            [],
            note="Labels seen for the first time in this interval.",
        ),
        table(
            "moderation_hits",
            "Moderation hits",
            [
                Column("image", "Image"),
                Column("label", "Label"),
                Column("confidence", "Confidence", "percent"),
                Column("ingested_at", "Ingested at", "datetime"),
            ],
            moderation,
        ),
        table(
            "images_per_hour",
            "Images per hour",
            [Column("hour", "Hour", "datetime"), Column("images", "Images", "int")],
            per_hour,
        ),
        table(
            "by_prefix",
            "Images by prefix",
            [Column("bucket", "Bucket"), Column("prefix", "Prefix"), Column("images", "Images", "int")],
            [
                ("acme-images", "uploads/", indexed),
                ("acme-images", "uploads/2026/", indexed - 40),
                ("acme-images", "uploads/customer-archive-2026/", 40),
            ],
        ),
        table(
            "near_duplicates",
            "Near duplicates",
            [
                Column("image", "Image"),
                Column("duplicate_of", "Near duplicate of"),
                Column("ingested_at", "Ingested at", "datetime"),
            ],
            [
                (
                    "s3://acme-images/uploads/2026/cat-copy.jpg",
                    "s3://acme-images/uploads/2026/cat.jpg",
                    START + timedelta(hours=3, minutes=12),
                )
            ],
        ),
    )
    return Report(
        name=f"{period}-labels",
        period=period,
        start=START,
        end=end,
        generated_at=end + timedelta(minutes=5, seconds=12),
        totals=Totals(
            indexed=indexed,
            rejected=sum(rejected.values()),
            failed=sum(failed.values()),
            moderation_hits=len(moderation),
            distinct_labels=len(TOP_LABELS),
            new_labels=0,
        ),
        tables=tables,
        scope={"bucket": "acme-images", "prefix": "uploads/"},
    )


def empty_report(period: str = "daily", *, zero_hours: bool = True) -> Report:
    """The same report for an interval in which nothing happened.

    Every table is empty except ``images_per_hour``, which (as the aggregation does) keeps one
    row per hour with 0 images; ``zero_hours=False`` empties that one too.
    """
    full = sample_report(period)

    def rows(t: Table) -> tuple[tuple[object, ...], ...]:
        if zero_hours and t.name == "images_per_hour":
            return tuple((hour, 0) for hour, _ in t.rows)
        return ()

    return Report(
        name=full.name,
        period=full.period,
        start=full.start,
        end=full.end,
        generated_at=full.generated_at,
        totals=Totals(0, 0, 0, 0, 0, 0),
        tables=tuple(Table(t.name, t.title, t.columns, rows(t), t.note) for t in full.tables),
        scope=full.scope,
    )
