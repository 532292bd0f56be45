"""``python -m imagelabels``: search the ``images`` index from a shell.

    python -m imagelabels search --label Pizza --min-confidence 90
    python -m imagelabels describe chelsea.png
    python -m imagelabels like sample_images/coffee.png
    python -m imagelabels top-labels --json
    python -m imagelabels similar sample_images/coffee.png      # looks like (visual similarity)
    python -m imagelabels duplicates --bucket photos            # groups of near duplicates

A readable table by default, ``--json`` for scripts. Every command is a thin layer over
:mod:`imagelabels.search.queries`.

Where the servers are, first match wins:

1. ``--es-url`` / ``--s3-endpoint`` (S3 endpoint optional: without it boto3 talks to AWS);
2. ``IMAGELABELS_ES_URL`` / ``AWS_ENDPOINT_URL`` in the environment;
3. a stack file ``stack.json`` (``{"es_url": ..., "moto_url": ...}``) in ``--state``
   (default ``IMAGELABELS_DEMO_STATE``, else ``.local``), written by whoever keeps an embedded
   stack running;
4. ``--embedded``: start noida-db over the data ``make demo`` left in ``<state>/stack`` (and an
   empty moto server) for the duration of the command;
5. the Airflow connections ``elasticsearch_default`` / ``aws_default``
   (:mod:`imagelabels.clients`), when Airflow is installed and configured.

Real Elasticsearch with authentication: put the user in the URL (``https://user:pass@host:9200``)
or set ``IMAGELABELS_ES_API_KEY``; S3 credentials come from boto3's usual chain (without any, the
results come without links and one warning says so). OpenSearch:
``--engine opensearch`` (or ``IMAGELABELS_ENGINE=opensearch``); Amazon OpenSearch Service or
Serverless: add ``--sigv4-service es`` or ``aoss`` (boto3's credentials, ``AWS_DEFAULT_REGION``).

Why this module is long: one argparse command per question (search, like, describe, similar,
duplicates, top labels, ...), each a short handler over :mod:`imagelabels.search`; they share the
output formatting and the engine connection.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO

from imagelabels.documents import INDEX_ALIAS
from imagelabels.search import queries as search
from imagelabels.settings import environment_value

STACK_FILE = "stack.json"
EMBEDDED_REGION = "us-east-1"
EMBEDDED_KEY = "testing"  # moto accepts any credentials; not a secret


@dataclass
class Clients:
    """The clients a command uses; ``s3`` may be ``None`` when no S3 is configured."""

    es: Any
    s3: Any | None


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state or environment_value("IMAGELABELS_DEMO_STATE") or ".local")


def _engine(url: str, args: argparse.Namespace, recorded_flavor: str | None = None) -> Any:
    """The search engine at ``url``: Elasticsearch (noida-db) or OpenSearch, optionally SigV4-signed."""
    from imagelabels.engine import from_url

    flavor = args.engine or environment_value("IMAGELABELS_ENGINE") or recorded_flavor or "elasticsearch"
    service = args.sigv4_service or environment_value("IMAGELABELS_SIGV4_SERVICE") or None
    region = environment_value("AWS_DEFAULT_REGION") or environment_value("AWS_REGION") or None
    api_key = environment_value("IMAGELABELS_ES_API_KEY") or None
    try:
        return from_url(url, flavor=flavor, api_key=api_key, aws_region=region, sigv4_service=service)
    except ValueError as error:
        raise SystemExit(f"cannot connect to {url}: {error}") from None


def _s3_client(endpoint: str | None, *, embedded: bool) -> Any:
    import boto3
    from botocore.config import Config

    # SigV4 presigned URLs: SigV2 is refused by regions opened since 2014.
    options: dict[str, Any] = {"endpoint_url": endpoint, "config": Config(signature_version="s3v4")}
    options["region_name"] = (
        environment_value("AWS_DEFAULT_REGION") or environment_value("AWS_REGION") or None
    )
    if embedded:
        options["region_name"] = options["region_name"] or EMBEDDED_REGION
        if not environment_value("AWS_ACCESS_KEY_ID"):
            options.update(aws_access_key_id=EMBEDDED_KEY, aws_secret_access_key=EMBEDDED_KEY)
    return boto3.client("s3", **options)


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[Clients]:
    """Clients for the settings in ``args`` (see the module docstring for the order)."""
    es_url = args.es_url or (environment_value("IMAGELABELS_ES_URL") or None)
    s3_endpoint = args.s3_endpoint or (environment_value("AWS_ENDPOINT_URL") or None)
    if es_url:
        embedded = bool(s3_endpoint) and "amazonaws.com" not in (s3_endpoint or "")
        yield Clients(_engine(es_url, args), _s3_client(s3_endpoint, embedded=embedded))
        return
    state = _state_dir(args)
    stack_file = state / STACK_FILE
    if stack_file.is_file() and not args.embedded:
        recorded = json.loads(stack_file.read_text())
        moto = s3_endpoint or recorded.get("moto_url")
        yield Clients(
            _engine(recorded["es_url"], args, recorded.get("engine")), _s3_client(moto, embedded=True)
        )
        return
    if args.embedded:
        from imagelabels.devstack.embedded import running_stack

        print(
            "embedded stack started over the demo's data; its moto server is empty, so no S3 URLs",
            file=sys.stderr,
        )
        with running_stack(state / "stack") as stack:
            yield Clients(stack.elasticsearch(), None)
        return
    if not _airflow_configured():
        raise SystemExit(
            "no Elasticsearch to talk to: pass --es-url (or set IMAGELABELS_ES_URL), keep a stack "
            f"file at {stack_file}, use --embedded, or run inside a configured Airflow environment"
        )
    try:
        from imagelabels import clients, settings

        es = clients.search_engine(settings.es_conn_id())
        s3 = clients.aws_client("s3", settings.aws_conn_id())
    except Exception as error:  # Airflow missing, connection unknown...: say which, briefly
        raise SystemExit(f"cannot build clients from the Airflow connections: {error}") from None
    yield Clients(es, s3)


def _airflow_configured() -> bool:
    """Whether Airflow connections are there to be used (a deployment sets ``AIRFLOW_HOME`` or
    the connections themselves as ``AIRFLOW_CONN_*``); never let a bare shell create ~/airflow."""
    from imagelabels import settings

    conn_env = f"AIRFLOW_CONN_{settings.es_conn_id().upper()}"
    return bool(environment_value("AIRFLOW_HOME") or environment_value(conn_env))


# --- output ------------------------------------------------------------------------------------


def _fmt_confidence(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str], out: TextIO) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    numeric = [h in {"#", "CONFIDENCE", "SCORE", "IMAGES"} for h in headers]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if right else cell.ljust(w)
            for cell, w, right in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print(line(row), file=out)


def _round(value: float | None) -> float | None:
    """Confidences and scores to 2 decimals (float32 noise is not information)."""
    return None if value is None else round(value, 2)


def _hit_json(hit: search.Hit) -> dict[str, Any]:
    return {
        "title": hit.title,
        "s3_location": hit.s3_location,
        "s3bucket": hit.s3bucket,
        "s3key": hit.s3key,
        "timestamp": hit.timestamp,
        "confidence": _round(hit.confidence),
        "score": _round(hit.score),
        "labels": [
            {"name": n, "confidence": _round(c), "parents": hit.parents.get(n, [])} for n, c in hit.labels
        ],
        "moderation": [{"name": n, "confidence": _round(c)} for n, c in hit.moderation],
        "url": hit.url,
    }


def _dump(data: Any, out: TextIO) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False), file=out)


def _print_hits(
    page: search.Page, args: argparse.Namespace, out: TextIO, *, extra: dict[str, Any] | None = None
) -> None:
    if args.json:
        _dump(
            {
                **(extra or {}),
                "total": page.total,
                "hits": [_hit_json(h) for h in page.hits],
                "next_after": page.next_after,
            },
            out,
        )
        return
    rows = [
        [
            str(n),
            hit.title,
            _fmt_confidence(hit.confidence if hit.confidence is not None else hit.score),
            hit.s3_location,
        ]
        for n, hit in enumerate(page.hits, start=1)
    ]
    column = "CONFIDENCE" if args.command == "search" else "SCORE"
    _table(rows, ["#", "TITLE", column, "S3 LOCATION"], out)
    for n, hit in enumerate(page.hits, start=1):
        if hit.url:
            print(f"[{n}] {hit.url}", file=out)
    shown = len(page.hits)
    print(f"{shown} of {page.total} image(s)", file=out)
    if page.next_after is not None:
        print(f"next page: --after {shlex.quote(json.dumps(page.next_after))}", file=out)


def _with_urls(clients: Clients, hits: list[search.Hit], args: argparse.Namespace) -> list[search.Hit]:
    """``hits`` with presigned URLs; without AWS credentials, as they are and one warning line."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    if args.no_urls or clients.s3 is None:
        return hits
    try:
        return search.presign_hits(clients.s3, hits, expires_in=args.presign_seconds)
    except (NoCredentialsError, PartialCredentialsError) as error:
        print(f"warning: no links: {error} (set AWS credentials, or pass --no-urls)", file=sys.stderr)
        return hits


# --- commands ----------------------------------------------------------------------------------


def _filters(args: argparse.Namespace) -> search.Filters:
    return search.Filters(
        bucket=args.bucket,
        prefix=args.prefix,
        since=args.since,
        until=args.until,
        exclude_moderated=args.exclude_moderated,
    )


def cmd_search(clients: Clients, args: argparse.Namespace, out: TextIO) -> int:
    page = search.search_labels(
        clients.es,
        args.label,
        min_confidence=args.min_confidence,
        fuzzy=args.fuzzy,
        filters=_filters(args),
        size=args.size,
        search_after=args.after,
        index=args.index,
    )
    page = search.Page(_with_urls(clients, page.hits, args), page.total, page.next_after)
    _print_hits(page, args, out)
    return 0


def cmd_describe(clients: Clients, args: argparse.Namespace, out: TextIO) -> int:
    hits = _with_urls(clients, search.describe_image(clients.es, args.title_or_key, index=args.index), args)
    if args.json:
        _dump({"hits": [_hit_json(h) for h in hits]}, out)
        return 0 if hits else 1
    if not hits:
        print(f"no image with title or key {args.title_or_key!r}", file=out)
        return 1
    for hit in hits:
        print(f"{hit.title}  {hit.s3_location}  ({hit.timestamp or 'no timestamp'})", file=out)
        rows = [[name, f"{conf:.2f}", ", ".join(hit.parents.get(name, []))] for name, conf in hit.labels]
        _table(rows, ["LABEL", "CONFIDENCE", "PARENTS"], out)
        moderation = ", ".join(f"{name} {conf:.2f}" for name, conf in hit.moderation) or "none"
        print(f"moderation: {moderation}", file=out)
        if hit.url:
            print(f"url: {hit.url}", file=out)
    return 0


def cmd_like(clients: Clients, args: argparse.Namespace, out: TextIO) -> int:
    data, location = search.read_example(args.example, clients.s3)
    client_for = None
    if clients.s3 is not None:
        s3 = clients.s3

        def client_for(service: str) -> Any:
            import boto3

            return (
                s3
                if service == "s3"
                else boto3.client(service, endpoint_url=s3.meta.endpoint_url, region_name=s3.meta.region_name)
            )

    example = search.label_example(
        data, name=os.path.basename(args.example), labeler=args.labeler, client_for=client_for
    )[: args.max_labels]
    page = search.images_like(
        clients.es,
        example,
        exclude_location=location,
        exclude_etag=None if location else hashlib.md5(data, usedforsecurity=False).hexdigest(),
        filters=_filters(args),
        size=args.size,
        search_after=args.after,
        index=args.index,
    )
    page = search.Page(_with_urls(clients, page.hits, args), page.total, page.next_after)
    if not args.json:
        labels = ", ".join(f"{name} {conf:.2f}" for name, conf in example) or "none"
        print(f"example labels: {labels}", file=out)
    _print_hits(
        page, args, out, extra={"example": [{"name": n, "confidence": _round(c)} for n, c in example]}
    )
    return 0


def _example_signals(clients: Clients, example: str, index: str) -> tuple[Any, dict[str, Any]]:
    """The signals of ``similar``'s example and how to leave the example out of the answer: an
    indexed image (title, key or ``s3://`` location that is indexed) by its document id, else a
    local file or an ``s3://`` object, computed as at labeling time."""
    from imagelabels.search import similarity

    indexed = similarity.indexed_signals(clients.es, example, index=index)
    if indexed is not None and (indexed[2].phash or indexed[2].embedding is not None):
        doc_id, location, signals = indexed
        return signals, {"exclude_ids": [doc_id], "exclude_location": location}
    if not example.startswith("s3://") and not os.path.isfile(example):
        raise SystemExit(f"{example!r} is neither an indexed image with visual signals nor a file")
    data, source = search.read_example(example, clients.s3)
    signals = similarity.signals_of_image(data, name=os.path.basename(example))
    if source is not None:
        return signals, {"exclude_location": source}
    return signals, {"exclude_etag": hashlib.md5(data, usedforsecurity=False).hexdigest()}


def cmd_similar(clients: Clients, args: argparse.Namespace, out: TextIO) -> int:
    from imagelabels.search import similarity

    signals, exclude = _example_signals(clients, args.example, args.index)
    found = similarity.similar_images(
        clients.es, signals, filters=_filters(args), size=args.size, index=args.index, **exclude
    )
    hits = _with_urls(clients, [item.hit for item in found], args)
    if args.json:
        _dump(
            {
                "example": {"phash": signals.phash, "embedding": signals.embedding is not None},
                "hits": [
                    {
                        **_hit_json(hit),
                        "similarity": round(item.similarity, 3),
                        "near_duplicate": item.near_duplicate,
                    }
                    for hit, item in zip(hits, found, strict=True)
                ],
            },
            out,
        )
        return 0
    rows = [
        [str(n), hit.title, f"{item.similarity:.3f}", "yes" if item.near_duplicate else "", hit.s3_location]
        for n, (hit, item) in enumerate(zip(hits, found, strict=True), start=1)
    ]
    _table(rows, ["#", "TITLE", "SIMILARITY", "DUPLICATE", "S3 LOCATION"], out)
    for n, hit in enumerate(hits, start=1):
        if hit.url:
            print(f"[{n}] {hit.url}", file=out)
    print(f"{len(hits)} image(s) alike", file=out)
    return 0


def cmd_duplicates(clients: Clients, args: argparse.Namespace, out: TextIO) -> int:
    from imagelabels.search import similarity

    members = similarity.scan_members(clients.es, filters=_filters(args), index=args.index)
    groups = similarity.duplicate_groups(members)
    if args.json:
        _dump(
            {
                "images_checked": len(members),
                "groups": [
                    {
                        "similarity": round(similarity.mean_similarity(group), 3),
                        "images": [
                            {"title": m.title, "s3_location": m.s3_location, "id": m.doc_id} for m in group
                        ],
                    }
                    for group in groups
                ],
            },
            out,
        )
        return 0
    rows = [
        [
            str(n),
            str(len(group)),
            f"{similarity.mean_similarity(group):.3f}",
            member.title,
            member.s3_location,
        ]
        for n, group in enumerate(groups, start=1)
        for member in group
    ]
    _table(rows, ["#", "IMAGES", "SIMILARITY", "TITLE", "S3 LOCATION"], out)
    print(f"{len(groups)} group(s) of near duplicates among {len(members)} image(s)", file=out)
    return 0


def cmd_top_labels(clients: Clients, args: argparse.Namespace, out: TextIO) -> int:
    top = search.top_labels(clients.es, size=args.size, index=args.index, filters=_filters(args))
    if args.json:
        _dump({"labels": [{"name": name, "images": count} for name, count in top]}, out)
    else:
        _table([[name, str(count)] for name, count in top], ["LABEL", "IMAGES"], out)
    return 0


# --- arguments ---------------------------------------------------------------------------------


def _timestamp(value: str) -> str:
    """An ISO date or date-time (validated, passed on as given)."""
    try:
        (datetime if "T" in value or " " in value else date).fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {value!r}") from None
    return value


def _after(value: str) -> list[Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(
            f"--after takes the JSON list a previous page printed: {value!r}"
        ) from None
    if not isinstance(parsed, list):
        raise argparse.ArgumentTypeError("--after takes a JSON list")
    return parsed


def _confidence(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"confidence must be within 0..100, got {value}")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument("--es-url", help="search engine URL (default: IMAGELABELS_ES_URL)")
    group.add_argument(
        "--engine",
        choices=("elasticsearch", "opensearch"),
        help="which engine --es-url is (default: IMAGELABELS_ENGINE, else elasticsearch)",
    )
    group.add_argument(
        "--sigv4-service",
        choices=("es", "aoss"),
        help="sign requests with SigV4 for Amazon OpenSearch Service (es) or Serverless (aoss), "
        "with boto3's credentials and AWS_DEFAULT_REGION (default: IMAGELABELS_SIGV4_SERVICE)",
    )
    group.add_argument("--s3-endpoint", help="S3 endpoint, e.g. the moto server (default: AWS_ENDPOINT_URL)")
    group.add_argument(
        "--state", help="embedded stack state folder (default: IMAGELABELS_DEMO_STATE or .local)"
    )
    group.add_argument(
        "--embedded", action="store_true", help="start noida-db over the demo's data for this command"
    )
    group.add_argument("--index", default=INDEX_ALIAS, help="index or alias (default: %(default)s)")
    group.add_argument("--json", action="store_true", help="JSON output for scripts")
    group.add_argument("--no-urls", action="store_true", help="do not presign S3 URLs")
    group.add_argument(
        "--presign-seconds",
        type=_positive,
        help="expiry of presigned URLs (default: IMAGELABELS_PRESIGN_SECONDS, else 900)",
    )
    filters = argparse.ArgumentParser(add_help=False)
    fgroup = filters.add_argument_group("filters")
    fgroup.add_argument("--bucket", help="only images in this bucket")
    fgroup.add_argument("--prefix", help="only keys starting with this prefix")
    fgroup.add_argument("--since", type=_timestamp, help="only images modified at or after (ISO)")
    fgroup.add_argument("--until", type=_timestamp, help="only images modified before (ISO)")
    fgroup.add_argument("--exclude-moderated", action="store_true", help="leave out moderated images")
    paging = argparse.ArgumentParser(add_help=False)
    paging.add_argument("--size", type=_positive, default=20, help="hits per page (default: %(default)s)")
    paging.add_argument("--after", type=_after, help="search_after of the next page (JSON list)")

    parser = argparse.ArgumentParser(
        prog="python -m imagelabels", description="Search labeled images in Elasticsearch."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    found = commands.add_parser("search", parents=[common, filters, paging], help="images showing a label")
    found.add_argument("--label", required=True, help="label name, e.g. Pizza")
    found.add_argument("--min-confidence", type=_confidence, help="minimum confidence of that label (0..100)")
    found.add_argument("--fuzzy", action="store_true", help="forgive typos in the label")
    found.set_defaults(handler=cmd_search)
    describe = commands.add_parser("describe", parents=[common], help="the labels of one image")
    describe.add_argument("title_or_key", help="the image's title, S3 key or s3:// location")
    describe.set_defaults(handler=cmd_describe)
    like = commands.add_parser("like", parents=[common, filters, paging], help="images like an example")
    like.add_argument("example", help="a local image file or an s3://bucket/key URI")
    like.add_argument(
        "--labeler", choices=["local", "rekognition"], help="default: IMAGELABELS_LABELER, else local"
    )
    like.add_argument(
        "--max-labels", type=_positive, default=10, help="example labels to query (default: %(default)s)"
    )
    like.set_defaults(handler=cmd_like)
    similar = commands.add_parser(
        "similar", parents=[common, filters], help="images that look like an example (visual similarity)"
    )
    similar.add_argument("example", help="an indexed image's title, key or s3:// location, or a local file")
    similar.add_argument("--size", type=_positive, default=10, help="how many images (default: %(default)s)")
    similar.set_defaults(handler=cmd_similar)
    duplicates = commands.add_parser(
        "duplicates", parents=[common, filters], help="groups of near-duplicate images"
    )
    duplicates.set_defaults(handler=cmd_duplicates)
    top = commands.add_parser("top-labels", parents=[common, filters], help="the most frequent labels")
    top.add_argument("--size", type=_positive, default=10, help="how many labels (default: %(default)s)")
    top.set_defaults(handler=cmd_top_labels)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run one command; returns the exit status (1 when ``describe`` finds nothing)."""
    args = build_parser().parse_args(argv)
    stream = out or sys.stdout
    from botocore.exceptions import NoCredentialsError

    from imagelabels.engine import EngineError

    with ExitStack() as stack:
        try:
            clients = stack.enter_context(connect(args))
            status: int = args.handler(clients, args, stream)
        except EngineError as error:  # one line naming the engine, not a client traceback
            print(f"error: {error}", file=sys.stderr)
            return 2
        except NoCredentialsError as error:  # reading an s3:// example without credentials
            print(f"error: {error}: set AWS credentials to read from S3", file=sys.stderr)
            return 2
        return status
