"""Per-operation TPS quotas: token buckets checked when a request arrives.

Rekognition enforces a transactions-per-second quota per operation and answers excess requests
at once with a throttling error, without doing the work. The buckets model that: full at start
(one second worth by default), refilled continuously, one token per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from imagelabels.devstack.standin.config import OPERATIONS, StandInConfig


class TokenBucket:
    """A thread-safe token bucket; the lock is held only for the arithmetic, never while waiting."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = capacity
        self._updated = clock()

    def try_take(self) -> bool:
        """Take one token if there is one; ``False`` means the request is over the quota."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    def refill(self) -> None:
        """Back to full (between benchmark runs, so one run's load does not leak into the next)."""
        with self._lock:
            self._tokens = self.capacity
            self._updated = self._clock()


class Quotas:
    """The buckets of the operations that have a quota; the others are unlimited."""

    def __init__(self, config: StandInConfig) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        for op in OPERATIONS:
            tps = config.tps_for(op)
            if tps is not None:
                self._buckets[op] = TokenBucket(tps, config.burst_for(op))

    def admit(self, operation: str) -> bool:
        """Whether a request for ``operation`` arriving now is within its quota."""
        bucket = self._buckets.get(operation)
        return bucket is None or bucket.try_take()

    def refill(self) -> None:
        for bucket in self._buckets.values():
            bucket.refill()
