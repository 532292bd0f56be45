"""Deciding which rules fire, and recording each firing exactly once.

For every enabled rule, :func:`fire` measures it (:mod:`imagelabels.alerts.queries`), writes a
record per firing under a deterministic id (:func:`firing_id`; created with ``op_type=create``, so
an image never fires the same rule twice, across reruns and overlapping runs) and moves the rule's
checkpoint (:mod:`imagelabels.alerts.state`). What a firing says comes from
:mod:`imagelabels.alerts.messages`. Sending is not done here: see :mod:`imagelabels.alerts.evaluate`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from imagelabels.alerts import queries
from imagelabels.alerts.messages import label_count_detail, stall_detail
from imagelabels.alerts.model import parse_time
from imagelabels.alerts.rules import LabelCountRule, LabelRule, ModerationRule, NoIngestionRule, Rule
from imagelabels.alerts.state import create_records, save_state

logger = logging.getLogger("imagelabels.alerts")

# Re-read this much before the checkpoint: documents indexed just before the last evaluation but
# not yet visible to its search (refresh interval, slow bulk) are caught; dedup makes it safe.
LOOKBACK = timedelta(minutes=10)
# How far back a rule's first evaluation looks: a new rule alerts on what arrives from now on,
# not on the whole archive.
FIRST_LOOKBACK = timedelta(hours=1)


def firing_id(rule: str, key: str) -> str:
    """The deterministic ``_id`` of a firing: rule name + document id (or window). Readable, and
    within ES's 512-byte limit (names are at most 100 characters, document ids 64)."""
    material = f"{rule}:{key}"
    if len(material.encode()) <= 512:
        return material
    return f"{rule}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def fire(es: Any, rule: Rule, state: Mapping[str, Any], now: datetime) -> None:
    """Record what ``rule`` fires at ``now`` (given its ``state``) and update that state."""
    if isinstance(rule, LabelRule | ModerationRule):
        fire_per_image(es, rule, state, now)
    elif isinstance(rule, LabelCountRule):
        fire_label_count(es, rule, now)
    elif isinstance(rule, NoIngestionRule):
        fire_no_ingestion(es, rule, now)


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


# --- per-image rules ----------------------------------------------------------------------------


def _read_from(state: Mapping[str, Any], now: datetime) -> tuple[datetime, list[Any] | None]:
    """Where a per-image read starts: the lower bound of ``ingested_at`` and, when a capped read
    left a cursor, the sort values to resume after."""
    checkpoint = parse_time(state.get("checkpoint"))
    since = (checkpoint - LOOKBACK) if checkpoint else now - FIRST_LOOKBACK
    resume_since = parse_time(state.get("cursor_since"))
    if resume_since is not None and state.get("cursor_at") is not None:
        return resume_since, [int(state["cursor_at"]), str(state.get("cursor_location") or "")]
    return since, None


def _image_records(
    rule: LabelRule | ModerationRule, hits: list[dict[str, Any]], now: datetime
) -> list[tuple[str, dict[str, Any]]]:
    """A firing record (with its id) for every hit whose labels really satisfy the rule."""
    records: list[tuple[str, dict[str, Any]]] = []
    for hit in hits:
        source = hit["_source"]
        matches = queries.rule_matches(rule, source)
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
    return records


def fire_per_image(
    es: Any, rule: LabelRule | ModerationRule, state: Mapping[str, Any], now: datetime
) -> None:
    """Record a firing for every document ingested since the checkpoint (minus the lookback)
    that matches, and move the checkpoint to ``now``.

    When :data:`~imagelabels.alerts.queries.MAX_MATCHES` stops the reading, the state keeps a
    cursor (the read's lower bound and the last sort values) and the next evaluation resumes
    there, without the lookback: a re-read of the overlap could otherwise hit the cap again and
    never get further.
    """
    since, after = _read_from(state, now)
    hits, truncated = queries.matching_hits(es, queries.per_image_query(rule, since, now), after)
    records = _image_records(rule, hits, now)
    for start in range(0, len(records), queries.PAGE_SIZE):
        create_records(es, records[start : start + queries.PAGE_SIZE])
    if truncated:
        logger.warning(
            "alert rule %s matched more than %d images since %s; the rest follow next evaluation",
            rule.name,
            queries.MAX_MATCHES,
            since.isoformat(),
        )
        last = hits[-1]["sort"]
        save_state(
            es,
            rule.name,
            cursor_since=since,
            cursor_at=int(last[0]),
            cursor_location=str(last[1]),
            evaluated_at=now,
        )
    else:
        save_state(
            es,
            rule.name,
            checkpoint=now,
            cursor_since=None,
            cursor_at=None,
            cursor_location=None,
            evaluated_at=now,
        )


# --- window rules -------------------------------------------------------------------------------


def window_start(now: datetime, window: timedelta) -> datetime:
    """The start of the window-sized period ``now`` falls in (periods aligned to the epoch), the
    dedup key of a window rule: at most one firing per period, whoever evaluates."""
    seconds = int(window.total_seconds())
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def fire_label_count(es: Any, rule: LabelCountRule, now: datetime) -> None:
    """Fire once per window period when more than ``threshold`` images with the label arrived in
    the last ``window``."""
    start = now - rule.window
    count = queries.count_labeled(es, rule, start, now)
    if count > rule.threshold:
        period = window_start(now, rule.window)
        record = _base_record(rule, now)
        record["window"] = {"start": start.isoformat(), "end": now.isoformat()}
        record["count"] = count
        record["detail"] = label_count_detail(rule, count, start, now)
        create_records(es, [(firing_id(rule.name, f"window:{period.isoformat()}"), record)])
    save_state(es, rule.name, evaluated_at=now)


def fire_no_ingestion(es: Any, rule: NoIngestionRule, now: datetime) -> None:
    """Fire when the newest document in scope was ingested more than ``hours`` ago (or never).
    The dedup key is that newest time: one stall fires once; a new stall after images arrived
    again fires again."""
    newest = queries.newest_ingested(es, rule, now)
    limit = timedelta(hours=rule.hours)
    if newest is None or now - newest > limit:
        record = _base_record(rule, now)
        since = newest or (now - limit)
        record["window"] = {"start": since.isoformat(), "end": now.isoformat()}
        record["count"] = 0
        record["detail"] = stall_detail(rule, newest, now)
        key = f"stall:{newest.isoformat() if newest else 'never'}"
        create_records(es, [(firing_id(rule.name, key), record)])
    save_state(es, rule.name, evaluated_at=now)
