"""A real OpenSearch 2.19 node for a whole test session (``imagelabels.devstack.opensearch_node``).

Importing this module starts nothing: the JVM is started the first time a test asks for the
``opensearch_node`` fixture and stopped at the end of the session. To make the fixture visible to
every test, ``tests/conftest.py`` imports it::

    from tests.opensearch_fixtures import opensearch_node  # noqa: F401

The node speaks plain HTTP on a free loopback port (``opensearch_node.url``). Tests share it, so each
should use its own index names (or delete what it creates). Without ``java`` on PATH (or in
``JAVA_HOME``) the tests that need it fail with the install step to take (CI runs every test).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagelabels.devstack import opensearch_node as opensearch

HEAP = os.environ.get("IMAGELABELS_OPENSEARCH_HEAP", "512m")
"""One node idles well within 512 MiB of heap; benchmarks that need more start their own."""


def require_java() -> None:
    """Fail the calling test (never skip: CI must run it) when no JDK is there to run the node (or Maven to build it once)."""
    java_home = os.environ.get("JAVA_HOME")
    if not (shutil.which("java") or (java_home and (Path(java_home) / "bin" / "java").is_file())):
        pytest.fail("OpenSearch node needs java (17+) on PATH or in JAVA_HOME: run scripts/setup_system.sh")
    if not shutil.which("mvn") and not (opensearch.DEFAULT_CACHE / "java.args").is_file():
        pytest.fail(
            "OpenSearch node needs Maven (mvn) once to resolve and compile it: run scripts/setup_system.sh"
        )


@pytest.fixture(scope="session")
def opensearch_node() -> Iterator[opensearch.OpenSearchNode]:
    """One single-node OpenSearch cluster for the session (started on first use, stopped at the end)."""
    require_java()
    node = opensearch.start(nodes=1, heap=HEAP)
    try:
        yield node
    finally:
        node.stop()
