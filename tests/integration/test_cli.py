"""``python -m imagelabels`` against the fixed documents of test_search: golden outputs.

Golden files live in tests/golden/cli/. Run with ``IMAGELABELS_UPDATE_GOLDEN=1`` to rewrite them
(then read the diff). Presigned URLs are normalized (server address and signature) before the
comparison, and fetched from moto to show they work; the response overrides they are signed with
(``response-content-type``, ``response-content-disposition``) stay in the golden text.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from imagelabels import cli
from tests.integration.test_search import COFFEE, ROOT, images, seed

GOLDEN = ROOT / "tests" / "golden" / "cli"
UPDATE = os.environ.get("IMAGELABELS_UPDATE_GOLDEN") == "1"
_SIGNED = re.compile(r"(?<=[?&])(X-Amz-|AWSAccessKeyId=)[^\s\"]*")
pytestmark = pytest.mark.both_engines


@pytest.fixture
def seeded_stack(clean_stack):  # type: ignore[no-untyped-def]
    seed(clean_stack.elasticsearch(), clean_stack.boto3_client("s3"))
    return clean_stack


def _normalize(text: str, moto_url: str) -> str:
    return _SIGNED.sub("<signature>", text.replace(moto_url, "http://moto"))


def _compare(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with IMAGELABELS_UPDATE_GOLDEN=1"
    assert text == path.read_text()


def _run(stack, *argv: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    engine = ["--engine", stack.engine_flavor]
    code = cli.main([*argv, "--es-url", stack.es_url, *engine, "--s3-endpoint", stack.moto_url], out=out)
    return code, out.getvalue()


CASES = [
    ("search_pizza_90.txt", ["search", "--label", "Pizza", "--min-confidence", "90"], 0),
    ("search_pizza_90.json", ["search", "--label", "Pizza", "--min-confidence", "90", "--json"], 0),
    ("search_pizza_page1.txt", ["search", "--label", "Pizza", "--size", "2", "--no-urls"], 0),
    (
        "search_pizza_page2.txt",
        [
            "search",
            "--label",
            "Pizza",
            "--size",
            "2",
            "--no-urls",
            "--after",
            '[91.99788, "s3://photos/2026/12/pizza-night.jpg"]',  # what page 1 printed
        ],
        0,
    ),
    (
        "search_fuzzy_filtered.txt",
        ["search", "--label", "Piza", "--fuzzy", "--bucket", "photos", "--exclude-moderated", "--no-urls"],
        0,
    ),
    (
        "search_dates.txt",
        [
            "search",
            "--label",
            "Pizza",
            "--since",
            "2026-11-02",
            "--until",
            "2026-12-01T00:00:00+00:00",
            "--no-urls",
        ],
        0,
    ),
    ("describe_trap.txt", ["describe", "2026/11/trap.jpg"], 0),
    ("describe_pizza.json", ["describe", "pizza.jpg", "--json", "--no-urls"], 0),
    ("describe_missing.txt", ["describe", "nothing.jpg"], 1),
    ("like_coffee_s3.txt", ["like", "s3://photos/2026/11/coffee.png", "--labeler", "local", "--no-urls"], 0),
    (
        "like_coffee_file.json",
        ["like", str(COFFEE), "--labeler", "local", "--json", "--no-urls", "--max-labels", "3"],
        0,
    ),
    ("top_labels.txt", ["top-labels"], 0),
    ("top_labels_archive.json", ["top-labels", "--bucket", "archive", "--json"], 0),
]


@pytest.mark.parametrize(("golden", "argv", "status"), CASES, ids=[case[0] for case in CASES])
def test_cli_output_matches_golden(seeded_stack, golden: str, argv: list[str], status: int) -> None:  # type: ignore[no-untyped-def]
    code, text = _run(seeded_stack, *argv)
    assert code == status
    _compare(golden, _normalize(text, seeded_stack.moto_url))


def test_json_urls_fetch_the_images(seeded_stack) -> None:  # type: ignore[no-untyped-def]
    _, text = _run(seeded_stack, "search", "--label", "Pizza", "--json", "--presign-seconds", "60")
    answer = json.loads(text)
    bodies = {image.key: image.body for image in images()}
    assert [hit["s3key"] for hit in answer["hits"]] == [
        "2026/11/pizza.jpg",
        "2026/12/pizza-night.jpg",
        "old/pizza.jpg",
        "2026/11/trap.jpg",
    ]
    for hit in answer["hits"]:
        assert "X-Amz-Expires=60" in hit["url"]
        with urllib.request.urlopen(hit["url"], timeout=10) as response:
            assert response.read() == bodies[hit["s3key"]]


def test_python_dash_m_with_connection_settings_from_the_environment(seeded_stack) -> None:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "IMAGELABELS_ES_URL": seeded_stack.es_url,
        "IMAGELABELS_ENGINE": seeded_stack.engine_flavor,
        "AWS_ENDPOINT_URL": seeded_stack.moto_url,
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "include"), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "imagelabels",
            "search",
            "--label",
            "Pizza",
            "--min-confidence",
            "90",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _compare("search_pizza_90.json", _normalize(done.stdout, seeded_stack.moto_url))
    first = json.loads(done.stdout)["hits"][0]
    with urllib.request.urlopen(first["url"], timeout=10) as response:
        assert response.read() == b"bytes of photos/2026/11/pizza.jpg"


def test_stack_file_in_the_state_folder_points_at_the_embedded_stack(  # type: ignore[no-untyped-def]
    seeded_stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMAGELABELS_ES_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    (tmp_path / "stack.json").write_text(
        json.dumps(
            {
                "es_url": seeded_stack.es_url,
                "moto_url": seeded_stack.moto_url,
                "engine": seeded_stack.engine_flavor,
            }
        )
    )
    out = io.StringIO()
    assert cli.main(["top-labels", "--size", "2", "--json", "--state", str(tmp_path)], out=out) == 0
    assert json.loads(out.getvalue()) == {
        "labels": [{"name": "Food", "images": 4}, {"name": "Pizza", "images": 4}]
    }


def test_search_without_aws_credentials_shows_results_without_links_and_one_warning(  # type: ignore[no-untyped-def]
    seeded_stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real S3 (no --s3-endpoint) and no credentials anywhere in boto3's chain."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ENDPOINT_URL", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches the credentials it found before
    out = io.StringIO()
    argv = ["search", "--label", "Pizza", "--min-confidence", "90", "--es-url", seeded_stack.es_url]
    assert cli.main([*argv, "--engine", seeded_stack.engine_flavor], out=out) == 0
    _compare("search_pizza_90_no_credentials.txt", out.getvalue())
    warning = capsys.readouterr().err.splitlines()
    assert len(warning) == 1, warning
    assert warning[0].startswith("warning: no links: Unable to locate credentials")


@pytest.mark.parametrize("engine", ["elasticsearch", "opensearch"])
def test_an_unreachable_engine_is_one_line_naming_its_url(engine: str) -> None:
    from imagelabels.devstack.ports import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "imagelabels",
            "search",
            "--label",
            "Cat",
            "--es-url",
            url,
            "--engine",
            engine,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert f"at {url} is unreachable" in lines[0]


def _index_labelled(es, keys: list[str], label: str) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from imagelabels.documents import INDEX_ALIAS, LabelResult, ObjectInfo, build_document, document_id
    from imagelabels.engine.indexing import bulk_write

    actions = []
    for key in keys:
        obj = ObjectInfo("photos", key, 10, f"etag-{key}", datetime(2026, 11, 9, tzinfo=UTC))
        result = LabelResult([{"Name": label, "Confidence": 90.0, "Parents": []}], "local", "t", 50.0, 10)
        source = build_document(obj, result, dag_id="d", run_id="r", ingested_at=datetime.now(UTC))
        _id = document_id("photos", key, None, f"etag-{key}")
        actions.append({"_op_type": "create", "_index": INDEX_ALIAS, "_id": _id, "_source": source})
    assert bulk_write(es, actions, refresh="wait_for").failures == []


def test_the_next_page_hint_is_shell_quoted_when_a_key_has_a_quote(seeded_stack) -> None:  # type: ignore[no-untyped-def]
    import shlex

    keys = ['2026/11/it\'s a "cat" $(id).jpg', "2026/11/it's another.jpg"]
    _index_labelled(seeded_stack.elasticsearch(), keys, "Quoted")
    code, text = _run(seeded_stack, "search", "--label", "Quoted", "--size", "1", "--no-urls")
    assert code == 0
    [hint] = [line for line in text.splitlines() if line.startswith("next page: ")]
    argv = shlex.split(hint.removeprefix("next page: "))  # as a shell reads the pasted hint
    assert argv[0] == "--after"
    assert json.loads(argv[1]) == [pytest.approx(90.0, abs=0.005), f"s3://photos/{keys[0]}"]
    code, second = _run(seeded_stack, "search", "--label", "Quoted", "--size", "1", "--no-urls", *argv)
    assert code == 0
    assert f"s3://photos/{keys[1]}" in second
    assert "next page" not in second
