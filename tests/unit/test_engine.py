"""The engine layer's translation (pure parts): Elasticsearch-8 keywords to opensearch-py's body,
bulk actions to bulk lines, chunking, error bodies. The calls themselves run against real engines
in tests/integration (noida-db and an OpenSearch node)."""

from __future__ import annotations

import json

import pytest

from imagelabels.engine import errors
from imagelabels.engine.base import _chunks, expand_action
from imagelabels.engine.opensearch import server_seconds, split_body


def test_search_keywords_move_into_the_body_and_params_stay() -> None:
    args = split_body(
        "search",
        {
            "index": "images",
            "query": {"match_all": {}},
            "source": False,
            "from_": 10,
            "size": 5,
            "request_timeout": 9,
        },
    )
    assert args == {
        "index": "images",
        "request_timeout": 9,
        "body": {"query": {"match_all": {}}, "_source": False, "from": 10, "size": 5},
    }


def test_documents_operations_and_templates() -> None:
    assert split_body("index", {"index": "i", "id": "1", "document": {"a": 1}}) == {
        "index": "i",
        "id": "1",
        "body": {"a": 1},
    }
    assert split_body("bulk", {"operations": [{"create": {}}], "refresh": "wait_for"}) == {
        "body": [{"create": {}}],
        "refresh": "wait_for",
    }
    template = split_body(
        "indices.put_index_template", {"name": "t", "index_patterns": ["x-*"], "meta": {"d": 1}}
    )
    assert template == {"name": "t", "body": {"index_patterns": ["x-*"], "_meta": {"d": 1}}}
    # `source` is a reindex body field of its own, not search's `_source`
    assert split_body("reindex", {"source": {"index": "a"}, "dest": {"index": "b"}, "refresh": True}) == {
        "refresh": True,
        "body": {"source": {"index": "a"}, "dest": {"index": "b"}},
    }
    assert split_body("cluster.health", {"index": "images", "timeout": "10s"}) == {
        "index": "images",
        "timeout": "10s",
    }


@pytest.mark.parametrize(
    ("value", "seconds"), [("60s", 60.0), ("2m", 120.0), ("500ms", 0.5), (3, 3.0), ("1.5s", 1.5)]
)
def test_server_time_values(value: object, seconds: float) -> None:
    assert server_seconds(value) == seconds


def test_bulk_actions_become_bulk_lines() -> None:
    assert expand_action({"_op_type": "create", "_index": "i", "_id": "a", "_source": {"x": 1}}) == (
        "create",
        [{"create": {"_index": "i", "_id": "a"}}, {"x": 1}],
    )
    assert expand_action({"_op_type": "delete", "_index": "i", "_id": "a"}) == (
        "delete",
        [{"delete": {"_index": "i", "_id": "a"}}],
    )
    assert expand_action({"_index": "i", "_id": "b", "_routing": "r", "y": 2}) == (
        "index",
        [{"index": {"_index": "i", "_id": "b", "routing": "r"}}, {"y": 2}],
    )


def test_chunks_respect_count_and_bytes_and_keep_every_action_in_order() -> None:
    actions = [
        {"_op_type": "index", "_index": "i", "_id": str(n), "_source": {"t": "x" * 100}} for n in range(10)
    ]
    by_count = list(_chunks(actions, chunk_size=4, max_chunk_bytes=10**6))
    assert [len(chunk) for chunk in by_count] == [4, 4, 2]
    by_bytes = list(_chunks(actions, chunk_size=500, max_chunk_bytes=400))
    assert all(len(chunk) <= 2 for chunk in by_bytes)
    ids = [action.lines[0]["index"]["_id"] for chunk in by_bytes for action in chunk]
    assert ids == [str(n) for n in range(10)]


def test_each_action_is_serialized_once_as_the_ndjson_the_clients_would_send() -> None:
    action = {"_op_type": "create", "_index": "i", "_id": "é1", "_source": {"Name": "Café", "n": 1.5}}
    [[chunked]] = list(_chunks([action], chunk_size=10, max_chunk_bytes=10**6))
    assert chunked.text == '{"create":{"_index":"i","_id":"é1"}}\n{"Name":"Café","n":1.5}\n'
    assert [json.loads(line) for line in chunked.text.splitlines()] == chunked.lines
    # the byte limit counts UTF-8 bytes (68 per action here, 44 characters): two do not fit in 100
    wide = [{"_op_type": "index", "_index": "i", "_id": str(n), "_source": {"t": "é" * 12}} for n in range(2)]
    assert [len(chunk) for chunk in _chunks(wide, chunk_size=10, max_chunk_bytes=100)] == [1, 1]


def test_error_bodies_of_every_shape() -> None:
    assert errors.describe_body(
        {"error": {"type": "index_not_found_exception", "reason": "no such index"}}
    ) == (
        "index_not_found_exception",
        "no such index",
    )
    assert errors.describe_body({"error": {"root_cause": [{"type": "t", "reason": "r"}]}}) == ("t", "r")
    assert errors.describe_body({"message": "The security token included in the request is invalid."}) == (
        "",
        "The security token included in the request is invalid.",
    )
    assert errors.error_for_status(None) is errors.EngineUnavailableError
    assert errors.error_for_status(403) is errors.AuthorizationError
    assert errors.error_for_status(429) is errors.EngineError


class _InfoClient:
    """Answers ``info()`` as an Elasticsearch of ``number`` would (the probe reads nothing else)."""

    def __init__(self, number: str) -> None:
        self.number = number

    def info(self) -> dict[str, object]:
        return {"version": {"number": self.number}}


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        ("8.15.3", "dense_vector"),
        ("9.1.0", "dense_vector"),
        ("8.6.0", "dense_vector"),
        ("8.5.3", None),
        ("7.10.2", None),
    ],
)
def test_elasticsearch_searches_byte_vectors_from_8_6(number: str, kind: str | None) -> None:
    from imagelabels.engine.elastic import ElasticsearchEngine

    engine = ElasticsearchEngine(_InfoClient(number), description="test")
    assert engine.vector_kind == kind
    engine.client = None  # asked once: a second read does not call the client
    assert engine.vector_kind == kind


def test_each_engine_writes_its_own_vector_question() -> None:
    """Elasticsearch: the top-level ``knn``; OpenSearch: the k-NN plugin's ``knn`` query; both
    filter inside the vector search."""
    from imagelabels.engine.elastic import ElasticsearchEngine
    from imagelabels.engine.opensearch import OpenSearchEngine

    keep = {"bool": {"must_not": [{"ids": {"values": ["x"]}}]}}
    elastic = ElasticsearchEngine(None, description="es").vector_search(
        field="visual.vector", vector=[1, 2], k=200, filter=keep
    )
    assert elastic == {
        "knn": {
            "field": "visual.vector",
            "query_vector": [1, 2],
            "k": 200,
            "num_candidates": 200,
            "filter": keep,
        }
    }
    opensearch = OpenSearchEngine(None, description="os").vector_search(
        field="visual.vector", vector=[1, 2], k=20
    )
    assert opensearch == {"query": {"knn": {"visual.vector": {"vector": [1, 2], "k": 20}}}}
    assert (
        ElasticsearchEngine(None, description="es").vector_search(field="v", vector=[1], k=5)["knn"][
            "num_candidates"
        ]
        == 100
    )  # Elasticsearch explores at least 100 per shard


class _RefusingClient:
    def info(self) -> dict[str, object]:
        raise errors.AuthorizationError(
            "403 security_exception: action [cluster:monitor/main] is unauthorized"
        )


def test_a_role_that_cannot_read_the_version_gets_bands_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from imagelabels.engine.elastic import ElasticsearchEngine

    assert ElasticsearchEngine(_RefusingClient(), description="es").vector_kind is None
    assert "similarity uses hash bands" in caplog.text


def test_an_index_whose_mapping_cannot_be_read_is_asked_by_bands(caplog: pytest.LogCaptureFixture) -> None:
    from imagelabels.search.similarity import vector_search_available

    class ReadOnly:
        vector_kind = "knn_vector"

        def indexed_vector_field(self, index: str, field: str) -> bool:
            raise errors.AuthorizationError("403 no view_index_metadata")

    assert vector_search_available(ReadOnly()) is False
    assert "similarity uses hash bands" in caplog.text
