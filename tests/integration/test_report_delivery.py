"""Report delivery against real servers on loopback: an SMTP server (aiosmtpd), an HTTP server
standing in for Slack and the webhook receiver, moto S3 and the Elasticsearch stand-in."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from imagelabels.channels import DeliveryError, slack_escape
from imagelabels.devstack.ports import free_port
from imagelabels.reports.config import parse_report_configs
from imagelabels.reports.delivery import (
    DELIVERIES_INDEX,
    already_delivered,
    deliver,
    deliver_and_record,
    delivery_record,
    report_prefix,
    store_files,
    summary_payload,
    summary_text,
)
from imagelabels.reports.model import Column, Report, Totals, table
from tests.conftest import SLACK_WEBHOOK_PATH
from tests.flaky_servers import FlakySmtpSink, HangUpHttpServer, smtp_connection

LABELS = [("Cat", 50), ("<script>alert(1)</script>", 30), ("<b>bold</b> & co", 20), ("Dog", 10), ("Tree", 5)]


def make_report(period: str = "daily", start: datetime = datetime(2026, 11, 28, tzinfo=UTC)) -> Report:
    ends = {
        "daily": datetime(2026, 11, 29, tzinfo=UTC),
        "weekly": datetime(2026, 11, 30, tzinfo=UTC),
        "hourly": start.replace(hour=start.hour + 1),
        "monthly": datetime(2026, 12, 1, tzinfo=UTC),
    }
    top = table(
        "top_labels",
        "Top labels",
        [Column("rank", "Rank", "int"), Column("label", "Label"), Column("images", "Images", "int")],
        [(i + 1, label, n) for i, (label, n) in enumerate([*LABELS, ("Sixth", 1)])],
    )
    return Report(
        name=period,
        period=period,
        start=start,
        end=ends[period],
        generated_at=datetime(2026, 11, 29, 0, 5, tzinfo=UTC),
        totals=Totals(
            indexed=100,
            rejected=15,
            failed=5,
            moderation_hits=3,
            distinct_labels=40,
            new_labels=7,
            without_labels=2,
        ),
        tables=(top,),
    )


def make_config(
    name: str = "daily", period: str = "daily", output: str = "s3://{bucket}/reports/", **delivery: Any
):
    raw = {
        "version": 1,
        "reports": [
            {"name": name, "period": period, "output": {"uri": output}, "delivery": delivery or None}
        ],
    }
    return parse_report_configs(raw)[0]


ALL_CHANNELS = {
    "email": {"to": ["team@example.com"], "cc": ["boss@example.com"]},
    "slack": {"conn_id": "slack_webhook_default"},
    "webhook": {"conn_id": "imagelabels_webhook", "endpoint": "/reports"},
}


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """Small stand-ins for the rendered files (content differs per file, PNG/PDF magic numbers)."""
    base = "label-report_daily_2026-11-28"
    contents = {
        f"{base}.pdf": b"%PDF-1.4\n% report\n" + bytes(range(256)),
        f"{base}.xlsx": b"PK\x03\x04 workbook " + bytes(range(200, 256)),
        f"{base}_top_labels.png": b"\x89PNG\r\n\x1a\n chart " + bytes(range(64)),
        f"{base}_top_labels.csv": b"rank,label,images\n1,Cat,50\n",
        f"{base}.json": b'{"name": "daily"}\n',
    }
    out = tmp_path / "rendered"
    out.mkdir()
    paths = []
    for name, data in contents.items():
        (out / name).write_bytes(data)
        paths.append(out / name)
    return paths


LINKS = {
    "label-report_daily_2026-11-28.pdf": "http://s3.example/r.pdf?X-Amz-Signature=abc&X-Amz-Expires=900",
    "label-report_daily_2026-11-28_top_labels.png": "http://s3.example/r.png?a=1&b=2",
}


# --- email -------------------------------------------------------------------------------------


def test_email_carries_the_summary_and_the_configured_attachments(smtp_sink: Any, files: list[Path]) -> None:
    config = make_config(**ALL_CHANNELS)
    assert deliver("email", config, make_report(), files, links=LINKS) == ""  # nothing to note

    (mail,) = smtp_sink.wait_for(1)
    assert mail.message["Subject"] == "Label report daily 2026-11-28"
    assert mail.mail_from == "imagelabels@example.com"
    assert sorted(mail.rcpt_tos) == ["boss@example.com", "team@example.com"]
    assert mail.message["Cc"] == "boss@example.com"
    by_name = {f.name: f.read_bytes() for f in files}
    expected = {n: b for n, b in by_name.items() if n.endswith((".pdf", ".xlsx", ".png"))}
    assert mail.attachments() == expected  # names and bytes; CSV and JSON are not attached by default
    body = mail.html()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>" not in body
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in body
    assert "Sixth" not in body  # top 5 only
    assert "2026-11-28 00:00 \u2013 2026-11-29 00:00 UTC" in body
    assert "Moderation hits: 3" in body
    assert "X-Amz-Signature=abc&amp;X-Amz-Expires=900" in body
    assert "120" in body
    assert "Cat (50 images)" in body
    assert "<script>alert(1)</script>" in mail.text()  # the text part is plain text, not markup


def test_email_attachments_subset_from_config(smtp_sink: Any, files: list[Path]) -> None:
    config = make_config(
        email={"to": ["team@example.com"], "attachments": ["csv", "pdf"], "subject": "{period}/{name}"}
    )
    deliver("email", config, make_report(), files, links={})
    (mail,) = smtp_sink.wait_for(1)
    assert sorted(mail.attachments()) == [
        "label-report_daily_2026-11-28.pdf",
        "label-report_daily_2026-11-28_top_labels.csv",
    ]
    assert mail.message["Subject"] == "daily/daily"


# --- Slack and webhook -------------------------------------------------------------------------


def test_slack_post_is_escaped_and_carries_the_links(http_sink: Any, files: list[Path]) -> None:
    deliver("slack", make_config(**ALL_CHANNELS), make_report(), files, links=LINKS)

    (request,) = http_sink.wait_for(1)
    assert (request.method, request.path) == ("POST", SLACK_WEBHOOK_PATH)
    text = request.json()["text"]
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co (20)" in text
    assert "<b>" not in text
    assert "<script>" not in text
    assert "120 processed: 100 indexed (2 without labels), 15 rejected, 5 failed" in text
    assert "Sixth" not in text
    for name, url in LINKS.items():
        assert f"<{slack_escape(url)}|{name}>" in text
    assert "&amp;X-Amz-Expires=900" in text


def test_webhook_posts_the_json_summary(http_sink: Any, files: list[Path]) -> None:
    report = make_report()
    deliver("webhook", make_config(**ALL_CHANNELS), report, files, links=LINKS)

    (request,) = http_sink.wait_for(1)
    assert (request.method, request.path) == ("POST", "/hook/reports")
    assert request.header("Content-Type") == "application/json"
    payload = request.json()
    assert set(payload) == {
        "type",
        "name",
        "period",
        "start",
        "end",
        "generated_at",
        "scope",
        "totals",
        "interval_key",
        "top_labels",
        "links",
    }
    assert payload["totals"] == {
        "processed": 120,
        "indexed": 100,
        "rejected": 15,
        "failed": 5,
        "moderation_hits": 3,
        "distinct_labels": 40,
        "new_labels": 7,
        "without_labels": 2,
    }
    assert payload["interval_key"] == "2026-11-28"
    assert payload["start"] == "2026-11-28T00:00:00+00:00"
    assert payload["top_labels"] == [{"label": label, "images": n} for label, n in LABELS]
    assert payload["links"] == LINKS
    assert payload == json.loads(json.dumps(summary_payload(report, LINKS)))


def test_a_failing_channel_is_recorded_and_does_not_stop_the_others(
    es: Any, smtp_sink: Any, http_sink: Any, files: list[Path]
) -> None:
    config = make_config(**ALL_CHANNELS)
    report = make_report()
    http_sink.fail_always(status=500)

    with pytest.raises(DeliveryError) as raised:
        deliver_and_record(es, "webhook", config, report, files, links=LINKS)
    assert not raised.value.uncertain  # the server said no: the next try may send again
    assert "webhook via connection 'imagelabels_webhook' failed: HTTP 500" in str(raised.value)
    assert len(http_sink.requests_to("/hook/")) == 1  # one send per try: retries are Airflow's
    failed = delivery_record(es, report, "webhook")
    assert failed is not None
    assert (failed["status"], failed["attempts"], failed["interval_key"]) == ("failed", 1, "2026-11-28")
    assert "HTTP 500" in failed["error"]
    assert not already_delivered(es, report, "webhook")

    assert deliver_and_record(es, "email", config, report, files, links=LINKS) == "delivered"
    assert len(smtp_sink.wait_for(1)) == 1
    assert already_delivered(es, report, "email")


def test_a_second_delivery_is_skipped_unless_forced(es: Any, http_sink: Any, files: list[Path]) -> None:
    config = make_config(**ALL_CHANNELS)
    report = make_report()
    assert not already_delivered(es, report, "slack")  # no index yet: nothing delivered

    assert deliver_and_record(es, "slack", config, report, files, links={}) == "delivered"
    assert deliver_and_record(es, "slack", config, report, files, links={}) == "skipped"
    assert len(http_sink.requests) == 1
    record = delivery_record(es, report, "slack")
    assert record is not None
    assert (record["status"], record["attempts"]) == ("delivered", 1)
    # Another interval of the same report is a different delivery.
    other = replace(report, start=datetime(2026, 11, 29, tzinfo=UTC), end=datetime(2026, 11, 30, tzinfo=UTC))
    assert not already_delivered(es, other, "slack")

    assert deliver_and_record(es, "slack", config, report, files, links={}, force=True) == "delivered"
    assert len(http_sink.requests) == 2
    assert es.count(index=DELIVERIES_INDEX)["count"] == 1  # one record per report+interval+channel


def test_delivery_error_names_channel_and_connection_but_not_the_token(
    http_sink: Any, files: list[Path]
) -> None:
    http_sink.fail_always(status=404)  # the answer echoes the request path, i.e. the webhook token
    with pytest.raises(DeliveryError) as raised:
        deliver("slack", make_config(**ALL_CHANNELS), make_report(), files, links={})
    message = str(raised.value)
    assert message.startswith("slack via connection 'slack_webhook_default' failed: ")
    assert "404" in message
    assert "T000/B000/XXX" in str(raised.value.__cause__)  # what the library said...
    assert "T000/B000/XXX" not in message  # ...and what reaches logs and delivery records
    assert len(http_sink.requests) == 1


def test_an_unreachable_server_is_a_delivery_error(
    monkeypatch: pytest.MonkeyPatch, files: list[Path]
) -> None:
    closed = free_port()  # nothing listens: the connection is refused
    conn = {"conn_type": "http", "host": f"http://127.0.0.1:{closed}/hook"}
    monkeypatch.setenv("AIRFLOW_CONN_WEBHOOK_DOWN", json.dumps(conn))
    config = make_config(webhook={"conn_id": "webhook_down"})
    with pytest.raises(
        DeliveryError, match=r"^webhook via connection 'webhook_down' failed: ConnectionError"
    ):
        deliver("webhook", config, make_report(), files, links={})


def test_a_channel_without_configuration_is_refused(files: list[Path]) -> None:
    with pytest.raises(ValueError, match="has no email delivery configured"):
        deliver("email", make_config(), make_report(), files, links={})
    with pytest.raises(ValueError, match="unknown channel 'fax'"):
        deliver("fax", make_config(), make_report(), files, links={})


# --- storage -----------------------------------------------------------------------------------


def _objects(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_store_files_puts_them_under_date_partitioned_keys_and_a_rerun_overwrites(
    s3: Any, monkeypatch: pytest.MonkeyPatch, files: list[Path]
) -> None:
    monkeypatch.setenv("IMAGELABELS_BUCKET", "acme-images")
    s3.create_bucket(Bucket="acme-images")
    config, report = make_config(), make_report()
    assert report_prefix(config, report) == "s3://acme-images/reports/daily/2026/11/28/"

    uris = store_files(s3, config, report, files)
    keys = {f"reports/daily/2026/11/28/{f.name}" for f in files}
    assert uris == [f"s3://acme-images/reports/daily/2026/11/28/{f.name}" for f in files]
    assert _objects(s3, "acme-images", "reports/") == {
        f"reports/daily/2026/11/28/{f.name}": f.read_bytes() for f in files
    }
    head = s3.head_object(Bucket="acme-images", Key=f"reports/daily/2026/11/28/{files[0].name}")
    assert head["ContentType"] == "application/pdf"

    files[0].write_bytes(b"%PDF-1.4 rerun")
    assert store_files(s3, config, report, files) == uris
    stored = _objects(s3, "acme-images", "reports/")
    assert set(stored) == keys
    assert stored[f"reports/daily/2026/11/28/{files[0].name}"] == b"%PDF-1.4 rerun"


def test_store_files_into_a_local_directory(tmp_path: Path, files: list[Path]) -> None:
    config = make_config(name="weekly", period="weekly", output=str(tmp_path / "out"))
    report = make_report("weekly", datetime(2026, 11, 23, tzinfo=UTC))
    uris = store_files(None, config, report, files)
    folder = tmp_path / "out" / "weekly" / "2026" / "11" / "W48"
    assert uris == [str(folder / f.name) for f in files]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {f.name: f.read_bytes() for f in files}


@pytest.mark.parametrize(
    ("period", "start", "partition"),
    [
        ("hourly", datetime(2026, 11, 28, 13, tzinfo=UTC), "2026/11/28/"),
        ("daily", datetime(2026, 11, 28, tzinfo=UTC), "2026/11/28/"),
        ("weekly", datetime(2026, 11, 23, tzinfo=UTC), "2026/11/W48/"),
        ("weekly", datetime(2025, 12, 29, tzinfo=UTC), "2025/12/W01/"),  # ISO week 1 of 2026
        ("monthly", datetime(2026, 11, 1, tzinfo=UTC), "2026/11/"),
    ],
)
def test_report_prefix_per_period(period: str, start: datetime, partition: str) -> None:
    config = make_config(name=period, period=period, output="s3://out-bucket/r")
    assert report_prefix(config, make_report(period, start)) == f"s3://out-bucket/r/{period}/{partition}"


def test_summary_text_is_pure_and_escaped() -> None:
    text = summary_text(make_report())
    assert (
        text.splitlines()[0]
        == "*Label report daily* \u2014 2026-11-28 (2026-11-28 00:00 \u2013 2026-11-29 00:00 UTC)"
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt; (30)" in text
    assert "<" not in text.replace("&lt;", "")


# --- one send per try: retries never deliver twice ----------------------------------------------
#
# Each call of deliver_and_record below is one try of the DAG's ``deliver`` task (Airflow's
# retries call it again); the servers count exactly what they received.


def _try(es: Any, channel: str, config: Any, report: Report, files: list[Path], **options: Any) -> str:
    """One try: ``"delivered"``/``"skipped"``, or ``"error: <message>"``."""
    try:
        return deliver_and_record(es, channel, config, report, files, links={}, **options)
    except DeliveryError as error:
        return f"error: {error}"


def test_a_500_then_200_webhook_is_delivered_once_by_the_next_try(
    es: Any, http_sink: Any, files: list[Path]
) -> None:
    config, report = make_config(**ALL_CHANNELS), make_report()
    http_sink.fail_next(1, status=500)

    first = _try(es, "webhook", config, report, files)
    assert first.startswith("error: webhook via connection 'imagelabels_webhook' failed: HTTP 500")
    failed = delivery_record(es, report, "webhook")
    assert failed is not None
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert _try(es, "webhook", config, report, files) == "delivered"
    assert _try(es, "webhook", config, report, files) == "skipped"  # a later try or a rerun

    assert [r.status for r in http_sink.requests_to("/hook/reports")] == [500, 200]
    delivered = delivery_record(es, report, "webhook")
    assert delivered is not None
    assert (delivered["status"], delivered["attempts"], delivered["error"]) == ("delivered", 2, None)


def test_a_failing_webhook_gets_one_request_per_try(es: Any, http_sink: Any, files: list[Path]) -> None:
    config, report = make_config(**ALL_CHANNELS), make_report()
    http_sink.fail_always(status=500)
    for tries in (1, 2, 3):
        assert _try(es, "webhook", config, report, files).startswith("error: ")
        assert len(http_sink.requests) == tries
        record = delivery_record(es, report, "webhook")
        assert record is not None
        assert (record["status"], record["attempts"]) == ("failed", tries)


def test_an_smtp_server_refusing_one_recipient_delivers_once_to_the_others(
    es: Any, monkeypatch: pytest.MonkeyPatch, files: list[Path]
) -> None:
    config = make_config(email={"to": ["team@example.com", "gone@example.com"]})
    report = make_report()
    with smtp_connection(monkeypatch, FlakySmtpSink(refuse=("gone@example.com",))) as sink:
        assert _try(es, "email", config, report, files) == "delivered"
        assert _try(es, "email", config, report, files) == "skipped"
        assert [mail.rcpt_tos for mail in sink.messages] == [("team@example.com",)]
    record = delivery_record(es, report, "email")
    assert record is not None
    assert record["status"] == "delivered"
    assert record["error"] == "recipients refused by the server: gone@example.com"


def test_an_smtp_server_answering_451_gets_the_mail_once_from_the_next_try(
    es: Any, monkeypatch: pytest.MonkeyPatch, files: list[Path]
) -> None:
    config, report = make_config(email={"to": ["team@example.com"]}), make_report()
    with smtp_connection(monkeypatch, FlakySmtpSink(tempfail_data=1)) as sink:
        first = _try(es, "email", config, report, files)
        assert first.startswith("error: email via connection 'smtp_default' failed: SMTPDataError")
        assert "451" in first
        assert sink.messages == []
        assert _try(es, "email", config, report, files) == "delivered"
        assert _try(es, "email", config, report, files) == "skipped"
        assert len(sink.messages) == 1


def test_a_mail_whose_answer_was_lost_is_not_sent_again_unless_redelivered(
    es: Any, monkeypatch: pytest.MonkeyPatch, files: list[Path]
) -> None:
    config, report = make_config(email={"to": ["team@example.com"]}), make_report()
    with smtp_connection(monkeypatch, FlakySmtpSink(hang_up_after_data=1)) as sink:
        first = _try(es, "email", config, report, files)
        assert "the message may have arrived all the same" in first
        assert len(sink.wait_for(1)) == 1
        record = delivery_record(es, report, "email")
        assert record is not None
        assert record["status"] == "uncertain"

        second = _try(es, "email", config, report, files)
        assert "not sent again: try 1 began sending report 'daily' 2026-11-28" in second
        assert "redeliver=true" in second
        assert len(sink.messages) == 1

        assert _try(es, "email", config, report, files, force=True) == "delivered"  # redeliver
        assert len(sink.messages) == 2


def test_a_webhook_that_hangs_up_after_the_request_is_not_posted_again(
    es: Any, monkeypatch: pytest.MonkeyPatch, files: list[Path]
) -> None:
    report = make_report()
    with HangUpHttpServer() as server:
        conn = {"conn_type": "http", "host": f"{server.url}/hook"}
        monkeypatch.setenv("AIRFLOW_CONN_WEBHOOK_GONE", json.dumps(conn))
        config = make_config(webhook={"conn_id": "webhook_gone", "endpoint": "/reports"})
        first = _try(es, "webhook", config, report, files)
        assert "the message may have arrived all the same" in first
        assert "not sent again" in _try(es, "webhook", config, report, files)
        assert [path for path, _ in server.received] == ["/hook/reports"]


class _DeliveredRecordFails:
    """The engine, except that recording ``delivered`` fails (the cluster went away right
    after the message was sent)."""

    def __init__(self, es: Any) -> None:
        self._es = es

    def __getattr__(self, name: str) -> Any:
        return getattr(self._es, name)

    def index(self, **params: Any) -> Any:
        if params.get("document", {}).get("status") == "delivered":
            raise ConnectionError("the engine went away")
        return self._es.index(**params)


def test_a_send_whose_record_was_lost_is_not_sent_again(
    es: Any, http_sink: Any, monkeypatch: pytest.MonkeyPatch, files: list[Path]
) -> None:
    from imagelabels.reports import delivery

    monkeypatch.setattr(delivery, "RECORD_BACKOFF_SECONDS", 0.01, raising=False)
    config, report = make_config(**ALL_CHANNELS), make_report()
    with pytest.raises(ConnectionError):
        deliver_and_record(_DeliveredRecordFails(es), "slack", config, report, files, links={})
    assert len(http_sink.requests) == 1

    assert "not sent again" in _try(es, "slack", config, report, files)  # Airflow's retry
    assert len(http_sink.requests) == 1
