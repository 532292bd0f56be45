"""Counters of what the stand-in answered, for benchmarks (``GET /_stats``).

Timestamps are wall-clock (``time.time()``) so that a benchmark client in another process can
compare them with its own: the served span of an operation divided into its served count is the
throughput the service actually delivered.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from imagelabels.devstack.standin.config import OPERATIONS

OUTCOMES = ("served", "throttled", "injected_errors", "other_errors")


@dataclass
class OperationStats:
    """What happened to the requests of one operation."""

    requests: int = 0
    served: int = 0
    throttled: int = 0
    injected_errors: int = 0
    other_errors: int = 0
    first_served_at: float | None = None
    last_served_at: float | None = None


class Stats:
    """Thread-safe counters; every method holds the lock only to update a few numbers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._ops = {op: OperationStats() for op in OPERATIONS}
        self._unknown_operations = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._since = time.time()

    def reset(self) -> None:
        with self._lock:
            self._reset_locked()

    def arrived(self, operation: str) -> None:
        """A request for a known operation arrived (and is now in flight until :meth:`finished`)."""
        with self._lock:
            self._ops[operation].requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def finished(self, operation: str, outcome: str) -> None:
        """The request left with ``outcome`` (one of :data:`OUTCOMES`)."""
        now = time.time()
        with self._lock:
            stats = self._ops[operation]
            setattr(stats, outcome, getattr(stats, outcome) + 1)
            self._in_flight -= 1
            if outcome == "served":
                if stats.first_served_at is None:
                    stats.first_served_at = now
                stats.last_served_at = now

    def unknown_operation(self) -> None:
        with self._lock:
            self._unknown_operations += 1

    def snapshot(self) -> dict[str, Any]:
        """Counts per operation, their totals, and the first/last served timestamps overall."""
        with self._lock:
            operations = {op: asdict(stats) for op, stats in self._ops.items()}
            extra = {
                "unknown_operations": self._unknown_operations,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "since": self._since,
            }
        totals: dict[str, Any] = {
            name: sum(op[name] for op in operations.values()) for name in ("requests", *OUTCOMES)
        }
        firsts = [op["first_served_at"] for op in operations.values() if op["first_served_at"] is not None]
        lasts = [op["last_served_at"] for op in operations.values() if op["last_served_at"] is not None]
        totals["first_served_at"] = min(firsts) if firsts else None
        totals["last_served_at"] = max(lasts) if lasts else None
        return {"operations": operations, "totals": totals, **extra}
