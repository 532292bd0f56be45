"""The distributed run's PostgreSQL pieces: a per-run role whose URL names the psycopg2 driver and
carries its password, and names that cannot smuggle SQL into the admin statements."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from distributed.services import RunDatabase, _identifier  # noqa: E402


def test_a_run_database_url_logs_in_as_its_own_role() -> None:
    database = RunDatabase("imagelabels_dist_20261205_125701_3572", "p-w_d")
    assert database.url == (
        "postgresql+psycopg2://imagelabels_dist_20261205_125701_3572:p-w_d"
        "@127.0.0.1:5432/imagelabels_dist_20261205_125701_3572"
    )


@pytest.mark.parametrize("name", ['x"; DROP DATABASE postgres; --', "Upper", "", "a" * 64, "a-b"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a safe PostgreSQL name"):
        _identifier(name)
