"""The "Image search" web app: a FastAPI app that the Airflow plugin
(``plugins/image_search_plugin.py``) mounts on the api-server at ``/image-search``.

Pages and JSON answers are only for users the Airflow auth manager knows: the UI's JWT (the
``_token`` cookie the login page sets, sent by the browser with every same-origin request) or an
``Authorization: Bearer`` token from ``POST /auth/token``. A request without one gets 401 (the
page itself redirects to the auth manager's login page), a bad token 403, and a user the auth
manager does not allow to read the Airflow UI (``AccessView.WEBSITE``: every simple auth manager
role, Viewer and up with FAB) 403.

Images are served by the app itself, to the same signed-in users: ``api/images/{doc_id}/content``
streams the object of an *indexed document* (never an arbitrary key) from S3 with the
api-server's credentials, as the image type its bytes are (``image/png``...), ``inline``, with
``X-Content-Type-Options: nosniff`` and a CSP that runs nothing. So a thumbnail works whatever its
key (``../``, quotes, non-ASCII), wherever S3 is (compose's ``http://aws:5000`` is not reachable
from a browser), and however short-lived the server's credentials are; a polyglot uploaded as
``text/html`` never renders as a page.

JSON routes (all ``GET``, relative to the mount point):

* ``api/search?label=&min_confidence=&exclude_moderated=&size=&after=`` -- a page of images
  showing a label (:func:`imagelabels.search.queries.search_labels`) with the label facets of every
  matching image; without a label, no hits and the most frequent labels as facets. ``after`` is
  the ``next_after`` of the previous answer: a JSON list of a finite number and a string, else 400.
* ``api/suggest?prefix=`` -- label names for the label box, from the most frequent labels.
* ``api/images/{doc_id}`` -- one image: all labels (with bounding boxes of their instances),
  moderation labels and the URL of its content.
* ``api/images/{doc_id}/similar?size=`` -- "More like this": the images that look most like it
  (:func:`imagelabels.search.similarity.similar_images`: band candidates re-ranked by embedding cosine or
  pHash distance), each with ``similarity`` (0..1) and ``near_duplicate``; ``checked`` is false
  when the document has no visual signals (indexed before they existed).
* ``api/images/{doc_id}/content`` -- the image's bytes (see above); 404 for an id that is not an
  indexed document, or whose object is gone or no longer an image.

Every ``url`` in an answer is that content route (an absolute path on the api-server). The page
opens a document's detail view from ``?image=<doc_id>``
(:func:`imagelabels.search.queries.image_page_url` builds such links for alerts and reports).

Elasticsearch and S3 clients come from the Airflow connections (``elasticsearch_default``,
``aws_default``, or ``IMAGELABELS_ES_CONN_ID``/``IMAGELABELS_AWS_CONN_ID``) and are rebuilt
every :data:`CLIENT_TTL_SECONDS`, so an edited connection is picked up without a restart.

Why this module is long: one FastAPI app: each route is a few lines over :mod:`imagelabels.search`,
and the auth, CSRF and error handling they share must stay in one ``create_app`` closure.
"""

from __future__ import annotations

import json
import math
import posixpath
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from imagelabels.documents import INDEX_ALIAS
from imagelabels.preflight.checks import sniff_format
from imagelabels.search import queries as search

CLIENT_TTL_SECONDS = 300.0
SUGGEST_POOL = search.SUGGEST_POOL  # most frequent labels the suggestions are picked from
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
_NO_STORE = {"Cache-Control": "no-store"}
_DETAIL_SOURCE = [
    "title",
    "s3_location",
    "s3bucket",
    "s3key",
    "timestamp",
    "Labels",
    "ModerationLabels",
    "moderated",
    "labeler",
    "LabelModelVersion",
    "object.width",
    "object.height",
    "object.content_type",
    "preflight.source_format",
]
_CONTENT_SOURCE = ["s3_location", "s3bucket", "s3key", "object.version_id"]
SNIFF_BYTES = 512  # enough for every magic number preflight knows (ISO-BMFF brands included)
CHUNK_BYTES = 256 * 1024
# An image response runs nothing, even opened on its own: no subresources, no scripts, no framing.
IMAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "private, max-age=600",  # the id names one object version
}
MAX_AFTER_STRING = 2048  # an S3 location: bucket (63) + key (1,024 bytes) and then some
MAX_AFTER_JSON = 6 * MAX_AFTER_STRING + 64  # the same as JSON, every character \uXXXX-escaped

Authenticate = Callable[[Request], Awaitable[Any]]


class CachedClient:
    """A client built by ``factory`` on first use and rebuilt once it is ``ttl`` seconds old."""

    def __init__(self, factory: Callable[[], Any], ttl: float = CLIENT_TTL_SECONDS) -> None:
        self._factory = factory
        self._ttl = ttl
        self._lock = threading.Lock()
        self._client: Any = None
        self._built = 0.0

    def __call__(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if self._client is None or now - self._built > self._ttl:
                self._client = self._factory()
                self._built = now
            return self._client


def airflow_elasticsearch() -> Any:
    """The search engine from the Airflow connection (Elasticsearch or OpenSearch, any auth)."""
    from imagelabels import clients, settings

    return clients.search_engine(settings.es_conn_id())


def airflow_s3() -> Any:
    """S3 client that reads the images the page shows (:func:`imagelabels.clients.aws_client`:
    the connection's endpoint, as the workers reach it)."""
    from imagelabels import clients, settings

    return clients.aws_client("s3", settings.aws_conn_id())


async def airflow_user(request: Request) -> Any:
    """The Airflow user of ``request`` (Bearer token, else the UI's ``_token`` cookie), allowed
    to read the Airflow UI; 401 without credentials, 403 otherwise.

    (A custom view resource would be finer, but the FAB auth manager grants it to nobody, not
    even Admin, until someone creates that permission.)"""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    user = await get_user(request, None, credentials)
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status_code=403, detail="Forbidden")
    return user


def airflow_login_url(request: Request) -> str:
    """The auth manager's login page, coming back to ``request``'s URL afterwards."""
    from airflow.api_fastapi.app import get_auth_manager

    return str(get_auth_manager().get_url_login(next_url=str(request.url)))


# --- JSON shapes -------------------------------------------------------------------------------


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def content_path(root_path: str, doc_id: str) -> str:
    """The path of a document's image on the api-server (``root_path``: where the app is mounted)."""
    return f"{root_path.rstrip('/')}/api/images/{quote(doc_id, safe='')}/content"


def hit_json(hit: search.Hit, *, top: int = 4) -> dict[str, Any]:
    """One result card: title, location, image URL, matched confidence, best labels."""
    best = sorted(hit.labels, key=lambda pair: (-pair[1], pair[0]))[:top]
    return {
        "id": hit.doc_id,
        "title": hit.title,
        "s3_location": hit.s3_location,
        "url": hit.url,
        "confidence": _round(hit.confidence),
        "labels": [{"name": name, "confidence": _round(conf)} for name, conf in best],
        "label_count": len(hit.labels),
        "moderated": bool(hit.moderation),
        "timestamp": hit.timestamp,
    }


def _box(raw: dict[str, Any]) -> dict[str, float]:
    return {key.lower(): float(raw.get(key, 0.0)) for key in ("Left", "Top", "Width", "Height")}


def detail_json(raw: dict[str, Any], url: str | None) -> dict[str, Any]:
    """One image with every label (and the boxes of its instances) and its moderation labels."""
    source = raw.get("_source") or {}
    labels = [
        {
            "name": str(label.get("Name", "")),
            "confidence": _round(label.get("Confidence", 0.0)),
            "parents": [str(parent.get("Name", "")) for parent in label.get("Parents") or []],
            "instances": [
                {
                    "box": _box(instance.get("BoundingBox") or {}),
                    "confidence": _round(instance.get("Confidence")),
                }
                for instance in label.get("Instances") or []
                if instance.get("BoundingBox")
            ],
        }
        for label in sorted(
            source.get("Labels") or [],
            key=lambda label: (-float(label.get("Confidence", 0.0)), str(label.get("Name", ""))),
        )
    ]
    moderation = [
        {
            "name": str(item.get("Name", "")),
            "confidence": _round(item.get("Confidence", 0.0)),
            "parent": str(item.get("ParentName") or ""),
        }
        for item in source.get("ModerationLabels") or []
    ]
    obj = source.get("object") or {}
    return {
        "id": str(raw.get("_id", "")),
        "title": source.get("title", ""),
        "s3_location": source.get("s3_location", ""),
        "url": url,
        "timestamp": source.get("timestamp"),
        "labeler": source.get("labeler"),
        "model_version": source.get("LabelModelVersion"),
        "width": obj.get("width"),
        "height": obj.get("height"),
        "labels": labels,
        "moderation": moderation,
        "moderation_checked": "ModerationLabels" in source,
    }


AFTER_ERROR = (
    "after must be the next_after of a previous answer: a JSON list of a finite number (the score) "
    "and a string (the S3 location)"
)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _parse_after(after: str | None) -> list[Any] | None:
    """The ``search_after`` of the next page: the ``next_after`` the previous answer gave, i.e.
    ``[score, s3_location]`` (:data:`imagelabels.search.queries._SORT`). Anything else is the caller's
    mistake (400), never passed on to the engine: not JSON, ``NaN``/``Infinity`` (Python's json
    accepts them), numbers out of float range or beyond 2**63, booleans, nested values, strings
    over :data:`MAX_AFTER_STRING` characters, or another shape."""
    if not after:
        return None
    if len(after) > MAX_AFTER_JSON:
        raise HTTPException(status_code=400, detail=AFTER_ERROR)
    try:
        values = json.loads(after, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise HTTPException(status_code=400, detail=AFTER_ERROR) from None
    if not isinstance(values, list) or len(values) != 2:
        raise HTTPException(status_code=400, detail=AFTER_ERROR)
    score, location = values
    number = isinstance(score, int | float) and not isinstance(score, bool)
    if not number or not math.isfinite(score) or abs(score) >= 2**63:
        raise HTTPException(status_code=400, detail=AFTER_ERROR)
    if not isinstance(location, str) or len(location) > MAX_AFTER_STRING:
        raise HTTPException(status_code=400, detail=AFTER_ERROR)
    return [score, location]


def label_facets(
    es: Any, label: str, min_confidence: float | None, filters: search.Filters, *, size: int
) -> list[tuple[str, int]]:
    """Label counts over every image matching the label question (not only the shown page)."""
    filter_clauses, must_not = filters.clauses()
    query = {
        "bool": {
            "must": [search.label_query(label, min_confidence)],
            "filter": filter_clauses,
            "must_not": must_not,
        }
    }
    response = es.search(
        index=INDEX_ALIAS,
        size=0,
        query=query,
        aggs={"labels": {"terms": {"field": "label_names", "size": size}}},
    )
    buckets = response["aggregations"]["labels"]["buckets"]
    return [(str(bucket["key"]), int(bucket["doc_count"])) for bucket in buckets]


def suggestions(
    names: list[tuple[str, int]],
    prefix: str,
    limit: int,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Label names for ``prefix``: those starting with it (most frequent first), then those with
    a word starting with it, then those containing it; case-insensitive. Then the ``aliases``
    (word -> label names) starting with it for indexed labels not offered by name already
    ("kitty" for Cat, but not "cats" after Cat): a search for the word finds them
    (:func:`imagelabels.search.queries.label_names_for`)."""
    wanted = prefix.strip().casefold()
    if not wanted:
        return [name for name, _ in names[:limit]]
    found = _name_suggestions(names, wanted)
    if aliases:  # words for indexed labels that the names above do not already offer
        indexed = {name.casefold() for name, _ in names}
        shown = {name.casefold() for name in found}
        found += sorted(
            word
            for word, targets in aliases.items()
            if word.startswith(wanted)
            and word not in shown
            and any(t.casefold() in indexed and t.casefold() not in shown for t in targets)
        )
    return found[:limit]


def _name_suggestions(names: list[tuple[str, int]], wanted: str) -> list[str]:
    starts, words, contains = [], [], []
    for name, _count in names:
        folded = name.casefold()
        if folded.startswith(wanted):
            starts.append(name)
        elif any(word.startswith(wanted) for word in folded.split()):
            words.append(name)
        elif wanted in folded:
            contains.append(name)
    return starts + words + contains


def _backend_error(error: Exception) -> HTTPException:
    return HTTPException(status_code=502, detail=f"search backend error: {type(error).__name__}")


def _no_index(error: Exception) -> bool:
    """Whether ``error`` is the engine saying the ``images`` alias does not exist (yet)."""
    from imagelabels.engine import NotFoundError

    return isinstance(error, NotFoundError) and error.error_type == "index_not_found_exception"


NOT_INDEXED = "nothing is indexed yet: run an ingestion DAG first"


# --- the app -----------------------------------------------------------------------------------


def create_app(
    static_dir: Path | None = None,
    *,
    elasticsearch: Callable[[], Any] | None = None,
    s3: Callable[[], Any] | None = None,
    authenticate: Authenticate = airflow_user,
    login_url: Callable[[Request], str] = airflow_login_url,
) -> FastAPI:
    """The app; ``static_dir`` holds ``index.html``, ``app.js`` and ``style.css`` (without it,
    only the JSON routes). Clients default to the Airflow connections, cached."""
    es_client = elasticsearch or CachedClient(airflow_elasticsearch)
    s3_client = s3 or CachedClient(airflow_s3)
    app = FastAPI(title="Image search", docs_url=None, redoc_url=None, openapi_url=None)
    user_dep = Depends(authenticate)

    async def login_unless_signed_in(request: Request) -> Response | None:
        """For pages people open from a link: the login page (coming back here) when not signed in."""
        try:
            await authenticate(request)
        except HTTPException as error:
            if error.status_code == 401:
                return RedirectResponse(login_url(request), status_code=303)
            raise
        return None

    @app.get("/", include_in_schema=False, response_model=None)
    async def page(request: Request) -> Response:
        if static_dir is None:
            raise HTTPException(status_code=404)
        if (login := await login_unless_signed_in(request)) is not None:
            return login
        return FileResponse(static_dir / "index.html", media_type="text/html", headers=_NO_STORE)

    def find(doc_id: str, source: list[str]) -> dict[str, Any]:
        """The indexed document ``doc_id`` (an ``ids`` query: the id is data), else 404."""
        if not 0 < len(doc_id) <= 512:
            raise HTTPException(status_code=404, detail="no such image")
        try:
            response = es_client().search(
                index=INDEX_ALIAS, query={"ids": {"values": [doc_id]}}, size=1, source=source
            )
        except Exception as error:
            if _no_index(error):
                raise HTTPException(status_code=404, detail="no such image") from error
            raise _backend_error(error) from error
        found = response["hits"]["hits"]
        if not found:
            raise HTTPException(status_code=404, detail="no such image")
        return dict(found[0])

    @app.get("/static/{name}", include_in_schema=False, dependencies=[user_dep])
    def static(name: str) -> FileResponse:
        if static_dir is None or name not in STATIC_FILES:
            raise HTTPException(status_code=404)
        return FileResponse(static_dir / name, media_type=STATIC_FILES[name], headers=_NO_STORE)

    @app.get("/api/search", dependencies=[user_dep])
    def search_images(
        request: Request,
        label: str = Query("", max_length=200),
        min_confidence: float = Query(0.0, ge=0.0, le=100.0),
        exclude_moderated: bool = False,
        size: int = Query(24, ge=1, le=100),
        after: str | None = None,  # checked by _parse_after: 400 with what it must be
        facets: int = Query(20, ge=0, le=100),
    ) -> JSONResponse:
        label = label.strip()
        filters = search.Filters(exclude_moderated=exclude_moderated)
        threshold = min_confidence or None
        search_after = _parse_after(after)
        try:
            es = es_client()
            if not label:
                top = search.top_labels(es, size=facets, filters=filters) if facets else []
                body: dict[str, Any] = {"label": "", "total": 0, "hits": [], "next_after": None}
                body["facets"] = [{"name": name, "count": count} for name, count in top]
                return JSONResponse(body, headers=_NO_STORE)
            page_ = search.search_labels(
                es, label, min_confidence=threshold, filters=filters, size=size, search_after=search_after
            )
            found = label_facets(es, label, threshold, filters, size=facets) if facets else []
        except HTTPException:
            raise
        except Exception as error:
            if _no_index(error):
                body = {"label": label, "total": 0, "hits": [], "next_after": None, "facets": []}
                return JSONResponse({**body, "note": NOT_INDEXED}, headers=_NO_STORE)
            raise _backend_error(error) from error
        root = str(request.scope.get("root_path", ""))
        hits = [replace(hit, url=content_path(root, hit.doc_id)) for hit in page_.hits]
        body = {
            "label": label,
            "min_confidence": min_confidence,
            "total": page_.total,
            "hits": [hit_json(hit) for hit in hits],
            "next_after": json.dumps(page_.next_after) if page_.next_after else None,
            "facets": [{"name": name, "count": count} for name, count in found],
        }
        return JSONResponse(body, headers=_NO_STORE)

    @app.get("/api/suggest", dependencies=[user_dep])
    def suggest(prefix: str = Query("", max_length=200), limit: int = Query(8, ge=1, le=50)) -> JSONResponse:
        try:
            names = search.top_labels(es_client(), size=SUGGEST_POOL)
        except Exception as error:
            if _no_index(error):
                return JSONResponse({"suggestions": []}, headers=_NO_STORE)
            raise _backend_error(error) from error
        from imagelabels.labelers.aliases import label_aliases

        found = suggestions(names, prefix, limit, label_aliases())
        return JSONResponse({"suggestions": found}, headers=_NO_STORE)

    @app.get("/api/images/{doc_id}", dependencies=[user_dep])
    def image(request: Request, doc_id: str) -> JSONResponse:
        found = find(doc_id, _DETAIL_SOURCE)
        url = content_path(str(request.scope.get("root_path", "")), str(found.get("_id", doc_id)))
        return JSONResponse(detail_json(found, url), headers=_NO_STORE)

    @app.get("/api/images/{doc_id}/similar", dependencies=[user_dep])
    def similar(request: Request, doc_id: str, size: int = Query(8, ge=1, le=50)) -> JSONResponse:
        from imagelabels import fingerprints
        from imagelabels.search import similarity

        found = find(doc_id, ["s3_location", *similarity.VISUAL_SOURCE])
        signals = fingerprints.Signals.of_source(found.get("_source") or {})
        checked = bool(signals.phash or signals.embedding is not None)
        root = str(request.scope.get("root_path", ""))
        try:
            alike = similarity.similar_images(
                es_client(), signals, exclude_ids=[str(found["_id"])], size=size
            )
        except Exception as error:
            raise _backend_error(error) from error
        hits = [
            {
                "id": item.hit.doc_id,
                "title": item.hit.title,
                "s3_location": item.hit.s3_location,
                "url": content_path(root, item.hit.doc_id),
                "similarity": round(item.similarity, 3),
                "near_duplicate": item.near_duplicate,
            }
            for item in alike
        ]
        return JSONResponse({"checked": checked, "hits": hits}, headers=_NO_STORE)

    @app.get("/api/images/{doc_id}/content", dependencies=[user_dep], response_model=None)
    def image_content(doc_id: str) -> Response:
        source = find(doc_id, _CONTENT_SOURCE).get("_source") or {}
        bucket, key = str(source.get("s3bucket") or ""), str(source.get("s3key") or "")
        if not bucket or not key:
            bucket, key = search.parse_s3_uri(str(source.get("s3_location") or ""))
        return _stream_image(s3_client(), bucket, key, (source.get("object") or {}).get("version_id"))

    @app.get("/api/reports/{name}/{path:path}", include_in_schema=False, response_model=None)
    async def report_file(request: Request, name: str, path: str) -> Response:
        """A stored report file (the links of report mails, Slack and webhooks): a signed-in user
        gets it, anyone else the login page that comes back here."""
        if (login := await login_unless_signed_in(request)) is not None:
            return login
        return _report_file(s3_client, name, path)

    return app


def _report_file(s3_client: Callable[[], Any], name: str, path: str) -> Response:
    """The file ``path`` of the configured report ``name`` from its output location (S3 or a
    local folder), 404 for anything else: another report's name, a path that is not one of the
    names reports are stored under (:func:`~imagelabels.reports.delivery.report_file_path`)."""
    from imagelabels.reports.config import read_report_configs
    from imagelabels.reports.links import REPORT_FILE_TYPES, report_file_path

    config = next((c for c in read_report_configs().reports if c.name == name), None)
    try:
        if config is None:
            raise ValueError("no such report")
        where = report_file_path(config, path)
    except ValueError as error:
        raise HTTPException(status_code=404, detail="no such report file") from error
    suffix = Path(path).suffix.lower()
    disposition = "inline" if suffix in (".pdf", ".png", ".json") else "attachment"
    headers = {
        **IMAGE_HEADERS,
        "Content-Disposition": f'{disposition}; filename="{posixpath.basename(path)}"',
    }
    if not where.startswith("s3://"):
        if not Path(where).is_file():
            raise HTTPException(status_code=404, detail="no such report file")
        return FileResponse(where, media_type=REPORT_FILE_TYPES[suffix], headers=headers)
    bucket, key = search.parse_s3_uri(where)
    body = _get_object(s3_client(), bucket, key, None, gone="no such report file")["Body"]

    def chunks() -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        finally:
            body.close()

    return StreamingResponse(chunks(), media_type=REPORT_FILE_TYPES[suffix], headers=headers)


def _get_object(s3: Any, bucket: str, key: str, version_id: str | None, *, gone: str) -> Any:
    """``GetObject`` (of ``version_id`` when there is one): 404 with ``gone`` when the object,
    version or bucket is not there, 502 for any other S3 error."""
    from botocore.exceptions import BotoCoreError, ClientError

    extra = {"VersionId": version_id} if version_id and version_id != "null" else {}
    try:
        return s3.get_object(Bucket=bucket, Key=key, **extra)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in {"NoSuchKey", "NoSuchVersion", "404", "NoSuchBucket"}:
            raise HTTPException(status_code=404, detail=gone) from error
        raise HTTPException(status_code=502, detail=f"S3 error: {code or 'unknown'}") from error
    except BotoCoreError as error:
        raise HTTPException(status_code=502, detail=f"S3 error: {type(error).__name__}") from error


def _stream_image(s3: Any, bucket: str, key: str, version_id: str | None) -> Response:
    """The object's bytes as the image type they start with (404 when it is gone or not an image),
    ``inline`` under its base name, with :data:`IMAGE_HEADERS`."""
    answer = _get_object(s3, bucket, key, version_id, gone="the image is no longer in S3")
    body = answer["Body"]
    try:
        head = body.read(SNIFF_BYTES)
    except Exception as error:
        body.close()
        raise HTTPException(status_code=502, detail=f"S3 error: {type(error).__name__}") from error
    content_type = search.IMAGE_CONTENT_TYPES.get(sniff_format(head) or "")
    if content_type is None:  # replaced since it was indexed: serve nothing rather than a page
        body.close()
        raise HTTPException(status_code=404, detail="the object is not an image")

    def chunks() -> Iterator[bytes]:
        try:
            yield head
            yield from body.iter_chunks(CHUNK_BYTES)
        finally:
            body.close()

    headers = {**IMAGE_HEADERS, "Content-Disposition": search.content_disposition(posixpath.basename(key))}
    if isinstance(answer.get("ContentLength"), int):
        headers["Content-Length"] = str(answer["ContentLength"])
    return StreamingResponse(chunks(), media_type=content_type, headers=headers)
