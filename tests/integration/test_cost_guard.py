"""The cost guard in the DAGs, with Rekognition pointed at the stand-in through the `aws_default`
connection: below the estimate a run stops before any paid call (the stand-in sees no request),
at or above it the run labels; the SQS DAG prices the queue before receiving anything."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from imagelabels.devstack.embedded import covering_hours
from imagelabels.documents import INDEX_ALIAS
from tests.airflow_dags import load_dag as _load

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"
PHOTOS = ("chelsea.png", "coffee.png", "grace_hopper.jpg")
PAID = {"labeler": "rekognition", "features": ["labels", "moderation"]}  # 2 calls/image: $0.002


@pytest.fixture
def rekognition(rekognition_at_standin, monkeypatch):  # type: ignore[no-untyped-def]
    """The counting stand-in behind `aws_default`, with no deployment cost settings in the way."""
    server = rekognition_at_standin
    monkeypatch.delenv("IMAGELABELS_MAX_COST", raising=False)
    for variable in [v for v in os.environ if v.startswith("IMAGELABELS_PRICE")]:
        monkeypatch.delenv(variable)
    return server


def _upload(s3) -> list:  # type: ignore[no-untyped-def]
    s3.create_bucket(Bucket="photos")
    for name in PHOTOS:
        s3.put_object(Bucket="photos", Key=f"uploads/{name}", Body=(SAMPLES / name).read_bytes())
    stamps = [s3.head_object(Bucket="photos", Key=f"uploads/{n}")["LastModified"] for n in PHOTOS]
    hours = covering_hours(stamps)
    assert len(hours) == 1, "uploads straddle an hour: rerun"
    return hours


def _run_hour(dag, hour, **conf):  # type: ignore[no-untyped-def]
    return dag.test(logical_date=hour + timedelta(hours=1), run_conf={"bucket": "photos", **conf})


def _states(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_hourly_run_above_max_cost_stops_before_any_paid_call(airflow_db, s3, es, rekognition, capfd) -> None:  # type: ignore[no-untyped-def]
    hour = _upload(s3)[0]
    run = _run_hour(_load("image_ingest_s3_hourly"), hour, max_cost=0.0059, **PAID)  # estimate $0.006

    assert str(run.state) == "failed"
    states = _states(run)
    assert states["list_batches"] == "success"
    assert states["cost_guard"] == "failed"
    assert states["label_and_index"] != "success"
    assert states["summarize"] != "success"
    guard = run.get_task_instance("cost_guard")
    assert guard.try_number == 1  # a cost stop is final: no retry
    messages = "".join(capfd.readouterr())  # dag.test() logs the task's error to the console
    for part in (
        "cost guard stopped this run before any paid call",
        "3 image(s) x rekognition [labels $0.0010 + moderation $0.0010]",
        "$0.0020 per image",
        "estimate $0.0060",
        "max_cost $0.0059",
    ):
        assert part in messages
    stats = rekognition.stats()
    assert stats["totals"]["requests"] == 0
    assert stats["unknown_operations"] == 0
    assert not es.indices.exists(index=INDEX_ALIAS) or es.count(index=INDEX_ALIAS)["count"] == 0

    # the manifests are still there; a rerun of the interval with a higher limit labels it
    rerun = _run_hour(_load("image_ingest_s3_hourly"), hour, max_cost=0.006, **PAID)  # equal: runs
    assert str(rerun.state) == "success"
    guard = rerun.get_task_instance("cost_guard").xcom_pull(task_ids="cost_guard")
    assert (guard["images"], guard["estimate_usd"], guard["features"]) == (
        3,
        "0.006",
        ["labels", "moderation"],
    )
    served = {op: s["served"] for op, s in rekognition.stats()["operations"].items() if s["requests"]}
    assert served == {"DetectLabels": 3, "DetectModerationLabels": 3}
    es.indices.refresh(index=INDEX_ALIAS)
    assert es.count(index=INDEX_ALIAS)["count"] == 3


def test_the_deployment_limit_applies_when_the_param_is_empty_and_local_is_free(
    airflow_db, s3, es, rekognition, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    hour = _upload(s3)[0]
    monkeypatch.setenv("IMAGELABELS_MAX_COST", "0")
    run = _run_hour(_load("image_ingest_s3_hourly"), hour, **PAID)
    assert _states(run)["cost_guard"] == "failed"
    assert rekognition.stats()["totals"]["requests"] == 0

    run = _run_hour(_load("image_ingest_s3_hourly"), hour, labeler="local")  # free: a $0 limit lets it run
    assert str(run.state) == "success"
    assert run.get_task_instance("cost_guard").xcom_pull(task_ids="cost_guard")["estimate_usd"] == "0"
    es.indices.refresh(index=INDEX_ALIAS)
    assert es.count(index=INDEX_ALIAS)["count"] == 3


def test_sqs_run_above_max_cost_receives_nothing(airflow_db, clean_stack, es, rekognition) -> None:  # type: ignore[no-untyped-def]
    s3, sqs = clean_stack.boto3_client("s3"), clean_stack.boto3_client("sqs")
    url = sqs.create_queue(QueueName="guarded")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket="photos")
    s3.put_bucket_notification_configuration(
        Bucket="photos",
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    sqs.purge_queue(QueueUrl=url)
    for name in PHOTOS:
        s3.put_object(Bucket="photos", Key=f"live/{name}", Body=(SAMPLES / name).read_bytes())
    conf = {"queue_url": url, "bucket": "photos", "wait_seconds": 0, **PAID}

    run = _load("image_ingest_sqs").test(run_conf={**conf, "max_cost": 0.005})  # 3 messages: $0.006
    states = _states(run)
    assert (states["drain_queue"], states["label_and_index"] != "success") == ("failed", True)
    assert rekognition.stats()["totals"]["requests"] == 0
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "3"  # still visible: never received
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"

    run = _load("image_ingest_sqs").test(run_conf={**conf, "max_cost": 0.006})
    assert str(run.state) == "success"
    assert run.get_task_instance("cost_guard").xcom_pull(task_ids="cost_guard")["images"] == 3
    assert rekognition.stats()["operations"]["DetectLabels"]["served"] == 3
    es.indices.refresh(index=INDEX_ALIAS)
    assert es.count(index=INDEX_ALIAS)["count"] == 3
