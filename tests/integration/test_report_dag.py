"""The report DAG end to end with ``dag.test()``: moto S3, noida-db, a real SMTP server and a
real HTTP server (Slack webhook and generic webhook) on loopback."""

from __future__ import annotations

import io
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagelabels.reports.delivery import DELIVERIES_INDEX
from tests.airflow_dags import load_dag
from tests.indexed import index_labelled

pytestmark = pytest.mark.both_engines

ROOT = Path(__file__).resolve().parents[2]
DAY1 = datetime(2026, 3, 2, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)

CONFIG = """
version: 1
reports:
  - name: daily
    period: daily
    top_n: 5
    formats: [csv, xlsx, png, pdf, json]
    output: {{uri: "s3://reports-bucket/labels/"}}
    delivery:
      attempts: 2
      email: {{conn_id: smtp_default, to: [team@example.com], subject: "Labels {{interval}}"}}
      slack: {{conn_id: slack_webhook_default}}
      webhook: {{conn_id: imagelabels_webhook, endpoint: /reports}}
"""


def _index(es, day: datetime, labels: list[tuple[str, str, float]]) -> None:  # type: ignore[no-untyped-def]
    """One document per (key, label, confidence), ingested during ``day`` from 09:00."""
    index_labelled(es, labels, lambda i: day + timedelta(hours=9, minutes=i))


@pytest.fixture
def report_dag(airflow_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The DAG file parsed with a report config that delivers on every channel."""
    config = tmp_path / "reports.yaml"
    config.write_text(CONFIG.format())
    monkeypatch.setenv("IMAGELABELS_REPORTS_CONFIG", str(config))
    dag = load_dag("image_label_report", "image_label_report_daily")  # the report "daily"
    for task in dag.tasks:  # keep the production retries, but dag.test() need not wait 5 minutes
        task.retry_delay = timedelta(seconds=1)
    return dag


def _run_day(dag, day: datetime):  # type: ignore[no-untyped-def]
    run = dag.test(logical_date=day + timedelta(days=1))
    assert (run.data_interval_start, run.data_interval_end) == (day, day + timedelta(days=1))
    return run


def _states(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index}]"): str(ti.state)
        for ti in run.get_task_instances()
    }


def test_backfilled_days_give_their_own_reports_delivered_on_every_channel(  # type: ignore[no-untyped-def]
    report_dag, s3, es, smtp_sink, http_sink
) -> None:
    s3.create_bucket(Bucket="reports-bucket")
    _index(es, DAY1, [("a/cat1.jpg", "Cat", 90.0), ("a/cat2.jpg", "Cat", 80.0), ("b/dog.jpg", "Dog", 70.0)])
    _index(es, DAY2, [("a/car.jpg", "Car", 99.0)])

    runs = [_run_day(report_dag, day) for day in (DAY1, DAY2)]
    for run in runs:
        assert _states(run) == {
            "build_report": "success",
            "deliver[email]": "success",
            "deliver[slack]": "success",
            "deliver[webhook]": "success",
        }

    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="reports-bucket")["Contents"]}
    for day, stamp in ((DAY1, "2026-03-02"), (DAY2, "2026-03-03")):
        folder = f"labels/daily/{day:%Y/%m/%d}/"
        assert f"{folder}label-report_daily_{stamp}.pdf" in keys
        assert f"{folder}label-report_daily_{stamp}.xlsx" in keys
        assert f"{folder}label-report_daily_{stamp}_top_labels.png" in keys
        assert f"{folder}label-report_daily_{stamp}_top_labels.csv" in keys

    mails = smtp_sink.wait_for(2)
    assert [m.message["Subject"] for m in mails] == ["Labels 2026-03-02", "Labels 2026-03-03"]
    first = mails[0].attachments()
    assert set(first) >= {"label-report_daily_2026-03-02.pdf", "label-report_daily_2026-03-02.xlsx"}

    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(first["label-report_daily_2026-03-02.xlsx"]))
    top = book[book.sheetnames[2]]  # Summary, Outcomes, Top labels
    rows = [tuple(c.value for c in row) for row in top.iter_rows(min_row=2, max_col=3)]
    assert rows[:2] == [(1, "Cat", 2), (2, "Dog", 1)]

    webhooks = [r.json() for r in http_sink.requests_to("/hook/reports")]
    assert [(w["interval_key"], w["totals"]["indexed"]) for w in webhooks] == [
        ("2026-03-02", 3),
        ("2026-03-03", 1),
    ]
    assert webhooks[0]["top_labels"][0]["label"] == "Cat"
    slack = [r.json()["text"] for r in http_sink.requests_to("/slack/")]
    assert len(slack) == 2
    assert "Cat" in slack[0]
    assert "label-report_daily_2026-03-02.pdf" in slack[0]  # the presigned link to the PDF

    # a rerun of a day overwrites its files and does not mail again
    rerun = _run_day(report_dag, DAY1)
    assert _states(rerun)["deliver[email]"] == "success"
    assert len(smtp_sink.messages) == 2
    assert len(http_sink.requests_to("/hook/reports")) == 2


def test_with_the_uis_base_url_report_links_open_the_page_and_never_expire(  # type: ignore[no-untyped-def]
    report_dag, s3, es, smtp_sink, http_sink, monkeypatch
) -> None:
    """Presigned links die with the credentials that signed them (an assumed role's: an hour);
    with the UI's base URL known, every channel links the page's route for the stored files."""
    monkeypatch.setenv("IMAGELABELS_UI_BASE_URL", "https://airflow.example.com")
    s3.create_bucket(Bucket="reports-bucket")
    _index(es, DAY1, [("a/cat1.jpg", "Cat", 90.0)])
    assert set(_states(_run_day(report_dag, DAY1)).values()) == {"success"}
    page = "https://airflow.example.com/image-search/api/reports/daily/2026/03/02/"
    (slack,) = [r.json()["text"] for r in http_sink.requests_to("/slack/")]
    assert f"<{page}label-report_daily_2026-03-02.pdf|label-report_daily_2026-03-02.pdf>" in slack
    assert "X-Amz-Signature" not in slack
    (webhook,) = [r.json() for r in http_sink.requests_to("/hook/reports")]
    assert (
        webhook["links"]["label-report_daily_2026-03-02.xlsx"] == f"{page}label-report_daily_2026-03-02.xlsx"
    )
    assert all(url.startswith(page) for url in webhook["links"].values())


def test_a_failing_channel_is_recorded_and_does_not_stop_the_others(  # type: ignore[no-untyped-def]
    report_dag, s3, es, smtp_sink, http_sink, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket="reports-bucket")
    _index(es, DAY1, [("a/cat1.jpg", "Cat", 90.0)])
    http_sink.fail_always(503)  # Slack and the webhook both answer 503

    run = _run_day(report_dag, DAY1)
    states = _states(run)
    assert states["build_report"] == "success"
    assert states["deliver[email]"] == "success"
    assert states["deliver[webhook]"] == "failed"
    assert states["deliver[slack]"] == "failed"
    assert len(smtp_sink.wait_for(1)) == 1

    record = es.get(index=DELIVERIES_INDEX, id="daily:2026-03-02:webhook")["_source"]
    assert record["status"] == "failed"
    assert "503" in record["error"]
    assert es.get(index=DELIVERIES_INDEX, id="daily:2026-03-02:email")["_source"]["status"] == "delivered"

    # the PDF that was mailed has pages that are not blank
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(smtp_sink.messages[0].attachments()["label-report_daily_2026-03-02.pdf"])
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) >= 3
    from PIL import Image, ImageStat

    for page in pages:
        assert max(ImageStat.Stat(Image.open(page).convert("L")).var) > 50, f"{page.name} is blank"


BROKEN_WEEKLY = """
version: 1
reports:
  - name: daily
    period: daily
    formats: [csv, json]
    output: {uri: "s3://reports-bucket/labels/"}
  - name: weekly
    perod: weekly
    top_n: many
"""


def test_a_broken_report_loses_only_its_dag_and_a_dag_lists_the_mistakes(  # type: ignore[no-untyped-def]
    airflow_db, s3, es, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd, caplog
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    config = tmp_path / "reports.yaml"
    config.write_text(BROKEN_WEEKLY)
    monkeypatch.setenv("IMAGELABELS_REPORTS_CONFIG", str(config))
    bag = DagBag(dag_folder=str(ROOT / "dags" / "image_label_report.py"))
    assert bag.import_errors == {}
    assert sorted(bag.dags) == ["image_label_report_config_errors", "image_label_report_daily"]
    mistakes = (
        "reports[1] 'weekly': unknown field(s) 'perod'",
        "reports[1] 'weekly': field 'period' must be one of hourly, daily, weekly, monthly (got None)",
        "reports[1] 'weekly': field 'top_n' must be an integer within 1..1000 (got 'many')",
    )
    errors = bag.dags["image_label_report_config_errors"]
    assert "Refused entries: reports[1] 'weekly'" in errors.doc_md
    for mistake in mistakes:
        assert mistake in errors.doc_md

    # its run fails at once, listing every mistake of the file as it is now
    errors = load_dag("image_label_report", "image_label_report_config_errors")
    run = errors.test()
    assert str(run.state) == "failed"
    (ti,) = run.get_task_instances()
    assert ti.try_number == 1
    captured = capfd.readouterr()
    logged = captured.out + captured.err + caplog.text
    for mistake in mistakes:
        assert mistake in logged

    # the valid report still runs
    s3.create_bucket(Bucket="reports-bucket")
    daily = load_dag("image_label_report", "image_label_report_daily")
    assert str(_run_day(daily, DAY1).state) == "success"
    assert any(o["Key"].endswith(".csv") for o in s3.list_objects_v2(Bucket="reports-bucket")["Contents"])

    # fixed: the errors DAG goes away
    config.write_text(BROKEN_WEEKLY.replace("perod", "period").replace("many", "5"))
    bag = DagBag(dag_folder=str(ROOT / "dags" / "image_label_report.py"))
    assert sorted(bag.dags) == ["image_label_report_daily", "image_label_report_weekly"]


EMAIL_AND_WEBHOOK = """
version: 1
reports:
  - name: daily
    period: daily
    formats: [csv, json]
    output: {uri: "s3://reports-bucket/labels/"}
    delivery:
      attempts: 2
      email: {conn_id: smtp_default, to: [team@example.com, gone@example.com]}
      webhook: {conn_id: imagelabels_webhook, endpoint: /reports}
"""


def _dag_with(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The daily report DAG parsed with the config ``text`` (retry delays of a second)."""
    config = tmp_path / "reports.yaml"
    config.write_text(text)
    monkeypatch.setenv("IMAGELABELS_REPORTS_CONFIG", str(config))
    dag = load_dag("image_label_report", "image_label_report_daily")
    for task in dag.tasks:
        task.retry_delay = timedelta(seconds=1)
    return dag


def _tries(run) -> dict[str, tuple[str, int]]:  # type: ignore[no-untyped-def]
    return {
        ti.rendered_map_index: (str(ti.state), ti.try_number)
        for ti in run.get_task_instances()
        if ti.task_id == "deliver"
    }


def test_retries_are_airflows_and_never_send_twice(  # type: ignore[no-untyped-def]
    airflow_db, s3, es, http_sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500-then-200 webhook is delivered by the second try of its task; an SMTP server that
    refuses one recipient (the other gets the mail) is not a failure to retry."""
    from tests.flaky_servers import FlakySmtpSink, smtp_connection

    dag = _dag_with(EMAIL_AND_WEBHOOK, tmp_path, monkeypatch)
    s3.create_bucket(Bucket="reports-bucket")
    _index(es, DAY1, [("a/cat1.jpg", "Cat", 90.0)])
    http_sink.fail_next(1, status=500)
    with smtp_connection(monkeypatch, FlakySmtpSink(refuse=("gone@example.com",))) as smtp:
        run = _run_day(dag, DAY1)
        assert _tries(run) == {"email": ("success", 1), "webhook": ("success", 2)}
        assert [r.status for r in http_sink.requests_to("/hook/reports")] == [500, 200]
        assert [mail.rcpt_tos for mail in smtp.messages] == [("team@example.com",)]

        rerun = _run_day(dag, DAY1)  # a rerun sends nothing again
        assert {state for state, _ in _tries(rerun).values()} == {"success"}
        assert len(http_sink.requests_to("/hook/reports")) == 2
        assert len(smtp.messages) == 1
    record = es.get(index=DELIVERIES_INDEX, id="daily:2026-03-02:webhook")["_source"]
    assert (record["status"], record["attempts"]) == ("delivered", 2)


def test_a_failing_webhook_is_tried_delivery_attempts_times_in_all(  # type: ignore[no-untyped-def]
    airflow_db, s3, es, smtp_sink, http_sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = _dag_with(EMAIL_AND_WEBHOOK.replace(", gone@example.com", ""), tmp_path, monkeypatch)
    s3.create_bucket(Bucket="reports-bucket")
    _index(es, DAY1, [("a/cat1.jpg", "Cat", 90.0)])
    http_sink.fail_always(500)

    run = _run_day(dag, DAY1)
    assert _tries(run) == {"email": ("success", 1), "webhook": ("failed", 2)}
    assert [r.status for r in http_sink.requests_to("/hook/reports")] == [500, 500]  # attempts: 2
    assert len(smtp_sink.messages) == 1
    record = es.get(index=DELIVERIES_INDEX, id="daily:2026-03-02:webhook")["_source"]
    assert (record["status"], record["attempts"]) == ("failed", 2)
