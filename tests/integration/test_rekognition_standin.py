"""The Rekognition labeler inside the pipeline, against the Rekognition stand-in (real boto3 client,
real HTTP, S3Object reads from the moto server): every feature, bytes vs S3 references, throttling
absorbed by retries and by our rate limiter, and what happens when retries run out."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from imagelabels.devstack.standin import rekognition_client
from imagelabels.documents import FAILURES_INDEX, INDEX_ALIAS, failure_id
from imagelabels.engine.indexing import ensure_indices
from imagelabels.labelers import LabelingSettings
from imagelabels.labelers.ratelimit import LocalTokenBucket
from imagelabels.labelers.rekognition import RekognitionLabeler
from imagelabels.pipeline.batch import BatchIncomplete, RunContext, process_batch
from imagelabels.sources.listing import ListedObject, list_objects_in_window

SAMPLES = Path(__file__).resolve().parents[2] / "sample_images"
RUN = RunContext("image_ingest_s3_hourly", "manual__standin")
ALL_FEATURES = ("labels", "moderation", "text", "faces")


def _upload(s3, bucket: str, bodies: dict[str, bytes]) -> list[ListedObject]:  # type: ignore[no-untyped-def]
    s3.create_bucket(Bucket=bucket)
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    now = datetime.now(UTC)
    return list(
        list_objects_in_window(s3, bucket, "", now - timedelta(minutes=5), now + timedelta(minutes=5))
    )


def _webp(name: str) -> bytes:
    buffer = io.BytesIO()
    with Image.open(SAMPLES / name) as image:
        image.convert("RGB").save(buffer, "WEBP")
    return buffer.getvalue()


def _small_jpegs(count: int) -> dict[str, bytes]:
    bodies = {}
    for i in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (96, 96), (i * 7 % 256, 80, 160)).save(buffer, "JPEG")
        bodies[f"many/{i:03d}.jpg"] = buffer.getvalue()
    return bodies


def _run(s3, es, labeler, bucket, objects, concurrency=8):  # type: ignore[no-untyped-def]
    ensure_indices(es)
    return process_batch(
        s3_client=s3,
        es=es,
        labeler=labeler,
        bucket=bucket,
        objects=objects,
        run=RUN,
        concurrency=concurrency,
        refresh="wait_for",
    )


def test_every_feature_lands_in_the_document(s3, es, standin) -> None:  # type: ignore[no-untyped-def]
    server = standin()
    listed = _upload(
        s3,
        "features",
        {"cat.png": (SAMPLES / "chelsea.png").read_bytes(), "coffee.webp": _webp("coffee.png")},
    )
    labeler = RekognitionLabeler(
        rekognition_client(server.url), LabelingSettings(features=ALL_FEATURES, image_properties=True)
    )
    report = _run(s3, es, labeler, "features", listed)
    report.raise_if_incomplete()
    assert (report.labeled, report.indexed) == (2, 2)
    docs = {h["_source"]["s3key"]: h["_source"] for h in es.search(index=INDEX_ALIAS)["hits"]["hits"]}
    for doc in docs.values():
        assert doc["features"] == list(ALL_FEATURES)
        assert doc["Labels"]
        assert all(label["Confidence"] >= 70 for label in doc["Labels"])
        assert doc["ModerationModelVersion"]
        assert doc["moderated"] is bool(doc["ModerationLabels"])
        assert doc["text"] == "\n".join(t["DetectedText"] for t in doc["TextDetections"])
        assert doc["face_count"] == len(doc["FaceDetails"]) >= 1
        assert doc["image_properties"]["quality"]
    # the PNG went as an S3 reference (the stand-in read it from moto), the WebP as JPEG bytes
    assert docs["cat.png"]["preflight"] == {"source_format": "PNG", "transformations": []}
    assert docs["coffee.webp"]["preflight"] == {
        "source_format": "WEBP",
        "transformations": ["converted:WEBP"],
    }
    stats = server.stats()["operations"]
    assert {op: stats[op]["served"] for op in stats} == {
        "DetectLabels": 2,
        "DetectModerationLabels": 2,
        "DetectText": 2,
        "DetectFaces": 2,
    }


def test_label_filters_are_sent_to_rekognition(s3, es, standin) -> None:  # type: ignore[no-untyped-def]
    server = standin()
    listed = _upload(s3, "filters", {"cat.png": (SAMPLES / "chelsea.png").read_bytes()})
    every = RekognitionLabeler(rekognition_client(server.url), LabelingSettings(features=("labels",)))
    _run(s3, es, every, "filters", listed)
    names = es.search(index=INDEX_ALIAS)["hits"]["hits"][0]["_source"]["label_names"]
    assert len(names) > 1
    kept = names[0]
    only = RekognitionLabeler(
        rekognition_client(server.url),
        LabelingSettings(features=("labels",), label_filters={"LabelInclusionFilters": [kept]}),
    )
    es.delete_by_query(index=INDEX_ALIAS, query={"match_all": {}}, refresh=True)
    _run(s3, es, only, "filters", listed)
    labels = es.search(index=INDEX_ALIAS)["hits"]["hits"][0]["_source"]["Labels"]
    assert [label["Name"] for label in labels] == [kept]


def test_throttling_is_retried_until_every_image_is_labeled(s3, es, standin) -> None:  # type: ignore[no-untyped-def]
    server = standin(tps={"DetectLabels": 10}, burst={"DetectLabels": 2})
    listed = _upload(s3, "throttled", _small_jpegs(30))
    client = rekognition_client(server.url, retry_mode="adaptive", max_attempts=15, max_pool_connections=16)
    labeler = RekognitionLabeler(client, LabelingSettings(features=("labels",)))  # no limiter of ours
    report = _run(s3, es, labeler, "throttled", listed, concurrency=16)
    report.raise_if_incomplete()
    assert (report.labeled, report.indexed, sum(report.failed.values())) == (30, 30, 0)
    assert server.stats()["operations"]["DetectLabels"]["throttled"] > 0  # it did hit the quota
    assert es.count(index=INDEX_ALIAS)["count"] == 30


def test_our_rate_limiter_keeps_the_calls_under_the_quota(s3, es, stack) -> None:  # type: ignore[no-untyped-def]
    """The stand-in runs in its own process, as Rekognition runs elsewhere: in this process it would
    share the GIL with the 16 client threads, and on a loaded machine a starved server thread
    admits requests that arrived over a second all at once, against a bucket capped at one
    second's worth - throttles that real Rekognition, timing arrivals at its own front end, would
    not give (seen under CPU contention)."""
    from imagelabels.devstack.standin import StandInConfig
    from imagelabels.devstack.standin.process import fetch_stats, start_standin_process

    url, stop = start_standin_process(StandInConfig(tps={"DetectLabels": 10}, s3_endpoint_url=stack.moto_url))
    try:
        listed = _upload(s3, "limited", _small_jpegs(25))
        client = rekognition_client(url, max_attempts=1, max_pool_connections=16)  # a throttle would fail
        labeler = RekognitionLabeler(
            client, LabelingSettings(features=("labels",)), LocalTokenBucket({"DetectLabels": 10})
        )
        report = _run(s3, es, labeler, "limited", listed, concurrency=16)
        report.raise_if_incomplete()
        assert report.labeled == 25
        assert fetch_stats(url)["operations"]["DetectLabels"]["throttled"] == 0
    finally:
        stop()


def test_throttling_after_retries_is_a_retryable_failure(s3, es, standin) -> None:  # type: ignore[no-untyped-def]
    server = standin(error_rates={"DetectLabels": {"ThrottlingException": 1.0}})
    listed = _upload(s3, "exhausted", {"cat.png": (SAMPLES / "chelsea.png").read_bytes()})
    labeler = RekognitionLabeler(
        rekognition_client(server.url, max_attempts=2), LabelingSettings(features=("labels",))
    )
    report = _run(s3, es, labeler, "exhausted", listed)
    assert dict(report.failed) == {"rekognition_throttled": 1}
    with pytest.raises(BatchIncomplete, match="1 image\\(s\\) must be retried"):
        report.raise_if_incomplete()
    record = es.get(index=FAILURES_INDEX, id=failure_id("exhausted", "cat.png"))["_source"]
    assert (record["stage"], record["retryable"]) == ("label", True)
    assert "throttled after 1 retries" in record["message"]


def test_service_errors_are_retried_and_image_errors_are_not(s3, es, standin) -> None:  # type: ignore[no-untyped-def]
    server = standin(error_rates={"DetectLabels": {"InternalServerError": 0.3}}, seed=7)
    listed = _upload(s3, "flaky", _small_jpegs(20))
    labeler = RekognitionLabeler(
        rekognition_client(server.url, max_attempts=10, max_pool_connections=16),
        LabelingSettings(features=("labels",)),
    )
    report = _run(s3, es, labeler, "flaky", listed)
    report.raise_if_incomplete()
    assert report.labeled == 20
    assert server.stats()["operations"]["DetectLabels"]["injected_errors"] > 0

    rejecting = standin(error_rates={"DetectLabels": {"InvalidImageFormatException": 1.0}})
    listed = _upload(s3, "rejected", {"cat.png": (SAMPLES / "chelsea.png").read_bytes()})
    labeler = RekognitionLabeler(rekognition_client(rejecting.url, max_attempts=10), LabelingSettings())
    report = _run(s3, es, labeler, "rejected", listed)
    report.raise_if_incomplete()  # a bad image is recorded, not retried
    assert dict(report.failed) == {"invalid_image_format": 1}
    assert rejecting.stats()["operations"]["DetectLabels"]["requests"] == 1
