"""The real OpenSearch node (``imagelabels.devstack.opensearch_node``): HTTP, the modules the pipeline relies
on (reindex for ``_delete_by_query``, painless), and a 3-node cluster that loses and regains a node.

Each test starts its own JVM (the session fixture in tests/opensearch_fixtures.py is for others):
these are the tests that stop it and check that nothing is left behind.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

import pytest

from imagelabels.devstack import opensearch_node as opensearch
from tests.opensearch_fixtures import require_java

pytestmark = pytest.mark.integration

HEAP = "512m"


def call(method: str, url: str, body: Any = None, *, ndjson: bool = False) -> dict[str, Any]:
    """One HTTP request with a JSON answer; an error status fails the test with OpenSearch's reason."""
    data = None
    headers = {}
    if body is not None:
        data = body.encode() if ndjson else json.dumps(body).encode()
        headers["Content-Type"] = "application/x-ndjson" if ndjson else "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as error:
        pytest.fail(f"{method} {url} -> {error.code}: {error.read().decode(errors='replace')}")


def test_single_node_indexes_searches_deletes_by_query_and_runs_painless() -> None:
    require_java()
    node = opensearch.start(nodes=1, heap=HEAP)
    home, pid = node.home, node.pid
    try:
        url = node.url
        assert call("GET", url)["version"]["number"].startswith("2.19.")
        assert node.health()["status"] in ("green", "yellow")

        call(
            "PUT",
            f"{url}/images",
            {"mappings": {"properties": {"label": {"type": "keyword"}, "n": {"type": "long"}}}},
        )
        call("PUT", f"{url}/images/_doc/a", {"label": "cat", "n": 1})
        call("PUT", f"{url}/images/_doc/b", {"label": "dog", "n": 2})
        call("POST", f"{url}/images/_refresh")
        hits = call("GET", f"{url}/images/_search?q=label:cat")["hits"]
        assert [hit["_id"] for hit in hits["hits"]] == ["a"]

        # painless: an update script and a script field
        call(
            "POST",
            f"{url}/images/_update/a?refresh=true",
            {"script": {"source": "ctx._source.n += params.by", "params": {"by": 41}}},
        )
        found = call(
            "POST",
            f"{url}/images/_search",
            {
                "query": {"ids": {"values": ["a"]}},
                "script_fields": {"twice": {"script": "doc['n'].value * 2"}},
            },
        )["hits"]["hits"]
        assert found[0]["fields"]["twice"] == [84]

        # the reindex module: _delete_by_query
        deleted = call(
            "POST", f"{url}/images/_delete_by_query?refresh=true", {"query": {"term": {"label": "dog"}}}
        )
        assert deleted["deleted"] == 1
        assert call("GET", f"{url}/images/_count")["count"] == 1
    except BaseException:
        print(opensearch._tail(node.log, 120))  # shown with the failure: the home is deleted on stop
        raise
    finally:
        node.stop()
    assert not node.alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not home.exists(), "the temporary home is deleted on stop"


def test_three_nodes_survive_losing_one_and_take_it_back() -> None:
    require_java()
    node = opensearch.start(nodes=3, heap=HEAP)
    try:
        assert len(node.urls) == 3
        assert node.health()["number_of_nodes"] == 3
        url = node.url
        call("PUT", f"{url}/labels", {"settings": {"number_of_shards": 3, "number_of_replicas": 1}})
        lines = "".join(
            json.dumps({"index": {"_id": str(i)}}) + "\n" + json.dumps({"label": f"l{i % 5}", "n": i}) + "\n"
            for i in range(60)
        )
        assert not call("POST", f"{url}/labels/_bulk?refresh=true", lines, ndjson=True)["errors"]
        assert (
            call("GET", f"{url}/_cluster/health/labels?wait_for_status=green&timeout=60s")["status"]
            == "green"
        )
        # every node serves the index over its own HTTP port
        for node_url in node.urls:
            assert call("GET", f"{node_url}/labels/_count")["count"] == 60

        node.stop_node(2)
        assert node.health()["number_of_nodes"] == 2
        assert not opensearch._answers(node.urls[2])
        search = call("GET", f"{url}/labels/_search?size=100&allow_partial_search_results=false")
        assert search["_shards"]["failed"] == 0
        assert sorted(int(hit["_id"]) for hit in search["hits"]["hits"]) == list(range(60))

        node.start_node(2)
        assert node.health()["number_of_nodes"] == 3
        assert call("GET", f"{node.urls[2]}/labels/_count")["count"] == 60
    except BaseException:
        print(opensearch._tail(node.log, 120))  # shown with the failure: the home is deleted on stop
        raise
    finally:
        node.stop()
    assert not node.alive()
