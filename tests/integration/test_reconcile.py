"""The reconciliation DAG end to end with ``dag.test()`` against the moto server and noida-db.

One bucket drifts from its index in every way reconciliation knows: keys never indexed, documents
of deleted objects, documents of overwritten versions, obsolete failure records, a bad image, and
keys whose order differs between UTF-8 and UTF-16. Neighbours outside the prefix or in another
bucket must not be touched.
"""

from __future__ import annotations

import importlib.util
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagelabels.documents import (
    FAILURES_INDEX,
    INDEX_ALIAS,
    LabelResult,
    ObjectInfo,
    build_document,
    document_id,
)
from imagelabels.engine.indexing import FailureRecord, bulk_write, ensure_indices, record_failures
from imagelabels.pipeline.batch import RunContext
from imagelabels.pipeline.reconcile import (
    MassDeletionRefused,
    iter_documents,
    list_all_objects,
    plan_reconciliation,
)

pytestmark = pytest.mark.both_engines

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "photos"
MOTO_REKOGNITION = {"labeler": "rekognition", "features": ["labels"]}
LONG_AGO = datetime.now(UTC) - timedelta(days=3)

IMAGES = [  # in S3
    "uploads/Z.jpg",  # indexed, plus a stale document of an earlier version
    "uploads/a.jpg",  # indexed, with an obsolete (retryable) failure record
    "uploads/b",  # not indexed
    "uploads/b.jpg",  # not indexed
    "uploads/b/c.jpg",  # indexed
    "uploads/z.jpg",  # only a stale document
    "uploads/ä.jpg",  # not indexed
    "uploads/\uff5e.jpg",  # indexed; sorts before the emoji in UTF-8, after it in UTF-16
    "uploads/\U0001f600.jpg",  # not indexed; a retryable failure record
]
BROKEN = "uploads/broken.jpg"  # not an image: fails preflight for good
INDEXED = ["uploads/Z.jpg", "uploads/a.jpg", "uploads/b/c.jpg", "uploads/\uff5e.jpg"]
ORPHANS = ["uploads/b/c", "uploads/gone.jpg", "uploads/ü/gone.jpg"]
FIRST_RUN = {
    "scanned_s3": 10,
    "scanned_index": 9,  # 4 current, 2 stale, 3 orphans
    "scanned_failures": 3,
    "ok": 4,
    "missing": 6,
    "known_bad": 0,
    "recent": 0,
    "orphans": 3,
    "stale": 2,
    "obsolete_failures": 2,
    "spared": 0,
}


@pytest.fixture(scope="module")
def reconcile_dag(airflow_db):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "image_reconcile_daily", ROOT / "dags" / "image_reconcile_daily.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.image_reconcile_daily()


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), (seed * 23 % 256, 80, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


def _document(bucket: str, key: str, etag: str, last_modified: datetime) -> tuple[str, dict]:
    obj = ObjectInfo(bucket=bucket, key=key, size=100, etag=etag, last_modified=last_modified)
    result = LabelResult(
        labels=[{"Name": "Cat", "Confidence": 91.0}],
        labeler="local",
        label_model_version="test",
        min_confidence=70,
        max_labels=50,
    )
    document = build_document(
        obj, result, dag_id="image_ingest_s3_hourly", run_id="r", ingested_at=last_modified
    )
    return document_id(bucket, key, None, etag), document


def _index(es, bucket: str, key: str, etag: str, last_modified: datetime = LONG_AGO) -> None:  # type: ignore[no-untyped-def]
    doc_id, document = _document(bucket, key, etag, last_modified)
    es.index(index=INDEX_ALIAS, id=doc_id, document=document, refresh="wait_for")


def _drifted(s3, es) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Set up the drifted bucket and index; return the current ETag of every object."""
    s3.create_bucket(Bucket=BUCKET)
    for seed, key in enumerate(IMAGES):
        s3.put_object(Bucket=BUCKET, Key=key, Body=_jpeg(seed))
    s3.put_object(Bucket=BUCKET, Key=BROKEN, Body=b"not an image at all")
    s3.put_object(Bucket=BUCKET, Key="uploads/folder/", Body=b"")  # console folder marker
    s3.put_object(Bucket=BUCKET, Key="elsewhere/x.jpg", Body=_jpeg(99))  # outside the prefix
    heads = {key: s3.head_object(Bucket=BUCKET, Key=key) for key in [*IMAGES, BROKEN]}
    etags = {key: head["ETag"].strip('"') for key, head in heads.items()}
    ensure_indices(es)
    for key in INDEXED:
        _index(es, BUCKET, key, etags[key], heads[key]["LastModified"])
    _index(es, BUCKET, "uploads/Z.jpg", "0" * 32)  # an earlier version of a key indexed since
    _index(es, BUCKET, "uploads/z.jpg", "1" * 32)  # an earlier version, the current one never indexed
    for key in ORPHANS:
        _index(es, BUCKET, key, "2" * 32)
    _index(es, BUCKET, "elsewhere/gone.jpg", "3" * 32)  # orphan outside the prefix: not ours to judge
    _index(es, "photos-archive", "uploads/gone.jpg", "4" * 32)  # another bucket, same key
    failures = [
        FailureRecord(BUCKET, "uploads/a.jpg", "label", "rekognition_throttled", "throttled", True),
        FailureRecord(BUCKET, "uploads/\U0001f600.jpg", "label", "rekognition_throttled", "throttled", True),
        FailureRecord(BUCKET, "uploads/vanished.jpg", "read", "object_gone", "deleted", False),
    ]
    record_failures(es, failures, dag_id="d", run_id="r", failed_at=LONG_AGO, refresh="wait_for")
    return etags


def _snapshot(es) -> dict[str, tuple[int, str]]:  # type: ignore[no-untyped-def]
    hits = es.search(index=INDEX_ALIAS, size=100, seq_no_primary_term=True)["hits"]["hits"]
    return {hit["_id"]: (hit["_seq_no"], hit["_source"]["s3_location"]) for hit in hits}


def _failures(es) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    hits = es.search(index=FAILURES_INDEX, size=100)["hits"]["hits"]
    return {hit["_source"]["s3key"]: hit["_source"]["retryable"] for hit in hits}


def _run(dag, when: datetime, **conf):  # type: ignore[no-untyped-def]
    """Every run names the Params it depends on: in-process, ``dag.test()`` leaves a run's conf
    in the tasks' Params (seen with Airflow 3.1), so a later run would not get the defaults."""
    run = _test(dag, when, **conf)
    assert str(run.state) == "success"
    return run.get_task_instance("report").xcom_pull(task_ids="report")


def _test(dag, when: datetime, **conf):  # type: ignore[no-untyped-def]
    conf = {
        "bucket": BUCKET,
        "prefix": "uploads/",
        "dry_run": False,
        "batch_size": 100,
        "confirm_mass_delete": False,
        **conf,
    }
    return dag.test(logical_date=when, run_conf=conf)


def _found(totals: dict) -> dict:
    return {name: totals[name] for name in FIRST_RUN}


def test_reconciliation_indexes_missing_deletes_orphans_and_a_rerun_changes_nothing(
    reconcile_dag, s3, es
) -> None:  # type: ignore[no-untyped-def]
    etags = _drifted(s3, es)
    when = datetime.now(UTC).replace(microsecond=0)
    first = _run(reconcile_dag, when, min_age_hours=0, batch_size=4, **MOTO_REKOGNITION)
    assert _found(first) == FIRST_RUN
    assert (first["deleted"], first["batches"], first["dry_run"]) == (3 + 2 + 2, 2, False)
    labeling = first["labeling"]
    assert (labeling["listed"], labeling["labeled"], labeling["failed"]) == (6, 5, {"not_an_image": 1})

    documents = _snapshot(es)
    expected = {document_id(BUCKET, key, None, etags[key]): f"s3://{BUCKET}/{key}" for key in IMAGES}
    expected[document_id("photos", "elsewhere/gone.jpg", None, "3" * 32)] = "s3://photos/elsewhere/gone.jpg"
    expected[document_id("photos-archive", "uploads/gone.jpg", None, "4" * 32)] = (
        "s3://photos-archive/uploads/gone.jpg"
    )
    assert {doc_id: location for doc_id, (_, location) in documents.items()} == expected
    assert _failures(es) == {BROKEN: False}  # the bad image, recorded; obsolete records cleared

    second = _run(reconcile_dag, when + timedelta(minutes=1), min_age_hours=0, **MOTO_REKOGNITION)
    assert _found(second) == {
        **dict.fromkeys(FIRST_RUN, 0),
        "scanned_s3": 10,
        "scanned_index": 9,
        "scanned_failures": 1,
        "ok": 9,
        "known_bad": 1,  # not labeled again every day
    }
    assert (second["deleted"], second["batches"], second["labeling"]["batches"]) == (0, 0, 0)
    assert _snapshot(es) == documents  # same ids, same sequence numbers
    assert _failures(es) == {BROKEN: False}


def test_dry_run_counts_and_changes_nothing(reconcile_dag, s3, es) -> None:  # type: ignore[no-untyped-def]
    _drifted(s3, es)
    documents, failures = _snapshot(es), _failures(es)
    when = datetime.now(UTC).replace(microsecond=0)

    dry = _run(reconcile_dag, when, dry_run=True, min_age_hours=0)
    assert _found(dry) == FIRST_RUN
    assert (dry["deleted"], dry["batches"], dry["dry_run"]) == (0, 0, True)

    # by default objects modified in the last 2 hours are left to the hourly DAG
    assert reconcile_dag.params["min_age_hours"] == 2
    default = _run(reconcile_dag, when + timedelta(minutes=1), dry_run=True, min_age_hours=2)
    assert (default["missing"], default["recent"], default["stale"]) == (0, 6, 2)

    assert _snapshot(es) == documents
    assert _failures(es) == failures
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="_imagelabels/")["KeyCount"] == 0


def test_both_servers_order_keys_as_utf8_bytes_and_small_pages_change_nothing(s3, es) -> None:  # type: ignore[no-untyped-def]
    _drifted(s3, es)
    listed = [o.key for o in list_all_objects(s3, BUCKET, "uploads/")]
    indexed = [d.key for d in iter_documents(es, BUCKET, "uploads/", page_size=2)]
    for keys in (listed, indexed):
        assert keys == sorted(keys, key=lambda k: k.encode("utf-8"))
    assert listed.index("uploads/\uff5e.jpg") < listed.index("uploads/\U0001f600.jpg")  # not UTF-16 order

    def dry(page_size: int) -> dict:
        return plan_reconciliation(
            s3_client=s3,
            es=es,
            bucket=BUCKET,
            prefix="uploads/",
            staging_uri=f"s3://{BUCKET}/_imagelabels/",
            run=RunContext("image_reconcile_daily", f"pages-{page_size}"),
            batch_size=100,
            dry_run=True,
            min_age_hours=0,
            index_page_size=page_size,
        ).counts.as_xcom()

    small, large = dry(2), dry(2000)
    assert {k: v for k, v in small.items() if k != "seconds"} == {
        k: v for k, v in large.items() if k != "seconds"
    }
    assert _found(large) == FIRST_RUN


# --- the mass-deletion guard ---------------------------------------------------------------------


def _index_many(es, keys: list[str]) -> None:  # type: ignore[no-untyped-def]
    """One document per key (an old version: its ETag is no object's), in one bulk request."""
    actions = []
    for number, key in enumerate(keys):
        doc_id, document = _document(BUCKET, key, f"{number:032x}", LONG_AGO)
        actions.append({"_op_type": "create", "_index": INDEX_ALIAS, "_id": doc_id, "_source": document})
    assert bulk_write(es, actions, refresh="wait_for").created == len(keys)


def _plan(s3, es, **kwargs):  # type: ignore[no-untyped-def]
    return plan_reconciliation(
        s3_client=s3,
        es=es,
        bucket=BUCKET,
        prefix="uploads/",
        staging_uri=f"s3://{BUCKET}/_imagelabels/",
        run=RunContext("image_reconcile_daily", "guard"),
        batch_size=100,
        min_age_hours=0,
        refresh="wait_for",
        **kwargs,
    )


def test_an_empty_bucket_is_refused_deletes_nothing_and_the_confirm_param_deletes(  # type: ignore[no-untyped-def]
    reconcile_dag, s3, es
) -> None:
    """The compose stack's moto restarted (S3 empty again) while the index persisted: every
    document looks like an orphan. The run refuses, fails without retries, and deletes nothing."""
    s3.create_bucket(Bucket=BUCKET)
    ensure_indices(es)
    _index_many(es, [f"uploads/{n:02d}.jpg" for n in range(50)])
    before = _snapshot(es)
    when = datetime.now(UTC).replace(microsecond=0)

    refused = _test(reconcile_dag, when, min_age_hours=0)
    assert str(refused.state) == "failed"
    plan = refused.get_task_instance("plan")
    assert (str(plan.state), plan.try_number) == ("failed", 1)  # no retries: a retry would refuse too
    assert str(refused.get_task_instance("label_and_index").state) == "upstream_failed"
    assert _snapshot(es) == before

    confirmed = _run(reconcile_dag, when + timedelta(minutes=1), min_age_hours=0, confirm_mass_delete=True)
    assert (confirmed["orphans"], confirmed["deleted"]) == (50, 50)
    assert es.count(index=INDEX_ALIAS)["count"] == 0


def test_a_refusal_comes_before_any_delete_says_why_and_logs_an_error(s3, es, caplog) -> None:  # type: ignore[no-untyped-def]
    """Deletes go out in chunks of 10 and the index is read in pages of 7: still nothing is
    deleted before the whole walk is counted."""
    s3.create_bucket(Bucket=BUCKET)
    ensure_indices(es)
    _index_many(es, [f"uploads/{n:02d}.jpg" for n in range(50)])
    with pytest.raises(Exception) as refused:  # noqa: PT011 - Airflow's no-retry error, caused by ours
        _plan(s3, es, delete_chunk=10, index_page_size=7)
    cause = refused.value if isinstance(refused.value, MassDeletionRefused) else refused.value.__cause__
    assert isinstance(cause, MassDeletionRefused)
    message = str(refused.value)
    for part in ("refused to delete 50 of the 50 documents", "s3://photos/uploads/", "confirm_mass_delete"):
        assert part in message
    assert es.count(index=INDEX_ALIAS)["count"] == 50
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "MASS DELETION REFUSED" in r.message]
    assert len(errors) == 1

    confirmed = _plan(s3, es, delete_chunk=10, index_page_size=7, confirm_mass_delete=True)
    assert (confirmed.counts.orphans, confirmed.counts.deleted) == (50, 50)
    assert es.count(index=INDEX_ALIAS)["count"] == 0


def test_a_dry_run_of_a_mass_deletion_warns_and_changes_nothing(s3, es, caplog) -> None:  # type: ignore[no-untyped-def]
    s3.create_bucket(Bucket=BUCKET)
    ensure_indices(es)
    _index_many(es, [f"uploads/{n:02d}.jpg" for n in range(50)])
    dry = _plan(s3, es, dry_run=True)
    assert (dry.counts.orphans, dry.counts.deleted) == (50, 0)
    assert any("confirm_mass_delete" in r.message for r in caplog.records if r.levelname == "WARNING")
    assert es.count(index=INDEX_ALIAS)["count"] == 50


def test_a_reconciliation_below_the_share_proceeds(s3, es, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """No floor: 8 orphans of 48 documents (17 %) are under the 20 % share and are deleted; with a
    10 % share the same run is refused."""
    monkeypatch.setenv("IMAGELABELS_RECONCILE_DELETE_FLOOR", "0")
    s3.create_bucket(Bucket=BUCKET)
    ensure_indices(es)
    keys = [f"uploads/{n:02d}.jpg" for n in range(40)]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    for key in keys:
        _index(es, BUCKET, key, s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"'))
    _index_many(es, [f"uploads/gone-{n}.jpg" for n in range(8)])

    monkeypatch.setenv("IMAGELABELS_RECONCILE_MAX_DELETE_SHARE", "0.1")
    with pytest.raises(Exception, match="refused to delete 8 of the 48 documents"):
        _plan(s3, es)
    assert es.count(index=INDEX_ALIAS)["count"] == 48

    monkeypatch.delenv("IMAGELABELS_RECONCILE_MAX_DELETE_SHARE")  # the default, 0.2
    counts = _plan(s3, es).counts
    assert (counts.ok, counts.orphans, counts.deleted) == (40, 8, 8)
    assert es.count(index=INDEX_ALIAS)["count"] == 40
