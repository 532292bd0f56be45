"""Params and settings are data: the prefix placeholders, nullable Params, unknown Params,
configuration errors that fail at once, a run without a data interval, and who hears of a
failed run."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from imagelabels.settings import ConfigurationError
from imagelabels.tasks import notify_failures as nf
from imagelabels.tasks.ingestion import DAILY, HOURLY, fail_at_once, listing_prefix, run_interval
from imagelabels.tasks.params import reject_unknown_params, render_prefix

DAGS = Path(__file__).resolve().parents[2] / "dags"
WHEN = datetime(2026, 3, 7, 5, 42, tzinfo=UTC)
ALLOWED = "{ds}, {hour}, {yyyy}, {mm}, {dd}"


# --- prefix placeholders ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("", ""),
        ("uploads/", "uploads/"),
        ("uploads/{ds}/", "uploads/2026-03-07/"),
        ("uploads/{ds}/{hour}/", "uploads/2026-03-07/05/"),
        ("y={yyyy}/m={mm}/d={dd}/", "y=2026/m=03/d=07/"),
        ("{ds}{ds}", "2026-03-072026-03-07"),
        ("caf\u00e9 $x %Y/", "caf\u00e9 $x %Y/"),  # no other syntax means anything
    ],
)
def test_prefix_placeholders_are_the_interval_start_in_utc(template: str, expected: str) -> None:
    assert render_prefix(template, WHEN) == expected
    assert render_prefix(template, WHEN.astimezone(datetime.now().astimezone().tzinfo)) == expected


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("{{ {}[conn.aws_default.password | reverse].x }}", "Jinja templates are not rendered"),
        ("uploads/{{ data_interval_start | ds }}/", "Jinja templates are not rendered"),
        ("{{ds}}", "Jinja templates are not rendered"),
        ("{% for c in conn %}{% endfor %}", "Jinja templates are not rendered"),
        ("{# comment #}", "Jinja templates are not rendered"),
        ("uploads/{date}/", "unknown placeholder '{date}'"),
        ("uploads/{DS}/", "unknown placeholder '{DS}'"),
        ("uploads/{}/", "unknown placeholder '{}'"),
        ("uploads/{ds", "a brace outside a placeholder"),
        ("uploads/ds}/", "a brace outside a placeholder"),
        ("}{ds}{", "a brace outside a placeholder"),
    ],
)
def test_anything_else_in_braces_is_refused_naming_the_param_and_the_placeholders(
    template: str, why: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        render_prefix(template, WHEN)
    message = str(refused.value)
    assert message.startswith("Param 'prefix'")
    assert why in message
    assert ALLOWED in message


def test_the_prefix_setting_has_the_same_placeholders_and_is_named_in_its_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGELABELS_PREFIX", "incoming/{yyyy}/{mm}/")
    assert listing_prefix({"prefix": None}, WHEN) == "incoming/2026/03/"
    assert listing_prefix({"prefix": ""}, WHEN) == "incoming/2026/03/"
    assert listing_prefix({"prefix": "  "}, WHEN) == "incoming/2026/03/"
    assert listing_prefix({"prefix": "mine/{dd}/"}, WHEN) == "mine/07/"  # the Param wins
    monkeypatch.setenv("IMAGELABELS_PREFIX", "{{ conn.aws_default.password }}")
    with pytest.raises(AirflowFailException, match="setting IMAGELABELS_PREFIX") as refused:
        listing_prefix({}, WHEN)
    assert ALLOWED in str(refused.value)
    with pytest.raises(AirflowFailException, match="Param 'prefix'"):  # fails at once: no retries
        listing_prefix({"prefix": "{x}"}, WHEN)


# --- nullable Params ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return dict(bag.dags)


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def test_every_text_param_is_nullable_with_a_none_default_and_says_what_empty_means(dags) -> None:  # type: ignore[no-untyped-def]
    """A ``type="string"`` Param with default ``""`` is a required field in the trigger and
    backfill forms (the form sends null for an empty field), so the forms could not be sent."""
    texts = 0
    for dag_id, dag in dags.items():
        for name, param in dag.params.items():
            assert param.value != "", f"{dag_id}.{name}: an empty-string default makes the field required"
            if "string" in _types(param.schema):
                texts += 1
                assert "null" in _types(param.schema), f"{dag_id}.{name} must accept null"
                assert param.value is None, f"{dag_id}.{name}: default must be None"
                assert "empty" in param.description.lower(), f"{dag_id}.{name}: say what empty means"
    assert texts >= 10  # bucket/prefix of each ingestion DAG, labeler, since/until, queue_url, rules_file


def test_every_dag_validates_its_defaults_and_none_for_each_nullable_param(dags) -> None:  # type: ignore[no-untyped-def]
    def merged(params: Any, conf: dict[str, Any]) -> Any:
        copied = copy.deepcopy(params)
        copied.update(conf)  # validates each value, as a run's conf is
        return copied

    for dag in dags.values():
        dag.params.validate()
        for name, param in dag.params.items():
            if "null" in _types(param.schema):
                assert merged(dag.params, {name: None}).validate()[name] is None  # the form's "empty"
    hourly = dags["image_ingest_s3_hourly"].params
    merged(hourly, {"bucket": "", "prefix": "", "labeler": ""}).validate()  # "" still works (REST)


# --- unknown Params -----------------------------------------------------------------------------


def _context(conf: dict[str, Any], declared: dict[str, Any]) -> dict[str, Any]:
    return {
        "dag_run": SimpleNamespace(conf=conf),
        "dag": SimpleNamespace(dag_id="image_ingest_s3_hourly", params=declared),
    }


def test_a_misspelled_param_fails_at_once_naming_it_and_the_valid_ones() -> None:
    declared = {"bucket": None, "min_confidence": 70, "max_labels": 50}
    reject_unknown_params(_context({"bucket": "b", "min_confidence": 80}, declared))
    reject_unknown_params(_context({}, declared))
    with pytest.raises(AirflowFailException) as refused:
        reject_unknown_params(_context({"min_confidance": 50, "bucket": "b", "Prefix": "x"}, declared))
    message = str(refused.value)
    assert "'Prefix', 'min_confidance'" in message
    assert "image_ingest_s3_hourly takes: bucket, max_labels, min_confidence" in message


# --- errors no retry can fix --------------------------------------------------------------------


def test_configuration_errors_fail_at_once_and_transient_ones_keep_their_retries() -> None:
    from imagelabels.labelers import costs

    for error in (ConfigurationError("no bucket"), ValueError("bad"), costs.CostLimitExceeded("too dear")):
        with pytest.raises(AirflowFailException, match=str(error)) as failed, fail_at_once():
            raise error
        assert failed.value.__cause__ is error
    for transient in (ConnectionError("refused"), TimeoutError("slow"), RuntimeError("engine")):
        with pytest.raises(type(transient)), fail_at_once():
            raise transient


class _StubS3:
    """What ``check_bucket_reachable`` needs of an S3 client: ``head_bucket`` answers ``error``."""

    meta = SimpleNamespace(endpoint_url="http://s3.example")

    def __init__(self, error: Exception) -> None:
        self.error = error

    def head_bucket(self, Bucket: str) -> None:  # boto3's spelling
        raise self.error


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadBucket"
    )


@pytest.mark.parametrize(
    ("code", "status", "fails_at_once", "named"),
    [
        ("404", 404, True, "does not exist"),
        ("NoSuchBucket", 404, True, "does not exist"),
        ("403", 403, True, "access denied"),
        ("503", 503, False, "cannot be read (503)"),
        ("SlowDown", 503, False, "cannot be read (SlowDown)"),
        ("500", 500, False, "cannot be read (500)"),
    ],
)
def test_a_missing_bucket_fails_at_once_and_a_busy_s3_is_retried(
    monkeypatch: pytest.MonkeyPatch, code: str, status: int, fails_at_once: bool, named: str
) -> None:
    from imagelabels import clients
    from imagelabels.tasks import ingestion as tasks

    monkeypatch.setattr(clients, "aws_client", lambda *a, **k: _StubS3(_client_error(code, status)))
    expected = AirflowFailException if fails_at_once else ConnectionError
    with pytest.raises(expected) as raised:
        tasks.check_bucket_reachable("photos")
    assert not (isinstance(raised.value, AirflowFailException) and not fails_at_once)
    assert "s3://photos/" in str(raised.value)
    assert named in str(raised.value)


def test_an_engine_connection_of_an_unknown_type_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from imagelabels.tasks import ingestion as tasks

    monkeypatch.setenv(
        "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT", json.dumps({"conn_type": "postgres", "host": "x"})
    )
    with pytest.raises(AirflowFailException, match="must be of type 'elasticsearch' or 'opensearch'"):
        tasks._es()


# --- a run without a data interval --------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_after", "period", "offset", "start", "end"),
    [
        ("2026-03-07T10:30:00", HOURLY, timedelta(0), "2026-03-07T09:00:00", "2026-03-07T10:00:00"),
        ("2026-03-07T10:00:00", HOURLY, timedelta(0), "2026-03-07T09:00:00", "2026-03-07T10:00:00"),
        ("2026-03-07T00:10:00", HOURLY, timedelta(0), "2026-03-06T23:00:00", "2026-03-07T00:00:00"),
        ("2026-03-07T10:30:00", DAILY, 3 * HOURLY, "2026-03-06T03:00:00", "2026-03-07T03:00:00"),
        ("2026-03-07T02:59:59", DAILY, 3 * HOURLY, "2026-03-05T03:00:00", "2026-03-06T03:00:00"),
    ],
)
def test_a_run_without_an_interval_takes_the_last_complete_one_on_the_dags_grid(
    run_after: str, period: timedelta, offset: timedelta, start: str, end: str
) -> None:
    def utc(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    assert run_interval(None, None, utc(run_after), period, offset) == (utc(start), utc(end))
    given = (utc("2026-01-01T00:00:00"), utc("2026-01-01T01:00:00"))
    assert run_interval(*given, utc(run_after), period, offset) == given  # a set interval is kept


# --- failure notifications ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "dag_id", "email", "slack"),
    [
        ({}, "image_ingest_sqs", (), False),
        (
            {"IMAGELABELS_FAILURE_EMAIL": "a@example.com, b@example.com"},
            "x",
            ("a@example.com", "b@example.com"),
            False,
        ),
        (
            {"IMAGELABELS_FAILURE_EMAIL": "a@example.com;b@example.com"},
            "x",
            ("a@example.com", "b@example.com"),
            False,
        ),
        ({"IMAGELABELS_FAILURE_SLACK": "true"}, "x", (), True),
        ({"IMAGELABELS_FAILURE_SLACK": "false"}, "x", (), False),
        (  # per DAG: replaces the general setting for that DAG only
            {
                "IMAGELABELS_FAILURE_EMAIL": "team@example.com",
                "IMAGELABELS_FAILURE_EMAIL__IMAGE_LABEL_REPORT_DAILY": "reports@example.com",
            },
            "image_label_report_daily",
            ("reports@example.com",),
            False,
        ),
        (  # per DAG, empty: off for that DAG
            {
                "IMAGELABELS_FAILURE_EMAIL": "team@example.com",
                "IMAGELABELS_FAILURE_EMAIL__IMAGE_LABEL_ALERTS": "",
            },
            "image_label_alerts",
            (),
            False,
        ),
        (
            {"IMAGELABELS_FAILURE_SLACK": "true", "IMAGELABELS_FAILURE_SLACK__IMAGE_RELABEL": "off"},
            "image_relabel",
            (),
            False,
        ),
        ({"IMAGELABELS_FAILURE_SLACK__IMAGE_RELABEL": "yes"}, "image_relabel", (), True),
        ({"IMAGELABELS_FAILURE_SLACK__IMAGE_RELABEL": "yes"}, "image_ingest_sqs", (), False),
    ],
)
def test_failure_channels_come_from_the_settings(
    environ: dict[str, str], dag_id: str, email: tuple[str, ...], slack: bool
) -> None:
    channels = nf.channels_for(dag_id, environ)
    assert (channels.email, channels.slack) == (email, slack)
    assert bool(channels) == bool(email or slack)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        (
            {"IMAGELABELS_FAILURE_EMAIL": "team@example.com, {{ conn.smtp_default.password }}"},
            "IMAGELABELS_FAILURE_EMAIL",
        ),
        ({"IMAGELABELS_FAILURE_EMAIL__X": "nobody"}, "IMAGELABELS_FAILURE_EMAIL__X"),
        ({"IMAGELABELS_FAILURE_SLACK": "maybe"}, "IMAGELABELS_FAILURE_SLACK='maybe'"),
    ],
)
def test_bad_failure_settings_are_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("{", r"\{").replace("}", r"\}")):
        nf.channels_for("x", environ)


def test_the_message_names_dag_run_and_task_and_treats_them_as_data() -> None:
    hostile = "manual__<b>{{ conn.aws_default.password }}</b>\nBcc: x@evil.example"
    message = nf.FailureMessage(
        dag_id="image_ingest_s3_hourly",
        run_id=hostile,
        task="label_and_index[3]",
        reason="task_failure",
        interval="[a, b)",
        log_url="http://airflow/log?x=1&y=<2>",
    )
    assert "\n" not in message.subject
    assert message.subject.startswith("[imagelabels] image_ingest_s3_hourly failed: task label_and_index[3]")
    assert "<b>" not in message.html()
    assert "&lt;b&gt;{{ conn.aws_default.password }}&lt;/b&gt;" in message.html()
    assert "<b>" not in message.slack_text()
    assert "&lt;b&gt;" in message.slack_text()
    assert "label_and_index[3]" in message.slack_text()


def test_nothing_configured_builds_no_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("IMAGELABELS_FAILURE_"):
            monkeypatch.delenv(name)

    def built(*args: Any) -> list[Any]:
        raise AssertionError("no channel is configured: no notifier may be built")

    monkeypatch.setattr(nf, "_notifiers", built)
    nf.notify_failures({"dag": SimpleNamespace(dag_id="image_relabel"), "run_id": "r"})
