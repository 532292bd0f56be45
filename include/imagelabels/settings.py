"""Environment-backed settings, read at task time (never at DAG parse time).

Params in the trigger form win; these are the defaults a deployment sets once. This is the only
module that reads the process environment (``tests/unit/test_architecture.py`` holds it): other
modules ask :func:`env` for an ``IMAGELABELS_*`` setting, :func:`environment_value` for a variable
they name in full (a module's ``*_ENV`` constant, ``AWS_REGION``), or take an ``environ`` mapping
that defaults to :func:`environment` (so tests can pass their own).
"""

from __future__ import annotations

import os
from collections.abc import Mapping


class ConfigurationError(ValueError):
    """A Param or setting that is wrong for this run: the same value fails the same way on every
    try, so tasks fail at once on it instead of retrying (see :func:`imagelabels.tasks.ingestion.fail_at_once`).
    The message names the Param or setting and what it accepts."""


def environment() -> Mapping[str, str]:
    """The process environment, read at call time (a test's ``monkeypatch.setenv`` is seen)."""
    return os.environ


def environment_value(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The variable ``name`` (its full name), ``""`` when unset."""
    return (environment() if environ is None else environ).get(name, "")


def env(name: str, default: str = "") -> str:
    """One ``IMAGELABELS_*`` setting."""
    return os.environ.get(f"IMAGELABELS_{name}", default)


def aws_conn_id() -> str:
    return env("AWS_CONN_ID", "aws_default")


def es_conn_id() -> str:
    return env("ES_CONN_ID", "elasticsearch_default")


def source_bucket(param: str | None) -> str:
    """The bucket to ingest: the ``bucket`` Param, else ``IMAGELABELS_BUCKET``."""
    bucket = (param or "").strip() or env("BUCKET").strip()
    if not bucket:
        raise ConfigurationError("no bucket: set the 'bucket' Param or IMAGELABELS_BUCKET")
    return bucket


# Batches: 250 because Airflow costs ~1 s per mapped task, i.e. 4.5 ms per image at 250 (8.6 ms
# at 100; benchmarks/p4_hourly_overhead.py); a batch labels on its own thread pool anyway. The
# bound holds for ingestion, reconciliation and re-labeling alike (one manifest, one task).
DEFAULT_BATCH_SIZE = 250
MAX_BATCH_SIZE = 1000

# The mass-deletion guard's defaults: a run may delete up to this share of the documents it walked
# without confirmation, or up to DELETE_FLOOR documents whatever the share (never all of them).
MAX_DELETE_SHARE_ENV = "IMAGELABELS_RECONCILE_MAX_DELETE_SHARE"
DELETE_FLOOR_ENV = "IMAGELABELS_RECONCILE_DELETE_FLOOR"
DEFAULT_MAX_DELETE_SHARE = 0.2
DEFAULT_DELETE_FLOOR = 100

# Primary shards of a new images-vN index. A shard's search runs on one thread, so a node answers
# one question with at most one core per shard: at 1,000,000 images on one 2-core OpenSearch 2.19
# node, two shards cut the exact top-labels aggregation from 216-245 ms p95 to 133-145 ms and
# "like this" from 91-114 ms to 58 ms, the label questions unchanged or better (one run, the same
# index split; benchmarks/RESULTS.md). Search collections of OpenSearch Serverless ignore it.
INDEX_SHARDS_ENV = "IMAGELABELS_INDEX_SHARDS"
DEFAULT_INDEX_SHARDS = 2
MAX_INDEX_SHARDS = 64


def index_shards(environ: Mapping[str, str] | None = None) -> int:
    """``IMAGELABELS_INDEX_SHARDS``: primary shards of a new ``images-vN`` (existing indices keep
    theirs; ``_split`` changes them). About one per core a node has for searches, fewer when one
    node holds several indices' shards."""
    raw = environment_value(INDEX_SHARDS_ENV, environ).strip()
    if not raw:
        return DEFAULT_INDEX_SHARDS
    try:
        shards = int(raw)
    except ValueError:
        shards = 0
    if not 1 <= shards <= MAX_INDEX_SHARDS:
        raise ConfigurationError(
            f"{INDEX_SHARDS_ENV}={raw!r}: use a whole number of primary shards from 1 to {MAX_INDEX_SHARDS}"
        )
    return shards


# The bucket prefix that holds our own files (manifests, reports): listings never return it.
INTERNAL_PREFIX = "_imagelabels/"


def default_staging_uri(bucket: str) -> str:
    """Where manifests go when no staging location is configured: a reserved prefix of the bucket.

    The listing excludes this prefix, so our own files are never mistaken for images.
    """
    return f"s3://{bucket}/{INTERNAL_PREFIX}"


def staging_uri(bucket: str) -> str:
    """Where batch manifests go: ``IMAGELABELS_STAGING_URI``, else a reserved prefix of the bucket."""
    return env("STAGING_URI") or default_staging_uri(bucket)


def es_refresh() -> bool | str:
    """Refresh policy for writes: ``false`` in production (ES refreshes every second),
    ``wait_for`` where a reader must see the documents at once (demo, tests)."""
    value = env("ES_REFRESH", "false").lower()
    return value if value == "wait_for" else value == "true"


def rules_dirs() -> list[str]:
    """Extra folders alert rule files may be read from (``IMAGELABELS_RULES_DIRS``, separated
    by ``:``), besides the project's ``config/``: the ``rules_file`` Param is typed by whoever
    triggers a run, so only folders the deployment names here are readable through it."""
    return [part.strip() for part in env("RULES_DIRS").split(os.pathsep) if part.strip()]
