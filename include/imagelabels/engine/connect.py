"""Which engine, from where: an Airflow connection (tasks, the web app) or a URL (the CLI).

The connection type decides the client:

* ``elasticsearch`` -- Elasticsearch 8/9 (or noida-db) through elasticsearch-py;
* ``opensearch`` -- OpenSearch 2.x/3.x through opensearch-py: host, port, ``extra.use_ssl``,
  ``extra.verify_certs``, ``extra.ca_certs``, login/password for basic auth; for Amazon
  OpenSearch Service ``extra.aws_conn_id`` (SigV4 from that AWS connection), ``extra.region_name``
  and ``extra.service`` (``es`` for a managed domain, ``aoss`` for a Serverless collection;
  ``extra.refresh_wait_seconds`` is how long a refresh waits there, default 10).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from imagelabels.engine.base import FULL, SERVERLESS, SearchEngine
from imagelabels.engine.elastic import ElasticsearchEngine, redact_url
from imagelabels.engine.opensearch import OpenSearchEngine

FLAVORS = ("elasticsearch", "opensearch")
SIGV4_SERVICES = ("es", "aoss")


def from_connection(conn_id: str) -> SearchEngine:
    """The engine an Airflow connection describes (type ``elasticsearch`` or ``opensearch``)."""
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    conn_type = (connection.conn_type or "").lower()
    if conn_type == "opensearch":
        extra = connection.extra_dejson
        scheme = "https" if _truthy(extra.get("use_ssl", connection.schema == "https")) else "http"
        url = f"{scheme}://{connection.host}:{connection.port or (443 if scheme == 'https' else 9200)}"
        return opensearch(
            url,
            login=connection.login,
            password=connection.password,
            verify_certs=_truthy(extra.get("verify_certs", True)),
            ca_certs=extra.get("ca_certs"),
            aws_conn_id=extra.get("aws_conn_id"),
            region=extra.get("region_name"),
            service=extra.get("service", "es"),
            timeout=float(extra.get("timeout", 30)),
            refresh_wait_s=float(extra.get("refresh_wait_seconds", 10)),
            description=f"OpenSearch ({conn_id}) at {url}",
        )
    if conn_type in ("elasticsearch", "elasticsearch_sql", ""):
        from airflow.providers.elasticsearch.hooks.elasticsearch import ElasticsearchSQLHook

        # ElasticsearchPythonHook ignores connection ids; the SQL hook's wrapper reads the
        # connection (host, schema, login/password, api_key and TLS extras) and builds the client
        client = ElasticsearchSQLHook(elasticsearch_conn_id=conn_id).get_conn().es
        where = f"{connection.schema or 'http'}://{connection.host}:{connection.port}"
        return ElasticsearchEngine(client, description=f"Elasticsearch ({conn_id}) at {where}")
    raise ValueError(
        f"connection {conn_id!r} has type {connection.conn_type!r}: the search engine connection must "
        f"be of type 'elasticsearch' or 'opensearch'"
    )


def from_url(
    url: str,
    *,
    flavor: str = "elasticsearch",
    api_key: str | None = None,
    aws_region: str | None = None,
    sigv4_service: str | None = None,
    timeout: float = 30,
) -> SearchEngine:
    """The engine at ``url`` (the CLI, benchmarks, tests); SigV4 signing with boto3's default
    credentials when ``sigv4_service`` is given."""
    if flavor == "elasticsearch":
        from imagelabels.engine.elastic import connect

        return connect(url, api_key=api_key, timeout=timeout)
    if flavor != "opensearch":
        raise ValueError(f"unknown engine {flavor!r}: use one of {', '.join(FLAVORS)}")
    parts = urlsplit(url)
    return opensearch(
        url,
        login=parts.username,
        password=parts.password,
        region=aws_region,
        service=sigv4_service,
        sigv4_default_chain=bool(sigv4_service),
        timeout=timeout,
    )


def opensearch(
    url: str,
    *,
    login: str | None = None,
    password: str | None = None,
    verify_certs: bool = True,
    ca_certs: str | None = None,
    aws_conn_id: str | None = None,
    region: str | None = None,
    service: str | None = None,
    sigv4_default_chain: bool = False,
    timeout: float = 30,
    refresh_wait_s: float = 10.0,
    description: str | None = None,
) -> OpenSearchEngine:
    """An opensearch-py client for ``url`` with basic auth or SigV4 signing.

    SigV4 credentials come from the Airflow AWS connection ``aws_conn_id`` (or boto3's default
    chain): the signer asks for frozen credentials on every request, so credentials of an
    assumed role are refreshed before they expire. ``service='aoss'`` (Serverless) switches to
    :data:`~.base.SERVERLESS` capabilities; there ``refresh_wait_s`` is how long a "refresh"
    waits instead (Serverless makes writes searchable within its own interval, 10 s or more).
    """
    from opensearchpy import OpenSearch, RequestsHttpConnection

    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if scheme == "https" else 9200)
    options: dict[str, Any] = {
        "hosts": [{"host": host, "port": port, "url_prefix": parts.path.rstrip("/")}],
        "use_ssl": scheme == "https",
        "verify_certs": verify_certs if scheme == "https" else False,
        "ssl_show_warn": False,
        "timeout": timeout,
        "connection_class": RequestsHttpConnection,
    }
    if ca_certs:
        options["ca_certs"] = ca_certs
    signed = bool(aws_conn_id or sigv4_default_chain)
    if signed:
        service = service or "es"
        if service not in SIGV4_SERVICES:
            raise ValueError(f"SigV4 service must be one of {', '.join(SIGV4_SERVICES)} (got {service!r})")
        options["http_auth"] = sigv4_auth(aws_conn_id, region=region, service=service)
    elif login:
        options["http_auth"] = (login, password or "")
    serverless = signed and service == "aoss"
    name = "OpenSearch Serverless" if serverless else "OpenSearch"
    netloc = f"{host}:{port}"
    return OpenSearchEngine(
        OpenSearch(**options),
        description=description or f"{name} at {scheme}://{netloc}",
        capabilities=SERVERLESS if serverless else FULL,
        refresh_wait_s=refresh_wait_s,
    )


def sigv4_auth(aws_conn_id: str | None, *, region: str | None, service: str) -> Any:
    """A SigV4 signer for opensearch-py from an Airflow AWS connection (or the default chain).

    The credentials object is botocore's own (refreshable for assumed roles and web identity);
    the signer freezes it per request, never once at start.
    """
    from opensearchpy import AWSV4SignerAuth

    if aws_conn_id:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        from imagelabels.masking import mask_aws_credentials

        hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="sts")
        session = hook.get_session(region_name=region or hook.conn_region_name)
        region = region or session.region_name
        mask_aws_credentials(hook)
    else:
        import boto3

        session = boto3.Session(region_name=region)
        region = region or session.region_name
    credentials = session.get_credentials()
    if credentials is None:
        raise ValueError(
            f"no AWS credentials for SigV4 signing ({'connection ' + repr(aws_conn_id) if aws_conn_id else 'default chain'})"
        )
    if not region:
        raise ValueError(
            "SigV4 signing needs a region: set extra.region_name on the connection or AWS_DEFAULT_REGION"
        )
    return AWSV4SignerAuth(credentials, region, service)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


__all__ = ["from_connection", "from_url", "opensearch", "redact_url"]
