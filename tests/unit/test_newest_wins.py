"""Which version of a key a batch keeps when the index holds others (pure, table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from imagelabels.engine.indexing import StoredVersion
from imagelabels.pipeline.batch import newest_wins

T = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def stored(key: str, doc_id: str, when: datetime | None) -> StoredVersion:
    return StoredVersion(key=key, doc_id=doc_id, index="images-v2", last_modified=when)


def test_older_versions_are_deleted_and_a_newer_indexed_one_wins() -> None:
    held = {"a": T, "b": T, "c": T, "d": T, "e": T}
    indexed = {
        "a": [stored("a", "a-old", T - timedelta(hours=1)), stored("a", "a-older", T - timedelta(days=2))],
        "b": [stored("b", "b-new", T + timedelta(seconds=1))],  # overwritten since this batch read it
        "c": [stored("c", "c-same-second", T)],  # a tie: the batch that read it last wins
        "d": [stored("d", "d-undated", None)],
        # "e": no other version
    }
    superseded, stale = newest_wins(held, indexed)
    assert superseded == {"b"}
    assert sorted(v.doc_id for v in stale) == ["a-old", "a-older", "c-same-second", "d-undated"]


def test_a_superseded_key_keeps_even_its_older_documents() -> None:
    """The run that wrote the newer version deletes those; this one touches nothing of the key."""
    indexed = {
        "a": [stored("a", "new", T + timedelta(minutes=5)), stored("a", "old", T - timedelta(minutes=5))]
    }
    assert newest_wins({"a": T}, indexed) == ({"a"}, [])


def test_keys_not_held_are_not_touched() -> None:
    assert newest_wins({}, {"a": [stored("a", "x", T)]}) == (set(), [])
