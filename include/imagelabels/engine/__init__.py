"""The search engine layer: the only package that knows which client talks to the index.

Everything that reads or writes the index -- indexing, search, reports, alerts, failure and
delivery records, reconciliation, re-labeling, the web app and the CLI -- receives a
:class:`SearchEngine` and calls it in one keyword style; the connection decides what is behind it:

* :class:`~.elastic.ElasticsearchEngine` -- Elasticsearch 8/9 and noida-db (elasticsearch-py);
* :class:`~.opensearch.OpenSearchEngine` -- OpenSearch 2.x/3.x, Amazon OpenSearch Service (SigV4,
  service ``es``) and OpenSearch Serverless (service ``aoss``, with the capabilities it lacks
  replaced as :class:`~.base.Capabilities` says), through opensearch-py.

:mod:`.indexing` holds every write: index setup, bulk writes with each item accounted, failure
records and the sorted pagers (:func:`~.indexing.sorted_hits`, :func:`~.indexing.iter_failures`).

May import: settings, masking (AWS credentials for SigV4 are masked in logs), errors, documents
(the index definition), and the clients themselves, lazily.
"""

from __future__ import annotations

from imagelabels.engine.base import FULL, SERVERLESS, Capabilities, SearchEngine
from imagelabels.engine.connect import from_connection, from_url, opensearch, redact_url
from imagelabels.engine.errors import (
    AuthorizationError,
    BadRequestError,
    ConflictError,
    EngineError,
    EngineUnavailableError,
    NotFoundError,
    UnsupportedOperationError,
)

__all__ = [
    "FULL",
    "SERVERLESS",
    "AuthorizationError",
    "BadRequestError",
    "Capabilities",
    "ConflictError",
    "EngineError",
    "EngineUnavailableError",
    "NotFoundError",
    "SearchEngine",
    "UnsupportedOperationError",
    "from_connection",
    "from_url",
    "opensearch",
    "redact_url",
]
