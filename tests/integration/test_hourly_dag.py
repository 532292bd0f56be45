"""The hourly DAG end to end with ``dag.test()`` against the moto server and noida-db."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagelabels.devstack.embedded import covering_hours
from imagelabels.documents import INDEX_ALIAS, document_id
from tests.airflow_dags import load_dag
from tests.faults import assert_nothing_lost

pytestmark = pytest.mark.both_engines

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"
PHOTOS = ["chelsea.png", "coffee.png", "grace_hopper.jpg"]
# moto's Rekognition: a canned DetectLabels answer, HTTP 500 for the other operations
MOTO_REKOGNITION = {"labeler": "rekognition", "features": ["labels"]}


@pytest.fixture
def hourly_dag(airflow_db):  # type: ignore[no-untyped-def]
    """A fresh DAG object per test: dag.test() leaves a run's conf in ``dag.params``."""
    return load_dag("image_ingest_s3_hourly")


def _run_interval(dag, hour: datetime, **conf):  # type: ignore[no-untyped-def]
    """Run the DAG for ``[hour, hour + 1h)`` (a manual run's interval ends at its logical date)."""
    run = dag.test(logical_date=hour + timedelta(hours=1), run_conf={"bucket": "photos", **conf})
    assert run.data_interval_start == hour
    assert run.data_interval_end == hour + timedelta(hours=1)
    return run


def _rounded(value: object) -> object:
    """noida-db re-serializes floats in _source (last digit may differ); compare to 9 places."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _snapshot(es) -> dict[str, tuple[int, dict]]:  # type: ignore[no-untyped-def]
    hits = es.search(index=INDEX_ALIAS, size=100, seq_no_primary_term=True)["hits"]["hits"]
    return {hit["_id"]: (hit["_seq_no"], hit["_source"]) for hit in hits}


def test_hourly_run_indexes_exactly_its_interval_and_a_rerun_changes_nothing(hourly_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    s3.create_bucket(Bucket="photos")
    for name in PHOTOS:
        s3.put_object(Bucket="photos", Key=f"uploads/{name}", Body=(SAMPLES / name).read_bytes())
    s3.put_object(Bucket="photos", Key="elsewhere/rocket.jpg", Body=(SAMPLES / "rocket.jpg").read_bytes())
    heads = {name: s3.head_object(Bucket="photos", Key=f"uploads/{name}") for name in PHOTOS}
    hours = covering_hours([head["LastModified"] for head in heads.values()])

    runs = [_run_interval(hourly_dag, hour, prefix="uploads/", **MOTO_REKOGNITION) for hour in hours]
    assert [str(run.state) for run in runs] == ["success"] * len(hours)

    mapped = [ti for run in runs for ti in run.get_task_instances() if ti.task_id == "label_and_index"]
    assert sorted(ti.rendered_map_index for ti in mapped) == sorted(
        f"batch-00001.jsonl ({sum(1 for h in heads.values() if hour <= h['LastModified'] < hour + timedelta(hours=1))} keys)"
        for hour in hours
    )

    expected_ids = {document_id("photos", f"uploads/{n}", None, h["ETag"]): n for n, h in heads.items()}
    documents = _snapshot(es)
    assert set(documents) == set(expected_ids)
    for doc_id, (_, source) in documents.items():
        name = expected_ids[doc_id]
        run_id = next(
            r.run_id
            for r, hour in zip(runs, hours, strict=True)
            if hour <= heads[name]["LastModified"] < hour + timedelta(hours=1)
        )
        ingested_at = datetime.fromisoformat(source.pop("ingested_at"))
        assert ingested_at.tzinfo is not None
        # exp(0.8 x confidence) is ~1e34: compared to a relative precision, not 9 decimals
        feature = pytest.approx(math.exp(0.8 * 99.9364013671875))  # and its alias's
        assert source.pop("label_confidence") == {"mobile phone": feature, "cell phone": feature}
        # Rekognition labeled it: the pHash (preflight's, for every labeler) but no embedding,
        # and three different photos are no near duplicates of each other
        visual = source.pop("visual")
        assert sorted(visual) == ["bands", "phash", "phash_mirror"]
        assert [len(visual["phash"]), len(visual["phash_mirror"])] == [16, 16]
        assert {band.split(":")[0] for band in visual["bands"]} == {f"h{i}" for i in range(8)}
        assert _rounded(source) == _rounded(
            {
                "title": name,
                "s3_location": f"s3://photos/uploads/{name}",
                "s3bucket": "photos",
                "prefixes": ["uploads/"],
                "s3key": f"uploads/{name}",
                "timestamp": heads[name]["LastModified"].isoformat(),
                "imported-by": "imagelabels/airflow:image_ingest_s3_hourly",
                "Labels": [
                    {
                        "Name": "Mobile Phone",
                        "Confidence": 99.9364013671875,
                        "Parents": [{"Name": "Phone"}],
                        "Aliases": [{"Name": "Cell Phone"}],
                        "Categories": [{"Name": "Technology and Computing"}],
                        "Instances": [
                            {
                                "BoundingBox": {
                                    "Width": 0.26779675483703613,
                                    "Height": 0.8562285900115967,
                                    "Left": 0.3604024350643158,
                                    "Top": 0.09245597571134567,
                                },
                                "Confidence": 99.9364013671875,
                            }
                        ],
                    }
                ],
                "label_names": ["Mobile Phone", "Phone"],
                "label_categories": ["Technology and Computing"],
                "labeler": "rekognition",
                "LabelModelVersion": "3.0",
                "labeling": {"min_confidence": 70, "max_labels": 50},
                "object": {
                    "size": heads[name]["ContentLength"],
                    "content_type": heads[name]["ContentType"],
                    "etag": heads[name]["ETag"].strip('"'),
                    "version_id": None,
                    "last_modified": heads[name]["LastModified"].isoformat(),
                    "width": {"chelsea.png": 451, "coffee.png": 600, "grace_hopper.jpg": 512}[name],
                    "height": {"chelsea.png": 300, "coffee.png": 400, "grace_hopper.jpg": 600}[name],
                },
                "airflow": {"dag_id": "image_ingest_s3_hourly", "run_id": run_id},
                "features": ["labels"],
                "preflight": {
                    "source_format": "JPEG" if name.endswith(".jpg") else "PNG",
                    "transformations": [],
                },
            }
        )

    before = _snapshot(es)
    reruns = [_run_interval(hourly_dag, hour, prefix="uploads/", **MOTO_REKOGNITION) for hour in hours]
    assert [str(run.state) for run in reruns] == ["success"] * len(hours)
    totals = [run.get_task_instance("summarize").xcom_pull(task_ids="summarize") for run in reruns]
    assert sum(t["already_indexed"] for t in totals) == len(PHOTOS)
    assert sum(t["labeled"] for t in totals) == 0
    assert _snapshot(es) == before  # same ids, same sources, same sequence numbers


def test_an_overwritten_key_keeps_one_document_of_its_new_version_and_a_rerun_changes_nothing(  # type: ignore[no-untyped-def]
    hourly_dag, s3, es
) -> None:
    """The run that indexes the new version deletes the old version's document in the same bulk
    request: one document per current object within the hour, not after the daily reconciliation."""
    s3.create_bucket(Bucket="photos")
    key = "uploads/cat.png"
    s3.put_object(Bucket="photos", Key=key, Body=(SAMPLES / "chelsea.png").read_bytes())
    old = s3.head_object(Bucket="photos", Key=key)
    for hour in covering_hours([old["LastModified"]]):
        assert str(_run_interval(hourly_dag, hour, prefix="uploads/", **MOTO_REKOGNITION).state) == "success"
    assert set(_snapshot(es)) == {document_id("photos", key, None, old["ETag"])}

    s3.put_object(Bucket="photos", Key=key, Body=(SAMPLES / "coffee.png").read_bytes())  # overwritten
    new = s3.head_object(Bucket="photos", Key=key)
    assert new["ETag"] != old["ETag"]
    hours = covering_hours([new["LastModified"]])
    runs = [_run_interval(hourly_dag, hour, prefix="uploads/", **MOTO_REKOGNITION) for hour in hours]
    assert [str(run.state) for run in runs] == ["success"] * len(hours)
    totals = [run.get_task_instance("summarize").xcom_pull(task_ids="summarize") for run in runs]
    documents = _snapshot(es)
    assert set(documents) == {document_id("photos", key, None, new["ETag"])}
    assert sum(t["indexed"] for t in totals) == 1
    assert sum(t.get("replaced", 0) for t in totals) == 1  # the old version's document, deleted
    (_, source), *_ = documents.values()
    assert (source["object"]["etag"], source["object"]["width"]) == (new["ETag"].strip('"'), 600)
    assert_nothing_lost(es, s3, "photos", "uploads/")

    reruns = [_run_interval(hourly_dag, hour, prefix="uploads/", **MOTO_REKOGNITION) for hour in hours]
    assert [str(run.state) for run in reruns] == ["success"] * len(hours)
    totals = [run.get_task_instance("summarize").xcom_pull(task_ids="summarize") for run in reruns]
    assert (sum(t["labeled"] for t in totals), sum(t.get("replaced", 0) for t in totals)) == (0, 0)
    assert _snapshot(es) == documents  # same id, same source, same sequence number


def test_an_interval_without_uploads_is_a_skipped_map_not_a_failure(hourly_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="uploads/chelsea.png", Body=(SAMPLES / "chelsea.png").read_bytes())
    uploaded = s3.head_object(Bucket="photos", Key="uploads/chelsea.png")["LastModified"]
    earlier = covering_hours([uploaded])[0] - timedelta(hours=3)
    run = _run_interval(hourly_dag, earlier)
    assert str(run.state) == "success"
    assert str(run.get_task_instance("label_and_index").state) == "skipped"
    assert run.get_task_instance("summarize").xcom_pull(task_ids="summarize")["listed"] == 0
    assert es.count(index=INDEX_ALIAS)["count"] == 0


def test_prefix_param_placeholders_take_the_interval(hourly_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    """``{ds}`` in ``prefix`` is the run's data interval start date: one date partition is listed."""
    s3.create_bucket(Bucket="photos")
    uploaded_at = datetime.now().astimezone()
    day = uploaded_at.astimezone(tz=None).strftime("%Y-%m-%d")
    for key in (f"uploads/{day}/coffee.png", "uploads/other/coffee.png"):
        s3.put_object(Bucket="photos", Key=key, Body=(SAMPLES / "coffee.png").read_bytes())
    stamp = s3.head_object(Bucket="photos", Key=f"uploads/{day}/coffee.png")["LastModified"]
    hour = covering_hours([stamp])[0]
    if hour.strftime("%Y-%m-%d") != day:
        pytest.skip("upload straddled midnight UTC")
    run = _run_interval(hourly_dag, hour, prefix="uploads/{ds}/")
    assert str(run.state) == "success"
    hits = es.search(index=INDEX_ALIAS)["hits"]["hits"]
    assert [hit["_source"]["s3key"] for hit in hits] == [f"uploads/{day}/coffee.png"]


def test_rekognition_features_through_the_aws_connection(hourly_dag, s3, es, rekognition_at_standin) -> None:  # type: ignore[no-untyped-def]
    """The DAG reaches Rekognition through the `aws_default` connection; its
    `service_config.rekognition.endpoint_url` sends Rekognition to the stand-in, S3 to moto."""
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="uploads/chelsea.png", Body=(SAMPLES / "chelsea.png").read_bytes())
    hour = covering_hours([s3.head_object(Bucket="photos", Key="uploads/chelsea.png")["LastModified"]])[0]
    run = _run_interval(
        hourly_dag, hour, labeler="rekognition", features=["labels", "moderation", "text", "faces"]
    )
    assert str(run.state) == "success"
    source = es.search(index=INDEX_ALIAS)["hits"]["hits"][0]["_source"]
    assert source["features"] == ["labels", "moderation", "text", "faces"]
    assert source["labeler"] == "rekognition"
    assert source["text"]
    assert source["face_count"] >= 1
    served = {op: s["served"] for op, s in rekognition_at_standin.stats()["operations"].items()}
    assert served == {"DetectLabels": 1, "DetectModerationLabels": 1, "DetectText": 1, "DetectFaces": 1}


def test_local_labeler_is_the_default_and_gives_real_labels(hourly_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="uploads/chelsea.png", Body=(SAMPLES / "chelsea.png").read_bytes())
    hour = covering_hours([s3.head_object(Bucket="photos", Key="uploads/chelsea.png")["LastModified"]])[0]
    run = _run_interval(hourly_dag, hour)
    assert str(run.state) == "success"
    source = es.search(index=INDEX_ALIAS)["hits"]["hits"][0]["_source"]
    assert source["labeler"] == "local"
    assert source["features"] == ["labels", "moderation"]
    assert {"Cat", "Animal"} <= set(source["label_names"])
    cat = next(label for label in source["Labels"] if label["Name"] == "Cat")
    assert [parent["Name"] for parent in cat["Parents"]][:2] == ["Mammal", "Animal"]
    assert (source["moderated"], source["ModerationLabels"]) == (False, [])
    assert source["LabelModelVersion"].startswith("efficientnet-lite0")


def test_invalid_params_are_refused_before_the_run_starts(hourly_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    from airflow.sdk.exceptions import ParamValidationError

    for bad in (
        {"label_filters": {"LabelInclusion": ["Cat"]}},
        {"label_filters": {"LabelInclusionFilters": "Cat"}},
        {"features": ["labels", "colour"]},
        {"labeler": "clip"},
        {"min_confidence": 101},
    ):
        with pytest.raises(ParamValidationError):
            hourly_dag.test(
                logical_date=datetime(2026, 11, 1, 1, tzinfo=UTC), run_conf={"bucket": "photos", **bad}
            )
    assert not es.indices.exists(index=INDEX_ALIAS)  # nothing ran


def test_more_batches_than_airflow_maps_over_are_grouped_and_all_indexed(  # type: ignore[no-untyped-def]
    hourly_dag, s3, es, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``max_map_length`` 3, seven one-image batches become three mapped tasks (3+3+1)."""
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "3")
    s3.create_bucket(Bucket="photos")
    body = (SAMPLES / "coffee.png").read_bytes()
    keys = [f"uploads/many/{i}.png" for i in range(7)]
    for key in keys:
        s3.put_object(Bucket="photos", Key=key, Body=body)
    stamps = [s3.head_object(Bucket="photos", Key=key)["LastModified"] for key in keys]
    hours = covering_hours(stamps)
    runs = [_run_interval(hourly_dag, hour, batch_size=1, **MOTO_REKOGNITION) for hour in hours]
    assert [str(run.state) for run in runs] == ["success"] * len(hours)
    mapped = [ti for run in runs for ti in run.get_task_instances() if ti.task_id == "label_and_index"]
    assert all(ti.map_index <= 2 for ti in mapped)  # never more than 3 mapped tasks per run
    totals = [run.get_task_instance("summarize").xcom_pull(task_ids="summarize") for run in runs]
    assert sum(t["indexed"] for t in totals) == 7
    hits = es.search(index=INDEX_ALIAS, size=20)["hits"]["hits"]
    assert sorted(hit["_source"]["s3key"] for hit in hits) == sorted(keys)


def test_a_failing_part_of_a_group_does_not_keep_the_later_parts_from_being_labeled(s3, es) -> None:  # type: ignore[no-untyped-def]
    from imagelabels.tasks.ingestion import label_event_or_retry_batch, plan_listing

    s3.create_bucket(Bucket="photos")
    body = (SAMPLES / "coffee.png").read_bytes()
    for key in ("group/a.png", "group/b.png"):
        s3.put_object(Bucket="photos", Key=key, Body=body)
    stamps = [s3.head_object(Bucket="photos", Key=k)["LastModified"] for k in ("group/a.png", "group/b.png")]
    start, end = min(stamps) - timedelta(minutes=1), max(stamps) + timedelta(minutes=1)
    params = {"bucket": "photos", "batch_size": 1, **MOTO_REKOGNITION}
    parts = plan_listing(params, "group/", "d", "r", start, end)
    assert len(parts) == 2
    broken = {**parts[0], "uri": parts[0]["uri"] + ".missing"}  # its manifest cannot be read
    group = {"kind": "group", "uri": broken["uri"], "count": 2, "parts": [broken, parts[1]]}

    with pytest.raises(Exception, match="NoSuchKey"):
        label_event_or_retry_batch(group, params, "d", "r")
    hits = es.search(index=INDEX_ALIAS)["hits"]["hits"]
    assert [hit["_source"]["s3key"] for hit in hits] == ["group/b.png"]  # the later part was labeled
