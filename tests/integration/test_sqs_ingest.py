"""Event-driven ingestion against the moto server, which delivers real S3 -> SQS notifications
(and a real redrive policy), with noida-db and the local labeler: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from imagelabels.documents import INDEX_ALIAS, document_id, versioned_index_name
from imagelabels.labelers import LabelingSettings
from imagelabels.labelers.local import LocalLabeler
from imagelabels.pipeline.batch import BatchIncomplete, RunContext
from imagelabels.pipeline.event_ingest import plan_event_batches, process_event_batch
from imagelabels.sources.sqs import QueueSettings
from tests.faults import assert_nothing_lost
from tests.s3_events import eventbridge_body, s3_event_body, sns_envelope

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"
RUN = RunContext("image_ingest_sqs", "manual__test")
STAGING = "s3://staging-bucket/_imagelabels/"
LABELER = LocalLabeler(LabelingSettings(features=("labels",)))
TRICKY_KEYS = [
    "uploads/plain.png",
    "uploads/with space.png",
    "uploads/plus+sign.png",
    "uploads/100% sure.png",
    "uploads/Straße ünïcødé/猫.png",
    "deep/nested/prefix/a/b/c.png",
]


@pytest.fixture
def sqs(clean_stack):  # type: ignore[no-untyped-def]
    return clean_stack.boto3_client("sqs")


@pytest.fixture
def queue(sqs, s3):  # type: ignore[no-untyped-def]
    """A queue with a dead-letter queue (maxReceiveCount 2), notified by bucket `photos`."""
    dlq = sqs.create_queue(QueueName="images-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    url = sqs.create_queue(QueueName="images-events", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket="staging-bucket")
    s3.create_bucket(Bucket="photos")
    s3.put_bucket_notification_configuration(
        Bucket="photos",
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]
        },
    )
    return {"url": url, "dlq": dlq}


def _drain_and_process(sqs, s3, es, queue_url, *, visibility=60, labeler=LABELER, batch_size=100):  # type: ignore[no-untyped-def]
    settings = QueueSettings(queue_url, wait_seconds=0, visibility_timeout=visibility)
    manifests, drained = plan_event_batches(
        sqs_client=sqs,
        s3_client=s3,
        es=es,
        settings=settings,
        staging_uri=STAGING,
        run=RUN,
        batch_size=batch_size,
    )
    reports = [
        process_event_batch(
            sqs_client=sqs,
            s3_client=s3,
            es=es,
            labeler=labeler,
            manifest_uri=m.uri,
            queue_url=queue_url,
            visibility_timeout=visibility,
            run=RUN,
            refresh="wait_for",
        )
        for m in manifests
    ]
    return drained, reports


def _indexed_keys(es) -> list[str]:  # type: ignore[no-untyped-def]
    es.indices.refresh(index=INDEX_ALIAS)
    hits = es.search(index=INDEX_ALIAS, size=1000)["hits"]["hits"]
    return sorted(hit["_source"]["s3key"] for hit in hits)


def _queue_counts(sqs, url: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attributes[names[0]]), int(attributes[names[1]])


def test_uploads_with_tricky_keys_are_indexed_once_and_messages_deleted(sqs, s3, es, queue) -> None:  # type: ignore[no-untyped-def]
    body = (SAMPLES / "chelsea.png").read_bytes()
    for key in TRICKY_KEYS:
        s3.put_object(Bucket="photos", Key=key, Body=body)
    drained, reports = _drain_and_process(sqs, s3, es, queue["url"])
    assert drained.kinds["test"] == 1  # the s3:TestEvent of the notification setup, acknowledged
    assert sum(r["indexed"] for r in reports) == len(TRICKY_KEYS)
    assert _indexed_keys(es) == sorted(TRICKY_KEYS)  # moto encodes even "/" as %2F: decoded right
    assert _queue_counts(sqs, queue["url"]) == (0, 0)
    again, _ = _drain_and_process(sqs, s3, es, queue["url"])
    assert again.messages == 0
    assert _indexed_keys(es) == sorted(TRICKY_KEYS)


def test_a_deletion_removes_the_document(sqs, s3, es, queue) -> None:  # type: ignore[no-untyped-def]
    body = (SAMPLES / "coffee.png").read_bytes()
    for key in ("uploads/keep.png", "uploads/gone soon.png"):
        s3.put_object(Bucket="photos", Key=key, Body=body)
    _drain_and_process(sqs, s3, es, queue["url"])
    s3.delete_object(Bucket="photos", Key="uploads/gone soon.png")
    _, reports = _drain_and_process(sqs, s3, es, queue["url"])
    assert sum(r["documents_deleted"] for r in reports) == 1
    assert _indexed_keys(es) == ["uploads/keep.png"]


def _documents(es) -> dict[str, tuple[int, dict]]:  # type: ignore[no-untyped-def]
    es.indices.refresh(index=INDEX_ALIAS)
    hits = es.search(index=INDEX_ALIAS, size=100, seq_no_primary_term=True)["hits"]["hits"]
    return {hit["_id"]: (hit["_seq_no"], hit["_source"]) for hit in hits}


@pytest.mark.both_engines
@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])
def test_an_overwrite_leaves_one_document_a_redelivery_changes_nothing_a_deletion_leaves_none(  # type: ignore[no-untyped-def]
    sqs, s3, es, queue, versioned: bool
) -> None:
    if versioned:
        s3.put_bucket_versioning(Bucket="photos", VersioningConfiguration={"Status": "Enabled"})
    key = "uploads/cat.png"
    s3.put_object(Bucket="photos", Key=key, Body=(SAMPLES / "chelsea.png").read_bytes())
    _drain_and_process(sqs, s3, es, queue["url"])
    old = s3.head_object(Bucket="photos", Key=key)
    assert set(_documents(es)) == {document_id("photos", key, old.get("VersionId"), old["ETag"])}

    s3.put_object(Bucket="photos", Key=key, Body=(SAMPLES / "coffee.png").read_bytes())  # overwritten
    _, reports = _drain_and_process(sqs, s3, es, queue["url"])
    new = s3.head_object(Bucket="photos", Key=key)
    documents = _documents(es)
    assert set(documents) == {document_id("photos", key, new.get("VersionId"), new["ETag"])}
    assert (sum(r["indexed"] for r in reports), sum(r.get("replaced", 0) for r in reports)) == (1, 1)
    assert_nothing_lost(es, s3, "photos", "uploads/")

    # the same upload event delivered again (at-least-once delivery): nothing changes
    sqs.send_message(
        QueueUrl=queue["url"],
        MessageBody=s3_event_body(
            "photos", key, etag=new["ETag"].strip('"'), version_id=new.get("VersionId")
        ),
    )
    _, reports = _drain_and_process(sqs, s3, es, queue["url"])
    assert [r["already_indexed"] for r in reports] == [1]
    assert _documents(es) == documents

    marker = s3.delete_object(Bucket="photos", Key=key)  # a delete marker on the versioned bucket
    if versioned:  # S3 notifies ObjectRemoved:DeleteMarkerCreated; moto sends nothing for a marker
        sqs.send_message(
            QueueUrl=queue["url"],
            MessageBody=s3_event_body(
                "photos", key, event_name="ObjectRemoved:DeleteMarkerCreated", version_id=marker["VersionId"]
            ),
        )
    _, reports = _drain_and_process(sqs, s3, es, queue["url"])
    assert sum(r["documents_deleted"] for r in reports) == 1
    assert _documents(es) == {}
    assert _queue_counts(sqs, queue["url"]) == (0, 0)


def test_upload_then_delete_in_one_drain_indexes_nothing(sqs, s3, es, queue) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket="photos", Key="uploads/brief.png", Body=(SAMPLES / "coffee.png").read_bytes())
    s3.delete_object(Bucket="photos", Key="uploads/brief.png")
    drained, _ = _drain_and_process(sqs, s3, es, queue["url"])
    assert drained.superseded_events == 1  # the PUT lost to the later DELETE
    assert _indexed_keys(es) == []
    assert _queue_counts(sqs, queue["url"]) == (0, 0)


def test_a_late_deletion_does_not_remove_a_newer_upload(sqs, s3, es, queue) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket="photos", Key="uploads/x.png", Body=(SAMPLES / "coffee.png").read_bytes())
    _drain_and_process(sqs, s3, es, queue["url"])
    # a DELETE of an older version delivered late, after the current object was indexed
    sqs.send_message(
        QueueUrl=queue["url"],
        MessageBody=s3_event_body(
            "photos", "uploads/x.png", event_name="ObjectRemoved:Delete", sequencer="00"
        ),
    )
    _drain_and_process(sqs, s3, es, queue["url"])
    assert _indexed_keys(es) == ["uploads/x.png"]


def test_sns_wrapped_and_eventbridge_messages(sqs, s3, es, queue) -> None:  # type: ignore[no-untyped-def]
    body = (SAMPLES / "chelsea.png").read_bytes()
    s3.put_bucket_notification_configuration(Bucket="photos", NotificationConfiguration={})  # deliver by hand
    for key in ("via sns/cat.png", "via eventbridge/cat.png"):
        s3.put_object(Bucket="photos", Key=key, Body=body)
    etag = s3.head_object(Bucket="photos", Key="via sns/cat.png")["ETag"].strip('"')
    sqs.send_message(
        QueueUrl=queue["url"], MessageBody=sns_envelope(s3_event_body("photos", "via sns/cat.png", etag=etag))
    )
    sqs.send_message(
        QueueUrl=queue["url"], MessageBody=eventbridge_body("photos", "via eventbridge/cat.png", etag=etag)
    )
    drained, _ = _drain_and_process(sqs, s3, es, queue["url"])
    assert drained.kinds["sns"] >= 1
    assert drained.kinds["eventbridge"] == 1
    assert _indexed_keys(es) == ["via eventbridge/cat.png", "via sns/cat.png"]
    s3.delete_object(Bucket="photos", Key="via eventbridge/cat.png")
    sqs.send_message(
        QueueUrl=queue["url"],
        MessageBody=eventbridge_body("photos", "via eventbridge/cat.png", detail_type="Object Deleted"),
    )
    _drain_and_process(sqs, s3, es, queue["url"])
    assert _indexed_keys(es) == ["via sns/cat.png"]


def test_a_malformed_message_reaches_the_dead_letter_queue_without_failing_runs(sqs, s3, es, queue) -> None:  # type: ignore[no-untyped-def]
    sqs.send_message(QueueUrl=queue["url"], MessageBody="this is not an S3 event")
    malformed = []
    for _ in range(3):  # maxReceiveCount is 2: the third receive moves it to the DLQ
        drained, _ = _drain_and_process(sqs, s3, es, queue["url"])
        malformed.append(drained.malformed)
    assert malformed == [1, 1, 0]
    dead = sqs.receive_message(QueueUrl=queue["dlq"]).get("Messages", [])
    assert [m["Body"] for m in dead] == ["this is not an S3 event"]


def test_failed_indexing_leaves_messages_on_the_queue_and_a_rerun_indexes_them_once(
    sqs, s3, es, queue
) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket="photos", Key="uploads/a.png", Body=(SAMPLES / "chelsea.png").read_bytes())
    settings = QueueSettings(queue["url"], wait_seconds=0, visibility_timeout=2)
    manifests, _ = plan_event_batches(
        sqs_client=sqs, s3_client=s3, es=es, settings=settings, staging_uri=STAGING, run=RUN, batch_size=10
    )
    # the index starts refusing every document (a drifted mapping behind the alias)
    es.indices.delete(index=versioned_index_name())
    es.indices.create(
        index=versioned_index_name(),
        mappings={"properties": {"labeler": {"type": "long"}}},
        aliases={INDEX_ALIAS: {"is_write_index": True}},
    )
    with pytest.raises(BatchIncomplete, match="messages stay on the queue"):
        process_event_batch(
            sqs_client=sqs,
            s3_client=s3,
            es=es,
            labeler=LABELER,
            manifest_uri=manifests[0].uri,
            queue_url=queue["url"],
            visibility_timeout=2,
            run=RUN,
            refresh="wait_for",
        )
    assert _queue_counts(sqs, queue["url"])[1] == 1  # in flight, not deleted
    es.indices.delete(index=versioned_index_name())  # the operator fixes the index
    time.sleep(2.5)  # the visibility timeout expires: the message is back
    _, reports = _drain_and_process(sqs, s3, es, queue["url"])
    assert sum(r["indexed"] for r in reports) == 1
    assert _indexed_keys(es) == ["uploads/a.png"]
    assert _queue_counts(sqs, queue["url"]) == (0, 0)


class SlowLabeler:
    """The local labeler, slowed down so a batch outlives the visibility timeout."""

    name = "local"
    wants_pixels = True
    preferred_concurrency = 1

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def label(self, image):  # type: ignore[no-untyped-def]
        time.sleep(self.seconds)
        return LABELER.label(image)


def test_a_long_batch_keeps_its_messages_invisible(sqs, s3, es, queue) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        s3.put_object(Bucket="photos", Key=f"slow/{i}.png", Body=(SAMPLES / "coffee.png").read_bytes())
    settings = QueueSettings(queue["url"], wait_seconds=0, visibility_timeout=2)
    manifests, _ = plan_event_batches(
        sqs_client=sqs, s3_client=s3, es=es, settings=settings, staging_uri=STAGING, run=RUN, batch_size=10
    )
    import threading

    seen_by_others: list[int] = []

    def other_consumer() -> None:
        for _ in range(6):  # over 4.5 s, well past the 2 s timeout
            time.sleep(0.75)
            seen_by_others.append(
                len(sqs.receive_message(QueueUrl=queue["url"], VisibilityTimeout=2).get("Messages", []))
            )

    spy = threading.Thread(target=other_consumer)
    spy.start()
    process_event_batch(
        sqs_client=sqs,
        s3_client=s3,
        es=es,
        labeler=SlowLabeler(1.5),
        manifest_uri=manifests[0].uri,
        queue_url=queue["url"],
        visibility_timeout=2,
        run=RUN,
        refresh="wait_for",
    )
    spy.join()
    assert seen_by_others == [0] * 6  # never handed out twice
    assert _indexed_keys(es) == ["slow/0.png", "slow/1.png", "slow/2.png"]


KILLED_WORKER = textwrap.dedent(
    """
    import os, sys, time
    os.environ.update({env!r})
    from imagelabels.devstack.embedded import EmbeddedStack
    from imagelabels.pipeline.event_ingest import plan_event_batches, process_event_batch
    from imagelabels.labelers import LabelingSettings
    from imagelabels.labelers.local import LocalLabeler
    from imagelabels.pipeline.batch import RunContext
    from imagelabels.sources.sqs import QueueSettings

    stack = EmbeddedStack({moto!r}, {es!r}, [])
    sqs, s3, es = stack.boto3_client("sqs"), stack.boto3_client("s3"), stack.elasticsearch()
    inner = LocalLabeler(LabelingSettings(features=("labels",)))

    class Slow:
        name, wants_pixels, preferred_concurrency = "local", True, 1
        def label(self, image):
            time.sleep(0.5)
            return inner.label(image)

    run = RunContext("image_ingest_sqs", "killed")
    settings = QueueSettings({queue!r}, wait_seconds=0, visibility_timeout=3)
    manifests, _ = plan_event_batches(sqs_client=sqs, s3_client=s3, es=es, settings=settings,
                                      staging_uri={staging!r}, run=run, batch_size=4)
    for number, manifest in enumerate(manifests):
        print("batch", number, flush=True)
        process_event_batch(sqs_client=sqs, s3_client=s3, es=es, labeler=Slow(), manifest_uri=manifest.uri,
                            queue_url={queue!r}, visibility_timeout=3, run=run, refresh="wait_for")
        print("done", number, flush=True)
    """
)


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(sqs, s3, es, queue, stack) -> None:  # type: ignore[no-untyped-def]
    keys = [f"killed/{i:02d}.png" for i in range(8)]
    for key in keys:
        s3.put_object(Bucket="photos", Key=key, Body=(SAMPLES / "chelsea.png").read_bytes())
    script = KILLED_WORKER.format(
        env=stack.airflow_env(), moto=stack.moto_url, es=stack.es_url, queue=queue["url"], staging=STAGING
    )
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert worker.stdout is not None
    lines = []
    for line in worker.stdout:  # let the first batch finish, kill the worker during the second
        lines.append(line.strip())
        if line.startswith("batch 1"):
            time.sleep(1.0)
            os.kill(worker.pid, signal.SIGKILL)
            break
    worker.wait(timeout=30)
    assert lines[:3] == ["batch 0", "done 0", "batch 1"], lines
    first = _indexed_keys(es)
    assert len(first) == 4  # only the finished batch
    time.sleep(3.5)  # the killed batch's messages become visible again
    _drain_and_process(sqs, s3, es, queue["url"])
    assert _indexed_keys(es) == keys  # every image, exactly once
    assert _queue_counts(sqs, queue["url"]) == (0, 0)
