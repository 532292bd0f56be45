"""A rate limit for Rekognition calls that holds across threads, processes and hosts.

Rekognition's quota is per account, region and operation (e.g. ``DetectLabels`` 50 TPS in
us-east-1), while our calls come from many threads of many mapped tasks, in several processes
on several Celery workers. Every call first asks a shared limiter for a slot; the limiter keeps
the combined rate at (not above) the quota, so botocore's throttling retries stay the exception.

How it works: each operation has a *theoretical arrival time* (TAT, the GCRA form of a token
bucket). A call reserves the next slot atomically (``tat += 1/rate``) and then sleeps until its
slot, outside any lock. One atomic step per call, no polling, first come first served; a call that
is abandoned after reserving only wastes its slot (we err below the quota, never above).

Burst: a call may go ``burst_seconds - 1/rate`` ahead of its schedule, i.e. an idle bucket holds
``burst_seconds * rate`` tokens. The quota side (Rekognition, and our stand-in server) runs a
token bucket of 1 second of TPS on *arrival*. Our departures are ``(rate, burst)``-conformant, and
network and scheduling jitter of ``J`` seconds turns them into ``(rate, burst + J)`` at the
server, so no throttling needs ``burst + J <= 1 s``. The burst does not change the long-run rate
(a saturated limiter gives exactly ``rate``), it only absorbs our own late wake-ups. Hence the
default :data:`DEFAULT_BURST_SECONDS` = 0.5: half a second of jitter tolerated on each side, and
still 100 % of the quota when the threads keep the limiter busy. (The bucket never holds less
than one token, so below 2 TPS the margin shrinks, and at 1 TPS or less it is gone: set such
tiny quotas a little below the real one.)

Backends (chosen by ``IMAGELABELS_RATE_LIMIT_URL``, see :func:`limiter_from_settings`):

* :class:`Unlimited` - no limit (``IMAGELABELS_REKOGNITION_TPS=none``).
* :class:`LocalTokenBucket` (``memory://``) - the threads of one process.
* :class:`FileTokenBucket` (``file:///abs/path``, and the default) - every process on one host;
  the state is a small JSON file guarded by ``fcntl.flock``.
* :class:`RedisTokenBucket` (``redis://`` / ``rediss://``) - every worker on every host; one Lua
  script per call, timed by the Redis server's clock. **Multi-host deployments must set a Redis
  URL** (the Celery broker's Redis works); the default file only spans one host.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from imagelabels.settings import environment

#: The Rekognition operations the pipeline calls; each gets the regional default rate.
OPERATIONS = ("DetectLabels", "DetectModerationLabels", "DetectText", "DetectFaces")

#: Regions where the default image-operation quota is 50 TPS (5 TPS elsewhere).
HIGH_QUOTA_REGIONS = frozenset({"us-east-1", "us-west-2", "eu-west-1"})

#: Seconds of calls an idle limiter lets through at once (see the module docstring for why 0.5).
DEFAULT_BURST_SECONDS = 0.5

DEFAULT_KEY_PREFIX = "imagelabels:ratelimit:"

TPS_SETTING = "IMAGELABELS_REKOGNITION_TPS"
URL_SETTING = "IMAGELABELS_RATE_LIMIT_URL"

# Sleep in slices of at most this long, so an early wake-up or a signal never shortens a wait.
_MAX_SLEEP_SLICE = 1.0

# A stored schedule further ahead than this cannot come from real waiters (it would take
# thousands of blocked threads): it is a clock that stepped back, or garbage. Start afresh.
_MAX_BACKLOG_SECONDS = 3600.0

_OPERATION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


class RateLimiter(Protocol):
    """Something every Rekognition call goes through first."""

    def acquire(self, operation: str) -> float:
        """Block until one call of ``operation`` is allowed; return the seconds waited.

        Thread-safe. Operations without a configured rate return at once.
        """
        ...


@dataclass(frozen=True)
class Pace:
    """One operation's schedule: a slot every ``interval`` seconds, up to ``tolerance`` early."""

    interval: float
    tolerance: float

    @classmethod
    def of(cls, rate: float, burst_seconds: float) -> Pace:
        """``burst_seconds`` of tokens (at least one) at ``rate`` calls per second."""
        interval = 1.0 / rate
        return cls(interval=interval, tolerance=max(0.0, burst_seconds - interval))


def reserve(tat: float | None, now: float, pace: Pace) -> tuple[float, float]:
    """Take the next slot: return ``(seconds to wait, new TAT)``.

    Pure, so the local and file buckets share it and the Redis Lua script mirrors it.
    """
    if tat is None or not math.isfinite(tat) or tat < now or tat > now + _MAX_BACKLOG_SECONDS:
        tat = now
    wait = max(0.0, tat - pace.tolerance - now)
    return wait, tat + pace.interval


def sleep_for(seconds: float) -> None:
    """Sleep ``seconds`` in slices (never spinning), robust to early wake-ups."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(remaining, _MAX_SLEEP_SLICE))


def _paces(rates: Mapping[str, float], burst_seconds: float) -> dict[str, Pace]:
    """Validate the configuration once, at construction, rather than on every call."""
    if not (math.isfinite(burst_seconds) and burst_seconds >= 0):
        raise ValueError(f"burst_seconds must be a finite number >= 0, got {burst_seconds!r}")
    paces = {}
    for operation, rate in rates.items():
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate for {operation} must be a finite number > 0, got {rate!r}")
        paces[operation] = Pace.of(float(rate), burst_seconds)
    return paces


class Unlimited:
    """No limit: every call goes at once."""

    def __init__(self) -> None:
        self.rates: Mapping[str, float] = {}

    def acquire(self, operation: str) -> float:
        return 0.0

    def __repr__(self) -> str:
        return "Unlimited()"


class _Bucket:
    """What the buckets share: the configured rates and the unlimited short cut."""

    def __init__(self, rates: Mapping[str, float], burst_seconds: float) -> None:
        self._paces = _paces(rates, burst_seconds)
        self.rates: Mapping[str, float] = {op: float(rate) for op, rate in rates.items()}
        self.burst_seconds = burst_seconds

    def acquire(self, operation: str) -> float:
        pace = self._paces.get(operation)
        if pace is None:
            return 0.0
        started = time.monotonic()
        sleep_for(self._reserve(operation, pace))
        return time.monotonic() - started

    def _reserve(self, operation: str, pace: Pace) -> float:
        """Atomically take the next slot of ``operation``; return the seconds until it."""
        raise NotImplementedError


class LocalTokenBucket(_Bucket):
    """Shared by the threads of one process (``memory://``)."""

    def __init__(self, rates: Mapping[str, float], burst_seconds: float = DEFAULT_BURST_SECONDS) -> None:
        super().__init__(rates, burst_seconds)
        self._lock = threading.Lock()
        self._tats: dict[str, float] = {}

    def _reserve(self, operation: str, pace: Pace) -> float:
        with self._lock:
            wait, self._tats[operation] = reserve(self._tats.get(operation), time.monotonic(), pace)
        return wait

    def __repr__(self) -> str:
        return f"LocalTokenBucket({dict(self.rates)!r}, burst_seconds={self.burst_seconds})"


class FileTokenBucket(_Bucket):
    """Shared by every process on one host: the schedule lives in a small JSON file.

    Each call opens the file anew, so the ``flock`` is per call and per open file description:
    threads exclude each other as processes do, and a child forked by Celery never inherits a
    held lock. The kernel drops the lock of a killed process. An empty, corrupt or half-written
    file reads as "idle" and is rewritten. Times are wall-clock (``time.time``) because the file
    can outlive a reboot, where monotonic clocks restart.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        rates: Mapping[str, float],
        burst_seconds: float = DEFAULT_BURST_SECONDS,
        key_prefix: str = "",
    ) -> None:
        super().__init__(rates, burst_seconds)
        self.path = Path(path)
        self.key_prefix = key_prefix

    def _reserve(self, operation: str, pace: Pace) -> float:
        key = self.key_prefix + operation
        with self._locked() as fd:
            now = time.time()
            tats = {k: t for k, t in _read_state(fd).items() if t > now}  # past TATs mean idle
            wait, tats[key] = reserve(tats.get(key), now, pace)
            _write_state(fd, tats)
        return wait

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: the default file sits in a shared temp dir, don't write through a planted link.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as error:
            raise OSError(
                f"rate limit state file {self.path} is unusable ({error.strerror}); "
                f"set {URL_SETTING} to another file:// path or a redis:// URL"
            ) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __repr__(self) -> str:
        return (
            f"FileTokenBucket({str(self.path)!r}, {dict(self.rates)!r}, burst_seconds={self.burst_seconds})"
        )


def _read_state(fd: int) -> dict[str, float]:
    """The stored TATs; anything unreadable counts as idle (the safe reading is "no backlog")."""
    raw = os.pread(fd, 1 << 16, 0)
    try:
        # raw_decode ignores trailing bytes left by a writer killed before its truncate
        state, _ = json.JSONDecoder().raw_decode(raw.decode())
        tats = state["tat"]
        return {str(k): float(v) for k, v in tats.items() if isinstance(v, int | float)}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def _write_state(fd: int, tats: Mapping[str, float]) -> None:
    """Write then truncate: a writer killed in between leaves a readable prefix, never nothing."""
    data = json.dumps({"v": 1, "tat": dict(tats)}).encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


# KEYS[1]: the operation's TAT in microseconds of Redis server TIME.
# ARGV: interval_us, tolerance_us, max_backlog_us. Returns the microseconds to wait.
# Mirrors reserve(); server TIME makes host clocks irrelevant, and the key expires once the TAT
# has passed (an expired key and a past TAT both mean "idle"), so abandoned state disappears.
_RESERVE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now or tat > now + tonumber(ARGV[3]) then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return math.ceil(wait)
"""


class RedisTokenBucket(_Bucket):
    """Shared by every worker on every host through one Redis (``redis://`` or ``rediss://``).

    One key per operation (``key_prefix + operation``) holding its TAT; each call runs one Lua
    script, atomic on the server. The client connects lazily, and redis-py resets its pool in a
    forked child. If Redis is unreachable, ``acquire`` raises (after redis-py's retries) rather
    than silently exceeding the quota.
    """

    def __init__(
        self,
        url: str,
        rates: Mapping[str, float],
        burst_seconds: float = DEFAULT_BURST_SECONDS,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        super().__init__(rates, burst_seconds)
        import redis

        self.url = url
        self.key_prefix = key_prefix
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
        self._script: Any = self.client.register_script(_RESERVE_LUA)
        # Integer microseconds; the interval rounds up so rounding can never raise the rate.
        self._args = {
            op: (math.ceil(p.interval * 1e6), math.floor(p.tolerance * 1e6)) for op, p in self._paces.items()
        }

    def _reserve(self, operation: str, pace: Pace) -> float:
        interval_us, tolerance_us = self._args[operation]
        wait_us = self._script(
            keys=[self.key_prefix + operation],
            args=[interval_us, tolerance_us, int(_MAX_BACKLOG_SECONDS * 1e6)],
        )
        return int(wait_us) / 1e6

    def __repr__(self) -> str:
        return (
            f"RedisTokenBucket({redact(self.url)!r}, {dict(self.rates)!r}, "
            f"burst_seconds={self.burst_seconds}, key_prefix={self.key_prefix!r})"
        )


# --- settings ---------------------------------------------------------------------------------


def default_tps(region: str | None) -> float:
    """The default TPS quota of Rekognition's image operations in ``region``.

    Per the AWS General Reference page "Amazon Rekognition endpoints and quotas"
    (https://docs.aws.amazon.com/general/latest/gr/rekognition.html): ``DetectLabels``,
    ``DetectModerationLabels``, ``DetectText`` and ``DetectFaces`` get 50 TPS in us-east-1,
    us-west-2 and eu-west-1 and 5 TPS in the other regions. An unknown region (``None``) gets
    the conservative 5. Accounts with a raised quota set ``IMAGELABELS_REKOGNITION_TPS``.
    """
    return 50.0 if (region or "").strip().lower() in HIGH_QUOTA_REGIONS else 5.0


def rates_from_setting(value: str, region: str | None) -> dict[str, float]:
    """Parse ``IMAGELABELS_REKOGNITION_TPS``; an empty result means "no limit".

    * empty: :func:`default_tps` of ``region`` for each of :data:`OPERATIONS`;
    * ``0`` or ``none``: no limit;
    * one number: that rate for each of :data:`OPERATIONS`;
    * ``DetectLabels=40,DetectText=none``: these operations overridden (``0``/``none`` lifts the
      limit of one), the others keep the regional default.
    """
    text = value.strip()
    defaults = dict.fromkeys(OPERATIONS, default_tps(region))
    if not text:
        return defaults
    if "=" not in text:
        rate = _parse_rate(text, value)
        return {} if rate is None else dict.fromkeys(OPERATIONS, rate)
    rates = defaults
    seen: set[str] = set()
    for entry in filter(None, (piece.strip() for piece in text.split(","))):
        operation, sep, number = (part.strip() for part in entry.partition("="))
        if not sep or not _OPERATION_NAME.match(operation):
            raise ValueError(f"{TPS_SETTING}={value!r}: {entry!r} is not OPERATION=NUMBER")
        if operation not in OPERATIONS:
            raise ValueError(
                f"{TPS_SETTING}={value!r}: unknown operation {operation!r} (known: {', '.join(OPERATIONS)})"
            )
        if operation in seen:
            raise ValueError(f"{TPS_SETTING}={value!r}: {operation} is given twice")
        seen.add(operation)
        rate = _parse_rate(number, value)
        if rate is None:
            rates.pop(operation)
        else:
            rates[operation] = rate
    return rates


def _parse_rate(text: str, whole: str) -> float | None:
    """One rate: a finite number > 0, or ``0``/``none`` for "no limit" (None)."""
    if text.lower() == "none":
        return None
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(
            f"{TPS_SETTING}={whole!r}: {text!r} is not a rate (a number >= 0, or 'none'; 0/none mean no limit)"
        )
    return None if rate == 0 else rate


@dataclass(frozen=True)
class _Config:
    """Everything that identifies a limiter: equal configs share one object per process."""

    kind: str
    location: str
    rates: tuple[tuple[str, float], ...]
    key_prefix: str


def redact(url: str) -> str:
    """``url`` without its password, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def default_state_path(region: str | None) -> Path:
    """The default per-host state file: one per region, in the system temp dir."""
    name = re.sub(r"[^a-z0-9-]", "_", (region or "no-region").strip().lower()) or "no-region"
    return Path(tempfile.gettempdir()) / f"imagelabels-ratelimit-{name}.json"


def _config(region: str | None, environ: Mapping[str, str]) -> _Config | None:
    """Resolve both settings into a config; ``None`` means unlimited."""
    rates = rates_from_setting(environ.get(TPS_SETTING, ""), region)
    if not rates:
        return None
    scope = (region or "no-region").strip().lower() or "no-region"
    rate_items = tuple(sorted(rates.items()))
    url = environ.get(URL_SETTING, "").strip()
    if not url:
        return _Config("file", str(default_state_path(region)), rate_items, f"{scope}:")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return _Config("memory", scope, rate_items, "")
    if scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/") or path.endswith("/"):
            raise ValueError(
                f"{URL_SETTING}={redact(url)!r}: a file URL needs an absolute file path, e.g. "
                "file:///var/run/imagelabels/ratelimit.json"
            )
        return _Config("file", path, rate_items, f"{scope}:")
    if scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError(
                f"{URL_SETTING}={redact(url)!r}: a Redis URL needs a host, e.g. redis://redis:6379/0"
            )
        return _Config("redis", url, rate_items, f"{DEFAULT_KEY_PREFIX}{scope}:")
    raise ValueError(
        f"{URL_SETTING}={redact(url)!r}: unsupported scheme {parts.scheme!r} "
        "(use memory://, file:///abs/path, redis://host:port/db or rediss://...)"
    )


def _build(config: _Config) -> RateLimiter:
    rates = dict(config.rates)
    if config.kind == "memory":
        return LocalTokenBucket(rates)
    if config.kind == "file":
        return FileTokenBucket(config.location, rates, key_prefix=config.key_prefix)
    return RedisTokenBucket(config.location, rates, key_prefix=config.key_prefix)


_LIMITERS: dict[_Config, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_from_settings(region: str | None, environ: Mapping[str, str] | None = None) -> RateLimiter:
    """The limiter for Rekognition calls in ``region``, from ``IMAGELABELS_*`` settings.

    ``IMAGELABELS_REKOGNITION_TPS`` sets the rates (:func:`rates_from_setting`);
    ``IMAGELABELS_RATE_LIMIT_URL`` where they are shared: ``memory://`` (this process),
    ``file:///abs/path`` (this host), ``redis://host:port/db`` or ``rediss://`` (every host);
    empty means a per-region file in the system temp dir, shared by the task processes of one
    host only - multi-host deployments must set a Redis URL (the Celery broker's Redis works).
    The state is scoped by region, since quotas are. One object per process and configuration,
    so every batch in a worker shares it. Raises ValueError naming the setting on bad values.
    """
    config = _config(region, environment() if environ is None else environ)
    if config is None:
        return Unlimited()
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(config)
        if limiter is None:
            limiter = _LIMITERS[config] = _build(config)
        return limiter


def clear_limiter_cache() -> None:
    """Forget the per-process limiters (tests; a deployment never needs it)."""
    with _LIMITERS_LOCK:
        _LIMITERS.clear()
