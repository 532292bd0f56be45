"""One document per current object: the batch that indexes a new version of a key deletes the
documents of its older versions in the same bulk request, and of two runs indexing two versions
of one key the newer version wins whichever writes last."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from imagelabels.documents import FAILURES_INDEX, INDEX_ALIAS, LabelResult, document_id, failure_id
from imagelabels.engine.indexing import ensure_indices
from imagelabels.labelers import LabelingSettings
from imagelabels.labelers.rekognition import RekognitionLabeler
from imagelabels.pipeline.batch import BatchIncomplete, BatchReport, RunContext, process_batch
from imagelabels.preflight.prepared import PreparedImage
from imagelabels.sources.listing import ListedObject, list_objects_in_window
from tests.faults import assert_nothing_lost

pytestmark = pytest.mark.both_engines

SAMPLES = Path(__file__).resolve().parents[2] / "sample_images"
KEY = "in/cat.png"


@pytest.fixture
def labeler(clean_stack):  # type: ignore[no-untyped-def]
    # moto answers DetectLabels only (HTTP 500 for the other operations)
    return RekognitionLabeler(
        clean_stack.boto3_client("rekognition"), LabelingSettings(70, 10, features=("labels",))
    )


def _put(s3, sample: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Upload ``sample`` as ``KEY``; return its HEAD (the version now current)."""
    if "photos" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key=KEY, Body=(SAMPLES / sample).read_bytes(), ContentType="image/png")
    head: dict[str, Any] = s3.head_object(Bucket="photos", Key=KEY)
    return head


def _listed(s3) -> list[ListedObject]:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    return list(
        list_objects_in_window(s3, "photos", "in/", now - timedelta(hours=1), now + timedelta(hours=1))
    )


def _run(s3, es, labeler, objects, run_id: str = "run") -> BatchReport:  # type: ignore[no-untyped-def]
    return process_batch(
        s3_client=s3,
        es=es,
        labeler=labeler,
        bucket="photos",
        objects=objects,
        run=RunContext("image_ingest_s3_hourly", run_id),
        refresh="wait_for",
    )


def _ids(es) -> set[str]:  # type: ignore[no-untyped-def]
    es.indices.refresh(index=INDEX_ALIAS)
    return {hit["_id"] for hit in es.search(index=INDEX_ALIAS, size=100)["hits"]["hits"]}


def _doc_id(head: dict[str, Any]) -> str:
    return document_id("photos", KEY, head.get("VersionId"), str(head["ETag"]))


class HeldLabeler:
    """Labels with ``inner``, but waits in ``label`` until released (a slow run)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.preferred_concurrency = 1
        self.labeling = threading.Event()
        self.release = threading.Event()

    def label(self, image: PreparedImage) -> LabelResult:
        self.labeling.set()
        assert self.release.wait(60), "never released"
        result: LabelResult = self.inner.label(image)
        return result


@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])
def test_an_older_version_written_after_the_newer_one_is_not_indexed(  # type: ignore[no-untyped-def]
    s3, es, labeler, versioned: bool
) -> None:
    """Run A labels version 1 slowly; meanwhile the key is overwritten and run B indexes version 2.
    When A writes, the index already holds a newer version of the key: A's document is not
    created (superseded) and B's is not deleted."""
    ensure_indices(es)
    s3.create_bucket(Bucket="photos")
    if versioned:
        s3.put_bucket_versioning(Bucket="photos", VersioningConfiguration={"Status": "Enabled"})
    old = _put(s3, "chelsea.png")
    held = HeldLabeler(labeler)
    reports: dict[str, BatchReport] = {}
    run_a = threading.Thread(target=lambda: reports.update(a=_run(s3, es, held, _listed(s3), "run-a")))
    run_a.start()
    try:
        assert held.labeling.wait(60)  # A has read version 1 and is labeling it
        time.sleep(1.1)  # S3's LastModified has whole seconds: version 2 is strictly newer
        new = _put(s3, "coffee.png")
        reports["b"] = _run(s3, es, labeler, _listed(s3), "run-b")
    finally:
        held.release.set()
        run_a.join(60)
    assert (reports["b"].indexed, reports["a"].indexed, reports["a"].superseded) == (1, 0, 1)
    assert _ids(es) == {_doc_id(new)} != {_doc_id(old)}
    reports["a"].raise_if_incomplete()  # superseded is not a failure
    assert_nothing_lost(es, s3, "photos", "in/")


def test_the_newer_version_written_last_replaces_the_older_one(s3, es, labeler) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    old = _put(s3, "chelsea.png")
    first = _run(s3, es, labeler, _listed(s3), "run-a")
    assert _ids(es) == {_doc_id(old)}
    new = _put(s3, "coffee.png")
    second = _run(s3, es, labeler, _listed(s3), "run-b")
    assert (first.replaced, second.indexed, second.replaced) == (0, 1, 1)
    assert _ids(es) == {_doc_id(new)}
    again = _run(s3, es, labeler, _listed(s3), "run-c")
    assert (again.already_indexed, again.labeled, again.replaced) == (1, 0, 0)
    assert_nothing_lost(es, s3, "photos", "in/")


class DeletesRefused:
    """The engine, except that every delete of an image document in a bulk request is answered
    500 (the other actions go through)."""

    def __init__(self, es: Any) -> None:
        self._es = es
        self.refused: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._es, name)

    def streaming_bulk(
        self, actions: Iterable[dict[str, Any]], **kwargs: Any
    ) -> Iterator[tuple[bool, dict[str, Any]]]:
        actions = list(actions)
        refused = [a for a in actions if a["_op_type"] == "delete" and a["_index"] != FAILURES_INDEX]
        yield from self._es.streaming_bulk([a for a in actions if a not in refused], **kwargs)
        for action in refused:
            self.refused.append(action["_id"])
            error = {"type": "exception", "reason": "delete refused (fault injected)"}
            yield (
                False,
                {"delete": {"_index": action["_index"], "_id": action["_id"], "status": 500, "error": error}},
            )


def test_a_refused_delete_is_recorded_fails_the_batch_and_the_retry_completes_it(s3, es, labeler) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    old = _put(s3, "chelsea.png")
    _run(s3, es, labeler, _listed(s3))
    new = _put(s3, "coffee.png")
    faulty = DeletesRefused(es)
    report = _run(s3, faulty, labeler, _listed(s3))
    assert faulty.refused == [_doc_id(old)]
    assert (report.indexed, report.replaced, report.failed["delete_500"]) == (1, 0, 1)
    assert [(e.doc_id, e.status) for e in report.index_errors] == [(_doc_id(old), 500)]
    with pytest.raises(BatchIncomplete, match="refused"):
        report.raise_if_incomplete()  # Airflow retries the task
    record = es.get(index=FAILURES_INDEX, id=failure_id("photos", KEY))["_source"]
    assert (record["stage"], record["reason"], record["retryable"]) == ("index", "delete_500", True)
    assert _doc_id(old) in record["message"]
    assert _ids(es) == {_doc_id(old), _doc_id(new)}  # not dropped: still there, and recorded

    retry = _run(s3, es, labeler, _listed(s3))
    retry.raise_if_incomplete()
    assert (retry.already_indexed, retry.replaced) == (1, 1)
    assert _ids(es) == {_doc_id(new)}
    assert es.count(index=FAILURES_INDEX)["count"] == 0
    assert_nothing_lost(es, s3, "photos", "in/")
