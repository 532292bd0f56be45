"""Test setup shared by every tier.

Airflow reads its configuration when first imported, so the environment (a throw-away
``AIRFLOW_HOME`` with SQLite, our DAG folder, no examples) is set here, at import time of the
conftest, before any test module imports Airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from imagelabels.devstack.embedded import EmbeddedStack, airflow_home_env, start_stack  # noqa: E402

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="imagelabels-airflow-"))
os.environ.update(airflow_home_env(_AIRFLOW_HOME, ROOT / "dags"))
os.environ["IMAGELABELS_ES_REFRESH"] = "wait_for"
for leaked in ("IMAGELABELS_BUCKET", "IMAGELABELS_PREFIX", "IMAGELABELS_STAGING_URI"):
    os.environ.pop(leaked, None)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB (``airflow db migrate`` must run before anything else)."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return _AIRFLOW_HOME


ENGINES = ("elasticsearch", "opensearch")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "both_engines: run on noida-db (the Elasticsearch client path) and on a real OpenSearch node",
    )
    config.addinivalue_line(
        "markers", "opensearch_only: what noida-db cannot do (include_in_root, red shards): a real node only"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the embedded stack runs on noida-db; tests marked ``both_engines``
    run on a real OpenSearch node too (the ``stack`` fixture is parametrized per engine, so
    pytest groups the tests by engine and starts each stack once)."""
    if "stack" in metafunc.fixturenames:
        marked = metafunc.definition.get_closest_marker("both_engines") is not None
        engines = list(ENGINES) if marked else ["elasticsearch"]
        if metafunc.definition.get_closest_marker("opensearch_only") is not None:
            engines = ["opensearch"]
        metafunc.parametrize("stack", engines, indirect=True, scope="session")


@pytest.fixture(scope="session")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedStack]:
    """One moto server and one search engine for the session, on free loopback ports: noida-db,
    or a real OpenSearch node for ``both_engines`` tests (a node that fails to start fails them)."""
    engine = getattr(request, "param", "elasticsearch")
    running = start_stack(tmp_path_factory.mktemp(f"stack-{engine}"), engine=engine)
    saved = {name: os.environ.get(name) for name in running.airflow_env()}
    os.environ.update(running.airflow_env())
    try:
        yield running
    finally:
        running.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def clean_stack(stack: EmbeddedStack) -> EmbeddedStack:
    """The session's servers, emptied: moto reset, every index deleted."""
    stack.reset_moto()
    es = stack.elasticsearch()
    for name in es.indices.get(index="*", expand_wildcards="open,closed"):
        if not name.startswith("."):  # the engine's own system indices
            es.indices.delete(index=name)
    for template in ("imagelabels-images",):
        if es.indices.exists_index_template(name=template):
            es.indices.delete_index_template(name=template)
    return stack


@pytest.fixture
def s3(clean_stack: EmbeddedStack):  # type: ignore[no-untyped-def]
    return clean_stack.boto3_client("s3")


@pytest.fixture
def es(clean_stack: EmbeddedStack):  # type: ignore[no-untyped-def]
    return clean_stack.elasticsearch()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration talks to real servers: mark it so it can be selected."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


# --- Rekognition stand-in (include/imagelabels/standin) -----------------------------------------


@pytest.fixture
def standin(stack: EmbeddedStack):  # type: ignore[no-untyped-def]
    """Factory: ``standin(**StandInConfig fields)`` starts an in-process Rekognition stand-in
    (reading ``Image.S3Object`` from the session's moto server unless told otherwise) and returns
    the running :class:`~imagelabels.devstack.standin.StandInServer`; all are stopped after the test."""
    from imagelabels.devstack.standin import StandInConfig, StandInServer

    started: list[StandInServer] = []

    def start(**fields: object) -> StandInServer:
        fields.setdefault("s3_endpoint_url", stack.moto_url)
        server = StandInServer(StandInConfig(**fields)).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def rekognition_at_standin(standin, stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A fresh stand-in (it counts every request) that ``aws_default`` sends Rekognition calls to,
    through ``extra.service_config.rekognition.endpoint_url``; S3 stays on moto."""
    import json

    server = standin()
    connection = json.loads(stack.airflow_env()["AIRFLOW_CONN_AWS_DEFAULT"])
    connection["extra"]["service_config"] = {"rekognition": {"endpoint_url": server.url}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    return server


# --- Loopback sinks for delivery channels (tests/servers.py) ------------------------------------


@pytest.fixture
def smtp_sink(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A running :class:`tests.servers.SmtpSink`; ``AIRFLOW_CONN_SMTP_DEFAULT`` points at it
    (plain SMTP: ``disable_tls``/``disable_ssl``, no login, ``from_email`` set, no retries)."""
    import json

    from tests.servers import SmtpSink

    with SmtpSink() as sink:
        conn = {
            "conn_type": "smtp",
            "host": sink.host,
            "port": sink.port,
            "extra": {
                "from_email": "imagelabels@example.com",
                "disable_tls": True,
                "disable_ssl": True,
                "timeout": 10,
                "retry_limit": 0,
            },
        }
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(conn))
        yield sink


SLACK_WEBHOOK_PATH = "/slack/services/T000/B000/XXX"


@pytest.fixture
def http_sink(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A running :class:`tests.servers.HttpSink` and two connections pointing at it:

    * ``AIRFLOW_CONN_SLACK_WEBHOOK_DEFAULT`` (``slackwebhook``): posts go to
      ``SLACK_WEBHOOK_PATH``; ``SlackWebhookHook`` joins a ``host`` that contains ``://`` with the
      token in ``password`` (``<host>/<password>``);
    * ``AIRFLOW_CONN_IMAGELABELS_WEBHOOK`` (``http``): base URL ``<sink>/hook``; ``HttpHook``
      takes a ``host`` with ``://`` as the whole base URL, so the port is in ``host``, not ``port``.
    """
    import json

    from tests.servers import HttpSink

    with HttpSink() as sink:
        slack = {
            "conn_type": "slackwebhook",
            "host": f"{sink.url}/slack/services",
            "password": "T000/B000/XXX",
            "extra": {"timeout": 10},
        }
        webhook = {"conn_type": "http", "host": f"{sink.url}/hook", "schema": "http"}
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_WEBHOOK_DEFAULT", json.dumps(slack))
        monkeypatch.setenv("AIRFLOW_CONN_IMAGELABELS_WEBHOOK", json.dumps(webhook))
        yield sink
