"""RedisTokenBucket against the real Redis at 127.0.0.1:6379: one rate shared by several
processes (as by several Celery workers), and state that expires by itself.

Each test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from imagelabels.labelers.ratelimit import RedisTokenBucket, clear_limiter_cache, limiter_from_settings
from tests.unit.test_ratelimit import RATE, assert_holds_rate, run_processes

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_client() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.fail(f"no Redis at {REDIS_URL} ({error}): scripts/setup_system.sh installs and starts one")
    return client


@pytest.fixture
def key_prefix(redis_client: Any) -> Iterator[str]:
    prefix = f"imagelabels:test:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*"))
    if keys:
        redis_client.delete(*keys)


def test_two_processes_share_the_rate(redis_client: Any, key_prefix: str) -> None:
    per_process = run_processes(("redis", REDIS_URL, key_prefix), processes=2, threads=4, seconds=1.5)
    assert all(len(stamps) >= 5 for stamps in per_process), [len(s) for s in per_process]
    assert_holds_rate([stamp for stamps in per_process for stamp in stamps], RATE)


def test_state_expires_once_the_schedule_has_passed(redis_client: Any, key_prefix: str) -> None:
    limiter = RedisTokenBucket(REDIS_URL, {"DetectLabels": RATE}, key_prefix=key_prefix)
    for _ in range(3):
        limiter.acquire("DetectLabels")
    key = f"{key_prefix}DetectLabels"
    assert 0 < redis_client.pttl(key) <= 2000
    assert limiter.acquire("DetectText") == 0.0  # no rate configured: no key either
    assert not redis_client.exists(f"{key_prefix}DetectText")
    deadline = time.monotonic() + 3
    while redis_client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not redis_client.exists(key)


def test_schedule_is_kept_on_the_server(redis_client: Any, key_prefix: str) -> None:
    """A second client (another host) sees the slots the first took; a stored schedule hours
    ahead (a clock stepped back) is discarded rather than waited for."""
    first = RedisTokenBucket(REDIS_URL, {"DetectLabels": 2.0}, burst_seconds=0.0, key_prefix=key_prefix)
    second = RedisTokenBucket(REDIS_URL, {"DetectLabels": 2.0}, burst_seconds=0.0, key_prefix=key_prefix)
    assert first.acquire("DetectLabels") < 0.1
    assert 0.4 <= second.acquire("DetectLabels") < 0.7
    seconds, micros = redis_client.time()
    redis_client.set(f"{key_prefix}DetectLabels", str((seconds + 7200) * 1_000_000 + micros))
    assert first.acquire("DetectLabels") < 0.1


def test_settings_scope_redis_keys_by_region(redis_client: Any) -> None:
    region = f"test-{uuid.uuid4().hex[:8]}"
    environ = {"IMAGELABELS_RATE_LIMIT_URL": REDIS_URL, "IMAGELABELS_REKOGNITION_TPS": "DetectLabels=3"}
    clear_limiter_cache()
    try:
        limiter = limiter_from_settings(region, environ)
        assert isinstance(limiter, RedisTokenBucket)
        assert limiter is limiter_from_settings(region, environ)
        limiter.acquire("DetectLabels")
        assert redis_client.exists(f"imagelabels:ratelimit:{region}:DetectLabels")
    finally:
        clear_limiter_cache()
        redis_client.delete(f"imagelabels:ratelimit:{region}:DetectLabels")
