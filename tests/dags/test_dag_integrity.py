"""Integrity and policy: every DAG imports, is documented, owned, tagged, retried, and light to parse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = ("boto3", "botocore", "elasticsearch", "PIL", "airflow.providers.amazon.aws.hooks.base_aws")


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_there_are_dags_and_no_import_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) >= len(DAG_FILES) >= 1


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dags_are_named_after_their_file(dagbag, path: Path) -> None:  # type: ignore[no-untyped-def]
    """One DAG per file named after it, or (reports) one per config entry named ``<file>_<name>``."""
    defined = {dag_id for dag_id, dag in dagbag.dags.items() if Path(dag.fileloc).name == path.name}
    assert defined, f"{path.name} defines no DAG"
    assert all(d == path.stem or d.startswith(f"{path.stem}_") for d in defined), defined


def test_every_configured_report_has_its_dag(dagbag) -> None:  # type: ignore[no-untyped-def]
    from imagelabels.reports.config import load_report_configs

    names = [config.name for config in load_report_configs()]
    assert names == ["daily", "weekly"]
    for name in names:
        assert f"image_label_report_{name}" in dagbag.dags


def test_policy(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag_id, dag in dagbag.dags.items():
        assert len((dag.doc_md or "").strip()) > 80, f"{dag_id}: doc_md must explain the DAG"
        assert dag.tags, f"{dag_id}: needs tags"
        for task in dag.tasks:
            assert task.owner not in ("", "airflow"), f"{dag_id}.{task.task_id}: set an owner"
            assert task.retries >= 1, f"{dag_id}.{task.task_id}: needs retries"
        for name, param in dag.params.items():
            assert param.description, f"{dag_id}: Param {name!r} needs a description"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_stay_thin(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 100, f"{path.name}: move logic into include/"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parsing_imports_no_heavy_clients(path: Path) -> None:
    """The DAG processor parses files every few seconds: clients load only inside tasks."""
    probe = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"{path.name} imports {result.stdout.strip()} at parse time"


def test_hourly_runs_cover_adjacent_half_open_hours(dagbag) -> None:  # type: ignore[no-untyped-def]
    """Scheduled and backfill runs get one-hour intervals that tile time: [10:00, 11:00), [11:00, 12:00).

    Airflow 3 turns a bare "@hourly" into a trigger timetable whose interval is empty
    (start == end); that would make every listing select nothing.
    """
    import pendulum
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = coerce_to_core_timetable(dagbag.dags["image_ingest_s3_hourly"].timetable)
    ten, eleven, noon = (pendulum.datetime(2026, 11, 22, h, tz="UTC") for h in (10, 11, 12))
    info = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(ten, eleven),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    assert info is not None
    assert (info.data_interval.start, info.data_interval.end) == (eleven, noon)
