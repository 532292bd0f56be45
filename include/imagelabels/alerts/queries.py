"""The engine queries that measure a rule against the images index.

Everything a rule asks of the labeled images lives here - which documents match a per-image
rule (read page by page, capped), how many images a window holds, when the newest image in scope
arrived - together with the exact label check that confirms a match. Keeping the query DSL in one
module means the firing logic in :mod:`imagelabels.alerts.firing` reads as decisions, and a query
can be checked on its own against either engine.

:data:`PAGE_SIZE` and :data:`MAX_MATCHES` are read at call time (tests lower them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from imagelabels.alerts.model import Match, parse_time
from imagelabels.alerts.rules import LabelCountRule, LabelRule, ModerationRule, Rule
from imagelabels.documents import INDEX_ALIAS

# Per rule and evaluation: at most this many matches are read, page by page (the next evaluation
# resumes after the last one).
MAX_MATCHES = 10_000
PAGE_SIZE = 500


# --- clauses ------------------------------------------------------------------------------------


def scope(rule: Rule) -> list[dict[str, Any]]:
    """Filters for the rule's bucket and key prefix."""
    clauses: list[dict[str, Any]] = []
    if rule.bucket:
        clauses.append({"term": {"s3bucket": rule.bucket}})
    if rule.prefix:
        clauses.append({"prefix": {"s3key.keyword": rule.prefix}})
    return clauses


def label_clause(label: str, min_confidence: float | None) -> dict[str, Any]:
    """ONE nested ``Labels`` object with the exact name (any case) and, when given, a confidence
    at or above ``min_confidence`` - so Pizza 60 % next to Waterfall 95 % is not "Pizza >= 90"."""
    inner: list[dict[str, Any]] = [
        {"term": {"Labels.Name.keyword": {"value": label, "case_insensitive": True}}}
    ]
    if min_confidence is not None:
        inner.append({"range": {"Labels.Confidence": {"gte": float(min_confidence)}}})
    return {"nested": {"path": "Labels", "query": {"bool": {"filter": inner}}}}


def moderation_clause(rule: ModerationRule) -> dict[str, Any]:
    """ONE nested ``ModerationLabels`` object at or above the confidence, named as one of the
    categories or under one of them (``ParentName``)."""
    inner: list[dict[str, Any]] = [
        {"range": {"ModerationLabels.Confidence": {"gte": float(rule.min_confidence)}}}
    ]
    if rule.categories:
        names = [
            {"term": {field: {"value": category, "case_insensitive": True}}}
            for category in rule.categories
            for field in ("ModerationLabels.Name.keyword", "ModerationLabels.ParentName")
        ]
        inner.append({"bool": {"should": names, "minimum_should_match": 1}})
    return {"nested": {"path": "ModerationLabels", "query": {"bool": {"filter": inner}}}}


def per_image_query(rule: LabelRule | ModerationRule, since: datetime, now: datetime) -> dict[str, Any]:
    """Documents in the rule's scope ingested in ``[since, now]`` with a label that matches."""
    clause = (
        label_clause(rule.label, rule.min_confidence)
        if isinstance(rule, LabelRule)
        else moderation_clause(rule)
    )
    return {
        "bool": {
            "filter": [
                clause,
                {"range": {"ingested_at": {"gte": since.isoformat(), "lte": now.isoformat()}}},
                *scope(rule),
            ]
        }
    }


# --- per-image rules ----------------------------------------------------------------------------


def matching_hits(
    es: Any, query: dict[str, Any], after: list[Any] | None
) -> tuple[list[dict[str, Any]], bool]:
    """The documents matching ``query`` in ingestion order after the sort values ``after``, page
    by page (``search_after`` on ``ingested_at`` then ``s3_location``); whether it stopped at
    :data:`MAX_MATCHES`."""
    hits: list[dict[str, Any]] = []
    while len(hits) < MAX_MATCHES:
        request: dict[str, Any] = {
            "index": INDEX_ALIAS,
            "query": query,
            "sort": [{"ingested_at": {"order": "asc"}}, {"s3_location": {"order": "asc"}}],
            "source": ["s3_location", "s3bucket", "s3key", "Labels", "ModerationLabels", "ingested_at"],
            "size": PAGE_SIZE,
        }
        if after is not None:
            request["search_after"] = after
        page = es.search(**request)["hits"]["hits"]
        if after is not None:  # noida-db may repeat the last hit of the previous page
            page = [hit for hit in page if _sort_key(hit["sort"]) > _sort_key(after)]
        if not page:
            return hits, False
        hits.extend(page)
        after = list(page[-1]["sort"])
        if len(page) < PAGE_SIZE:
            return hits, False
    return hits, True


def _sort_key(sort: Sequence[Any]) -> tuple[int, str]:
    return int(sort[0]), str(sort[1])


def rule_matches(rule: LabelRule | ModerationRule, source: Mapping[str, Any]) -> tuple[Match, ...]:
    """The labels of a matched document that satisfy the rule (for the record and the message)."""
    if isinstance(rule, LabelRule):
        wanted = rule.label.casefold()
        return tuple(
            Match(str(label["Name"]), float(label["Confidence"]))
            for label in source.get("Labels") or ()
            if str(label.get("Name", "")).casefold() == wanted
            and float(label.get("Confidence", 0.0)) >= rule.min_confidence
        )
    categories = {category.casefold() for category in rule.categories}
    return tuple(
        Match(str(label["Name"]), float(label["Confidence"]), str(label.get("ParentName") or ""))
        for label in source.get("ModerationLabels") or ()
        if float(label.get("Confidence", 0.0)) >= rule.min_confidence
        and (
            not categories
            or str(label.get("Name", "")).casefold() in categories
            or str(label.get("ParentName") or "").casefold() in categories
        )
    )


# --- window rules -------------------------------------------------------------------------------


def count_labeled(es: Any, rule: LabelCountRule, start: datetime, end: datetime) -> int:
    """Images in the rule's scope with its label, ingested in ``[start, end)``."""
    return int(
        es.count(
            index=INDEX_ALIAS,
            query={
                "bool": {
                    "filter": [
                        label_clause(rule.label, rule.min_confidence),
                        {"range": {"ingested_at": {"gte": start.isoformat(), "lt": end.isoformat()}}},
                        *scope(rule),
                    ]
                }
            },
        )["count"]
    )


def newest_ingested(es: Any, rule: Rule, now: datetime) -> datetime | None:
    """When the newest document in the rule's scope was ingested, up to ``now``; ``None`` when
    there is none."""
    response = es.search(
        index=INDEX_ALIAS,
        query={"bool": {"filter": [{"range": {"ingested_at": {"lte": now.isoformat()}}}, *scope(rule)]}},
        sort=[{"ingested_at": {"order": "desc"}}],
        source=["ingested_at"],
        size=1,
    )
    hits = response["hits"]["hits"]
    return parse_time(hits[0]["_source"].get("ingested_at")) if hits else None
