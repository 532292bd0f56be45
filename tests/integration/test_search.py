"""Every search question against a fixed set of documents in noida-db, with exact answers.

The set (also used by the CLI golden tests) has the trap of the issue: ``trap.jpg`` shows Pizza at
60 % and Waterfall at 95 %, and must not answer "Pizza >= 90 %".
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from imagelabels.documents import INDEX_ALIAS, LabelResult, ObjectInfo, build_document, document_id
from imagelabels.engine.indexing import bulk_write, ensure_indices
from imagelabels.search import queries as search

ROOT = Path(__file__).resolve().parents[2]
COFFEE = ROOT / "sample_images" / "coffee.png"
INGESTED = datetime(2026, 12, 10, tzinfo=UTC)

pytestmark = pytest.mark.both_engines


@dataclass(frozen=True)
class Image:
    bucket: str
    key: str
    when: datetime
    labels: list[tuple[str, float, list[str]]]
    moderation: list[str]
    body: bytes


def _day(month: int, day: int) -> datetime:
    return datetime(2026, month, day, 12, 0, tzinfo=UTC)


def images() -> list[Image]:
    def image(
        bucket: str,
        key: str,
        when: datetime,
        labels: list[tuple[str, float, list[str]]],
        moderation: list[str] | None = None,
    ) -> Image:
        body = COFFEE.read_bytes() if key.endswith("coffee.png") else f"bytes of {bucket}/{key}".encode()
        return Image(bucket, key, when, labels, moderation or [], body)

    return [
        image("photos", "2026/11/pizza.jpg", _day(11, 1), [("Pizza", 97.0, ["Food"]), ("Food", 96.0, [])]),
        image(
            "photos", "2026/11/trap.jpg", _day(11, 5), [("Pizza", 60.0, ["Food"]), ("Waterfall", 95.0, [])]
        ),
        image("photos", "2026/12/pizza-night.jpg", _day(12, 2), [("Pizza", 92.0, ["Food"])], ["Violence"]),
        image("archive", "old/pizza.jpg", _day(10, 1), [("Pizza", 91.0, ["Food"]), ("Food", 80.0, [])]),
        image(
            "photos",
            "2026/11/coffee.png",
            _day(11, 3),
            [("Beverage", 95.2, []), ("Coffee", 95.1, ["Beverage"]), ("Espresso", 95.1, ["Coffee"])],
        ),
        image(
            "photos", "2026/11/latte.jpg", _day(11, 4), [("Coffee", 88.0, ["Beverage"]), ("Cup", 70.0, [])]
        ),
        image(
            "photos", "2026/11/waterfall.jpg", _day(11, 6), [("Waterfall", 99.0, []), ("Nature", 97.0, [])]
        ),
        image("photos", "2026/11/poster.jpg", _day(11, 7), [("Poster", 75.0, [])]),
    ]


def seed(es: Any, s3: Any) -> None:
    """Index the fixed set in noida-db and put each image's bytes in the moto server."""
    ensure_indices(es)
    for bucket in sorted({image.bucket for image in images()}):
        s3.create_bucket(Bucket=bucket)
    actions = []
    for image in images():
        s3.put_object(Bucket=image.bucket, Key=image.key, Body=image.body)
        obj = ObjectInfo(image.bucket, image.key, len(image.body), f"etag-{image.key}", image.when)
        result = LabelResult(
            [
                {"Name": name, "Confidence": confidence, "Parents": [{"Name": p} for p in parents]}
                for name, confidence, parents in image.labels
            ],
            "local",
            "test-1",
            50.0,
            10,
            features=("labels", "moderation"),
            moderation_labels=[{"Name": name, "Confidence": 85.0} for name in image.moderation],
            moderation_model_version="test-1",
        )
        actions.append(
            {
                "_op_type": "create",
                "_index": INDEX_ALIAS,
                "_id": document_id(image.bucket, image.key, None, f"etag-{image.key}"),
                "_source": build_document(obj, result, dag_id="d", run_id="r", ingested_at=INGESTED),
            }
        )
    outcome = bulk_write(es, actions, refresh="wait_for")
    assert (outcome.created, outcome.failures) == (len(actions), [])


@pytest.fixture
def seeded(es, s3):  # type: ignore[no-untyped-def]
    seed(es, s3)
    return es


def _found(hits: list[search.Hit]) -> list[tuple[str, float | None]]:
    return [(hit.s3_location, hit.confidence) for hit in hits]


def test_by_label_most_confident_first(seeded) -> None:  # type: ignore[no-untyped-def]
    assert _found(search.images_with_label(seeded, "Pizza")) == [
        ("s3://photos/2026/11/pizza.jpg", 97.0),
        ("s3://photos/2026/12/pizza-night.jpg", 92.0),
        ("s3://archive/old/pizza.jpg", 91.0),
        ("s3://photos/2026/11/trap.jpg", 60.0),
    ]


def test_min_confidence_is_matched_within_one_label_not_across_two(seeded) -> None:  # type: ignore[no-untyped-def]
    found = search.images_with_label(seeded, "Pizza", min_confidence=90)
    assert _found(found) == [
        ("s3://photos/2026/11/pizza.jpg", 97.0),
        ("s3://photos/2026/12/pizza-night.jpg", 92.0),
        ("s3://archive/old/pizza.jpg", 91.0),
    ]
    # The trap has a label at >= 90 % (Waterfall 95) and a Pizza label, but not both in one.
    assert "s3://photos/2026/11/trap.jpg" not in {hit.s3_location for hit in found}
    assert _found(search.images_with_label(seeded, "Waterfall", min_confidence=96)) == [
        ("s3://photos/2026/11/waterfall.jpg", 99.0)
    ]


def test_fuzzy_label_match_forgives_typos_and_exact_does_not(seeded) -> None:  # type: ignore[no-untyped-def]
    assert search.images_with_label(seeded, "Piza") == []
    assert [h.title for h in search.images_with_label(seeded, "Piza", fuzzy=True, min_confidence=90)] == [
        "pizza.jpg",
        "pizza-night.jpg",
        "pizza.jpg",
    ]
    assert [h.s3_location for h in search.images_with_label(seeded, "Postre", fuzzy=True)] == [
        "s3://photos/2026/11/poster.jpg"
    ]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (search.Filters(bucket="archive"), ["s3://archive/old/pizza.jpg"]),
        (
            search.Filters(bucket="photos"),
            [
                "s3://photos/2026/11/pizza.jpg",
                "s3://photos/2026/12/pizza-night.jpg",
                "s3://photos/2026/11/trap.jpg",
            ],
        ),
        (
            search.Filters(prefix="2026/11/"),
            ["s3://photos/2026/11/pizza.jpg", "s3://photos/2026/11/trap.jpg"],
        ),
        (search.Filters(since="2026-11-02", until=_day(12, 1)), ["s3://photos/2026/11/trap.jpg"]),
        (search.Filters(until="2026-11-01"), ["s3://archive/old/pizza.jpg"]),
        (
            search.Filters(exclude_moderated=True),
            ["s3://photos/2026/11/pizza.jpg", "s3://archive/old/pizza.jpg", "s3://photos/2026/11/trap.jpg"],
        ),
        (
            search.Filters(bucket="photos", prefix="2026/", exclude_moderated=True, since="2026-11-02"),
            ["s3://photos/2026/11/trap.jpg"],
        ),
    ],
)
def test_filters(seeded, filters: search.Filters, expected: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert [h.s3_location for h in search.images_with_label(seeded, "Pizza", filters=filters)] == expected


def test_describe_by_title_key_or_location(seeded) -> None:  # type: ignore[no-untyped-def]
    for name in ("trap.jpg", "2026/11/trap.jpg", "s3://photos/2026/11/trap.jpg"):
        (hit,) = search.describe_image(seeded, name)
        assert hit.s3_location == "s3://photos/2026/11/trap.jpg"
        assert hit.labels == [("Pizza", 60.0), ("Waterfall", 95.0)]
        assert hit.parents == {"Pizza": ["Food"], "Waterfall": []}
        assert hit.timestamp == "2026-11-05T12:00:00+00:00"
    # Two images share the title pizza.jpg: both are answers.
    assert [h.s3_location for h in search.describe_image(seeded, "pizza.jpg")] == [
        "s3://archive/old/pizza.jpg",
        "s3://photos/2026/11/pizza.jpg",
    ]
    assert search.describe_image(seeded, "pizza-night.jpg")[0].moderation == [("Violence", 85.0)]
    assert search.describe_image(seeded, "trap") == []  # exact, not a substring


def test_top_labels_counts_label_names_and_parents(seeded) -> None:  # type: ignore[no-untyped-def]
    # label_names holds labels and their parents: Food is a label of two images, a parent of four.
    assert search.top_labels(seeded, size=50) == [
        ("Food", 4),
        ("Pizza", 4),
        ("Beverage", 2),
        ("Coffee", 2),
        ("Waterfall", 2),
        ("Cup", 1),
        ("Espresso", 1),
        ("Nature", 1),
        ("Poster", 1),
    ]
    assert search.top_labels(seeded, size=3) == [("Food", 4), ("Pizza", 4), ("Beverage", 2)]
    assert search.top_labels(seeded, filters=search.Filters(bucket="archive")) == [("Food", 1), ("Pizza", 1)]
    assert search.top_labels(seeded, filters=search.Filters(exclude_moderated=True, prefix="2026/12/")) == []


def test_search_after_pages_through_every_hit_once(seeded) -> None:  # type: ignore[no-untyped-def]
    first = search.search_labels(seeded, "Pizza", size=3)
    assert first.total == 4
    assert [h.confidence for h in first.hits] == [97.0, 92.0, 91.0]
    # the sort values of the last hit: its score (the confidence, to within the rank feature's
    # precision) and its location
    assert first.next_after == [pytest.approx(91.0, abs=0.005), "s3://archive/old/pizza.jpg"]
    second = search.search_labels(seeded, "Pizza", size=3, search_after=first.next_after)
    assert _found(second.hits) == [("s3://photos/2026/11/trap.jpg", 60.0)]
    assert second.next_after is None
    # Pages never overlap, also after a score float32 cannot represent exactly (95.2), and
    # an empty answer has no next page.
    pages = []
    after = None
    while True:
        page = search.images_like(
            seeded, [("Food", 100.0), ("Beverage", 100.0), ("Espresso", 100.0)], size=1, search_after=after
        )
        pages.append([(h.s3_location, round(h.score or 0, 2)) for h in page.hits])
        if page.next_after is None:
            break
        after = page.next_after
    assert pages == [
        [("s3://photos/2026/11/coffee.png", 190.3)],
        [("s3://photos/2026/11/pizza.jpg", 96.0)],
        [("s3://archive/old/pizza.jpg", 80.0)],
    ]
    empty = search.search_labels(seeded, "Pizza", size=1, filters=search.Filters(bucket="nowhere"))
    assert (empty.hits, empty.total, empty.next_after) == ([], 0, None)


def test_images_like_weights_by_example_and_document_confidence(seeded) -> None:  # type: ignore[no-untyped-def]
    page = search.images_like(seeded, [("Coffee", 100.0), ("Cup", 50.0)])
    assert [(h.s3_location, round(h.score or 0, 2)) for h in page.hits] == [
        ("s3://photos/2026/11/latte.jpg", 123.0),  # 88 x 1.0 + 70 x 0.5
        ("s3://photos/2026/11/coffee.png", 95.1),
    ]
    excluded = search.images_like(
        seeded, [("Coffee", 100.0), ("Cup", 50.0)], exclude_location="s3://photos/2026/11/latte.jpg"
    )
    assert [h.s3_location for h in excluded.hits] == ["s3://photos/2026/11/coffee.png"]
    assert search.images_like(seeded, []).hits == []


def test_images_like_an_example_labeled_by_the_local_model(seeded, s3) -> None:  # type: ignore[no-untyped-def]
    data, location = search.read_example("s3://photos/2026/11/coffee.png", s3)
    assert (data, location) == (COFFEE.read_bytes(), "s3://photos/2026/11/coffee.png")
    example = search.label_example(data, name="coffee.png", labeler="local")
    assert {"Coffee", "Espresso"} <= {name for name, _ in example}
    page = search.images_like(seeded, example, exclude_location=location)
    assert [h.s3_location for h in page.hits] == ["s3://photos/2026/11/latte.jpg"]
    local = search.images_like(seeded, search.label_example(COFFEE.read_bytes(), labeler="local"))
    assert [h.s3_location for h in local.hits] == [
        "s3://photos/2026/11/coffee.png",
        "s3://photos/2026/11/latte.jpg",
    ]
    # The seeded ETags are not MD5s; a real single-part upload's ETag is the MD5 of its bytes.
    assert [
        h.s3_location
        for h in search.images_like(seeded, example, exclude_etag="etag-2026/11/coffee.png").hits
    ] == ["s3://photos/2026/11/latte.jpg"]


def test_presigned_urls_fetch_the_image_from_moto(seeded, clean_stack, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    s3v4 = boto3.client(
        "s3",
        endpoint_url=clean_stack.moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(signature_version="s3v4"),
    )
    monkeypatch.setenv("IMAGELABELS_PRESIGN_SECONDS", "120")
    hits = search.presign_hits(s3v4, search.images_with_label(seeded, "Pizza", min_confidence=90))
    bodies = {image.key: image.body for image in images()}
    for hit in hits:
        assert hit.url is not None
        assert "X-Amz-Expires=120" in hit.url
        with urllib.request.urlopen(hit.url, timeout=10) as response:
            assert response.read() == bodies[hit.s3key]
    (coffee,) = search.presign_hits(s3v4, search.describe_image(seeded, "coffee.png"), expires_in=30)
    assert coffee.url is not None
    assert "X-Amz-Expires=30" in coffee.url
    with urllib.request.urlopen(coffee.url, timeout=10) as response:
        assert response.read() == COFFEE.read_bytes()


def _signer(stack: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=stack.moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(signature_version="s3v4"),
    )


def _index_upload(
    es: Any, s3: Any, key: str, body: bytes, content_type: str, source_format: str | None
) -> None:
    put = s3.put_object(Bucket="photos", Key=key, Body=body, ContentType=content_type)
    obj = ObjectInfo("photos", key, len(body), put["ETag"], _day(11, 9), content_type=content_type)
    result = LabelResult([{"Name": "Cat", "Confidence": 90.0, "Parents": []}], "local", "test-1", 50.0, 10)
    document = build_document(
        obj, result, dag_id="d", run_id="r", ingested_at=INGESTED, source_format=source_format
    )
    action = {
        "_op_type": "create",
        "_index": INDEX_ALIAS,
        "_id": document_id("photos", key, None, put["ETag"]),
    }
    outcome = bulk_write(es, [{**action, "_source": document}], refresh="wait_for")
    assert outcome.failures == []


def test_a_presigned_link_serves_a_polyglot_as_the_detected_image_type(seeded, clean_stack) -> None:  # type: ignore[no-untyped-def]
    """A PNG with a page after its image data, uploaded as text/html: S3 would serve a page on its
    origin; our link makes it answer image/png, inline, under the object's name."""
    body = COFFEE.read_bytes() + b"<html><script>document.title='pwned'</script></html>"
    _index_upload(seeded, clean_stack.boto3_client("s3"), "uploads/polyglot.png", body, "text/html", "PNG")
    with urllib.request.urlopen(  # what S3 itself says without our overrides
        clean_stack.boto3_client("s3").generate_presigned_url(
            "get_object", Params={"Bucket": "photos", "Key": "uploads/polyglot.png"}, ExpiresIn=60
        ),
        timeout=10,
    ) as response:
        assert response.headers["Content-Type"] == "text/html"
    (hit,) = search.presign_hits(_signer(clean_stack), search.describe_image(seeded, "uploads/polyglot.png"))
    assert hit.content_type == "image/png"
    assert hit.url is not None
    with urllib.request.urlopen(hit.url, timeout=10) as response:
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["Content-Disposition"] == 'inline; filename="polyglot.png"'
        assert response.read() == body


def test_a_presigned_link_names_a_file_with_quotes_and_accents(seeded, clean_stack) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import unquote

    key = 'uploads/l\'été "au lac".jpg'
    _index_upload(seeded, clean_stack.boto3_client("s3"), key, b"\xff\xd8\xff jpeg", "image/jpeg", None)
    url = search.presigned_url(_signer(clean_stack), f"s3://photos/{key}", expires_in=60)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "image/jpeg"  # from the key, no detected type
        disposition = response.headers["Content-Disposition"]
        assert response.read() == b"\xff\xd8\xff jpeg"
    assert disposition.startswith("inline; filename=\"l'_t_ _au lac_.jpg\"; filename*=UTF-8''")
    assert unquote(disposition.split("UTF-8''", 1)[1]) == 'l\'été "au lac".jpg'


def _request_cache(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/{INDEX_ALIAS}/_stats/request_cache", timeout=30) as reply:
        stats = json.load(reply)["_all"]["total"]["request_cache"]
    return {name: int(stats[name]) for name in ("hit_count", "miss_count")}


def _primary_shards(url: str) -> int:
    """The request cache is kept per shard: one question asked of N shards is N misses, then N hits."""
    with urllib.request.urlopen(f"{url}/{INDEX_ALIAS}/_settings", timeout=30) as reply:
        (settings,) = json.load(reply).values()
    return int(settings["settings"]["index"]["number_of_shards"])


@pytest.mark.opensearch_only
def test_warming_puts_the_common_top_labels_answers_in_the_request_cache(seeded, clean_stack) -> None:  # type: ignore[no-untyped-def]
    """After an ingest run, the top-labels questions people ask (CLI default, the page's facets,
    the suggestion pool) are answered from the shard request cache, not recounted."""
    seeded.indices.refresh(index=INDEX_ALIAS)
    shards = _primary_shards(clean_stack.es_url)
    assert shards == 2  # the product's default, so the count below is per shard
    questions = len(search.COMMON_TOP_LABEL_SIZES) * shards
    before = _request_cache(clean_stack.es_url)
    search.warm_top_labels(seeded)
    warmed = _request_cache(clean_stack.es_url)
    assert warmed["miss_count"] - before["miss_count"] == questions
    for size in search.COMMON_TOP_LABEL_SIZES:
        search.top_labels(seeded, size=size)
    after = _request_cache(clean_stack.es_url)
    assert after["hit_count"] - warmed["hit_count"] == questions
    assert after["miss_count"] == warmed["miss_count"]


def test_a_search_by_an_alias_finds_the_label(es) -> None:  # type: ignore[no-untyped-def]
    """ "kitty", "people", "coffee", "cell phone": words people type find the labels they stand
    for, through the local taxonomy's aliases (documents without any Aliases too) and through
    the Aliases a document's labels carry (Rekognition's); the confidence shown is the label's."""
    ensure_indices(es)

    def doc(key: str, labels: list[dict[str, Any]]) -> dict[str, Any]:
        obj = ObjectInfo("photos", key, 1, f"etag-{key}", INGESTED)
        result = LabelResult(labels, "rekognition", "3.0", 50.0, 10)
        source = build_document(obj, result, dag_id="d", run_id="r", ingested_at=INGESTED)
        return {
            "_op_type": "create",
            "_index": INDEX_ALIAS,
            "_id": document_id("photos", key, None, f"etag-{key}"),
            "_source": source,
        }

    actions = [
        doc("cat.jpg", [{"Name": "Cat", "Confidence": 91.0}]),
        doc("crowd.jpg", [{"Name": "Person", "Confidence": 88.0}, {"Name": "Crowd", "Confidence": 70.0}]),
        doc("espresso.jpg", [{"Name": "Espresso", "Confidence": 93.0}]),
        doc("phone.jpg", [{"Name": "Mobile Phone", "Confidence": 97.0, "Aliases": [{"Name": "Cell Phone"}]}]),
        doc("dog.jpg", [{"Name": "Dog", "Confidence": 99.0}]),
    ]
    assert bulk_write(es, actions, refresh="wait_for").created == 5

    def found(word: str) -> list[tuple[str, float | None]]:
        return [(hit.s3key, hit.confidence) for hit in search.search_labels(es, word).hits]

    assert found("kitty") == [("cat.jpg", 91.0)]
    assert found("People") == [("crowd.jpg", 88.0)]
    assert found("coffee") == [("espresso.jpg", 93.0)]
    assert found("cell phone") == [("phone.jpg", 97.0)]
    assert found("Mobile Phone") == [("phone.jpg", 97.0)]
    assert search.search_labels(es, "kitty", min_confidence=95).hits == []
