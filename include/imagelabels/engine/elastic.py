"""Elasticsearch 8/9 (and noida-db, which answers like it) through the official client.

elasticsearch-py refuses servers that are not Elasticsearch (``UnsupportedProductError`` on a
reply without ``X-Elastic-Product``) and sends ``compatible-with`` media types that OpenSearch
answers with 406: OpenSearch therefore has its own implementation (:mod:`.opensearch`).
"""

from __future__ import annotations

import logging
from functools import reduce
from typing import Any

from imagelabels.engine.base import SearchEngine
from imagelabels.engine.errors import EngineError, EngineUnavailableError, describe_body, error_for_status

log = logging.getLogger(__name__)


class ElasticsearchEngine(SearchEngine):
    """The keyword style of :class:`SearchEngine` is elasticsearch-py 8's own: calls pass through."""

    flavor = "elasticsearch"

    def _invoke(self, api: str, kwargs: dict[str, Any]) -> Any:
        method = reduce(getattr, api.split("."), self.client)
        return method(**kwargs)

    def _probe_vector_kind(self) -> str | None:
        """``dense_vector`` with byte elements (Elasticsearch 8.6 and later, noida-db); ``None``
        when the version cannot be read (a role without ``monitor``: bands, and one warning)."""
        try:
            number = str(self.info().get("version", {}).get("number", "0"))
        except EngineError as error:
            log.warning(
                "%s: could not read the version (%s); similarity uses hash bands", self.description, error
            )
            return None
        major, _, rest = number.partition(".")
        minor = rest.partition(".")[0]
        version = (int(major) if major.isdigit() else 0, int(minor) if minor.isdigit() else 0)
        return "dense_vector" if version >= (8, 6) else None

    def vector_search(
        self,
        *,
        field: str,
        vector: list[int],
        k: int,
        filter: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Elasticsearch's top-level ``knn`` (HNSW, ``num_candidates`` explored per shard; the
        filter applies during the graph search)."""
        knn: dict[str, Any] = {"field": field, "query_vector": vector, "k": k, "num_candidates": max(k, 100)}
        if filter is not None:
            knn["filter"] = filter
        return {"knn": knn}

    def _translate(self, error: Exception) -> EngineError | None:
        import elastic_transport
        from elasticsearch import ApiError

        if isinstance(error, ApiError):
            status = error.meta.status
            error_type, reason = describe_body(error.body)
            error_type = error_type or str(error.message)
            text = f"{self.description}: {status} {error_type}: {reason}".rstrip(": ")
            return error_for_status(status)(
                text, status=status, error_type=error_type, reason=reason, body=error.body
            )
        if isinstance(error, elastic_transport.TransportError):
            causes = "; ".join(str(cause) for cause in getattr(error, "errors", ()) if str(cause))
            reason = f"{error.message} ({causes})" if causes else str(error.message)
            return EngineUnavailableError(f"{self.description} is unreachable: {reason}", reason=reason)
        return None


def connect(
    url: str, *, api_key: str | None = None, timeout: float = 30, **options: Any
) -> ElasticsearchEngine:
    """An engine for an Elasticsearch (or noida-db) URL; credentials may be in the URL."""
    from elasticsearch import Elasticsearch

    options.setdefault("request_timeout", timeout)
    client = Elasticsearch(url, api_key=api_key, **options)
    return ElasticsearchEngine(client, description=f"Elasticsearch at {redact_url(url)}")


def redact_url(url: str) -> str:
    """``url`` without a password, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
