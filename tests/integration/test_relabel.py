"""The image_relabel DAG end to end with ``dag.test()``: documents indexed by the hourly DAG with
other settings (local model, min_confidence 90, labels only) are found stale, re-labeled at 50 and
updated in place; prefix and date scoping, dry run, a second run finding nothing, an old model
version, objects deleted or overwritten since, and the cost guard before any paid call."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from imagelabels.devstack.embedded import covering_hours
from imagelabels.documents import INDEX_ALIAS, document_id
from tests.airflow_dags import load_dag as _load

pytestmark = pytest.mark.both_engines

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"
PHOTOS = {
    "uploads/chelsea.png": "chelsea.png",
    "uploads/grace_hopper.jpg": "grace_hopper.jpg",
    "uploads/rocket.jpg": "rocket.jpg",
}
OTHER = "other/coffee.png"
OLD = {"labeler": "local", "min_confidence": 90, "features": ["labels"]}
NEW = {"labeler": "local", "min_confidence": 50, "features": ["labels"]}


def _snapshot(es) -> dict[str, tuple[int, dict]]:  # type: ignore[no-untyped-def]
    es.indices.refresh(index=INDEX_ALIAS)
    hits = es.search(index=INDEX_ALIAS, size=100, seq_no_primary_term=True)["hits"]["hits"]
    return {hit["_id"]: (hit["_seq_no"], hit["_source"]) for hit in hits}


def _relabel(**conf):  # type: ignore[no-untyped-def]
    run = _load("image_relabel").test(run_conf={"bucket": "photos", **conf})
    assert str(run.state) == "success", {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    return run.get_task_instance("report").xcom_pull(task_ids="report")


@pytest.fixture
def indexed(airflow_db, s3, es):  # type: ignore[no-untyped-def]
    """Four images indexed by the hourly DAG with the old settings; their heads by key."""
    s3.create_bucket(Bucket="photos")
    for key, name in {**PHOTOS, OTHER: "coffee.png"}.items():
        s3.put_object(Bucket="photos", Key=key, Body=(SAMPLES / name).read_bytes())
    heads = {key: s3.head_object(Bucket="photos", Key=key) for key in (*PHOTOS, OTHER)}
    for hour in covering_hours([head["LastModified"] for head in heads.values()]):
        run = _load("image_ingest_s3_hourly").test(
            logical_date=hour + timedelta(hours=1), run_conf={"bucket": "photos", **OLD}
        )
        assert str(run.state) == "success"
    assert len(_snapshot(es)) == 4
    return heads


def test_stale_documents_are_relabeled_in_place_and_a_second_run_finds_none(indexed, s3, es) -> None:  # type: ignore[no-untyped-def]
    before = _snapshot(es)
    ids = {document_id("photos", key, None, head["ETag"]): key for key, head in indexed.items()}
    assert set(before) == set(ids)
    newest = max(head["LastModified"] for head in indexed.values())

    # dry run: counts only, nothing written
    dry = _relabel(prefix="uploads/", dry_run=True, **NEW)
    assert (dry["in_scope"], dry["stale_found"], dry["skipped_current"], dry["batches"]) == (3, 3, 0, 0)
    assert dry["stale_by_reason"] == {"labeler": 0, "settings": 3, "model_version": 0}
    assert (dry["relabeled"], dry["estimate"]["estimate_usd"]) == (0, "0")
    assert _snapshot(es) == before

    # the date range is on `timestamp` (S3 LastModified), half-open
    later = (newest + timedelta(seconds=1)).isoformat()
    assert _relabel(prefix="uploads/", since=later, dry_run=True, **NEW)["in_scope"] == 0
    assert _relabel(prefix="uploads/", until=later, dry_run=True, **NEW)["in_scope"] == 3
    earliest = min(head["LastModified"] for head in indexed.values())
    assert _relabel(prefix="uploads/", until=earliest.isoformat(), dry_run=True, **NEW)["in_scope"] == 0

    totals = _relabel(prefix="uploads/", batch_size=2, **NEW)
    assert (totals["stale_found"], totals["batches"], totals["relabeled"], totals["skipped_current"]) == (
        3,
        2,
        3,
        0,
    )
    assert (totals["failed"], totals["object_gone"], totals["object_changed"]) == ({}, 0, 0)
    after = _snapshot(es)
    assert set(after) == set(before)  # same ids, no duplicates
    more = 0
    for doc_id, key in ids.items():
        (old_seq, old), (new_seq, new) = before[doc_id], after[doc_id]
        if key == OTHER:  # outside the prefix: untouched
            assert (new_seq, new) == (old_seq, old)
            continue
        assert new_seq > old_seq
        assert new["labeling"]["min_confidence"] == 50
        assert new["airflow"]["dag_id"] == "image_relabel"
        assert (new["s3key"], new["timestamp"], new["LabelModelVersion"]) == (
            key,
            old["timestamp"],
            old["LabelModelVersion"],
        )
        assert all(label["Confidence"] >= 50 for label in new["Labels"])
        assert set(old["label_names"]) <= set(new["label_names"])
        more += len(new["Labels"]) > len(old["Labels"])
    assert more >= 1  # a lower threshold keeps labels 90 dropped (grace_hopper.jpg: Clothing 80 %)

    again = _relabel(prefix="uploads/", **NEW)
    assert (again["stale_found"], again["skipped_current"], again["relabeled"], again["batches"]) == (
        0,
        3,
        0,
        0,
    )
    assert _snapshot(es) == after

    # an old model version is stale too; a deleted or overwritten object is reported, not labeled
    old_version = next(d for d, k in ids.items() if k == "uploads/chelsea.png")
    es.update(
        index=INDEX_ALIAS,
        id=old_version,
        doc={"LabelModelVersion": "efficientnet-lite0-imagenet1k/000000000000"},
        refresh="wait_for",
    )
    gone = next(d for d, k in ids.items() if k == "uploads/grace_hopper.jpg")
    changed = next(d for d, k in ids.items() if k == "uploads/rocket.jpg")
    es.update(index=INDEX_ALIAS, id=gone, doc={"labeling": {"min_confidence": 90}}, refresh="wait_for")
    es.update(index=INDEX_ALIAS, id=changed, doc={"labeling": {"min_confidence": 90}}, refresh="wait_for")
    s3.delete_object(Bucket="photos", Key="uploads/grace_hopper.jpg")
    s3.put_object(Bucket="photos", Key="uploads/rocket.jpg", Body=(SAMPLES / "coffee.png").read_bytes())
    pre = _snapshot(es)
    totals = _relabel(prefix="uploads/", **NEW)
    assert (totals["stale_found"], totals["relabeled"], totals["object_gone"], totals["object_changed"]) == (
        3,
        1,
        1,
        1,
    )
    assert totals["stale_by_reason"]["model_version"] == 1
    assert totals["samples"] == {
        "object_gone": ["uploads/grace_hopper.jpg"],
        "object_changed": ["uploads/rocket.jpg"],
    }
    final = _snapshot(es)
    assert len(final) == 4  # the overwritten object's new version is the hourly DAG's job
    assert final[old_version][1]["LabelModelVersion"] == before[old_version][1]["LabelModelVersion"]
    assert (final[gone], final[changed]) == (pre[gone], pre[changed])


def test_relabel_to_rekognition_is_priced_and_stopped_before_any_call(
    indexed, es, rekognition_at_standin
) -> None:  # type: ignore[no-untyped-def]
    server = rekognition_at_standin
    before = _snapshot(es)
    conf = {"bucket": "photos", "labeler": "rekognition", "features": ["labels", "moderation"]}

    run = _load("image_relabel").test(run_conf={**conf, "max_cost": 0.0079})  # 4 x $0.002 = $0.008
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert (states["plan"], states["cost_guard"]) == ("success", "failed")
    assert states["relabel"] != "success"
    counts = run.get_task_instance("plan").xcom_pull(task_ids="plan", key="counts")
    assert (counts["stale_found"], counts["stale_by_reason"]["labeler"]) == (4, 4)
    assert counts["estimate"]["estimate_usd"] == "0.008"
    assert server.stats()["totals"]["requests"] == 0
    assert _snapshot(es) == before

    totals = _relabel(**conf, max_cost=0.008)
    assert (totals["relabeled"], totals["failed"]) == (4, {})
    served = {op: s["served"] for op, s in server.stats()["operations"].items() if s["requests"]}
    assert served == {"DetectLabels": 4, "DetectModerationLabels": 4}
    after = _snapshot(es)
    assert set(after) == set(before)
    assert {source["labeler"] for _, source in after.values()} == {"rekognition"}
    assert {tuple(source["features"]) for _, source in after.values()} == {("labels", "moderation")}
    # the current Rekognition version is now the one in the index: nothing is stale any more
    assert _relabel(**conf)["stale_found"] == 0


def test_date_bounds_and_model_version_order() -> None:
    from datetime import UTC, datetime

    from imagelabels.pipeline.relabel import _version_key, parse_bound

    assert parse_bound("") is None
    assert parse_bound("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_bound("2026-03-01T10:00:00Z") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="since: 'March' is not an ISO date"):
        parse_bound("March", "since")
    assert max(["2.0", "10.0", "3.0"], key=_version_key) == "10.0"


def test_more_stale_batches_than_airflow_maps_over_are_grouped(indexed, es, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With ``max_map_length`` 2, four one-document batches are relabeled by two mapped tasks."""
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "2")
    run = _load("image_relabel").test(run_conf={"bucket": "photos", "batch_size": 1, **NEW})
    assert str(run.state) == "success"
    mapped = [ti for ti in run.get_task_instances() if ti.task_id == "relabel"]
    assert sorted(ti.map_index for ti in mapped) == [0, 1]
    totals = run.get_task_instance("report").xcom_pull(task_ids="report")
    assert (totals["stale_found"], totals["relabeled"], totals["failed"]) == (4, 4, {})
    assert all(source["labeling"]["min_confidence"] == 50 for _, source in _snapshot(es).values())
