"""Clients are built from Airflow connections only (here: AIRFLOW_CONN_* variables)."""

from __future__ import annotations

import json

import pytest

from imagelabels import clients


def test_search_engine_honours_tls_and_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "elasticsearch",
        "host": "es.example.com",
        "port": 9243,
        "schema": "https",
        "extra": {"api_key": "c2VjcmV0", "verify_certs": True},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ES_TLS", json.dumps(conn))
    es = clients.search_engine("es_tls").client
    node = es.transport.node_pool.get().config
    assert (node.scheme, node.host, node.port) == ("https", "es.example.com", 9243)
    assert es._headers["authorization"] == "ApiKey c2VjcmV0"


def test_search_engine_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "elasticsearch",
        "host": "localhost",
        "port": 9200,
        "schema": "http",
        "login": "ingest",
        "password": "s3cret",
    }
    monkeypatch.setenv("AIRFLOW_CONN_ES_BASIC", json.dumps(conn))
    es = clients.search_engine("es_basic").client
    assert es._headers["authorization"].startswith("Basic ")


def test_aws_client_uses_connection_endpoint_region_and_adaptive_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = {
        "conn_type": "aws",
        "login": "AKIDEXAMPLE",
        "password": "wJalr",
        "extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_TEST", json.dumps(conn))
    rekognition = clients.aws_client("rekognition", "aws_test")
    assert rekognition.meta.endpoint_url == "http://127.0.0.1:9"
    assert rekognition.meta.region_name == "eu-west-1"
    assert rekognition.meta.config.retries["mode"] == "adaptive"
