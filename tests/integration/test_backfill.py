"""`airflow backfill create` makes one run per hour whose data interval is exactly that hour.

The test runs the Airflow CLI against its own, fresh metadata database (as a user's first
backfill does), not the session's shared one: there, hundreds of earlier ``dag.test()`` runs and
the DAG versions they serialize in-process stay behind, and in the full suite a backfill once
committed its ``Backfill`` row and then no run and no per-date reason (CLI exit 0, nothing
printed at WARNING). Every step here logs at INFO, so a failure shows what Airflow decided.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from imagelabels.devstack.embedded import airflow_home_env

ROOT = Path(__file__).resolve().parents[2]

_RUNS = """
import json
from airflow.models.backfill import Backfill, BackfillDagRun
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session

with create_session() as session:
    runs = [
        (run.run_id, run.data_interval_start.isoformat(), run.data_interval_end.isoformat())
        for run in session.query(DagRun).filter(DagRun.dag_id == "image_ingest_s3_hourly")
    ]
    backfills = [(b.id, str(b.from_date), str(b.to_date), str(b.completed_at)) for b in session.query(Backfill)]
    reasons = [(r.backfill_id, str(r.logical_date), r.dag_run_id, r.exception_reason) for r in session.query(BackfillDagRun)]
print(json.dumps({"runs": runs, "backfills": backfills, "reasons": reasons}))
"""


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, **airflow_home_env(home, ROOT / "dags")}
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"{' '.join(args[:3])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_backfill_runs_tile_the_requested_hours(tmp_path: Path) -> None:
    env = _env(tmp_path / "airflow")
    airflow = str(Path(sys.executable).with_name("airflow"))
    _run(env, airflow, "db", "migrate")
    _run(env, airflow, "dags", "reserialize")
    created = _run(
        env,
        airflow,
        "backfill",
        "create",
        "--dag-id",
        "image_ingest_s3_hourly",
        "--from-date",
        "2026-10-01T00:00:00+00:00",
        "--to-date",
        "2026-10-01T02:00:00+00:00",
    )
    state = json.loads(_run(env, sys.executable, "-c", _RUNS).stdout.strip().splitlines()[-1])

    backfill_runs = sorted(
        (datetime.fromisoformat(start), datetime.fromisoformat(end))
        for run_id, start, end in state["runs"]
        if run_id.startswith("backfill__2026-10-01")
    )
    hour = datetime(2026, 10, 1, tzinfo=UTC)
    expected = [(hour + timedelta(hours=h), hour + timedelta(hours=h + 1)) for h in range(3)]
    assert backfill_runs == expected, (
        f"backfill create said:\n{created.stdout[-3000:]}\n{created.stderr[-3000:]}\nstate: {state}"
    )
    assert [reason for *_, reason in state["reasons"]] == [None, None, None]  # each date got its run
