"""Send alert notifications through the project's channels (email, Slack, webhook) or the log.

Every channel gets the same facts - rule, severity, each image's key, the matching labels with
their confidence and a presigned link - each escaped for where it lands: ``html.escape`` in email
HTML, :func:`~imagelabels.channels.slack_escape` in Slack text (a label such as ``<!channel>``
must not ping anyone), JSON for the webhook. Object keys and labels come from uploads and models,
so they are never trusted as markup.

Channel settings come from the rules file's ``channels:`` mapping (connection ids, recipients);
a channel that is not configured uses the connection id in
:data:`~imagelabels.alerts.rules.DEFAULT_CONN_IDS`.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from imagelabels.alerts.evaluate import evaluate_rules, mark_notified
from imagelabels.alerts.model import AlertImage, Notification
from imagelabels.alerts.rules import DEFAULT_CONN_IDS, AlertConfig

logger = logging.getLogger("imagelabels.alerts")

SENT = "sent"


def _labels(image: AlertImage) -> str:
    return ", ".join(
        f"{match.label} {match.confidence:.1f}%" + (f" ({match.parent})" if match.parent else "")
        for match in image.matches
    )


def email_html(notification: Notification) -> str:
    """The email body: a header, the rule's detail and a table of images with links; every value
    from an image or a rule is HTML-escaped."""
    e = html.escape
    rows = []
    for image in notification.images:
        link = f'<a href="{e(image.url, quote=True)}">open image</a>' if image.url else ""
        rows.append(
            "<tr>"
            f"<td>{e(image.key)}</td><td>{e(image.bucket)}</td><td>{e(_labels(image))}</td><td>{link}</td>"
            "</tr>"
        )
    parts = [
        f"<h2>{e(notification.subject)}</h2>",
        f"<p>Rule <b>{e(notification.rule)}</b> ({e(notification.rule_type)}), "
        f"severity <b>{e(notification.severity)}</b>, evaluated {e(notification.evaluated_at.isoformat())}.</p>",
    ]
    for paragraph in (notification.description, notification.detail):
        if paragraph:
            parts.append(f"<p>{e(paragraph)}</p>")
    if rows:
        parts.append(
            "<table border='1' cellpadding='4' cellspacing='0'>"
            "<tr><th>Key</th><th>Bucket</th><th>Labels</th><th>Link</th></tr>" + "".join(rows) + "</table>"
        )
    if notification.more:
        parts.append(f"<p>and {notification.more} more</p>")
    if notification.suppressed:
        parts.append(
            f"<p>{notification.suppressed} suppressed: firings throttled since the last notification.</p>"
        )
    return "\n".join(parts)


def slack_text(notification: Notification) -> str:
    """Slack ``mrkdwn`` text with every user or object string escaped (links as ``<url|key>``)."""
    from imagelabels.channels import slack_escape as s

    lines = [f"*{s(notification.subject)}*"]
    if notification.detail:
        lines.append(s(notification.detail))
    for image in notification.images:
        key = s(image.key)
        shown = f"<{s(image.url)}|{key}>" if image.url else key
        lines.append(f"\u2022 {shown} (bucket {s(image.bucket)}): {s(_labels(image))}")
    if notification.more:
        lines.append(f"and {notification.more} more")
    if notification.suppressed:
        lines.append(f"{notification.suppressed} suppressed since the last notification")
    return "\n".join(lines)


def _send_one(notification: Notification, channel: str, settings: Mapping[str, Any]) -> None:
    from imagelabels import channels

    conn_id = str(settings.get("conn_id") or DEFAULT_CONN_IDS.get(channel, ""))
    if channel == "log":
        logger.warning("%s", notification.text)
    elif channel == "email":
        channels.send_email(
            conn_id=conn_id,
            to=list(settings.get("to") or ()),
            cc=list(settings.get("cc") or ()),
            subject=notification.subject,
            html=email_html(notification),
            text=notification.text,
        )
    elif channel == "slack":
        channels.post_slack(conn_id=conn_id, text=slack_text(notification))
    elif channel == "webhook":
        channels.post_webhook(
            conn_id=conn_id,
            payload=notification.payload(),
            endpoint=str(settings.get("endpoint") or ""),
        )
    else:
        raise channels.DeliveryError(channel, conn_id, f"unknown channel {channel!r}")


def send_notification(notification: Notification, channels: Mapping[str, Any]) -> dict[str, str]:
    """Send ``notification`` to each of its channels; channel -> ``"sent"`` or the error.

    One channel failing does not stop the others; the caller passes the answer to
    :func:`~imagelabels.alerts.evaluate.mark_notified`, so failed channels are retried by the next
    evaluation. ``channels`` is the rules file's ``channels:`` mapping.
    """
    from imagelabels.channels import DeliveryError, redact

    results: dict[str, str] = {}
    for channel in notification.channels:
        try:
            _send_one(notification, channel, channels.get(channel) or {})
        except DeliveryError as error:
            logger.error("alert %s not delivered: %s", notification.rule, error)
            results[channel] = f"error: {error}"
        except Exception as error:  # a bug in one channel must not keep the others from sending
            logger.exception("alert %s not delivered via %s", notification.rule, channel)
            conn_id = str((channels.get(channel) or {}).get("conn_id") or "")
            results[channel] = "error: " + redact(f"{type(error).__name__}: {error}", conn_id)
        else:
            results[channel] = SENT
    return results


def run_alerts(
    es: Any,
    config: AlertConfig,
    *,
    now: datetime,
    presign: Callable[[str], str | None] | None = None,
) -> dict[str, dict[str, str]]:
    """Evaluate, send and mark: notification id -> channel -> ``"sent"`` or the error.

    The order (record firings, send, then mark what was delivered) is what keeps a failed send
    from being lost: see :mod:`imagelabels.alerts.evaluate`.
    """
    notifications: Sequence[Notification] = evaluate_rules(es, config.rules, now=now, presign=presign)
    results = {n.id: send_notification(n, config.channels) for n in notifications}
    mark_notified(es, notifications, results)
    return results
