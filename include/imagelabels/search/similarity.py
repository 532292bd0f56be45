"""Visual similarity: "more like this" and near-duplicate detection, on every engine we support.

Two signals are computed once per image, at labeling time, and stored in the document's
``visual`` object (:func:`visual_fields`):

* **Perceptual hash** (:func:`phash`, every image whatever the labeler): the classic 64-bit pHash
  -- grayscale, 32 x 32, 2-D DCT, the 8 x 8 lowest frequencies (DC included) compared with their
  median. Resizing, recompression and small crops move few bits; a mirror image moves about half,
  so the hash of the mirrored image is stored too (``visual.phash_mirror``) and distances are the
  smaller of the two (:func:`phash_distance`).
* **Embedding** (the local labeler only): the 1,280 pooled features of the same EfficientNet-Lite0
  pass that labels the image (a second output of the graph, free). It is centred (the mean of its
  values subtracted: the features follow ReLU6, so every raw vector has positive values and any
  two unrelated photos would look ~0.5 alike), L2-normalised and quantised to int8
  (:func:`compact_embedding`): 1,280 bytes, 1,708 base64 characters in ``_source``. Per-vector
  scaling (largest magnitude -> 127) needs no stored scale because only cosines are asked of it;
  the quantisation moves a cosine by ~1e-4 (unit test), against float16's 2,560 bytes for no
  useful gain. It is stored, not indexed (``binary``): every engine keeps it, none searches it.

**Candidates without vector search.** Each document gets ``visual.bands``, keywords anyone can
match with ``term`` queries (locality-sensitive hashing):

* ``h<i>:<hex>`` -- the pHash (and its mirror's) cut into 8 bands of 8 bits: two hashes within
  Hamming distance 7 share at least one band (pigeonhole), near duplicates share most;
* ``e<i>:<hex>`` -- 16 bands of 8 random-hyperplane bits of the embedding (SimHash; a fixed seed,
  so every process draws the same planes): two embeddings at cosine 0.9 agree on a band with
  probability ~0.3 and on at least one of 16 with ~0.996.

A question (:func:`similar_images`) is one ``bool`` of ``should`` ``term`` clauses on the
example's bands (each scoring 1, so the score is the number of bands shared), the top
:data:`CANDIDATES` fetched, then re-ranked here by the cosine of the embeddings (or, for images
without one, ``1 - Hamming / 64`` of the pHashes). This runs on noida-db, Elasticsearch and
OpenSearch alike, no plugin; at 100,000 documents it costs a few milliseconds of term lookups
(``benchmarks/visual_similarity.py``).

**Near duplicates** (:func:`is_near_duplicate`): pHash distance at most :data:`PHASH_DUPLICATE`
(6), or embedding cosine at least :data:`COSINE_DUPLICATE` (0.80, measured: see there). :func:`duplicate_groups`
finds every pair through shared bands and joins them with union-find.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from PIL.Image import Image

HASH_SIDE = 32  # the pHash's DCT input
HASH_LOW = 8  # the 8 x 8 lowest frequencies -> 64 bits
HASH_BANDS = 8  # 8 bits each
EMBEDDING_BANDS = 32
EMBEDDING_BAND_BITS = 6
EMBEDDING_SIZE = 1280
LSH_SEED = 20261205
PHASH_DUPLICATE = 6
# Measured on the 43 photos of benchmarks/eval_set (benchmarks/visual_similarity.py): the copies'
# lowest cosine to their original was 0.817 (half size), 0.851 (5 % cropped a side), 0.838 (JPEG
# quality 40), 0.93 (mirrored); the highest cosine between two different photos 0.44. pHash alone
# misses crops (up to 22 bits apart), so 0.95 would leave most crops ungrouped; 0.80 keeps every
# measured copy with a wide margin to unrelated photos.
COSINE_DUPLICATE = 0.80
CANDIDATES = 200
VISUAL_SOURCE = ["visual.phash", "visual.phash_mirror", "visual.embedding", "visual.bands"]


# --- perceptual hash ------------------------------------------------------------------------------


@cache
def _dct_matrix(n: int = HASH_SIDE) -> NDArray[np.float64]:
    """The orthonormal DCT-II matrix: ``D @ x`` is the DCT of a column ``x``."""
    import numpy as np

    k = np.arange(n)[:, np.newaxis]
    i = np.arange(n)[np.newaxis, :]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix  # type: ignore[no-any-return]


def _gray32(image: Image) -> NDArray[np.float64]:
    """``image`` as 32 x 32 luminance, area-averaged (a large image is box-reduced first)."""
    import numpy as np
    from PIL import Image as PILImage

    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    factor = max(1, min(image.size) // (4 * HASH_SIDE))
    if factor > 1:
        image = image.reduce(factor)
    small = image.convert("L").resize((HASH_SIDE, HASH_SIDE), PILImage.Resampling.BOX)
    return np.asarray(small, dtype=np.float64)


def _hash_bits(gray: NDArray[np.float64]) -> int:
    import numpy as np

    dct = _dct_matrix()
    low = (dct @ gray @ dct.T)[:HASH_LOW, :HASH_LOW].flatten()
    bits = low > np.median(low)
    return int("".join("1" if bit else "0" for bit in bits), 2)


def phash_pair(image: Image) -> tuple[str, str]:
    """The 64-bit pHash of ``image`` and of its mirror image, as 16 hex digits each."""
    gray = _gray32(image)
    return f"{_hash_bits(gray):016x}", f"{_hash_bits(gray[:, ::-1]):016x}"


def phash(image: Image) -> str:
    """The 64-bit pHash of ``image`` (16 hex digits)."""
    return phash_pair(image)[0]


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def phash_distance(a: str, b: str, b_mirror: str | None = None) -> int:
    """Hamming distance of pHash ``a`` to image ``b``: to ``b`` or, when given, to its mirror,
    whichever is closer (a mirrored copy is then as near as a recompressed one)."""
    distance = hamming(a, b)
    return min(distance, hamming(a, b_mirror)) if b_mirror else distance


# --- embedding --------------------------------------------------------------------------------------


def normalized(features: Sequence[float] | NDArray[Any]) -> NDArray[np.float32]:
    """Pooled features -> centred (mean subtracted), unit-length float32 vector."""
    import numpy as np

    vector = np.asarray(features, dtype=np.float64).reshape(-1)
    vector = vector - vector.mean()
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)  # type: ignore[no-any-return]


def compact_embedding(vector: NDArray[Any]) -> str:
    """A normalised embedding as base64 of int8 (largest magnitude -> 127; no scale is kept,
    cosines do not need one)."""
    import numpy as np

    peak = float(np.abs(vector).max()) if vector.size else 0.0
    scale = 127.0 / peak if peak > 0 else 0.0
    quantized = np.clip(np.rint(np.asarray(vector, dtype=np.float64) * scale), -127, 127).astype(np.int8)
    return base64.b64encode(quantized.tobytes()).decode("ascii")


def expand_embedding(text: str) -> NDArray[np.float32]:
    """:func:`compact_embedding`'s text -> unit-length float32 vector."""
    import numpy as np

    vector = np.frombuffer(base64.b64decode(text), dtype=np.int8).astype(np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def cosine(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Cosine of two unit vectors (clipped into -1..1)."""
    import numpy as np

    return max(-1.0, min(1.0, float(np.dot(a, b))))


@cache
def _hyperplanes() -> NDArray[np.float32]:
    """``[bands x bits, 1280]`` random Gaussian planes, the same in every process (PCG64 with a
    fixed seed draws the same numbers in every numpy since 1.17)."""
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(LSH_SEED))
    planes = rng.standard_normal((EMBEDDING_BANDS * EMBEDDING_BAND_BITS, EMBEDDING_SIZE))
    return planes.astype(np.float32)


def embedding_bands(vector: NDArray[Any]) -> list[str]:
    """``e<band>:<hex>``: the sides of the embedding's random hyperplanes, 8 bits a band."""
    import numpy as np

    if vector.size != EMBEDDING_SIZE:
        return []
    signs = (_hyperplanes() @ vector.astype(np.float32)) > 0
    bands = []
    for band in range(EMBEDDING_BANDS):
        bits = signs[band * EMBEDDING_BAND_BITS : (band + 1) * EMBEDDING_BAND_BITS]
        value = sum(1 << (EMBEDDING_BAND_BITS - 1 - i) for i, bit in enumerate(bits) if bit)
        bands.append(f"e{band:x}:{value:02x}")
    return bands


def hash_bands(*hashes: str) -> list[str]:
    """``h<band>:<hex>``: every hash cut into 8 bands of 8 bits (duplicates removed)."""
    bands: dict[str, None] = {}
    for value in hashes:
        for band in range(HASH_BANDS):
            bands[f"h{band}:{value[2 * band : 2 * band + 2]}"] = None
    return list(bands)


# --- what a document stores -------------------------------------------------------------------------


@dataclass(frozen=True)
class Signals:
    """What is known of an image's looks: its pHash (and its mirror's) and, from the local
    labeler, its normalised embedding."""

    phash: str | None = None
    phash_mirror: str | None = None
    embedding: NDArray[np.float32] | None = field(default=None, compare=False, repr=False)

    def bands(self) -> list[str]:
        bands = hash_bands(*(h for h in (self.phash, self.phash_mirror) if h))
        if self.embedding is not None:
            bands += embedding_bands(self.embedding)
        return bands

    @classmethod
    def of_source(cls, source: Mapping[str, Any]) -> Signals:
        visual = source.get("visual") or {}
        text = visual.get("embedding")
        return cls(visual.get("phash"), visual.get("phash_mirror"), expand_embedding(text) if text else None)


def visual_fields(
    phash_value: str | None, phash_mirror: str | None, embedding: str | None
) -> dict[str, Any] | None:
    """The document's ``visual`` object (``None`` when nothing is known)."""
    if not phash_value and not embedding:
        return None
    vector = expand_embedding(embedding) if embedding else None
    signals = Signals(phash_value, phash_mirror, vector)
    visual: dict[str, Any] = {"bands": signals.bands()}
    if phash_value:
        visual["phash"] = phash_value
    if phash_mirror:
        visual["phash_mirror"] = phash_mirror
    if embedding:
        visual["embedding"] = embedding
    return visual


def similarity(a: Signals, b: Signals) -> float | None:
    """How alike two images look, 0..1: the embeddings' cosine when both have one, else
    ``1 - pHash distance / 64`` (mirror allowed); ``None`` when they share no signal."""
    if a.embedding is not None and b.embedding is not None:
        return cosine(a.embedding, b.embedding)
    if a.phash and b.phash:
        return 1.0 - phash_distance(a.phash, b.phash, b.phash_mirror) / 64.0
    return None


def is_near_duplicate(a: Signals, b: Signals) -> bool:
    """pHash distance <= :data:`PHASH_DUPLICATE` (mirror allowed) or cosine >= :data:`COSINE_DUPLICATE`."""
    if a.phash and b.phash and phash_distance(a.phash, b.phash, b.phash_mirror) <= PHASH_DUPLICATE:
        return True
    return (
        a.embedding is not None
        and b.embedding is not None
        and cosine(a.embedding, b.embedding) >= COSINE_DUPLICATE
    )


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


def _candidates(
    es: Any,
    signals: Signals,
    *,
    size: int,
    must_not: Sequence[dict[str, Any]] = (),
    filters: Any = None,
    index: str,
    source: Sequence[str],
) -> list[dict[str, Any]]:
    bands = signals.bands()
    if not bands:
        return []
    query = band_query(bands)
    if must_not:
        query["bool"]["must_not"] = list(must_not)
    if filters is not None:
        clauses, excluded = filters.clauses()
        if clauses:
            query["bool"]["filter"] = clauses
        if excluded:
            query["bool"]["must_not"] = [*query["bool"].get("must_not", []), *excluded]
    response = es.search(index=index, query=query, size=size, source=list(source))
    return list(response["hits"]["hits"])


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
    )
    found = []
    for raw in raws:
        other = Signals.of_source(raw["_source"])
        alike = similarity(signals, other)
        if alike is None:
            continue
        found.append(
            Similar(search._hit(raw), alike, is_near_duplicate(signals, other), int(raw.get("_score") or 0))
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

    query = {
        "bool": {
            "should": [
                {"term": {"title.keyword": title_or_key}},
                {"term": {"s3key.keyword": title_or_key}},
                {"term": {"s3_location": title_or_key}},
            ],
            "minimum_should_match": 1,
        }
    }
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
    es: Any, signals: Signals, *, exclude_location: str, index: str | None = None
) -> str | None:
    """The id of an indexed image (another key) that ``signals`` nearly duplicates, the most
    alike of the band candidates; ``None`` when there is none."""
    for found in similar_images(
        es, signals, exclude_location=exclude_location, size=20, candidates=20, index=index
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
