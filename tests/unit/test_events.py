"""Parsing of the S3 event bodies an SQS queue receives, and their per-object ordering."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagelabels.sources.events import (
    ObjectEvent,
    ParsedMessage,
    latest_per_object,
    parse_message,
    sequencer_key,
)
from tests.s3_events import (
    completed_messages,
    eventbridge_body,
    s3_event_body,
    s3_test_event_body,
    sns_envelope,
    sqs_message,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
UNICODE_KEY = "fotos/Straße 1+2 100%.jpg"

# The examples of the Amazon S3 user guide ("Event message structure", "EventBridge event message
# structure"), verbatim apart from the layout: the parser must take what S3 really sends.
AWS_DOC_PUT = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-west-2",
            "eventTime": "1970-01-01T00:00:00.000Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AIDAJDPLRKLG7UEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {
                "x-amz-request-id": "C3D13FE58DE4C810",
                "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "testConfigRule",
                "bucket": {
                    "name": "mybucket",
                    "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                    "arn": "arn:aws:s3:::mybucket",
                },
                "object": {
                    "key": "HappyFace.jpg",
                    "size": 1024,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                    "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                    "sequencer": "0055AED6DCD90281E5",
                },
            },
        }
    ]
}
AWS_DOC_TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2014-10-13T15:57:02.089Z",
    "Bucket": "bucketname",
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}
AWS_DOC_EB_DELETED = {
    "version": "0",
    "id": "2ee9cc15-d022-99ea-1fb8-1b1bac4850f9",
    "detail-type": "Object Deleted",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2021-11-12T00:00:00Z",
    "region": "ca-central-1",
    "resources": ["arn:aws:s3:::DOC-EXAMPLE-BUCKET1"],
    "detail": {
        "version": "0",
        "bucket": {"name": "DOC-EXAMPLE-BUCKET1"},
        "object": {
            "key": "example-key",
            "etag": "d41d8cd98f00b204e9800998ecf8427e",
            "version-id": "1QW9g1Z99LUNbvaaYVpW9xDlOLU.qxgF",
            "sequencer": "617f0837b476e463",
        },
        "request-id": "0BH729840619AG5K",
        "requester": "123456789012",
        "source-ip-address": "1.2.3.4",
        "reason": "DeleteObject",
        "deletion-type": "Delete Marker Created",
    },
}


def parse(body: str, **kwargs: Any) -> ParsedMessage:
    return parse_message(sqs_message(body, message_id="m-1", receipt_handle="rh-1"), **kwargs)


def only_event(parsed: ParsedMessage) -> ObjectEvent:
    assert parsed.error is None, parsed.error
    assert len(parsed.events) == 1
    return parsed.events[0]


def event(
    key: str = "k",
    action: str = "upsert",
    *,
    sequencer: str | None = None,
    at: datetime = T0,
    bucket: str = "b",
    etag: str | None = None,
) -> ObjectEvent:
    return ObjectEvent(
        bucket=bucket,
        key=key,
        action="delete" if action == "delete" else "upsert",
        event_time=at,
        sequencer=sequencer,
        etag=etag,
        version_id=None,
        size=None,
        event_name="ObjectRemoved:Delete" if action == "delete" else "ObjectCreated:Put",
    )


# --- the formats ---------------------------------------------------------------------------------


def test_aws_documentation_put_example() -> None:
    parsed = parse(json.dumps(AWS_DOC_PUT))
    assert (parsed.kind, parsed.message_id, parsed.receipt_handle) == ("s3", "m-1", "rh-1")
    assert only_event(parsed) == ObjectEvent(
        bucket="mybucket",
        key="HappyFace.jpg",
        action="upsert",
        event_time=datetime(1970, 1, 1, tzinfo=UTC),
        sequencer="0055AED6DCD90281E5",
        etag="d41d8cd98f00b204e9800998ecf8427e",
        version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko",
        size=1024,
        event_name="ObjectCreated:Put",
    )


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(AWS_DOC_TEST_EVENT),
        s3_test_event_body("photos"),
        sns_envelope(json.dumps(AWS_DOC_TEST_EVENT)),
    ],
    ids=["direct", "helper", "sns-wrapped"],
)
def test_test_event_is_acknowledged_without_work(body: str) -> None:
    parsed = parse(body)
    assert (parsed.kind, parsed.events, parsed.error) == ("test", (), None)
    assert completed_messages([parsed], done=()) == [parsed]


@pytest.mark.parametrize(
    ("event_name", "action"),
    [
        ("ObjectCreated:Put", "upsert"),
        ("ObjectCreated:Post", "upsert"),
        ("ObjectCreated:Copy", "upsert"),
        ("ObjectCreated:CompleteMultipartUpload", "upsert"),
        ("ObjectRemoved:Delete", "delete"),
        ("ObjectRemoved:DeleteMarkerCreated", "delete"),
        ("LifecycleExpiration:Delete", "delete"),
        ("LifecycleExpiration:DeleteMarkerCreated", "delete"),
    ],
)
def test_s3_event_names_map_to_actions(event_name: str, action: str) -> None:
    parsed_event = only_event(parse(s3_event_body("b", "k.jpg", event_name=event_name, event_time=T0)))
    assert (parsed_event.action, parsed_event.event_name, parsed_event.event_time) == (action, event_name, T0)


@pytest.mark.parametrize(
    "event_name",
    [
        "ObjectRestore:Post",
        "ObjectRestore:Completed",
        "ObjectRestore:Delete",
        "ObjectTagging:Put",
        "ObjectTagging:Delete",
        "ObjectAcl:Put",
        "Replication:OperationFailedReplication",
        "LifecycleTransition",
        "IntelligentTiering",
        "ReducedRedundancyLostObject",
    ],
)
def test_event_types_we_do_not_act_on_are_valid_and_empty(event_name: str) -> None:
    parsed = parse(s3_event_body("b", "k.jpg", event_name=event_name))
    assert (parsed.kind, parsed.events, parsed.error) == ("s3", (), None)
    assert completed_messages([parsed], done=()) == [parsed]


def test_minio_style_s3_prefixed_event_name() -> None:
    parsed_event = only_event(parse(s3_event_body("b", "k.jpg", event_name="s3:ObjectCreated:Put")))
    assert (parsed_event.action, parsed_event.event_name) == ("upsert", "ObjectCreated:Put")


def test_removal_record_has_no_size_or_etag() -> None:
    body = s3_event_body("b", "k.jpg", event_name="ObjectRemoved:DeleteMarkerCreated", version_id="v2")
    assert set(json.loads(body)["Records"][0]["s3"]["object"]) == {"key", "versionId", "sequencer"}
    parsed_event = only_event(parse(body))
    assert (parsed_event.size, parsed_event.etag, parsed_event.version_id) == (None, None, "v2")


@pytest.mark.parametrize(
    "key",
    [
        "plain.jpg",
        "my photo.jpg",
        "c++ notes+1.png",
        "100%.jpg",
        "%41 stays %41.jpg",
        UNICODE_KEY,
        "a/b/c/d/e/f.jpg",
        "日本/写真 1.jpg",
        "emoji 😀/x=1&y=2;z:3?.png",
    ],
)
def test_s3_keys_round_trip_through_url_encoding(key: str) -> None:
    assert only_event(parse(s3_event_body("b", key))).key == key


@pytest.mark.parametrize(
    ("encoded", "key"),
    [
        ("red+flower.jpg", "red flower.jpg"),  # the AWS documentation's example
        ("c%2B%2B.png", "c++.png"),  # a literal + arrives as %2B
        ("fotos/Stra%C3%9Fe+1%2B2+100%25.jpg", UNICODE_KEY),  # real S3: "/" left alone
        ("fotos%2FStra%C3%9Fe+1%2B2+100%25.jpg", UNICODE_KEY),  # moto: "/" encoded too
        ("a/b/c%3Ad.jpg", "a/b/c:d.jpg"),
    ],
)
def test_s3_keys_as_sent_are_decoded(encoded: str, key: str) -> None:
    body = s3_event_body("b", encoded, encode_key=False)
    assert only_event(parse(body)).key == key


def test_sns_wrapped_s3_event() -> None:
    parsed = parse(sns_envelope(s3_event_body("b", UNICODE_KEY, sequencer="0A")))
    assert parsed.kind == "sns"
    assert (only_event(parsed).key, only_event(parsed).sequencer) == (UNICODE_KEY, "0A")


def test_raw_message_delivery_body_is_the_s3_event() -> None:
    assert parse(s3_event_body("b", "k.jpg")).kind == "s3"


def test_aws_documentation_eventbridge_delete_marker_example() -> None:
    parsed = parse(json.dumps(AWS_DOC_EB_DELETED))
    assert parsed.kind == "eventbridge"
    assert only_event(parsed) == ObjectEvent(
        bucket="DOC-EXAMPLE-BUCKET1",
        key="example-key",
        action="delete",
        event_time=datetime(2021, 11, 12, tzinfo=UTC),
        sequencer="617f0837b476e463",
        etag="d41d8cd98f00b204e9800998ecf8427e",
        version_id="1QW9g1Z99LUNbvaaYVpW9xDlOLU.qxgF",
        size=None,
        event_name="ObjectRemoved:DeleteMarkerCreated",
    )


@pytest.mark.parametrize(
    ("detail_type", "reason", "deletion_type", "action", "event_name"),
    [
        ("Object Created", None, None, "upsert", "ObjectCreated:Put"),
        (
            "Object Created",
            "CompleteMultipartUpload",
            None,
            "upsert",
            "ObjectCreated:CompleteMultipartUpload",
        ),
        ("Object Created", "CopyObject", None, "upsert", "ObjectCreated:Copy"),
        ("Object Created", "POST Object", None, "upsert", "ObjectCreated:Post"),
        ("Object Deleted", None, None, "delete", "ObjectRemoved:Delete"),
        (
            "Object Deleted",
            "DeleteObject",
            "Delete Marker Created",
            "delete",
            "ObjectRemoved:DeleteMarkerCreated",
        ),
        (
            "Object Deleted",
            "Lifecycle Expiration",
            "Permanently Deleted",
            "delete",
            "LifecycleExpiration:Delete",
        ),
        ("Object Deleted", "SomethingNew", None, "delete", "ObjectRemoved:SomethingNew"),
    ],
)
def test_eventbridge_created_and_deleted(
    detail_type: str, reason: str | None, deletion_type: str | None, action: str, event_name: str
) -> None:
    body = eventbridge_body(
        "b", UNICODE_KEY, detail_type=detail_type, reason=reason, deletion_type=deletion_type, event_time=T0
    )
    parsed_event = only_event(parse(body))
    assert (parsed_event.key, parsed_event.action, parsed_event.event_name) == (
        UNICODE_KEY,
        action,
        event_name,
    )
    assert parsed_event.event_time == T0.replace(microsecond=0)  # EventBridge times have whole seconds


def test_eventbridge_keys_are_plain_unless_told_otherwise() -> None:
    encoded = eventbridge_body("b", UNICODE_KEY, encode_key=True)
    assert only_event(parse(encoded)).key == "fotos/Stra%C3%9Fe+1%2B2+100%25.jpg"
    assert only_event(parse(encoded, eventbridge_keys_encoded=True)).key == UNICODE_KEY


@pytest.mark.parametrize(
    "detail_type", ["Object Restore Completed", "Object Tags Added", "Object ACL Updated"]
)
def test_eventbridge_types_we_do_not_act_on(detail_type: str) -> None:
    parsed = parse(eventbridge_body("b", "k.jpg", detail_type=detail_type))
    assert (parsed.kind, parsed.events, parsed.error) == ("eventbridge", (), None)


def test_moto_style_eventbridge_event() -> None:
    """moto sends epoch-seconds ``time`` and notification-style ``eTag``."""
    moto_event = json.loads(eventbridge_body("b", "k.jpg"))
    moto_event["time"] = T0.timestamp()
    moto_event["detail"]["object"]["eTag"] = moto_event["detail"]["object"].pop("etag")
    parsed_event = only_event(parse(json.dumps(moto_event)))
    assert (parsed_event.event_time, parsed_event.etag) == (T0, moto_event["detail"]["object"]["eTag"])


def test_sns_wrapped_eventbridge_event() -> None:
    parsed = parse(sns_envelope(eventbridge_body("b", "k.jpg", detail_type="Object Deleted")))
    assert (parsed.kind, only_event(parsed).action) == ("sns", "delete")


def test_multi_record_message_keeps_order_and_skips_ignored_records() -> None:
    records = [
        json.loads(s3_event_body("b", "one.jpg", event_time=T0))["Records"][0],
        json.loads(s3_event_body("b", "tagged.jpg", event_name="ObjectTagging:Put"))["Records"][0],
        json.loads(s3_event_body("b", "two 2.jpg", event_name="ObjectRemoved:Delete"))["Records"][0],
    ]
    parsed = parse(json.dumps({"Records": records}))
    assert [(e.key, e.action) for e in parsed.events] == [("one.jpg", "upsert"), ("two 2.jpg", "delete")]
    assert parsed.objects == {("b", "one.jpg"), ("b", "two 2.jpg")}


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-03-01T12:00:00.123Z", T0),
        ("2026-03-01T12:00:00.123", T0),  # naive: S3 times are UTC
        ("2026-03-01T13:00:00.123+01:00", T0),
    ],
)
def test_event_times_are_utc_aware(when: str, expected: datetime) -> None:
    document = copy.deepcopy(AWS_DOC_PUT)
    document["Records"][0]["eventTime"] = when
    assert only_event(parse(json.dumps(document))).event_time == expected


def test_lambda_style_lower_case_message_fields() -> None:
    parsed = parse_message({"messageId": "m", "receiptHandle": "rh", "body": s3_event_body("b", "k")})
    assert (parsed.message_id, parsed.receipt_handle, parsed.kind) == ("m", "rh", "s3")


# --- malformed bodies ----------------------------------------------------------------------------


def with_record(**changes: Any) -> str:
    """The AWS example with fields of its record replaced (dotted paths; ``None`` deletes)."""
    document = copy.deepcopy(AWS_DOC_PUT)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = document["Records"][0]
        for name in parents:
            node = node[name]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
    return json.dumps(document)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("this is not json", "body is not JSON"),
        ("", "body is not JSON"),
        ("[1, 2]", "body is a JSON list, expected an object"),
        ('"Records"', "body is a JSON str, expected an object"),
        ("null", "body is a JSON NoneType, expected an object"),
        ("{}", "not an S3, SNS or EventBridge event (keys: none)"),
        ('{"hello": "world"}', "not an S3, SNS or EventBridge event (keys: hello)"),
        ('{"Records": []}', "Records must be a non-empty list"),
        ('{"Records": "x"}', "Records must be a non-empty list"),
        ('{"Records": [{"eventName": "ObjectCreated:Put"}]}', "Records[0].s3 is missing"),
        ('{"Records": [42]}', "Records[0] is missing or not an object"),
        (with_record(s3__bucket=None), "Records[0].s3.bucket is missing"),
        (with_record(s3__bucket={"arn": "x"}), "Records[0].s3.bucket.name is missing"),
        (with_record(s3__object__key=None), "Records[0].s3.object.key is missing"),
        (with_record(s3__object__key=""), "Records[0].s3.object.key is missing"),
        (with_record(s3__object__key=7), "Records[0].s3.object.key is missing"),
        (with_record(s3__object=None), "Records[0].s3.object is missing"),
        (with_record(eventName=None), "Records[0].eventName is missing"),
        (with_record(eventTime=None), "Records[0].eventTime is missing"),
        (with_record(eventTime="yesterday"), "Records[0].eventTime is not an ISO-8601 time"),
        (sns_envelope("not json"), "SNS Message is not JSON"),
        (sns_envelope("{}"), "SNS Message is not an S3, SNS or EventBridge event"),
        (sns_envelope(sns_envelope(s3_event_body("b", "k"))), "SNS Message is itself an SNS envelope"),
        (
            json.dumps(
                {"Type": "SubscriptionConfirmation", "TopicArn": "arn:x", "SubscribeURL": "https://x"}
            ),
            "SNS SubscriptionConfirmation, not an S3 event",
        ),
        (json.dumps({"Type": "Notification", "TopicArn": "arn:x"}), "SNS Notification has no string Message"),
        (
            json.dumps({**AWS_DOC_EB_DELETED, "source": "aws.ec2"}),
            "EventBridge event from 'aws.ec2', expected 'aws.s3'",
        ),
        (json.dumps({**AWS_DOC_EB_DELETED, "detail": {"bucket": {"name": "b"}}}), "detail.object is missing"),
        (json.dumps({**AWS_DOC_EB_DELETED, "time": None}), "time is missing or not a timestamp"),
    ],
)
def test_malformed_bodies_have_a_readable_reason(body: str, reason: str) -> None:
    parsed = parse(body)
    assert (parsed.kind, parsed.events, parsed.message_id, parsed.receipt_handle) == (
        "malformed",
        (),
        "m-1",
        "rh-1",
    )
    assert parsed.error is not None
    assert reason in parsed.error


@pytest.mark.parametrize("message", [{}, {"MessageId": "m", "Body": None}, {"MessageId": "m", "Body": b"{}"}])
def test_message_without_a_string_body_is_malformed(message: dict[str, Any]) -> None:
    parsed = parse_message(message)
    assert (parsed.kind, parsed.error) == ("malformed", "message has no string Body")


def test_one_broken_record_makes_the_whole_message_malformed() -> None:
    good = json.loads(s3_event_body("b", "good.jpg"))["Records"][0]
    parsed = parse(json.dumps({"Records": [good, {"eventName": "ObjectCreated:Put", "s3": {}}]}))
    assert (parsed.kind, parsed.events) == ("malformed", ())
    assert completed_messages([parsed], done=[("b", "good.jpg")]) == []


def _leaf_variants(node: Any) -> Iterator[Any]:
    """Copies of ``node`` with one leaf (or sub-tree) replaced by a value of a wrong type."""
    wrong: list[Any] = [None, True, -1, 1.5, "", "zz", [], {}, [1], {"a": 1}]
    if isinstance(node, dict):
        for name, child in node.items():
            for replacement in [*wrong, *_leaf_variants(child)]:
                yield {**node, name: replacement}
    elif isinstance(node, list):
        for index, child in enumerate(node):
            for replacement in [*wrong, *_leaf_variants(child)]:
                yield [*node[:index], replacement, *node[index + 1 :]]


@pytest.mark.parametrize(
    "document",
    [AWS_DOC_PUT, AWS_DOC_EB_DELETED, AWS_DOC_TEST_EVENT, json.loads(sns_envelope(json.dumps(AWS_DOC_PUT)))],
    ids=["s3", "eventbridge", "test-event", "sns"],
)
def test_no_mutation_of_a_valid_body_makes_the_parser_raise(document: dict[str, Any]) -> None:
    for variant in _leaf_variants(document):
        parsed = parse(json.dumps(variant))
        assert (parsed.kind == "malformed") == (parsed.error is not None)


# --- ordering ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ("0055AED6DCD90281E5", "0055AED6DCD90281E6"),
        ("617f0837b476e463", "617F0837B476E464"),  # case does not matter
        ("ABC", "ABC01"),  # right-padded: ABC00 < ABC01
        ("ABC99", "ABD"),  # right-padded: ABC99 < ABD00
        ("09", "1"),  # right-padded: 09 < 10 (left padding would say the opposite)
        ("0055AED6DCD90281E5", "0055AED6DCD90281E500001"),
    ],
)
def test_sequencer_order_right_pads_the_shorter_value(earlier: str, later: str) -> None:
    assert sequencer_key(earlier) < sequencer_key(later)


@pytest.mark.parametrize(("one", "other"), [("ABC", "ABC000"), ("abc", "ABC"), ("0055AED6", "0055aed600")])
def test_sequencers_equal_after_padding(one: str, other: str) -> None:
    assert sequencer_key(one) == sequencer_key(other)


@pytest.mark.parametrize("bad", ["", "xyz", "12 34", "0x12"])
def test_sequencer_key_rejects_non_hex(bad: str) -> None:
    with pytest.raises(ValueError, match="not a hexadecimal sequencer"):
        sequencer_key(bad)


def test_garbled_sequencer_is_dropped_at_parse_time() -> None:
    assert only_event(parse(s3_event_body("b", "k", sequencer="not-hex!"))).sequencer is None


@pytest.mark.parametrize(
    ("arrivals", "winner"),
    [
        # out of order: the DELETE (greater sequencer) arrives before the PUT
        ([event("k", "delete", sequencer="0B"), event("k", "upsert", sequencer="0A")], 0),
        ([event("k", "upsert", sequencer="0A"), event("k", "delete", sequencer="0B")], 1),
        # re-upload after a delete, delivered first
        ([event("k", "upsert", sequencer="0C"), event("k", "delete", sequencer="0B")], 0),
        # the sequencer wins over the clock
        (
            [
                event("k", "upsert", sequencer="0C", at=T0),
                event("k", "delete", sequencer="0B", at=T0 + timedelta(1)),
            ],
            0,
        ),
        # different lengths, right-padded: 0AB < 0B
        ([event("k", "delete", sequencer="0B"), event("k", "upsert", sequencer="0AB")], 0),
        # no sequencers: the event time decides
        ([event("k", "upsert", at=T0 + timedelta(seconds=1)), event("k", "delete", at=T0)], 0),
        ([event("k", "upsert", at=T0), event("k", "delete", at=T0 + timedelta(seconds=1))], 1),
        # one sequencer missing: the whole object falls back to time (no mixed, intransitive order)
        (
            [event("k", "upsert", sequencer="FF", at=T0), event("k", "delete", at=T0 + timedelta(seconds=1))],
            1,
        ),
        # exact tie: the upsert wins (it reads the object, a wrong choice shows up as NoSuchKey)
        ([event("k", "delete", at=T0), event("k", "upsert", at=T0)], 1),
        ([event("k", "delete", sequencer="0A"), event("k", "upsert", sequencer="0A")], 1),
    ],
)
def test_latest_per_object_resolves_out_of_order_put_and_delete(
    arrivals: list[ObjectEvent], winner: int
) -> None:
    assert latest_per_object(arrivals) == {("b", "k"): arrivals[winner]}


def test_multipart_duplicate_pair_collapses_to_the_first() -> None:
    first = event("big.tif", sequencer="0055AED6DCD90281E5", etag="abc-12")
    duplicate = event(
        "big.tif", sequencer="0055AED6DCD90281E5", etag="abc-12", at=T0 + timedelta(milliseconds=5)
    )
    latest = latest_per_object([first, duplicate, first])
    assert list(latest) == [("b", "big.tif")]
    assert latest[("b", "big.tif")] in (first, duplicate)


def test_latest_per_object_keeps_objects_apart_in_first_seen_order() -> None:
    events = [
        event("x", sequencer="0F"),
        event("y", "delete", sequencer="01"),
        event("x", "delete", sequencer="01"),  # other bucket/key pairs never compare with each other
        event("x", bucket="other", sequencer="02"),
    ]
    latest = latest_per_object(events)
    assert list(latest) == [("b", "x"), ("b", "y"), ("other", "x")]
    assert [latest[oid].action for oid in latest] == ["upsert", "delete", "upsert"]


def test_parsed_batch_end_to_end() -> None:
    """Out-of-order delivery across messages and formats, then which messages may be deleted."""
    put = sqs_message(s3_event_body("b", "a b.jpg", sequencer="0010", event_time=T0), message_id="put")
    delete = sqs_message(
        sns_envelope(s3_event_body("b", "a b.jpg", event_name="ObjectRemoved:Delete", sequencer="0020")),
        message_id="delete",
    )
    other = sqs_message(eventbridge_body("b", "c.jpg", sequencer="0030"), message_id="other")
    test = sqs_message(s3_test_event_body("b"), message_id="test")
    junk = sqs_message("nope", message_id="junk")
    parsed = [parse_message(m) for m in (delete, put, other, test, junk)]

    latest = latest_per_object(e for message in parsed for e in message.events)
    assert {oid: e.action for oid, e in latest.items()} == {
        ("b", "a b.jpg"): "delete",
        ("b", "c.jpg"): "upsert",
    }

    done_first = completed_messages(parsed, done=[("b", "a b.jpg")])
    assert [m.message_id for m in done_first] == ["delete", "put", "test"]
    assert [m.message_id for m in completed_messages(parsed, done=set(latest))] == [
        "delete",
        "put",
        "other",
        "test",
    ]


def test_sqs_message_helper_shape() -> None:
    message = sqs_message("{}", message_id="m")
    assert message["MessageId"] == "m"
    assert message["ReceiptHandle"] == "rh-m"
    assert set(message) == {"MessageId", "ReceiptHandle", "MD5OfBody", "Body"}
