"""Report aggregations against a fixed set of documents and failure records in noida-db, with
every table and total asserted row by row.

The report day is 2026-03-02 (UTC). The set has documents before it (whose labels are therefore
not new), one at exactly ``start`` (in) and one at exactly ``end`` (out), one ingested with a
+02:00 offset, unicode keys, two buckets, folders two deep, keys at the bucket root, an image
without labels, moderated images (one with two moderation labels) and failure records of both
kinds inside and outside the day. Confidences are exact in float32, so Elasticsearch's float
averages and noida-db's give the same rounded values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from imagelabels.documents import INDEX_ALIAS, LabelResult, ObjectInfo, build_document, document_id
from imagelabels.engine.indexing import FailureRecord, bulk_write, ensure_indices, record_failures
from imagelabels.reports.aggregations import TABLE_NAMES, compute_report
from imagelabels.reports.model import Report, Totals

START = datetime(2026, 3, 2, tzinfo=UTC)
END = datetime(2026, 3, 3, tzinfo=UTC)
NOW = datetime(2026, 3, 3, 0, 5, tzinfo=UTC)

pytestmark = pytest.mark.both_engines


def _at(day: int, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, micro, tzinfo=UTC)


@dataclass(frozen=True)
class Doc:
    bucket: str
    key: str
    ingested_at: datetime
    labels: list[tuple[str, float, list[str]]]
    moderation: list[tuple[str, float, str]]


DOCS = [
    # before the interval: Cat, Animal, Dog, Tree, Plant are not new on the 2nd
    Doc("photos", "2026/03/old-cat.jpg", _at(1, 10), [("Cat", 90.0, ["Animal"])], []),
    Doc("archive", "old/dog.jpg", datetime(2026, 2, 20, 8, tzinfo=UTC), [("Dog", 80.0, ["Animal"])], []),
    Doc("photos", "x.jpg", _at(1, 23, 59, 59, 999000), [("Tree", 70.0, ["Plant"])], [("Violence", 90.0, "")]),
    # the interval [2026-03-02, 2026-03-03)
    Doc("photos", "2026/03/cat1.jpg", START, [("Cat", 95.0, ["Animal"]), ("Sofa", 80.0, ["Furniture"])], []),
    Doc("photos", "2026/03/cat2.jpg", _at(2, 0, 30), [("Cat", 85.0, ["Animal"])], []),
    Doc(
        "photos",
        "2026/03/dogs/dog1.jpg",
        _at(2, 1, 15),
        [("Dog", 90.0, ["Animal"]), ("Grass", 60.0, ["Plant"])],
        [],
    ),
    Doc(
        "photos",
        "2026/03/dogs/dog2.jpg",
        _at(2, 1, 45),
        [("Dog", 70.0, ["Animal"])],
        [("Weapons", 72.25, "Violence"), ("Violence", 88.5, "")],
    ),
    Doc(
        "photos",
        "2026/04/ünïcödé/café.jpg",
        _at(2, 3, 5),
        [("Coffee", 99.0, ["Beverage"]), ("Cup", 65.0, [])],
        [],
    ),
    Doc("photos", "root.jpg", _at(2, 3, 10), [("Tree", 75.0, ["Plant"])], []),
    Doc("photos", "日本/寿司.jpg", _at(2, 5), [("Sushi", 93.0, ["Food"])], [("Alcohol", 61.5, "")]),
    Doc("archive", "old/scan.jpg", _at(2, 5, 20), [("Document", 88.0, []), ("Text", 77.0, [])], []),
    Doc("archive", "old/scan2.jpg", _at(2, 5, 20), [("Document", 90.0, []), ("Text", 70.0, [])], []),
    Doc(
        "archive",
        "top.png",
        _at(2, 5, 40),
        [("Cat", 75.0, ["Animal"])],
        [("Nudity", 96.0, "Explicit Nudity"), ("Explicit Nudity", 97.0, "")],
    ),
    Doc("archive", "new/deep/er/file.jpg", _at(2, 10), [("Dog", 80.0, ["Animal"])], []),
    # 12:30 at +02:00 is 10:30 UTC
    Doc(
        "photos",
        "2026/03/cat4.jpg",
        datetime(2026, 3, 2, 12, 30, tzinfo=timezone(timedelta(hours=2))),
        [("Cat", 80.0, ["Animal"])],
        [],
    ),
    Doc("photos", "2026/03/none.jpg", _at(2, 12), [], []),
    Doc("photos", "2026/03/cat3.jpg", _at(2, 23, 59, 59), [("Cat", 90.0, ["Animal"])], []),
    # at exactly end, and later: out
    Doc("photos", "2026/03/at-end.jpg", END, [("Zebra", 99.0, ["Animal"])], [("Violence", 99.0, "")]),
    Doc("photos", "2026/03/later.jpg", _at(4, 9), [("Giraffe", 90.0, ["Animal"])], []),
]

# (bucket, key, reason, retryable, failed_at)
FAILURES = [
    ("photos", "2026/03/big.tif", "too_large", False, _at(2, 2)),
    ("photos", "2026/03/bad.jpg", "corrupt", False, _at(2, 4)),
    ("photos", "2026/03/huge.jpg", "too_large", False, _at(2, 6)),
    ("archive", "x.jpg", "throttled", True, _at(2, 7)),
    ("photos", "2026/03/old.jpg", "corrupt", False, _at(1, 12)),
    ("photos", "2026/03/late.jpg", "throttled", True, END),
]


def _document(doc: Doc) -> dict[str, Any]:
    obj = ObjectInfo(doc.bucket, doc.key, 100, f"etag-{doc.key}", doc.ingested_at - timedelta(minutes=5))
    result = LabelResult(
        [
            {"Name": name, "Confidence": confidence, "Parents": [{"Name": p} for p in parents]}
            for name, confidence, parents in doc.labels
        ],
        "local",
        "test-1",
        50.0,
        10,
        features=("labels", "moderation"),
        moderation_labels=[
            {"Name": name, "Confidence": confidence, "ParentName": parent}
            for name, confidence, parent in doc.moderation
        ],
        moderation_model_version="test-1",
    )
    document = build_document(obj, result, dag_id="d", run_id="r", ingested_at=doc.ingested_at)
    assert document["ingested_at"] == doc.ingested_at.isoformat()
    assert doc.ingested_at.tzinfo is not None
    return document


def seed(
    es: Any, docs: list[Doc] = DOCS, failures: list[tuple[str, str, str, bool, datetime]] = FAILURES
) -> None:
    """Index ``docs`` and record ``failures`` (one ``record_failures`` call per failure time)."""
    ensure_indices(es)
    actions = [
        {
            "_op_type": "create",
            "_index": INDEX_ALIAS,
            "_id": document_id(doc.bucket, doc.key, None, f"etag-{doc.key}"),
            "_source": _document(doc),
        }
        for doc in docs
    ]
    outcome = bulk_write(es, actions, refresh="wait_for")
    assert (outcome.created, outcome.failures) == (len(actions), [])
    for bucket, key, reason, retryable, failed_at in failures:
        record = FailureRecord(bucket, key, "preflight", reason, f"{reason}: {key}", retryable)
        written = record_failures(
            es, [record], dag_id="d", run_id="r", failed_at=failed_at, refresh="wait_for"
        )
        assert (written.created, written.failures) == (1, [])


UI = "https://airflow.example.com"


@pytest.fixture(autouse=True)
def ui_base_url(monkeypatch):  # type: ignore[no-untyped-def]
    """Reports link images to the Image search page's detail view once the UI's URL is known."""
    monkeypatch.setenv("IMAGELABELS_UI_BASE_URL", UI)


def _page(location: str) -> str:
    """The detail-view link of the seeded document at ``s3://bucket/key``."""
    from urllib.parse import quote

    bucket, _, key = location.removeprefix("s3://").partition("/")
    return f"{UI}/image-search/?image={quote(document_id(bucket, key, None, f'etag-{key}'), safe='')}"


@pytest.fixture
def seeded(es):  # type: ignore[no-untyped-def]
    seed(es)
    return es


def _report(es: Any, **kwargs: Any) -> Report:
    arguments: dict[str, Any] = {"name": "labels", "period": "daily", "start": START, "end": END, "now": NOW}
    arguments.update(kwargs)
    return compute_report(es, **arguments)


def _rows(report: Report, name: str) -> list[tuple[Any, ...]]:
    return list(report.table(name).rows)


def _hours(start: datetime, counts: dict[int, int], hours: int = 24) -> list[tuple[datetime, int]]:
    return [(start + timedelta(hours=h), counts.get(h, 0)) for h in range(hours)]


def test_every_table_and_total_of_the_day(seeded) -> None:  # type: ignore[no-untyped-def]
    report = _report(seeded)

    assert (report.name, report.period, report.start, report.end) == ("labels", "daily", START, END)
    assert report.generated_at == NOW
    assert report.scope == {}
    assert [t.name for t in report.tables] == list(TABLE_NAMES)
    assert report.totals == Totals(
        indexed=14,
        rejected=3,
        failed=1,
        moderation_hits=3,
        distinct_labels=15,
        new_labels=10,
        without_labels=1,  # the one document without labels
    )
    assert report.totals.processed == 18

    assert _rows(report, "outcomes") == [
        ("indexed", "", 14),
        ("rejected", "too_large", 2),
        ("rejected", "corrupt", 1),
        ("failed", "throttled", 1),
    ]
    # nested Labels (parents are not labels of their own here), ties by name
    assert _rows(report, "top_labels") == [
        (1, "Cat", 5, 85.0),
        (2, "Dog", 3, 80.0),
        (3, "Document", 2, 89.0),
        (4, "Text", 2, 73.5),
        (5, "Coffee", 1, 99.0),
        (6, "Cup", 1, 65.0),
        (7, "Grass", 1, 60.0),
        (8, "Sofa", 1, 80.0),
        (9, "Sushi", 1, 93.0),
        (10, "Tree", 1, 75.0),
    ]
    # label_names (with parents) not on any document before START: not Cat/Animal/Dog/Tree/Plant
    assert _rows(report, "new_labels") == [
        ("Document", 2),
        ("Text", 2),
        ("Beverage", 1),
        ("Coffee", 1),
        ("Cup", 1),
        ("Food", 1),
        ("Furniture", 1),
        ("Grass", 1),
        ("Sofa", 1),
        ("Sushi", 1),
    ]
    assert _rows(report, "moderation_hits") == [
        ("s3://archive/top.png", "Explicit Nudity", 97.0, _at(2, 5, 40), _page("s3://archive/top.png")),
        ("s3://archive/top.png", "Nudity", 96.0, _at(2, 5, 40), _page("s3://archive/top.png")),
        ("s3://photos/日本/寿司.jpg", "Alcohol", 61.5, _at(2, 5), _page("s3://photos/日本/寿司.jpg")),
        (
            "s3://photos/2026/03/dogs/dog2.jpg",
            "Violence",
            88.5,
            _at(2, 1, 45),
            _page("s3://photos/2026/03/dogs/dog2.jpg"),
        ),
        (
            "s3://photos/2026/03/dogs/dog2.jpg",
            "Weapons",
            72.25,
            _at(2, 1, 45),
            _page("s3://photos/2026/03/dogs/dog2.jpg"),
        ),
    ]
    assert report.table("moderation_hits").note == ""
    assert all(row[3].utcoffset() == timedelta(0) for row in _rows(report, "moderation_hits"))
    # every hour of the day, zeros included; cat4 (+02:00) counts at 10:00 UTC
    assert _rows(report, "images_per_hour") == _hours(START, {0: 2, 1: 2, 3: 2, 5: 4, 10: 2, 12: 1, 23: 1})
    assert _rows(report, "by_prefix") == [
        ("photos", "2026/", 8),
        ("archive", "old/", 2),
        ("archive", "(root)", 1),
        ("archive", "new/", 1),
        ("photos", "(root)", 1),
        ("photos", "日本/", 1),
    ]
    # the report survives its JSON round trip unchanged
    assert Report.from_dict(report.to_dict()) == report


def test_near_duplicates_lists_the_flagged_documents_of_the_interval(es) -> None:  # type: ignore[no-untyped-def]
    """Documents flagged at index time (``visual.near_duplicate_of``) inside the interval, newest
    first, with their original's location; the scope applies; an original deleted since says so."""
    seed(es)
    original = document_id("photos", "2026/03/old-cat.jpg", None, "etag-2026/03/old-cat.jpg")
    flagged = {
        "2026/03/cat2.jpg": original,
        "2026/03/dogs/dog1.jpg": "0" * 64,  # an original no longer indexed
        "old/scan2.jpg": document_id("archive", "old/scan.jpg", None, "etag-old/scan.jpg"),
    }
    for doc in DOCS:
        if doc.key in flagged:
            es.update(
                index=INDEX_ALIAS,
                id=document_id(doc.bucket, doc.key, None, f"etag-{doc.key}"),
                doc={"visual": {"phash": "0" * 16, "near_duplicate_of": flagged[doc.key]}},
                refresh="wait_for",
            )

    report = _report(es)

    assert _rows(report, "near_duplicates") == [
        (
            "s3://archive/old/scan2.jpg",
            "s3://archive/old/scan.jpg",
            _at(2, 5, 20),
            _page("s3://archive/old/scan2.jpg"),
        ),
        (
            "s3://photos/2026/03/dogs/dog1.jpg",
            "(no longer indexed)",
            _at(2, 1, 15),
            _page("s3://photos/2026/03/dogs/dog1.jpg"),
        ),
        (
            "s3://photos/2026/03/cat2.jpg",
            "s3://photos/2026/03/old-cat.jpg",
            _at(2, 0, 30),
            _page("s3://photos/2026/03/cat2.jpg"),
        ),
    ]
    assert _rows(_report(es, bucket="archive"), "near_duplicates") == [
        (
            "s3://archive/old/scan2.jpg",
            "s3://archive/old/scan.jpg",
            _at(2, 5, 20),
            _page("s3://archive/old/scan2.jpg"),
        )
    ]
    capped = _report(es, duplicate_limit=1).table("near_duplicates")
    assert len(capped.rows) == 1
    assert "1 of 3" in capped.note


def test_prefix_depth_two_counts_shallower_keys_as_root(seeded) -> None:  # type: ignore[no-untyped-def]
    report = _report(seeded, prefix_depth=2)
    assert _rows(report, "by_prefix") == [
        ("photos", "2026/03/", 7),
        ("archive", "(root)", 3),
        ("photos", "(root)", 2),
        ("archive", "new/deep/", 1),
        ("photos", "2026/04/", 1),
    ]


def test_top_n_cuts_ties_by_name(seeded) -> None:  # type: ignore[no-untyped-def]
    report = _report(seeded, top_n=3)
    assert _rows(report, "top_labels") == [(1, "Cat", 5, 85.0), (2, "Dog", 3, 80.0), (3, "Document", 2, 89.0)]


def test_moderation_table_is_capped_with_a_note_but_the_total_is_not(seeded) -> None:  # type: ignore[no-untyped-def]
    report = _report(seeded, moderation_limit=2)
    assert report.totals.moderation_hits == 3
    assert _rows(report, "moderation_hits") == [
        ("s3://archive/top.png", "Explicit Nudity", 97.0, _at(2, 5, 40), _page("s3://archive/top.png")),
        ("s3://archive/top.png", "Nudity", 96.0, _at(2, 5, 40), _page("s3://archive/top.png")),
        ("s3://photos/日本/寿司.jpg", "Alcohol", 61.5, _at(2, 5), _page("s3://photos/日本/寿司.jpg")),
    ]
    assert "2 of 3" in report.table("moderation_hits").note

    with pytest.MonkeyPatch.context() as unset:  # no UI URL known: no link, the rows stay
        unset.delenv("IMAGELABELS_UI_BASE_URL")
        unlinked = _report(seeded, moderation_limit=2)
    assert [row[:4] for row in _rows(unlinked, "moderation_hits")] == [
        row[:4] for row in _rows(report, "moderation_hits")
    ]
    assert {row[4] for row in _rows(unlinked, "moderation_hits")} == {""}

    none_listed = _report(seeded, moderation_limit=0)
    assert _rows(none_listed, "moderation_hits") == []
    assert "0 of 3" in none_listed.table("moderation_hits").note


def test_bucket_and_folder_prefix_scope_every_query(seeded) -> None:  # type: ignore[no-untyped-def]
    report = _report(seeded, bucket="photos", prefix="2026/03/")

    assert report.scope == {"bucket": "photos", "prefix": "2026/03/"}
    assert report.totals == Totals(
        indexed=7,
        rejected=3,
        failed=0,
        moderation_hits=1,
        distinct_labels=7,
        new_labels=5,
        without_labels=1,  # 2026/03/none.jpg
    )
    assert _rows(report, "outcomes") == [
        ("indexed", "", 7),
        ("rejected", "too_large", 2),
        ("rejected", "corrupt", 1),
    ]
    assert [row[1:3] for row in _rows(report, "top_labels")] == [
        ("Cat", 4),
        ("Dog", 2),
        ("Grass", 1),
        ("Sofa", 1),
    ]
    # Dog and Plant were seen before the 2nd, but not under photos/2026/03/
    assert _rows(report, "new_labels") == [
        ("Dog", 2),
        ("Furniture", 1),
        ("Grass", 1),
        ("Plant", 1),
        ("Sofa", 1),
    ]
    assert [row[:2] for row in _rows(report, "moderation_hits")] == [
        ("s3://photos/2026/03/dogs/dog2.jpg", "Violence"),
        ("s3://photos/2026/03/dogs/dog2.jpg", "Weapons"),
    ]
    assert _rows(report, "images_per_hour") == _hours(START, {0: 2, 1: 2, 10: 1, 12: 1, 23: 1})
    assert _rows(report, "by_prefix") == [("photos", "2026/", 7)]


def test_key_prefix_that_is_not_a_folder_and_unicode_prefix(seeded) -> None:  # type: ignore[no-untyped-def]
    cats = _report(seeded, prefix="2026/03/cat")
    assert cats.scope == {"prefix": "2026/03/cat"}
    assert (cats.totals.indexed, cats.totals.rejected, cats.totals.failed) == (4, 0, 0)
    assert _rows(cats, "top_labels") == [(1, "Cat", 4, 87.5), (2, "Sofa", 1, 80.0)]

    sushi = _report(seeded, prefix="日本/")
    assert sushi.totals == Totals(
        indexed=1, rejected=0, failed=0, moderation_hits=1, distinct_labels=2, new_labels=2
    )
    assert _rows(sushi, "by_prefix") == [("photos", "日本/", 1)]

    archive = _report(seeded, bucket="archive")
    assert _rows(archive, "outcomes") == [("indexed", "", 4), ("failed", "throttled", 1)]
    # Dog was on an archive document before the 2nd; Animal too
    assert _rows(archive, "new_labels") == [("Document", 2), ("Text", 2), ("Cat", 1)]


def test_the_interval_is_half_open(seeded) -> None:  # type: ignore[no-untyped-def]
    first_hour = _report(seeded, period="hourly", start=START, end=START + timedelta(hours=1))
    assert first_hour.totals.indexed == 2  # cat1 at exactly start is in
    assert _rows(first_hour, "images_per_hour") == [(START, 2)]

    last_hour = _report(seeded, period="hourly", start=END - timedelta(hours=1), end=END)
    assert last_hour.totals.indexed == 1  # cat3 at 23:59:59; at-end.jpg (exactly END) is out
    assert last_hour.totals.moderation_hits == 0
    assert [row[1] for row in _rows(last_hour, "top_labels")] == ["Cat"]

    next_day = _report(seeded, start=END, end=END + timedelta(days=1))
    assert next_day.totals == Totals(
        indexed=1, rejected=0, failed=1, moderation_hits=1, distinct_labels=2, new_labels=1
    )
    assert _rows(next_day, "new_labels") == [("Zebra", 1)]  # Animal was seen before
    assert _rows(next_day, "outcomes") == [("indexed", "", 1), ("failed", "throttled", 1)]


def test_hours_of_an_interval_that_starts_mid_hour(seeded) -> None:  # type: ignore[no-untyped-def]
    report = _report(seeded, start=_at(2, 0, 30), end=_at(2, 3, 6))
    assert _rows(report, "images_per_hour") == [
        (_at(2, 0), 1),
        (_at(2, 1), 2),
        (_at(2, 2), 0),
        (_at(2, 3), 1),
    ]
    assert report.totals.indexed == 4


def test_nothing_ever_ingested_gives_an_all_zero_report(es) -> None:  # type: ignore[no-untyped-def]
    assert not es.indices.exists(index=INDEX_ALIAS)
    report = _report(es, bucket="photos")
    _assert_all_zero(report)

    ensure_indices(es)
    _assert_all_zero(_report(es, bucket="photos"))


def _assert_all_zero(report: Report) -> None:
    assert report.totals == Totals(0, 0, 0, 0, 0, 0)
    assert _rows(report, "outcomes") == [("indexed", "", 0)]
    assert _rows(report, "images_per_hour") == _hours(START, {})
    for name in ("top_labels", "new_labels", "moderation_hits", "by_prefix"):
        assert _rows(report, name) == [], name
        assert report.table(name).note == ""


def test_a_day_with_documents_only_before_it_is_empty(es) -> None:  # type: ignore[no-untyped-def]
    seed(es, docs=DOCS[:3], failures=[])
    report = _report(es)
    assert report.totals == Totals(0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"start": datetime(2026, 3, 2)}, "start must be timezone-aware"),
        ({"end": datetime(2026, 3, 3)}, "end must be timezone-aware"),
        ({"now": datetime(2026, 3, 3)}, "now must be timezone-aware"),
        ({"start": END, "end": START}, "start must be before end"),
        ({"end": START}, "start must be before end"),
        ({"period": "yearly"}, "unknown report period 'yearly'"),
        ({"name": ""}, "needs a name"),
        ({"top_n": 0}, "top_n must be at least 1"),
        ({"prefix_depth": 0}, "prefix_depth must be at least 1"),
        ({"moderation_limit": -1}, "moderation_limit must be between 0 and 10000"),
        ({"moderation_limit": 10_001}, "moderation_limit must be between 0 and 10000"),
    ],
)
def test_invalid_arguments_are_refused_before_any_query(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _report(None, **changes)


def test_start_and_end_in_another_zone_are_reported_in_utc(seeded) -> None:  # type: ignore[no-untyped-def]
    plus_two = timezone(timedelta(hours=2))
    report = _report(seeded, start=START.astimezone(plus_two), end=END.astimezone(plus_two))
    assert (report.start, report.end) == (START, END)
    assert report.start.utcoffset() == timedelta(0)
    assert report.totals.indexed == 14
