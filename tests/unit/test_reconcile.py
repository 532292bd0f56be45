"""The reconciliation merge-join as a pure function over sorted streams (table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagelabels.engine.indexing import FailureRef, sorted_hits
from imagelabels.pipeline.reconcile import (
    Decision,
    DeletionLimit,
    IndexedDoc,
    ReconcileCounts,
    StreamOutOfOrder,
    Verdict,
    _act,
    merge,
)
from imagelabels.sources.listing import ListedObject

OLD = datetime(2026, 11, 1, tzinfo=UTC)
WALK = datetime(2026, 11, 22, 3, tzinfo=UTC)


def s3(key: str, etag: str = "", when: datetime = OLD) -> ListedObject:
    return ListedObject(key=key, size=10, etag=etag or f"e-{key}", last_modified=when)


def doc(key: str, etag: str = "", when: datetime | None = OLD, doc_id: str = "") -> IndexedDoc:
    return IndexedDoc(
        key=key, doc_id=doc_id or f"id-{key}-{etag}", etag=etag or f"e-{key}", last_modified=when
    )


def verdicts(decisions: list[Decision]) -> list[tuple[str, str, int]]:
    """(key, verdict, documents to delete) per key, in the merge's order."""
    return [(d.key, d.verdict.value, len(d.delete)) for d in decisions]


@pytest.mark.parametrize(
    ("listed", "indexed", "expected"),
    [
        pytest.param([], [], [], id="both-empty"),
        pytest.param([s3("a"), s3("b")], [], [("a", "missing", 0), ("b", "missing", 0)], id="index-empty"),
        pytest.param([], [doc("a"), doc("b")], [("a", "orphan", 1), ("b", "orphan", 1)], id="bucket-empty"),
        pytest.param(
            [s3("a"), s3("b"), s3("c")],
            [doc("a"), doc("b"), doc("c")],
            [("a", "ok", 0), ("b", "ok", 0), ("c", "ok", 0)],
            id="all-ok",
        ),
        pytest.param(
            [s3("a"), s3("b"), s3("c")],
            [doc("b"), doc("c")],
            [("a", "missing", 0), ("b", "ok", 0), ("c", "ok", 0)],
            id="missing-at-start",
        ),
        pytest.param(
            [s3("a"), s3("b"), s3("c")],
            [doc("a"), doc("c")],
            [("a", "ok", 0), ("b", "missing", 0), ("c", "ok", 0)],
            id="missing-in-the-middle",
        ),
        pytest.param(
            [s3("a"), s3("b"), s3("c")],
            [doc("a"), doc("b")],
            [("a", "ok", 0), ("b", "ok", 0), ("c", "missing", 0)],
            id="missing-at-end",
        ),
        pytest.param(
            [s3("b")],
            [doc("a"), doc("b"), doc("c")],
            [("a", "orphan", 1), ("b", "ok", 0), ("c", "orphan", 1)],
            id="orphans-around",
        ),
        pytest.param(
            [s3("a", etag="new")],
            [doc("a", etag="old")],
            [("a", "missing", 1)],
            id="stale-etag-is-deleted-and-the-object-queued",
        ),
        pytest.param(
            [s3("a", etag="new")],
            [doc("a", etag="new"), doc("a", etag="old"), doc("a", etag="older")],
            [("a", "ok", 2)],
            id="current-kept-old-versions-deleted",
        ),
        pytest.param(
            [s3("a", etag="same")],
            [doc("a", etag="same", doc_id="v1"), doc("a", etag="same", doc_id="v2")],
            [("a", "ok", 1)],
            id="two-versions-same-bytes-one-kept",
        ),
        pytest.param(
            [s3("a/Z.jpg"), s3("a/z.jpg"), s3("a/ä.jpg")],
            [doc("a/Z.jpg"), doc("a/z.jpg"), doc("a/ä.jpg")],
            [("a/Z.jpg", "ok", 0), ("a/z.jpg", "ok", 0), ("a/ä.jpg", "ok", 0)],
            id="unicode-in-utf8-byte-order",
        ),
        pytest.param(
            [s3("a/Z.jpg"), s3("a/ä.jpg")],
            [doc("a/z.jpg"), doc("a/ä.jpg")],
            [("a/Z.jpg", "missing", 0), ("a/z.jpg", "orphan", 1), ("a/ä.jpg", "ok", 0)],
            id="case-differs-is-another-key",
        ),
        pytest.param(
            [s3("a/b"), s3("a/b.jpg"), s3("a/b/c")],
            [doc("a/b"), doc("a/b/c"), doc("a/b/c/d")],
            [("a/b", "ok", 0), ("a/b.jpg", "missing", 0), ("a/b/c", "ok", 0), ("a/b/c/d", "orphan", 1)],
            id="keys-sharing-prefixes",
        ),
        pytest.param(
            [s3("\uff5e.jpg"), s3("\U0001f600.jpg")],
            [doc("\uff5e.jpg"), doc("\U0001f600.jpg")],
            [("\uff5e.jpg", "ok", 0), ("\U0001f600.jpg", "ok", 0)],
            id="astral-after-bmp-as-in-utf8-not-utf16",
        ),
    ],
)
def test_merge_join(listed: list[ListedObject], indexed: list[IndexedDoc], expected: list[tuple]) -> None:
    assert verdicts(list(merge(iter(listed), iter(indexed)))) == expected


@pytest.mark.parametrize(
    "keys",
    [
        ["a/Z.jpg", "a/b", "a/b.jpg", "a/b/c", "a/z.jpg", "a/ä.jpg", "a/\uff5e", "a/\U0001f600"],
        ["", "\x00", "\x7f", "\x80", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff", "\U00010000"],
    ],
)
def test_str_order_is_utf8_byte_order(keys: list[str]) -> None:
    """Why the merge compares ``str``: code-point order equals UTF-8 byte order (S3's and ES's)."""
    assert sorted(keys) == sorted(keys, key=lambda k: k.encode("utf-8"))
    assert sorted(keys) != sorted(keys, key=lambda k: k.encode("utf-16-be")) or len(keys) < 2


@pytest.mark.parametrize(
    ("listed", "indexed", "where"),
    [
        ([s3("b"), s3("a")], [], "S3 listing"),
        ([], [doc("b"), doc("a")], "index"),
        ([], [doc("a"), doc("b"), doc("a")], "index"),
    ],
)
def test_a_stream_out_of_order_stops_the_merge(listed: list, indexed: list, where: str) -> None:
    with pytest.raises(StreamOutOfOrder, match=where):
        list(merge(listed, indexed))


def _one(
    listed: list[ListedObject],
    indexed: list[IndexedDoc],
    failures: list[FailureRef] = (),  # type: ignore[assignment]
    **times: datetime,
) -> Decision:
    (decision,) = merge(listed, indexed, failures, **times)
    return decision


def failure(
    key: str, *, retryable: bool = False, reason: str = "not_an_image", when: datetime = OLD
) -> FailureRef:
    return FailureRef(key=key, record_id=f"f-{key}", retryable=retryable, reason=reason, failed_at=when)


def test_known_bad_is_skipped_only_while_the_failed_version_is_current() -> None:
    bad = failure("a", when=OLD + timedelta(hours=1))
    assert _one([s3("a", when=OLD)], [], [bad]).verdict is Verdict.KNOWN_BAD
    # re-uploaded after the failure: a new version, worth trying again
    assert _one([s3("a", when=OLD + timedelta(hours=2))], [], [bad]).verdict is Verdict.MISSING


@pytest.mark.parametrize(
    ("record", "verdict"),
    [
        (failure("a", retryable=True, reason="rekognition_throttled"), Verdict.MISSING),
        (failure("a", reason="feature_unavailable"), Verdict.MISSING),  # the deployment, not the image
        (failure("a", reason="corrupt_image"), Verdict.KNOWN_BAD),
    ],
)
def test_only_failures_about_the_image_are_known_bad(record: FailureRef, verdict: Verdict) -> None:
    assert _one([s3("a")], [], [record]).verdict is verdict


def test_failure_records_of_indexed_or_vanished_keys_are_obsolete() -> None:
    decisions = list(merge([s3("a")], [doc("a")], [failure("a", retryable=True), failure("b")]))
    assert [(d.key, d.verdict, d.clear_failure is not None) for d in decisions] == [
        ("a", Verdict.OK, True),
        ("b", Verdict.ORPHAN, True),
    ]


def test_missing_keys_keep_their_failure_record_until_labeling_succeeds() -> None:
    assert _one([s3("a")], [], [failure("a", retryable=True)]).clear_failure is None


def test_recent_objects_are_left_to_the_hourly_dag() -> None:
    fresh = s3("a", when=WALK - timedelta(minutes=30))
    assert _one([fresh], [], recent_after=WALK - timedelta(hours=2)).verdict is Verdict.RECENT
    assert _one([fresh], [], recent_after=WALK).verdict is Verdict.MISSING
    assert _one([fresh], [doc("a", when=fresh.last_modified)], recent_after=WALK).verdict is Verdict.OK


def test_documents_newer_than_the_walk_are_spared_not_judged() -> None:
    """The listing may have passed a key before its object was uploaded and indexed."""
    newer = doc("a", etag="uploaded-during-the-walk", when=WALK + timedelta(seconds=5))
    orphan = _one([], [newer], [failure("a", when=WALK)], trust_before=WALK)
    assert (orphan.verdict, orphan.delete, orphan.spared, orphan.clear_failure) == (
        Verdict.ORPHAN,
        (),
        (newer,),
        None,
    )
    stale = _one([s3("a", etag="listed")], [newer, doc("a", etag="old")], trust_before=WALK)
    assert ([d.etag for d in stale.delete], stale.spared) == (["old"], (newer,))


def test_acting_counts_every_verdict_and_yields_only_missing_objects() -> None:
    counts = ReconcileCounts()
    decisions = merge(
        [s3("a"), s3("b"), s3("c", etag="new"), s3("d")],
        [doc("a"), doc("c", etag="old"), doc("x"), doc("y")],
        [failure("d"), failure("z")],
    )
    to_label = list(_act(decisions, counts, deleter=None))
    assert [o.key for o in to_label] == ["b", "c"]
    assert (counts.ok, counts.missing, counts.known_bad, counts.orphans, counts.stale) == (1, 2, 1, 2, 1)
    assert counts.obsolete_failures == 1


def test_merge_is_lazy() -> None:
    """The merge reads at most one key ahead on each stream, never the whole stream."""
    consumed: list[str] = []

    def listing():  # type: ignore[no-untyped-def]
        for key in "abcdefgh":
            consumed.append(key)
            yield s3(key)

    decisions = merge(listing(), iter([doc("a")]))
    assert next(decisions).key == "a"
    assert consumed == ["a", "b", "c"]  # "b" closed the group "a"; "c" closed "b", the next head
    assert next(decisions).key == "b"
    assert consumed == ["a", "b", "c", "d"]


class PagedIndex:
    """Serves ``search_after`` pages the way Elasticsearch does (sorted, ties after the cursor
    excluded), to check that a group of documents sharing a key is never split across pages."""

    def __init__(self, values: list[str]) -> None:
        self.values = sorted(values)
        self.requests = 0

    def search(self, *, size: int, search_after: list[str] | None = None, **_: object) -> dict:
        self.requests += 1
        start = [v for v in self.values if search_after is None or v > search_after[0]]
        hits = [{"_id": f"{n}", "sort": [v], "_source": {}} for n, v in enumerate(start[:size])]
        return {"hits": {"hits": hits}}


@pytest.mark.parametrize("page_size", [1, 2, 3, 4, 100])
def test_sorted_hits_never_split_a_key_across_pages(page_size: int) -> None:
    values = ["a", "b", "b", "b", "c", "d", "d", "e"]
    index = PagedIndex(values)
    hits = list(sorted_hits(index, index="i", field="f", query={}, source=[], page_size=page_size))
    assert [hit["sort"][0] for hit in hits] == values


def test_a_key_with_more_documents_than_a_page_gets_a_larger_page() -> None:
    index = PagedIndex(["a", *["b"] * 9, "c"])
    hits = list(sorted_hits(index, index="i", field="f", query={}, source=[], page_size=2))
    assert [hit["sort"][0] for hit in hits] == ["a", *["b"] * 9, "c"]
    assert index.requests <= 6


# --- the mass-deletion guard ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deletes", "indexed", "refused"),
    [
        pytest.param(0, 0, False, id="nothing-indexed"),
        pytest.param(0, 50, False, id="nothing-to-delete"),
        pytest.param(5, 9, False, id="small-index-under-the-floor"),
        pytest.param(100, 101, False, id="floor-reached-not-all"),
        pytest.param(50, 50, True, id="every-document-even-under-the-floor"),
        pytest.param(1, 1, True, id="the-only-document"),
        pytest.param(101, 400, True, id="over-the-floor-and-over-the-share"),
        pytest.param(200, 1000, False, id="share-reached"),
        pytest.param(201, 1000, True, id="one-over-the-share"),
        pytest.param(19_999, 100_000, False, id="large-index-under-the-share"),
        pytest.param(20_001, 100_000, True, id="large-index-over-the-share"),
    ],
)
def test_deletion_limit_refuses_over_the_share_and_the_floor_and_always_everything(
    deletes: int, indexed: int, refused: bool
) -> None:
    assert (DeletionLimit().refusal(deletes, indexed) is not None) is refused


def test_deletion_limit_names_its_settings_and_reads_them_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert DeletionLimit.from_env() == DeletionLimit(0.2, 100)
    why = DeletionLimit().refusal(300, 1000)
    assert why is not None
    assert "IMAGELABELS_RECONCILE_MAX_DELETE_SHARE" in why
    assert "IMAGELABELS_RECONCILE_DELETE_FLOOR" in why
    monkeypatch.setenv("IMAGELABELS_RECONCILE_MAX_DELETE_SHARE", "0.5")
    monkeypatch.setenv("IMAGELABELS_RECONCILE_DELETE_FLOOR", "0")
    assert DeletionLimit.from_env() == DeletionLimit(0.5, 0)
    assert DeletionLimit.from_env().refusal(300, 1000) is None
    for name, bad in (
        ("IMAGELABELS_RECONCILE_MAX_DELETE_SHARE", "20%"),
        ("IMAGELABELS_RECONCILE_MAX_DELETE_SHARE", "1.5"),
        ("IMAGELABELS_RECONCILE_DELETE_FLOOR", "-1"),
        ("IMAGELABELS_RECONCILE_DELETE_FLOOR", "ten"),
    ):
        with monkeypatch.context() as patched:
            patched.setenv(name, bad)
            with pytest.raises(ValueError, match=f"^{name} must be"):
                DeletionLimit.from_env()
