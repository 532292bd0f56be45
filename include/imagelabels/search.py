"""The first seed's three questions, asked of the ``images`` alias.

* Which images represent X?                    :func:`images_with_label`
* What does image T represent?                 :func:`describe_image`
* Which images represent X with >= 90 %?       :func:`images_with_label` with ``min_confidence``

Label and confidence are matched inside the *same* nested label object, so an image with Pizza
at 60 % and Waterfall at 95 % is not an answer to "Pizza >= 90 %". User input only ever goes into
structured query clauses, never into a query string.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imagelabels.documents import INDEX_ALIAS


@dataclass(frozen=True)
class Hit:
    """One image in an answer, with the confidence of the label that matched (if any)."""

    title: str
    s3_location: str
    confidence: float | None
    labels: list[tuple[str, float]]
    parents: dict[str, list[str]] = field(default_factory=dict)
    moderation: list[tuple[str, float]] = field(default_factory=list)


def label_query(label: str, min_confidence: float | None = None) -> dict[str, Any]:
    """Nested query: a label named ``label`` (analyzed match, all words), optionally at or above
    ``min_confidence``, scored by that label's confidence as in the second seed's queries."""
    must: list[dict[str, Any]] = [{"match": {"Labels.Name": {"query": label, "operator": "and"}}}]
    if min_confidence is not None:
        must.append({"range": {"Labels.Confidence": {"gte": float(min_confidence)}}})
    return {
        "nested": {
            "path": "Labels",
            "score_mode": "max",
            "inner_hits": {"size": 1},
            "query": {
                "function_score": {
                    "query": {"bool": {"must": must}},
                    "field_value_factor": {"field": "Labels.Confidence"},
                    "boost_mode": "replace",
                }
            },
        }
    }


def _hit(raw: dict[str, Any]) -> Hit:
    source = raw["_source"]
    inner = raw.get("inner_hits", {}).get("Labels", {}).get("hits", {}).get("hits", [])
    confidence = float(inner[0]["_source"]["Confidence"]) if inner else None
    labels = [(label["Name"], float(label["Confidence"])) for label in source.get("Labels", [])]
    parents = {
        label["Name"]: [parent["Name"] for parent in label.get("Parents", [])]
        for label in source.get("Labels", [])
    }
    moderation = [(m["Name"], float(m["Confidence"])) for m in source.get("ModerationLabels", [])]
    return Hit(source["title"], source["s3_location"], confidence, labels, parents, moderation)


def images_with_label(
    es: Any, label: str, *, min_confidence: float | None = None, size: int = 20, index: str = INDEX_ALIAS
) -> list[Hit]:
    """Images showing ``label``, most confident first."""
    response = es.search(
        index=index,
        query=label_query(label, min_confidence),
        size=size,
        source=["title", "s3_location", "Labels"],
    )
    return [_hit(raw) for raw in response["hits"]["hits"]]


def describe_image(es: Any, title_or_key: str, *, index: str = INDEX_ALIAS) -> list[Hit]:
    """The labels of the image(s) whose title or S3 key is exactly ``title_or_key``."""
    response = es.search(
        index=index,
        query={
            "bool": {
                "should": [
                    {"term": {"title.keyword": title_or_key}},
                    {"term": {"s3key.keyword": title_or_key}},
                ],
                "minimum_should_match": 1,
            }
        },
        size=10,
        source=["title", "s3_location", "Labels"],
    )
    return [_hit(raw) for raw in response["hits"]["hits"]]


def top_labels(es: Any, *, size: int = 10, index: str = INDEX_ALIAS) -> list[tuple[str, int]]:
    """The most frequent labels (flat ``label_names`` field), with image counts."""
    response = es.search(
        index=index, size=0, aggs={"labels": {"terms": {"field": "label_names", "size": size}}}
    )
    return [
        (bucket["key"], int(bucket["doc_count"])) for bucket in response["aggregations"]["labels"]["buckets"]
    ]
