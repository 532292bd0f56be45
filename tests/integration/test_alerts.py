"""Alert evaluation against noida-db, and notifications at real loopback SMTP/HTTP sinks.

Every test indexes a handful of documents with fixed ``ingested_at`` times and evaluates at
fixed ``now`` values, so checkpoints, throttles and windows are exact.
"""

from __future__ import annotations

import html
import logging
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagelabels.alerts import queries as alert_queries
from imagelabels.alerts.evaluate import evaluate_rules, mark_notified
from imagelabels.alerts.firing import firing_id
from imagelabels.alerts.mappings import ALERTS_INDEX, STATE_INDEX
from imagelabels.alerts.model import Notification
from imagelabels.alerts.notify import run_alerts, send_notification
from imagelabels.alerts.rules import (
    AlertConfig,
    LabelCountRule,
    LabelRule,
    ModerationRule,
    NoIngestionRule,
)
from imagelabels.channels import slack_escape
from imagelabels.documents import INDEX_ALIAS, LabelResult, ObjectInfo, build_document, document_id
from imagelabels.engine.indexing import ensure_indices
from imagelabels.search import queries as search

pytestmark = pytest.mark.both_engines

T0 = datetime(2026, 12, 10, 12, 10, tzinfo=UTC)
NO_THROTTLE = timedelta(0)


def index_image(
    es: Any,
    key: str,
    labels: list[tuple[str, float]],
    *,
    at: datetime,
    moderation: list[tuple[str, float, str]] | None = None,
    bucket: str = "photos",
) -> str:
    """Index one image document ingested at ``at``; its document id."""
    ensure_indices(es)
    obj = ObjectInfo(bucket, key, 100, f"etag-{key}", at - timedelta(minutes=1))
    result = LabelResult(
        [{"Name": name, "Confidence": confidence} for name, confidence in labels],
        "local",
        "test-1",
        50.0,
        10,
        features=("labels", "moderation") if moderation is not None else ("labels",),
        moderation_labels=[
            {"Name": name, "Confidence": confidence, "ParentName": parent}
            for name, confidence, parent in moderation or []
        ],
        moderation_model_version="test-1",
    )
    doc_id = document_id(bucket, key, None, f"etag-{key}")
    es.index(
        index=INDEX_ALIAS,
        id=doc_id,
        document=build_document(obj, result, dag_id="d", run_id="r", ingested_at=at),
        refresh="wait_for",
    )
    return doc_id


def records(es: Any, rule: str) -> list[dict[str, Any]]:
    """Every firing record of ``rule``, oldest first, with its ``_id``."""
    es.indices.refresh(index=ALERTS_INDEX)
    response = es.search(
        index=ALERTS_INDEX, query={"term": {"rule": rule}}, sort=[{"fired_at": "asc"}], size=100
    )
    return [{"_id": hit["_id"], **hit["_source"]} for hit in response["hits"]["hits"]]


def keys(notification: Notification) -> list[str]:
    return [image.key for image in notification.images]


def evaluate_and_mark(es: Any, rules: list[Any], now: datetime) -> list[Notification]:
    """One evaluation whose notifications were all delivered."""
    notifications = evaluate_rules(es, rules, now=now)
    mark_notified(es, notifications)
    return notifications


# --- per-image rules ----------------------------------------------------------------------------


def test_label_rule_fires_once_per_image_across_evaluations_and_reruns(es: Any) -> None:
    rule = LabelRule(name="pizza-90", label="Pizza", min_confidence=90, throttle=NO_THROTTLE)
    pizza = index_image(
        es, "2026/12/pizza.jpg", [("Pizza", 97.0), ("Food", 96.0)], at=T0 - timedelta(minutes=5)
    )
    index_image(es, "2026/12/trap.jpg", [("Pizza", 60.0), ("Waterfall", 95.0)], at=T0 - timedelta(minutes=4))
    index_image(es, "2026/12/oven.jpg", [("Pizza Oven", 99.0)], at=T0 - timedelta(minutes=3))
    index_image(es, "2026/12/lower.jpg", [("pizza", 93.5)], at=T0 - timedelta(minutes=2))

    first = evaluate_and_mark(es, [rule], T0)
    assert len(first) == 1
    assert keys(first[0]) == ["2026/12/pizza.jpg", "2026/12/lower.jpg"]
    assert [(m.label, m.confidence) for m in first[0].images[0].matches] == [("Pizza", 97.0)]
    assert "2026/12/pizza.jpg" in first[0].text
    assert "Pizza 97.0%" in first[0].text
    assert "trap.jpg" not in first[0].text

    # a new image; the next evaluation re-reads the lookback (pizza.jpg again) but fires only once
    index_image(es, "2026/12/later.jpg", [("Pizza", 91.0)], at=T0 + timedelta(minutes=2))
    second = evaluate_and_mark(es, [rule], T0 + timedelta(minutes=5))
    assert [keys(n) for n in second] == [["2026/12/later.jpg"]]

    # an overlapping rerun of both evaluations (e.g. a cleared DAG run) fires nothing again
    assert evaluate_and_mark(es, [rule], T0) == []
    assert evaluate_and_mark(es, [rule], T0 + timedelta(minutes=5)) == []

    fired = records(es, "pizza-90")
    assert sorted(r["image"]["key"] for r in fired) == [
        "2026/12/later.jpg",
        "2026/12/lower.jpg",
        "2026/12/pizza.jpg",
    ]
    assert all(r["notified"] and not r["throttled"] for r in fired)
    pizza_record = next(r for r in fired if r["image"]["key"] == "2026/12/pizza.jpg")
    assert pizza_record["_id"] == firing_id("pizza-90", pizza) == f"pizza-90:{pizza}"
    assert pizza_record["image"]["s3_location"] == "s3://photos/2026/12/pizza.jpg"
    assert pizza_record["matches"] == [{"label": "Pizza", "confidence": 97.0, "parent": ""}]
    assert es.get(index=STATE_INDEX, id="pizza-90")["_source"]["checkpoint"].startswith("2026-12-10T12:15")


def test_label_rule_respects_bucket_and_prefix_scope(es: Any) -> None:
    rule = LabelRule(
        name="weapon-uploads",
        label="Weapon",
        min_confidence=80,
        bucket="photos",
        prefix="uploads/",
        throttle=NO_THROTTLE,
    )
    at = T0 - timedelta(minutes=1)
    index_image(es, "uploads/a.jpg", [("Weapon", 90.0)], at=at)
    index_image(es, "archive/b.jpg", [("Weapon", 90.0)], at=at)
    index_image(es, "uploads/c.jpg", [("Weapon", 90.0)], at=at, bucket="other")
    [notification] = evaluate_and_mark(es, [rule], T0)
    assert keys(notification) == ["uploads/a.jpg"]


def test_moderation_rule_fires_for_moderated_images_only(es: Any) -> None:
    explicit = ModerationRule(
        name="nsfw-upload",
        categories=("Explicit Nudity", "Explicit"),
        min_confidence=60,
        severity="critical",
        throttle=NO_THROTTLE,
    )
    anything = ModerationRule(name="any-moderation", min_confidence=60, throttle=NO_THROTTLE)
    at = T0 - timedelta(minutes=1)
    index_image(es, "a/nude.jpg", [("Person", 99.0)], at=at, moderation=[("Explicit Nudity", 85.0, "")])
    index_image(
        es,
        "a/child.jpg",
        [("Person", 99.0)],
        at=at,
        moderation=[("Graphic Male Nudity", 70.0, "Explicit Nudity")],
    )
    index_image(es, "a/weak.jpg", [("Person", 99.0)], at=at, moderation=[("Explicit Nudity", 40.0, "")])
    index_image(es, "a/violent.jpg", [("Person", 99.0)], at=at, moderation=[("Violence", 90.0, "")])
    index_image(es, "a/clean.jpg", [("Explicit", 99.0)], at=at, moderation=[])
    index_image(es, "a/unchecked.jpg", [("Cat", 99.0)], at=at)

    by_rule = {n.rule: n for n in evaluate_and_mark(es, [explicit, anything], T0)}
    assert sorted(keys(by_rule["nsfw-upload"])) == ["a/child.jpg", "a/nude.jpg"]
    assert by_rule["nsfw-upload"].severity == "critical"
    child = next(i for i in by_rule["nsfw-upload"].images if i.key == "a/child.jpg")
    assert [(m.label, m.confidence, m.parent) for m in child.matches] == [
        ("Graphic Male Nudity", 70.0, "Explicit Nudity")
    ]
    assert sorted(keys(by_rule["any-moderation"])) == ["a/child.jpg", "a/nude.jpg", "a/violent.jpg"]


def test_throttle_records_suppressed_firings_and_reports_them_after_the_period(es: Any) -> None:
    rule = LabelRule(name="weapon-detected", label="Weapon", min_confidence=80, throttle=timedelta(hours=1))

    index_image(es, "k/1.jpg", [("Weapon", 90.0)], at=T0 - timedelta(minutes=1))
    [first] = evaluate_and_mark(es, [rule], T0)
    assert (keys(first), first.suppressed) == (["k/1.jpg"], 0)

    for n, minutes in ((2, 10), (3, 20)):
        index_image(es, f"k/{n}.jpg", [("Weapon", 90.0)], at=T0 + timedelta(minutes=minutes - 1))
        assert evaluate_and_mark(es, [rule], T0 + timedelta(minutes=minutes)) == []
    fired = {r["image"]["key"]: r for r in records(es, "weapon-detected")}
    assert [(k, r["notified"], r["throttled"]) for k, r in sorted(fired.items())] == [
        ("k/1.jpg", True, False),
        ("k/2.jpg", False, True),
        ("k/3.jpg", False, True),
    ]

    # still inside the hour: nothing
    assert evaluate_and_mark(es, [rule], T0 + timedelta(minutes=50)) == []
    # after the hour: a new image goes out with the count of what was suppressed
    index_image(es, "k/4.jpg", [("Weapon", 95.0)], at=T0 + timedelta(minutes=65))
    [later] = evaluate_and_mark(es, [rule], T0 + timedelta(minutes=70))
    assert keys(later) == ["k/4.jpg"]
    assert later.suppressed == 2
    assert "2 suppressed" in later.subject
    assert "2 suppressed" in later.text
    # the count starts again from that notification
    index_image(es, "k/5.jpg", [("Weapon", 95.0)], at=T0 + timedelta(minutes=200))
    [next_one] = evaluate_and_mark(es, [rule], T0 + timedelta(minutes=201))
    assert (keys(next_one), next_one.suppressed) == (["k/5.jpg"], 0)


def test_suppressed_firings_are_reported_after_the_period_even_without_new_ones(es: Any) -> None:
    rule = LabelRule(name="weapon-detected", label="Weapon", min_confidence=80, throttle=timedelta(hours=1))
    index_image(es, "k/1.jpg", [("Weapon", 90.0)], at=T0 - timedelta(minutes=1))
    evaluate_and_mark(es, [rule], T0)
    index_image(es, "k/2.jpg", [("Weapon", 90.0)], at=T0 + timedelta(minutes=5))
    assert evaluate_and_mark(es, [rule], T0 + timedelta(minutes=10)) == []
    [digest] = evaluate_and_mark(es, [rule], T0 + timedelta(minutes=61))
    assert (digest.images, digest.suppressed) == ((), 1)
    assert "1 suppressed" in digest.subject
    assert evaluate_and_mark(es, [rule], T0 + timedelta(minutes=130)) == []


def test_one_notification_lists_ten_images_and_how_many_more(es: Any) -> None:
    rule = LabelRule(name="cats", label="Cat", min_confidence=50, throttle=NO_THROTTLE)
    for n in range(13):
        index_image(es, f"c/{n:02d}.jpg", [("Cat", 90.0)], at=T0 - timedelta(minutes=30 - n))
    [notification] = evaluate_and_mark(es, [rule], T0)
    assert keys(notification) == [f"c/{n:02d}.jpg" for n in range(10)]
    assert notification.more == 3
    assert "and 3 more" in notification.text
    assert len(records(es, "cats")) == 13
    assert all(r["notified"] for r in records(es, "cats"))


def test_matches_are_read_page_by_page_and_a_capped_read_continues_next_evaluation(
    es: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alert_queries, "PAGE_SIZE", 2)
    monkeypatch.setattr(alert_queries, "MAX_MATCHES", 5)
    rule = LabelRule(name="cats", label="Cat", min_confidence=50, throttle=NO_THROTTLE)
    for n in range(7):
        index_image(es, f"c/{n}.jpg", [("Cat", 90.0)], at=T0 - timedelta(minutes=30 - n))
    [first] = evaluate_and_mark(es, [rule], T0)
    assert keys(first) == [f"c/{n}.jpg" for n in range(6)]  # three pages of two, then the cap
    # the next evaluation resumes after the last one read (not from the lookback, which would hit
    # the cap on the same six again)
    [second] = evaluate_and_mark(es, [rule], T0 + timedelta(minutes=1))
    assert keys(second) == ["c/6.jpg"]
    assert len(records(es, "cats")) == 7
    state = es.get(index=STATE_INDEX, id="cats")["_source"]
    assert (state["cursor_at"], state["checkpoint"][:16]) == (None, "2026-12-10T12:11")
    index_image(es, "c/7.jpg", [("Cat", 90.0)], at=T0 + timedelta(minutes=2))
    [third] = evaluate_and_mark(es, [rule], T0 + timedelta(minutes=3))
    assert keys(third) == ["c/7.jpg"]


# --- window rules -------------------------------------------------------------------------------


def test_label_count_fires_above_threshold_once_per_window(es: Any) -> None:
    rule = LabelCountRule(
        name="many-cats", label="Cat", window=timedelta(hours=1), threshold=2, throttle=NO_THROTTLE
    )
    index_image(es, "old.jpg", [("Cat", 99.0)], at=T0 - timedelta(hours=2))  # outside the window
    index_image(es, "dog.jpg", [("Dog", 99.0)], at=T0 - timedelta(minutes=9))
    index_image(es, "c1.jpg", [("Cat", 99.0)], at=T0 - timedelta(minutes=8))
    index_image(es, "c2.jpg", [("cat", 99.0)], at=T0 - timedelta(minutes=7))
    assert evaluate_and_mark(es, [rule], T0) == []  # 2 is at the threshold, not above

    index_image(es, "c3.jpg", [("Cat", 99.0)], at=T0 + timedelta(minutes=1))
    [notification] = evaluate_and_mark(es, [rule], T0 + timedelta(minutes=2))
    assert "3 images labeled Cat" in notification.detail
    assert "many-cats" in notification.subject
    # later in the same window period (12:00-13:00): no second firing
    index_image(es, "c4.jpg", [("Cat", 99.0)], at=T0 + timedelta(minutes=3))
    assert evaluate_and_mark(es, [rule], T0 + timedelta(minutes=20)) == []
    assert len(records(es, "many-cats")) == 1
    # the next period fires again while the count stays above the threshold
    [again] = evaluate_and_mark(es, [rule], T0 + timedelta(minutes=50))  # 13:00, counts 12:00-13:00
    assert "4 images labeled Cat" in again.detail
    assert len(records(es, "many-cats")) == 2


def test_no_ingestion_fires_when_nothing_new_for_n_hours(es: Any) -> None:
    rule = NoIngestionRule(name="pipeline-stalled", hours=6, throttle=NO_THROTTLE)
    index_image(es, "a.jpg", [("Cat", 99.0)], at=T0 - timedelta(hours=1))
    assert evaluate_and_mark(es, [rule], T0) == []
    assert evaluate_and_mark(es, [rule], T0 + timedelta(hours=4, minutes=59)) == []

    [stalled] = evaluate_and_mark(es, [rule], T0 + timedelta(hours=5, minutes=1))
    assert "no image ingested since 2026-12-10 11:10 UTC" in stalled.detail
    # the same stall does not fire again
    assert evaluate_and_mark(es, [rule], T0 + timedelta(hours=7)) == []
    # images arrive again: healthy
    index_image(es, "b.jpg", [("Cat", 99.0)], at=T0 + timedelta(hours=7, minutes=30))
    assert evaluate_and_mark(es, [rule], T0 + timedelta(hours=8)) == []
    assert len(records(es, "pipeline-stalled")) == 1


def test_no_ingestion_fires_when_nothing_was_ever_ingested(es: Any) -> None:
    ensure_indices(es)
    scoped = NoIngestionRule(name="uploads-stalled", hours=1, bucket="uploads", throttle=NO_THROTTLE)
    index_image(es, "a.jpg", [("Cat", 99.0)], at=T0 - timedelta(minutes=5))  # other bucket
    [notification] = evaluate_and_mark(es, [scoped], T0)
    assert "no image has ever been ingested in bucket uploads" in notification.detail


# --- delivery -----------------------------------------------------------------------------------


def test_failed_webhook_leaves_the_firing_pending_and_the_next_evaluation_sends_it_once(
    es: Any, http_sink: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="imagelabels.alerts")
    rule = LabelRule(
        name="weapon-detected",
        label="Weapon",
        min_confidence=80,
        throttle=timedelta(hours=1),
        channels=("log", "webhook"),
    )
    config = AlertConfig(rules=[rule], channels={"webhook": {"conn_id": "imagelabels_webhook"}})
    index_image(es, "k/gun.jpg", [("Weapon", 90.0)], at=T0 - timedelta(minutes=1))

    http_sink.fail_next(1, 500)
    [(first_id, first)] = run_alerts(es, config, now=T0).items()
    assert first["log"] == "sent"
    assert first["webhook"].startswith("error:")
    assert "500" in first["webhook"]
    [record] = records(es, "weapon-detected")
    assert (record["notified"], record["throttled"], record["delivered"]) == (False, False, ["log"])

    # inside the throttle, but this is the same notification, late: it goes to the webhook only
    second = run_alerts(es, config, now=T0 + timedelta(minutes=5))
    assert list(second.values()) == [{"webhook": "sent"}]
    [record] = records(es, "weapon-detected")
    assert (record["notified"], record["delivered"]) == (True, ["log", "webhook"])

    assert run_alerts(es, config, now=T0 + timedelta(minutes=10)) == {}
    hook_requests = http_sink.requests_to("/hook")
    assert [r.status for r in hook_requests] == [500, 200]
    assert hook_requests[1].json()["images"][0]["key"] == "k/gun.jpg"
    assert hook_requests[1].json()["retry"] is True
    logged = [r for r in caplog.records if r.name == "imagelabels.alerts" and "k/gun.jpg" in r.getMessage()]
    assert len(logged) == 1  # the log channel got it once, not again with the retry
    assert first_id.startswith("weapon-detected@")


def test_a_send_that_failed_everywhere_is_sent_by_the_next_evaluation(es: Any, http_sink: Any) -> None:
    rule = LabelRule(name="weapon-detected", label="Weapon", min_confidence=80, channels=("webhook",))
    config = AlertConfig(
        rules=[rule], channels={"webhook": {"conn_id": "imagelabels_webhook", "endpoint": "/a"}}
    )
    index_image(es, "k/gun.jpg", [("Weapon", 90.0)], at=T0 - timedelta(minutes=1))
    http_sink.fail_next(1, 500)
    assert next(iter(run_alerts(es, config, now=T0).values()))["webhook"].startswith("error:")
    # nothing was delivered, so the throttle has not started: the next evaluation sends it
    assert list(run_alerts(es, config, now=T0 + timedelta(minutes=5)).values()) == [{"webhook": "sent"}]
    assert run_alerts(es, config, now=T0 + timedelta(minutes=10)) == {}
    requests = http_sink.requests_to("/hook/a")
    assert [r.status for r in requests] == [500, 200]
    assert requests[1].json()["retry"] is False


HOSTILE_LABEL = "<script>alert(1)</script>"
HOSTILE_KEY = "uploads/<b>bold</b>&co.jpg"


def test_email_slack_and_webhook_arrive_with_key_labels_and_link_escaped(
    es: Any, stack: Any, smtp_sink: Any, http_sink: Any
) -> None:
    s3 = stack.boto3_client("s3")
    stack.reset_moto()
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key=HOSTILE_KEY, Body=b"image bytes")
    rule = ModerationRule(
        name="moderation-review",
        min_confidence=50,
        severity="critical",
        channels=("email", "slack", "webhook"),
    )
    config = AlertConfig(
        rules=[rule],
        channels={
            "email": {"conn_id": "smtp_default", "to": ["safety@example.com"]},
            "slack": {"conn_id": "slack_webhook_default"},
            "webhook": {"conn_id": "imagelabels_webhook", "endpoint": "/alerts"},
        },
    )
    index_image(
        es,
        HOSTILE_KEY,
        [("Person", 99.0)],
        at=T0 - timedelta(minutes=1),
        moderation=[(HOSTILE_LABEL, 77.5, "")],
    )

    def presign(location: str) -> str:
        return search.presigned_url(s3, location, expires_in=600)

    results = run_alerts(es, config, now=T0, presign=presign)
    assert list(results.values()) == [{"email": "sent", "slack": "sent", "webhook": "sent"}]
    url = presign(f"s3://photos/{HOSTILE_KEY}")
    query_free_url = url.split("?")[0]
    assert "&" in url  # a presigned URL has query parameters that need escaping in HTML/Slack

    [mail] = smtp_sink.wait_for(1)
    assert mail.rcpt_tos == ("safety@example.com",)
    assert "moderation-review" in mail.message["Subject"]
    body = mail.html()
    assert html.escape(HOSTILE_KEY) in body
    assert html.escape(f"{HOSTILE_LABEL} 77.5%") in body
    assert "<script>" not in body
    assert "<b>bold</b>" not in body
    assert html.escape(query_free_url, quote=True) in body
    assert "X-Amz-Signature=" in body or "Signature=" in body
    assert HOSTILE_KEY in mail.text()  # the text part is plain text

    [slack] = http_sink.requests_to("/slack/")
    text = slack.json()["text"]
    assert slack_escape(HOSTILE_KEY) in text
    assert slack_escape(HOSTILE_LABEL) in text
    assert "77.5%" in text
    assert "<script>" not in text
    assert "<b>" not in text
    assert slack_escape(query_free_url) in text

    [hook] = http_sink.requests_to("/hook/alerts")
    payload = hook.json()
    image = payload["images"][0]
    assert (payload["rule"], payload["severity"]) == ("moderation-review", "critical")
    assert image["key"] == HOSTILE_KEY
    assert image["matches"] == [{"label": HOSTILE_LABEL, "confidence": 77.5, "parent": ""}]
    assert image["url"].startswith(query_free_url)
    # the link really opens the image in the moto server
    with urllib.request.urlopen(image["url"], timeout=10) as response:
        assert response.read() == b"image bytes"
    assert all(r["notified"] for r in records(es, "moderation-review"))


def test_log_channel_writes_the_text_at_warning(es: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="imagelabels.alerts")
    rule = LabelRule(name="weapon-detected", label="Weapon", min_confidence=80)
    index_image(es, "k/gun.jpg", [("Weapon", 90.0)], at=T0 - timedelta(minutes=1))
    [notification] = evaluate_rules(es, [rule], now=T0)
    assert send_notification(notification, {}) == {"log": "sent"}
    [logged] = [r for r in caplog.records if r.name == "imagelabels.alerts"]
    assert logged.levelno == logging.WARNING
    assert "k/gun.jpg" in logged.getMessage()
    assert "Weapon 90.0%" in logged.getMessage()


def test_alert_links_open_the_image_search_page_when_the_ui_has_a_base_url(
    es: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the UI's public address known, an alert links to the page's detail view (any key,
    no expiry) instead of a presigned S3 link (which dies with the credentials that signed it)."""
    monkeypatch.setenv("IMAGELABELS_UI_BASE_URL", "https://airflow.example.com/")
    rule = LabelRule(name="weapon-detected", label="Weapon", min_confidence=80)
    index_image(es, "k/../odd 'key'.jpg", [("Weapon", 90.0)], at=T0 - timedelta(minutes=1))
    [notification] = evaluate_rules(es, [rule], now=T0, presign=lambda location: "https://s3/presigned")
    doc_id = document_id("photos", "k/../odd 'key'.jpg", None, "etag-k/../odd 'key'.jpg")
    [image] = notification.images
    assert image.document_id == doc_id
    assert image.url == f"https://airflow.example.com/image-search/?image={doc_id}"
