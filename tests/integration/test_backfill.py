"""`airflow backfill create` makes one run per hour whose data interval is exactly that hour."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path


def _airflow(*args: str) -> subprocess.CompletedProcess[str]:
    airflow = Path(sys.executable).with_name("airflow")
    return subprocess.run(
        [str(airflow), *args], capture_output=True, text=True, env=os.environ.copy(), timeout=120
    )


def test_backfill_runs_tile_the_requested_hours(airflow_db) -> None:  # type: ignore[no-untyped-def]
    assert _airflow("dags", "reserialize").returncode == 0
    created = _airflow(
        "backfill",
        "create",
        "--dag-id",
        "image_ingest_s3_hourly",
        "--from-date",
        "2026-10-01T00:00:00+00:00",
        "--to-date",
        "2026-10-01T02:00:00+00:00",
    )
    assert created.returncode == 0, created.stderr

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = [
            run
            for run in session.query(DagRun).filter(DagRun.dag_id == "image_ingest_s3_hourly")
            if run.run_id.startswith("backfill__2026-10-01")
        ]
        intervals = sorted((run.data_interval_start, run.data_interval_end) for run in runs)
    hour = datetime(2026, 10, 1, tzinfo=UTC)
    expected = [(hour + timedelta(hours=h), hour + timedelta(hours=h + 1)) for h in range(3)]
    assert intervals == expected, _what_happened(created)


def _what_happened(created: subprocess.CompletedProcess[str]) -> str:
    """Why a backfill made no runs: what the CLI printed, the runs already there for the dates
    and the backfills with their per-date reasons (Airflow logs them at INFO, below our level)."""
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = [
            (run.run_id, run.logical_date, run.state)
            for run in session.query(DagRun).filter(DagRun.dag_id == "image_ingest_s3_hourly")
        ]
        backfills = [
            (b.id, b.dag_id, b.from_date, b.to_date, b.completed_at) for b in session.query(Backfill)
        ]
        reasons = [
            (r.backfill_id, r.logical_date, r.dag_run_id, r.exception_reason)
            for r in session.query(BackfillDagRun)
        ]
    return (
        f"backfill create said:\n{created.stdout[-3000:]}\n{created.stderr[-3000:]}\n"
        f"runs: {runs}\nbackfills: {backfills}\nper date: {reasons}"
    )
