"""Links to images: what a presigned link makes S3 send, how a file name goes into a header, the
session token masked for a terminal, the Image search page's detail-view URL, and the page's
``after`` parameter refused before it reaches the engine."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from imagelabels import webapp
from imagelabels.search import queries as search


class _FakeS3:
    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []

    def generate_presigned_url(self, operation: str, Params: dict[str, Any], ExpiresIn: int) -> str:
        self.params.append(Params)
        return f"https://signed/{Params['Bucket']}/{Params['Key']}?X-Amz-Expires={ExpiresIn}"


@pytest.mark.parametrize(
    ("key", "content_type", "served"),
    [
        ("a/polyglot.png", "image/png", "image/png"),  # the type preflight detected wins
        ("a/polyglot.png", None, "image/png"),  # else the key's suffix, among image/report types
        ("a/photo.JPG", None, "image/jpeg"),
        ("reports/daily.pdf", None, "application/pdf"),
        ("reports/daily.csv", None, "text/csv"),
        ("a/page.html", None, "application/octet-stream"),  # never a page
        ("a/page.png", "text/html", "image/png"),  # an uploader's type is never passed on
        ("a/drawing.svg", None, "application/octet-stream"),  # SVG runs scripts
        ("a/drawing", "image/svg+xml", "application/octet-stream"),
        ("a/no-suffix", None, "application/octet-stream"),
        ("a/x.jpg", "image/webp; charset=x", "image/webp"),
    ],
)
def test_presigned_url_names_a_safe_type_and_an_inline_disposition(
    key: str, content_type: str | None, served: str
) -> None:
    fake = _FakeS3()
    url = search.presigned_url(fake, f"s3://bucket/{key}", expires_in=60, content_type=content_type)
    assert url == f"https://signed/bucket/{key}?X-Amz-Expires=60"
    [params] = fake.params
    assert params["ResponseContentType"] == served
    assert params["ResponseContentDisposition"].startswith("inline; filename=")


def test_presign_hits_signs_with_the_type_of_the_document() -> None:
    fake = _FakeS3()
    hit = search.Hit("p.html", "s3://b/p.html", None, [], content_type="image/png")
    [signed] = search.presign_hits(fake, [hit], expires_in=5)
    assert signed.url == "https://signed/b/p.html?X-Amz-Expires=5"
    assert fake.params == [
        {
            "Bucket": "b",
            "Key": "p.html",
            "ResponseContentType": "image/png",
            "ResponseContentDisposition": 'inline; filename="p.html"',
        }
    ]


@pytest.mark.parametrize(
    ("source_format", "stored", "expected"),
    [
        ("PNG", "text/html", "image/png"),
        ("JPEG", None, "image/jpeg"),
        (None, "image/gif", "image/gif"),
        (None, "text/html", None),
        (None, "image/svg+xml", None),
        (None, None, None),
    ],
)
def test_image_content_type_prefers_the_detected_format(
    source_format: str | None, stored: str | None, expected: str | None
) -> None:
    assert search.image_content_type(source_format, stored) == expected


def test_hits_carry_the_detected_type_of_their_document() -> None:
    raw = {
        "_id": "x",
        "_source": {
            "title": "t",
            "s3_location": "s3://b/k",
            "object": {"content_type": "text/html"},
            "preflight": {"source_format": "PNG"},
        },
    }
    assert search._hit(raw).content_type == "image/png"
    assert "preflight.source_format" in search._SOURCE
    assert "object.content_type" in search._SOURCE


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cat.png", 'inline; filename="cat.png"'),
        (
            'say "cheese".png',
            "inline; filename=\"say _cheese_.png\"; filename*=UTF-8''say%20%22cheese%22.png",
        ),
        ("café.jpg", "inline; filename=\"caf_.jpg\"; filename*=UTF-8''caf%C3%A9.jpg"),
        ("back\\slash.png", "inline; filename=\"back_slash.png\"; filename*=UTF-8''back%5Cslash.png"),
        ("it's.png", 'inline; filename="it\'s.png"'),
        ("evil\r\nSet-Cookie: a=b.png", 'inline; filename="evilSet-Cookie: a=b.png"'),
        ("", 'inline; filename="image"'),
    ],
)
def test_content_disposition_quotes_and_encodes_the_name(name: str, expected: str) -> None:
    value = search.content_disposition(name)
    assert value == expected
    value.encode("ascii")  # a header value: ASCII only, no CR/LF
    assert "\r" not in value
    assert "\n" not in value
    if "filename*=" in value:  # the exact name survives, RFC 5987
        assert unquote(value.split("filename*=UTF-8''", 1)[1]) == name


TOKEN = "IQoJb3JpZ2luX2VjFake/Session+Token=="


@pytest.mark.parametrize(
    "url",
    [
        f"https://b.s3.amazonaws.com/k.png?X-Amz-Algorithm=AWS4&X-Amz-Security-Token={TOKEN}&X-Amz-Signature=ab",
        "https://b.s3.amazonaws.com/k.png?X-Amz-Security-Token=IQoJ%2FFake%2BToken%3D%3D&X-Amz-Signature=ab",
        f"https://b.s3.amazonaws.com/k.png?AWSAccessKeyId=AK&Signature=s&x-amz-security-token={TOKEN}",
    ],
)
def test_mask_session_token(url: str) -> None:
    masked = search.mask_session_token(url)
    assert TOKEN not in masked
    assert "IQoJ" not in masked
    assert "ecurity-token=***" in masked.lower()
    assert masked.split("?")[0] == url.split("?")[0]


def test_mask_session_token_keeps_a_link_without_one() -> None:
    url = "http://127.0.0.1:5000/b/k.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab"
    assert search.mask_session_token(url) == url


def test_image_page_url_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGELABELS_UI_BASE_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/team/")
    doc = "0f" * 32
    assert search.image_page_url(doc) == f"https://airflow.example.com/team/image-search/?image={doc}"
    monkeypatch.setenv("IMAGELABELS_UI_BASE_URL", "https://ui.example.com")
    assert search.image_page_url(doc) == f"https://ui.example.com/image-search/?image={doc}"
    assert (
        search.image_page_url("a b/c", base_url="http://h:8080/")
        == "http://h:8080/image-search/?image=a%20b%2Fc"
    )
    assert search.image_page_url("", base_url="http://h") is None


def test_image_page_url_without_a_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGELABELS_UI_BASE_URL", raising=False)
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    assert search.image_page_url("abc") is None


# --- the page's ``after`` ----------------------------------------------------------------------


class _RecordingEngine:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def search(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        if "aggs" in request:
            return {"hits": {"hits": [], "total": {"value": 0}}, "aggregations": {"labels": {"buckets": []}}}
        return {"hits": {"hits": [], "total": {"value": 0}}}


async def _signed_in(request: Request) -> str:
    if request.headers.get("authorization") != "Bearer ok":
        raise HTTPException(status_code=401, detail="Not authenticated")
    return "user"


@pytest.fixture
def api() -> tuple[TestClient, _RecordingEngine]:
    engine = _RecordingEngine()
    app = webapp.create_app(elasticsearch=lambda: engine, s3=lambda: None, authenticate=_signed_in)
    return TestClient(app, headers={"Authorization": "Bearer ok"}), engine


@pytest.mark.parametrize(
    "after",
    [
        '[NaN, "x"]',
        '[Infinity, "x"]',
        '[-Infinity, "x"]',
        '[1e999, "x"]',
        '[9223372036854775808, "x"]',
        '[true, "x"]',
        '[null, "x"]',
        '[1.5, ["x"]]',
        '[1.5, {"a": 1}]',
        "[1.5, 2]",
        '["x", 1.5]',
        "[1.5]",
        '[1.5, "x", "y"]',
        "[]",
        '{"a": 1}',
        '"x"',
        "nonsense",
        "[" * 500,
        '[1.5, "' + "x" * 2049 + '"]',
        '[1.5, "x"' + " " * 13_000 + "]",
    ],
)
def test_after_is_validated_strictly(api: tuple[TestClient, _RecordingEngine], after: str) -> None:
    client, engine = api
    answer = client.get("/api/search", params={"label": "Cat", "after": after})
    assert answer.status_code == 400, answer.text
    assert "after must be the next_after of a previous answer" in answer.json()["detail"]
    assert engine.requests == []  # refused before the engine is asked


def test_a_valid_after_reaches_the_engine(api: tuple[TestClient, _RecordingEngine]) -> None:
    client, engine = api
    answer = client.get("/api/search", params={"label": "Cat", "after": '[97.5, "s3://b/it\'s \\"x\\".png"]'})
    assert answer.status_code == 200, answer.text
    assert engine.requests[0]["search_after"] == [97.5, 's3://b/it\'s "x".png']


def test_after_of_a_long_non_ascii_key_pages(api: tuple[TestClient, _RecordingEngine]) -> None:
    """An S3 key is up to 1,024 bytes; as JSON (``\\uXXXX`` escapes) far over 1,000 characters."""
    import json

    client, engine = api
    location = "s3://bucket/" + "é" * 500
    answer = client.get("/api/search", params={"label": "Cat", "after": json.dumps([88.0, location])})
    assert answer.status_code == 200, answer.text
    assert engine.requests[0]["search_after"] == [88.0, location]
