"""Task body of the alert DAG: rules file and connections in, counts out."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from imagelabels import clients, settings


class AlertDeliveryFailed(RuntimeError):
    """Some notification did not reach every channel: the task fails visibly, and the next
    evaluation (a retry or the next run) sends the firings that are still pending."""


def evaluate_and_notify(now: datetime, rules_file: str = "") -> dict[str, Any]:
    """Evaluate every enabled rule at ``now``, send what fired, record it; return counts.

    Raises :class:`AlertDeliveryFailed` (after recording what was sent) when a channel failed.
    """
    from imagelabels.alerts.notify import run_alerts
    from imagelabels.alerts.rules import load_config
    from imagelabels.search import presigned_url

    config = load_config(Path(rules_file) if rules_file.strip() else None)
    signer = clients.presigning_s3_client(settings.aws_conn_id())
    results = run_alerts(
        clients.search_engine(settings.es_conn_id()),
        config,
        now=now,
        presign=lambda location: presigned_url(signer, location),
    )
    failed: dict[str, dict[str, str]] = {}
    for notification, outcomes in results.items():
        for channel, outcome in outcomes.items():
            if outcome != "sent":
                failed.setdefault(notification, {})[channel] = outcome
    summary = {
        "rules": len([rule for rule in config.rules if rule.enabled]),
        "notifications": len(results),
        "failed": failed,
        "notified": sorted(results),
    }
    if failed:
        raise AlertDeliveryFailed(f"alert notifications failed on some channels: {failed}")
    return summary
