"""Image links on the embedded stack (moto server + the search engine).

* The Image search app serves an indexed document's image itself
  (``api/images/{doc_id}/content``): any key (``../``, quotes, non-ASCII), the type its bytes are,
  ``inline``, ``nosniff``, a CSP that runs nothing; never an object that is not an indexed
  document; never to an anonymous caller. Its hits and detail answers point there.
* The page's ``after`` is refused (400) before the engine sees a ``NaN``.
* Presigned links carry the session token of the credentials that signed them: it is registered
  with Airflow's log masker, raw and URL-encoded, before any link exists -- also for an assumed
  role, whose every session has another token, and after the role's credentials refresh -- and
  the demo prints it masked.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from imagelabels import webapp
from imagelabels.devstack.embedded import EmbeddedStack
from imagelabels.documents import INDEX_ALIAS, LabelResult, ObjectInfo, build_document, document_id
from imagelabels.engine.indexing import bulk_write, ensure_indices
from imagelabels.search import queries as search

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"
BUCKET = "photos"
pytestmark = pytest.mark.both_engines
DOTTED = "uploads/2026/../../odd/./cat.png"  # browsers normalise ../ and ./ in a URL's path
QUOTED = 'uploads/l\'été "au lac" & co?#.jpg'
POLYGLOT = "uploads/polyglot.png"
PAGE = b"<html><body><script>document.title='pwned'</script></body></html>"


def _index(es: Any, s3: Any, key: str, body: bytes, *, content_type: str, source_format: str | None) -> str:
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType=content_type)
    obj = ObjectInfo(
        BUCKET, key, len(body), put["ETag"], datetime(2026, 11, 20, 10, tzinfo=UTC), content_type=content_type
    )
    result = LabelResult([{"Name": "Oddity", "Confidence": 90.0, "Parents": []}], "local", "t", 50.0, 10)
    doc_id = document_id(BUCKET, key, None, put["ETag"])
    source = build_document(
        obj, result, dag_id="d", run_id="r", ingested_at=datetime.now(UTC), source_format=source_format
    )
    outcome = bulk_write(
        es,
        [{"_op_type": "index", "_index": INDEX_ALIAS, "_id": doc_id, "_source": source}],
        refresh="wait_for",
    )
    assert outcome.failures == []
    return doc_id


@pytest.fixture
def indexed(clean_stack: EmbeddedStack) -> dict[str, str]:
    """Three indexed images with awkward keys, one object in S3 that is not indexed, and a
    document whose object is no longer an image."""
    es, s3 = clean_stack.elasticsearch(), clean_stack.boto3_client("s3")
    ensure_indices(es)
    s3.create_bucket(Bucket=BUCKET)
    png, jpeg = (SAMPLES / "chelsea.png").read_bytes(), (SAMPLES / "rocket.jpg").read_bytes()
    ids = {
        "dotted": _index(es, s3, DOTTED, png, content_type="image/png", source_format="PNG"),
        "quoted": _index(es, s3, QUOTED, jpeg, content_type="image/jpeg", source_format="JPEG"),
        "polyglot": _index(es, s3, POLYGLOT, png + PAGE, content_type="text/html", source_format="PNG"),
        "replaced": _index(
            es, s3, "uploads/replaced.png", png, content_type="image/png", source_format="PNG"
        ),
    }
    s3.put_object(Bucket=BUCKET, Key="uploads/replaced.png", Body=PAGE, ContentType="text/html")
    s3.put_object(Bucket=BUCKET, Key="private/secret.png", Body=png, ContentType="image/png")
    return ids


async def _signed_in(request: Request) -> str:
    """The auth dependency's contract (401 without credentials), without an api-server; the real
    one is driven by tests/ui/test_image_search_page.py."""
    if request.headers.get("authorization") != "Bearer ok":
        raise HTTPException(status_code=401, detail="Not authenticated")
    return "user"


@pytest.fixture
def page_api(clean_stack: EmbeddedStack) -> TestClient:
    app = webapp.create_app(
        elasticsearch=clean_stack.elasticsearch,
        s3=lambda: clean_stack.boto3_client("s3"),
        authenticate=_signed_in,
    )
    return TestClient(app, headers={"Authorization": "Bearer ok"})


def _served(client: TestClient, doc_id: str) -> Any:
    return client.get(f"/api/images/{quote(doc_id, safe='')}/content")


@pytest.mark.parametrize(
    ("which", "key", "sample", "content_type"),
    [
        ("dotted", DOTTED, "chelsea.png", "image/png"),
        ("quoted", QUOTED, "rocket.jpg", "image/jpeg"),
    ],
)
def test_the_page_serves_an_indexed_image_whatever_its_key(
    indexed: dict[str, str], page_api: TestClient, which: str, key: str, sample: str, content_type: str
) -> None:
    answer = _served(page_api, indexed[which])
    assert answer.status_code == 200, answer.text
    assert answer.content == (SAMPLES / sample).read_bytes()
    assert answer.headers["content-type"] == content_type
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-security-policy"] == "default-src 'none'; sandbox; frame-ancestors 'none'"
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith('inline; filename="')
    name = key.rsplit("/", 1)[1]
    if "filename*=" in disposition:
        assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == name
    else:
        assert disposition == f'inline; filename="{name}"'


def test_a_polyglot_is_served_as_the_image_its_bytes_start_as(
    indexed: dict[str, str], page_api: TestClient
) -> None:
    answer = _served(page_api, indexed["polyglot"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"  # uploaded as text/html
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.content.endswith(PAGE)


def test_only_indexed_images_are_served(indexed: dict[str, str], page_api: TestClient) -> None:
    unindexed = document_id(BUCKET, "private/secret.png", None, "whatever")
    assert _served(page_api, unindexed).status_code == 404
    assert _served(page_api, "private/secret.png").status_code in (404, 405)  # no key addresses it
    assert page_api.get("/api/images/s3%3A%2F%2Fphotos%2Fprivate%2Fsecret.png/content").status_code == 404
    assert _served(page_api, hashlib.sha256(b"x").hexdigest()).status_code == 404
    assert _served(page_api, "x" * 600).status_code == 404
    # indexed, but the object was overwritten with a page since: nothing is served
    replaced = _served(page_api, indexed["replaced"])
    assert (replaced.status_code, replaced.json()) == (404, {"detail": "the object is not an image"})


def test_anonymous_callers_get_no_image(indexed: dict[str, str], page_api: TestClient) -> None:
    anonymous = TestClient(page_api.app)
    assert anonymous.get(f"/api/images/{indexed['dotted']}/content").status_code == 401
    forged = TestClient(page_api.app, headers={"Authorization": "Bearer forged"})
    assert forged.get(f"/api/images/{indexed['dotted']}/content").status_code == 401


def test_hits_and_details_point_at_the_served_image(indexed: dict[str, str], page_api: TestClient) -> None:
    found = page_api.get("/api/search", params={"label": "Oddity"}).json()
    urls = {hit["id"]: hit["url"] for hit in found["hits"]}
    assert urls[indexed["dotted"]] == f"/api/images/{indexed['dotted']}/content"
    assert page_api.get(urls[indexed["dotted"]]).content == (SAMPLES / "chelsea.png").read_bytes()
    detail = page_api.get(f"/api/images/{indexed['quoted']}").json()
    assert detail["url"] == f"/api/images/{indexed['quoted']}/content"
    assert detail["s3_location"] == f"s3://{BUCKET}/{QUOTED}"
    assert "X-Amz" not in json.dumps(found) + json.dumps(detail)  # no presigned URL left


@pytest.mark.parametrize("after", ['[NaN, "x"]', '[Infinity, "s3://photos/a"]', '[1e999, "x"]'])
def test_after_with_a_non_finite_number_is_a_400_not_a_502(
    indexed: dict[str, str], page_api: TestClient, after: str
) -> None:
    answer = page_api.get("/api/search", params={"label": "Oddity", "after": after})
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith("after must be the next_after of a previous answer")


# --- presigned links and Airflow's log masker --------------------------------------------------

FAKE_TOKEN = "FwoGZXIvYXdzEFakeSession/Token+WithSlashes=="


def _token_of(url: str) -> str:
    from urllib.parse import parse_qs, urlsplit

    [token] = parse_qs(urlsplit(url).query)["X-Amz-Security-Token"]
    return token


def _assert_masked(url: str) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    token = _token_of(url)
    shown = str(redact(url))
    assert token not in shown
    assert quote(token, safe="") not in shown
    assert "X-Amz-Security-Token=***" in shown


def test_a_session_token_in_presigned_links_is_masked_in_logs(
    clean_stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagelabels import clients

    conn = json.loads(clean_stack.airflow_env()["AIRFLOW_CONN_AWS_DEFAULT"])
    conn["extra"]["aws_session_token"] = FAKE_TOKEN
    monkeypatch.setenv("AIRFLOW_CONN_AWS_SESSION", json.dumps(conn))
    url = search.presigned_url(clients.presigning_s3_client("aws_session"), "s3://b/k.png", expires_in=60)
    assert _token_of(url) == FAKE_TOKEN
    _assert_masked(url)


def test_an_assumed_roles_token_is_masked_also_after_a_refresh(
    clean_stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every session of a role connection is another AssumeRole with another token: the one the
    link is signed with is the one to mask; and a refreshed token is masked before it signs."""
    from imagelabels import clients

    conn = json.loads(clean_stack.airflow_env()["AIRFLOW_CONN_AWS_DEFAULT"])
    conn["extra"]["role_arn"] = "arn:aws:iam::123456789012:role/imagelabels-presigner"
    conn["extra"]["service_config"] = {"sts": {"endpoint_url": clean_stack.moto_url}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_ROLE", json.dumps(conn))
    signer = clients.presigning_s3_client("aws_role")
    first = search.presigned_url(signer, "s3://b/k.png", expires_in=60)
    _assert_masked(first)

    credentials = signer._request_signer._credentials  # botocore's RefreshableCredentials
    credentials._expiry_time = datetime.now(UTC)  # as if the hour were up: the next use refreshes
    second = search.presigned_url(signer, "s3://b/k.png", expires_in=60)
    assert _token_of(second) != _token_of(first)
    _assert_masked(second)


def test_the_demo_prints_alert_links_with_the_session_token_masked(
    clean_stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from botocore.config import Config

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    sys.modules.pop("demo", None)
    import demo

    s3 = boto3.client(
        "s3",
        endpoint_url=clean_stack.moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token=FAKE_TOKEN,
        config=Config(signature_version="s3v4"),
    )
    url = search.presigned_url(s3, "s3://demo-images/uploads/chelsea.png", expires_in=60)
    shown = demo.shown_link(url)
    assert FAKE_TOKEN not in shown
    assert quote(FAKE_TOKEN, safe="") not in shown
    assert shown.startswith(f"{clean_stack.moto_url}/demo-images/uploads/chelsea.png?")
    assert "X-Amz-Security-Token=***" in shown
    # the embedded stack's keys carry no token: the demo's link is printed whole and works
    plain = search.presigned_url(clean_stack.boto3_client("s3"), "s3://demo-images/x.png", expires_in=60)
    assert demo.shown_link(plain) == plain


REPORTS = "_imagelabels/reports/daily/2026/11/28"


def test_report_files_are_served_to_signed_in_users_through_links_that_never_expire(
    clean_stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Report messages link to the page's ``api/reports`` route (no presigned expiry, whatever
    the credentials): a signed-in user gets the stored file, as its type; an anonymous one the
    login page; nothing outside a configured report's stored names is ever served."""
    from imagelabels.reports.config import get_report_config
    from imagelabels.reports.links import report_page_links

    monkeypatch.setenv("IMAGELABELS_BUCKET", BUCKET)
    s3 = clean_stack.boto3_client("s3")
    s3.create_bucket(Bucket=BUCKET)
    pdf, csv = b"%PDF-1.7 a report", b"label,images\nCat,3\n"
    s3.put_object(Bucket=BUCKET, Key=f"{REPORTS}/label-report_daily_2026-11-28.pdf", Body=pdf)
    s3.put_object(Bucket=BUCKET, Key=f"{REPORTS}/label-report_daily_2026-11-28_top_labels.csv", Body=csv)
    s3.put_object(Bucket=BUCKET, Key="private/secret.png", Body=b"\x89PNG secret")
    uris = [
        f"s3://{BUCKET}/{REPORTS}/label-report_daily_2026-11-28.pdf",
        f"s3://{BUCKET}/{REPORTS}/label-report_daily_2026-11-28_top_labels.csv",
    ]
    links = report_page_links(get_report_config("daily"), uris, "https://airflow.example.com/")
    base = "https://airflow.example.com/image-search"
    assert links == {
        "label-report_daily_2026-11-28.pdf": f"{base}/api/reports/daily/2026/11/28/label-report_daily_2026-11-28.pdf",
        "label-report_daily_2026-11-28_top_labels.csv": (
            f"{base}/api/reports/daily/2026/11/28/label-report_daily_2026-11-28_top_labels.csv"
        ),
    }
    app = webapp.create_app(
        elasticsearch=clean_stack.elasticsearch,
        s3=lambda: s3,
        authenticate=_signed_in,
        login_url=lambda request: "/login?next=here",
    )
    user = TestClient(app, headers={"Authorization": "Bearer ok"})
    paths = {name: url.removeprefix(base) for name, url in links.items()}
    served = user.get(paths["label-report_daily_2026-11-28.pdf"])
    assert (served.status_code, served.content) == (200, pdf)
    assert served.headers["content-type"] == "application/pdf"
    assert served.headers["content-disposition"] == 'inline; filename="label-report_daily_2026-11-28.pdf"'
    assert served.headers["x-content-type-options"] == "nosniff"
    table = user.get(paths["label-report_daily_2026-11-28_top_labels.csv"])
    assert (table.status_code, table.content) == (200, csv)
    assert table.headers["content-disposition"].startswith("attachment;")
    anonymous = TestClient(app, follow_redirects=False).get(paths["label-report_daily_2026-11-28.pdf"])
    assert (anonymous.status_code, anonymous.headers["location"]) == (303, "/login?next=here")
    for refused in (
        "/api/reports/daily/%2E%2E/%2E%2E/private/secret.png",  # out of the report's folder
        "/api/reports/daily/2026/11/28/.hidden.pdf",
        "/api/reports/daily/2026/11/28/page.html",  # not a report file type
        "/api/reports/nosuch/2026/11/28/label-report_daily_2026-11-28.pdf",  # not a configured report
        "/api/reports/daily/2026/11/29/label-report_daily_2026-11-29.pdf",  # not stored
    ):
        assert user.get(refused).status_code == 404, refused
