"""The words of an alert: firing details, and a rule's pending records turned into a notification.

Everything a person reads is phrased here - the detail a window rule records when it fires, and
the subject and plain text of a :class:`~imagelabels.alerts.model.Notification` (the channels in
:mod:`imagelabels.alerts.notify` render the same facts as email HTML, Slack text or JSON). Firing
and sending decide *what* goes out; this module only decides how it reads, and it reads or writes
nothing in the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from imagelabels.alerts.mappings import ALERTS_INDEX
from imagelabels.alerts.model import AlertImage, Match, Notification, PendingRecord
from imagelabels.alerts.rules import (
    LabelCountRule,
    LabelRule,
    ModerationRule,
    NoIngestionRule,
    Rule,
)

# Images listed in one notification; the rest are "and K more".
LIST_LIMIT = 10


# --- small phrases ------------------------------------------------------------------------------


def short_time(value: datetime | None) -> str:
    """``value`` to the minute in UTC, or ``"never"``."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "never"


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def scope_text(rule: Rule) -> str:
    """`` in bucket B, prefix P`` for a scoped rule; empty otherwise."""
    parts = [f"bucket {rule.bucket}" if rule.bucket else "", f"prefix {rule.prefix}" if rule.prefix else ""]
    scope = ", ".join(part for part in parts if part)
    return f" in {scope}" if scope else ""


def describe_rule(rule: Rule) -> str:
    """What the rule watches for, in a few words."""
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


# --- firing details -----------------------------------------------------------------------------


def label_count_detail(rule: LabelCountRule, count: int, start: datetime, end: datetime) -> str:
    """The detail of a label-count firing: how many images, when, against which threshold."""
    return (
        f"{count} images labeled {rule.label} ingested between {short_time(start)} and {short_time(end)} "
        f"(threshold {rule.threshold})"
    )


def stall_detail(rule: NoIngestionRule, newest: datetime | None, now: datetime) -> str:
    """The detail of a no-ingestion firing: since when nothing arrived, in the rule's scope."""
    return (
        f"no image ingested since {short_time(newest)} ({_hours(now - newest)} ago)"
        if newest
        else "no image has ever been ingested"
    ) + scope_text(rule)


# --- notifications ------------------------------------------------------------------------------


def alert_image(record: Mapping[str, Any], presign: Callable[[str], str | None] | None) -> AlertImage:
    """The image a per-image firing record names, with a link to it when one can be made."""
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


def _image_lines(images: Sequence[AlertImage]) -> list[str]:
    lines: list[str] = []
    for image in images:
        found = ", ".join(
            f"{m.label} {m.confidence:.1f}%" + (f" ({m.parent})" if m.parent else "") for m in image.matches
        )
        lines.append(f"- {image.key} (bucket {image.bucket}): {found}")
        if image.url:
            lines.append(f"  {image.url}")
    return lines


def build_notification(
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
    """One notification of ``rule`` carrying ``records`` to ``channels``: subject, text, the
    first :data:`LIST_LIMIT` images and the suppressed count since ``since``."""
    listed = [record for record in records if record.get("image")][:LIST_LIMIT]
    images = tuple(alert_image(record, presign) for record in listed)
    image_total = sum(1 for record in records if record.get("image"))
    more = image_total - len(images)
    details = [str(record["detail"]) for record in records if record.get("detail")]
    detail = "; ".join(details)
    if rule.per_image:
        headline = f"{image_total} image{'s' if image_total != 1 else ''}"
    else:
        headline = detail or "fired"
    if suppressed:
        headline += f" ({suppressed} suppressed since {short_time(since)})"
    prefix = "[retry] " if retry else ""
    subject = f"{prefix}[{rule.severity}] {rule.name}: {headline}"
    lines = [subject, f"Rule: {describe_rule(rule)}" + scope_text(rule)]
    if rule.description:
        lines.append(rule.description)
    if detail and rule.per_image:
        lines.append(detail)
    lines.extend(_image_lines(images))
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
