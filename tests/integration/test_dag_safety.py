"""What a red team and a new user found, run through the real DAGs with ``dag.test()``.

* a Param is data, never a template: ``prefix`` offers a fixed set of placeholders rendered by
  our code, and Jinja in it fails the run without evaluating anything (no secret in any log);
* empty (``None``) Params fall back to the settings;
* a misspelled Param fails the first task at once, naming it;
* errors no retry can fix fail at once, transient ones keep their retries;
* a run without a logical date gets a defined interval;
* a failed run notifies the configured channels, and nobody when none is configured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from imagelabels.devstack.embedded import covering_hours
from imagelabels.documents import INDEX_ALIAS
from tests.airflow_dags import load_dag

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"
BUCKET = "photos"
MOTO_REKOGNITION = {"labeler": "rekognition", "features": ["labels"]}
PLACEHOLDERS = "{ds}, {hour}, {yyyy}, {mm}, {dd}"

# The red team's string: a Jinja expression whose error message carries the AWS secret, reversed.
INJECTION = "{{ {}[conn.aws_default.password | reverse].x }}"
AWS_SECRET = "aws/Injection+Canary=0042leak"


def _fast_retries(dag: Any) -> Any:
    """Production retries kept; dag.test() need not wait five minutes between tries."""
    for task in dag.tasks:
        task.retry_delay = timedelta(seconds=1)
    return dag


@pytest.fixture
def hourly_dag(airflow_db):  # type: ignore[no-untyped-def]
    return _fast_retries(load_dag("image_ingest_s3_hourly"))


@pytest.fixture
def reconcile_dag(airflow_db):  # type: ignore[no-untyped-def]
    return _fast_retries(load_dag("image_reconcile_daily"))


def _tries(run: Any, task_id: str) -> list[tuple[str, int]]:
    return sorted((str(ti.state), ti.try_number) for ti in run.get_task_instances() if ti.task_id == task_id)


def _errors_of(dag: Any, task_id: str) -> list[BaseException]:
    """The exceptions of every failed try of ``task_id``, collected through its callbacks."""
    errors: list[BaseException] = []
    task = dag.get_task(task_id)
    task.on_retry_callback = task.on_failure_callback = [lambda context: errors.append(context["exception"])]
    return errors


def _upload(s3: Any, key: str, sample: str = "coffee.png") -> datetime:
    """Upload one sample image to ``photos``; return the start of the hour it landed in."""
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=key, Body=(SAMPLES / sample).read_bytes())
    return covering_hours([s3.head_object(Bucket=BUCKET, Key=key)["LastModified"]])[0]


def _indexed_keys(es: Any) -> list[str]:
    if not es.indices.exists(index=INDEX_ALIAS):
        return []
    return sorted(hit["_source"]["s3key"] for hit in es.search(index=INDEX_ALIAS, size=100)["hits"]["hits"])


# --- 1. Params are data, never templates ------------------------------------------------------

# Runs in a fresh interpreter with Airflow's own logging (JSON lines at DEBUG, as task log files
# are written); argv[2] is a JSON list of steps, each a DAG run with dag.test().
DRIVER = """
import importlib.util, json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk.log import configure_logging

configure_logging(json_output=True, log_level="DEBUG")
root = Path(sys.argv[1])
for step in json.loads(sys.argv[2]):
    spec = importlib.util.spec_from_file_location(step["module"], root / "dags" / (step["module"] + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = getattr(module, step["module"])()
    errors = []
    for task in dag.tasks:
        task.retry_delay = timedelta(seconds=1)
    first = dag.get_task(step["first"])
    first.on_retry_callback = first.on_failure_callback = [lambda c: errors.append(str(c["exception"]))]
    run = dag.test(logical_date=datetime.fromisoformat(step["logical_date"]), run_conf=step["conf"])
    tries = sorted((str(ti.state), ti.try_number) for ti in run.get_task_instances() if ti.task_id == step["first"])
    print("STEP-RESULT " + json.dumps({"dag": dag.dag_id, "state": str(run.state), "tries": tries, "errors": errors}), flush=True)
"""


def _run_logged(steps: list[dict[str, Any]], env: dict[str, str], log: Path) -> list[dict[str, Any]]:
    """Run ``steps`` in a fresh interpreter; its whole output (the task logs) goes to ``log``."""
    child_env = {**os.environ, **env}
    child_env.update(
        AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG",
        AIRFLOW__LOGGING__COLORED_CONSOLE_LOG="False",
        PYTHONPATH=os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
    )
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, str(ROOT), json.dumps(steps)],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    text = log.read_text(errors="replace")
    assert done.returncode == 0, text[-3000:]
    return [
        json.loads(line.split(" ", 1)[1]) for line in text.splitlines() if line.startswith("STEP-RESULT ")
    ]


def test_jinja_in_the_prefix_param_fails_at_once_and_no_secret_reaches_the_log(  # type: ignore[no-untyped-def]
    airflow_db, stack, s3, es, tmp_path
) -> None:
    """The red team's ``prefix`` put the AWS secret, reversed, into the task log of both DAGs
    that rendered it. Now it is refused before anything runs, with an error naming the Param
    and the placeholders, in the first try (no retry renders it again)."""
    hour = _upload(s3, "uploads/coffee.png")
    aws = json.loads(stack.airflow_env()["AIRFLOW_CONN_AWS_DEFAULT"])
    aws["password"] = AWS_SECRET  # moto accepts any credentials
    env = {"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws)}
    logical = (hour + timedelta(hours=1)).isoformat()
    steps = [
        {
            "module": module,
            "first": first,
            "logical_date": logical,
            "conf": {"bucket": BUCKET, "prefix": INJECTION, **MOTO_REKOGNITION},
        }
        for module, first in (("image_ingest_s3_hourly", "list_batches"), ("image_reconcile_daily", "plan"))
    ]
    log = tmp_path / "injection.log"
    results = _run_logged(steps, env, log)

    assert [(r["dag"], r["state"], r["tries"]) for r in results] == [
        ("image_ingest_s3_hourly", "failed", [["failed", 1]]),
        ("image_reconcile_daily", "failed", [["failed", 1]]),
    ], results
    for result in results:
        (error,) = result["errors"]
        assert "Param 'prefix'" in error, error
        assert PLACEHOLDERS in error, error
    text = log.read_text(errors="replace")
    assert '"logger":"airflow.task"' in text  # the capture holds the task logs
    assert "Param 'prefix'" in text
    assert AWS_SECRET[::-1] not in text, "the reversed secret reached the log"
    assert AWS_SECRET not in text, "the secret reached the log"
    assert _indexed_keys(es) == []  # nothing ran


def test_prefix_placeholders_select_the_partition_of_the_interval(hourly_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    """``uploads/{ds}/{hour}/`` lists exactly the partition of the run's data interval start."""
    probe = _upload(s3, "probe.png")
    day, hour_text = probe.strftime("%Y-%m-%d"), probe.strftime("%H")
    mine = _upload(s3, f"uploads/{day}/{hour_text}/coffee.png")
    _upload(s3, f"uploads/{day}/other/coffee.png")
    _upload(s3, "uploads/2020-01-01/00/coffee.png")
    if mine != probe:
        pytest.skip("the uploads straddled an hour")
    run = hourly_dag.test(
        logical_date=mine + timedelta(hours=1),
        run_conf={"bucket": BUCKET, "prefix": "uploads/{ds}/{hour}/", **MOTO_REKOGNITION},
    )
    assert str(run.state) == "success"
    assert _indexed_keys(es) == [f"uploads/{day}/{hour_text}/coffee.png"]


# --- 2. empty Params use the settings -----------------------------------------------------------


def test_a_run_with_empty_params_uses_the_settings(hourly_dag, s3, es, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What the trigger form sends for empty fields (``None``) reads the settings, placeholders of
    ``IMAGELABELS_PREFIX`` included."""
    hour = _upload(s3, "probe.png")
    day = hour.strftime("%Y-%m-%d")
    mine = _upload(s3, f"incoming/{day}/coffee.png")
    _upload(s3, "incoming/2020-01-01/coffee.png")
    if mine != hour:
        pytest.skip("the uploads straddled an hour")
    monkeypatch.setenv("IMAGELABELS_BUCKET", BUCKET)
    monkeypatch.setenv("IMAGELABELS_PREFIX", "incoming/{ds}/")
    monkeypatch.setenv("IMAGELABELS_LABELER", "rekognition")
    conf = {"bucket": None, "prefix": None, "labeler": None, "features": ["labels"], "max_cost": None}
    run = hourly_dag.test(logical_date=hour + timedelta(hours=1), run_conf=conf)
    assert str(run.state) == "success"
    assert _indexed_keys(es) == [f"incoming/{day}/coffee.png"]
    source = es.search(index=INDEX_ALIAS)["hits"]["hits"][0]["_source"]
    assert source["labeler"] == "rekognition"  # IMAGELABELS_LABELER, since the Param was empty


# --- 3. a misspelled Param fails at once --------------------------------------------------------


def test_a_misspelled_param_fails_the_first_task_at_once_naming_it(hourly_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    hour = _upload(s3, "uploads/coffee.png")
    errors = _errors_of(hourly_dag, "list_batches")
    run = hourly_dag.test(
        logical_date=hour + timedelta(hours=1),
        run_conf={"bucket": BUCKET, "min_confidance": 95, **MOTO_REKOGNITION},
    )
    assert str(run.state) == "failed"
    assert _tries(run, "list_batches") == [("failed", 1)]  # no retry: the same conf fails the same way
    assert _tries(run, "label_and_index") == [("upstream_failed", 0)]
    (error,) = errors
    assert "unknown Param(s) 'min_confidance'" in str(error)
    assert "min_confidence" in str(error).split("takes:", 1)[1]  # the valid ones are listed
    assert _indexed_keys(es) == []  # nothing was labeled with the default min_confidence


def test_a_misspelled_param_fails_the_sqs_sensor_before_it_waits(airflow_db, clean_stack) -> None:  # type: ignore[no-untyped-def]
    sqs_dag = _fast_retries(load_dag("image_ingest_sqs"))
    sqs = clean_stack.boto3_client("sqs")
    url = sqs.create_queue(QueueName="misspelled")["QueueUrl"]
    # one S3 test event (acknowledged and ignored): a sensor that did not fail would not wait forever
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}))
    run = sqs_dag.test(run_conf={"queue_url": url, "max_mesages": 5, "wait_seconds": 0})
    assert str(run.state) == "failed"
    assert _tries(run, "wait_for_messages") == [("failed", 1)]
    assert _tries(run, "drain_queue") == [("upstream_failed", 0)]


# --- 4. errors no retry can fix, and runs without a logical date ------------------------------


def test_a_missing_bucket_fails_at_once_in_both_dags(hourly_dag, reconcile_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    """It took two 5-minute retries to fail; the same HeadBucket answer would come every time."""
    hour = _upload(s3, "uploads/coffee.png")
    for dag, first in ((hourly_dag, "list_batches"), (reconcile_dag, "plan")):
        errors = _errors_of(dag, first)
        run = dag.test(logical_date=hour + timedelta(hours=1), run_conf={"bucket": "no-such-bucket"})
        assert str(run.state) == "failed"
        assert _tries(run, first) == [("failed", 1)], dag.dag_id
        (error,) = errors
        assert "s3://no-such-bucket/ does not exist" in str(error)


def test_an_hourly_run_without_a_logical_date_lists_the_last_complete_hour(hourly_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    """The REST API can trigger a run without a logical date (no data interval): it lists the
    last complete hour before the run was triggered, like a manual run with a logical date."""
    hour = _upload(s3, "uploads/coffee.png")
    conf = {"bucket": BUCKET, "prefix": "uploads/", **MOTO_REKOGNITION}
    before = hourly_dag.test(logical_date=None, run_after=hour + timedelta(minutes=59), run_conf=conf)
    assert str(before.state) == "success"  # [hour - 1h, hour): nothing yet
    assert before.data_interval_start is None
    assert before.get_task_instance("summarize").xcom_pull(task_ids="summarize")["listed"] == 0
    after = hourly_dag.test(logical_date=None, run_after=hour + timedelta(hours=1, minutes=5), run_conf=conf)
    assert str(after.state) == "success"  # [hour, hour + 1h)
    assert after.get_task_instance("summarize").xcom_pull(task_ids="summarize")["indexed"] == 1
    assert _indexed_keys(es) == ["uploads/coffee.png"]


def test_a_reconcile_run_without_a_logical_date_takes_the_last_complete_day(reconcile_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    run_after = datetime.now(UTC)
    day = ((run_after - timedelta(hours=3)).date() - timedelta(days=1)).isoformat()  # 03:00 to 03:00 UTC
    _upload(s3, f"uploads/{day}/coffee.png")
    _upload(s3, "uploads/2020-01-01/coffee.png")
    conf = {"bucket": BUCKET, "prefix": "uploads/{ds}/", "min_age_hours": 0, **MOTO_REKOGNITION}
    run = reconcile_dag.test(logical_date=None, run_after=run_after, run_conf=conf)
    assert str(run.state) == "success"
    assert run.data_interval_start is None
    assert _indexed_keys(es) == [f"uploads/{day}/coffee.png"]


# --- 5. failure notifications -------------------------------------------------------------------


def _failing_run(dag: Any, s3: Any) -> Any:
    hour = _upload(s3, "uploads/coffee.png")
    run = dag.test(logical_date=hour + timedelta(hours=1), run_conf={"bucket": "no-such-bucket"})
    assert str(run.state) == "failed"
    return run


def test_a_failed_run_sends_one_mail_and_one_slack_message_naming_dag_run_and_task(  # type: ignore[no-untyped-def]
    hourly_dag, s3, es, smtp_sink, http_sink, monkeypatch
) -> None:
    from tests.conftest import SLACK_WEBHOOK_PATH

    monkeypatch.setenv("IMAGELABELS_FAILURE_EMAIL", "oncall@example.com, data@example.com")
    monkeypatch.setenv("IMAGELABELS_FAILURE_SLACK", "true")
    run = _failing_run(hourly_dag, s3)

    (mail,) = smtp_sink.wait_for(1)
    assert sorted(mail.rcpt_tos) == ["data@example.com", "oncall@example.com"]
    subject = str(mail.message["Subject"])
    assert "image_ingest_s3_hourly" in subject
    assert "list_batches" in subject
    body = mail.html()
    for part in ("image_ingest_s3_hourly", run.run_id, "list_batches", "task_failure"):
        assert part in body, part
    (post,) = http_sink.wait_for(1)
    assert post.path == SLACK_WEBHOOK_PATH
    text = post.json()["text"]
    assert "image_ingest_s3_hourly" in text
    assert "list_batches" in text
    assert run.run_id in text
    assert len(smtp_sink.messages) == 1  # one mail per failed run, not one per failed try


def test_with_no_channel_configured_a_failed_run_notifies_nobody(  # type: ignore[no-untyped-def]
    hourly_dag, s3, es, smtp_sink, http_sink, monkeypatch
) -> None:
    for name in list(os.environ):
        if name.startswith("IMAGELABELS_FAILURE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IMAGELABELS_FAILURE_EMAIL__IMAGE_RELABEL", "oncall@example.com")  # another DAG
    _failing_run(hourly_dag, s3)
    assert smtp_sink.messages == []
    assert http_sink.requests == []
