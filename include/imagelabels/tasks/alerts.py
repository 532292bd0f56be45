"""Task body of the alert DAG: rules file and connections in, counts out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagelabels import clients, settings

if TYPE_CHECKING:
    from imagelabels.alerts.rules import AlertConfig


class AlertDeliveryFailed(RuntimeError):
    """Some notification did not reach every channel: the task fails visibly, and the next
    evaluation (a retry or the next run) sends the firings that are still pending."""


def _config(rules_file: str | None) -> AlertConfig:
    """The rules to evaluate; a rules file that is refused or invalid fails the task at once
    (every retry would read the same file the same way)."""
    from airflow.sdk.exceptions import AirflowFailException

    from imagelabels.alerts.rules import RuleError, load_config

    named = (rules_file or "").strip()
    try:
        return load_config(Path(named) if named else None)
    except RuleError as error:
        raise AirflowFailException(str(error)) from error


def evaluate_and_notify(now: datetime, rules_file: str | None = "") -> dict[str, Any]:
    """Evaluate every enabled rule at ``now``, send what fired, record it; return counts.

    ``rules_file`` is the DAG's Param, typed by whoever triggers the run: it is data, read only
    from the folders :func:`~imagelabels.alerts.rules.checked_rules_file` allows; empty or
    ``None`` means the deployment's file. Raises :class:`AlertDeliveryFailed` (after recording
    what was sent) when a channel failed.
    """
    from imagelabels.alerts.notify import run_alerts
    from imagelabels.search.queries import presigned_url

    config = _config(rules_file)
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


def evaluate_and_notify_now(params: Mapping[str, Any]) -> dict[str, Any]:
    """The alert DAG's task: :func:`evaluate_and_notify` now, on the rules file of the
    ``rules_file`` Param (empty: the deployment's file)."""
    return evaluate_and_notify(datetime.now(UTC), params["rules_file"] or "")
