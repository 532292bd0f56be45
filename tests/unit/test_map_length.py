"""More batches than Airflow maps over are grouped, never dropped or reordered."""

from __future__ import annotations

import pytest

from imagelabels.tasks.ingestion import bound_map_length


def _batches(n: int) -> list[dict]:
    return [{"uri": f"s3://b/m/batch-{i:05d}.jsonl", "count": i + 1, "kind": "objects"} for i in range(n)]


@pytest.mark.parametrize(
    ("n", "limit", "groups"), [(10, 3, 3), (1024, 1024, 1024), (1025, 1024, 513), (7, 7, 7)]
)
def test_groups_stay_within_the_limit_and_keep_every_batch_in_order(n: int, limit: int, groups: int) -> None:
    batches = _batches(n)
    bounded = bound_map_length(batches, limit)
    assert len(bounded) == groups <= limit
    if n <= limit:
        assert bounded == batches  # untouched: one mapped task per batch
        return
    flattened = [part for group in bounded for part in group["parts"]]
    assert flattened == batches
    for group in bounded:
        assert group["kind"] == "group"
        assert group["uri"] == group["parts"][0]["uri"]
        assert group["count"] == sum(part["count"] for part in group["parts"])


def test_the_default_limit_is_airflows_max_map_length(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "4")
    assert len(bound_map_length(_batches(9))) == 3  # groups of 3
