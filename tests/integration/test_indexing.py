"""Index setup, bulk writes and the seed's queries, on noida-db and on a real OpenSearch node
(``both_engines``: the same expected results on both)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from imagelabels import fingerprints
from imagelabels.documents import (
    IMAGE_MAPPINGS,
    INDEX_ALIAS,
    LabelResult,
    ObjectInfo,
    build_document,
    document_id,
    upgrade_mappings,
    versioned_index_name,
)
from imagelabels.engine.elastic import connect as elasticsearch_engine
from imagelabels.engine.indexing import bulk_write, copy_documents, ensure_indices, existing_ids
from imagelabels.fingerprints import Signals
from imagelabels.search import queries as search
from imagelabels.search.similarity import similar_images, vector_search_available
from tests.helpers import ThrottlingProxy

WHEN = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
both_engines = pytest.mark.both_engines
CURRENT = versioned_index_name()


def _doc(key: str, labels: list[tuple[str, float]], bucket: str = "mys3bucket") -> dict:
    obj = ObjectInfo(bucket, key, 100, f"etag-{key}", WHEN)
    result = LabelResult([{"Name": n, "Confidence": c} for n, c in labels], "rekognition", "3.0", 50.0, 10)
    return {
        "_op_type": "create",
        "_index": INDEX_ALIAS,
        "_id": document_id(bucket, key, None, f"etag-{key}"),
        "_source": build_document(obj, result, dag_id="d", run_id="r", ingested_at=WHEN),
    }


@both_engines
def test_ensure_indices_is_idempotent_and_creates_alias_over_versioned_index(es) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    ensure_indices(es)
    assert list(es.indices.get_alias(name=INDEX_ALIAS)) == [CURRENT]
    properties = es.indices.get_mapping(index=CURRENT)[CURRENT]["mappings"]["properties"]
    assert properties["Labels"]["type"] == "nested"
    assert properties["label_confidence"]["type"] == "rank_features"
    assert es.indices.exists(index="images-failures")
    settings = es.indices.get_settings(index=CURRENT)[CURRENT]["settings"]["index"]
    assert settings["number_of_shards"] == "2"  # the default: one search thread per shard


@both_engines
def test_a_new_index_gets_the_shards_the_deployment_sets(es, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("IMAGELABELS_INDEX_SHARDS", "3")
    ensure_indices(es)
    settings = es.indices.get_settings(index=CURRENT)[CURRENT]["settings"]["index"]
    assert settings["number_of_shards"] == "3"
    assert (
        bulk_write(es, [_doc(f"{n}.jpg", [("Cat", 90.0)]) for n in range(9)], refresh="wait_for").created == 9
    )
    assert [label for label, _count in search.top_labels(es)] == ["Cat"]


@both_engines
def test_bulk_create_counts_created_already_present_and_refused(es) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    good = [_doc("a.jpg", [("Cat", 95.0)]), _doc("b.jpg", [("Dog", 80.0)])]
    first = bulk_write(es, good, refresh="wait_for")
    assert (first.created, first.already_present, first.failures) == (2, 0, [])
    broken = _doc("c.jpg", [("Car", 70.0)])
    broken["_source"]["not_in_the_schema"] = 1
    second = bulk_write(es, [*good, broken, _doc("d.jpg", [("Tree", 60.0)])], refresh="wait_for")
    assert (second.created, second.already_present) == (1, 2)
    assert [f.doc_id for f in second.failures] == [broken["_id"]]
    assert second.failures[0].status == 400
    assert "strict_dynamic_mapping_exception" in second.failures[0].reason
    assert es.count(index=INDEX_ALIAS)["count"] == 3
    assert existing_ids(es, [good[0]["_id"], broken["_id"]]) == {good[0]["_id"]}


@pytest.mark.parametrize(("reject_items", "reject_requests"), [(2, 0), (0, 2)])
def test_bulk_retries_throttled_items_and_requests(
    clean_stack, reject_items: int, reject_requests: int
) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(clean_stack.elasticsearch())
    docs = [_doc(f"{n}.jpg", [("Cat", 90.0)]) for n in range(5)]
    with ThrottlingProxy(
        clean_stack.es_url, reject_items=reject_items, reject_requests=reject_requests
    ) as proxy:
        client = elasticsearch_engine(proxy.url, max_retries=0)  # only the bulk helper retries here
        outcome = bulk_write(client, docs, initial_backoff=0.01, refresh="wait_for")
    assert (outcome.created, outcome.failures) == (5, [])
    assert proxy.bulk_requests == 3
    assert clean_stack.elasticsearch().count(index=INDEX_ALIAS)["count"] == 5


def test_bulk_gives_up_after_max_retries_and_reports_every_item(clean_stack) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(clean_stack.elasticsearch())
    docs = [_doc(f"{n}.jpg", [("Cat", 90.0)]) for n in range(3)]
    with ThrottlingProxy(clean_stack.es_url, reject_items=10) as proxy:
        outcome = bulk_write(
            elasticsearch_engine(proxy.url, max_retries=0), docs, max_retries=2, initial_backoff=0.01
        )
    assert proxy.bulk_requests == 3
    assert outcome.created == 0
    assert sorted(f.doc_id for f in outcome.failures) == sorted(d["_id"] for d in docs)
    assert {f.status for f in outcome.failures} == {429}
    assert all("es_rejected_execution_exception" in f.reason for f in outcome.failures)


@pytest.mark.parametrize("in_flight", [1, 2])
def test_bulk_keeps_at_most_in_flight_chunks_open_and_accounts_for_every_item(
    clean_stack, in_flight: int
) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(clean_stack.elasticsearch())
    docs = [_doc(f"{n}.jpg", [("Cat", 90.0)]) for n in range(23)]
    docs[7]["_source"]["not_in_the_schema"] = 1  # refused (400) in the second chunk
    docs.append(dict(docs[3]))  # the same document again, in the last chunk: already present
    with ThrottlingProxy(clean_stack.es_url, reject_items=1, hold_bulk_s=0.2) as proxy:
        outcome = bulk_write(
            elasticsearch_engine(proxy.url, max_retries=0),
            docs,
            chunk_size=5,
            in_flight=in_flight,
            initial_backoff=0.01,
            refresh="wait_for",
        )
    assert (outcome.created, outcome.already_present) == (22, 1)
    assert [f.doc_id for f in outcome.failures] == [docs[7]["_id"]]
    assert proxy.bulk_requests == 5 + 1  # five chunks, one of them throttled and sent again
    assert proxy.most_bulk_open == in_flight
    assert clean_stack.elasticsearch().count(index=INDEX_ALIAS)["count"] == 22


@both_engines
def test_bulk_with_chunks_in_flight_writes_each_document_once(es) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    docs = [_doc(f"{n}.jpg", [("Cat", 90.0), ("Animal", 95.0)]) for n in range(41)]
    outcome = bulk_write(es, docs, chunk_size=4, in_flight=3, refresh="wait_for")
    assert (outcome.created, outcome.failures) == (41, [])
    again = bulk_write(es, docs, chunk_size=4, in_flight=3)
    assert (again.created, again.already_present) == (0, 41)
    assert es.count(index=INDEX_ALIAS)["count"] == 41
    hits = search.images_with_label(es, "Animal", size=50)
    assert sorted(hit.s3_location for hit in hits) == sorted(f"s3://mys3bucket/{n}.jpg" for n in range(41))


def _seed_fixture(es) -> dict[str, str]:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    docs = {
        "people": _doc("people.jpg", [("People", 99.0), ("Nature", 40.0)]),
        "nature": _doc("nature.jpg", [("Nature", 97.0), ("Waterfall", 95.0)]),
        "couch": _doc("couch.jpg", [("Couch", 88.0), ("Furniture", 88.0)]),
        "poster": _doc("poster.jpg", [("Poster", 75.0)]),
        "other": _doc("other.jpg", [("People", 99.0)], bucket="other-bucket"),
    }
    assert bulk_write(es, docs.values(), refresh="wait_for").created == 5
    return {name: doc["_id"] for name, doc in docs.items()}


def _nested(inner: dict) -> dict:
    return {
        "nested": {
            "path": "Labels",
            "score_mode": "sum",
            "query": {
                "function_score": {"query": inner, "field_value_factor": {"field": "Labels.Confidence"}}
            },
        }
    }


@both_engines
def test_second_seed_queries_run_unchanged(es) -> None:  # type: ignore[no-untyped-def]
    """The second seed's saved queries (es_label_query-1/-2, es_fuzzy_search-1), verbatim in shape."""
    ids = _seed_fixture(es)
    by_bucket = {"match": {"s3bucket": "mys3bucket"}}

    def run(inner: dict) -> list[str]:
        hits = es.search(index="images", query={"bool": {"must": [by_bucket, _nested(inner)]}})["hits"][
            "hits"
        ]
        return [hit["_id"] for hit in hits]

    people_or_nature = {
        "bool": {"should": [{"match": {"Labels.Name": "People"}}, {"match": {"Labels.Name": "Nature"}}]}
    }
    assert run(people_or_nature) == [ids["people"], ids["nature"]]  # 99+40 > 97: weighted by confidence
    assert run({"bool": {"must": [{"match": {"Labels.Name": "Couch"}}]}}) == [ids["couch"]]
    fuzzy = {
        "fuzzy": {
            "Labels.Name": {
                "value": "Poster",
                "boost": 1,
                "fuzziness": 2,
                "prefix_length": 0,
                "max_expansions": 100,
            }
        }
    }
    assert run(fuzzy) == [ids["poster"]]
    assert run({"fuzzy": {"Labels.Name": {"value": "Postre", "fuzziness": 2}}}) == [ids["poster"]]


@pytest.mark.opensearch_only  # noida-db ignores include_in_root
def test_second_seed_plain_match_on_labels_finds_images_too(es) -> None:  # type: ignore[no-untyped-def]
    """The seed's index let a plain (not nested) ``match`` on ``Labels.Name`` find images; with
    ``include_in_root`` a real engine does too, while nested queries keep per-label pairing."""
    ids = _seed_fixture(es)
    hits = es.search(
        index="images",
        query={
            "bool": {"must": [{"match": {"s3bucket": "mys3bucket"}}, {"match": {"Labels.Name": "Couch"}}]}
        },
    )["hits"]["hits"]
    assert [hit["_id"] for hit in hits] == [ids["couch"]]
    either = es.search(index="images", query={"match": {"Labels.Name": "Waterfall"}})["hits"]["hits"]
    assert [hit["_id"] for hit in either] == [ids["nature"]]


@both_engines
def test_delete_by_query_and_existing_ids(es) -> None:  # type: ignore[no-untyped-def]
    ids = _seed_fixture(es)
    assert existing_ids(es, [ids["people"], "missing"]) == {ids["people"]}
    reply = es.delete_by_query(index=INDEX_ALIAS, query={"term": {"s3bucket": "other-bucket"}}, refresh=True)
    assert reply["deleted"] == 1
    assert es.count(index=INDEX_ALIAS)["count"] == 4
    assert existing_ids(es, list(ids.values())) == set(ids.values()) - {ids["other"]}


@both_engines
def test_an_older_index_version_is_migrated_under_the_alias(es) -> None:  # type: ignore[no-untyped-def]
    """An ``images-v2`` from before ``label_confidence`` (its mapping and documents without the
    field) is copied into the current ``images-vN`` under the same ids, each document gaining the field from
    its own labels, and the alias moves in one step; a second call changes nothing."""
    old_mapping = {**IMAGE_MAPPINGS, "properties": dict(IMAGE_MAPPINGS["properties"])}
    del old_mapping["properties"]["label_confidence"]
    es.indices.create(
        index="images-v2", mappings=old_mapping, aliases={INDEX_ALIAS: {"is_write_index": True}}
    )
    docs = [_doc(f"old-{n}.jpg", [("Cat", 80.0 + n), ("Sofa", 70.0)]) for n in range(7)]
    for doc in docs:
        source = {k: v for k, v in doc["_source"].items() if k != "label_confidence"}
        es.index(index="images-v2", id=doc["_id"], document=source, refresh=True)
    ensure_indices(es)
    assert list(es.indices.get_alias(name=INDEX_ALIAS)) == [CURRENT]
    assert es.count(index=INDEX_ALIAS)["count"] == 7
    assert es.get(index=CURRENT, id=docs[0]["_id"])["_source"]["s3key"] == "old-0.jpg"
    page = search.search_labels(es, "cat", min_confidence=84)
    assert [(hit.s3key, hit.confidence) for hit in page.hits] == [
        ("old-6.jpg", 86.0),
        ("old-5.jpg", 85.0),
        ("old-4.jpg", 84.0),
    ]
    ensure_indices(es)
    assert list(es.indices.get_alias(name=INDEX_ALIAS)) == [CURRENT]
    assert es.count(index=INDEX_ALIAS)["count"] == 7


@both_engines
def test_copying_documents_pages_through_all_of_them(es) -> None:  # type: ignore[no-untyped-def]
    """The client-side copy pages with search_after (a page smaller than the index here) and
    writes every document once, with its features."""
    ensure_indices(es)
    docs = [_doc(f"p/{n:02}.jpg", [("Dog", 60.0 + n)]) for n in range(11)]
    assert bulk_write(es, docs, refresh="wait_for").created == 11
    es.indices.create(index="copy-target", mappings=IMAGE_MAPPINGS)
    assert copy_documents(es, INDEX_ALIAS, "copy-target", page_size=3) == 11
    es.indices.refresh(index="copy-target")
    assert es.count(index="copy-target")["count"] == 11
    top = search.search_labels(es, "Dog", size=2, index="copy-target")
    assert [(hit.s3key, hit.confidence) for hit in top.hits] == [("p/10.jpg", 70.0), ("p/09.jpg", 69.0)]


def _v3_visual_document(key: str, embedding: str) -> dict:
    """A document as ``images-v3`` held it: ``visual`` with pHash, embedding and bands, no vector."""
    doc = _doc(key, [("Cat", 90.0)])
    doc["_source"]["visual"] = {
        "phash": "0f" * 8,
        "phash_mirror": "f0" * 8,
        "embedding": embedding,
        "bands": ["h0:0f"],
    }
    return doc


@both_engines
def test_migrated_documents_gain_their_search_vectors(es) -> None:  # type: ignore[no-untyped-def]
    """Documents of an index from before ``visual.vector`` get it from their stored embedding when
    copied into the current index, whose vector field the engine searches; the example's nearest
    neighbour is then found by vector search."""
    old_mapping = upgrade_mappings({})  # everything but a vector index: what v3 could hold
    del old_mapping["properties"]["visual"]["properties"]["vector"]
    es.indices.create(
        index="images-v3", mappings=old_mapping, aliases={INDEX_ALIAS: {"is_write_index": True}}
    )
    rng = np.random.default_rng(7)
    base = fingerprints.normalized(rng.standard_normal(fingerprints.EMBEDDING_SIZE))
    near = fingerprints.normalized(base + 0.3 * fingerprints.normalized(rng.standard_normal(base.size)))
    far = fingerprints.normalized(rng.standard_normal(fingerprints.EMBEDDING_SIZE))
    docs = [
        _v3_visual_document("near.jpg", fingerprints.compact_embedding(near)),
        _v3_visual_document("far.jpg", fingerprints.compact_embedding(far)),
    ]
    for doc in docs:
        es.index(index="images-v3", id=doc["_id"], document=doc["_source"], refresh=True)
    assert not vector_search_available(es)  # v3 has no vector index: bands it is
    ensure_indices(es)
    assert list(es.indices.get_alias(name=INDEX_ALIAS)) == [CURRENT]
    copied = es.get(index=CURRENT, id=docs[0]["_id"])["_source"]["visual"]
    assert copied["vector"] == fingerprints.search_vector(fingerprints.expand_embedding(copied["embedding"]))
    assert vector_search_available(es)
    found = similar_images(es, Signals(embedding=base), size=2, vectors=True)
    assert [hit.hit.s3key for hit in found] == ["near.jpg", "far.jpg"]
    assert found[0].similarity > 0.9


@both_engines
def test_an_index_without_a_vector_field_gets_it_stored_and_keeps_using_bands(es) -> None:  # type: ignore[no-untyped-def]
    """An index of this version created without ``visual.vector`` (by hand, or by a template of
    another engine) is given the field stored only: its kind never changes in place, so vector
    questions are not asked of it."""
    mapping = upgrade_mappings({})
    del mapping["properties"]["visual"]["properties"]["vector"]
    es.indices.create(index=CURRENT, mappings=mapping, aliases={INDEX_ALIAS: {"is_write_index": True}})
    ensure_indices(es)
    visual = es.indices.get_mapping(index=CURRENT)[CURRENT]["mappings"]["properties"]["visual"]
    assert visual["properties"]["vector"]["type"] == "byte"
    assert not vector_search_available(es)
    ensure_indices(es)  # and again: no conflict
