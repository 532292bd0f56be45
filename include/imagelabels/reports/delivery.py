"""Deliver a rendered report: store its files (S3 or a directory), then email, Slack, webhook.

Channels are independent: the report DAG runs one task per channel and calls
:func:`deliver_and_record` for each, so a broken SMTP server never keeps the Slack post or the
webhook from going out.

Retries are Airflow's, and only Airflow's: each try of a ``deliver`` task sends at most once,
and the task has ``delivery.attempts - 1`` retries. A loop inside the task on top of Airflow's
retries multiplied the sends (3 in-task attempts x 3 tries) and, worse, resent what had
arrived; Airflow's retries also survive a lost worker, show every try with its error in the UI
and hold no worker slot while waiting.

Every send is bracketed by a record in the ``images-report-deliveries`` index under a
deterministic id (report + interval + channel): ``sending`` before, then ``delivered``,
``failed`` (the server said no: nothing arrived, a retry sends again) or ``uncertain`` (the
answer was lost after the message went out). A try that finds ``delivered`` skips the channel;
one that finds ``sending`` (a try that stopped mid-send) or ``uncertain`` does not send again
and fails at once, saying so: nobody gets a report twice, and ``redeliver`` sends anyway.

Storage keys are date-partitioned and stable for an interval
(``<output>/<name>/<YYYY>/<MM>/<DD | Www>/``), so a rerun overwrites the same objects.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from mimetypes import guess_type
from pathlib import Path
from typing import Any

from imagelabels import channels, settings
from imagelabels.channels import DeliveryError, slack_escape
from imagelabels.reports.config import CHANNELS, ReportConfig
from imagelabels.reports.formatting import totals_items
from imagelabels.reports.model import Report

DELIVERIES_INDEX = "images-report-deliveries"
DELIVERY_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "report": {"type": "keyword"},
        "period": {"type": "keyword"},
        "interval_key": {"type": "keyword"},
        "channel": {"type": "keyword"},
        "status": {"type": "keyword"},
        "attempts": {"type": "integer"},
        "error": {"type": "text"},
        "at": {"type": "date"},
    },
}
STATUSES = ("sending", "delivered", "failed", "uncertain")
SUMMARY_TOP_LABELS = 5
RECORD_TRIES = 3  # writing "delivered" after a send: an idempotent write, so retried in place
RECORD_BACKOFF_SECONDS = 1.0
TOP_LABELS_TABLE = "top_labels"


# --- storage -----------------------------------------------------------------------------------


def output_root(config: ReportConfig) -> str:
    """The report's output location with ``{bucket}`` resolved (the report's ``bucket`` scope,
    else ``IMAGELABELS_BUCKET``), always ending in ``/``."""
    uri = config.output.uri
    if "{bucket}" in uri:
        uri = uri.replace("{bucket}", settings.source_bucket(config.bucket))
    return uri.rstrip("/") + "/"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def report_prefix(config: ReportConfig, report: Report) -> str:
    """``<output>/<name>/<YYYY>/<MM>/<DD>/`` for hourly and daily reports (an hourly report's
    files carry the hour in their names), ``<YYYY>/<MM>/W<ww>/`` for weekly ones (the Monday's
    year and month, the ISO week) and ``<YYYY>/<MM>/`` for monthly ones.

    It depends only on the interval's start, so every rerun of the interval gets the same keys.
    """
    start = _utc(report.start)
    if report.period in ("hourly", "daily"):
        partition = f"{start:%Y/%m/%d}/"
    elif report.period == "weekly":
        partition = f"{start:%Y/%m}/W{start.isocalendar()[1]:02d}/"
    elif report.period == "monthly":
        partition = f"{start:%Y/%m}/"
    else:
        raise ValueError(f"unknown report period {report.period!r}")
    return f"{output_root(config)}{config.name}/{partition}"


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def store_files(s3: Any, config: ReportConfig, report: Report, files: Sequence[Path]) -> list[str]:
    """Put ``files`` under :func:`report_prefix` and return their URIs (the "S3 delivery").

    ``s3`` is a boto3 S3 client (unused for a local output directory). Objects get a content
    type from their suffix so a presigned link opens a PDF or PNG in the browser. Local files are
    written to a temporary name and renamed, so a reader never sees half a file.
    """
    prefix = report_prefix(config, report)
    stored: list[str] = []
    for path in files:
        path = Path(path)
        content_type = guess_type(path.name)[0] or "application/octet-stream"
        if prefix.startswith("s3://"):
            if s3 is None:
                raise ValueError(f"an S3 client is needed to store report files under {prefix}")
            bucket, key_prefix = _split_s3(prefix)
            key = key_prefix + path.name
            s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})
            stored.append(f"s3://{bucket}/{key}")
        else:
            directory = Path(prefix)
            directory.mkdir(parents=True, exist_ok=True)
            target = directory / path.name
            with (
                tempfile.NamedTemporaryFile(dir=directory, prefix=".partial-", delete=False) as tmp,
                path.open("rb") as source,
            ):
                shutil.copyfileobj(source, tmp)
            os.replace(tmp.name, target)
            stored.append(str(target))
    return stored


def presigned_links(s3: Any, uris: Sequence[str], *, expires_in: int | None = None) -> dict[str, str]:
    """File name -> presigned GET URL for the S3 URIs among ``uris`` (signing is local; expiry
    ``IMAGELABELS_PRESIGN_SECONDS``). Pass a client whose endpoint people can reach."""
    from imagelabels.search.queries import presigned_url

    return {
        uri.rsplit("/", 1)[-1]: presigned_url(s3, uri, expires_in=expires_in)
        for uri in uris
        if uri.startswith("s3://")
    }


# --- summaries (pure) --------------------------------------------------------------------------


def top_labels(report: Report, n: int = SUMMARY_TOP_LABELS) -> list[tuple[str, int]]:
    """The first ``n`` rows of the ``top_labels`` table as (label, images); empty without it."""
    try:
        rows = report.table(TOP_LABELS_TABLE).as_dicts()
    except KeyError:
        return []
    return [(str(row.get("label", "")), int(row.get("images") or 0)) for row in rows[:n]]


def interval_text(report: Report) -> str:
    """``2026-11-28 00:00 - 2026-11-29 00:00 UTC``: the exact ``[start, end)``."""
    return f"{_utc(report.start):%Y-%m-%d %H:%M} \u2013 {_utc(report.end):%Y-%m-%d %H:%M} UTC"


def _totals_line(report: Report) -> str:
    t = report.totals
    return (
        f"{t.processed:,} processed: {t.indexed:,} indexed ({t.without_labels:,} without labels), "
        f"{t.rejected:,} rejected, {t.failed:,} failed"
        f" \u00b7 {t.moderation_hits:,} moderation hits \u00b7 {t.distinct_labels:,} distinct labels"
        f" ({t.new_labels:,} new)"
    )


def summary_text(report: Report) -> str:
    """The Slack summary (``mrkdwn``): title, interval, totals, top labels. Every report string is
    :func:`~imagelabels.channels.slack_escape`\\ d, so a label cannot inject markup or mentions."""
    lines = [
        f"*Label report {slack_escape(report.name)}* \u2014 {slack_escape(report.interval_key)}"
        f" ({slack_escape(interval_text(report))})",
        _totals_line(report),
    ]
    if report.scope:
        lines.append(
            "Scope: " + ", ".join(f"{slack_escape(k)}={slack_escape(v)}" for k, v in report.scope.items())
        )
    labels = top_labels(report)
    if labels:
        lines.append("Top labels: " + ", ".join(f"{slack_escape(label)} ({n:,})" for label, n in labels))
    return "\n".join(lines)


def slack_text(report: Report, links: Mapping[str, str]) -> str:
    """:func:`summary_text` plus one ``<url|name>`` line per link (both escaped)."""
    lines = [summary_text(report)]
    lines.extend(f"<{slack_escape(url)}|{slack_escape(name)}>" for name, url in links.items())
    return "\n".join(lines)


def summary_payload(report: Report, links: Mapping[str, str]) -> dict[str, Any]:
    """The webhook's JSON: ``report.to_dict()`` without the tables (they are in the stored files),
    plus the interval key, the top labels and the links."""
    payload = {k: v for k, v in report.to_dict().items() if k != "tables"}
    payload["type"] = "imagelabels.label_report"
    payload["interval_key"] = report.interval_key
    payload["top_labels"] = [{"label": label, "images": n} for label, n in top_labels(report)]
    payload["links"] = dict(links)
    return payload


def email_subject(config: ReportConfig, report: Report) -> str:
    """The configured subject with ``{name}``, ``{period}``, ``{interval}`` (the interval key)."""
    template = config.delivery.email.subject if config.delivery.email else "Label report {name} {interval}"
    return template.format(name=report.name, period=report.period, interval=report.interval_key)


def email_html(report: Report, links: Mapping[str, str], attachments: Sequence[str] = ()) -> str:
    """The mail body: interval, totals, top labels, moderation hits, links; every report string
    goes through :func:`html.escape` (labels and keys come from images, not from us)."""
    e = html.escape
    totals = totals_items(report)
    parts = [
        "<html><body>",
        f"<h2>Label report {e(report.name)} \u2014 {e(report.interval_key)}</h2>",
        f"<p>Interval: {e(interval_text(report))}</p>",
    ]
    if report.scope:
        parts.append("<p>Scope: " + ", ".join(f"{e(k)}: {e(v)}" for k, v in report.scope.items()) + "</p>")
    parts.append("<table>")
    parts.extend(
        f"<tr><th align='left'>{e(name)}</th><td align='right'>{n:,}</td></tr>" for name, n in totals
    )
    parts.append("</table>")
    labels = top_labels(report)
    if labels:
        parts.append(f"<h3>Top {len(labels)} labels</h3><ol>")
        parts.extend(f"<li>{e(label)} ({n:,} images)</li>" for label, n in labels)
        parts.append("</ol>")
    parts.append(f"<p>Moderation hits: {report.totals.moderation_hits:,}</p>")
    if links:
        parts.append("<p>Links:</p><ul>")
        parts.extend(f'<li><a href="{e(url)}">{e(name)}</a></li>' for name, url in links.items())
        parts.append("</ul>")
    if attachments:
        parts.append("<p>Attached: " + ", ".join(e(a) for a in attachments) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def email_text(report: Report, links: Mapping[str, str]) -> str:
    """The plain-text alternative of :func:`email_html`."""
    lines = [f"Label report {report.name} - {report.interval_key}", f"Interval: {interval_text(report)}"]
    lines.append(_totals_line(report))
    labels = top_labels(report)
    if labels:
        lines.append("Top labels: " + ", ".join(f"{label} ({n:,})" for label, n in labels))
    lines.extend(f"{name}: {url}" for name, url in links.items())
    return "\n".join(lines)


def email_attachments(config: ReportConfig, files: Sequence[Path]) -> list[Path]:
    """The files whose format is among the email's ``attachments`` (PDF, XLSX, charts by default)."""
    wanted = set(config.delivery.email.attachments) if config.delivery.email else set()
    return [Path(f) for f in files if Path(f).suffix.lstrip(".").lower() in wanted]


# --- sending -----------------------------------------------------------------------------------


def _sender(
    channel: str, config: ReportConfig, report: Report, files: Sequence[Path], links: Mapping[str, str]
) -> tuple[str, Callable[[], str]]:
    """The channel's connection id and a call that sends once and returns what to note on the
    record (refused recipients), or ``""``."""
    delivery = config.delivery
    if channel == "email" and delivery.email is not None:
        email = delivery.email
        attachments = email_attachments(config, files)

        def send_email() -> str:
            refused = channels.send_email(
                conn_id=email.conn_id,
                to=email.to,
                cc=email.cc,
                subject=email_subject(config, report),
                html=email_html(report, links, [a.name for a in attachments]),
                text=email_text(report, links),
                attachments=attachments,
            )
            return f"recipients refused by the server: {', '.join(refused)}" if refused else ""

        return email.conn_id, send_email
    if channel == "slack" and delivery.slack is not None:
        slack = delivery.slack

        def send_slack() -> str:
            channels.post_slack(conn_id=slack.conn_id, text=slack_text(report, links))
            return ""

        return slack.conn_id, send_slack
    if channel == "webhook" and delivery.webhook is not None:
        hook = delivery.webhook

        def send_webhook() -> str:
            channels.post_webhook(
                conn_id=hook.conn_id, payload=summary_payload(report, links), endpoint=hook.endpoint
            )
            return ""

        return hook.conn_id, send_webhook
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
    raise ValueError(f"report {config.name!r} has no {channel} delivery configured")


def deliver(
    channel: str,
    config: ReportConfig,
    report: Report,
    files: Sequence[Path],
    *,
    links: Mapping[str, str],
) -> str:
    """Send the report on ``channel`` (email, slack or webhook) once; return what to note on
    the record (``""`` when nothing).

    Failures raise :class:`~imagelabels.channels.DeliveryError` (an unexpected library error
    too, redacted); retrying is the caller's decision (the DAG: Airflow's retries). A disabled
    channel is still sent when asked: the caller chose to call it.
    """
    conn_id, send = _sender(channel, config, report, files, links)
    try:
        return send()
    except DeliveryError:
        raise
    except Exception as error:  # a bug or an unexpected library error: same contract
        reason = channels.redact(f"{type(error).__name__}: {error}", conn_id)
        raise DeliveryError(channel, conn_id, reason) from error


# --- delivery records --------------------------------------------------------------------------


def delivery_id(report: Report, channel: str) -> str:
    """One record per report, interval and channel: a rerun overwrites it."""
    return f"{report.name}:{report.interval_key}:{channel}"


def ensure_deliveries_index(es: Any) -> None:
    """Create the records index (strict mapping) if it is missing; concurrent creators are fine."""
    from imagelabels.engine.indexing import ensure_index

    ensure_index(es, DELIVERIES_INDEX, DELIVERY_MAPPINGS)


def record_delivery(
    es: Any,
    *,
    report: Report,
    channel: str,
    status: str,
    attempts: int,
    error: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Write the outcome of one channel for one report interval; return the record."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    ensure_deliveries_index(es)
    record = {
        "report": report.name,
        "period": report.period,
        "interval_key": report.interval_key,
        "channel": channel,
        "status": status,
        "attempts": attempts,
        "error": error,
        "at": _utc(at or datetime.now(UTC)).isoformat(),
    }
    es.index(
        index=DELIVERIES_INDEX,
        id=delivery_id(report, channel),
        document=record,
        refresh=settings.es_refresh(),
    )
    return record


def delivery_record(es: Any, report: Report, channel: str) -> dict[str, Any] | None:
    """The recorded outcome of ``channel`` for this report interval, or ``None``."""
    from imagelabels.engine import NotFoundError

    try:
        found = es.get(index=DELIVERIES_INDEX, id=delivery_id(report, channel))
    except NotFoundError:
        return None
    source = found.get("_source") if found.get("found", True) else None
    return dict(source) if source else None


def already_delivered(es: Any, report: Report, channel: str) -> bool:
    """Whether ``channel`` already delivered this report interval (a failure does not count)."""
    record = delivery_record(es, report, channel)
    return record is not None and record.get("status") == "delivered"


def deliver_and_record(
    es: Any,
    channel: str,
    config: ReportConfig,
    report: Report,
    files: Sequence[Path],
    *,
    links: Mapping[str, str],
    force: bool = False,
) -> str:
    """One try at delivering ``channel`` for this interval, at most one send.

    ``"skipped"`` when the channel already delivered (unless ``force``); otherwise records
    ``sending``, sends once and records the outcome: ``"delivered"`` is returned; a failure is
    recorded (``failed``, or ``uncertain`` when the message may have arrived) and the
    :class:`~imagelabels.channels.DeliveryError` re-raised. A record left ``sending`` or
    ``uncertain`` by an earlier try means the message may have arrived: nothing is sent and a
    ``DeliveryError`` with ``uncertain`` set says why (``force`` sends anyway).
    """
    prior = None if force else delivery_record(es, report, channel)
    status = prior.get("status") if prior else None
    if status == "delivered":
        return "skipped"
    if prior is not None and status in ("sending", "uncertain"):
        raise _not_again(channel, config, report, prior)
    attempt = int(prior.get("attempts") or 0) + 1 if prior is not None else 1
    record_delivery(es, report=report, channel=channel, status="sending", attempts=attempt)
    try:
        note = deliver(channel, config, report, files, links=links)
    except DeliveryError as error:
        outcome = "uncertain" if error.uncertain else "failed"
        record_delivery(
            es, report=report, channel=channel, status=outcome, attempts=attempt, error=str(error)
        )
        raise
    _record_delivered(es, report, channel, attempt, note or None)
    return "delivered"


def _not_again(channel: str, config: ReportConfig, report: Report, prior: Mapping[str, Any]) -> DeliveryError:
    """The error of a try that finds an earlier send of unknown outcome."""
    conn_id = _sender(channel, config, report, [], {})[0]
    why = prior.get("error") or "that try stopped before it could record the outcome"
    return DeliveryError(
        channel,
        conn_id,
        f"not sent again: try {prior.get('attempts')} began sending report {report.name!r} "
        f"{report.interval_key} at {prior.get('at')} and its outcome is unknown ({why}). Check "
        "with the recipients; trigger the run with redeliver=true to send it anyway",
        uncertain=True,
    )


def _record_delivered(es: Any, report: Report, channel: str, attempt: int, note: str | None) -> None:
    """Record a send that happened. The write is idempotent (same id), so a failing one is
    retried here: giving up leaves ``sending``, and the next try would refuse to send."""
    for write in range(1, RECORD_TRIES + 1):
        try:
            record_delivery(
                es, report=report, channel=channel, status="delivered", attempts=attempt, error=note
            )
            return
        except Exception:
            if write == RECORD_TRIES:
                raise
            time.sleep(RECORD_BACKOFF_SECONDS * write)
