"""Load a DAG from the repository's dags/ for ``dag.test()`` (a fresh object per test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagelabels.devstack import embedded

DAGS = Path(__file__).resolve().parents[1] / "dags"


def load_dag(file_stem: str, dag_id: str | None = None) -> Any:
    """:func:`imagelabels.devstack.embedded.load_dag` on the repository's dags/."""
    return embedded.load_dag(DAGS, file_stem, dag_id)
