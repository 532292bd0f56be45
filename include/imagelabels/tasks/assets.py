"""The Airflow Asset that links ingestion to alerting.

Every ingestion DAG (hourly listing, SQS, reconciliation) lists :data:`IMAGES_INDEXED` as an
outlet of its last task, so each finished ingestion run records an asset event; the alert DAG is
scheduled on that asset (or its clock, for window rules) and evaluates the rules right after the
documents landed. The URI names the alias the documents are written to; Airflow never connects to
it.
"""

from __future__ import annotations

from airflow.sdk import Asset

IMAGES_INDEXED = Asset(
    name="imagelabels_images_indexed",
    uri="x-imagelabels://elasticsearch/images",  # "x-": private scheme, no provider normalizer
    group="imagelabels",
    extra={"description": "Image label documents written to the Elasticsearch alias 'images'"},
)
