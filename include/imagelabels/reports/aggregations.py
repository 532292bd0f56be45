"""One interval's figures as a :class:`~imagelabels.reports.model.Report`, from Elasticsearch
aggregations.

Only aggregations that both Elasticsearch 8 and noida-db (the local stand-in) answer are used:
``terms``, ``nested`` + ``terms`` + ``avg``, ``filter``/``filters``, ``date_histogram`` and
``cardinality`` - no ``reverse_nested``, no ``composite``, no scripts. Where noida-db ignores an
option that Elasticsearch honours (``include`` on ``terms``), the option is still sent (it keeps
Elasticsearch's answer small) and the answer is filtered again here, so both give the same rows.

The interval is half-open, ``[start, end)`` in UTC: ``ingested_at`` for documents, ``failed_at``
for failure records. An optional ``bucket``/``prefix`` scope restricts every query below.

Six searches, at most (``size=0`` unless they fetch documents):

1. :func:`_documents_query` on ``images`` - one request, several aggregations: the ``indexed``
   row of ``outcomes`` and ``Totals.indexed`` (hit count), ``top_labels`` (nested terms + avg),
   the labels of the interval for ``new_labels`` and ``Totals.distinct_labels`` (terms on
   ``label_names``), ``Totals.moderation_hits`` (filter ``moderated``), ``images_per_hour``
   (date_histogram) and ``by_prefix`` (terms on ``s3bucket`` then on ``prefixes``);
2. :func:`_failures_query` on ``images-failures`` - the ``rejected``/``failed`` rows of
   ``outcomes`` and their totals (filters on ``retryable``, terms on ``reason``);
3. :func:`_labels_seen_before` on ``images`` - which of the interval's labels were already on a
   document ingested before ``start`` (the rest are ``new_labels``); skipped when there are none;
4. :func:`_moderation_query` on ``images`` - the newest moderated documents, for
   ``moderation_hits``;
5. :func:`_near_duplicates_query` on ``images`` - the interval's documents flagged at index time as
   near duplicates of an image already there (``visual.near_duplicate_of``, see
   :mod:`imagelabels.search.similarity`), newest first, and one ``ids`` search for their originals'
   locations, for ``near_duplicates``.

Missing indices (nothing ever ingested, or no failure ever recorded) are answered as empty
(``ignore_unavailable``), so such a report is all zeros rather than an error.

Why this module is long: one aggregation request per report section, each with its parser next to
it; the request and its parsing change together, so they stay side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from imagelabels.documents import FAILURES_INDEX, INDEX_ALIAS
from imagelabels.reports.model import PERIODS, Column, Report, Table, Totals, table

# Bucket cap of the "every value" terms aggregations (labels, reasons, buckets, prefixes). An
# exact count needs every bucket: `cardinality` is approximate in Elasticsearch (HyperLogLog++),
# so distinct labels are counted from the buckets of a terms aggregation instead. 10,000 is far
# above any labeler's vocabulary (Rekognition knows ~3,000 labels) and well within
# Elasticsearch's default search.max_buckets (65,536) for the whole request.
_MAX_TERMS = 10_000
# Elasticsearch's default index.max_result_window: the most documents one page can return.
_MAX_MODERATION_LIMIT = 10_000
ROOT_PREFIX = "(root)"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_IGNORE_MISSING: dict[str, Any] = {"ignore_unavailable": True, "allow_no_indices": True}

TABLE_NAMES = (
    "outcomes",
    "top_labels",
    "new_labels",
    "moderation_hits",
    "images_per_hour",
    "by_prefix",
    "near_duplicates",
)

OUTCOME_COLUMNS = (
    Column("outcome", "Outcome"),
    Column("reason", "Reason"),
    Column("images", "Images", "int"),
)
TOP_LABEL_COLUMNS = (
    Column("rank", "Rank", "int"),
    Column("label", "Label"),
    Column("images", "Images", "int"),
    Column("avg_confidence", "Average confidence", "percent"),
)
NEW_LABEL_COLUMNS = (Column("label", "Label"), Column("images", "Images", "int"))
MODERATION_COLUMNS = (
    Column("image", "Image"),
    Column("label", "Moderation label"),
    Column("confidence", "Confidence", "percent"),
    Column("ingested_at", "Ingested at (UTC)", "datetime"),
    Column("link", "Detail view", "url"),
)
PER_HOUR_COLUMNS = (Column("hour", "Hour (UTC)", "datetime"), Column("images", "Images", "int"))
NEAR_DUPLICATE_COLUMNS = (
    Column("image", "Image"),
    Column("duplicate_of", "Near duplicate of"),
    Column("ingested_at", "Ingested at (UTC)", "datetime"),
    Column("link", "Detail view", "url"),
)
BY_PREFIX_COLUMNS = (
    Column("bucket", "Bucket"),
    Column("prefix", "Prefix"),
    Column("images", "Images", "int"),
)


@dataclass(frozen=True)
class _Scope:
    """The optional bucket/key-prefix restriction, as filter clauses for each index."""

    bucket: str | None
    prefix: str | None

    def image_filters(self) -> list[dict[str, Any]]:
        """Clauses for ``images``. ``s3key`` is text; its ``.keyword`` sub-field holds keys up to
        256 characters (``ignore_above``), so a folder prefix (``a/b/``) also matches through
        ``prefixes``, which has every folder of keys of any length."""
        clauses: list[dict[str, Any]] = []
        if self.bucket is not None:
            clauses.append({"term": {"s3bucket": self.bucket}})
        if self.prefix is not None:
            by_key: dict[str, Any] = {"prefix": {"s3key.keyword": self.prefix}}
            if self.prefix.endswith("/"):
                folder = {"term": {"prefixes": self.prefix}}
                clauses.append({"bool": {"should": [by_key, folder], "minimum_should_match": 1}})
            else:
                clauses.append(by_key)
        return clauses

    def failure_filters(self) -> list[dict[str, Any]]:
        """Clauses for ``images-failures``, where ``s3key`` is a plain keyword."""
        clauses: list[dict[str, Any]] = []
        if self.bucket is not None:
            clauses.append({"term": {"s3bucket": self.bucket}})
        if self.prefix is not None:
            clauses.append({"prefix": {"s3key": self.prefix}})
        return clauses

    def as_dict(self) -> dict[str, str]:
        scope = {"bucket": self.bucket, "prefix": self.prefix}
        return {name: value for name, value in scope.items() if value is not None}


def compute_report(
    es: Any,
    *,
    name: str,
    period: str,
    start: datetime,
    end: datetime,
    top_n: int = 15,
    prefix_depth: int = 1,
    bucket: str | None = None,
    prefix: str | None = None,
    moderation_limit: int = 200,
    now: datetime | None = None,
    duplicate_limit: int = 200,
) -> Report:
    """The report of ``[start, end)``: outcomes, top and new labels, moderation hits, images per
    hour and per bucket/prefix, and the interval's totals.

    :param top_n: rows of ``top_labels``.
    :param prefix_depth: folder depth of ``by_prefix`` (1: ``a/``, 2: ``a/b/``).
    :param bucket: only this bucket (every table and total).
    :param prefix: only keys that start with this (every table and total).
    :param moderation_limit: most documents listed in ``moderation_hits`` (newest first); the
        total is never capped.
    :param now: ``generated_at`` (default: the current UTC time).
    :param duplicate_limit: most documents listed in ``near_duplicates`` (newest first).
    """
    _validate(name, period, start, end, top_n, prefix_depth, moderation_limit, now)
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    scope = _Scope(bucket or None, prefix or None)

    documents = _documents_query(es, start, end, scope, top_n, prefix_depth)
    aggs = _aggregations(documents)
    failures = _failures_query(es, start, end, scope)
    interval_labels, labels_complete = _label_counts(aggs)
    seen_before = _labels_seen_before(es, start, scope, sorted(interval_labels))
    moderated_total = int(aggs.get("moderated", {}).get("doc_count", 0))
    moderation = _moderation_query(es, start, end, scope, moderation_limit)

    indexed = _total_hits(documents)
    outcomes, rejected, failed = _outcomes_table(indexed, _aggregations(failures))
    new_labels = _new_labels_table(interval_labels, seen_before, labels_complete)
    distinct = len(interval_labels) if labels_complete else int(aggs.get("distinct", {}).get("value") or 0)
    tables = (
        outcomes,
        _top_labels_table(aggs, top_n),
        new_labels,
        _moderation_table(moderation, moderated_total, moderation_limit),
        _per_hour_table(aggs, start, end),
        _by_prefix_table(aggs, prefix_depth),
        _near_duplicates_table(es, start, end, scope, duplicate_limit),
    )
    totals = Totals(
        indexed=indexed,
        rejected=rejected,
        failed=failed,
        moderation_hits=moderated_total,
        distinct_labels=distinct,
        new_labels=len(new_labels.rows),
        without_labels=int(aggs.get("without_labels", {}).get("doc_count", 0)),
    )
    generated_at = (now or datetime.now(UTC)).astimezone(UTC)
    return Report(name, period, start, end, generated_at, totals, tables, scope.as_dict())


def _validate(
    name: str,
    period: str,
    start: datetime,
    end: datetime,
    top_n: int,
    prefix_depth: int,
    moderation_limit: int,
    now: datetime | None,
) -> None:
    """Refuse arguments that would give a silently wrong report (a naive datetime would be read
    in the server's zone by nobody's intent; an empty interval has nothing to report)."""
    if not name:
        raise ValueError("a report needs a name")
    if period not in PERIODS:
        raise ValueError(f"unknown report period {period!r}; expected one of {', '.join(PERIODS)}")
    for label, value in (("start", start), ("end", end), ("now", now)):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError(f"{label} must be timezone-aware (e.g. tzinfo=UTC), got {value.isoformat()}")
    if start >= end:
        raise ValueError(f"start must be before end, got [{start.isoformat()}, {end.isoformat()})")
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    if prefix_depth < 1:
        raise ValueError(f"prefix_depth must be at least 1, got {prefix_depth}")
    if not 0 <= moderation_limit <= _MAX_MODERATION_LIMIT:
        raise ValueError(
            f"moderation_limit must be between 0 and {_MAX_MODERATION_LIMIT}, got {moderation_limit}"
        )


# --- queries -----------------------------------------------------------------------------------


def _interval(field: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Half-open ``[start, end)``: a document at exactly ``end`` belongs to the next report."""
    return {"range": {field: {"gte": start.isoformat(), "lt": end.isoformat()}}}


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _documents_query(
    es: Any, start: datetime, end: datetime, scope: _Scope, top_n: int, prefix_depth: int
) -> Mapping[str, Any]:
    """Search 1: every document-side figure in one round trip."""
    last_hour = _floor_hour(end - timedelta(milliseconds=1))
    aggs: dict[str, Any] = {
        # nested doc_count counts label objects; a labeler names a label once per image, so it
        # is the image count (reverse_nested, which would count parents, is not in noida-db).
        "labels": {
            "nested": {"path": "Labels"},
            "aggs": {
                "names": {
                    "terms": {
                        "field": "Labels.Name.keyword",
                        "size": top_n,
                        # ties by name, so the cut at top_n is the same on every run
                        "order": [{"_count": "desc"}, {"_key": "asc"}],
                    },
                    "aggs": {"confidence": {"avg": {"field": "Labels.Confidence"}}},
                }
            },
        },
        "label_names": {"terms": {"field": "label_names", "size": _MAX_TERMS}},
        # only used if the terms above were cut at _MAX_TERMS (then the count is approximate)
        "distinct": {"cardinality": {"field": "label_names"}},
        "moderated": {"filter": {"term": {"moderated": True}}},
        # an empty label_names list is no value at all: "does not exist"
        "without_labels": {"filter": {"bool": {"must_not": [{"exists": {"field": "label_names"}}]}}},
        "per_hour": {
            "date_histogram": {
                "field": "ingested_at",
                "fixed_interval": "1h",
                "min_doc_count": 0,
                "extended_bounds": {"min": _floor_hour(start).isoformat(), "max": last_hour.isoformat()},
            }
        },
        "buckets": {
            "terms": {"field": "s3bucket", "size": _MAX_TERMS},
            "aggs": {
                "prefixes": {
                    # Elasticsearch keeps only folders at this depth; noida-db ignores `include`,
                    # so _by_prefix_table filters again.
                    "terms": {
                        "field": "prefixes",
                        "size": _MAX_TERMS,
                        "include": f"([^/]*/){{{prefix_depth}}}",
                    }
                }
            },
        },
    }
    response: Mapping[str, Any] = es.search(
        index=INDEX_ALIAS,
        size=0,
        track_total_hits=True,
        query={"bool": {"filter": [_interval("ingested_at", start, end), *scope.image_filters()]}},
        aggs=aggs,
        **_IGNORE_MISSING,
    )
    return response


def _failures_query(es: Any, start: datetime, end: datetime, scope: _Scope) -> Mapping[str, Any]:
    """Search 2: failure records of the interval, split into permanent rejections
    (``retryable: false``) and retryable failures, each by reason."""
    by_reason = {"reasons": {"terms": {"field": "reason", "size": _MAX_TERMS}}}
    response: Mapping[str, Any] = es.search(
        index=FAILURES_INDEX,
        size=0,
        query={"bool": {"filter": [_interval("failed_at", start, end), *scope.failure_filters()]}},
        aggs={
            "outcome": {
                "filters": {
                    "filters": {
                        "rejected": {"term": {"retryable": False}},
                        "failed": {"term": {"retryable": True}},
                    }
                },
                "aggs": by_reason,
            }
        },
        **_IGNORE_MISSING,
    )
    return response


def _labels_seen_before(es: Any, start: datetime, scope: _Scope, labels: Sequence[str]) -> set[str]:
    """Search 3: which of ``labels`` are on some document (in scope) ingested before ``start``.

    Only documents with one of the labels match, and Elasticsearch returns only those labels'
    buckets (``include``); noida-db returns every label of those documents, which is harmless:
    the caller only asks whether each of ``labels`` is in the answer.
    """
    if not labels:
        return set()
    response = es.search(
        index=INDEX_ALIAS,
        size=0,
        query={
            "bool": {
                "filter": [
                    {"range": {"ingested_at": {"lt": start.isoformat()}}},
                    {"terms": {"label_names": list(labels)}},
                    *scope.image_filters(),
                ]
            }
        },
        aggs={"seen": {"terms": {"field": "label_names", "size": _MAX_TERMS, "include": list(labels)}}},
        **_IGNORE_MISSING,
    )
    return {str(b["key"]) for b in _aggregations(response).get("seen", {}).get("buckets", ())}


def _moderation_query(
    es: Any, start: datetime, end: datetime, scope: _Scope, limit: int
) -> Sequence[Mapping[str, Any]]:
    """Search 4: the newest ``limit`` moderated documents of the interval (their location,
    moderation labels and ingestion time); ties by location, so the page is stable."""
    if limit == 0:
        return []
    response = es.search(
        index=INDEX_ALIAS,
        size=limit,
        query={
            "bool": {
                "filter": [
                    _interval("ingested_at", start, end),
                    {"term": {"moderated": True}},
                    *scope.image_filters(),
                ]
            }
        },
        sort=[{"ingested_at": {"order": "desc"}}, {"s3_location": {"order": "asc"}}],
        source=["s3_location", "ModerationLabels", "ingested_at"],
        **_IGNORE_MISSING,
    )
    hits: Sequence[Mapping[str, Any]] = response.get("hits", {}).get("hits", [])
    return hits


def _near_duplicates_table(es: Any, start: datetime, end: datetime, scope: _Scope, limit: int) -> Table:
    """``near_duplicates``: the interval's documents that nearly duplicate an image indexed before
    them (the flag set at index time), newest first, with the original's location."""
    response = es.search(
        index=INDEX_ALIAS,
        size=limit,
        query={
            "bool": {
                "filter": [
                    _interval("ingested_at", start, end),
                    {"exists": {"field": "visual.near_duplicate_of"}},
                    *scope.image_filters(),
                ]
            }
        },
        sort=[{"ingested_at": {"order": "desc"}}, {"s3_location": {"order": "asc"}}],
        source=["s3_location", "visual.near_duplicate_of"],
        track_total_hits=True,
        **_IGNORE_MISSING,
    )
    hits: Sequence[Mapping[str, Any]] = response.get("hits", {}).get("hits", [])
    originals = sorted({str(hit["_source"]["visual"]["near_duplicate_of"]) for hit in hits})
    where: dict[str, str] = {}
    if originals:
        found = es.search(
            index=INDEX_ALIAS,
            size=len(originals),
            query={"ids": {"values": originals}},
            source=["s3_location"],
            **_IGNORE_MISSING,
        )
        where = {str(h["_id"]): str(h["_source"]["s3_location"]) for h in found["hits"]["hits"]}
    rows = [
        (
            str(hit["_source"]["s3_location"]),
            where.get(str(hit["_source"]["visual"]["near_duplicate_of"]), "(no longer indexed)"),
            _moment(hit["sort"][0]),
            detail_view(hit),
        )
        for hit in hits
    ]
    total = _total_hits(response)
    note = f"capped: showing the newest {len(hits)} of {total} near duplicates" if total > len(hits) else ""
    return table("near_duplicates", "Near duplicates", NEAR_DUPLICATE_COLUMNS, rows, note)


# --- answers -> tables -------------------------------------------------------------------------


def _aggregations(response: Mapping[str, Any]) -> Mapping[str, Any]:
    """The aggregations of a response; a search over no index at all may have none."""
    aggs: Mapping[str, Any] = response.get("aggregations") or {}
    return aggs


def _total_hits(response: Mapping[str, Any]) -> int:
    total = response.get("hits", {}).get("total", 0)
    return int(total["value"] if isinstance(total, Mapping) else total)


def _sorted_counts(buckets: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """``(key, doc_count)`` by count desc, then key, whatever order the server used."""
    counts = [(str(b["key"]), int(b["doc_count"])) for b in buckets]
    return sorted(counts, key=lambda item: (-item[1], item[0]))


def _outcomes_table(indexed: int, failure_aggs: Mapping[str, Any]) -> tuple[Table, int, int]:
    """``outcomes`` from searches 1 and 2, with the rejected and failed totals. A record without
    a reason (the mapping does not require one) is counted under ``(unknown)``."""
    rows: list[tuple[str, str, int]] = [("indexed", "", indexed)]
    totals: dict[str, int] = {}
    outcome_buckets = failure_aggs.get("outcome", {}).get("buckets", {})
    for outcome in ("rejected", "failed"):
        bucket = outcome_buckets.get(outcome, {})
        count = int(bucket.get("doc_count", 0))
        reasons = _sorted_counts(bucket.get("reasons", {}).get("buckets", ()))
        unknown = count - sum(n for _, n in reasons)
        if unknown > 0:
            reasons.append(("(unknown)", unknown))
        rows += [(outcome, reason, n) for reason, n in reasons]
        totals[outcome] = count
    return table("outcomes", "Images by outcome", OUTCOME_COLUMNS, rows), totals["rejected"], totals["failed"]


def _top_labels_table(aggs: Mapping[str, Any], top_n: int) -> Table:
    """``top_labels`` from search 1 (nested terms on ``Labels.Name.keyword`` with the average
    confidence)."""
    buckets = aggs.get("labels", {}).get("names", {}).get("buckets", ())
    confidence = {str(b["key"]): float(b.get("confidence", {}).get("value") or 0.0) for b in buckets}
    ranked = _sorted_counts(buckets)[:top_n]
    rows = [
        (rank, label, images, round(confidence[label], 1))
        for rank, (label, images) in enumerate(ranked, start=1)
    ]
    return table("top_labels", "Top labels", TOP_LABEL_COLUMNS, rows)


def _label_counts(aggs: Mapping[str, Any]) -> tuple[dict[str, int], bool]:
    """Images per label name (with parents) in the interval, from search 1, and whether that is
    every label (False if the terms aggregation was cut at ``_MAX_TERMS``)."""
    answer = aggs.get("label_names", {})
    counts = dict(_sorted_counts(answer.get("buckets", ())))
    return counts, int(answer.get("sum_other_doc_count", 0)) == 0


def _new_labels_table(interval_labels: Mapping[str, int], seen_before: set[str], complete: bool) -> Table:
    """``new_labels``: labels of the interval (search 1) not seen before ``start`` (search 3)."""
    rows = sorted(
        ((label, images) for label, images in interval_labels.items() if label not in seen_before),
        key=lambda row: (-row[1], row[0]),
    )
    note = "" if complete else f"only the {_MAX_TERMS} most frequent labels of the interval were checked"
    return table("new_labels", "Labels new in this interval", NEW_LABEL_COLUMNS, rows, note)


def _moment(millis: Any) -> datetime:
    """An Elasticsearch date sort value (epoch milliseconds) as an aware UTC datetime; read from
    the sort value rather than ``_source`` so any stored date format gives the same answer."""
    return _EPOCH + timedelta(milliseconds=int(millis))


def detail_view(hit: Mapping[str, Any]) -> str:
    """The Image search page's detail view of a hit's image (any key, no expiry, for signed-in
    Airflow users), or ``""`` where the UI's base URL is not known
    (:func:`imagelabels.search.queries.ui_base_url`)."""
    from imagelabels.search.queries import image_page_url

    return image_page_url(str(hit.get("_id") or "")) or ""


def _moderation_table(hits: Sequence[Mapping[str, Any]], total: int, limit: int) -> Table:
    """``moderation_hits`` from search 4: one row per (document, moderation label), documents
    newest first, labels by confidence; the note says when documents were left out."""
    rows: list[tuple[str, str, float, datetime, str]] = []
    for hit in hits:
        source = hit.get("_source", {})
        ingested_at = _moment(hit["sort"][0])
        link = detail_view(hit)
        labels = sorted(
            ((str(m["Name"]), float(m["Confidence"])) for m in source.get("ModerationLabels") or ()),
            key=lambda item: (-item[1], item[0]),
        )
        rows += [(str(source.get("s3_location", "")), name, conf, ingested_at, link) for name, conf in labels]
    note = ""
    if total > len(hits):
        note = (
            f"capped: showing the newest {len(hits)} of {total} moderated images (moderation_limit {limit})"
        )
    return table("moderation_hits", "Moderation hits", MODERATION_COLUMNS, rows, note)


def _per_hour_table(aggs: Mapping[str, Any], start: datetime, end: datetime) -> Table:
    """``images_per_hour`` from search 1's date_histogram, with every hour of the interval
    present: empty hours are filled here too, so the rows never depend on a server honouring
    ``extended_bounds``."""
    counts = {int(b["key"]): int(b["doc_count"]) for b in aggs.get("per_hour", {}).get("buckets", ())}
    rows: list[tuple[datetime, int]] = []
    hour = _floor_hour(start)
    while hour < end:
        rows.append((hour, counts.get(int((hour - _EPOCH).total_seconds()) * 1000, 0)))
        hour += timedelta(hours=1)
    return table("images_per_hour", "Images per hour", PER_HOUR_COLUMNS, rows)


def _by_prefix_table(aggs: Mapping[str, Any], depth: int) -> Table:
    """``by_prefix`` from search 1: per bucket, the folders exactly ``depth`` deep; a document
    has at most one such folder, so the bucket's remaining documents have none and are counted
    as ``(root)``."""
    rows: list[tuple[str, str, int]] = []
    for bucket in aggs.get("buckets", {}).get("buckets", ()):
        name = str(bucket["key"])
        folders = [
            (str(b["key"]), int(b["doc_count"]))
            for b in bucket.get("prefixes", {}).get("buckets", ())
            if str(b["key"]).count("/") == depth
        ]
        rows += [(name, folder, images) for folder, images in folders]
        root = int(bucket["doc_count"]) - sum(images for _, images in folders)
        if root > 0:
            rows.append((name, ROOT_PREFIX, root))
    rows.sort(key=lambda row: (-row[2], row[0], row[1]))
    return table("by_prefix", "Images by bucket and prefix", BY_PREFIX_COLUMNS, rows)
