"""Event-driven ingestion: S3 notifications in an SQS queue, processed by the same batch code as
the hourly listing.

``plan_event_batches`` drains the queue (up to a cap), parses every message
(:mod:`imagelabels.sources.events`), keeps the latest event per object, acknowledges what needs no work
(test events, our own manifests, events superseded by newer ones in the same drain) and writes
the rest as batch manifests: one JSON line per message, with its receipt handle and its events.
``process_event_batch`` handles one manifest: uploads go through
:func:`imagelabels.pipeline.batch.process_batch` (which also deletes the documents of the key's older
versions), removals delete the documents of versions that no longer exist (one search and one
bulk request per bucket, every delete accounted per item), and the batch's messages
are deleted from the queue only when all of that is written (:mod:`imagelabels.sources.sqs` explains the
guarantee).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from imagelabels.documents import document_id
from imagelabels.engine.indexing import (
    ItemFailure,
    StoredVersion,
    bulk_write,
    clear_failures,
    ensure_indices,
    other_versions,
)
from imagelabels.errors import LabelingError
from imagelabels.labelers.base import Labeler
from imagelabels.pipeline.batch import BatchIncomplete, BatchReport, RunContext, newest_wins, process_batch
from imagelabels.settings import INTERNAL_PREFIX
from imagelabels.sources import sqs as queue
from imagelabels.sources.events import ObjectEvent, ParsedMessage, latest_per_object, parse_message
from imagelabels.sources.listing import ListedObject
from imagelabels.sources.manifests import Manifest, S3Uri, manifest_prefix, manifests_root
from imagelabels.sources.objects import ObjectChanged, describe_object

log = logging.getLogger(__name__)


@dataclass
class DrainReport:
    """What one drain found (small: it travels through XCom)."""

    messages: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    events: int = 0
    superseded_events: int = 0
    acknowledged_now: int = 0
    malformed: int = 0
    internal_events: int = 0
    batches: int = 0

    def as_xcom(self) -> dict[str, Any]:
        data = asdict(self)
        data["kinds"] = dict(self.kinds)
        return data


def _is_internal(event: ObjectEvent, staging_root: S3Uri) -> bool:
    """Events about our own manifests (when the staging prefix is in a notifying bucket)."""
    return (
        event.bucket == staging_root.bucket and event.key.startswith(staging_root.key)
    ) or event.key.startswith(INTERNAL_PREFIX)


def _event_to_json(event: ObjectEvent) -> dict[str, Any]:
    data = asdict(event)
    data["event_time"] = event.event_time.isoformat()
    return data


def _event_from_json(data: dict[str, Any]) -> ObjectEvent:
    return ObjectEvent(**{**data, "event_time": datetime.fromisoformat(data["event_time"])})


def _batches(messages: Sequence[tuple[ParsedMessage, list[ObjectEvent]]], size: int) -> Iterator[list[Any]]:
    """Group whole messages into batches of about ``size`` events (a message is never split)."""
    batch: list[tuple[ParsedMessage, list[ObjectEvent]]] = []
    events = 0
    for message, winners in messages:
        batch.append((message, winners))
        events += len(winners)
        if events >= size:
            yield batch
            batch, events = [], 0
    if batch:
        yield batch


def plan_event_batches(
    *,
    sqs_client: Any,
    s3_client: Any,
    es: Any,
    settings: queue.QueueSettings,
    staging_uri: str,
    run: RunContext,
    batch_size: int,
) -> tuple[list[Manifest], DrainReport]:
    """Drain the queue into batch manifests; acknowledge messages that need no work."""
    ensure_indices(es)
    queue.check_queue(sqs_client, settings.queue_url)
    report = DrainReport()
    staging_root = manifests_root(staging_uri)
    parsed: list[ParsedMessage] = []
    to_release: list[str] = []
    for raw in queue.receive(sqs_client, settings):
        message = parse_message(raw)
        report.messages += 1
        report.kinds[message.kind] += 1
        if message.kind == "malformed":
            report.malformed += 1
            receives = raw.get("Attributes", {}).get("ApproximateReceiveCount", "?")
            log.error(
                "malformed message %s (receive #%s), left for the dead-letter queue: %s; body: %s",
                message.message_id,
                receives,
                message.error,
                queue.body_preview(str(raw.get("Body", ""))),
            )
            to_release.append(message.receipt_handle)
            continue
        parsed.append(message)
    if to_release:  # visible again now: each receive counts towards maxReceiveCount
        queue.change_visibility(sqs_client, settings.queue_url, to_release, 0)

    all_events = [e for m in parsed for e in m.events if not _is_internal(e, staging_root)]
    report.internal_events = sum(len(m.events) for m in parsed) - len(all_events)
    report.events = len(all_events)
    latest = latest_per_object(all_events)
    winners = {id(event) for event in latest.values()}
    report.superseded_events = len(all_events) - len(latest)

    with_work: list[tuple[ParsedMessage, list[ObjectEvent]]] = []
    acknowledge: list[str] = []
    for message in parsed:
        mine = [e for e in message.events if id(e) in winners]
        if mine:
            with_work.append((message, mine))
        else:  # a test event, an event type we ignore, our own manifest, or superseded
            acknowledge.append(message.receipt_handle)
    errors = queue.delete(sqs_client, settings.queue_url, acknowledge)
    report.acknowledged_now = len(acknowledge) - len(errors)

    folder = manifest_prefix(staging_uri, run.dag_id, run.run_id)
    manifests = []
    for number, batch in enumerate(_batches(with_work, batch_size), start=1):
        lines = [
            json.dumps(
                {
                    "message_id": m.message_id,
                    "receipt_handle": m.receipt_handle,
                    "events": [_event_to_json(e) for e in events],
                },
                ensure_ascii=False,
            )
            for m, events in batch
        ]
        key = f"{folder.key}events-{number:05d}.jsonl"
        s3_client.put_object(Bucket=folder.bucket, Key=key, Body=("\n".join(lines) + "\n").encode("utf-8"))
        count = sum(len(events) for _, events in batch)
        manifests.append(Manifest(uri=str(S3Uri(folder.bucket, key)), count=count, bucket=""))
    report.batches = len(manifests)
    log.info("drained %s", report.as_xcom())
    return manifests, report


@dataclass(frozen=True)
class EventBatch:
    """One manifest of messages: their receipt handles and their (latest) events."""

    receipt_handles: list[str]
    events: list[ObjectEvent]


def read_event_manifest(s3_client: Any, uri: str) -> EventBatch:
    location = S3Uri.parse(uri)
    body = s3_client.get_object(Bucket=location.bucket, Key=location.key)["Body"].read().decode("utf-8")
    handles, events = [], []
    for line in body.splitlines():
        if line.strip():
            record = json.loads(line)
            handles.append(record["receipt_handle"])
            events += [_event_from_json(e) for e in record["events"]]
    return EventBatch(handles, events)


@dataclass(frozen=True)
class _Current:
    """What S3 holds for a removed key now: the current version's document id and LastModified,
    or neither when the key is gone."""

    doc_id: str | None = None
    last_modified: datetime | None = None


def _current_version(s3_client: Any, event: ObjectEvent) -> _Current:
    """The version of the removed object that exists *now*, if any.

    A removal event may arrive after a newer upload of the same key was processed (events of
    different drains are not ordered); asking S3 makes the delete remove only documents of
    versions that no longer exist.
    """
    listed = ListedObject(event.key, 0, "", event.event_time)
    try:
        info = describe_object(s3_client, event.bucket, listed)
    except LabelingError as error:
        if error.reason == "object_gone":
            return _Current()
        raise
    except ObjectChanged:  # cannot happen without an ETag in `listed`; be explicit anyway
        return _Current()
    return _Current(document_id(info.bucket, info.key, info.version_id, info.etag), info.last_modified)


@dataclass
class RemovalOutcome:
    """What deleting the documents of removed objects did, per item."""

    deleted: int = 0
    errors: list[ItemFailure] = field(default_factory=list)


def _removable(event: ObjectEvent, current: _Current, versions: list[StoredVersion]) -> list[StoredVersion]:
    """The documents a removal deletes: those of versions that no longer exist.

    The key still exists (a late removal of an older version): the same rule as an upload's,
    every other version unless a strictly newer one is indexed (:func:`pipeline.newest_wins`).
    The key is gone: every document of a version modified before the removal; one modified
    after it belongs to a later upload, indexed by a concurrent run, whose own removal event
    will come if it is gone too.
    """
    if current.last_modified is not None:
        _, stale = newest_wins({event.key: current.last_modified}, {event.key: versions})
        return stale
    return [v for v in versions if v.last_modified is None or v.last_modified <= event.event_time]


def delete_documents(
    s3_client: Any, es: Any, removals: Iterable[ObjectEvent], *, refresh: bool | str
) -> RemovalOutcome:
    """Delete the documents of removed objects (keeping the one of a current version, if any)
    and their failure records.

    One HEAD per removed key (S3 has no batch HEAD, and only S3 knows whether a newer version
    exists), then per bucket one search for the documents of all removed keys and one bulk
    request with every delete, each accounted: a refused delete is returned, not dropped (the
    batch's messages then stay on the queue and come back).
    """
    outcome = RemovalOutcome()
    by_bucket: dict[str, list[tuple[ObjectEvent, _Current]]] = defaultdict(list)
    for event in removals:
        by_bucket[event.bucket].append((event, _current_version(s3_client, event)))
    for bucket, events in by_bucket.items():
        keep = [current.doc_id for _, current in events if current.doc_id is not None]
        found = other_versions(es, bucket, [event.key for event, _ in events], keep)
        actions = [
            {"_op_type": "delete", "_index": version.index, "_id": version.doc_id}
            for event, current in events
            for version in _removable(event, current, found.get(event.key, []))
        ]
        written = bulk_write(es, actions, refresh=refresh)
        outcome.deleted += written.deleted + written.not_found  # not found: deleted by another run
        outcome.errors += written.failures
        gone = [event.key for event, current in events if current.doc_id is None]
        outcome.errors += clear_failures(es, bucket, gone, refresh=refresh).failures
    return outcome


def process_event_batch(
    *,
    sqs_client: Any,
    s3_client: Any,
    es: Any,
    labeler: Labeler,
    manifest_uri: str,
    queue_url: str,
    visibility_timeout: int,
    run: RunContext,
    refresh: bool | str = False,
) -> dict[str, Any]:
    """Index uploads and delete removals of one manifest, then acknowledge its messages.

    Messages are deleted only when every document and failure record of the batch was written;
    otherwise they stay in flight until their timeout and come back (the task fails, so the
    reason is visible).
    """
    batch = read_event_manifest(s3_client, manifest_uri)
    uploads: dict[str, list[ObjectEvent]] = defaultdict(list)
    removals = []
    for event in batch.events:
        if event.action == "delete":
            removals.append(event)
        else:
            uploads[event.bucket].append(event)
    totals = BatchReport()
    with queue.VisibilityKeeper(sqs_client, queue_url, batch.receipt_handles, visibility_timeout):
        for bucket, events in uploads.items():
            objects = [
                ListedObject(e.key, e.size or 0, (e.etag or "").strip('"'), e.event_time) for e in events
            ]
            report = process_batch(
                s3_client=s3_client,
                es=es,
                labeler=labeler,
                bucket=bucket,
                objects=objects,
                run=run,
                refresh=refresh,
            )
            totals.add(report)
        removed = delete_documents(s3_client, es, removals, refresh=refresh)
        totals.index_errors += removed.errors
    complete = not totals.index_errors
    if complete:
        errors = queue.delete(sqs_client, queue_url, batch.receipt_handles)
        if errors:
            log.warning(
                "%d message(s) could not be deleted (they will be seen again): %s", len(errors), errors[:3]
            )
    summary = {**totals.as_xcom(), "removed": len(removals), "documents_deleted": removed.deleted}
    summary["messages_acknowledged"] = len(batch.receipt_handles) if complete else 0
    log.info("event batch %s: %s", manifest_uri, summary)
    if not complete:
        raise BatchIncomplete(
            f"{len(totals.index_errors)} write(s) refused by Elasticsearch; the batch's messages stay on the "
            "queue and come back after their visibility timeout"
        )
    totals.raise_if_incomplete()  # retryable labeling failures: recorded, acknowledged, retried by Airflow
    return summary
