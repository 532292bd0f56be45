"""The fault matrix: one fault per test against real servers on loopback (moto, noida-db, the
Rekognition stand-in, proxies from tests/faults.py), each ending with the same check -
:func:`tests.faults.assert_nothing_lost`: every uploaded key is indexed exactly once under its
deterministic id or has a failure record with a reason, and no location has two documents.

Each test also proves its fault happened (refused connections, 429s and throttles served,
objects deleted, a worker killed, poison messages received, a stand-in that saw no request).
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imagelabels.devstack.embedded import covering_hours
from imagelabels.devstack.standin import rekognition_client
from imagelabels.documents import FAILURES_INDEX, INDEX_ALIAS
from imagelabels.engine.elastic import connect as elasticsearch_engine
from imagelabels.labelers import LabelingSettings
from imagelabels.labelers.rekognition import RekognitionLabeler
from imagelabels.pipeline.batch import BatchReport, RunContext
from imagelabels.pipeline.event_ingest import plan_event_batches, process_event_batch
from imagelabels.pipeline.ingest import label_batch, plan_batches
from imagelabels.sources.sqs import QueueSettings
from tests.airflow_dags import load_dag
from tests.faults import DeletingLabeler, OutageProxy, assert_nothing_lost, on_path
from tests.helpers import ThrottlingProxy
from tests.s3_events import s3_event_body

ROOT = Path(__file__).resolve().parents[2]
BUCKET, PREFIX = "photos", "uploads/"
STAGING = f"s3://{BUCKET}/_imagelabels/"
RUN = RunContext("image_ingest_s3_hourly", "manual__faults")
LABELS_ONLY = LabelingSettings(features=("labels",))
# moto's Rekognition: a canned DetectLabels answer (HTTP 500 for the other operations)
MOTO_REKOGNITION = {"labeler": "rekognition", "features": ["labels"]}


# --- helpers ----------------------------------------------------------------------------------


def _jpeg(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), (shade * 7 % 256, 90, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


def _upload(s3: Any, count: int, *, bad: int = 0) -> list[str]:
    """``count`` small JPEGs (and ``bad`` objects that are not images) under ``uploads/``."""
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    keys = []
    for i in range(count):
        keys.append(f"{PREFIX}{i:02d}.jpg")
        s3.put_object(Bucket=BUCKET, Key=keys[-1], Body=_jpeg(i), ContentType="image/jpeg")
    for i in range(bad):
        keys.append(f"{PREFIX}notes-{i}.jpg")
        s3.put_object(Bucket=BUCKET, Key=keys[-1], Body=b"meeting notes, not a picture")
    return keys


def _plan(s3: Any, es: Any, batch_size: int = 100) -> list[dict[str, Any]]:
    """The hourly path's first step: list a window around now into manifests."""
    now = datetime.now(UTC)
    plan = plan_batches(
        s3_client=s3,
        es=es,
        bucket=BUCKET,
        prefix=PREFIX,
        start=now - timedelta(minutes=10),
        end=now + timedelta(minutes=10),
        staging_uri=STAGING,
        run=RUN,
        batch_size=batch_size,
    )
    return [m.as_xcom() for m in plan.manifests]


def _label(s3: Any, es: Any, labeler: Any, manifest: dict[str, Any]) -> BatchReport:
    return label_batch(s3_client=s3, es=es, labeler=labeler, manifest=manifest, run=RUN, refresh="wait_for")


def _moto_labeler(stack: Any) -> RekognitionLabeler:
    return RekognitionLabeler(stack.boto3_client("rekognition"), LABELS_ONLY)


def _es_connection(port: int) -> str:
    return json.dumps({"conn_type": "elasticsearch", "host": "127.0.0.1", "port": port, "schema": "http"})


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def hourly_dag(airflow_db):  # type: ignore[no-untyped-def]
    """A fresh hourly DAG per test (dag.test() keeps a run's conf in ``dag.params``); production
    retries kept, but dag.test() need not wait five minutes between tries."""
    dag = load_dag("image_ingest_s3_hourly")
    for task in dag.tasks:
        task.retry_delay = timedelta(seconds=1)
    return dag


def _tries(run: Any, task_id: str) -> list[tuple[str, int]]:
    return sorted((str(ti.state), ti.try_number) for ti in run.get_task_instances() if ti.task_id == task_id)


# --- 1. Elasticsearch down mid-run, then back ----------------------------------------------------


def test_es_refusing_connections_at_the_bulk_write_then_back_for_the_retry(
    hourly_dag, s3, es, stack, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The DAG: ES stops accepting connections just as the batch's documents are sent; the task
    fails, Airflow retries it once ES is back, and the retry indexes everything once."""
    keys = _upload(s3, 6, bad=1)
    hours = covering_hours([s3.head_object(Bucket=BUCKET, Key=k)["LastModified"] for k in keys])
    with OutageProxy(stack.es_url) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_ELASTICSEARCH_DEFAULT", _es_connection(proxy.port))
        proxy.trip_on(on_path("/_bulk"), "refused")
        retried: list[bool] = []

        def back_before_the_retry(context: Any) -> None:  # ES is repaired while the task waits
            retried.append(proxy.is_down)
            proxy.come_back()

        hourly_dag.get_task("label_and_index").on_retry_callback = back_before_the_retry
        runs = [
            hourly_dag.test(
                logical_date=hour + timedelta(hours=1), run_conf={"bucket": BUCKET, **MOTO_REKOGNITION}
            )
            for hour in hours
        ]
    assert [str(run.state) for run in runs] == ["success"] * len(runs)
    assert (proxy.outages, proxy.dropped, retried) == (1, 1, [True])  # the fault happened once
    tries = [t for run in runs for t in _tries(run, "label_and_index")]
    assert ("success", 2) in tries  # the batch that met the outage succeeded on its retry
    accounting = assert_nothing_lost(es, s3, BUCKET, PREFIX)
    assert sorted(accounting.indexed) == keys[:6]
    assert accounting.failed == {f"{PREFIX}notes-0.jpg": "not_an_image"}


def test_es_unavailable_after_the_documents_before_the_failure_records(s3, es, stack) -> None:  # type: ignore[no-untyped-def]
    """ES answers 503 from the moment the batch looks up failure records: the documents are in,
    the bad key's record is not, the task fails; a retry writes the record and labels nothing
    twice."""
    keys = _upload(s3, 5, bad=1)
    [manifest] = _plan(s3, es)
    labeler = _moto_labeler(stack)
    with OutageProxy(stack.es_url) as proxy:
        proxy.trip_on(on_path(f"/{FAILURES_INDEX}/_search"), "unavailable")
        client = elasticsearch_engine(proxy.url, request_timeout=30)  # what the connection builds
        from imagelabels.engine import EngineUnavailableError

        with pytest.raises(EngineUnavailableError) as failed:
            _label(s3, client, labeler, manifest)
        assert failed.value.status == 503
        assert proxy.unavailable >= 1  # the first try and the client's own retries all met the outage
        es.indices.refresh(index=INDEX_ALIAS)
        assert es.count(index=INDEX_ALIAS)["count"] == 5  # half-done: a run ending here loses a key
        assert es.count(index=FAILURES_INDEX)["count"] == 0
        with pytest.raises(AssertionError, match=r"lost .*notes-0\.jpg"):  # the check sees it
            assert_nothing_lost(es, s3, BUCKET, PREFIX)
        proxy.come_back()
        report = _label(s3, client, labeler, manifest)
    assert (report.already_indexed, report.labeled, dict(report.failed)) == (5, 0, {"not_an_image": 1})
    accounting = assert_nothing_lost(es, s3, BUCKET, PREFIX)
    assert sorted(accounting.indexed) == keys[:5]
    assert accounting.records[f"{PREFIX}notes-0.jpg"]["attempts"] == 1


def test_es_acting_on_a_bulk_whose_answer_is_lost_creates_no_duplicate(s3, es, stack) -> None:  # type: ignore[no-untyped-def]
    """ES writes the documents but the connection dies before the answer: the client sends the
    same bulk again, and deterministic ids with ``create`` turn the repeat into 409s."""
    keys = _upload(s3, 6)
    [manifest] = _plan(s3, es)
    with OutageProxy(stack.es_url) as proxy:
        proxy.trip_on(on_path("/_bulk"), "reply_lost")
        report = _label(
            s3, elasticsearch_engine(proxy.url, request_timeout=30), _moto_labeler(stack), manifest
        )
    assert proxy.replies_lost == 1
    assert [path for _, path, outcome in proxy.log if "_bulk" in path] == ["/_bulk?refresh=wait_for"] * 2
    assert (report.labeled, report.indexed, report.index_errors) == (6, 6, [])  # 6 x 409 "already there"
    accounting = assert_nothing_lost(es, s3, BUCKET, PREFIX)
    assert sorted(accounting.indexed) == keys


# --- 2. Elasticsearch answering 429 for a while ----------------------------------------------------


def test_es_throttling_is_absorbed_by_bulk_retries(s3, es, stack) -> None:  # type: ignore[no-untyped-def]
    keys = _upload(s3, 8, bad=1)
    [manifest] = _plan(s3, es)
    with ThrottlingProxy(stack.es_url, reject_requests=3, reject_items=2) as proxy:
        client = elasticsearch_engine(proxy.url, request_timeout=30)
        report = _label(s3, client, _moto_labeler(stack), manifest)
    assert (proxy.reject_requests, proxy.reject_items) == (0, 0)  # every 429 was served...
    assert proxy.bulk_requests == 1 + 3 + 2 + 1  # ...and retried: documents x6, then one record write
    assert (report.indexed, report.index_errors, dict(report.failed)) == (8, [], {"not_an_image": 1})
    accounting = assert_nothing_lost(es, s3, BUCKET, PREFIX)
    assert sorted(accounting.indexed) == keys[:8]


# --- 3. Rekognition throttling 30 % of calls -----------------------------------------------------------


def test_rekognition_throttling_30_percent_is_absorbed_by_adaptive_retries(s3, es, standin) -> None:  # type: ignore[no-untyped-def]
    server = standin(error_rates={"DetectLabels": {"ThrottlingException": 0.3}}, seed=11)
    keys = _upload(s3, 20)
    [manifest] = _plan(s3, es)
    # the production retry policy (clients.AWS_RETRIES: adaptive, 10 retries = 11 attempts)
    client = rekognition_client(server.url, retry_mode="adaptive", max_attempts=11, max_pool_connections=16)
    report = _label(s3, es, RekognitionLabeler(client, LABELS_ONLY), manifest)
    stats = server.stats()["operations"]["DetectLabels"]
    assert stats["injected_errors"] > 0  # throttles were answered...
    assert stats["served"] == 20  # ...and retried until every image was labeled once
    assert stats["requests"] == stats["served"] + stats["injected_errors"]
    assert (report.labeled, report.indexed, dict(report.failed)) == (20, 20, {})
    accounting = assert_nothing_lost(es, s3, BUCKET, PREFIX)
    assert (sorted(accounting.indexed), accounting.failed) == (keys, {})


# --- 4. Objects deleted between listing and labeling ---------------------------------------------------


def test_objects_deleted_after_listing_are_recorded_not_dropped(s3, es, standin, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Deleted (1) after the listing, before the HEAD; (2) after the HEAD, before preflight reads
    it; (3) after preflight read it, before Rekognition reads the S3Object."""
    monkeypatch.setenv("IMAGELABELS_CONCURRENCY", "1")  # one thread: the order of events is fixed
    server = standin()
    keys = _upload(s3, 6)  # uploads/00.jpg .. 05.jpg, labeled in this order
    [manifest] = _plan(s3, es)
    s3.delete_object(Bucket=BUCKET, Key=keys[1])  # (1)
    inner = RekognitionLabeler(rekognition_client(server.url), LABELS_ONLY)
    labeler = DeletingLabeler(inner, s3, BUCKET, before_call={1: [keys[4]]}, delete_own=[keys[2]])
    report = _label(s3, es, labeler, manifest)  # nothing retryable: the task succeeds
    assert labeler.deleted == [keys[4], keys[2]]  # the faults happened, in this order
    assert labeler.calls == [keys[0], keys[2], keys[3], keys[5]]  # 04.jpg never reached the labeler
    assert server.stats()["operations"]["DetectLabels"]["requests"] == 4
    assert (report.indexed, report.retryable_failures) == (3, 0)
    accounting = assert_nothing_lost(es, s3, BUCKET, PREFIX, gone=[keys[1], keys[2], keys[4]])
    assert sorted(accounting.indexed) == [keys[0], keys[3], keys[5]]
    assert accounting.failed == {
        keys[1]: "object_gone",
        keys[2]: "s3_object_unreadable",  # Rekognition's InvalidS3ObjectException: the object vanished
        keys[4]: "object_gone",
    }
    stages = {key: record["stage"] for key, record in accounting.records.items()}
    assert stages == {keys[1]: "read", keys[2]: "label", keys[4]: "read"}


# --- 5. A worker killed mid-batch, then the run retried ------------------------------------------------


KILLED_WORKER = textwrap.dedent(
    """
    import json, os, sys
    os.environ.update({env!r})
    os.environ["IMAGELABELS_CONCURRENCY"] = "2"
    from imagelabels.devstack.embedded import EmbeddedStack
    from imagelabels.pipeline.ingest import label_batch
    from imagelabels.labelers import LabelingSettings
    from imagelabels.labelers.rekognition import RekognitionLabeler
    from imagelabels.pipeline.batch import RunContext
    from imagelabels.devstack.standin import rekognition_client

    stack = EmbeddedStack({moto!r}, {es!r}, [])
    s3, es = stack.boto3_client("s3"), stack.elasticsearch()
    labeler = RekognitionLabeler(rekognition_client({standin!r}), LabelingSettings(features=("labels",)))
    run = RunContext("image_ingest_s3_hourly", "manual__faults")
    for number, manifest in enumerate(json.loads({manifests!r})):
        print("batch", number, flush=True)
        label_batch(s3_client=s3, es=es, labeler=labeler, manifest=manifest, run=run, refresh="wait_for")
        print("done", number, flush=True)
    """
)


def test_a_worker_killed_mid_batch_then_rerun_indexes_everything_once(s3, es, stack, standin) -> None:  # type: ignore[no-untyped-def]
    server = standin(latency_ms=600)  # slow enough to kill the worker while it labels
    keys = _upload(s3, 12)
    manifests = _plan(s3, es, batch_size=4)
    assert len(manifests) == 3
    script = KILLED_WORKER.format(
        env=stack.airflow_env(),
        moto=stack.moto_url,
        es=stack.es_url,
        standin=server.url,
        manifests=json.dumps(manifests),
    )
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert worker.stdout is not None
    lines = []
    try:
        for line in worker.stdout:
            lines.append(line.strip())
            if line.startswith("batch 1"):
                deadline = time.monotonic() + 30
                while server.stats()["operations"]["DetectLabels"]["served"] < 6:  # 4 + 2 of batch 1
                    assert time.monotonic() < deadline, "the worker never got into batch 1"
                    time.sleep(0.05)
                os.kill(worker.pid, signal.SIGKILL)
                break
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    assert lines == ["batch 0", "done 0", "batch 1"]
    es.indices.refresh(index=INDEX_ALIAS)
    assert es.count(index=INDEX_ALIAS)["count"] == 4  # batch 0 written, batch 1 died before its bulk
    with pytest.raises(AssertionError, match="lost"):  # 8 keys are nowhere until the retry
        assert_nothing_lost(es, s3, BUCKET, PREFIX)
    paid_before = server.stats()["operations"]["DetectLabels"]["requests"]

    # Airflow retries the run: the same manifests, in this process
    labeler = RekognitionLabeler(rekognition_client(server.url), LABELS_ONLY)
    reports = [_label(s3, es, labeler, manifest) for manifest in manifests]
    assert [(r.already_indexed, r.labeled) for r in reports] == [(4, 0), (0, 4), (0, 4)]
    assert server.stats()["operations"]["DetectLabels"]["requests"] - paid_before == 8  # only the missing
    accounting = assert_nothing_lost(es, s3, BUCKET, PREFIX)
    assert (sorted(accounting.indexed), accounting.failed) == (keys, {})


# --- 6. Poison SQS messages mixed with good ones -----------------------------------------------------


@pytest.fixture
def sqs_queue(clean_stack, s3):  # type: ignore[no-untyped-def]
    """A queue with a dead-letter queue (maxReceiveCount 2), notified by the bucket's uploads."""
    sqs = clean_stack.boto3_client("sqs")
    dlq = sqs.create_queue(QueueName="faults-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    url = sqs.create_queue(QueueName="faults-events", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket="staging")
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    return {"sqs": sqs, "url": url, "dlq": dlq}


def _queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attributes[names[0]]), int(attributes[names[1]])


def test_poison_messages_never_crash_a_run_and_good_images_are_not_lost(
    s3, es, stack, sqs_queue, caplog
) -> None:  # type: ignore[no-untyped-def]
    sqs, url = sqs_queue["sqs"], sqs_queue["url"]
    keys = _upload(s3, 4)  # four real notifications
    poison = {
        "not json": "<<definitely not an S3 event>>",
        "not an S3 event": json.dumps({"hello": "world", "Records": "nope"}),
        "SNS confirmation": json.dumps({"Type": "SubscriptionConfirmation", "Message": "confirm me"}),
    }
    for body in poison.values():
        sqs.send_message(QueueUrl=url, MessageBody=body)
    missing = f"{PREFIX}never-uploaded.jpg"  # a well-formed event for an object that is not there
    sqs.send_message(QueueUrl=url, MessageBody=s3_event_body(BUCKET, missing))
    settings = QueueSettings(url, wait_seconds=0, visibility_timeout=60)
    labeler = _moto_labeler(stack)
    malformed = []
    caplog.set_level(logging.ERROR, logger="imagelabels.pipeline.event_ingest")
    caplog.set_level(logging.WARNING, logger="imagelabels.pipeline.batch")
    for _ in range(3):  # maxReceiveCount 2: the third receive moves the poison to the DLQ
        manifests, drained = plan_event_batches(
            sqs_client=sqs,
            s3_client=s3,
            es=es,
            settings=settings,
            staging_uri="s3://staging/_imagelabels/",
            run=RUN,
            batch_size=100,
        )
        malformed.append(drained.malformed)
        for manifest in manifests:  # never raises: the missing object is a non-retryable record
            process_event_batch(
                sqs_client=sqs,
                s3_client=s3,
                es=es,
                labeler=labeler,
                manifest_uri=manifest.uri,
                queue_url=url,
                visibility_timeout=60,
                run=RUN,
                refresh="wait_for",
            )
    assert malformed == [len(poison), len(poison), 0]
    logged = [r.getMessage() for r in caplog.records if "malformed message" in r.getMessage()]
    assert len(logged) == 2 * len(poison)  # each receive logs its reason
    assert any("SubscriptionConfirmation" in message for message in logged)
    acknowledged = [r.getMessage() for r in caplog.records if r.name == "imagelabels.pipeline.batch"]
    assert [m for m in acknowledged if missing in m and "object_gone" in m]  # logged, then acknowledged
    dead = []
    while batch := sqs.receive_message(QueueUrl=sqs_queue["dlq"], MaxNumberOfMessages=10).get("Messages"):
        dead += [m["Body"] for m in batch]
    assert sorted(dead) == sorted(poison.values())  # exactly the poison, nothing good
    assert _queue_counts(sqs, url) == (0, 0)  # good and missing-object messages acknowledged
    accounting = assert_nothing_lost(es, s3, BUCKET, PREFIX, gone=[missing])
    assert sorted(accounting.indexed) == keys
    assert accounting.failed == {missing: "object_gone"}


# --- 7. Invalid Params and connections fail fast, before any paid call --------------------------------


def _no_paid_call(server: Any) -> None:
    totals = server.stats()["totals"]
    assert (totals["requests"], server.stats()["unknown_operations"]) == (0, 0)


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"min_confidence": 150}, "min_confidence"),
        ({"labeler": "clip"}, "labeler"),
        ({"features": ["labels", "colour"]}, "features"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_invalid_params_are_refused_before_any_task_runs(
    hourly_dag, s3, es, rekognition_at_standin, conf, named
) -> None:  # type: ignore[no-untyped-def]
    from airflow.sdk.exceptions import ParamValidationError

    _upload(s3, 2)
    with pytest.raises(ParamValidationError) as refused:
        hourly_dag.test(
            logical_date=datetime(2026, 11, 1, 1, tzinfo=UTC),
            run_conf={"bucket": BUCKET, "labeler": "rekognition", **conf},
        )
    assert named in str(refused.value)
    _no_paid_call(rekognition_at_standin)
    assert not es.indices.exists(index=INDEX_ALIAS)  # not even the first task ran


def _bad_setting_cases(stack: Any) -> dict[str, tuple[dict[str, str], dict[str, Any], list[str]]]:
    """name -> (environment, run conf, what the first task's error must name)."""
    closed = _closed_port()
    bad_endpoint = json.loads(stack.airflow_env()["AIRFLOW_CONN_AWS_DEFAULT"])
    bad_endpoint["extra"]["endpoint_url"] = stack.es_url  # S3 requests reach a server that is not S3
    unreachable = json.loads(stack.airflow_env()["AIRFLOW_CONN_AWS_DEFAULT"])
    unreachable["extra"]["endpoint_url"] = f"http://127.0.0.1:{closed}"
    return {
        "unknown default labeler": (
            {"IMAGELABELS_LABELER": "clip"},
            {"labeler": ""},
            ["IMAGELABELS_LABELER", "clip"],
        ),
        "no bucket": ({}, {"bucket": ""}, ["bucket", "IMAGELABELS_BUCKET"]),
        "missing bucket": ({}, {"bucket": "no-such-bucket"}, ["s3://no-such-bucket/", "does not exist"]),
        "elasticsearch at a closed port": (
            {"AIRFLOW_CONN_ELASTICSEARCH_DEFAULT": _es_connection(closed)},
            {},
            [f"port={closed}", "Connection refused"],
        ),
        "aws endpoint that is not S3": (
            {"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(bad_endpoint)},
            {},
            [f"s3://{BUCKET}/", "aws connection"],
        ),
        "aws endpoint at a closed port": (
            {"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(unreachable)},
            {},
            [f"cannot reach S3 at http://127.0.0.1:{closed}", "aws connection 'aws_default'"],
        ),
    }


# Errors no retry can fix fail the task at once; a server that does not answer may come back.
FAIL_AT_ONCE = {"unknown default labeler", "no bucket", "missing bucket", "aws endpoint that is not S3"}


@pytest.mark.parametrize(
    "case",
    [
        "unknown default labeler",
        "no bucket",
        "missing bucket",
        "elasticsearch at a closed port",
        "aws endpoint that is not S3",
        "aws endpoint at a closed port",
    ],
)
def test_bad_settings_fail_the_first_task_before_any_paid_call(
    hourly_dag, s3, es, stack, rekognition_at_standin, monkeypatch, case
) -> None:  # type: ignore[no-untyped-def]
    keys = _upload(s3, 2)
    hour = covering_hours([s3.head_object(Bucket=BUCKET, Key=keys[0])["LastModified"]])[0]
    environment, conf, named = _bad_setting_cases(stack)[case]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    errors: list[BaseException] = []
    first = hourly_dag.get_task("list_batches")
    first.on_retry_callback = first.on_failure_callback = [
        lambda context: errors.append(context["exception"])
    ]
    run = hourly_dag.test(
        logical_date=hour + timedelta(hours=1),
        run_conf={"bucket": BUCKET, "prefix": PREFIX, **MOTO_REKOGNITION, **conf},
    )
    assert str(run.state) == "failed"
    tries = 1 if case in FAIL_AT_ONCE else 3  # configuration errors: no retries; unreachable: retried
    assert _tries(run, "list_batches") == [("failed", tries)]  # every try failed the same way
    assert _tries(run, "label_and_index") == [("upstream_failed", 0)]
    assert len(errors) == tries
    message = str(errors[-1])
    for part in named:
        assert part in message, f"{case}: {part!r} not in {message!r}"
    _no_paid_call(rekognition_at_standin)
