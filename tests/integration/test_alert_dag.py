"""The alert DAG with ``dag.test()``: rules from a file, firings in noida-db, notifications to a
real HTTP server (webhook) on loopback; and the Asset that links ingestion runs to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.airflow_dags import load_dag as _load
from tests.indexed import index_labelled

pytestmark = pytest.mark.both_engines

ROOT = Path(__file__).resolve().parents[2]

RULES = """
version: 1
defaults: {throttle: 0, channels: [webhook, log]}
channels:
  webhook: {conn_id: imagelabels_webhook, endpoint: /alerts}
rules:
  - name: weapon-detected
    type: label
    label: Weapon
    min_confidence: 80
"""


def _index(es, items: list[tuple[str, str, float]]) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC) - timedelta(minutes=5)
    index_labelled(es, items, lambda _: now)


def test_the_alert_dag_runs_after_every_ingestion_run_and_on_a_clock(airflow_db) -> None:  # type: ignore[no-untyped-def]
    from airflow.sdk import AssetOrTimeSchedule

    from imagelabels.tasks.assets import IMAGES_INDEXED

    alerts = _load("image_label_alerts")
    assert isinstance(alerts.timetable, AssetOrTimeSchedule)
    assert alerts.timetable.asset_condition.uri == IMAGES_INDEXED.uri
    for dag_name, last in (
        ("image_ingest_s3_hourly", "summarize"),
        ("image_ingest_sqs", "summarize"),
        ("image_reconcile_daily", "report"),
    ):
        dag = _load(dag_name)
        assert [o.uri for o in dag.get_task(last).outlets] == [IMAGES_INDEXED.uri], dag_name


def test_an_alert_fires_once_per_image_with_key_labels_and_link(  # type: ignore[no-untyped-def]
    airflow_db, s3, es, http_sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    monkeypatch.setenv("IMAGELABELS_ALERT_RULES", str(rules))
    _index(
        es,
        [("drop/knife.jpg", "Weapon", 91.5), ("drop/cat.jpg", "Cat", 99.0), ("drop/toy.jpg", "Weapon", 50.0)],
    )

    run = _load("image_label_alerts").test()
    assert str(run.state) == "success"
    posts = [r.json() for r in http_sink.requests_to("/hook/alerts")]
    assert len(posts) == 1
    images = posts[0]["images"]
    assert [image["s3_location"] for image in images] == ["s3://photos/drop/knife.jpg"]
    assert [(m["label"], m["confidence"]) for m in images[0]["matches"]] == [("Weapon", 91.5)]
    assert images[0]["url"].startswith("http://")
    assert "drop/knife.jpg" in images[0]["url"]

    # a second evaluation (the next ingestion run) does not alert on the same image again
    _index(es, [("drop/sword.jpg", "Weapon", 88.0)])
    again = _load("image_label_alerts").test()
    assert str(again.state) == "success"
    posts = [r.json() for r in http_sink.requests_to("/hook/alerts")]
    assert len(posts) == 2
    assert [image["s3_location"] for image in posts[1]["images"]] == ["s3://photos/drop/sword.jpg"]


def test_an_ingestion_run_records_the_asset_event_that_schedules_the_alert_dag(airflow_db, s3, es) -> None:  # type: ignore[no-untyped-def]
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from imagelabels.tasks.assets import IMAGES_INDEXED

    def events() -> int:
        with create_session() as session:
            query = (
                select(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .where(AssetModel.uri == IMAGES_INDEXED.uri)
            )
            return len(session.scalars(query).all())

    s3.create_bucket(Bucket="photos")
    before = events()
    hour = datetime(2026, 1, 5, 10, tzinfo=UTC)  # nothing uploaded then: a fast, empty run
    run = _load("image_ingest_s3_hourly").test(
        logical_date=hour + timedelta(hours=1), run_conf={"bucket": "photos"}
    )
    assert str(run.state) == "success"
    assert events() == before + 1


@pytest.mark.parametrize("rules_file", ["/etc/passwd", "../.env", "config/../.env"])
def test_a_rules_file_outside_the_config_folders_fails_the_run_without_showing_it(  # type: ignore[no-untyped-def]
    airflow_db, s3, es, rules_file: str, monkeypatch: pytest.MonkeyPatch, capfd, caplog
) -> None:
    """The ``rules_file`` Param is typed by whoever triggers a run: a file outside config/ (and
    IMAGELABELS_RULES_DIRS) is refused, and nothing of it reaches the task log."""
    monkeypatch.delenv("IMAGELABELS_RULES_DIRS", raising=False)
    dag = _load("image_label_alerts")
    for task in dag.tasks:  # a refused file fails at once; never wait 5 minutes if it did not
        task.retry_delay = timedelta(seconds=1)
    run = dag.test(run_conf={"rules_file": rules_file})
    assert str(run.state) == "failed"
    (ti,) = run.get_task_instances()
    assert ti.try_number == 1  # no retry: the same file is refused the same way every time
    captured = capfd.readouterr()
    logged = captured.out + captured.err + caplog.text
    assert "field 'rules_file'" in logged
    assert "root:x:0:0" not in logged


def test_a_rules_file_in_an_allowed_folder_is_evaluated(  # type: ignore[no-untyped-def]
    airflow_db, s3, es, http_sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "team" / "rules.yaml"
    rules.parent.mkdir()
    rules.write_text(RULES)
    monkeypatch.setenv("IMAGELABELS_RULES_DIRS", f"/nonexistent:{rules.parent}")
    _index(es, [("drop/knife.jpg", "Weapon", 91.5)])
    run = _load("image_label_alerts").test(run_conf={"rules_file": str(rules)})
    assert str(run.state) == "success"
    assert len(http_sink.requests_to("/hook/alerts")) == 1
