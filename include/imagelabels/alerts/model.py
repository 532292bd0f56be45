"""The values the alerts modules hand each other: matches, images, notifications, the error.

These types sit below everything else (they import no other alerts module), so the state, the
queries, the message builder, the evaluation and the channels in :mod:`imagelabels.alerts.notify`
all share one definition of what a notification is - and so does :func:`parse_time`, the one
reading of a date as the engine returns it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


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

    ``images`` lists at most :data:`~imagelabels.alerts.messages.LIST_LIMIT` images (``more``
    counts the rest); ``suppressed`` counts firings throttled since the rule's previous
    notification; ``detail`` describes a window rule's firing. ``retry`` marks a re-send of
    records some channels already got, to the ``channels`` that did not.
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


def parse_time(value: Any) -> datetime | None:
    """A stored date (ISO text, or epoch milliseconds as sort values carry it) as an aware UTC
    datetime; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
