"""fetch_and_prepare against a real moto server: versions, deletions, overwrites, S3 errors."""

from __future__ import annotations

import io
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image

from imagelabels.documents import ObjectInfo
from imagelabels.errors import LabelingError
from imagelabels.preflight.checks import fetch_and_prepare


def _png(width: int, height: int, colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _bucket(s3: Any, *, versioned: bool = False) -> str:
    name = f"preflight-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def _described(s3: Any, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
    """What the pipeline knows after HEAD: the version, the ETag, the size."""
    head = s3.head_object(Bucket=bucket, Key=key, **({"VersionId": version_id} if version_id else {}))
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=int(head["ContentLength"]),
        etag=str(head["ETag"]).strip('"'),
        last_modified=head["LastModified"],
        version_id=head.get("VersionId"),
        content_type=head.get("ContentType"),
    )


def _count_gets(s3: Any) -> list[str]:
    """Record every GetObject the client sends (the key), through botocore's event hooks."""
    calls: list[str] = []
    s3.meta.events.register("before-call.s3.GetObject", lambda params, **_: calls.append(params["url_path"]))
    return calls


def _rejection(s3: Any, obj: ObjectInfo) -> LabelingError:
    with pytest.raises(LabelingError) as caught:
        fetch_and_prepare(s3, obj)
    return caught.value


def test_reads_a_real_object_and_converts_what_needs_it(s3) -> None:  # type: ignore[no-untyped-def]
    bucket = _bucket(s3)
    png = _png(120, 90, "red")
    s3.put_object(Bucket=bucket, Key="as-is.png", Body=png, ContentType="image/png")
    webp = io.BytesIO()
    Image.new("RGB", (100, 80), "blue").save(webp, "WEBP")
    s3.put_object(Bucket=bucket, Key="photo.jpg", Body=webp.getvalue(), ContentType="image/jpeg")

    as_is = fetch_and_prepare(s3, _described(s3, bucket, "as-is.png"))
    converted = fetch_and_prepare(s3, _described(s3, bucket, "photo.jpg"), keep_pixels=True)

    assert (as_is.data, as_is.send_s3_reference, as_is.obj.width, as_is.obj.height) == (png, True, 120, 90)
    assert (converted.source_format, converted.data_format, converted.send_s3_reference) == (
        "WEBP",
        "JPEG",
        False,
    )
    assert Image.open(io.BytesIO(converted.data)).size == converted.pixels.size == (100, 80)


def test_honours_the_version_id_after_an_overwrite(s3) -> None:  # type: ignore[no-untyped-def]
    bucket = _bucket(s3, versioned=True)
    old, new = _png(100, 100, "red"), _png(200, 150, "blue")
    first = s3.put_object(Bucket=bucket, Key="img.png", Body=old)["VersionId"]
    s3.put_object(Bucket=bucket, Key="img.png", Body=new)

    old_prepared = fetch_and_prepare(s3, _described(s3, bucket, "img.png", first))
    new_prepared = fetch_and_prepare(s3, _described(s3, bucket, "img.png"))

    assert (old_prepared.data, old_prepared.obj.version_id, old_prepared.obj.width) == (old, first, 100)
    assert (new_prepared.data, new_prepared.obj.width) == (new, 200)


def test_a_deleted_object_or_version_is_gone_for_good(s3) -> None:  # type: ignore[no-untyped-def]
    plain, versioned = _bucket(s3), _bucket(s3, versioned=True)
    s3.put_object(Bucket=plain, Key="gone.png", Body=_png(100, 100, "red"))
    version = s3.put_object(Bucket=versioned, Key="gone.png", Body=_png(100, 100, "red"))["VersionId"]
    described = [_described(s3, plain, "gone.png"), _described(s3, versioned, "gone.png", version)]
    s3.delete_object(Bucket=plain, Key="gone.png")
    s3.delete_object(Bucket=versioned, Key="gone.png", VersionId=version)

    for obj in described:
        error = _rejection(s3, obj)
        assert (error.reason, error.stage, error.retryable) == ("object_gone", "read", False), error


def test_an_object_overwritten_after_its_head_is_not_labeled_under_the_old_etag(s3) -> None:  # type: ignore[no-untyped-def]
    bucket = _bucket(s3)
    s3.put_object(Bucket=bucket, Key="img.png", Body=_png(100, 100, "red"))
    described = _described(s3, bucket, "img.png")
    s3.put_object(Bucket=bucket, Key="img.png", Body=_png(100, 100, "blue"))

    error = _rejection(s3, described)

    assert (error.reason, error.stage, error.retryable) == ("object_changed", "read", False)


def test_other_s3_errors_are_retryable(s3) -> None:  # type: ignore[no-untyped-def]
    missing_bucket = f"preflight-missing-{uuid.uuid4().hex[:8]}"
    obj = ObjectInfo(missing_bucket, "img.png", 100, "etag", last_modified=datetime.now(UTC))

    error = _rejection(s3, obj)

    assert (error.reason, error.stage, error.retryable) == ("s3_get_NoSuchBucket", "read", True)


def test_empty_and_oversized_objects_are_rejected_without_a_get(s3) -> None:  # type: ignore[no-untyped-def]
    bucket = _bucket(s3)
    s3.put_object(Bucket=bucket, Key="empty.jpg", Body=b"")
    s3.put_object(Bucket=bucket, Key="big.png", Body=_png(100, 100, "red"))
    gets = _count_gets(s3)
    empty = _described(s3, bucket, "empty.jpg")
    big = _described(s3, bucket, "big.png")
    # as S3 would report a 16 MiB object; the bytes stored are small, proving nothing was read
    big = replace(big, size=16 * 1024 * 1024)

    reasons = [_rejection(s3, obj) for obj in (empty, big)]

    assert [(e.reason, e.stage, e.retryable) for e in reasons] == [
        ("empty_object", "preflight", False),
        ("object_too_large", "preflight", False),
    ]
    assert gets == []
    fetch_and_prepare(s3, _described(s3, bucket, "big.png"))
    assert len(gets) == 1  # the hook does see GETs


def _png_bomb_header(side: int) -> bytes:
    """The header of a ``side`` x ``side`` RGBA PNG and a few bytes of data: what preflight reads
    to reject the red team's 1 MB, 250 MP PNG, without its pixels (decoding would need 1 GB)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_a_batch_of_png_bombs_is_recorded_with_its_reason_and_the_photos_are_indexed(  # type: ignore[no-untyped-def]
    s3, es, clean_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 threads, four 15,800 x 15,800 RGBA PNGs among five photos: every bomb is rejected from
    its header with a failure record, every photo labeled, the decode budget never exceeded."""
    from datetime import timedelta

    from imagelabels.documents import FAILURES_INDEX, failure_id
    from imagelabels.engine.indexing import ensure_indices
    from imagelabels.labelers import LabelingSettings
    from imagelabels.labelers.rekognition import RekognitionLabeler
    from imagelabels.pipeline.batch import RunContext, process_batch
    from imagelabels.preflight import decode_budget
    from imagelabels.preflight.decode_budget import DecodeBudget
    from imagelabels.sources.listing import list_objects_in_window

    budget = DecodeBudget(64 * 2**20)
    monkeypatch.setattr(decode_budget, "_process_budget", budget)
    ensure_indices(es)
    bucket = _bucket(s3)
    bombs = [f"bombs/rgba-{index}.png" for index in range(4)]
    for key in bombs:
        s3.put_object(Bucket=bucket, Key=key, Body=_png_bomb_header(15_800))
    for index, colour in enumerate(["red", "green", "blue", "white", "black"]):
        s3.put_object(Bucket=bucket, Key=f"photos/{index}.png", Body=_png(120 + index, 90, colour))
    now = datetime.now(UTC)
    listed = list(
        list_objects_in_window(s3, bucket, "", now - timedelta(minutes=5), now + timedelta(minutes=5))
    )
    labeler = RekognitionLabeler(
        clean_stack.boto3_client("rekognition"), LabelingSettings(features=("labels",))
    )

    report = process_batch(
        s3_client=s3,
        es=es,
        labeler=labeler,
        bucket=bucket,
        objects=listed,
        run=RunContext("image_ingest_s3_hourly", "manual__bombs"),
        concurrency=16,
        refresh="wait_for",
    )

    assert (report.listed, report.labeled, report.indexed) == (9, 5, 5)
    assert dict(report.failed) == {"too_many_pixels": 4}
    assert report.retryable_failures == 0  # a bomb stays a bomb: no retry
    for key in bombs:
        record = es.get(index=FAILURES_INDEX, id=failure_id(bucket, key))["_source"]
        assert (record["stage"], record["reason"], record["retryable"]) == (
            "preflight",
            "too_many_pixels",
            False,
        )
        assert "15800x15800 px (250 MP): PNG cannot be decoded reduced" in record["message"]
    assert budget.granted == 5  # the photos; the bombs never got as far as reserving
    assert budget.peak_reserved <= budget.capacity
