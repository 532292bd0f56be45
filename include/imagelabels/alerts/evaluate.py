"""Evaluate alert rules against the images index: firings recorded once, notifications throttled.

Two indices keep everything an evaluation needs, so any worker (or a rerun of an old DAG run)
can evaluate and the results are the same:

* ``images-alerts`` - one record per firing, ``_id`` = rule name + document id (per-image rules)
  or rule name + window (window rules), written with ``op_type=create``: a 409 means "already
  fired", so an image never fires the same rule twice, across reruns and overlapping runs.
* ``images-alert-state`` - one document per rule: the ingestion checkpoint and when the rule last
  notified (its throttle).

Delivery guarantee (record, send, mark):

1. :func:`evaluate_rules` records new firings first, then builds notifications from *every*
   record of the rule that is neither notified nor throttled - new ones and ones a failed send
   left behind;
2. the caller sends them (:func:`imagelabels.alerts.notify.send_notification`);
3. :func:`mark_notified` adds the channels that succeeded to each record's ``delivered`` and sets
   ``notified`` once every channel of the notification got it.

A channel that failed is retried by the next evaluation, and only that channel: a record that
some channels already got is re-sent to the missing ones alone, outside the throttle (it is the
same notification, late). So nothing is lost and nothing is sent twice - except when the process
dies between a successful send and :func:`mark_notified`, where the next evaluation sends again
(at least once, never zero times).

Throttle: at most one (new) notification per rule per ``throttle``. Firings inside the period
are recorded with ``throttled=true``; the first notification after the period says how many were
suppressed since the previous one - and goes out even when nothing new fired, so a burst is never
reported as a single image.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from imagelabels.alerts.rules import (
    LabelCountRule,
    LabelRule,
    ModerationRule,
    NoIngestionRule,
    Rule,
)
from imagelabels.documents import INDEX_ALIAS

logger = logging.getLogger("imagelabels.alerts")

ALERTS_INDEX = "images-alerts"
STATE_INDEX = "images-alert-state"

# Re-read this much before the checkpoint: documents indexed just before the last evaluation but
# not yet visible to its search (refresh interval, slow bulk) are caught; dedup makes it safe.
LOOKBACK = timedelta(minutes=10)
# How far back a rule's first evaluation looks: a new rule alerts on what arrives from now on,
# not on the whole archive.
FIRST_LOOKBACK = timedelta(hours=1)
# Per rule and evaluation: at most this many matches are read, page by page (the next evaluation
# resumes after the last one), and at most this many pending records go into one notification.
MAX_MATCHES = 10_000
PAGE_SIZE = 500
MAX_PENDING = 1000
# Images listed in one notification; the rest are "and K more".
LIST_LIMIT = 10

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


class AlertError(RuntimeError):
    """Firings or state could not be written; the evaluation stops rather than notify unrecorded."""


@dataclass(frozen=True)
class Match:
    """One label (or moderation label) of an image that made a rule fire."""

    label: str
    confidence: float
    parent: str = ""


@dataclass(frozen=True)
class AlertImage:
    """An image in a notification: where it is, what matched, and a presigned link to it."""

    document_id: str
    s3_location: str
    bucket: str
    key: str
    matches: tuple[Match, ...]
    url: str | None = None


@dataclass(frozen=True)
class PendingRecord:
    """A firing record a notification carries, with the channels that already got it."""

    record_id: str
    delivered: tuple[str, ...] = ()


@dataclass(frozen=True)
class Notification:
    """One message to send for one rule.

    ``images`` lists at most :data:`LIST_LIMIT` images (``more`` counts the rest); ``suppressed``
    counts firings throttled since the rule's previous notification; ``detail`` describes a
    window rule's firing. ``retry`` marks a re-send of records some channels already got, to the
    ``channels`` that did not.
    """

    id: str
    rule: str
    rule_type: str
    severity: str
    subject: str
    text: str
    channels: tuple[str, ...]
    evaluated_at: datetime
    images: tuple[AlertImage, ...] = ()
    more: int = 0
    suppressed: int = 0
    detail: str = ""
    description: str = ""
    retry: bool = False
    records: tuple[PendingRecord, ...] = field(default=(), repr=False)

    def payload(self) -> dict[str, Any]:
        """The notification as JSON-ready data (the webhook body)."""
        return {
            "rule": self.rule,
            "type": self.rule_type,
            "severity": self.severity,
            "subject": self.subject,
            "text": self.text,
            "evaluated_at": self.evaluated_at.isoformat(),
            "detail": self.detail,
            "description": self.description,
            "images": [asdict(image) for image in self.images],
            "more": self.more,
            "suppressed": self.suppressed,
            "retry": self.retry,
        }


# --- indices and state --------------------------------------------------------------------------


def ensure_alert_indices(es: Any) -> None:
    """Create the firing and state indices (strict mappings) when missing; concurrent callers
    are tolerated."""
    from imagelabels.engine.indexing import ensure_index

    for index, mappings in ((ALERTS_INDEX, ALERT_MAPPINGS), (STATE_INDEX, STATE_MAPPINGS)):
        ensure_index(es, index, mappings)  # fields added since creation are added in place


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware datetime (UTC)")
    return value.astimezone(UTC)


def _parse(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _state(es: Any, rule: Rule) -> dict[str, Any]:
    from imagelabels.engine import NotFoundError

    try:
        source: dict[str, Any] = es.get(index=STATE_INDEX, id=rule.name)["_source"]
    except NotFoundError:
        return {}
    return source


def _save_state(es: Any, rule: str, **fields: Any) -> None:
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


# --- queries ------------------------------------------------------------------------------------


def _scope(rule: Rule) -> list[dict[str, Any]]:
    """Filters for the rule's bucket and key prefix."""
    clauses: list[dict[str, Any]] = []
    if rule.bucket:
        clauses.append({"term": {"s3bucket": rule.bucket}})
    if rule.prefix:
        clauses.append({"prefix": {"s3key.keyword": rule.prefix}})
    return clauses


def _label_clause(label: str, min_confidence: float | None) -> dict[str, Any]:
    """ONE nested ``Labels`` object with the exact name (any case) and, when given, a confidence
    at or above ``min_confidence`` - so Pizza 60 % next to Waterfall 95 % is not "Pizza >= 90"."""
    inner: list[dict[str, Any]] = [
        {"term": {"Labels.Name.keyword": {"value": label, "case_insensitive": True}}}
    ]
    if min_confidence is not None:
        inner.append({"range": {"Labels.Confidence": {"gte": float(min_confidence)}}})
    return {"nested": {"path": "Labels", "query": {"bool": {"filter": inner}}}}


def _moderation_clause(rule: ModerationRule) -> dict[str, Any]:
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


def _matches(rule: LabelRule | ModerationRule, source: Mapping[str, Any]) -> tuple[Match, ...]:
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


def firing_id(rule: str, key: str) -> str:
    """The deterministic ``_id`` of a firing: rule name + document id (or window). Readable, and
    within ES's 512-byte limit (names are at most 100 characters, document ids 64)."""
    material = f"{rule}:{key}"
    if len(material.encode()) <= 512:
        return material
    return f"{rule}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _create_records(es: Any, records: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
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


def _base_record(rule: Rule, now: datetime) -> dict[str, Any]:
    return {
        "rule": rule.name,
        "type": rule.type,
        "severity": rule.severity,
        "fired_at": now.isoformat(),
        "notified": False,
        "throttled": False,
        "delivered": [],
    }


# --- firing -------------------------------------------------------------------------------------


def _matching_hits(
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


def _fire_per_image(
    es: Any, rule: LabelRule | ModerationRule, state: Mapping[str, Any], now: datetime
) -> None:
    """Record a firing for every document ingested since the checkpoint (minus the lookback)
    that matches, and move the checkpoint to ``now``.

    When :data:`MAX_MATCHES` stops the reading, the state keeps a cursor (the read's lower bound
    and the last sort values) and the next evaluation resumes there, without the lookback: a
    re-read of the overlap could otherwise hit the cap again and never get further.
    """
    checkpoint = _parse(state.get("checkpoint"))
    since = (checkpoint - LOOKBACK) if checkpoint else now - FIRST_LOOKBACK
    after: list[Any] | None = None
    resume_since = _parse(state.get("cursor_since"))
    if resume_since is not None and state.get("cursor_at") is not None:
        since = resume_since
        after = [int(state["cursor_at"]), str(state.get("cursor_location") or "")]
    clause = (
        _label_clause(rule.label, rule.min_confidence)
        if isinstance(rule, LabelRule)
        else _moderation_clause(rule)
    )
    query = {
        "bool": {
            "filter": [
                clause,
                {"range": {"ingested_at": {"gte": since.isoformat(), "lte": now.isoformat()}}},
                *_scope(rule),
            ]
        }
    }
    hits, truncated = _matching_hits(es, query, after)
    records: list[tuple[str, dict[str, Any]]] = []
    for hit in hits:
        source = hit["_source"]
        matches = _matches(rule, source)
        if not matches:  # the query and the exact check disagree (e.g. a name's case folding)
            continue
        record = _base_record(rule, now)
        record["image"] = {
            "document_id": hit["_id"],
            "s3_location": source.get("s3_location"),
            "bucket": source.get("s3bucket"),
            "key": source.get("s3key"),
            "ingested_at": source.get("ingested_at"),
        }
        record["matches"] = [asdict(match) for match in matches]
        records.append((firing_id(rule.name, hit["_id"]), record))
    for start in range(0, len(records), PAGE_SIZE):
        _create_records(es, records[start : start + PAGE_SIZE])
    if truncated:
        logger.warning(
            "alert rule %s matched more than %d images since %s; the rest follow next evaluation",
            rule.name,
            MAX_MATCHES,
            since.isoformat(),
        )
        last = hits[-1]["sort"]
        _save_state(
            es,
            rule.name,
            cursor_since=since,
            cursor_at=int(last[0]),
            cursor_location=str(last[1]),
            evaluated_at=now,
        )
    else:
        _save_state(
            es,
            rule.name,
            checkpoint=now,
            cursor_since=None,
            cursor_at=None,
            cursor_location=None,
            evaluated_at=now,
        )


def _window_start(now: datetime, window: timedelta) -> datetime:
    """The start of the window-sized period ``now`` falls in (periods aligned to the epoch), the
    dedup key of a window rule: at most one firing per period, whoever evaluates."""
    seconds = int(window.total_seconds())
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def _fire_label_count(es: Any, rule: LabelCountRule, now: datetime) -> None:
    start = now - rule.window
    count = int(
        es.count(
            index=INDEX_ALIAS,
            query={
                "bool": {
                    "filter": [
                        _label_clause(rule.label, rule.min_confidence),
                        {"range": {"ingested_at": {"gte": start.isoformat(), "lt": now.isoformat()}}},
                        *_scope(rule),
                    ]
                }
            },
        )["count"]
    )
    if count > rule.threshold:
        period = _window_start(now, rule.window)
        record = _base_record(rule, now)
        record["window"] = {"start": start.isoformat(), "end": now.isoformat()}
        record["count"] = count
        record["detail"] = (
            f"{count} images labeled {rule.label} ingested between {_short(start)} and {_short(now)} "
            f"(threshold {rule.threshold})"
        )
        _create_records(es, [(firing_id(rule.name, f"window:{period.isoformat()}"), record)])
    _save_state(es, rule.name, evaluated_at=now)


def _fire_no_ingestion(es: Any, rule: NoIngestionRule, now: datetime) -> None:
    """Fire when the newest document in scope was ingested more than ``hours`` ago (or never).
    The dedup key is that newest time: one stall fires once; a new stall after images arrived
    again fires again."""
    response = es.search(
        index=INDEX_ALIAS,
        query={"bool": {"filter": [{"range": {"ingested_at": {"lte": now.isoformat()}}}, *_scope(rule)]}},
        sort=[{"ingested_at": {"order": "desc"}}],
        source=["ingested_at"],
        size=1,
    )
    hits = response["hits"]["hits"]
    newest = _parse(hits[0]["_source"].get("ingested_at")) if hits else None
    limit = timedelta(hours=rule.hours)
    if newest is None or now - newest > limit:
        record = _base_record(rule, now)
        since = newest or (now - limit)
        record["window"] = {"start": since.isoformat(), "end": now.isoformat()}
        record["count"] = 0
        record["detail"] = (
            f"no image ingested since {_short(newest)} ({_hours(now - newest)} ago)"
            if newest
            else "no image has ever been ingested"
        ) + _scope_text(rule)
        key = f"stall:{newest.isoformat() if newest else 'never'}"
        _create_records(es, [(firing_id(rule.name, key), record)])
    _save_state(es, rule.name, evaluated_at=now)


def _short(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "never"


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def _scope_text(rule: Rule) -> str:
    parts = [f"bucket {rule.bucket}" if rule.bucket else "", f"prefix {rule.prefix}" if rule.prefix else ""]
    scope = ", ".join(part for part in parts if part)
    return f" in {scope}" if scope else ""


# --- notifications ------------------------------------------------------------------------------


def _pending(es: Any, rule: Rule) -> list[dict[str, Any]]:
    """Records of ``rule`` neither notified nor throttled, oldest first (with ``_id``)."""
    response = es.search(
        index=ALERTS_INDEX,
        query={
            "bool": {
                "filter": [
                    {"term": {"rule": rule.name}},
                    {"term": {"notified": False}},
                    {"term": {"throttled": False}},
                ]
            }
        },
        sort=[{"fired_at": {"order": "asc"}}],
        size=MAX_PENDING,
    )
    return [{"_id": hit["_id"], **hit["_source"]} for hit in response["hits"]["hits"]]


def _suppressed(es: Any, rule: Rule, since: datetime | None) -> int:
    """Firings of ``rule`` throttled since its last notification."""
    filters: list[dict[str, Any]] = [{"term": {"rule": rule.name}}, {"term": {"throttled": True}}]
    if since is not None:
        filters.append({"range": {"fired_at": {"gt": since.isoformat()}}})
    return int(es.count(index=ALERTS_INDEX, query={"bool": {"filter": filters}})["count"])


def _mark_throttled(es: Any, records: Sequence[Mapping[str, Any]]) -> None:
    if not records:
        return
    operations: list[dict[str, Any]] = []
    for record in records:
        operations.append({"update": {"_index": ALERTS_INDEX, "_id": record["_id"]}})
        operations.append({"doc": {"throttled": True}})
    _check_bulk(es.bulk(operations=operations, refresh="wait_for"), "mark firings throttled")


def _check_bulk(response: Mapping[str, Any], what: str) -> None:
    errors = [
        f"{info.get('_id')}: {info.get('error')}"
        for item in response.get("items", [])
        for info in item.values()
        if int(info.get("status", 0)) >= 300
    ]
    if errors:
        raise AlertError(f"could not {what}: {'; '.join(errors[:3])}")


def _image(record: Mapping[str, Any], presign: Callable[[str], str | None] | None) -> AlertImage:
    image = record.get("image") or {}
    location = str(image.get("s3_location") or "")
    from imagelabels.search.queries import image_page_url

    # the Image search page's detail view: works whatever the key and outlives any credentials;
    # a presigned S3 link only where no UI base URL is configured
    url = image_page_url(str(image.get("document_id") or ""))
    if url is None and presign is not None and location:
        url = presign(location)
    return AlertImage(
        document_id=str(image.get("document_id") or ""),
        s3_location=location,
        bucket=str(image.get("bucket") or ""),
        key=str(image.get("key") or ""),
        matches=tuple(
            Match(str(m.get("label")), float(m.get("confidence") or 0.0), str(m.get("parent") or ""))
            for m in record.get("matches") or ()
        ),
        url=url,
    )


def _describe_rule(rule: Rule) -> str:
    if isinstance(rule, LabelRule):
        return f"label {rule.label} >= {rule.min_confidence:g}%"
    if isinstance(rule, ModerationRule):
        what = ", ".join(rule.categories) if rule.categories else "any moderation label"
        return f"{what} >= {rule.min_confidence:g}%"
    if isinstance(rule, LabelCountRule):
        return f"more than {rule.threshold} images labeled {rule.label} in {rule.window}"
    if isinstance(rule, NoIngestionRule):
        return f"no ingestion for {rule.hours:g} h"
    return rule.type


def _notification(
    rule: Rule,
    records: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    channels: tuple[str, ...],
    suppressed: int,
    since: datetime | None,
    retry: bool,
    presign: Callable[[str], str | None] | None,
) -> Notification:
    listed = [record for record in records if record.get("image")][:LIST_LIMIT]
    images = tuple(_image(record, presign) for record in listed)
    image_total = sum(1 for record in records if record.get("image"))
    more = image_total - len(images)
    details = [str(record["detail"]) for record in records if record.get("detail")]
    detail = "; ".join(details)
    if rule.per_image:
        headline = f"{image_total} image{'s' if image_total != 1 else ''}"
    else:
        headline = detail or "fired"
    if suppressed:
        headline += f" ({suppressed} suppressed since {_short(since)})"
    prefix = "[retry] " if retry else ""
    subject = f"{prefix}[{rule.severity}] {rule.name}: {headline}"
    lines = [subject, f"Rule: {_describe_rule(rule)}" + _scope_text(rule)]
    if rule.description:
        lines.append(rule.description)
    if detail and rule.per_image:
        lines.append(detail)
    for image in images:
        found = ", ".join(
            f"{m.label} {m.confidence:.1f}%" + (f" ({m.parent})" if m.parent else "") for m in image.matches
        )
        lines.append(f"- {image.key} (bucket {image.bucket}): {found}")
        if image.url:
            lines.append(f"  {image.url}")
    if more:
        lines.append(f"and {more} more")
    if suppressed:
        lines.append(
            f"{suppressed} suppressed: firings throttled since the last notification "
            f"(throttle {rule.throttle}); see index {ALERTS_INDEX}"
        )
    return Notification(
        id=f"{rule.name}@{now.isoformat()}" + ("#retry:" + ",".join(channels) if retry else ""),
        rule=rule.name,
        rule_type=rule.type,
        severity=rule.severity,
        subject=subject,
        text="\n".join(lines),
        channels=channels,
        evaluated_at=now,
        images=images,
        more=more,
        suppressed=suppressed,
        detail=detail,
        description=rule.description,
        retry=retry,
        records=tuple(PendingRecord(str(r["_id"]), tuple(r.get("delivered") or ())) for r in records),
    )


def _notifications_for(
    es: Any, rule: Rule, state: Mapping[str, Any], now: datetime, presign: Callable[[str], str | None] | None
) -> list[Notification]:
    """What ``rule`` must send now: its un-notified records that no channel got yet (unless the
    throttle holds them, which marks them throttled) with the suppressed count, plus a retry for
    records some channels got, to the channels that did not."""
    pending = _pending(es, rule)
    wanted = set(rule.channels)
    fresh = [record for record in pending if not record.get("delivered")]
    retries: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for record in pending:
        if record.get("delivered"):
            missing = tuple(c for c in rule.channels if c not in set(record["delivered"]))
            retries.setdefault(missing, []).append(record)
    notifications: list[Notification] = []
    last = _parse(state.get("last_notified_at"))
    throttled = bool(rule.throttle) and last is not None and now - last < rule.throttle
    if throttled:
        _mark_throttled(es, fresh)
    else:
        suppressed = _suppressed(es, rule, last)
        if fresh or suppressed:
            notifications.append(
                _notification(
                    rule,
                    fresh,
                    now=now,
                    channels=rule.channels,
                    suppressed=suppressed,
                    since=last,
                    retry=False,
                    presign=presign,
                )
            )
    for missing, records in retries.items():
        if not missing or not wanted:
            # every channel the rule still uses got it: nothing to resend
            _finish(es, records, delivered_now=(), complete=True, now=now)
            continue
        notifications.append(
            _notification(
                rule,
                records,
                now=now,
                channels=missing,
                suppressed=0,
                since=last,
                retry=True,
                presign=presign,
            )
        )
    return notifications


def evaluate_rules(
    es: Any,
    rules: Sequence[Rule],
    *,
    now: datetime,
    presign: Callable[[str], str | None] | None = None,
) -> list[Notification]:
    """Evaluate the enabled ``rules`` at ``now``: record new firings, then return what must be
    sent - one notification per rule (plus a retry per channel set a failed send left behind).

    :param presign: ``s3://bucket/key`` -> a link to the image (e.g. a presigned GET URL), or
        ``None`` for no link.
    Send each with :func:`imagelabels.alerts.notify.send_notification`, then call
    :func:`mark_notified`; anything not marked is sent again by the next evaluation.
    """
    now = _utc(now)
    ensure_alert_indices(es)
    notifications: list[Notification] = []
    for rule in rules:
        if not rule.enabled:
            continue
        state = _state(es, rule)
        if isinstance(rule, LabelRule | ModerationRule):
            _fire_per_image(es, rule, state, now)
        elif isinstance(rule, LabelCountRule):
            _fire_label_count(es, rule, now)
        elif isinstance(rule, NoIngestionRule):
            _fire_no_ingestion(es, rule, now)
        notifications.extend(_notifications_for(es, rule, state, now, presign))
    return notifications


def _finish(
    es: Any,
    records: Sequence[Mapping[str, Any] | PendingRecord],
    *,
    delivered_now: Sequence[str],
    complete: bool,
    now: datetime,
) -> None:
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


def mark_notified(
    es: Any,
    notifications: Sequence[Notification],
    results: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Record what was delivered: ``results`` maps a notification's ``id`` to
    :func:`~imagelabels.alerts.notify.send_notification`'s answer (channel -> ``"sent"`` or an
    error); without ``results`` every channel counts as sent.

    A record is ``notified`` once all of the notification's channels got it; channels that got it
    are kept in ``delivered`` so a retry goes to the others only. The rule's throttle starts when
    a (non-retry) notification reached at least one channel.
    """
    for notification in notifications:
        outcome = (results or {}).get(notification.id)
        sent = (
            list(notification.channels)
            if outcome is None and results is None
            else [channel for channel, status in (outcome or {}).items() if status == "sent"]
        )
        if not sent:
            continue
        complete = set(notification.channels) <= set(sent)
        _finish(
            es, notification.records, delivered_now=sent, complete=complete, now=notification.evaluated_at
        )
        if not notification.retry:
            _advance_last_notified(es, notification.rule, notification.evaluated_at)


def _advance_last_notified(es: Any, rule: str, when: datetime) -> None:
    """Start the throttle at ``when`` - never move it back (a rerun of an older evaluation)."""
    from imagelabels.engine import NotFoundError

    try:
        previous = _parse(es.get(index=STATE_INDEX, id=rule)["_source"].get("last_notified_at"))
    except NotFoundError:
        previous = None
    if previous is None or when > previous:
        _save_state(es, rule, last_notified_at=when)
