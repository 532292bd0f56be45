"""process_batch against moto (S3 + Rekognition) and noida-db: every key ends indexed or recorded."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagelabels.documents import (
    FAILURE_MAPPINGS,
    FAILURES_INDEX,
    INDEX_ALIAS,
    INDEX_VERSION,
    LabelResult,
    document_id,
    failure_id,
    versioned_index_name,
)
from imagelabels.engine.indexing import ensure_indices
from imagelabels.errors import LabelingError
from imagelabels.labelers import LabelingSettings
from imagelabels.labelers.rekognition import RekognitionLabeler
from imagelabels.pipeline.batch import BatchIncomplete, RunContext, process_batch
from imagelabels.preflight.prepared import PreparedImage
from imagelabels.sources.listing import ListedObject, list_objects_in_window

SAMPLES = Path(__file__).resolve().parents[2] / "sample_images"
RUN = RunContext("image_ingest_s3_hourly", "manual__test")
FIXED_CLOCK = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class RecordingLabeler:
    """The real Rekognition labeler (moto server), with chosen keys failing and calls counted."""

    def __init__(self, inner: RekognitionLabeler, failures: dict[str, Exception] | None = None) -> None:
        self.inner = inner
        self.failures = failures or {}
        self.calls: list[str] = []
        self.name = inner.name
        self._lock = threading.Lock()

    def label(self, image: PreparedImage) -> LabelResult:
        key = image.obj.key
        with self._lock:
            self.calls.append(key)
        if key in self.failures:
            raise self.failures[key]
        return self.inner.label(image)


@pytest.fixture
def labeler(clean_stack) -> RecordingLabeler:  # type: ignore[no-untyped-def]
    return RecordingLabeler(
        # moto answers DetectLabels only (HTTP 500 for the other operations)
        RekognitionLabeler(
            clean_stack.boto3_client("rekognition"), LabelingSettings(70, 10, features=("labels",))
        )
    )


def _upload(s3, bucket: str, names: list[str]) -> list[ListedObject]:  # type: ignore[no-untyped-def]
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket)
    for name in names:
        s3.put_object(
            Bucket=bucket, Key=f"in/{name}", Body=(SAMPLES / name).read_bytes(), ContentType="image/png"
        )
    now = datetime.now(UTC)
    return list(
        list_objects_in_window(s3, bucket, "in/", now - timedelta(minutes=5), now + timedelta(minutes=5))
    )


def _run(s3, es, labeler, objects, **kwargs):  # type: ignore[no-untyped-def]
    return process_batch(
        s3_client=s3,
        es=es,
        labeler=labeler,
        bucket="photos",
        objects=objects,
        run=RUN,
        refresh="wait_for",
        clock=lambda: FIXED_CLOCK,
        **kwargs,
    )


def test_batch_indexes_every_image_with_metadata(s3, es, labeler) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    listed = _upload(s3, "photos", ["chelsea.png", "coffee.png", "rocket.jpg"])
    report = _run(s3, es, labeler, listed)
    assert (report.listed, report.labeled, report.indexed, dict(report.failed)) == (3, 3, 3, {})
    report.raise_if_incomplete()
    doc_id = document_id("photos", "in/chelsea.png", None, listed[0].etag)
    doc = es.get(index=INDEX_ALIAS, id=doc_id)["_source"]
    assert doc["object"] == {
        "size": (SAMPLES / "chelsea.png").stat().st_size,
        "content_type": "image/png",
        "etag": listed[0].etag,
        "version_id": None,
        "last_modified": listed[0].last_modified.isoformat(),
        "width": 451,
        "height": 300,
    }
    assert doc["label_names"] == ["Mobile Phone", "Phone"]  # moto's canned DetectLabels answer
    assert doc["preflight"] == {"source_format": "PNG", "transformations": []}
    assert doc["features"] == ["labels"]
    assert not {"ModerationLabels", "moderated"} & doc.keys()  # not run: absent, not "clean"
    assert (doc["labeler"], doc["LabelModelVersion"], doc["ingested_at"]) == (
        "rekognition",
        "3.0",
        FIXED_CLOCK.isoformat(),
    )
    assert es.count(index=FAILURES_INDEX)["count"] == 0


def test_rerun_skips_indexed_images_without_labeling_them_again(s3, es, labeler) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    listed = _upload(s3, "photos", ["chelsea.png", "coffee.png"])
    _run(s3, es, labeler, listed)
    before = {
        h["_id"]: (h["_seq_no"], h["_source"])
        for h in es.search(index=INDEX_ALIAS, seq_no_primary_term=True)["hits"]["hits"]
    }
    labeler.calls.clear()
    again = _run(s3, es, labeler, listed)
    assert (again.already_indexed, again.labeled, labeler.calls) == (2, 0, [])
    after = {
        h["_id"]: (h["_seq_no"], h["_source"])
        for h in es.search(index=INDEX_ALIAS, seq_no_primary_term=True)["hits"]["hits"]
    }
    assert after == before
    relabeled = _run(s3, es, labeler, listed, reprocess=True)
    assert (relabeled.labeled, relabeled.indexed, len(labeler.calls)) == (2, 2, 2)
    assert es.count(index=INDEX_ALIAS)["count"] == 2


def test_bad_image_is_recorded_and_the_batch_goes_on(s3, es, labeler) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    listed = _upload(s3, "photos", ["chelsea.png", "coffee.png"])
    labeler.failures["in/coffee.png"] = LabelingError(
        "invalid_image_format", "Request has invalid image format", retryable=False
    )
    report = _run(s3, es, labeler, listed)
    report.raise_if_incomplete()  # a bad image does not fail the task...
    assert (report.indexed, dict(report.failed)) == (1, {"invalid_image_format": 1})
    record = es.get(index=FAILURES_INDEX, id=failure_id("photos", "in/coffee.png"))["_source"]
    assert record == {  # ...but it is never silently dropped
        "s3bucket": "photos",
        "s3key": "in/coffee.png",
        "stage": "label",
        "reason": "invalid_image_format",
        "message": "Request has invalid image format",
        "retryable": False,
        "attempts": 1,
        "airflow": {"dag_id": RUN.dag_id, "run_id": RUN.run_id},
        "failed_at": FIXED_CLOCK.isoformat(),
    }


def test_retryable_failure_fails_after_writing_and_clears_on_success(s3, es, labeler) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    listed = _upload(s3, "photos", ["chelsea.png", "coffee.png"])
    labeler.failures["in/chelsea.png"] = LabelingError(
        "rekognition_ThrottlingException", "Rate exceeded", retryable=True
    )
    for attempt in (1, 2):
        report = _run(s3, es, labeler, listed)
        with pytest.raises(BatchIncomplete, match="1 image\\(s\\) must be retried"):
            report.raise_if_incomplete()
        record = es.get(index=FAILURES_INDEX, id=failure_id("photos", "in/chelsea.png"))["_source"]
        assert (record["attempts"], record["retryable"]) == (attempt, True)
    assert es.count(index=INDEX_ALIAS)["count"] == 1  # coffee was indexed on the first attempt
    labeler.failures.clear()
    labeler.calls.clear()
    _run(s3, es, labeler, listed).raise_if_incomplete()
    assert labeler.calls == ["in/chelsea.png"]
    assert es.count(index=INDEX_ALIAS)["count"] == 2
    assert es.count(index=FAILURES_INDEX)["count"] == 0


def test_object_deleted_or_overwritten_after_listing(s3, es, labeler) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    listed = _upload(s3, "photos", ["chelsea.png", "coffee.png", "rocket.jpg"])
    s3.delete_object(Bucket="photos", Key="in/chelsea.png")
    s3.put_object(Bucket="photos", Key="in/coffee.png", Body=b"new bytes: a later run's business")
    report = _run(s3, es, labeler, listed)
    assert (report.indexed, report.superseded, dict(report.failed)) == (1, 1, {"object_gone": 1})
    gone = es.get(index=FAILURES_INDEX, id=failure_id("photos", "in/chelsea.png"))["_source"]
    assert (gone["stage"], gone["retryable"]) == ("read", False)


def test_versioned_bucket_uses_the_version_id(s3, es, labeler) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    s3.create_bucket(Bucket="photos")
    s3.put_bucket_versioning(Bucket="photos", VersioningConfiguration={"Status": "Enabled"})
    listed = _upload(s3, "photos", ["rocket.jpg"])
    version = s3.head_object(Bucket="photos", Key="in/rocket.jpg")["VersionId"]
    _run(s3, es, labeler, listed)
    doc = es.get(index=INDEX_ALIAS, id=document_id("photos", "in/rocket.jpg", version, "ignored"))["_source"]
    assert doc["object"]["version_id"] == version


def test_unexpected_labeler_error_is_recorded_and_retried_not_fatal_to_the_batch(s3, es, labeler) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    listed = _upload(s3, "photos", ["chelsea.png", "coffee.png"])
    labeler.failures["in/chelsea.png"] = RuntimeError("model crashed")
    report = _run(s3, es, labeler, listed)
    assert (report.indexed, dict(report.failed)) == (1, {"unexpected_error": 1})
    with pytest.raises(BatchIncomplete):
        report.raise_if_incomplete()
    record = es.get(index=FAILURES_INDEX, id=failure_id("photos", "in/chelsea.png"))["_source"]
    assert (record["message"], record["retryable"]) == ("RuntimeError: model crashed", True)


def test_document_refused_by_elasticsearch_gets_a_failure_record(s3, es, labeler) -> None:  # type: ignore[no-untyped-def]
    # an index whose mapping drifted: `labeler` is numeric, so every document is refused (400)
    es.indices.create(
        index=versioned_index_name(),
        mappings={"properties": {"labeler": {"type": "long"}}},
        aliases={INDEX_ALIAS: {"is_write_index": True}},
    )
    es.indices.create(index=FAILURES_INDEX, mappings=FAILURE_MAPPINGS)
    listed = _upload(s3, "photos", ["chelsea.png"])
    report = _run(s3, es, labeler, listed)
    assert (report.labeled, report.indexed, report.retryable_failures) == (1, 0, 1)
    assert [e.status for e in report.index_errors] == [400]
    with pytest.raises(BatchIncomplete, match="1 document\\(s\\) refused by Elasticsearch"):
        report.raise_if_incomplete()
    record = es.get(index=FAILURES_INDEX, id=failure_id("photos", "in/chelsea.png"))["_source"]
    assert (record["stage"], record["reason"], record["retryable"]) == ("index", "index_400", True)
    assert record["message"]


def test_malformed_labeler_answer_is_recorded_not_fatal(s3, es, labeler) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    listed = _upload(s3, "photos", ["chelsea.png", "coffee.png"])

    class NoConfidence(RecordingLabeler):
        def label(self, image: PreparedImage) -> LabelResult:
            result = super().label(image)
            if image.obj.key == "in/coffee.png":
                return LabelResult([{"Name": "Cup"}], result.labeler, "3.0", 70, 10)
            return result

    report = _run(s3, es, NoConfidence(labeler.inner), listed)
    assert (report.indexed, dict(report.failed)) == (1, {"unexpected_error": 1})
    record = es.get(index=FAILURES_INDEX, id=failure_id("photos", "in/coffee.png"))["_source"]
    assert record["message"] == "KeyError: 'Confidence'"


def test_an_image_indexed_without_labels_is_counted_and_logged(s3, es, labeler, caplog) -> None:  # type: ignore[no-untyped-def]
    """A labeler that finds nothing still gets the image indexed (its other fields are
    searchable), but the batch report counts it and the log names it: never silent."""
    ensure_indices(es)
    listed = _upload(s3, "photos", ["chelsea.png", "coffee.png"])

    class NothingOnCoffee(RecordingLabeler):
        def label(self, image: PreparedImage) -> LabelResult:
            result = super().label(image)
            if image.obj.key == "in/coffee.png":
                return LabelResult([], result.labeler, "3.0", 70, 10)
            return result

    with caplog.at_level("INFO", logger="imagelabels.pipeline.batch"):
        report = _run(s3, es, NothingOnCoffee(labeler.inner), listed)
    assert (report.indexed, report.without_labels) == (2, 1)
    assert report.as_xcom()["without_labels"] == 1
    assert "indexed without labels (no label search finds it): s3://photos/in/coffee.png" in caplog.text
    rerun = _run(s3, es, NothingOnCoffee(labeler.inner), listed)
    assert (rerun.indexed, rerun.without_labels) == (0, 0)  # nothing written again, nothing counted


def test_a_drifted_index_mapping_fails_setup_with_a_clear_message(es) -> None:  # type: ignore[no-untyped-def]
    es.indices.create(index=versioned_index_name(), mappings={"properties": {"labeler": {"type": "long"}}})
    following = versioned_index_name(INDEX_VERSION + 1)
    with pytest.raises(RuntimeError, match=rf"mapping of 'images' conflicts .* reindex into '{following}'"):
        ensure_indices(es)


def test_an_index_from_an_older_version_gains_the_new_fields(es) -> None:  # type: ignore[no-untyped-def]
    concrete = versioned_index_name()  # created by an earlier release of this version
    es.indices.create(
        index=concrete, mappings={"dynamic": "strict", "properties": {"title": {"type": "text"}}}
    )
    ensure_indices(es)
    mapped = es.indices.get_mapping(index=concrete)[concrete]["mappings"]["properties"]
    assert mapped["ModerationLabels"]["type"] == "nested"
    assert es.indices.exists_alias(name=INDEX_ALIAS)
