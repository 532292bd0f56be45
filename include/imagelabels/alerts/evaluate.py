"""Evaluate alert rules against the images index: firings recorded once, notifications throttled.

This module is the orchestration: :func:`evaluate_rules` and :func:`mark_notified` are the entry
points, and it decides what each rule must send now. The pieces it puts together live beside it,
in dependency order (none imports a later one):

* :mod:`~imagelabels.alerts.mappings` - the two indices and their mappings;
* :mod:`~imagelabels.alerts.model` - :class:`Notification` and the other values passed around;
* :mod:`~imagelabels.alerts.state` - a rule's state and its firing records, read and written;
* :mod:`~imagelabels.alerts.queries` - the engine queries that measure a rule;
* :mod:`~imagelabels.alerts.messages` - the texts of firings and notifications;
* :mod:`~imagelabels.alerts.firing` - which rules fire, each firing recorded once;
* this module, then :mod:`~imagelabels.alerts.notify`, which sends.

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

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from imagelabels.alerts.firing import fire, firing_id
from imagelabels.alerts.mappings import ALERTS_INDEX, STATE_INDEX, ensure_alert_indices
from imagelabels.alerts.messages import build_notification
from imagelabels.alerts.model import AlertError, AlertImage, Match, Notification, PendingRecord, parse_time
from imagelabels.alerts.rules import Rule
from imagelabels.alerts.state import (
    advance_last_notified,
    mark_delivered,
    mark_throttled,
    pending_records,
    read_state,
    suppressed_count,
)

# The names callers have always imported from here, wherever they are defined now.
__all__ = [
    "ALERTS_INDEX",
    "STATE_INDEX",
    "AlertError",
    "AlertImage",
    "Match",
    "Notification",
    "PendingRecord",
    "ensure_alert_indices",
    "evaluate_rules",
    "firing_id",
    "mark_notified",
]

Presign = Callable[[str], str | None]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware datetime (UTC)")
    return value.astimezone(UTC)


def evaluate_rules(
    es: Any,
    rules: Sequence[Rule],
    *,
    now: datetime,
    presign: Presign | None = None,
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
        state = read_state(es, rule.name)
        fire(es, rule, state, now)
        notifications.extend(_notifications_for(es, rule, state, now, presign))
    return notifications


def _notifications_for(
    es: Any, rule: Rule, state: Mapping[str, Any], now: datetime, presign: Presign | None
) -> list[Notification]:
    """What ``rule`` must send now: its un-notified records that no channel got yet (unless the
    throttle holds them, which marks them throttled) with the suppressed count, plus a retry for
    records some channels got, to the channels that did not."""
    pending = pending_records(es, rule.name)
    fresh = [record for record in pending if not record.get("delivered")]
    last = parse_time(state.get("last_notified_at"))
    notifications = _fresh_notification(es, rule, fresh, now=now, last=last, presign=presign)
    for missing, records in _retries(rule, pending).items():
        if not missing or not rule.channels:
            # every channel the rule still uses got it: nothing to resend
            mark_delivered(es, records, delivered_now=(), complete=True, now=now)
            continue
        notifications.append(
            build_notification(
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


def _fresh_notification(
    es: Any,
    rule: Rule,
    fresh: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    last: datetime | None,
    presign: Presign | None,
) -> list[Notification]:
    """The rule's new notification (none or one): held back and marked throttled while the
    throttle runs; after it, sent when anything fired or was suppressed since ``last``."""
    throttled = bool(rule.throttle) and last is not None and now - last < rule.throttle
    if throttled:
        mark_throttled(es, fresh)
        return []
    suppressed = suppressed_count(es, rule.name, last)
    if not (fresh or suppressed):
        return []
    return [
        build_notification(
            rule,
            fresh,
            now=now,
            channels=rule.channels,
            suppressed=suppressed,
            since=last,
            retry=False,
            presign=presign,
        )
    ]


def _retries(rule: Rule, pending: Sequence[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Records some channels already got, grouped by the rule's channels each still lacks."""
    retries: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for record in pending:
        if record.get("delivered"):
            missing = tuple(c for c in rule.channels if c not in set(record["delivered"]))
            retries.setdefault(missing, []).append(record)
    return retries


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
        mark_delivered(
            es, notification.records, delivered_now=sent, complete=complete, now=notification.evaluated_at
        )
        if not notification.retry:
            advance_last_notified(es, notification.rule, notification.evaluated_at)
