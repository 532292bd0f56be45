"""Questions asked of the ``images`` alias (plain Python: give it an Elasticsearch client).

* Which images represent X?                    :func:`images_with_label` / :func:`search_labels`
* Which images represent X with >= 90 %?       the same, with ``min_confidence``
* Which images represent X, typos forgiven?    the same, with ``fuzzy=True``
* What does image T represent?                 :func:`describe_image` (title or S3 key)
* Which images look like this example?         :func:`label_example` + :func:`images_like`
* Which labels are most frequent?              :func:`top_labels`

Every question takes the same :class:`Filters` (bucket, key prefix, date range, "exclude
moderated"); :func:`search_labels` and :func:`images_like` page with ``search_after``. Hits can
carry a presigned S3 URL (:func:`presign_hits`, expiry ``IMAGELABELS_PRESIGN_SECONDS``) that
serves the image as the type its bytes were detected as (``image/png``...), ``inline``, never as the
page an uploader's Content-Type might claim; :func:`image_page_url` links the Image search page's
detail view of a document instead (no expiry, no S3 reachability needed).

A label question names a label exactly (any case: "pizza" finds Pizza, not "Pizza Oven") and
is answered from the ``label_confidence`` rank features (one per label of an image, see
:mod:`imagelabels.documents`): the score is that label's own confidence, so an image with Pizza at
60 % and Waterfall at 95 % is not an answer to "Pizza >= 90 %", and the engine ranks the top k
without a nested join (p95 18 ms instead of 83 ms at 1,000,000 images on OpenSearch). A fuzzy
question (typos forgiven, every word of the name) keeps the nested ``match`` on the same label
object. User input only ever goes into structured query clauses (``match``, ``term``,
``rank_feature`` on an escaped feature name...), never into a query string.

Only queries and aggregations that both real Elasticsearch 8 and noida-db (the local stand-in)
answer are used: no ``reverse_nested``, no ``composite``.

Why this module is long: every question asked of the ``images`` alias (labels, like, describe, top
labels, pages, presigned links) shares the query builders, the cursor tokens and the hit model; the
visual questions are in :mod:`imagelabels.search.similarity`.
"""

from __future__ import annotations

import math
import posixpath
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from imagelabels.documents import (
    FEATURE_EXPONENT,
    INDEX_ALIAS,
    LABEL_FEATURES,
    confidence_feature,
    label_key,
)
from imagelabels.settings import environment_value

DEFAULT_PRESIGN_SECONDS = 900
_SOURCE = [
    "title",
    "s3_location",
    "s3bucket",
    "s3key",
    "timestamp",
    "Labels.Name",
    "Labels.Confidence",
    "Labels.Parents",
    "Labels.Aliases",
    "ModerationLabels.Name",
    "ModerationLabels.Confidence",
    "object.content_type",
    "preflight.source_format",
]
# Score first, then a unique keyword as the tie-breaker, so search_after pages are stable.
_SORT: list[dict[str, Any]] = [{"_score": {"order": "desc"}}, {"s3_location": {"order": "asc"}}]


@dataclass(frozen=True)
class Hit:
    """One image in an answer, with the confidence of the label that matched (if any).

    ``score`` is the query's score (for a label question: the matching label's confidence),
    ``sort`` the values to pass as ``search_after`` for the next page, ``url`` a presigned GET
    URL once :func:`presign_hits` has run, ``content_type`` the image type the document's
    preflight detected (:func:`image_content_type`), ``None`` when it does not say.
    """

    title: str
    s3_location: str
    confidence: float | None
    labels: list[tuple[str, float]]
    parents: dict[str, list[str]] = field(default_factory=dict)
    moderation: list[tuple[str, float]] = field(default_factory=list)
    s3bucket: str = ""
    s3key: str = ""
    timestamp: str | None = None
    score: float | None = None
    doc_id: str = ""
    sort: list[Any] | None = None
    url: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of hits: ``total`` matching images and the ``search_after`` of the next page
    (``None`` when this page was not full, i.e. there is no next page)."""

    hits: list[Hit]
    total: int
    next_after: list[Any] | None


@dataclass(frozen=True)
class Filters:
    """Restrictions every question accepts; all optional, combined with AND.

    :param bucket: only images in this bucket (``s3bucket``).
    :param prefix: only keys starting with this prefix (``s3key``).
    :param since: only images whose ``timestamp`` (S3 LastModified) is at or after this.
    :param until: only images whose ``timestamp`` is before this.
    :param exclude_moderated: leave out images with any moderation label (``moderated: true``).
    """

    bucket: str | None = None
    prefix: str | None = None
    since: datetime | date | str | None = None
    until: datetime | date | str | None = None
    exclude_moderated: bool = False

    def clauses(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(filter, must_not)`` clauses of a ``bool`` query."""
        filters: list[dict[str, Any]] = []
        must_not: list[dict[str, Any]] = []
        if self.bucket:
            filters.append({"term": {"s3bucket": self.bucket}})
        if self.prefix:
            filters.append({"prefix": {"s3key.keyword": self.prefix}})
        bounds: dict[str, str] = {}
        if self.since is not None:
            bounds["gte"] = _iso(self.since)
        if self.until is not None:
            bounds["lt"] = _iso(self.until)
        if bounds:
            filters.append({"range": {"timestamp": bounds}})
        if self.exclude_moderated:
            must_not.append({"term": {"moderated": True}})
        return filters, must_not


NO_FILTERS = Filters()


def _iso(value: datetime | date | str) -> str:
    return value if isinstance(value, str) else value.isoformat()


def _filtered(query: dict[str, Any] | None, filters: Filters | None) -> dict[str, Any]:
    """``query`` restricted by ``filters`` (a plain ``match_all`` when there is neither)."""
    filter_clauses, must_not = (filters or NO_FILTERS).clauses()
    if not filter_clauses and not must_not:
        return query or {"match_all": {}}
    combined: dict[str, Any] = {"filter": filter_clauses}
    if query is not None:
        combined["must"] = [query]
    if must_not:
        combined["must_not"] = must_not
    return {"bool": combined}


def _name_match(label: str, *, fuzzy: bool) -> dict[str, Any]:
    match: dict[str, Any] = {"query": label, "operator": "and"}
    if fuzzy:
        match.update(fuzziness="AUTO", prefix_length=0, max_expansions=50)
    return {"match": {"Labels.Name": match}}


def _confidence_scored(inner: dict[str, Any], weight: float | None = None) -> dict[str, Any]:
    """``inner`` (a query on one nested label) scored by that label's confidence (x ``weight``)."""
    # ``factor`` rather than the query's ``boost``: with boost_mode "replace" a real engine drops
    # the boost of the replaced query score (found on OpenSearch; noida-db applied it)
    factor: dict[str, Any] = {"field": "Labels.Confidence", "missing": 0}
    if weight is not None:
        factor["factor"] = weight
    return {"function_score": {"query": inner, "field_value_factor": factor, "boost_mode": "replace"}}


# log(1 + exp(0.8 c)) x 1.25 = c (to within 0.005 for c >= 6): the score of a rank_feature query
# on label_confidence is the label's confidence, as the nested function_score's was
_LOG_BOOST = 1.0 / FEATURE_EXPONENT


def _feature(name: str, weight: float = 1.0) -> dict[str, Any]:
    """Images with the label ``name`` (any case), scored by its confidence (x ``weight``)."""
    return {
        "rank_feature": {
            "field": f"{LABEL_FEATURES}.{label_key(name)}",
            "log": {"scaling_factor": 1},
            "boost": _LOG_BOOST * weight,
        }
    }


def feature_score(confidence: float) -> float:
    """The score :func:`_feature` gives a label of ``confidence`` (for ``min_score`` floors: the
    exact inverse, so a floor of 5 % is as exact as one of 90 %)."""
    return _LOG_BOOST * math.log1p(confidence_feature(confidence))


def label_names_for(label: str) -> list[str]:
    """The label names a search for ``label`` means: the name itself (any case) and the labels it
    is an alias of in the local taxonomy ("kitty" -> Cat, "people" -> Person, "coffee" -> Coffee,
    Espresso...). Documents also carry their labels' own ``Aliases`` as features, so Rekognition's
    aliases need no list here; this one also finds documents indexed before aliases were."""
    from imagelabels.labelers.aliases import names_for

    names: dict[str, str] = {label_key(label): label}
    for name in names_for(label):
        names.setdefault(label_key(name), name)
    return list(names.values())


def label_query(label: str, min_confidence: float | None = None, *, fuzzy: bool = False) -> dict[str, Any]:
    """Images showing ``label``, scored by that label's confidence, optionally only those at or
    above ``min_confidence`` *for that label* (not any label of the image).

    Exact names (any case, :func:`~imagelabels.documents.label_key`) are answered from the
    ``label_confidence`` rank features: top-k without a nested join, so the cost does not grow
    with the label's frequency. ``fuzzy`` (typos forgiven, every word matched) keeps the
    nested ``match``, whose analyzed names a feature lookup cannot give."""
    if fuzzy:
        must: list[dict[str, Any]] = [_name_match(label, fuzzy=True)]
        if min_confidence is not None:
            must.append({"range": {"Labels.Confidence": {"gte": float(min_confidence)}}})
        return {
            "nested": {
                "path": "Labels",
                "score_mode": "max",
                "inner_hits": {"size": 1},
                "query": _confidence_scored({"bool": {"must": must}}),
            }
        }
    names = label_names_for(label)
    query = _feature(names[0]) if len(names) == 1 else {"dis_max": {"queries": [_feature(n) for n in names]}}
    if min_confidence is None:
        return query
    # function_score's min_score drops images whose best matching label is under the floor
    floor = feature_score(float(min_confidence)) - 0.005
    return {"function_score": {"query": query, "min_score": floor}}


def like_query(example: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """Images sharing labels with an example: one rank feature clause per example label, each
    scored by the document's confidence in that label x the example's confidence (as a
    fraction), summed over the labels they share."""
    should = [_feature(name, max(float(confidence), 0.0) / 100.0) for name, confidence in example]
    return {"bool": {"should": should, "minimum_should_match": 1}}


def _matched_confidence(raw: dict[str, Any], names: Sequence[str] = ()) -> float | None:
    """The confidence of the label that matched: the best of the document's labels named as one
    of ``names`` (any case); for a nested query, the inner hit's own source, else (when a server
    filters that source away) the root's ``Labels`` at the inner hit's nested offset."""
    if names:
        keys = {label_key(name) for name in names}
        found = [
            float(label["Confidence"])
            for label in raw.get("_source", {}).get("Labels", [])
            if "Confidence" in label
            and keys & {label_key(str(n)) for n in [label.get("Name", ""), *_alias_names(label)]}
        ]
        return max(found) if found else None
    inner = raw.get("inner_hits", {}).get("Labels", {}).get("hits", {}).get("hits", [])
    if not inner:
        return None
    own = (inner[0].get("_source") or {}).get("Confidence")
    if own is not None:
        return float(own)
    offset = (inner[0].get("_nested") or {}).get("offset")
    labels = raw.get("_source", {}).get("Labels", [])
    if isinstance(offset, int) and 0 <= offset < len(labels) and "Confidence" in labels[offset]:
        return float(labels[offset]["Confidence"])
    return None


def _alias_names(label: dict[str, Any]) -> list[str]:
    return [str(alias.get("Name", "")) for alias in label.get("Aliases") or []]


def _hit(raw: dict[str, Any], matched: Sequence[str] = ()) -> Hit:
    source = raw["_source"]
    confidence = _matched_confidence(raw, matched)
    labels = [(label["Name"], float(label["Confidence"])) for label in source.get("Labels", [])]
    parents = {
        label["Name"]: [parent["Name"] for parent in label.get("Parents", [])]
        for label in source.get("Labels", [])
    }
    moderation = [(m["Name"], float(m["Confidence"])) for m in source.get("ModerationLabels", [])]
    score = raw.get("_score")
    detected = image_content_type(
        (source.get("preflight") or {}).get("source_format"), (source.get("object") or {}).get("content_type")
    )
    return Hit(
        source["title"],
        source["s3_location"],
        confidence,
        labels,
        parents,
        moderation,
        s3bucket=source.get("s3bucket", ""),
        s3key=source.get("s3key", ""),
        timestamp=source.get("timestamp"),
        score=float(score) if score is not None else None,
        doc_id=str(raw.get("_id", "")),
        sort=raw.get("sort"),
        content_type=detected,
    )


def _page(
    es: Any,
    query: dict[str, Any],
    *,
    size: int,
    search_after: Sequence[Any] | None,
    index: str,
    matched: Sequence[str] = (),
) -> Page:
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    request: dict[str, Any] = {
        "index": index,
        "query": query,
        # One more than asked tells whether there is a next page (one more again after
        # search_after: room for the hit noida-db may repeat, see _strictly_after).
        "size": size + 1 + (search_after is not None),
        "sort": _SORT,
        "track_scores": True,
        "source": _SOURCE,
        "track_total_hits": True,
    }
    if search_after is not None:
        request["search_after"] = _engine_after(search_after)
    response = es.search(**request)
    hits = [_hit(raw, matched) for raw in response["hits"]["hits"]]
    if search_after is not None:
        hits = [hit for hit in hits if hit.sort is None or _strictly_after(hit.sort, search_after)]
    total = response["hits"].get("total", {})
    count = int(total["value"]) if isinstance(total, dict) else int(total or 0)
    next_after = _token(hits[size - 1].sort) if len(hits) > size else None
    return Page(hits[:size], count, next_after)


def _token(sort: list[Any] | None) -> list[Any] | None:
    """``sort`` as a next-page token: the score written as the shortest decimal that is the same
    float32 (the engine's score type), so a pasted token is short (91.99788, not
    91.99787902832031) and the same on every engine and client."""
    if not sort or not isinstance(sort[0], float):
        return sort
    return [_shortest_float32(sort[0]), *sort[1:]]


def _engine_after(after: Sequence[Any]) -> list[Any]:
    """A token's values as the engine compares them: the score as the float32 it is (a token
    says 91.99788; noida-db compares the widened 91.99787902832031, a real engine parses either
    to the same float32), so the hit the token names is neither repeated nor skipped."""
    values = list(after)
    if values and isinstance(values[0], int | float) and not isinstance(values[0], bool):
        values[0] = _float32(values[0])
    return values


def _shortest_float32(value: float) -> float:
    target = _float32(value)
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        candidate = float(f"{target:.{digits}g}")
        if _float32(candidate) == target:
            return candidate
    return target


def _float32(value: Any) -> float:
    return float(struct.unpack("f", struct.pack("f", float(value)))[0])


def _strictly_after(sort: Sequence[Any], after: Sequence[Any]) -> bool:
    """Whether a hit's ``sort`` values come after ``after`` in :data:`_SORT` order (score
    descending, then location ascending), comparing scores as the float32 ES computes them.

    Real Elasticsearch never returns anything else after ``search_after``; noida-db may repeat
    the last hit of the previous page when its score is not exactly representable (95.2), so the
    guard keeps pages from overlapping on both.
    """
    if len(sort) != 2 or len(after) != 2:
        return True
    score, after_score = _float32(sort[0]), _float32(after[0])
    return score < after_score or (score == after_score and str(sort[1]) > str(after[1]))


def search_labels(
    es: Any,
    label: str,
    *,
    min_confidence: float | None = None,
    fuzzy: bool = False,
    filters: Filters | None = None,
    size: int = 20,
    search_after: Sequence[Any] | None = None,
    index: str = INDEX_ALIAS,
) -> Page:
    """One page of images showing ``label``, most confident first (ties by S3 location)."""
    query = _filtered(label_query(label, min_confidence, fuzzy=fuzzy), filters)
    matched = () if fuzzy else label_names_for(label)
    return _page(es, query, size=size, search_after=search_after, index=index, matched=matched)


def images_with_label(
    es: Any,
    label: str,
    *,
    min_confidence: float | None = None,
    size: int = 20,
    index: str = INDEX_ALIAS,
    fuzzy: bool = False,
    filters: Filters | None = None,
    search_after: Sequence[Any] | None = None,
) -> list[Hit]:
    """Images showing ``label``, most confident first (the hits of :func:`search_labels`)."""
    return search_labels(
        es,
        label,
        min_confidence=min_confidence,
        fuzzy=fuzzy,
        filters=filters,
        size=size,
        search_after=search_after,
        index=index,
    ).hits


def title_or_key_query(title_or_key: str) -> dict[str, Any]:
    """Documents whose title, S3 key or ``s3://`` location is exactly ``title_or_key``: how a
    person names one image (describe it, find images like it)."""
    return {
        "bool": {
            "should": [
                {"term": {"title.keyword": title_or_key}},
                {"term": {"s3key.keyword": title_or_key}},
                {"term": {"s3_location": title_or_key}},
            ],
            "minimum_should_match": 1,
        }
    }


def describe_image(
    es: Any, title_or_key: str, *, index: str = INDEX_ALIAS, filters: Filters | None = None
) -> list[Hit]:
    """The labels of the image(s) whose title, S3 key or ``s3://`` location is exactly
    ``title_or_key``."""
    query = title_or_key_query(title_or_key)
    response = es.search(
        index=index,
        query=_filtered(query, filters),
        size=10,
        sort=[{"s3_location": {"order": "asc"}}],
        source=_SOURCE,
    )
    return [_hit(raw) for raw in response["hits"]["hits"]]


def images_like(
    es: Any,
    example: Sequence[tuple[str, float]],
    *,
    exclude_location: str | None = None,
    exclude_etag: str | None = None,
    filters: Filters | None = None,
    size: int = 20,
    search_after: Sequence[Any] | None = None,
    index: str = INDEX_ALIAS,
) -> Page:
    """Images whose labels resemble ``example`` (``(name, confidence)`` pairs, e.g. from
    :func:`label_example`), best first. The example itself, if it is indexed, is left out: by
    its ``s3://`` location (``exclude_location``) or, for a local file, by the MD5 of its bytes,
    which is the S3 ETag of a single-part upload (``exclude_etag``)."""
    if not example:
        return Page([], 0, None)
    query = like_query(example)
    must_not: list[dict[str, Any]] = []
    if exclude_location:
        must_not.append({"term": {"s3_location": exclude_location}})
    if exclude_etag:
        must_not.append({"term": {"object.etag": exclude_etag.strip('"')}})
    if must_not:
        query["bool"]["must_not"] = must_not
    return _page(es, _filtered(query, filters), size=size, search_after=search_after, index=index)


def top_labels(
    es: Any, *, size: int = 10, index: str = INDEX_ALIAS, filters: Filters | None = None
) -> list[tuple[str, int]]:
    """The most frequent labels (flat ``label_names`` field), with image counts."""
    response = es.search(
        index=index,
        size=0,
        query=_filtered(None, filters),
        aggs={"labels": {"terms": {"field": "label_names", "size": size}}},
    )
    return [
        (bucket["key"], int(bucket["doc_count"])) for bucket in response["aggregations"]["labels"]["buckets"]
    ]


# The top-labels requests people send most: the CLI's default, the Image search page's facets
# and the pool its suggestions are picked from.
SUGGEST_POOL = 1000
COMMON_TOP_LABEL_SIZES = (10, 20, SUGGEST_POOL)


def warm_top_labels(es: Any, *, index: str = INDEX_ALIAS) -> None:
    """Ask the common :func:`top_labels` questions once, so that the engine's shard request
    cache holds their answers: at 1,000,000 images the exact aggregation takes ~340 ms, a cached
    answer ~5 ms, until the next refresh that changes the index (so: after each ingest run)."""
    for size in COMMON_TOP_LABEL_SIZES:
        top_labels(es, size=size, index=index)


# --- the example image of "images like this" ---------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ValueError(f"an s3:// URI needs a bucket and a key: {uri!r}")
    return bucket, key


def read_example(source: str, s3: Any | None = None) -> tuple[bytes, str | None]:
    """The bytes of an example image (local path or ``s3://`` URI) and its ``s3://`` location
    (``None`` for a local file)."""
    if source.startswith("s3://"):
        if s3 is None:
            raise ValueError("an s3:// example needs an S3 client")
        bucket, key = parse_s3_uri(source)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        return bytes(body.read()), source
    with open(source, "rb") as handle:
        return handle.read(), None


def label_example(
    data: bytes,
    *,
    name: str = "example",
    labeler: str | None = None,
    client_for: Any = None,
    settings: Any = None,
) -> list[tuple[str, float]]:
    """Label an example image with a labeler (default: the configured one, ``local`` offline)
    and return its labels (and their parents' names, at the child's confidence), best first."""
    from imagelabels.documents import ObjectInfo
    from imagelabels.labelers.base import LabelingSettings
    from imagelabels.labelers.registry import default_labeler, make_labeler
    from imagelabels.preflight.checks import prepare

    def no_clients(service: str) -> Any:
        raise ValueError(f"labeler {labeler!r} needs a {service} client; pass client_for")

    chosen = labeler or default_labeler()
    labeling = settings or LabelingSettings(features=("labels",))
    model = make_labeler(chosen, client_for or no_clients, labeling)
    obj = ObjectInfo("", name, len(data), "", datetime.now().astimezone(), title=name)
    result = model.label(prepare(obj, data, keep_pixels=chosen == "local"))
    best: dict[str, float] = {}
    for label in result.labels:
        confidence = float(label["Confidence"])
        for item in [label, *(label.get("Parents") or [])]:
            item_name = str(item["Name"])
            best[item_name] = max(best.get(item_name, 0.0), confidence)
    return sorted(best.items(), key=lambda pair: (-pair[1], pair[0]))


# --- links to images ----------------------------------------------------------------------------

# Preflight's format names (magic bytes, :func:`imagelabels.preflight.checks.sniff_format`) -> the type
# a link serves. Never SVG or anything else a browser would run as a page.
IMAGE_CONTENT_TYPES: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "HEIF": "image/heif",
    "AVIF": "image/avif",
    "JPEG2000": "image/jp2",
    "JXL": "image/jxl",
}
_IMAGE_TYPES = frozenset(IMAGE_CONTENT_TYPES.values()) | {"image/heic", "image/pjpeg", "image/x-ms-bmp"}
# What a presigned link may serve besides images: the report files (PDF, chart PNG, CSV, JSON,
# XLSX). Nothing here renders as a page.
_LINK_TYPES = _IMAGE_TYPES | {
    "application/pdf",
    "application/json",
    "text/csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_LINK_SUFFIXES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".jfif": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".avif": "image/avif",
    ".jp2": "image/jp2",
    ".jxl": "image/jxl",
    ".pdf": "application/pdf",
    ".json": "application/json",
    ".csv": "text/csv",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
FALLBACK_CONTENT_TYPE = "application/octet-stream"  # a download, never a page


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def image_content_type(source_format: str | None, content_type: str | None = None) -> str | None:
    """The image type to serve a document's object as: the format preflight detected from the
    magic bytes (``preflight.source_format``), else the stored ``object.content_type`` when it
    names an image type (documents indexed before preflight recorded its format); ``None`` when
    neither says (an uploader's ``text/html`` or ``image/svg+xml`` never counts)."""
    detected = IMAGE_CONTENT_TYPES.get((source_format or "").upper())
    if detected:
        return detected
    stored = _media_type(content_type)
    return stored if stored in _IMAGE_TYPES else None


def link_content_type(key: str, content_type: str | None = None) -> str:
    """The ``Content-Type`` a presigned link to ``key`` makes S3 send: ``content_type`` when it is
    an image type or a report file's type, else the type of the key's suffix among those, else
    ``application/octet-stream``. Never what the object was uploaded with: a polyglot uploaded
    as ``text/html`` would render as a page on S3's origin."""
    wanted = _media_type(content_type)
    if wanted in _LINK_TYPES:
        return wanted
    return _LINK_SUFFIXES.get(posixpath.splitext(key)[1].lower(), FALLBACK_CONTENT_TYPE)


def content_disposition(filename: str, disposition: str = "inline") -> str:
    """A ``Content-Disposition`` value naming ``filename`` (RFC 6266): a quoted ASCII fallback
    (quotes, backslashes and non-ASCII as ``_``) and, when that differs, the exact name as an
    RFC 5987 ``filename*=UTF-8''...``. Control characters are dropped (no header injection)."""
    from urllib.parse import quote

    name = "".join(char for char in filename if char.isprintable()) or "image"
    fallback = "".join(char if " " <= char <= "~" and char not in '"\\' else "_" for char in name)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value


def presign_seconds() -> int:
    """Expiry of presigned URLs: ``IMAGELABELS_PRESIGN_SECONDS`` (default 900, i.e. 15 minutes)."""
    raw = environment_value("IMAGELABELS_PRESIGN_SECONDS").strip()
    seconds = int(raw) if raw else DEFAULT_PRESIGN_SECONDS
    if not 1 <= seconds <= 7 * 24 * 3600:
        raise ValueError(f"IMAGELABELS_PRESIGN_SECONDS must be within 1..604800, got {seconds}")
    return seconds


def presigned_url(
    s3: Any, s3_location: str, *, expires_in: int | None = None, content_type: str | None = None
) -> str:
    """A presigned GET URL for an ``s3://bucket/key`` location that makes S3 answer with
    ``Content-Type`` :func:`link_content_type` (``content_type``: the type detected for the
    object, e.g. :attr:`Hit.content_type`) and ``Content-Disposition: inline; filename=...``
    (:func:`content_disposition`), whatever the object was uploaded with.

    A presigned URL lives at most as long as the credentials that signed it (an assumed role's:
    often an hour); for links people open later use :func:`image_page_url`."""
    bucket, key = parse_s3_uri(s3_location)
    seconds = presign_seconds() if expires_in is None else expires_in
    params = {
        "Bucket": bucket,
        "Key": key,
        "ResponseContentType": link_content_type(key, content_type),
        "ResponseContentDisposition": content_disposition(posixpath.basename(key)),
    }
    return str(s3.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds))


def presign_hits(s3: Any, hits: Sequence[Hit], *, expires_in: int | None = None) -> list[Hit]:
    """``hits`` with ``url`` set to a presigned GET URL (signing is local: no request to S3)."""
    return [
        replace(
            hit, url=presigned_url(s3, hit.s3_location, expires_in=expires_in, content_type=hit.content_type)
        )
        for hit in hits
    ]


# A presigned URL signed with session credentials (an assumed role, SSO, instance profile) carries
# the session token in its query: X-Amz-Security-Token (SigV4) or x-amz-security-token (SigV2).
_SESSION_TOKEN = re.compile(r"([?&]x-amz-security-token=)[^&#\s]*", re.IGNORECASE)


def mask_session_token(url: str) -> str:
    """``url`` with the value of its session-token query parameter replaced by ``***``: for
    printing a presigned link where Airflow's log masker does not look (a terminal). A link signed
    with long-term keys (no token) is returned unchanged, and still works."""
    return _SESSION_TOKEN.sub(r"\1***", url)


# --- the Image search page ---------------------------------------------------------------------

PAGE_MOUNT = "/image-search"  # where plugins/image_search_plugin.py mounts the page on the api-server


def ui_base_url() -> str | None:
    """The Airflow UI's base URL, for links people open from mail, Slack or a webhook:
    ``IMAGELABELS_UI_BASE_URL``, else Airflow's ``[api] base_url`` (``AIRFLOW__API__BASE_URL`` or
    airflow.cfg); ``None`` when none is set (Airflow cannot guess its public name)."""
    for name in ("IMAGELABELS_UI_BASE_URL", "AIRFLOW__API__BASE_URL"):
        value = environment_value(name).strip()
        if value:
            return value.rstrip("/")
    try:
        from airflow.configuration import conf
    except ImportError:  # plain Python, no Airflow: only the variables count
        return None
    value = str(conf.get("api", "base_url", fallback="") or "").strip()
    return value.rstrip("/") or None


def image_page_url(doc_id: str, *, base_url: str | None = None) -> str | None:
    """The Image search page's detail view of the document ``doc_id`` (its ``_id``, e.g.
    :attr:`Hit.doc_id` or an alert image's ``document_id``):
    ``<base url>/image-search/?image=<doc_id>``, shown to a signed-in Airflow user (the login page
    comes back to it), the image streamed by the page with the api-server's S3 credentials.

    ``base_url`` defaults to :func:`ui_base_url`; ``None`` when there is none (or no id), so a
    caller can fall back: ``image_page_url(doc_id) or presigned_url(s3, location)``."""
    from urllib.parse import quote

    base = (base_url or "").strip().rstrip("/") or ui_base_url()
    if not base or not doc_id:
        return None
    return f"{base}{PAGE_MOUNT}/?image={quote(doc_id, safe='')}"
