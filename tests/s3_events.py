"""Realistic S3 event message bodies (S3 direct, SNS-wrapped, EventBridge, test events) and the
"which messages are complete" rule, for the SQS tests: test infrastructure, not product code.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from imagelabels.sources.events import ObjectId, ParsedMessage

AUTO = "auto"
"""Default of the builders' ``sequencer``/``etag``: derive a realistic value (``None`` omits it)."""


def completed_messages(messages: Iterable[ParsedMessage], done: Collection[ObjectId]) -> list[ParsedMessage]:
    """The messages that may be deleted from SQS once the objects in ``done`` are handled.

    A message is complete when each of its objects is done, whichever message carried the winning
    event (a superseded PUT is covered by the later DELETE's work). Test events and messages of
    ignored event types have no objects and are complete at once; malformed messages never are:
    what to do with them (leave them for the dead-letter queue, or log and delete) is the caller's
    policy.
    """
    finished = frozenset(done)
    return [message for message in messages if message.kind != "malformed" and message.objects <= finished]


def s3_event_body(
    bucket: str,
    key: str,
    *,
    event_name: str = "ObjectCreated:Put",
    sequencer: str | None = AUTO,
    etag: str | None = AUTO,
    size: int | None = 1024,
    version_id: str | None = None,
    event_time: datetime | None = None,
    encode_key: bool = True,
) -> str:
    """An S3 -> SQS body with one record, shaped like S3's (event version 2.1).

    The key is encoded as S3 does (``quote_plus``, ``/`` kept). ``AUTO`` derives the sequencer from
    the event time and the ETag from bucket/key/time; removal records carry no size or ETag, as in S3.
    """
    when = event_time or datetime.now(UTC)
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/") if encode_key else key}
    if not event_name.startswith(("ObjectRemoved:", "LifecycleExpiration:")):
        if size is not None:
            obj["size"] = size
        if etag is not None:
            obj["eTag"] = _fake_etag(bucket, key, when) if etag == AUTO else etag
    if version_id is not None:
        obj["versionId"] = version_id
    if sequencer is not None:
        obj["sequencer"] = _fake_sequencer(when).upper() if sequencer == AUTO else sequencer
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": _iso_millis(when),
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "EXAMPLE/id2"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "imagelabels",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKEXAMPLE"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }
    return json.dumps({"Records": [record]})


def s3_test_event_body(bucket: str, *, event_time: datetime | None = None) -> str:
    """The ``s3:TestEvent`` S3 sends when a notification configuration is saved."""
    when = event_time or datetime.now(UTC)
    return json.dumps(
        {
            "Service": "Amazon S3",
            "Event": "s3:TestEvent",
            "Time": _iso_millis(when),
            "Bucket": bucket,
            "RequestId": "5582815E1AEA5ADF",
            "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
        }
    )


def sns_envelope(body: str, *, topic_arn: str = "arn:aws:sns:us-east-1:123456789012:imagelabels") -> str:
    """``body`` as SQS receives it from an SNS subscription with raw message delivery off."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Subject": "Amazon S3 Notification",
            "Message": body,
            "Timestamp": _iso_millis(datetime.now(UTC)),
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-EXAMPLE.pem",
            "UnsubscribeURL": f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic_arn}:EXAMPLE",
        }
    )


def eventbridge_body(
    bucket: str,
    key: str,
    *,
    detail_type: str = "Object Created",
    reason: str | None = None,
    deletion_type: str | None = None,
    sequencer: str | None = AUTO,
    etag: str | None = AUTO,
    size: int | None = 1024,
    version_id: str | None = None,
    event_time: datetime | None = None,
    encode_key: bool = False,
) -> str:
    """An EventBridge -> SQS body shaped like S3's "Object Created"/"Object Deleted" events.

    ``reason`` defaults to ``PutObject``/``DeleteObject`` and ``deletion_type`` of deletions to
    ``Permanently Deleted``. The key is plain unless ``encode_key`` (see the module docstring).
    """
    when = event_time or datetime.now(UTC)
    deleted = detail_type == "Object Deleted"
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/") if encode_key else key}
    if size is not None and not deleted:
        obj["size"] = size
    if etag is not None:
        obj["etag"] = _fake_etag(bucket, key, when) if etag == AUTO else etag
    if version_id is not None:
        obj["version-id"] = version_id
    if sequencer is not None:
        obj["sequencer"] = _fake_sequencer(when) if sequencer == AUTO else sequencer
    detail: dict[str, Any] = {
        "version": "0",
        "bucket": {"name": bucket},
        "object": obj,
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": "123456789012",
        "source-ip-address": "1.2.3.4",
        "reason": reason or ("DeleteObject" if deleted else "PutObject"),
    }
    if deleted:
        detail["deletion-type"] = deletion_type or "Permanently Deleted"
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": "aws.s3",
            "account": "123456789012",
            "time": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": detail,
        }
    )


def sqs_message(
    body: str, *, message_id: str | None = None, receipt_handle: str | None = None
) -> dict[str, Any]:
    """``body`` wrapped like one entry of boto3's ``receive_message()["Messages"]``."""
    message_id = message_id or str(uuid.uuid4())
    return {
        "MessageId": message_id,
        "ReceiptHandle": receipt_handle or f"rh-{message_id}",
        "MD5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "Body": body,
    }


def _iso_millis(when: datetime) -> str:
    utc = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _fake_sequencer(when: datetime) -> str:
    """Seconds then microseconds in hex, so later events of one key get greater sequencers."""
    utc = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return f"00{int(utc.timestamp()):08x}{utc.microsecond:08x}"


def _fake_etag(bucket: str, key: str, when: datetime) -> str:
    return hashlib.md5(f"{bucket}/{key}@{when.isoformat()}".encode(), usedforsecurity=False).hexdigest()
