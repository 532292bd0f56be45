"""The two alert indices: their names, their strict mappings and their creation.

This module owns the storage layout every other alerts module writes to or reads from, so a
field added to a firing record or to a rule's state is declared in exactly one place:

* ``images-alerts`` (:data:`ALERTS_INDEX`) - one record per firing, ``_id`` = rule name +
  document id (per-image rules) or rule name + window (window rules), written with
  ``op_type=create``: a 409 means "already fired";
* ``images-alert-state`` (:data:`STATE_INDEX`) - one document per rule: the ingestion
  checkpoint, the cursor of a capped read and when the rule last notified (its throttle).

It imports no other alerts module: it is the root of their dependency order.
"""

from __future__ import annotations

from typing import Any

ALERTS_INDEX = "images-alerts"
STATE_INDEX = "images-alert-state"

_KEYWORD: dict[str, Any] = {"type": "keyword"}
_DATE: dict[str, Any] = {"type": "date"}

ALERT_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "rule": _KEYWORD,
        "type": _KEYWORD,
        "severity": _KEYWORD,
        "image": {
            "properties": {
                "document_id": _KEYWORD,
                "s3_location": _KEYWORD,
                "bucket": _KEYWORD,
                "key": _KEYWORD,
                "ingested_at": _DATE,
            }
        },
        "matches": {"properties": {"label": _KEYWORD, "confidence": {"type": "float"}, "parent": _KEYWORD}},
        "window": {"properties": {"start": _DATE, "end": _DATE}},
        "count": {"type": "long"},
        "detail": {"type": "text"},
        "fired_at": _DATE,
        "notified": {"type": "boolean"},
        "notified_at": _DATE,
        "throttled": {"type": "boolean"},
        "delivered": _KEYWORD,
    },
}

STATE_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "rule": _KEYWORD,
        "checkpoint": _DATE,
        # where a read stopped by MAX_MATCHES resumes: its lower bound and the last sort values
        "cursor_since": _DATE,
        "cursor_at": {"type": "long"},
        "cursor_location": _KEYWORD,
        "last_notified_at": _DATE,
        "evaluated_at": _DATE,
    },
}


def ensure_alert_indices(es: Any) -> None:
    """Create the firing and state indices (strict mappings) when missing; concurrent callers
    are tolerated."""
    from imagelabels.engine.indexing import ensure_index

    for index, mappings in ((ALERTS_INDEX, ALERT_MAPPINGS), (STATE_INDEX, STATE_MAPPINGS)):
        ensure_index(es, index, mappings)  # fields added since creation are added in place
