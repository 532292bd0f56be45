"""The SQS DAG end to end with ``dag.test()``: the sensor defers until messages arrive (its
trigger runs in-process under dag.test), the queue is drained, images indexed, messages deleted;
and "retry failed only" reprocesses exactly the recorded failures."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from imagelabels.documents import FAILURES_INDEX, INDEX_ALIAS, failure_id
from tests.airflow_dags import load_dag as _load

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"


@pytest.fixture  # fresh per test: dag.test() leaves a run's conf in dag.params
def sqs_dag(airflow_db):  # type: ignore[no-untyped-def]
    return _load("image_ingest_sqs")


@pytest.fixture  # fresh per test: dag.test() leaves a run's conf in dag.params
def hourly_dag(airflow_db):  # type: ignore[no-untyped-def]
    return _load("image_ingest_s3_hourly")


@pytest.fixture
def notified_bucket(clean_stack):  # type: ignore[no-untyped-def]
    s3, sqs = clean_stack.boto3_client("s3"), clean_stack.boto3_client("sqs")
    url = sqs.create_queue(QueueName="dag-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket="photos")
    s3.put_bucket_notification_configuration(
        Bucket="photos",
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    sqs.purge_queue(QueueUrl=url)  # drop the s3:TestEvent: the sensor must wait for real uploads
    return {"s3": s3, "sqs": sqs, "url": url}


def test_the_sensor_waits_on_the_triggerer_then_the_run_indexes_the_uploads(
    sqs_dag, notified_bucket, es
) -> None:  # type: ignore[no-untyped-def]
    s3 = notified_bucket["s3"]

    def upload_later() -> None:
        time.sleep(3)
        for name in ("chelsea.png", "coffee.png"):
            s3.put_object(Bucket="photos", Key=f"live/{name}", Body=(SAMPLES / name).read_bytes())

    uploader = threading.Thread(target=upload_later)
    uploader.start()
    conf = {"queue_url": notified_bucket["url"], "bucket": "photos", "wait_seconds": 0}
    run = sqs_dag.test(run_conf=conf)
    uploader.join()
    assert str(run.state) == "success"
    sensor = run.get_task_instance("wait_for_messages")
    assert str(sensor.state) == "success"  # released by the trigger once uploads arrived
    totals = run.get_task_instance("summarize").xcom_pull(task_ids="summarize")
    assert totals["indexed"] >= 1
    es.indices.refresh(index=INDEX_ALIAS)
    # the second upload may land after the drain: a second run takes it, with no duplicate
    if es.count(index=INDEX_ALIAS)["count"] < 2:
        assert str(sqs_dag.test(run_conf=conf).state) == "success"
        es.indices.refresh(index=INDEX_ALIAS)
    keys = sorted(h["_source"]["s3key"] for h in es.search(index=INDEX_ALIAS)["hits"]["hits"])
    assert keys == ["live/chelsea.png", "live/coffee.png"]
    # the run's own manifests (staging prefix in the notifying bucket) raised events: the next run
    # acknowledges them as internal, labels nothing, and the loop ends there
    run = sqs_dag.test(run_conf=conf)
    assert run.get_task_instance("summarize").xcom_pull(task_ids="summarize")["labeled"] == 0
    attributes = notified_bucket["sqs"].get_queue_attributes(
        QueueUrl=notified_bucket["url"], AttributeNames=["All"]
    )
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert es.count(index=INDEX_ALIAS)["count"] == 2


def test_retry_failed_reprocesses_exactly_the_recorded_failures(hourly_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    from imagelabels.engine.indexing import FailureRecord, ensure_indices, record_failures

    s3.create_bucket(Bucket="photos")
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        s3.put_object(Bucket="photos", Key=f"up/{name}", Body=(SAMPLES / name).read_bytes())
    s3.put_object(Bucket="photos", Key="up/broken.jpg", Body=b"\xff\xd8\xff not really a jpeg")
    ensure_indices(es)
    from datetime import UTC, datetime

    failures = [
        FailureRecord("photos", "up/chelsea.png", "label", "rekognition_throttled", "after 10 retries", True),
        FailureRecord("photos", "up/broken.jpg", "label", "rekognition_unreachable", "timeout", True),
    ]
    record_failures(es, failures, dag_id="d", run_id="r", failed_at=datetime.now(UTC), refresh="wait_for")
    run = hourly_dag.test(
        logical_date=datetime(2026, 11, 1, 1, tzinfo=UTC),  # an old, empty hour: only the failures count
        run_conf={"bucket": "photos", "retry_failed": True},
    )
    assert str(run.state) == "success"
    totals = run.get_task_instance("summarize").xcom_pull(task_ids="summarize")
    assert (totals["listed"], totals["indexed"]) == (2, 1)
    es.indices.refresh(index=INDEX_ALIAS)
    assert [h["_source"]["s3key"] for h in es.search(index=INDEX_ALIAS)["hits"]["hits"]] == ["up/chelsea.png"]
    assert not es.exists(index=FAILURES_INDEX, id=failure_id("photos", "up/chelsea.png"))  # cleared
    record = es.get(index=FAILURES_INDEX, id=failure_id("photos", "up/broken.jpg"))["_source"]
    assert (record["reason"], record["stage"], record["attempts"]) == ("corrupt_image", "preflight", 2)


def test_sqs_dag_params_fail_fast_without_a_queue(sqs_dag, clean_stack) -> None:  # type: ignore[no-untyped-def]
    run = sqs_dag.test(run_conf={"bucket": "photos"})  # no queue_url, no IMAGELABELS_QUEUE_URL
    assert str(run.state) == "failed"
    assert str(run.get_task_instance("wait_for_messages").state) == "failed"
    assert str(run.get_task_instance("drain_queue").state) == "upstream_failed"
