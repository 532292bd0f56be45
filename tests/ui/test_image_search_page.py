"""The "Image search" Airflow UI plugin, for real: ``airflow api-server`` with ``plugins/`` on the
embedded stack (moto with the sample photographs, noida-db with their documents), its JSON routes
over HTTP, and the page driven in headless Chromium over the DevTools protocol (login on the
simple auth manager's page, type a label, open an image's detail view, save a screenshot).
Images come through the page's own route (``api/images/<id>/content``), a key with ``../``, a
quote and accents included, and a detail link (``?image=<id>``) survives the login.

The screenshot goes to ``tests/ui/screenshots/image-search.png`` (git-ignored). Chromium is
Debian's ``chromium`` package (``apt-get install chromium``); without it the browser test skips.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import mimetypes
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from imagelabels.devstack.embedded import EmbeddedStack, stop_process_group
from imagelabels.devstack.ports import free_port
from imagelabels.documents import INDEX_ALIAS, LabelResult, ObjectInfo, build_document, document_id
from imagelabels.engine.indexing import bulk_write, ensure_indices

# On OpenSearch the page's api-server reaches the node through a SigV4-verifying proxy, signing
# with the AWS connection, as it would reach an Amazon OpenSearch Service domain.
pytestmark = [pytest.mark.integration, pytest.mark.both_engines]

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
BUCKET = "demo-images"
PREFIX = "uploads/2026-11-20/"
USER = "admin"
XSS_LABEL = "<img src=x onerror=window.pwned=1>"

# (name, confidence, parents, instance boxes as (left, top, width, height)) per sample photograph
LABELS: dict[str, list[tuple[str, float, list[str], list[tuple[float, float, float, float]]]]] = {
    "chelsea.png": [
        ("Cat", 97.2, ["Animal", "Mammal", "Pet"], [(0.0, 0.0, 0.88, 1.0)]),
        ("Animal", 97.2, [], []),
        ("Mammal", 97.2, ["Animal"], []),
        ("Pet", 97.2, ["Animal"], []),
        ("Eye", 88.0, [], [(0.30, 0.28, 0.17, 0.2), (0.65, 0.36, 0.11, 0.19)]),
        ("Tabby Cat", 81.4, ["Cat", "Mammal", "Animal"], []),
    ],
    "coffee.png": [
        ("Coffee", 95.1, ["Beverage"], []),
        ("Beverage", 95.1, [], []),
        ("Cup", 90.3, [], [(0.18, 0.22, 0.62, 0.6)]),
        (XSS_LABEL, 55.0, [], []),
    ],
    "astronaut.png": [
        ("Person", 99.4, [], [(0.2, 0.05, 0.7, 0.95)]),
        ("Astronaut", 93.0, ["Person"], []),
        ("Flag", 80.2, [], []),
    ],
    "grace_hopper.jpg": [
        ("Person", 98.1, [], [(0.1, 0.05, 0.85, 0.95)]),
        ("Uniform", 85.0, [], []),
        ("Tie", 72.5, [], []),
    ],
    "rocket.jpg": [
        ("Rocket", 96.0, ["Vehicle"], [(0.42, 0.1, 0.14, 0.6)]),
        ("Vehicle", 96.0, [], []),
        ("Smoke", 92.4, [], []),
    ],
}
MODERATION = {"rocket.jpg": [{"Name": "Explosions and Blasts", "Confidence": 61.0, "ParentName": "Violence"}]}
# One key a presigned URL could not show (browsers normalise ../ away; a quote, accents), uploaded
# as text/html: the page's route serves it all the same, as the PNG it is.
ODD_KEY = 'uploads/2026-11-20/../odd/l\'été "au lac".png'
ODD_TITLE = 'l\'été "au lac".png'
ODD_SAMPLE = "chelsea.png"
ODD_LABELS: list[tuple[str, float, list[str], list[tuple[float, float, float, float]]]] = [
    ("Oddity", 90.0, [], [(0.1, 0.1, 0.5, 0.5)])
]


def _seed(stack: EmbeddedStack) -> None:
    """Empty the servers, upload the samples to moto and index one document per sample."""
    stack.reset_moto()
    es = stack.elasticsearch()
    for name in es.indices.get(index="*", expand_wildcards="open,closed"):
        if not name.startswith("."):  # the engine's own system indices
            es.indices.delete(index=name)
    if es.indices.exists_index_template(name="imagelabels-images"):
        es.indices.delete_index_template(name="imagelabels-images")
    ensure_indices(es)
    s3 = stack.boto3_client("s3")
    s3.create_bucket(Bucket=BUCKET)
    actions = []
    uploads = [
        (PREFIX + title, title, mimetypes.guess_type(title)[0], labels) for title, labels in LABELS.items()
    ]
    uploads.append((ODD_KEY, ODD_SAMPLE, "text/html", ODD_LABELS))
    for key, sample, content_type, labels in uploads:
        body = (SAMPLES / sample).read_bytes()
        put = s3.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType=content_type)
        from PIL import Image

        with Image.open(SAMPLES / sample) as picture:
            width, height = picture.size
        obj = ObjectInfo(
            BUCKET,
            key,
            len(body),
            put["ETag"],
            datetime(2026, 11, 20, 10, tzinfo=UTC),
            content_type=content_type,
            width=width,
            height=height,
        )
        result = LabelResult(
            [
                {
                    "Name": name,
                    "Confidence": confidence,
                    "Parents": [{"Name": parent} for parent in parents],
                    "Instances": [
                        {
                            "BoundingBox": {"Left": left, "Top": top, "Width": w, "Height": h},
                            "Confidence": confidence,
                        }
                        for left, top, w, h in boxes
                    ],
                }
                for name, confidence, parents, boxes in labels
            ],
            "local",
            "test-1",
            50.0,
            20,
            features=("labels", "moderation"),
            moderation_labels=MODERATION.get(key.rsplit("/", 1)[1], []),
            moderation_model_version="test-1",
        )
        actions.append(
            {
                "_op_type": "create",
                "_index": INDEX_ALIAS,
                "_id": document_id(BUCKET, key, None, put["ETag"]),
                "_source": build_document(
                    obj, result, dag_id="d", run_id="r", ingested_at=datetime(2026, 11, 20, 11, tzinfo=UTC)
                ),
            }
        )
    outcome = bulk_write(es, actions, refresh="wait_for")
    assert (outcome.created, outcome.failures) == (len(actions), [])


# --- the api-server with the plugin ----------------------------------------------------------


@dataclass
class Server:
    url: str
    password: str
    token: str
    sigv4: Any = None  # the SigV4Proxy in front of OpenSearch, when the stack's engine is one


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _request(url: str, token: str | None = None, *, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    """(status, parsed JSON or raw bytes or Location header); redirects are not followed."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, method=method, data=data)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, headers = error.code, error.read(), error.headers
    if 300 <= status < 400:
        return status, headers.get("Location")
    if (headers.get("Content-Type") or "").startswith("application/json"):
        return status, json.loads(raw)
    return status, raw


@pytest.fixture(scope="module")
def server(
    stack: EmbeddedStack, airflow_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    _seed(stack)
    exits = contextlib.ExitStack()
    engine_connection = {}
    sigv4 = None
    if stack.engine_flavor == "opensearch":
        from imagelabels.devstack.embedded import AWS_REGION, AWS_TEST_KEY
        from tests.sigv4_proxy import SigV4Proxy

        sigv4 = exits.enter_context(
            SigV4Proxy(
                stack.es_url,
                access_key=AWS_TEST_KEY,
                secret_key=AWS_TEST_KEY,
                region=AWS_REGION,
                service="es",
            )
        )
        extra = {"use_ssl": False, "aws_conn_id": "aws_default", "region_name": AWS_REGION, "service": "es"}
        port = int(sigv4.url.rsplit(":", 1)[1])
        engine_connection["AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"] = json.dumps(
            {"conn_type": "opensearch", "host": "127.0.0.1", "port": port, "extra": extra}
        )
    state = tmp_path_factory.mktemp("api-server")
    password = secrets.token_urlsafe(12)
    passwords = state / "passwords.json"
    passwords.write_text(json.dumps({USER: password}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
        **stack.airflow_env(),
        **engine_connection,
    }
    log_path = state / "api-server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("airflow")),
                "api-server",
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"api-server exited:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"api-server not ready:\n{log_path.read_text()[-4000:]}"
            try:
                if _request(f"{url}/api/v2/version")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        status, answer = _request(
            f"{url}/auth/token", method="POST", body={"username": USER, "password": password}
        )
        assert status == 201, answer
        yield Server(url, password, answer["access_token"], sigv4)
    finally:
        stop_process_group(process, timeout=30)
        exits.close()


def test_the_plugin_is_registered_with_a_ui_entry(server: Server) -> None:
    status, answer = _request(f"{server.url}/api/v2/plugins", server.token)
    assert status == 200, answer
    plugin = next(p for p in answer["plugins"] if p["name"] == "image_search")
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/image-search"]
    [view] = plugin["external_views"]
    assert (view["name"], view["href"], view["url_route"]) == (
        "Image search",
        "/image-search/",
        "image-search",
    )


def test_on_opensearch_every_engine_request_is_sigv4_signed(server: Server) -> None:
    status, answer = _request(f"{server.url}/image-search/api/search?label=Person", server.token)
    assert status == 200, answer
    assert [hit["title"] for hit in answer["hits"]] == ["astronaut.png", "grace_hopper.jpg"]
    if server.sigv4 is not None:  # the OpenSearch run: the page went through the AWS front end
        assert server.sigv4.accepted > 0
        assert server.sigv4.refused == []


def test_no_anonymous_access(server: Server) -> None:
    base = f"{server.url}/image-search"
    status, location = _request(f"{base}/")
    assert status == 303
    assert location.startswith("/auth/login?next=")
    assert urllib.parse.unquote(location.partition("next=")[2]) == f"{base}/"
    odd = _request(f"{base}/api/search?label=Oddity", server.token)[1]["hits"][0]["id"]
    paths = ["/api/search?label=Cat", "/api/suggest?prefix=Ca", "/api/images/x", "/static/app.js"]
    for path in [*paths, f"/api/images/{odd}/content", f"/api/images/{odd}", f"/api/images/{odd}/similar"]:
        assert _request(f"{base}{path}")[0] == 401, path
        assert _request(f"{base}{path}", "not-a-jwt")[0] == 403, path


def test_search_suggest_and_detail_answers(server: Server, stack: EmbeddedStack) -> None:
    base = f"{server.url}/image-search/api"
    status, found = _request(f"{base}/search?label=cat&min_confidence=50", server.token)
    assert status == 200, found
    assert [hit["title"] for hit in found["hits"]] == ["chelsea.png"]
    [cat] = found["hits"]
    assert cat["confidence"] == 97.2
    assert {"name": "Cat", "count": 1} in found["facets"]
    # the image through the page's own route, with the api-server's S3 credentials
    assert cat["url"] == f"/image-search/api/images/{cat['id']}/content"
    assert _request(f"{server.url}{cat['url']}", server.token) == (
        200,
        (SAMPLES / "chelsea.png").read_bytes(),
    )
    assert _request(f"{server.url}{cat['url']}")[0] == 401

    status, people = _request(f"{base}/search?label=Person&min_confidence=99", server.token)
    assert [hit["title"] for hit in people["hits"]] == ["astronaut.png"]
    status, people = _request(f"{base}/search?label=Person&exclude_moderated=true", server.token)
    assert [hit["title"] for hit in people["hits"]] == ["astronaut.png", "grace_hopper.jpg"]
    status, rockets = _request(f"{base}/search?label=Rocket&exclude_moderated=true", server.token)
    assert rockets["hits"] == []
    status, first = _request(f"{base}/search?label=Person&size=1", server.token)
    assert ([hit["title"] for hit in first["hits"]], first["total"]) == (["astronaut.png"], 2)
    after = urllib.parse.quote(first["next_after"])
    status, second = _request(f"{base}/search?label=Person&size=1&after={after}", server.token)
    assert ([hit["title"] for hit in second["hits"]], second["next_after"]) == (["grace_hopper.jpg"], None)

    status, suggested = _request(f"{base}/suggest?prefix=ca", server.token)
    assert suggested["suggestions"] == ["Cat", "Tabby Cat"]
    assert _request(f"{base}/search?label=Cat&after=nonsense", server.token)[0] == 400

    status, detail = _request(f"{base}/images/{cat['id']}", server.token)
    assert status == 200, detail
    assert [label["name"] for label in detail["labels"]][:4] == ["Animal", "Cat", "Mammal", "Pet"]
    eye = next(label for label in detail["labels"] if label["name"] == "Eye")
    assert [instance["box"] for instance in eye["instances"]] == [
        {"left": 0.30, "top": 0.28, "width": 0.17, "height": 0.2},
        {"left": 0.65, "top": 0.36, "width": 0.11, "height": 0.19},
    ]
    assert (detail["width"], detail["height"], detail["moderation"]) == (451, 300, [])
    assert detail["url"] == cat["url"]

    # ../, a quote and accents in the key, uploaded as text/html: served as the PNG it is, inline
    status, odd = _request(f"{base}/search?label=Oddity", server.token)
    [hit] = odd["hits"]
    assert (hit["title"], hit["s3_location"]) == (ODD_TITLE, f"s3://{BUCKET}/{ODD_KEY}")
    request = urllib.request.Request(f"{server.url}{hit['url']}")
    request.add_header("Authorization", f"Bearer {server.token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.read() == (SAMPLES / ODD_SAMPLE).read_bytes()
        headers = response.headers
    assert headers["Content-Type"] == "image/png"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "default-src 'none'; sandbox; frame-ancestors 'none'"
    assert headers["Content-Disposition"] == (
        "inline; filename=\"l'_t_ _au lac_.png\"; filename*=UTF-8''l%27%C3%A9t%C3%A9%20%22au%20lac%22.png"
    )
    unindexed = hashlib.sha256(b"uploads/2026-11-20/chelsea.png").hexdigest()
    assert _request(f"{base}/images/{unindexed}/content", server.token)[0] == 404
    assert _request(f"{base}/images/missing", server.token)[0] == 404
    status, rocket = _request(f"{base}/search?label=Rocket", server.token)
    assert rocket["hits"][0]["moderated"] is True
    status, detail = _request(f"{base}/images/{rocket['hits'][0]['id']}", server.token)
    assert detail["moderation"] == [
        {"name": "Explosions and Blasts", "confidence": 61.0, "parent": "Violence"}
    ]


# --- the page in headless Chromium -----------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page, a blocking websocket)."""

    def __init__(self, binary: str, profile: Path) -> None:
        from websockets.sync.client import connect

        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._id = 0
        try:
            active = profile / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not active.exists() or not active.read_text().strip():
                assert self.process.poll() is None, "chromium exited at start"
                assert time.monotonic() < deadline, "chromium did not open its DevTools port"
                time.sleep(0.2)
            port = active.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                targets = json.loads(response.read())
            page = next(target for target in targets if target["type"] == "page")
            self.socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            stop_process_group(self.process)  # type: ignore[arg-type]
            raise

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self._id:
                assert "error" not in message, message["error"]
                return message.get("result", {})  # type: ignore[no-any-return]

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 30, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy. An evaluation that a navigation interrupts
        (the login form redirecting, "Inspected target navigated or closed") counts as "not yet":
        on a loaded machine the poll can land in the middle of one (found beside stress-ng)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.eval(expression)
            except AssertionError as error:
                if "navigated or closed" not in str(error) and "context was destroyed" not in str(error):
                    raise
                value = None
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what or expression}"
            time.sleep(0.1)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def type_into(self, selector: str, text: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        for char in text:
            self.send("Input.insertText", text=char)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.socket.close()
        stop_process_group(self.process)  # type: ignore[arg-type]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    binary = _chromium()
    if binary is None:
        pytest.fail("no chromium on PATH: run scripts/setup_system.sh (Debian: apt-get install chromium)")
    running = Browser(binary, tmp_path / "profile")
    try:
        yield running
    finally:
        running.close()


_CARDS = "[...document.querySelectorAll('#results .card')].map(c => c.dataset.title)"
_THUMBS_LOADED = (
    "[...document.querySelectorAll('#results .card img')].every(i => i.complete && i.naturalWidth > 0)"
)
# every thumbnail from the page's own route (same origin), none from S3
_THUMBS_FROM_THE_PAGE = (
    "[...document.querySelectorAll('#results .card img')].every("
    "i => i.src.startsWith(location.origin + '/image-search/api/images/') && i.src.endsWith('/content'))"
)
_DETAIL_LOADED = (
    "document.getElementById('detail').open && document.getElementById('detail-image').complete"
    " && document.getElementById('detail-image').naturalWidth > 0"
)


def _sign_in(browser: Browser, server: Server) -> None:
    """On the simple auth manager's login page: sign in (it comes back to where it was sent from)."""
    browser.wait("location.pathname.startsWith('/auth/login') && !!document.querySelector('input')", 60)
    browser.wait("document.querySelectorAll('input').length >= 2", 60, "the login form")
    browser.type_into("input[name=username], input:not([type=password])", USER)
    browser.type_into("input[type=password]", server.password)
    browser.eval("document.querySelector('button[type=submit]').click()")


def _wait_results(browser: Browser, label: str) -> list[str]:
    browser.wait(
        f"document.getElementById('results').dataset.label === {json.dumps(label)}"
        " && !document.getElementById('status').textContent.startsWith('Searching')",
        what=f"results for {label}",
    )
    return browser.eval(_CARDS)  # type: ignore[no-any-return]


def test_page_in_chromium(server: Server, browser: Browser) -> None:
    page = f"{server.url}/image-search/"
    browser.goto(page)
    # not signed in: the simple auth manager's login page, which comes back here afterwards
    _sign_in(browser, server)
    browser.wait(
        f"location.href === {json.dumps(page)} && !!document.getElementById('label')", 60, "the page"
    )

    # before any search: the most frequent labels as facets, index strings shown as text only
    browser.wait("document.querySelectorAll('#facets button').length > 0", what="facets")
    facets = browser.eval("[...document.querySelectorAll('#facets button')].map(b => b.dataset.label)")
    assert "Person" in facets
    assert XSS_LABEL in facets
    assert browser.eval("document.querySelectorAll('#facets img').length") == 0
    browser.eval(f"document.querySelector('#facets button[data-label={json.dumps(XSS_LABEL)}]').click()")
    assert _wait_results(browser, XSS_LABEL) == ["coffee.png"]
    chips = browser.eval("[...document.querySelectorAll('#results .chip')].map(c => c.textContent)")
    assert f"{XSS_LABEL} 55.0%" in chips
    assert browser.eval("document.querySelectorAll('#results img, #facets img').length") == 1  # the thumbnail
    assert browser.eval("window.pwned === undefined")
    browser.eval("{ const l = document.getElementById('label'); l.value = ''; l.focus() }")

    # suggestions while typing, then the results of the label
    browser.type_into("#label", "Ca")
    browser.wait("!document.getElementById('suggestions').hidden", what="suggestions")
    suggested = browser.eval("[...document.querySelectorAll('#suggestions li')].map(li => li.textContent)")
    assert suggested[:2] == ["Cat", "Tabby Cat"]
    browser.type_into("#label", "t")
    assert _wait_results(browser, "Cat") == ["chelsea.png"]
    browser.wait(_THUMBS_LOADED, what="the thumbnail (the page's image route)")
    assert browser.eval(_THUMBS_FROM_THE_PAGE)
    assert "1 image with “Cat” at 50% or more" in browser.eval(
        "document.getElementById('status').textContent"
    )

    # the min-confidence slider
    browser.eval("{ const l = document.getElementById('label'); l.value = ''; l.focus() }")
    browser.type_into("#label", "Person")
    assert _wait_results(browser, "Person") == ["astronaut.png", "grace_hopper.jpg"]
    browser.eval(
        "{ const s = document.getElementById('min-confidence'); s.value = '99';"
        "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')) }"
    )
    browser.wait("document.querySelectorAll('#results .card').length === 1", what="the slider's answer")
    assert browser.eval(_CARDS) == ["astronaut.png"]

    # a facet click searches its label; the card opens the detail view with its boxes
    browser.eval(
        "{ const s = document.getElementById('min-confidence'); s.value = '50';"
        "s.dispatchEvent(new Event('input')) }"
    )
    browser.eval("document.querySelector('#facets button[data-label=\"Astronaut\"]').click()")
    assert _wait_results(browser, "Astronaut") == ["astronaut.png"]
    browser.eval("{ const l = document.getElementById('label'); l.value = ''; l.focus() }")
    browser.type_into("#label", "Cat")
    assert _wait_results(browser, "Cat") == ["chelsea.png"]
    browser.wait(_THUMBS_LOADED, what="the thumbnail")
    browser.eval("document.getElementById('label').blur()")
    browser.wait("document.getElementById('suggestions').hidden", what="suggestions to close")
    browser.screenshot(SCREENSHOTS / "image-search-results.png")
    browser.eval("document.querySelector('#results .card').click()")
    browser.wait(_DETAIL_LOADED, what="the detail view")
    cat = browser.eval("document.getElementById('detail').dataset.id")
    assert browser.eval("location.search") == f"?image={cat}"  # the open view is a link
    rows = browser.eval("[...document.querySelectorAll('#detail-labels tbody tr')].map(r => r.dataset.label)")
    assert rows == ["Animal", "Cat", "Mammal", "Pet", "Eye", "Tabby Cat"]
    boxes = browser.eval("[...document.querySelectorAll('#detail-boxes .box')].map(b => b.dataset.label)")
    assert boxes == ["Cat", "Eye", "Eye"]
    assert browser.eval("document.getElementById('detail-moderation').textContent") == "none found"
    browser.screenshot(SCREENSHOTS / "image-search.png")
    assert (SCREENSHOTS / "image-search.png").stat().st_size > 10_000
    browser.eval("document.getElementById('detail-close').click()")
    browser.wait("!document.getElementById('detail').open && location.search === ''", what="closing")

    # a key with ../, a quote and accents: thumbnail and detail load all the same
    browser.eval("{ const l = document.getElementById('label'); l.value = ''; l.focus() }")
    browser.type_into("#label", "Oddity")
    assert _wait_results(browser, "Oddity") == [ODD_TITLE]
    browser.wait(_THUMBS_LOADED, what="the thumbnail of the odd key")
    assert browser.eval(_THUMBS_FROM_THE_PAGE)
    assert browser.eval("document.querySelector('#results .card img').naturalWidth") == 451
    browser.eval("document.querySelector('#results .card').click()")
    browser.wait(_DETAIL_LOADED, what="the detail view of the odd key")
    assert browser.eval("document.getElementById('detail-title').textContent") == ODD_TITLE
    browser.eval("document.getElementById('detail-close').click()")

    # the UI entry: Airflow's own UI embeds the page at /plugin/image-search
    browser.goto(f"{server.url}/plugin/image-search")
    frame = "document.querySelector('iframe[src*=\"/image-search/\"]')"
    browser.wait(
        f"!!{frame} && !!{frame}.contentDocument"
        f" && {frame}.contentDocument.querySelectorAll('#facets button').length > 0",
        60,
        "the page inside Airflow's UI",
    )
    nav = browser.eval("document.body.innerText")
    assert "Browse" in nav
    inner = f"{frame}.contentDocument"
    browser.eval(
        f"{{ const l = {inner}.getElementById('label'); l.value = 'Person';"
        " l.dispatchEvent(new Event('input', {bubbles: true})) }"
    )
    browser.wait(
        f"[...{inner}.querySelectorAll('#results .card img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length === 2",
        what="Person results inside Airflow's UI",
    )
    titles = browser.eval(f"[...{inner}.querySelectorAll('#results .card')].map(c => c.dataset.title)")
    assert titles == ["astronaut.png", "grace_hopper.jpg"]
    browser.screenshot(SCREENSHOTS / "image-search-in-airflow.png")


def test_a_detail_link_survives_the_login(server: Server, browser: Browser) -> None:
    """What an alert links to (imagelabels.search.queries.image_page_url): signed out, the login page,
    then the page with that image's detail view open."""
    from imagelabels.search.queries import image_page_url

    status, found = _request(f"{server.url}/image-search/api/search?label=Oddity", server.token)
    assert status == 200, found
    [hit] = found["hits"]
    link = image_page_url(hit["id"], base_url=server.url)
    assert link == f"{server.url}/image-search/?image={hit['id']}"
    browser.goto(link)
    _sign_in(browser, server)
    browser.wait(f"location.href === {json.dumps(link)}", 60, "the way back to the link")
    browser.wait(_DETAIL_LOADED, 60, "the linked detail view")
    assert browser.eval("document.getElementById('detail-title').textContent") == ODD_TITLE
    assert browser.eval("document.getElementById('detail-image').src").endswith(f"/{hit['id']}/content")


def test_before_anything_is_indexed(server: Server, stack: EmbeddedStack) -> None:
    """Last in this module: it deletes the index the others read."""
    es = stack.elasticsearch()
    for name in es.indices.get(index="images*", expand_wildcards="all"):
        es.indices.delete(index=name)
    base = f"{server.url}/image-search/api"
    status, found = _request(f"{base}/search?label=Cat", server.token)
    assert (status, found["hits"], found["note"]) == (
        200,
        [],
        "nothing is indexed yet: run an ingestion DAG first",
    )
    status, top = _request(f"{base}/search", server.token)
    assert (status, top["facets"]) == (200, [])
    assert _request(f"{base}/suggest?prefix=c", server.token) == (200, {"suggestions": []})
    assert _request(f"{base}/images/x", server.token)[0] == 404
