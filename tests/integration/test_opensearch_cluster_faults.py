"""The fault matrix on a real, distributed engine: a three-node OpenSearch cluster (one JVM,
:mod:`imagelabels.devstack.opensearch_node`) loses a data node while the hourly DAG indexes, and a red
index (a primary shard on no node) fails the task at once with a clear message; the rerun
completes. Each test ends with :func:`tests.faults.assert_nothing_lost`: every key indexed exactly
once under its deterministic id, or a failure record with a reason, never both, no duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from imagelabels.devstack import opensearch_node
from imagelabels.devstack.embedded import covering_hours
from imagelabels.documents import FAILURES_INDEX, INDEX_ALIAS, versioned_index_name
from imagelabels.engine import EngineUnavailableError, from_url
from imagelabels.engine.indexing import ensure_indices, require_writable
from tests.airflow_dags import load_dag
from tests.faults import assert_nothing_lost
from tests.integration.test_fault_matrix import BUCKET, MOTO_REKOGNITION, PREFIX, _upload

CONCRETE = versioned_index_name()


def _opensearch_connection(url: str) -> str:
    host, port = url.removeprefix("http://").split(":")
    return json.dumps(
        {"conn_type": "opensearch", "host": host, "port": int(port), "extra": {"use_ssl": False}}
    )


@pytest.fixture
def hourly_dag(airflow_db):  # type: ignore[no-untyped-def]
    dag = load_dag("image_ingest_s3_hourly")
    for task in dag.tasks:
        task.retry_delay = timedelta(seconds=1)
    return dag


@pytest.fixture(scope="module")
def cluster() -> Iterator[opensearch_node.OpenSearchNode]:
    """Three nodes, all master-eligible data nodes; the client talks to node 0."""
    with opensearch_node.start(nodes=3, heap="1g") as running:
        yield running


def _run(dag: Any, keys: list[str], s3: Any, **conf: Any) -> list[Any]:
    hours = covering_hours([s3.head_object(Bucket=BUCKET, Key=k)["LastModified"] for k in keys])
    return [
        dag.test(
            logical_date=hour + timedelta(hours=1), run_conf={"bucket": BUCKET, **MOTO_REKOGNITION, **conf}
        )
        for hour in hours
    ]


def test_a_data_node_lost_while_the_hourly_run_indexes_loses_and_duplicates_nothing(  # type: ignore[no-untyped-def]
    hourly_dag, s3, cluster, monkeypatch
) -> None:
    """Between the run's first and second batch, node 2 stops. The index has one replica (the
    template's auto_expand_replicas on three nodes): the replica on a surviving node is promoted,
    the cluster turns yellow (still writable; green again once the copies are rebuilt), and every
    later batch indexes normally."""
    es = from_url(cluster.url, flavor="opensearch")
    ensure_indices(es)
    es.cluster_health(index=INDEX_ALIAS, wait_for_status="green", timeout="60s")
    for index in (CONCRETE, FAILURES_INDEX):  # the failure records must survive the node too
        shards = es.indices.get_settings(index=index)[index]["settings"]["index"]
        assert shards["auto_expand_replicas"] == "0-1", index
    es.cluster_health(index=FAILURES_INDEX, wait_for_status="green", timeout="60s")
    monkeypatch.setenv("AIRFLOW_CONN_ELASTICSEARCH_DEFAULT", _opensearch_connection(cluster.url))
    keys = _upload(s3, 12, bad=1)
    batches: list[int] = []

    def lose_a_node_before_the_second_batch(context: Any) -> None:
        batches.append(context["ti"].map_index)
        if len(batches) == 2:
            cluster.stop_node(2)

    hourly_dag.get_task("label_and_index").on_execute_callback = lose_a_node_before_the_second_batch
    try:
        runs = _run(hourly_dag, keys, s3, batch_size=4)
        assert [str(run.state) for run in runs] == ["success"] * len(runs)
        assert len(batches) >= 3  # the node went away with batches still to index
        health = es.cluster_health(index=INDEX_ALIAS)
        assert health is not None
        # yellow while the lost copies are rebuilt on the two survivors, green once they are:
        # on a loaded machine the run can outlast the recovery (found with a CPU hog beside it)
        assert health["number_of_nodes"] == 2
        assert health["status"] in ("yellow", "green")
        es.indices.refresh(index=INDEX_ALIAS)
        accounting = assert_nothing_lost(es, s3, BUCKET, PREFIX)
        assert sorted(accounting.indexed) == keys[:12]
        assert accounting.failed == {f"{PREFIX}notes-0.jpg": "not_an_image"}
    finally:
        cluster.start_node(2)
    es.cluster_health(index=INDEX_ALIAS, wait_for_status="green", timeout="120s")
    assert es.count(index=INDEX_ALIAS)["count"] == 12  # the returning node brought no stale copy


@pytest.mark.opensearch_only
def test_a_red_index_fails_the_task_at_once_and_a_rerun_completes(hourly_dag, s3, es, capsys) -> None:  # type: ignore[no-untyped-def]
    """Its only primary shard may live on no node (an allocation filter naming no node): the
    labeling task fails before any labeling call with a message saying what is wrong; once the
    shard is allocated, the rerun indexes everything once."""
    es.indices.create(
        index=CONCRETE,
        aliases={INDEX_ALIAS: {"is_write_index": True}},
        settings={"index.routing.allocation.require._name": "no-such-node", "number_of_replicas": 0},
        wait_for_active_shards="0",  # the point: no shard will ever be active
    )
    health = es.cluster_health(index=INDEX_ALIAS)
    assert health is not None
    assert health["status"] == "red"
    with pytest.raises(EngineUnavailableError, match=r"cluster health is red for 'images' .*rerun this task"):
        require_writable(es)

    keys = _upload(s3, 5)
    hourly_dag.get_task("label_and_index").retries = 0  # the run must end here, not after retries
    failed = _run(hourly_dag, keys, s3)
    assert [str(run.state) for run in failed] == ["failed"] * len(failed)
    states = {(ti.task_id, str(ti.state)) for run in failed for ti in run.get_task_instances()}
    assert ("label_and_index", "failed") in states
    assert ("list_batches", "success") in states  # planning works on a red index; writing would not
    assert "cluster health is red for 'images'" in capsys.readouterr().out  # the task log says why

    es.indices.put_settings(index=CONCRETE, settings={"index.routing.allocation.require._name": None})
    es.cluster_health(index=INDEX_ALIAS, wait_for_status="green", timeout="60s")
    assert es.count(index=INDEX_ALIAS)["count"] == 0  # nothing was written while red
    rerun = _run(load_dag("image_ingest_s3_hourly"), keys, s3)
    assert [str(run.state) for run in rerun] == ["success"] * len(rerun)
    es.indices.refresh(index=INDEX_ALIAS)
    assert sorted(assert_nothing_lost(es, s3, BUCKET, PREFIX).indexed) == keys
