"""The Rekognition rate limit: settings parsing, and the rate actually held by threads and processes.

Rates are checked with tolerances over short windows (a noisy 2-core machine), and every run is
also replayed through a token bucket like the quota side's (burst = 1 s of TPS, on arrival):
no call may be one it would throttle.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from imagelabels.labelers import ratelimit
from imagelabels.labelers.ratelimit import (
    DEFAULT_BURST_SECONDS,
    OPERATIONS,
    FileTokenBucket,
    LocalTokenBucket,
    Pace,
    RateLimiter,
    RedisTokenBucket,
    Unlimited,
    default_tps,
    limiter_from_settings,
    rates_from_setting,
    reserve,
)

RATE = 20.0


# --- helpers (also used by tests/integration/test_ratelimit_shared.py) ------------------------


def run_threads(
    limiter: RateLimiter, threads: int, seconds: float, operation: str = "DetectLabels"
) -> list[float]:
    """Hammer ``limiter`` from ``threads`` threads for ``seconds``; the wall times calls went."""
    stamps: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def work() -> None:
        while time.monotonic() < stop:
            limiter.acquire(operation)
            now = time.time()
            with lock:
                stamps.append(now)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sorted(stamps)


def build_limiter(spec: tuple[str, str, str]) -> RateLimiter:
    kind, location, prefix = spec
    rates = {"DetectLabels": RATE}
    if kind == "file":
        return FileTokenBucket(location, rates, key_prefix=prefix)
    return RedisTokenBucket(location, rates, key_prefix=prefix)


def _child(spec: tuple[str, str, str], threads: int, seconds: float, barrier: Any, results: Any) -> None:
    limiter = build_limiter(spec)
    barrier.wait(timeout=30)
    results.put(run_threads(limiter, threads, seconds))


def run_processes(
    spec: tuple[str, str, str], processes: int, threads: int, seconds: float
) -> list[list[float]]:
    """The call times of each of ``processes`` spawned processes, started together on a barrier."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    children = [
        ctx.Process(target=_child, args=(spec, threads, seconds, barrier, results)) for _ in range(processes)
    ]
    for child in children:
        child.start()
    stamps: list[list[float]] = []
    deadline = time.monotonic() + 60
    try:
        while len(stamps) < processes:
            failed = [child.exitcode for child in children if child.exitcode not in (None, 0)]
            assert not failed, f"a worker process failed with exit code {failed}"
            assert time.monotonic() < deadline, "worker processes did not report within 60 s"
            with contextlib.suppress(queue.Empty):
                stamps.append(results.get(timeout=0.5))
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
    assert all(child.exitcode == 0 for child in children)
    return stamps


def steady_rate(stamps: list[float], rate: float, burst_seconds: float = DEFAULT_BURST_SECONDS) -> float:
    """Calls per second after the initial burst: ``rate * burst_seconds`` calls go at once, the
    rest one every ``1/rate`` from the first call."""
    stamps = sorted(stamps)
    return (len(stamps) - rate * burst_seconds) / (stamps[-1] - stamps[0])


def server_throttles(stamps: list[float], rate: float, burst_seconds: float = 1.0) -> int:
    """How many calls the quota side would throttle: a bucket of ``burst_seconds`` of tokens,
    full at the first call, refilled at ``rate``, one token per arriving call."""
    capacity = rate * burst_seconds
    tokens, last, throttled = capacity, None, 0
    for stamp in sorted(stamps):
        if last is not None:
            tokens = min(capacity, tokens + (stamp - last) * rate)
        last = stamp
        if tokens < 1 - 1e-6:
            throttled += 1
        else:
            tokens -= 1
    return throttled


def assert_holds_rate(stamps: list[float], rate: float) -> None:
    achieved = steady_rate(stamps, rate)
    assert 0.9 * rate <= achieved <= 1.05 * rate, f"{achieved:.2f}/s from {len(stamps)} calls, want {rate}/s"
    assert server_throttles(stamps, rate) == 0


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "tps"),
    [
        ("us-east-1", 50),
        ("us-west-2", 50),
        ("eu-west-1", 50),
        (" US-EAST-1 ", 50),
        ("us-east-2", 5),
        ("ap-south-1", 5),
        ("", 5),
        (None, 5),
    ],
)
def test_default_tps(region: str | None, tps: float) -> None:
    assert default_tps(region) == tps


ALL_50 = dict.fromkeys(OPERATIONS, 50.0)
ALL_5 = dict.fromkeys(OPERATIONS, 5.0)


@pytest.mark.parametrize(
    ("value", "region", "rates"),
    [
        ("", "us-east-1", ALL_50),
        ("  ", "eu-central-1", ALL_5),
        ("", None, ALL_5),
        ("20", "us-east-1", dict.fromkeys(OPERATIONS, 20.0)),
        (" 2.5 ", None, dict.fromkeys(OPERATIONS, 2.5)),
        ("0", "us-east-1", {}),
        ("0.0", "us-east-1", {}),
        ("none", "us-east-1", {}),
        ("None", None, {}),
        ("DetectLabels=40", "us-east-1", {**ALL_50, "DetectLabels": 40.0}),
        (
            "DetectLabels=50, DetectModerationLabels=50",
            "ap-south-1",
            {**ALL_5, "DetectLabels": 50.0, "DetectModerationLabels": 50.0},
        ),
        (
            "DetectText=none,DetectFaces=0,",
            "us-west-2",
            {"DetectLabels": 50.0, "DetectModerationLabels": 50.0},
        ),
    ],
)
def test_rates_from_setting(value: str, region: str | None, rates: dict[str, float]) -> None:
    assert rates_from_setting(value, region) == rates


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "'-1' is not a rate"),
        ("fast", "'fast' is not a rate"),
        ("inf", "'inf' is not a rate"),
        ("nan", "'nan' is not a rate"),
        ("DetectLabels=", "'' is not a rate"),
        ("DetectLabels=x", "'x' is not a rate"),
        ("DetectLabels=-5", "'-5' is not a rate"),
        ("=5", "'=5' is not OPERATION=NUMBER"),
        ("DetectLabels=5,oops", "'oops' is not OPERATION=NUMBER"),
        ("detect-labels=5", "'detect-labels=5' is not OPERATION=NUMBER"),
        ("DetectLabel=5", "unknown operation 'DetectLabel'"),
        ("DetectLabels=1,DetectLabels=2", "DetectLabels is given twice"),
    ],
)
def test_rates_from_setting_rejects(value: str, message: str) -> None:
    with pytest.raises(ValueError, match="IMAGELABELS_REKOGNITION_TPS") as error:
        rates_from_setting(value, "us-east-1")
    assert repr(value) in str(error.value)
    assert message in str(error.value)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    ratelimit.clear_limiter_cache()


def settings(url: str | None = None, tps: str | None = None) -> dict[str, str]:
    environ = {}
    if url is not None:
        environ["IMAGELABELS_RATE_LIMIT_URL"] = url
    if tps is not None:
        environ["IMAGELABELS_REKOGNITION_TPS"] = tps
    return environ


def test_default_backend_is_a_per_region_file_in_the_temp_dir() -> None:
    limiter = limiter_from_settings("us-west-2", settings())
    assert isinstance(limiter, FileTokenBucket)
    assert limiter.path.parent == Path(tempfile.gettempdir())
    assert limiter.path.name == "imagelabels-ratelimit-us-west-2.json"
    assert limiter.rates == ALL_50
    assert limiter.burst_seconds == DEFAULT_BURST_SECONDS
    other = limiter_from_settings(None, settings(url=""))
    assert isinstance(other, FileTokenBucket)
    assert other.path.name == "imagelabels-ratelimit-no-region.json"
    assert other.rates == ALL_5


@pytest.mark.parametrize(
    ("url", "kind", "where"),
    [
        ("memory://", LocalTokenBucket, None),
        ("file:///var/tmp/imagelabels/rl.json", FileTokenBucket, "/var/tmp/imagelabels/rl.json"),
        ("file://localhost/srv/rl%20state.json", FileTokenBucket, "/srv/rl state.json"),
        ("redis://127.0.0.1:6379/0", RedisTokenBucket, "redis://127.0.0.1:6379/0"),
        ("rediss://:pw@redis.example:6380/2", RedisTokenBucket, "rediss://:pw@redis.example:6380/2"),
    ],
)
def test_backend_from_url(url: str, kind: type, where: str | None) -> None:
    limiter = limiter_from_settings("eu-west-1", settings(url=url, tps="7"))
    assert isinstance(limiter, kind)
    assert limiter.rates == dict.fromkeys(OPERATIONS, 7.0)
    if isinstance(limiter, FileTokenBucket):
        assert str(limiter.path) == where
        assert limiter.key_prefix == "eu-west-1:"
    if isinstance(limiter, RedisTokenBucket):
        assert limiter.url == where
        assert limiter.key_prefix == "imagelabels:ratelimit:eu-west-1:"
        assert ":pw@" not in repr(limiter)


@pytest.mark.parametrize("tps", ["0", "none", "NONE"])
def test_no_limit(tps: str) -> None:
    assert isinstance(
        limiter_from_settings("us-east-1", settings(url="redis://nowhere:1/0", tps=tps)), Unlimited
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://x/y", "unsupported scheme 'http'"),
        ("/tmp/state.json", "unsupported scheme ''"),
        ("file://relative/path.json", "absolute file path"),
        ("file:///tmp/dir/", "absolute file path"),
        ("redis:///0", "needs a host"),
        ("ftp://user:secret@host/x", "unsupported scheme 'ftp'"),
    ],
)
def test_bad_url(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="IMAGELABELS_RATE_LIMIT_URL") as error:
        limiter_from_settings("us-east-1", settings(url=url))
    assert message in str(error.value)
    assert "secret" not in str(error.value)
    assert ratelimit.redact(url) in str(error.value)


def test_one_limiter_per_configuration_per_process(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/rl.json"
    first = limiter_from_settings("us-east-1", settings(url=url))
    assert limiter_from_settings("us-east-1", settings(url=url)) is first
    assert limiter_from_settings("us-east-1", settings(url=url, tps="")) is first
    assert limiter_from_settings("us-east-1", settings(url=url, tps="5")) is not first
    assert limiter_from_settings("us-west-2", settings(url=url)) is not first
    memory = limiter_from_settings("us-east-1", settings(url="memory://"))
    assert limiter_from_settings("us-east-1", settings(url="memory://")) is memory
    assert limiter_from_settings("eu-west-1", settings(url="memory://")) is not memory


# --- the schedule ---------------------------------------------------------------------------


def test_reserve_lets_a_burst_through_then_spaces_calls() -> None:
    pace = Pace.of(10.0, burst_seconds=0.5)  # 5 tokens
    tat, waits = None, []
    for _ in range(8):
        wait, tat = reserve(tat, 100.0, pace)
        waits.append(round(wait, 9))
    assert waits == [0, 0, 0, 0, 0, 0.1, 0.2, 0.3]
    assert reserve(tat, 200.0, pace)[0] == 0  # idle again: a TAT in the past means a full bucket
    assert reserve(100.0 + 7200, 100.0, pace)[0] == 0  # a TAT hours ahead is a clock jump: reset


def test_at_least_one_token_whatever_the_burst() -> None:
    pace = Pace.of(2.0, burst_seconds=0.0)
    first, tat = reserve(None, 0.0, pace)
    second, _ = reserve(tat, 0.0, pace)
    assert (first, second) == (0.0, 0.5)


@pytest.mark.parametrize(
    ("rates", "burst"),
    [
        ({"DetectLabels": 0.0}, 1.0),
        ({"DetectLabels": -1.0}, 1.0),
        ({"DetectLabels": float("inf")}, 1.0),
        ({"DetectLabels": 1.0}, -0.5),
        ({"DetectLabels": 1.0}, float("nan")),
    ],
)
def test_bucket_rejects_bad_configuration(rates: Mapping[str, float], burst: float) -> None:
    with pytest.raises(ValueError, match="must be a finite number"):
        LocalTokenBucket(rates, burst)


# --- rate held ------------------------------------------------------------------------------


def test_local_bucket_holds_the_rate_across_threads() -> None:
    stamps = run_threads(LocalTokenBucket({"DetectLabels": RATE}), threads=8, seconds=1.5)
    assert_holds_rate(stamps, RATE)
    # the burst is at most DEFAULT_BURST_SECONDS worth of calls
    assert sum(stamp < stamps[0] + 0.02 for stamp in stamps) <= RATE * DEFAULT_BURST_SECONDS


def test_waiting_sleeps_rather_than_spins() -> None:
    limiter = LocalTokenBucket({"DetectLabels": 2.0}, burst_seconds=0.0)
    assert limiter.acquire("DetectLabels") < 0.05
    cpu = time.thread_time()
    waited = limiter.acquire("DetectLabels")
    assert 0.45 <= waited < 0.7
    assert time.thread_time() - cpu < 0.05


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_unlimited_operations_never_wait(kind: str, tmp_path: Path) -> None:
    rates = {"DetectLabels": 1.0}
    path = tmp_path / "rl.json"
    limiter = LocalTokenBucket(rates) if kind == "memory" else FileTokenBucket(path, rates)
    limiter.acquire("DetectLabels")  # the one token is gone: DetectLabels now waits a second
    started = time.monotonic()
    assert all(limiter.acquire("DetectText") == 0.0 for _ in range(1000))
    assert Unlimited().acquire("DetectLabels") == 0.0
    assert time.monotonic() - started < 0.5
    if kind == "file":
        assert json.loads(path.read_text())["tat"].keys() == {"DetectLabels"}


def test_file_bucket_holds_the_combined_rate_of_three_processes(tmp_path: Path) -> None:
    per_process = run_processes(
        ("file", str(tmp_path / "rl.json"), "test:"), processes=3, threads=4, seconds=1.5
    )
    assert all(len(stamps) >= 5 for stamps in per_process), [len(s) for s in per_process]
    assert_holds_rate([stamp for stamps in per_process for stamp in stamps], RATE)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\x00\xff\xfe garbage",
        b"[]",
        b'{"v": 1, "tat": {"DetectLabels": "soon"}}',
        b'{"v": 1, "tat": {"DetectLabels": 1e300}}',
        b'{"v": 1, "tat": {"DetectLabels": NaN}}',
    ],
)
def test_file_bucket_recovers_a_corrupt_state_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "rl.json"
    path.write_bytes(content)
    limiter = FileTokenBucket(path, {"DetectLabels": 2.0}, burst_seconds=0.0)
    assert limiter.acquire("DetectLabels") < 0.1  # read as idle
    state = json.loads(path.read_text())
    assert state["tat"]["DetectLabels"] > time.time()  # and rewritten whole
    assert 0.4 <= limiter.acquire("DetectLabels") < 0.7  # the schedule works from there


def test_file_bucket_reads_the_state_a_killed_writer_left_before_truncating(tmp_path: Path) -> None:
    path = tmp_path / "rl.json"
    future = time.time() + 0.5
    path.write_text(json.dumps({"v": 1, "tat": {"DetectLabels": future}}) + ', "stale": [1, 2, 3]}')
    waited = FileTokenBucket(path, {"DetectLabels": 2.0}, burst_seconds=0.0).acquire("DetectLabels")
    assert 0.35 <= waited < 0.7


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_file_bucket_survives_a_process_killed_holding_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "rl.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        limiter = FileTokenBucket(path, {"DetectLabels": 5.0})
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (limiter.acquire("DetectLabels"), done.set()))
        waiter.start()
        assert not done.wait(0.3), "acquire went through while another process held the lock"
        holder.kill()  # SIGKILL: no cleanup, the kernel drops the flock
        assert done.wait(2.0)
        waiter.join()
    finally:
        holder.kill()
        holder.wait()
    assert os.path.getsize(path) > 0
