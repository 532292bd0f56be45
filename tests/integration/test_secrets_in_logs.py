"""No secret of any connection ends up in task logs, XComs, the metadata DB or Elasticsearch.

Every connection the DAGs use gets a distinctive secret (AWS secret key and session token,
Elasticsearch password and API key, SMTP password, Slack webhook token, webhook password and
token header), set as ``AIRFLOW_CONN_*`` JSON pointing at loopback servers that accept them: moto
accepts any AWS credentials, noida-db ignores ``Authorization``, the SMTP sink here requires
AUTH with exactly that password. Then the hourly DAG, the report DAG (email, Slack, webhook) and
the alert DAG (webhook, Slack, log) run, once with every channel working and once with every
channel failing (HTTP 500, SMTP AUTH refused) - error messages and tracebacks are where secrets
usually leak.

``dag.test()`` runs tasks in-process and writes no task log files under ``$AIRFLOW_HOME/logs``,
so each phase runs in a subprocess with Airflow's own logging configuration at DEBUG (production
uses INFO; DEBUG also covers botocore, urllib3, slack_sdk and elastic_transport request logs) and
its whole output is the log that is searched - after checking that it holds the tasks' normal
output, so an empty or misdirected capture cannot pass. The same search covers the metadata DB
file (XComs, rendered fields, audit log, DAG run conf) and every document in Elasticsearch
(delivery records, alert firings and state, failure records), in each secret's raw, URL-encoded
and base64 (``Basic``) forms.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from imagelabels.devstack.embedded import covering_hours
from tests.servers import SmtpSink

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"

AWS_KEY_ID = "AKIAIMAGELABELSCANARY"
AWS_SECRET = "aws/Secret+Canary=0001leak"
AWS_SESSION_TOKEN = "IQoJb3JpZ2luX2VjCanary/SessionToken+0002=="
ES_USER = "es-canary-user"
ES_PASSWORD = "es-Pa55:Canary/0003@x"
ES_API_KEY = base64.b64encode(b"canary-id:es-api-key-canary-0004").decode()
SMTP_USER = "smtp-canary-user"
SMTP_PASSWORD = "smtp-Pa55 Canary&0005"
SLACK_TOKEN = "T0CANARY6/B0CANARY6/slackCanaryToken0006"
WEBHOOK_USER = "hook-canary-user"
WEBHOOK_PASSWORD = "hook-Pa55?Canary#0007"
WEBHOOK_TOKEN = "Bearer hook-header-canary-0008"

SECRETS = {
    "aws secret key": AWS_SECRET,
    "aws session token": AWS_SESSION_TOKEN,
    "elasticsearch password": ES_PASSWORD,
    "elasticsearch api key": ES_API_KEY,
    "smtp password": SMTP_PASSWORD,
    "slack webhook token": SLACK_TOKEN,
    "webhook password": WEBHOOK_PASSWORD,
    "webhook token header": WEBHOOK_TOKEN.split(" ", 1)[1],
}
BASIC = {  # what an Authorization: Basic header carries
    "elasticsearch basic auth": f"{ES_USER}:{ES_PASSWORD}",
    "webhook basic auth": f"{WEBHOOK_USER}:{WEBHOOK_PASSWORD}",
}

REPORTS = """
version: 1
reports:
  - name: daily
    period: daily
    formats: [csv, pdf, json]
    output: {uri: "s3://reports-bucket/labels/"}
    delivery:
      attempts: 1
      email: {conn_id: smtp_default, to: [team@example.com], subject: "Labels {interval}"}
      slack: {conn_id: slack_webhook_default}
      webhook: {conn_id: imagelabels_webhook, endpoint: /reports}
"""

RULES = """
version: 1
defaults: {throttle: 0, channels: [webhook, slack, log]}
channels:
  webhook: {conn_id: imagelabels_webhook, endpoint: /alerts}
  slack: {conn_id: slack_webhook_default}
rules:
  - name: phone-seen
    type: label
    label: Mobile Phone
    min_confidence: 50
"""

# Runs in a fresh interpreter: argv[1] is a JSON list of steps, each a DAG run with dag.test().
DRIVER = """
import importlib.util, json, sys
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk.log import configure_logging

# what the supervisor writes task log files with: JSON lines (tracebacks as data) through
# Airflow's redaction
configure_logging(json_output=True, log_level="DEBUG")
root = Path(sys.argv[1])
for step in json.loads(sys.argv[2]):
    spec = importlib.util.spec_from_file_location(step["module"], root / "dags" / (step["module"] + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = getattr(module, step["attr"])
    if step["call"]:
        dag = dag()
    for task in dag.tasks:
        task.retry_delay = timedelta(seconds=1)
    run = dag.test(logical_date=datetime.fromisoformat(step["logical_date"]), run_conf=step.get("conf"))
    states = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in run.get_task_instances()}
    print("STEP-RESULT " + json.dumps({"dag": dag.dag_id, "state": str(run.state), "tasks": states}), flush=True)
"""


class AuthSmtpSink(SmtpSink):
    """The SMTP sink with AUTH (PLAIN/LOGIN over plain text, loopback only) required: it accepts
    exactly ``SMTP_USER``/``SMTP_PASSWORD``, or nothing at all once ``refuse`` is set."""

    refuse = False
    logins: list[str]

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (
            not self.refuse
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password) == (SMTP_USER.encode(), SMTP_PASSWORD.encode())
        )
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)

    def start(self) -> AuthSmtpSink:
        from aiosmtpd.controller import Controller

        self.logins = []
        self._controller = Controller(
            self,
            hostname=self.host,
            port=self.port,
            ready_timeout=10,
            authenticator=self._authenticate,
            auth_require_tls=False,
            auth_required=True,
        )
        self._controller.start()
        return self


def _forms(secret: str) -> set[str]:
    """The secret as it could appear in text: raw, URL-encoded (path and query styles)."""
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}


def _needles() -> dict[str, str]:
    """Every string that must not appear, with what it is."""
    needles = {form: name for name, secret in SECRETS.items() for form in _forms(secret)}
    for name, pair in BASIC.items():
        needles[base64.b64encode(pair.encode()).decode()] = name
    return needles


# dag.test()'s in-process stand-in for the supervisor socket logs every message it passes,
# MaskSecret(value=<the secret>) included; a real task sends those over the socket unlogged.
IN_PROCESS_COMMS = '"msg":"MaskSecret('


def _task_log(path: Path) -> str:
    """The phase's log without dag.test()'s in-process comms lines (see IN_PROCESS_COMMS)."""
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if IN_PROCESS_COMMS not in line)


def _leaks(text: str) -> list[str]:
    return sorted({f"{name} ({needle!r})" for needle, name in _needles().items() if needle in text})


def _connections(stack: Any, smtp: AuthSmtpSink, http: Any, *, es_auth: str) -> dict[str, str]:
    aws = json.loads(stack.airflow_env()["AIRFLOW_CONN_AWS_DEFAULT"])
    aws.update(login=AWS_KEY_ID, password=AWS_SECRET)
    aws["extra"]["aws_session_token"] = AWS_SESSION_TOKEN
    es = json.loads(stack.airflow_env()["AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"])
    if es_auth == "basic":
        es.update(login=ES_USER, password=ES_PASSWORD)
    else:
        es["extra"] = {"api_key": ES_API_KEY}
    smtp_conn = {
        "conn_type": "smtp",
        "host": smtp.host,
        "port": smtp.port,
        "login": SMTP_USER,
        "password": SMTP_PASSWORD,
        "extra": {
            "from_email": "imagelabels@example.com",
            "disable_tls": True,
            "disable_ssl": True,
            "timeout": 10,
            "retry_limit": 0,
        },
    }
    slack = {
        "conn_type": "slackwebhook",
        "host": f"{http.url}/slack/services",
        "password": SLACK_TOKEN,
        "extra": {"timeout": 10},
    }
    webhook = {
        "conn_type": "http",
        "host": f"{http.url}/hook",
        "login": WEBHOOK_USER,
        "password": WEBHOOK_PASSWORD,
        "extra": {"Authorization-Token": WEBHOOK_TOKEN},
    }
    return {
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
        "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT": json.dumps(es),
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp_conn),
        "AIRFLOW_CONN_SLACK_WEBHOOK_DEFAULT": json.dumps(slack),
        "AIRFLOW_CONN_IMAGELABELS_WEBHOOK": json.dumps(webhook),
    }


def _run_phase(log: Path, steps: list[dict[str, Any]], env: dict[str, str]) -> list[dict[str, Any]]:
    """Run ``steps`` in a fresh interpreter at DEBUG; its whole output goes to ``log``."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    child_env.update(env)
    child_env.update(
        AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG",
        AIRFLOW__LOGGING__COLORED_CONSOLE_LOG="False",
        PYTHONPATH=os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # only the connection's keys
        child_env.pop(name, None)
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


@pytest.fixture
def smtp_auth_sink() -> Iterator[AuthSmtpSink]:
    sink = AuthSmtpSink().start()
    try:
        yield sink
    finally:
        sink.stop()


def _everything_in_elasticsearch(es: Any) -> str:
    """Every document of every index (delivery records, alert firings/state, failures) as JSON."""
    dump: list[dict[str, Any]] = []
    for index in es.indices.get(index="*", expand_wildcards="all"):
        hits = es.search(index=index, size=1000, query={"match_all": {}})["hits"]["hits"]
        dump.extend({"_index": index, "_id": h["_id"], "_source": h["_source"]} for h in hits)
    return json.dumps(dump)


def test_no_connection_secret_reaches_logs_xcoms_or_elasticsearch(  # type: ignore[no-untyped-def]
    airflow_db, stack, s3, es, smtp_auth_sink, http_sink, tmp_path, monkeypatch
) -> None:
    reports = tmp_path / "reports.yaml"
    reports.write_text(REPORTS)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = {"IMAGELABELS_REPORTS_CONFIG": str(reports), "IMAGELABELS_ALERT_RULES": str(rules)}

    s3.create_bucket(Bucket="photos")
    s3.create_bucket(Bucket="reports-bucket")
    s3.put_object(Bucket="photos", Key="uploads/chelsea.png", Body=(SAMPLES / "chelsea.png").read_bytes())
    uploaded = s3.head_object(Bucket="photos", Key="uploads/chelsea.png")["LastModified"]
    hour = covering_hours([uploaded])[0]
    day = hour.replace(hour=0)
    hourly = {
        "module": "image_ingest_s3_hourly",
        "attr": "image_ingest_s3_hourly",
        "call": True,
        "logical_date": (hour + timedelta(hours=1)).isoformat(),
        "conf": {"bucket": "photos", "prefix": "uploads/", "labeler": "rekognition", "features": ["labels"]},
    }
    report = {
        "module": "image_label_report",
        "attr": "image_label_report_daily",
        "call": False,
        "logical_date": (day + timedelta(days=1)).isoformat(),
    }
    alerts = {
        "module": "image_label_alerts",
        "attr": "image_label_alerts",
        "call": True,
        "logical_date": datetime.now(UTC).isoformat(),
    }

    # 1. everything works: basic auth to Elasticsearch
    ok_log = tmp_path / "phase-ok.log"
    env = {**_connections(stack, smtp_auth_sink, http_sink, es_auth="basic"), **settings}
    results = _run_phase(ok_log, [hourly, report, alerts], env)
    assert [(r["dag"], r["state"]) for r in results] == [
        ("image_ingest_s3_hourly", "success"),
        ("image_label_report_daily", "success"),
        ("image_label_alerts", "success"),
    ], results
    assert smtp_auth_sink.logins, "the report mail was sent without SMTP AUTH"
    assert len(smtp_auth_sink.wait_for(1)) == 1
    assert http_sink.requests_to(f"/slack/services/{SLACK_TOKEN}")  # the token was really used
    hooks = http_sink.requests_to("/hook/")
    assert {r.path for r in hooks} == {"/hook/reports", "/hook/alerts"}
    basic = "Basic " + base64.b64encode(BASIC["webhook basic auth"].encode()).decode()
    assert all(r.header("Authorization") == basic for r in hooks)
    assert all(r.header("Authorization-Token") == WEBHOOK_TOKEN for r in hooks)

    # 2. every channel fails: HTTP 500 (the error page echoes the request line), SMTP AUTH refused;
    #    Elasticsearch through an API key this time
    http_sink.fail_always(500)
    smtp_auth_sink.refuse = True
    s3.put_object(Bucket="photos", Key="uploads/coffee.png", Body=(SAMPLES / "coffee.png").read_bytes())
    second = covering_hours([s3.head_object(Bucket="photos", Key="uploads/coffee.png")["LastModified"]])[0]
    failing = [
        {**hourly, "logical_date": (second + timedelta(hours=1)).isoformat()},
        {**report, "conf": {"redeliver": True}},
        {**alerts, "logical_date": datetime.now(UTC).isoformat()},
    ]
    fail_log = tmp_path / "phase-fail.log"
    env = {**_connections(stack, smtp_auth_sink, http_sink, es_auth="api_key"), **settings}
    results = _run_phase(fail_log, failing, env)
    report_tasks = results[1]["tasks"]
    assert [report_tasks[f"deliver[{i}]"] for i in range(3)] == ["failed"] * 3, results
    assert len(http_sink.requests_to("/slack/")) > 1
    assert len(http_sink.requests_to("/hook/alerts")) > 1  # the alert was tried again, and failed

    # the logs are the tasks' logs: they hold the tasks' normal output and their errors
    ok_text = _task_log(ok_log)
    fail_text = _task_log(fail_log)
    assert "s3://photos/uploads/chelsea.png is PNG by its magic bytes" in ok_text  # preflight
    assert '"logger":"imagelabels.alerts"' in ok_text  # the alert's log channel
    # ... whose presigned link carries the session token URL-encoded: masked as well
    assert "X-Amz-Security-Token=***" in ok_text
    assert "via connection 'imagelabels_webhook' failed" in fail_text
    assert "via connection 'slack_webhook_default' failed" in fail_text
    assert "via connection 'smtp_default' failed" in fail_text
    assert '"exc_type":"DeliveryError"' in fail_text  # tracebacks, as JSON

    for where, text in (("log, channels working", ok_text), ("log, channels failing", fail_text)):
        assert _leaks(text) == [], f"secret(s) in the {where}"

    # the metadata DB (XComs, rendered fields, run conf, audit log) and its WAL, as bytes
    database = Path(airflow_db) / "airflow.db"
    assert database.stat().st_size > 0
    raw = b"".join(p.read_bytes() for p in database.parent.glob("airflow.db*"))
    assert b"labeled" in raw or b"already_indexed" in raw  # summarize's totals are an XCom here
    assert _leaks(raw.decode("utf-8", errors="replace")) == [], "secret(s) in the metadata DB"

    # Elasticsearch: delivery records (with their errors), alert firings and state, failures
    stored = _everything_in_elasticsearch(es)
    assert "images-report-deliveries" in stored
    assert "via connection" in stored  # the failed deliveries' reasons are recorded
    assert _leaks(stored) == [], "secret(s) stored in Elasticsearch"
