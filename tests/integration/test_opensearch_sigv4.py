"""Amazon OpenSearch Service and OpenSearch Serverless, for real: a SigV4-verifying proxy
(:class:`tests.sigv4_proxy.SigV4Proxy`, botocore's own signature code) in front of a real
OpenSearch node. The pipeline (the hourly DAG), the engine layer and the CLI sign with the Airflow
AWS connection's credentials; wrong keys, regions and services are refused with a clear 403;
Serverless mode refuses what Serverless refuses and the pipeline never asks for it.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from imagelabels import cli, clients
from imagelabels.devstack.embedded import AWS_REGION, AWS_TEST_KEY, EmbeddedStack, covering_hours
from imagelabels.documents import FAILURES_INDEX, INDEX_ALIAS
from imagelabels.engine import AuthorizationError, UnsupportedOperationError
from imagelabels.engine.indexing import bulk_write, ensure_indices
from tests.airflow_dags import load_dag
from tests.integration.test_indexing import _doc
from tests.sigv4_proxy import SigV4Proxy

pytestmark = pytest.mark.opensearch_only

SAMPLES = Path(__file__).resolve().parents[2] / "sample_images"
PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg"]
MOTO_REKOGNITION = {"labeler": "rekognition", "features": ["labels"]}


def _proxy(stack: EmbeddedStack, **options: object) -> SigV4Proxy:
    settings: dict[str, object] = {
        "access_key": AWS_TEST_KEY,
        "secret_key": AWS_TEST_KEY,
        "region": AWS_REGION,
        "service": "es",
    }
    settings.update(options)
    return SigV4Proxy(stack.es_url, **settings)  # type: ignore[arg-type]


def _use_signed_connection(
    monkeypatch: pytest.MonkeyPatch,
    proxy: SigV4Proxy,
    *,
    service: str = "es",
    region: str = AWS_REGION,
    aws_conn_id: str = "aws_default",
) -> None:
    """Point ``elasticsearch_default`` at the proxy as an ``opensearch`` connection that signs
    with ``aws_conn_id`` (as a user would for an Amazon OpenSearch Service domain)."""
    port = int(proxy.url.rsplit(":", 1)[1])
    extra = {
        "use_ssl": False,
        "aws_conn_id": aws_conn_id,
        "region_name": region,
        "service": service,
        "refresh_wait_seconds": 1.5,  # the node behind the proxy refreshes every second
    }
    connection = {"conn_type": "opensearch", "host": "127.0.0.1", "port": port, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_ELASTICSEARCH_DEFAULT", json.dumps(connection))


@pytest.fixture
def photos(s3) -> list[dict]:  # type: ignore[no-untyped-def]
    s3.create_bucket(Bucket="photos")
    for name in PHOTOS:
        s3.put_object(Bucket="photos", Key=f"uploads/{name}", Body=(SAMPLES / name).read_bytes())
    return [s3.head_object(Bucket="photos", Key=f"uploads/{name}") for name in PHOTOS]


def _run_hours(heads: list[dict]) -> list:  # type: ignore[type-arg]
    dag = load_dag("image_ingest_s3_hourly")
    hours = covering_hours([head["LastModified"] for head in heads])
    return [
        dag.test(logical_date=hour + timedelta(hours=1), run_conf={"bucket": "photos", **MOTO_REKOGNITION})
        for hour in hours
    ]


def _indexed_keys(es) -> list[str]:  # type: ignore[no-untyped-def]
    es.indices.refresh(index=INDEX_ALIAS)
    hits = es.search(index=INDEX_ALIAS, size=100)["hits"]["hits"]
    return sorted(hit["_source"]["s3key"] for hit in hits)


def test_hourly_run_through_a_sigv4_signed_domain(  # type: ignore[no-untyped-def]
    airflow_db, stack, es, photos, monkeypatch
) -> None:
    with _proxy(stack) as proxy:
        _use_signed_connection(monkeypatch, proxy)
        runs = _run_hours(photos)
    assert [str(run.state) for run in runs] == ["success"] * len(runs)
    assert _indexed_keys(es) == [f"uploads/{name}" for name in PHOTOS]
    assert proxy.refused == []
    operations = {path.split("?")[0] for _method, path in proxy.forwarded}
    assert {"/_bulk", f"/{INDEX_ALIAS}/_search"} <= operations  # the writes and reads were signed


@pytest.mark.parametrize(
    ("wrong", "reason"),
    [
        ({"secret_key": "not-the-secret"}, "signature"),
        ({"region": "eu-west-1"}, "region"),
        ({"service": "aoss"}, "service"),
    ],
)
def test_a_wrong_key_region_or_service_is_a_clear_403(  # type: ignore[no-untyped-def]
    stack, es, monkeypatch, wrong: dict, reason: str
) -> None:
    """The proxy expects other credentials / region / service than the connection signs with."""
    with _proxy(stack, **wrong) as proxy:
        _use_signed_connection(monkeypatch, proxy)
        engine = clients.search_engine("elasticsearch_default")
        with pytest.raises(AuthorizationError) as refused:
            ensure_indices(engine)
    assert refused.value.status == 403
    assert "OpenSearch (elasticsearch_default)" in str(refused.value)
    assert proxy.accepted == 0
    assert proxy.reasons() == [reason]
    assert not es.indices.exists(index=FAILURES_INDEX)  # nothing reached the node


def test_serverless_pipeline_never_asks_for_what_serverless_lacks(  # type: ignore[no-untyped-def]
    airflow_db, stack, es, photos, monkeypatch
) -> None:
    """A SEARCH collection: no _refresh, no refresh= on writes, no _cluster/health, no
    _delete_by_query -- the hourly run and the engine's alternatives work without them."""
    with _proxy(stack, service="aoss", serverless=True) as proxy:
        _use_signed_connection(monkeypatch, proxy, service="aoss")
        runs = _run_hours(photos)
        assert [str(run.state) for run in runs] == ["success"] * len(runs)
        engine = clients.search_engine("elasticsearch_default")
        assert engine.capabilities.serverless
        assert engine.cluster_health() is None
        engine.indices.refresh(index=INDEX_ALIAS)  # waits instead of calling _refresh
        reply = engine.delete_by_query(index=INDEX_ALIAS, query={"term": {"title.keyword": "rocket.jpg"}})
        assert reply["deleted"] == 1
    assert proxy.refused == []
    paths = [path for _method, path in proxy.forwarded]
    assert not [p for p in paths if "_refresh" in p or "refresh=" in p or "_cluster" in p or "_by_query" in p]
    assert _indexed_keys(es) == ["uploads/chelsea.png", "uploads/coffee.png"]


def test_a_timeseries_collection_is_refused_at_start(stack, es, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Deterministic ids (reruns never duplicate) need a SEARCH collection: said before any work."""
    with _proxy(stack, service="aoss", serverless=True, collection="TIMESERIES") as proxy:
        _use_signed_connection(monkeypatch, proxy, service="aoss")
        engine = clients.search_engine("elasticsearch_default")
        with pytest.raises(UnsupportedOperationError, match="need a SEARCH collection"):
            ensure_indices(engine)
    assert "document-id" in proxy.reasons()


def test_cli_searches_through_sigv4(stack, es, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ensure_indices(es)
    assert bulk_write(es, [_doc("cat.jpg", [("Cat", 93.0)])], refresh="wait_for").created == 1
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_TEST_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_TEST_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)
    with _proxy(stack) as proxy:
        out = io.StringIO()
        argv = ["search", "--label", "Cat", "--json", "--no-urls", "--es-url", proxy.url]
        code = cli.main([*argv, "--engine", "opensearch", "--sigv4-service", "es"], out=out)
        unsigned = cli.main([*argv, "--engine", "opensearch"], out=io.StringIO())
    assert code == 0
    assert [hit["s3key"] for hit in json.loads(out.getvalue())["hits"]] == ["cat.jpg"]
    assert unsigned == 2  # one line on stderr, no traceback
    assert "missing-authorization" in proxy.reasons()


@pytest.fixture
def role_connection(stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch) -> str:
    """An AWS connection that assumes a role through moto's STS: temporary, refreshable keys."""
    base = json.loads(stack.airflow_env()["AIRFLOW_CONN_AWS_DEFAULT"])
    base["extra"]["role_arn"] = "arn:aws:iam::123456789012:role/search-writer"
    # the provider never sends AssumeRole to the global endpoint_url: name STS's own
    base["extra"]["service_config"] = {"sts": {"endpoint_url": stack.moto_url}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_ROLE", json.dumps(base))
    return "aws_role"


def test_sigv4_uses_refreshable_credentials_of_an_assumed_role(role_connection: str) -> None:
    """The signer keeps botocore's refreshable credentials object and freezes it per request, so
    a long task keeps signing after the first temporary keys expire."""
    from botocore.credentials import RefreshableCredentials

    from imagelabels.engine.connect import sigv4_auth

    auth = sigv4_auth(role_connection, region=AWS_REGION, service="es")
    credentials = auth.signer.credentials
    assert isinstance(credentials, RefreshableCredentials)

    def signed_key() -> str:
        headers = auth.signer.sign("GET", "http://search.example:9200/images/_search", None, {})
        assert headers["X-Amz-Security-Token"]  # temporary keys of the role session
        return headers["Authorization"].split("Credential=")[1].split("/")[0]

    first = signed_key()
    assert signed_key() == first  # still valid: the same keys
    credentials._expiry_time = credentials._expiry_time - timedelta(days=1)  # as if hours passed
    assert signed_key() != first  # the next request assumed the role again
