"""imagelabels: label images in S3 and make their labels searchable in Elasticsearch.

Core modules are plain Python and take their clients (S3, Elasticsearch, a labeler) as
arguments; only :mod:`imagelabels.clients` knows about Airflow connections.
"""

from __future__ import annotations

__version__ = "0.1.0"
