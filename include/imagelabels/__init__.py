"""imagelabels: label images in S3 and make their labels searchable in Elasticsearch.

Packages follow the pipeline's stages, lowest first (ARCHITECTURE.md draws them; imports only point
down, ``tests/unit/test_architecture.py`` holds it): settings, masking and errors; fingerprints;
documents; sources; preflight; labelers; engine; search; clients; pipeline; channels; alerts;
reports; tasks (the Airflow layer DAG files call); devstack (servers for demo and tests); the CLI
and the web app. Stages take their clients (S3, the engine, a labeler) as arguments;
:mod:`imagelabels.clients` and :mod:`imagelabels.tasks` are where Airflow connections and context
come in.
"""

from __future__ import annotations

__version__ = "0.1.0"
