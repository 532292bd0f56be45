"""Reading and writing what the alert indices keep: each rule's state and its firing records.

Every write the evaluation depends on goes through here, so the delivery guarantee described in
:mod:`imagelabels.alerts.evaluate` rests on few, small functions:

* a rule's state document (checkpoint, cursor, throttle start): :func:`read_state`,
  :func:`save_state`, :func:`advance_last_notified`;
* firing records: created once (:func:`create_records`, a 409 means "already fired"), read back
  while pending (:func:`pending_records`, :func:`suppressed_count`) and marked throttled or
  delivered (:func:`mark_throttled`, :func:`mark_delivered`).

A write that fails raises :class:`~imagelabels.alerts.model.AlertError`: the evaluation stops
rather than notify something it did not record. Rules are passed by name, so this module needs
only :mod:`~imagelabels.alerts.mappings` and :mod:`~imagelabels.alerts.model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from imagelabels.alerts.mappings import ALERTS_INDEX, STATE_INDEX
from imagelabels.alerts.model import AlertError, PendingRecord, parse_time

# At most this many pending records go into one notification.
MAX_PENDING = 1000


# --- rule state ---------------------------------------------------------------------------------


def read_state(es: Any, rule: str) -> dict[str, Any]:
    """The state document of the rule named ``rule``; empty when it was never evaluated."""
    from imagelabels.engine import NotFoundError

    try:
        source: dict[str, Any] = es.get(index=STATE_INDEX, id=rule)["_source"]
    except NotFoundError:
        return {}
    return source


def save_state(es: Any, rule: str, **fields: Any) -> None:
    """Update the rule's state document (``None`` clears a field)."""
    document: dict[str, Any] = {"rule": rule}
    document.update(
        {key: value.isoformat() if isinstance(value, datetime) else value for key, value in fields.items()}
    )
    es.update(
        index=STATE_INDEX,
        id=rule,
        doc=document,
        doc_as_upsert=True,
        refresh="wait_for",
    )


def advance_last_notified(es: Any, rule: str, when: datetime) -> None:
    """Start the throttle at ``when`` - never move it back (a rerun of an older evaluation)."""
    from imagelabels.engine import NotFoundError

    try:
        previous = parse_time(es.get(index=STATE_INDEX, id=rule)["_source"].get("last_notified_at"))
    except NotFoundError:
        previous = None
    if previous is None or when > previous:
        save_state(es, rule, last_notified_at=when)


# --- firing records -----------------------------------------------------------------------------


def create_records(es: Any, records: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Create firing records; the ids that were new (a 409 means it fired before)."""
    if not records:
        return []
    operations: list[dict[str, Any]] = []
    for record_id, document in records:
        operations.append({"create": {"_index": ALERTS_INDEX, "_id": record_id}})
        operations.append(document)
    response = es.bulk(operations=operations, refresh="wait_for")
    created: list[str] = []
    failures: list[str] = []
    for (record_id, _), item in zip(records, response["items"], strict=True):
        info = item["create"]
        status = int(info.get("status", 0))
        if 200 <= status < 300:
            created.append(record_id)
        elif status != 409:
            failures.append(f"{record_id}: HTTP {status} {info.get('error')}")
    if failures:
        raise AlertError(f"could not record {len(failures)} firing(s): {'; '.join(failures[:3])}")
    return created


def pending_records(es: Any, rule: str) -> list[dict[str, Any]]:
    """Records of ``rule`` neither notified nor throttled, oldest first (with ``_id``)."""
    response = es.search(
        index=ALERTS_INDEX,
        query={
            "bool": {
                "filter": [
                    {"term": {"rule": rule}},
                    {"term": {"notified": False}},
                    {"term": {"throttled": False}},
                ]
            }
        },
        sort=[{"fired_at": {"order": "asc"}}],
        size=MAX_PENDING,
    )
    return [{"_id": hit["_id"], **hit["_source"]} for hit in response["hits"]["hits"]]


def suppressed_count(es: Any, rule: str, since: datetime | None) -> int:
    """Firings of ``rule`` throttled since its last notification."""
    filters: list[dict[str, Any]] = [{"term": {"rule": rule}}, {"term": {"throttled": True}}]
    if since is not None:
        filters.append({"range": {"fired_at": {"gt": since.isoformat()}}})
    return int(es.count(index=ALERTS_INDEX, query={"bool": {"filter": filters}})["count"])


def mark_throttled(es: Any, records: Sequence[Mapping[str, Any]]) -> None:
    """Flag ``records`` as held by the rule's throttle (counted as suppressed later)."""
    if not records:
        return
    operations: list[dict[str, Any]] = []
    for record in records:
        operations.append({"update": {"_index": ALERTS_INDEX, "_id": record["_id"]}})
        operations.append({"doc": {"throttled": True}})
    _check_bulk(es.bulk(operations=operations, refresh="wait_for"), "mark firings throttled")


def mark_delivered(
    es: Any,
    records: Sequence[Mapping[str, Any] | PendingRecord],
    *,
    delivered_now: Sequence[str],
    complete: bool,
    now: datetime,
) -> None:
    """Add ``delivered_now`` to each record's ``delivered`` channels; when ``complete``, also
    mark it ``notified`` at ``now``."""
    operations: list[dict[str, Any]] = []
    for record in records:
        if isinstance(record, PendingRecord):
            record_id, before = record.record_id, record.delivered
        else:
            record_id, before = str(record["_id"]), tuple(record.get("delivered") or ())
        doc: dict[str, Any] = {"delivered": sorted({*before, *delivered_now})}
        if complete:
            doc.update(notified=True, notified_at=now.isoformat())
        operations.append({"update": {"_index": ALERTS_INDEX, "_id": record_id}})
        operations.append({"doc": doc})
    if operations:
        _check_bulk(es.bulk(operations=operations, refresh="wait_for"), "mark firings notified")


def _check_bulk(response: Mapping[str, Any], what: str) -> None:
    errors = [
        f"{info.get('_id')}: {info.get('error')}"
        for item in response.get("items", [])
        for info in item.values()
        if int(info.get("status", 0)) >= 300
    ]
    if errors:
        raise AlertError(f"could not {what}: {'; '.join(errors[:3])}")
