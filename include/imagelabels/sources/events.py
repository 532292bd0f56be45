"""Parse the S3 event messages an SQS queue receives, whatever route they took.

An SQS-driven ingestion DAG drains a queue in batches, labels and indexes new images and deletes the
documents of removed ones. A message may only be deleted from SQS once its work is done, so every
parsed message keeps its ``MessageId``/``ReceiptHandle`` next to the object events it carried.

Bodies we understand (``ParsedMessage.kind``):

* ``"s3"``: S3 -> SQS directly, or S3 -> SNS -> SQS with raw message delivery on:
  ``{"Records": [{"eventName": "ObjectCreated:Put", "s3": {...}}]}``. Keys are URL-encoded the
  ``application/x-www-form-urlencoded`` way (space -> ``+``, ``+`` -> ``%2B``) and decoded with
  ``unquote_plus``; moto's ``%2F`` for ``/`` decodes the same way.
* ``"sns"``: the SNS envelope (``{"Type": "Notification", "Message": "<JSON string>"}``) around
  either of the other formats.
* ``"eventbridge"``: EventBridge -> SQS (``{"source": "aws.s3", "detail-type": "Object Created",
  "detail": {...}}``). S3's documentation states URL encoding for notification keys only; its
  EventBridge page and examples show plain keys, and moto sends them plain, so EventBridge keys are
  taken as they are. Pass ``eventbridge_keys_encoded=True`` to :func:`parse_message` if a
  deployment shows otherwise.
* ``"test"``: ``s3:TestEvent``, sent once when a notification is configured (directly or through
  SNS): acknowledge it, there is no work.
* ``"malformed"``: anything else, with a readable ``error``. Parsing is all-or-nothing per message:
  if one acted-on record is broken the message carries no events, so a half-understood message is
  never acknowledged as done.

Only ``ObjectCreated:*`` (-> ``"upsert"``) and ``ObjectRemoved:*``/``LifecycleExpiration:*``
(-> ``"delete"``) records produce events. Restore, tagging, ACL, replication, lifecycle transition
and Intelligent-Tiering records change nothing we index (``ObjectRestore:Delete`` is the *restored
copy* expiring, not the object), so they are skipped and their message is still a valid one to
acknowledge.

Ordering: S3 delivers at least once and out of order. :func:`latest_per_object` keeps the newest
event per object by S3's ``sequencer`` (see :func:`sequencer_key`) and falls back to the event time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

Action = Literal["upsert", "delete"]
MessageKind = Literal["s3", "sns", "eventbridge", "test", "malformed"]
ObjectId = tuple[str, str]
"""(bucket, key): sequencers and ordering only make sense within one object."""


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# On an exact tie (same time, no usable sequencer) the upsert wins: an upsert reads the object, so if
# it is in fact gone the consumer sees NoSuchKey and can delete instead; a wrong delete goes unnoticed.
_TIE_RANK: Mapping[Action, int] = {"delete": 0, "upsert": 1}
_SNS_CONTROL_TYPES = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})
_EVENTBRIDGE_ACTIONS: Mapping[str, Action] = {"Object Created": "upsert", "Object Deleted": "delete"}
_CREATED_REASONS: Mapping[str, str] = {
    "PutObject": "ObjectCreated:Put",
    "POST Object": "ObjectCreated:Post",
    "CopyObject": "ObjectCreated:Copy",
    "CompleteMultipartUpload": "ObjectCreated:CompleteMultipartUpload",
}
_DELETED_REASONS: Mapping[tuple[str, str], str] = {
    ("DeleteObject", "Permanently Deleted"): "ObjectRemoved:Delete",
    ("DeleteObject", "Delete Marker Created"): "ObjectRemoved:DeleteMarkerCreated",
    ("Lifecycle Expiration", "Permanently Deleted"): "LifecycleExpiration:Delete",
    ("Lifecycle Expiration", "Delete Marker Created"): "LifecycleExpiration:DeleteMarkerCreated",
}


@dataclass(frozen=True)
class ObjectEvent:
    """One thing that happened to one object; ``key`` is the real (decoded) S3 key.

    ``event_name`` uses S3 notification names for every source (EventBridge events are mapped, e.g.
    ``Object Deleted``/``DeleteObject``/``Delete Marker Created`` -> ``ObjectRemoved:DeleteMarkerCreated``)
    so logs and metrics read the same whatever route the event took.
    """

    bucket: str
    key: str
    action: Action
    event_time: datetime
    sequencer: str | None
    etag: str | None
    version_id: str | None
    size: int | None
    event_name: str


@dataclass(frozen=True)
class ParsedMessage:
    """One SQS message: the handle to delete it with and the object events it carried."""

    message_id: str
    receipt_handle: str
    events: tuple[ObjectEvent, ...]
    kind: MessageKind
    error: str | None

    @property
    def objects(self) -> frozenset[ObjectId]:
        """The objects whose work must be done before this message may be deleted."""
        return frozenset((event.bucket, event.key) for event in self.events)


class _Malformed(ValueError):
    """A body we cannot trust; its message becomes ``ParsedMessage.error``."""


# --- parsing -------------------------------------------------------------------------------------


def parse_message(message: Mapping[str, Any], *, eventbridge_keys_encoded: bool = False) -> ParsedMessage:
    """Parse one ``receive_message`` message; never raises for a bad body (kind ``"malformed"``).

    Lambda-style lower-case ``messageId``/``receiptHandle``/``body`` are accepted too, so the same
    parser serves an SQS-triggered function.
    """
    message_id = _first_text(message, "MessageId", "messageId")
    receipt_handle = _first_text(message, "ReceiptHandle", "receiptHandle")
    try:
        kind, events = _parse_body(_body_of(message), eventbridge_keys_encoded)
    except _Malformed as exc:
        return ParsedMessage(message_id, receipt_handle, (), "malformed", str(exc))
    return ParsedMessage(message_id, receipt_handle, events, kind, None)


def _first_text(message: Mapping[str, Any], *names: str) -> str:
    """The first of ``names`` holding a string; ids are informative, a missing one is not fatal."""
    for name in names:
        value = message.get(name)
        if isinstance(value, str):
            return value
    return ""


def _body_of(message: Mapping[str, Any]) -> str:
    body = message.get("Body", message.get("body"))
    if not isinstance(body, str):
        raise _Malformed("message has no string Body")
    return body


def _load_json_object(text: str, what: str) -> Mapping[str, Any]:
    """Decode ``text`` and insist on a JSON object: every format we accept is one."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _Malformed(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise _Malformed(f"{what} is a JSON {type(value).__name__}, expected an object")
    return value


def _parse_body(body: str, eventbridge_keys_encoded: bool) -> tuple[MessageKind, tuple[ObjectEvent, ...]]:
    document = _load_json_object(body, "body")
    if _is_sns_envelope(document):
        inner = _load_json_object(_sns_message(document), "SNS Message")
        if _is_sns_envelope(inner):
            raise _Malformed("SNS Message is itself an SNS envelope")
        kind, events = _parse_document(inner, eventbridge_keys_encoded, "SNS Message")
        return ("test" if kind == "test" else "sns"), events
    return _parse_document(document, eventbridge_keys_encoded, "body")


def _parse_document(
    document: Mapping[str, Any], eventbridge_keys_encoded: bool, what: str
) -> tuple[MessageKind, tuple[ObjectEvent, ...]]:
    """Recognise one unwrapped document by the fields that define its format."""
    if "Records" in document:
        return "s3", _parse_records(document["Records"])
    if document.get("Event") == "s3:TestEvent":
        return "test", ()
    if "detail-type" in document and "detail" in document:
        return "eventbridge", _parse_eventbridge(document, eventbridge_keys_encoded)
    shown = ", ".join(sorted(str(name) for name in document)[:8]) or "none"
    raise _Malformed(f"{what} is not an S3, SNS or EventBridge event (keys: {shown})")


def _is_sns_envelope(document: Mapping[str, Any]) -> bool:
    return "TopicArn" in document and isinstance(document.get("Type"), str)


def _sns_message(envelope: Mapping[str, Any]) -> str:
    kind = envelope["Type"]
    if kind in _SNS_CONTROL_TYPES:
        raise _Malformed(f"SNS {kind}, not an S3 event: confirm or remove the subscription")
    if kind != "Notification":
        raise _Malformed(f"SNS message of Type {kind!r}, expected 'Notification'")
    message = envelope.get("Message")
    if not isinstance(message, str):
        raise _Malformed("SNS Notification has no string Message")
    return message


def _parse_records(records: object) -> tuple[ObjectEvent, ...]:
    if not isinstance(records, list) or not records:
        raise _Malformed("Records must be a non-empty list")
    events = (_parse_record(record, f"Records[{index}]") for index, record in enumerate(records))
    return tuple(event for event in events if event is not None)


def _parse_record(record: object, where: str) -> ObjectEvent | None:
    """One S3 notification record; ``None`` for the event types we do not act on."""
    fields = _mapping(record, where)
    s3 = _mapping(fields.get("s3"), f"{where}.s3")
    # MinIO and Ceph prefix the name with "s3:" as in the notification configuration; S3 does not.
    event_name = _text(fields.get("eventName"), f"{where}.eventName").removeprefix("s3:")
    action = _record_action(event_name)
    if action is None:
        return None
    obj = _mapping(s3.get("object"), f"{where}.s3.object")
    return ObjectEvent(
        bucket=_text(_mapping(s3.get("bucket"), f"{where}.s3.bucket").get("name"), f"{where}.s3.bucket.name"),
        key=_decoded_key(_text(obj.get("key"), f"{where}.s3.object.key"), encoded=True),
        action=action,
        event_time=_parse_time(fields.get("eventTime"), f"{where}.eventTime"),
        sequencer=_sequencer(obj.get("sequencer")),
        etag=_etag(obj.get("eTag")),
        version_id=_optional_text(obj.get("versionId")),
        size=_optional_int(obj.get("size")),
        event_name=event_name,
    )


def _record_action(event_name: str) -> Action | None:
    if event_name.startswith("ObjectCreated:"):
        return "upsert"
    if event_name.startswith(("ObjectRemoved:", "LifecycleExpiration:")):
        return "delete"
    return None


def _parse_eventbridge(event: Mapping[str, Any], keys_encoded: bool) -> tuple[ObjectEvent, ...]:
    if event.get("source") != "aws.s3":
        raise _Malformed(f"EventBridge event from {event.get('source')!r}, expected 'aws.s3'")
    detail_type = _text(event.get("detail-type"), "detail-type")
    action = _EVENTBRIDGE_ACTIONS.get(detail_type)
    if action is None:
        return ()
    detail = _mapping(event.get("detail"), "detail")
    obj = _mapping(detail.get("object"), "detail.object")
    return (
        ObjectEvent(
            bucket=_text(_mapping(detail.get("bucket"), "detail.bucket").get("name"), "detail.bucket.name"),
            key=_decoded_key(_text(obj.get("key"), "detail.object.key"), encoded=keys_encoded),
            action=action,
            event_time=_parse_time(event.get("time"), "time"),
            sequencer=_sequencer(obj.get("sequencer")),
            # moto spells it "eTag" as in notifications; S3 itself sends "etag".
            etag=_etag(obj.get("etag", obj.get("eTag"))),
            version_id=_optional_text(obj.get("version-id")),
            size=_optional_int(obj.get("size")),
            event_name=_eventbridge_event_name(
                detail_type, _optional_text(detail.get("reason")), _optional_text(detail.get("deletion-type"))
            ),
        ),
    )


def _eventbridge_event_name(detail_type: str, reason: str | None, deletion_type: str | None) -> str:
    """The S3 notification name of an EventBridge event, so both routes log alike."""
    if detail_type == "Object Created":
        return _CREATED_REASONS.get(reason or "", f"ObjectCreated:{reason or 'Unknown'}")
    named = _DELETED_REASONS.get((reason or "", deletion_type or ""))
    return named or f"ObjectRemoved:{reason or 'Unknown'}"


# --- field helpers -------------------------------------------------------------------------------


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Malformed(f"{where} is missing or not an object")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{where} is missing or not a non-empty string")
    return value


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _etag(value: object) -> str | None:
    """ETags without the quotes S3 puts around them in HTTP headers, so both spellings compare equal."""
    stripped = value.strip('"') if isinstance(value, str) else ""
    return stripped or None


def _sequencer(value: object) -> str | None:
    """A usable sequencer or ``None``: a garbled one must not win the ordering by accident."""
    text = _optional_text(value)
    return text if text is not None and set(text) <= _HEX_DIGITS else None


def _decoded_key(raw: str, *, encoded: bool) -> str:
    key = unquote_plus(raw) if encoded else raw
    if not key:
        raise _Malformed("object key is empty")
    return key


def _parse_time(value: object, where: str) -> datetime:
    """ISO-8601 (``...Z``) as S3 and EventBridge send it; epoch seconds as moto's EventBridge does."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise _Malformed(f"{where} is not a valid timestamp: {value!r}") from None
    if not isinstance(value, str):
        raise _Malformed(f"{where} is missing or not a timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Malformed(f"{where} is not an ISO-8601 time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# --- ordering ------------------------------------------------------------------------------------


def sequencer_key(sequencer: str) -> str:
    """A sort key that orders sequencers of the *same object* the way S3 documents.

    S3: "The sequencers can be of different lengths. To compare these values, first right pad the
    shorter value with zeros, and then do a lexicographical comparison" (event message structure,
    Amazon S3 user guide). Right-padding with the smallest digit and comparing equals comparing
    with trailing zeros stripped, which needs no knowledge of the other value. Case is folded so
    EventBridge's lower-case hex compares with the notifications' upper case.
    """
    if not sequencer or not set(sequencer) <= _HEX_DIGITS:
        raise ValueError(f"not a hexadecimal sequencer: {sequencer!r}")
    return sequencer.upper().rstrip("0")


def latest_per_object(events: Iterable[ObjectEvent]) -> dict[ObjectId, ObjectEvent]:
    """The newest event of each (bucket, key), in order of first appearance.

    When every event of an object has a sequencer they are ordered by it (then time, then action);
    otherwise all of that object's events are ordered by ``event_time`` so the order stays
    transitive. Exact ties go to the upsert (it reads the object, so a wrong choice shows up as
    NoSuchKey), then to the first event seen: the duplicate pair a multipart upload can produce
    (same sequencer and ETag) collapses into one, and a redelivered message changes nothing.
    """
    groups: dict[ObjectId, list[ObjectEvent]] = {}
    for event in events:
        groups.setdefault((event.bucket, event.key), []).append(event)
    return {object_id: _latest(group) for object_id, group in groups.items()}


def _latest(group: list[ObjectEvent]) -> ObjectEvent:
    sequenced = [(sequencer_key(event.sequencer), event) for event in group if event.sequencer is not None]
    if len(sequenced) == len(group):
        return max(sequenced, key=lambda pair: (pair[0], pair[1].event_time, _TIE_RANK[pair[1].action]))[1]
    return max(group, key=lambda event: (event.event_time, _TIE_RANK[event.action]))
