"""Devstack: real servers for the demo, the tests and the benchmarks - never imported by the
product's stages.

* :mod:`.embedded` - a moto server (S3, SQS) and a search engine (noida-db, or a real OpenSearch
  node) on loopback, with Airflow connections pointing at them;
* :mod:`.opensearch_node` - a real OpenSearch 2.19 cluster in one JVM, built with Maven;
* :mod:`.standin` - the Rekognition stand-in (the real wire protocol over HTTP).

May import: the engine (to wait for and set up the index) and settings.
"""

from __future__ import annotations
