"""Visual similarity: "more like this" and near-duplicate detection, on every engine we support.

The fingerprints (pHash, embedding, LSH bands) are :mod:`imagelabels.fingerprints`'s.

**Candidates with vector search** (Elasticsearch's ``dense_vector``, OpenSearch's k-NN plugin:
:attr:`imagelabels.engine.SearchEngine.vector_kind`, and an index created with the vector
mapping): the engine's HNSW graph returns the :data:`CANDIDATES` nearest ``visual.vector`` values
(128 int8 values, :func:`imagelabels.fingerprints.search_vector`), together with the images sharing
a pHash band (those without an embedding); the user's filters apply inside the graph search.

**Candidates without vector search** (noida-db through the same Elasticsearch API works either
way; OpenSearch without the plugin, Serverless SEARCH collections, indices from before).
Each document gets ``visual.bands``, keywords anyone can match with ``term`` queries
(locality-sensitive hashing):

* ``h<i>:<hex>`` -- the pHash (and its mirror's) cut into 8 bands of 8 bits: two hashes within
  Hamming distance 7 share at least one band (pigeonhole), near duplicates share most;
* ``e<i>:<hex>`` -- 32 bands of 6 random-hyperplane bits of the embedding (SimHash; a fixed seed,
  so every process draws the same planes): two embeddings at cosine 0.9 agree on a band with
  probability ~0.39 and on at least one of 32 with > 0.9999.

A question (:func:`similar_images`) is then one ``bool`` of ``should`` ``term`` clauses on the
example's bands (each scoring 1, so the score is the number of bands shared), the top
:data:`CANDIDATES` fetched. Either way the candidates are re-ranked here by the exact cosine of
the stored 1,280-value embeddings (or, for images without one, ``1 - Hamming / 64`` of the
pHashes), so both paths answer with the same measure (``benchmarks/visual_similarity.py``
compares them at 100,000 documents).

**Near duplicates** (:func:`is_near_duplicate`): pHash distance at most :data:`PHASH_DUPLICATE`
(6), or embedding cosine at least :data:`COSINE_DUPLICATE` (0.80, measured: see there). :func:`duplicate_groups`
finds every pair through shared bands and joins them with union-find.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

from imagelabels.fingerprints import (
    Signals,
    is_near_duplicate,
    normalized,
    search_vector,
    similarity,
)

log = logging.getLogger(__name__)

CANDIDATES = 200
VISUAL_SOURCE = ["visual.phash", "visual.phash_mirror", "visual.embedding", "visual.bands"]


def band_query(bands: Iterable[str]) -> dict[str, Any]:
    """A ``bool`` whose score is the number of ``bands`` a document shares (constant-score terms)."""
    return {
        "bool": {
            "should": [{"constant_score": {"filter": {"term": {"visual.bands": band}}}} for band in bands],
            "minimum_should_match": 1,
        }
    }


# --- questions --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Similar:
    """One image like the example: its hit (``score`` = the band count), how alike it looks
    (:func:`similarity`, 0..1) and whether that makes it a near duplicate."""

    hit: Any  # search.Hit
    similarity: float
    near_duplicate: bool
    bands_shared: int


def _restrictions(must_not: Sequence[dict[str, Any]], filters: Any) -> dict[str, Any] | None:
    """The ``bool`` every candidate must pass (the example left out, the user's filters), or ``None``."""
    clauses, excluded = filters.clauses() if filters is not None else ([], [])
    if not (clauses or excluded or must_not):
        return None
    return {"bool": {"filter": list(clauses), "must_not": [*must_not, *excluded]}}


def _candidates(
    es: Any,
    signals: Signals,
    *,
    size: int,
    must_not: Sequence[dict[str, Any]] = (),
    filters: Any = None,
    index: str,
    source: Sequence[str],
    vectors: bool | None = None,
) -> list[dict[str, Any]]:
    """The candidates to re-rank: where the engine searches vectors and the example has an
    embedding, the ``size`` nearest ``visual.vector`` values and, asked apart, the images without
    a vector (e.g. Rekognition-labeled) that share a pHash band; the ``size`` images sharing most
    bands otherwise. ``vectors=None`` asks the index whether it can.

    Two questions rather than one ``bool``: summed in one query, a band's score (1 a band) would
    rank thousands of chance pHash-band matches above the nearest vectors (whose score is under 1).
    """
    restrict = _restrictions(must_not, filters)
    vector = search_vector(signals.embedding) if signals.embedding is not None else []
    if vector and vectors is None:
        vectors = vector_search_available(es, index)
    if vector and vectors:
        request = es.vector_search(field="visual.vector", vector=vector, k=size, filter=restrict)
        nearest = es.search(index=index, size=size, source=list(source), **request)["hits"]["hits"]
        hash_bands = [band for band in signals.bands() if band.startswith("h")]
        without_vector = [{"exists": {"field": "visual.vector"}}]
        return [*nearest, *_band_hits(es, hash_bands, restrict, without_vector, index, size, source)]
    return _band_hits(es, signals.bands(), restrict, [], index, size, source)


def _band_hits(
    es: Any,
    bands: Sequence[str],
    restrict: dict[str, Any] | None,
    must_not: list[dict[str, Any]],
    index: str,
    size: int,
    source: Sequence[str],
) -> list[dict[str, Any]]:
    """The ``size`` documents sharing most of ``bands`` (none without bands)."""
    if not bands:
        return []
    query = band_query(bands)
    query["bool"]["filter"] = restrict["bool"]["filter"] if restrict else []
    query["bool"]["must_not"] = [*(restrict["bool"]["must_not"] if restrict else []), *must_not]
    return list(es.search(index=index, query=query, size=size, source=list(source))["hits"]["hits"])


def vector_search_available(es: Any, index: str | None = None) -> bool:
    """Whether similarity questions to ``index`` can ask for nearest vectors: the engine searches
    vectors and every index behind the name maps ``visual.vector`` as one (an index created
    before, or where the engine could not, keeps using bands)."""
    from imagelabels.documents import INDEX_ALIAS
    from imagelabels.engine import EngineError

    if es.vector_kind is None:
        return False
    try:
        return bool(es.indexed_vector_field(index or INDEX_ALIAS, "visual.vector"))
    except EngineError as error:  # e.g. a read-only role without view_index_metadata: bands work
        log.warning(
            "cannot read the mapping of %s (%s); similarity uses hash bands", index or INDEX_ALIAS, error
        )
        return False


def similar_images(
    es: Any,
    signals: Signals,
    *,
    exclude_ids: Sequence[str] = (),
    exclude_location: str | None = None,
    exclude_etag: str | None = None,
    filters: Any = None,
    size: int = 20,
    candidates: int = CANDIDATES,
    index: str | None = None,
    vectors: bool | None = None,
) -> list[Similar]:
    """Images that look like ``signals`` (see the module docstring), most alike first.

    The example itself is left out: by document id, ``s3://`` location or (a local file) the
    MD5 of its bytes, as :func:`imagelabels.search.queries.images_like` does.
    """
    from imagelabels.documents import INDEX_ALIAS
    from imagelabels.search import queries as search

    must_not: list[dict[str, Any]] = []
    if exclude_ids:
        must_not.append({"ids": {"values": list(exclude_ids)}})
    if exclude_location:
        must_not.append({"term": {"s3_location": exclude_location}})
    if exclude_etag:
        must_not.append({"term": {"object.etag": exclude_etag.strip('"')}})
    raws = _candidates(
        es,
        signals,
        size=max(candidates, size),
        must_not=must_not,
        filters=filters,
        index=index or INDEX_ALIAS,
        source=[*search._SOURCE, *VISUAL_SOURCE],
        vectors=vectors,
    )
    example_bands = set(signals.bands())
    found = []
    for raw in raws:
        other = Signals.of_source(raw["_source"])
        alike = similarity(signals, other)
        if alike is None:
            continue
        found.append(
            Similar(
                search._hit(raw),
                alike,
                is_near_duplicate(signals, other),
                len(example_bands & set((raw["_source"].get("visual") or {}).get("bands") or ())),
            )
        )
    found.sort(key=lambda s: (-s.similarity, -s.bands_shared, s.hit.s3_location))
    return found[:size]


def signals_of_image(data: bytes, *, name: str = "example") -> Signals:
    """pHash and embedding of image bytes, computed as at labeling time (preflight, then the local
    classifier's pooled features)."""
    from datetime import datetime

    from imagelabels.documents import ObjectInfo
    from imagelabels.labelers.local import _decode, detect_labels
    from imagelabels.preflight.checks import prepare

    obj = ObjectInfo("", name, len(data), "", datetime.now().astimezone(), title=name)
    prepared = prepare(obj, data, keep_pixels=True)
    pooled: list[Any] = []
    detect_labels(_decode(prepared), min_confidence=100.0, max_labels=0, features_out=pooled)
    hashes = prepared.phash or (None, None)
    return Signals(hashes[0], hashes[1], normalized(pooled[0]) if pooled else None)


def indexed_signals(
    es: Any, title_or_key: str, *, index: str | None = None
) -> tuple[str, str, Signals] | None:
    """The document id, ``s3://`` location and signals of the indexed image whose title, key or
    location is ``title_or_key`` (the first by location when several share a title)."""
    from imagelabels.documents import INDEX_ALIAS
    from imagelabels.search.queries import title_or_key_query

    query = title_or_key_query(title_or_key)
    response = es.search(
        index=index or INDEX_ALIAS,
        query=query,
        size=1,
        sort=[{"s3_location": {"order": "asc"}}],
        source=["s3_location", *VISUAL_SOURCE],
    )
    hits = response["hits"]["hits"]
    if not hits:
        return None
    return str(hits[0]["_id"]), str(hits[0]["_source"]["s3_location"]), Signals.of_source(hits[0]["_source"])


def find_near_duplicate(
    es: Any,
    signals: Signals,
    *,
    exclude_location: str,
    index: str | None = None,
    vectors: bool | None = None,
) -> str | None:
    """The id of an indexed image (another key) that ``signals`` nearly duplicates, the most
    alike of the candidates; ``None`` when there is none. ``vectors``: as for
    :func:`similar_images` (a batch asks the index once)."""
    for found in similar_images(
        es, signals, exclude_location=exclude_location, size=20, candidates=20, index=index, vectors=vectors
    ):
        if found.near_duplicate:
            return str(found.hit.doc_id)
    return None


# --- near-duplicate groups --------------------------------------------------------------------------


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


@dataclass(frozen=True)
class Member:
    doc_id: str
    title: str
    s3_location: str
    signals: Signals = field(compare=False)
    near_duplicate_of: str | None = None  # the flag set at index time


def scan_members(es: Any, *, filters: Any = None, index: str | None = None, page: int = 1000) -> list[Member]:
    """Every document with a ``visual`` object (within ``filters``), paged by ``search_after``."""
    from imagelabels.documents import INDEX_ALIAS

    clauses, excluded = filters.clauses() if filters is not None else ([], [])
    query: dict[str, Any] = {
        "bool": {"filter": [{"exists": {"field": "visual.bands"}}, *clauses], "must_not": excluded}
    }
    members: list[Member] = []
    after: list[Any] | None = None
    while True:
        request: dict[str, Any] = {
            "index": index or INDEX_ALIAS,
            "query": query,
            "size": page,
            "sort": [{"s3_location": {"order": "asc"}}],
            "source": ["title", "s3_location", "visual.near_duplicate_of", *VISUAL_SOURCE],
        }
        if after is not None:
            request["search_after"] = after
        hits = es.search(**request)["hits"]["hits"]
        fresh = [hit for hit in hits if after is None or str(hit["sort"][0]) > str(after[0])]
        for hit in fresh:
            source = hit["_source"]
            members.append(
                Member(
                    str(hit["_id"]),
                    source.get("title", ""),
                    source["s3_location"],
                    Signals.of_source(source),
                    (source.get("visual") or {}).get("near_duplicate_of"),
                )
            )
        if len(hits) < page or not fresh:
            return members
        after = fresh[-1]["sort"]


MAX_BUCKET = 256


def duplicate_groups(
    members: Sequence[Member], *, min_shared: int = 1, max_bucket: int = MAX_BUCKET
) -> list[list[Member]]:
    """Groups of near duplicates among ``members``: pairs that share a band are checked
    (:func:`is_near_duplicate`) and joined with union-find; groups of two or more, largest first,
    each sorted by location.

    A band value held by more than ``max_bucket`` images says little and would cost a square
    number of checks, so it proposes no pairs (near duplicates share many bands, so they are
    still found through the others; a very common image, e.g. thousands of blank frames, is not).
    At 100,000 images every band holds more than that (6-bit embedding bands ~1,500 images, 8-bit
    pHash bands ~400), so there the groups come from the index-time flags: a member whose
    ``near_duplicate_of`` is another member joins its group.
    """
    by_band: dict[str, list[int]] = {}
    for number, member in enumerate(members):
        for band in member.signals.bands():
            by_band.setdefault(band, []).append(number)
    shared: dict[tuple[int, int], int] = {}
    for numbers in by_band.values():
        if 1 < len(numbers) <= max_bucket:
            for i, a in enumerate(numbers):
                for b in numbers[i + 1 :]:
                    shared[(a, b)] = shared.get((a, b), 0) + 1
    groups = _UnionFind()
    for (a, b), count in shared.items():
        if count >= min_shared and is_near_duplicate(members[a].signals, members[b].signals):
            groups.union(members[a].doc_id, members[b].doc_id)
    ids = {member.doc_id for member in members}
    for member in members:
        if member.near_duplicate_of and member.near_duplicate_of in ids:
            groups.union(member.doc_id, member.near_duplicate_of)
    collected: dict[str, list[Member]] = {}
    for member in members:
        if member.doc_id in groups.parent:
            collected.setdefault(groups.find(member.doc_id), []).append(member)
    result = [sorted(group, key=lambda m: m.s3_location) for group in collected.values() if len(group) > 1]
    return sorted(result, key=lambda group: (-len(group), group[0].s3_location))


def mean_similarity(members: Sequence[Member]) -> float:
    """Average :func:`similarity` of a group's pairs (for display)."""
    values = [
        value
        for i, a in enumerate(members)
        for b in members[i + 1 :]
        if (value := similarity(a.signals, b.signals)) is not None
    ]
    return sum(values) / len(values) if values else math.nan
