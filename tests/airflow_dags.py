"""Load a DAG from its file for ``dag.test()``: a fresh object per test, because ``dag.test()``
leaves a run's conf in ``dag.params``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

DAGS = Path(__file__).resolve().parents[1] / "dags"


def load_dag(file_stem: str, dag_id: str | None = None) -> Any:
    """The DAG ``dag_id`` (default: ``file_stem``) defined by ``dags/<file_stem>.py``.

    A module attribute that is a ``@dag`` function is called; one that is a DAG object (the
    report DAGs, one per config entry) is returned as it is."""
    spec = importlib.util.spec_from_file_location(file_stem, DAGS / f"{file_stem}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = getattr(module, dag_id or file_stem)
    return found() if callable(found) else found
