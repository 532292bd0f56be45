"""Service clients built from Airflow connections (the only module that touches Airflow).

Credentials live in Airflow connections or the secrets backend, never in code:

* ``aws_default`` (type ``aws``): S3 and Rekognition; ``extra.endpoint_url`` points at a local
  stand-in (the embedded moto server) and ``extra.region_name`` picks the region.
* ``elasticsearch_default`` (type ``elasticsearch`` or ``opensearch``): the search engine; the
  type picks the client (:mod:`imagelabels.engine.connect` reads host, port, TLS, basic auth,
  API key or SigV4 extras).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imagelabels.masking import mask_aws_credentials, mask_session_credentials
from imagelabels.settings import environment_value

if TYPE_CHECKING:
    from imagelabels.engine import SearchEngine

AWS_RETRIES = {"mode": "adaptive", "max_attempts": 10}
# Batches read and label on a thread pool; botocore's default pool of 10 connections would make
# threads queue for a socket.
MAX_POOL_CONNECTIONS = 64


# Two tries, no backoff ladder: for the first call of a run, so a wrong endpoint or region fails
# in seconds with a clear message instead of after a minute of adaptive retries (per task try);
# timeouts stay generous, so a slow but working S3 is not mistaken for a wrong one.
PROBE_CONFIG = {"retries": {"mode": "standard", "max_attempts": 2}, "connect_timeout": 10, "read_timeout": 60}


def aws_client(service: str, aws_conn_id: str = "aws_default", *, probe: bool = False) -> Any:
    """A boto3 client for ``service`` from an Airflow AWS connection.

    There is no Rekognition hook in the Amazon provider, so every service goes through
    ``AwsBaseHook(client_type=...)``; adaptive retries absorb throttling. ``probe`` gives a
    client that tries twice without backoff, to check a connection before a run's work.
    """
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from botocore.config import Config

    config = (
        Config(**PROBE_CONFIG)
        if probe
        else Config(retries=AWS_RETRIES, max_pool_connections=MAX_POOL_CONNECTIONS)
    )
    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type=service, config=config)
    client = hook.get_conn()
    mask_aws_credentials(hook)
    return client


def search_engine(conn_id: str = "elasticsearch_default") -> SearchEngine:
    """The search engine an Airflow connection describes: type ``elasticsearch`` (Elasticsearch
    8/9, noida-db) or ``opensearch`` (OpenSearch, Amazon OpenSearch Service with SigV4,
    Serverless); see :mod:`imagelabels.engine.connect`."""
    from imagelabels.engine import from_connection

    return from_connection(conn_id)


def presigning_s3_client(aws_conn_id: str = "aws_default") -> Any:
    """S3 client for presigned links (search thumbnails, report and alert links), signing with
    SigV4 (the hook's default client presigns with SigV2, which regions opened since 2014 refuse).

    Its secret key and session token are registered with Airflow's log masker (raw and
    URL-encoded, as a presigned link carries the token) before it signs anything, and again
    whenever the credentials refresh (:func:`mask_session_credentials`), so a link in a task log
    shows ``***`` in place of the token.

    ``IMAGELABELS_PRESIGN_ENDPOINT_URL`` replaces the connection's ``endpoint_url`` in presigned
    URLs, for a stand-in that browsers reach under another name than Airflow does (docker
    compose: ``http://localhost:5000`` for the ``aws`` service). Real S3 needs neither."""

    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from botocore.config import Config

    config = Config(signature_version="s3v4")
    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3", config=config)
    public = environment_value("IMAGELABELS_PRESIGN_ENDPOINT_URL").strip()
    endpoint = public or hook.conn_config.get_service_endpoint_url("s3")
    session = hook.get_session(region_name=hook.conn_config.region_name)
    client = session.client("s3", endpoint_url=endpoint, config=config, verify=hook.verify)
    mask_session_credentials(session, client)
    return client
