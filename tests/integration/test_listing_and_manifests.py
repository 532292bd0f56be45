"""Listing and manifests against a real moto server (real HTTP, real pagination)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from imagelabels.pipeline.batch import RunContext
from imagelabels.pipeline.ingest import plan_batches
from imagelabels.sources.listing import ListingStats, list_objects_in_window
from imagelabels.sources.manifests import read_manifest, write_manifests


def _window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(minutes=5), now + timedelta(minutes=5)


def test_pagination_past_1000_keys(s3) -> None:  # type: ignore[no-untyped-def]
    s3.create_bucket(Bucket="many")
    keys = [f"uploads/{n:05d}.jpg" for n in range(1050)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket="many", Key=key, Body=b"x"), keys))
    start, end = _window()
    stats = ListingStats()
    listed = list(list_objects_in_window(s3, "many", "uploads/", start, end, stats=stats))
    assert [o.key for o in listed] == keys
    assert stats.pages == 2
    assert stats.scanned == stats.selected == 1050
    # the same keys are outside an earlier window
    assert list(list_objects_in_window(s3, "many", "uploads/", start - timedelta(hours=1), start)) == []


def test_manifests_round_trip_and_are_excluded_from_listing(s3) -> None:  # type: ignore[no-untyped-def]
    s3.create_bucket(Bucket="photos")
    for key in ["a/1.jpg", "a/2 with space+plus%.jpg", "a/ünïcode.png"]:
        s3.put_object(Bucket="photos", Key=key, Body=b"img")
    start, end = _window()
    listed = list(list_objects_in_window(s3, "photos", "", start, end))
    manifests = list(
        write_manifests(
            s3,
            "photos",
            listed,
            staging_uri="s3://photos/_imagelabels/",
            dag_id="d",
            run_id="manual__2026-11-22T10:00:00+00:00",
            batch_size=2,
        )
    )
    assert [m.count for m in manifests] == [2, 1]
    assert (
        manifests[0].uri
        == "s3://photos/_imagelabels/manifests/d/manual__2026-11-22T10_00_00_00_00/batch-00001.jsonl"
    )
    assert [o for m in manifests for o in read_manifest(s3, m.uri)] == listed
    relisted = list(list_objects_in_window(s3, "photos", "", start, end, exclude_prefixes=["_imagelabels/"]))
    assert relisted == listed


@pytest.mark.parametrize(
    "staging", ["s3://photos/_imagelabels/", "s3://photos/", "s3://photos/tmp", "s3://elsewhere/x/"]
)
def test_a_second_plan_does_not_pick_up_the_first_plans_manifests(s3, es, staging: str) -> None:  # type: ignore[no-untyped-def]
    for bucket in ("photos", "elsewhere"):
        s3.create_bucket(Bucket=bucket)
    for n in range(3):
        s3.put_object(Bucket="photos", Key=f"img{n}.jpg", Body=b"img")
    start, end = _window()

    def plan():  # type: ignore[no-untyped-def]
        return plan_batches(
            s3_client=s3,
            es=es,
            bucket="photos",
            prefix="",
            start=start,
            end=end,
            staging_uri=staging,
            run=RunContext("d", "r"),
            batch_size=2,
        )

    first, second = plan(), plan()
    assert [m.count for m in first.manifests] == [m.count for m in second.manifests] == [2, 1]
    assert second.stats.selected == 3


@pytest.mark.parametrize(
    ("bucket", "batch_size", "error", "message"),
    [
        ("no-such-bucket", 10, RuntimeError, r"cannot list s3://no-such-bucket/in/ .*NoSuchBucket"),
        ("photos", 1001, ValueError, r"batch_size must be within 1\.\.1000, got 1001"),
        ("photos", 0, ValueError, r"batch_size must be within 1\.\.1000, got 0"),
    ],
)
def test_plan_batches_fails_fast_with_a_clear_message(
    s3, es, bucket: str, batch_size: int, error: type, message: str
) -> None:  # type: ignore[no-untyped-def]
    start, end = _window()
    with pytest.raises(error, match=message):
        plan_batches(
            s3_client=s3,
            es=es,
            bucket=bucket,
            prefix="in/",
            start=start,
            end=end,
            staging_uri=f"s3://{bucket}/_imagelabels/",
            run=RunContext("d", "r"),
            batch_size=batch_size,
        )
