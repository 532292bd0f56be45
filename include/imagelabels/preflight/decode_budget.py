"""A per-process memory budget for decoding images: how many large decodes run at once.

A batch labels images on a thread pool (16 threads for Rekognition). Each thread's decode is
bounded by preflight's pixel caps, but sixteen bounded decodes at once are not: a red team's
1 MB, 250-megapixel PNG took one decode to 4.2 GB, so a batch of them could ask for ~65 GB and
get the worker killed. Preflight therefore estimates, from the header, what decoding an image
will cost in bytes (:func:`imagelabels.preflight.checks.decode_cost`) and reserves that much here before
decoding; the reservation is released when the decoded pixels are gone.

``IMAGELABELS_DECODE_BUDGET_MB`` (default :data:`DEFAULT_BUDGET_MB`) is the capacity, shared by
every thread of the process (each worker process has its own). Decisions:

* **A reservation larger than the whole budget runs alone** (it waits until nothing else is
  reserved, then takes the whole budget) rather than being rejected: whether an image can be
  labeled must not depend on one worker's tuning, and preflight's caps already bound the largest
  estimate (at the default budget every admissible image fits, so this only matters for a
  budget set lower).
* **First come, first served**: a waiting large reservation is not overtaken by later small
  ones, so it cannot starve.
* **Never deadlocks**: a reservation is only ever waited for by a thread that holds none (a
  nested one, on a thread that already holds one, is granted at once), every holder releases in
  a ``finally``, and a request never exceeds the capacity after clipping, so the head of the
  queue always fits once the budget drains.
* Nothing is dropped here: waiting is all a reservation can do; rejections (too many pixels) are
  preflight's, recorded with their reason like every preflight failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from imagelabels.settings import environment_value

log = logging.getLogger(__name__)

BUDGET_ENV = "IMAGELABELS_DECODE_BUDGET_MB"
# 1 GiB: covers the largest estimate any admissible image can have (preflight's caps), and with
# a worker's ~250 MB of code, models and clients keeps one worker process under 1.5 GB.
DEFAULT_BUDGET_MB = 1024
MB = 1024 * 1024
SLOW_WAIT_SECONDS = 5.0  # waits longer than this are logged at info level


def budget_bytes_from_env(environ: dict[str, str] | None = None) -> int:
    """The capacity in bytes from ``IMAGELABELS_DECODE_BUDGET_MB`` (a positive integer)."""
    raw = environment_value(BUDGET_ENV, environ).strip()
    if not raw:
        return DEFAULT_BUDGET_MB * MB
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{BUDGET_ENV} must be a positive integer (MB), got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{BUDGET_ENV} must be a positive integer (MB), got {raw!r}")
    return value * MB


class DecodeBudget:
    """A semaphore weighted in bytes, first come first served; safe to share between threads.

    :param capacity: bytes that may be reserved at once.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a decode budget needs a positive capacity, got {capacity}")
        self.capacity = capacity
        self._reserved = 0
        self._peak = 0
        self._granted = 0
        self._queue: deque[int] = deque()  # tickets of waiting reservations, oldest first
        self._tickets = 0
        self._condition = threading.Condition()
        self._local = threading.local()

    @property
    def reserved(self) -> int:
        """Bytes reserved right now."""
        with self._condition:
            return self._reserved

    @property
    def peak_reserved(self) -> int:
        """The most bytes ever reserved at once (benchmarks and tests)."""
        with self._condition:
            return self._peak

    @property
    def waiting(self) -> int:
        """Reservations waiting right now (tests wait on it instead of sleeping)."""
        with self._condition:
            return len(self._queue)

    @property
    def granted(self) -> int:
        """How many reservations were granted so far."""
        with self._condition:
            return self._granted

    def _charge(self, amount: int) -> None:
        self._reserved += amount
        self._peak = max(self._peak, self._reserved)
        self._granted += 1

    @contextmanager
    def reserve(self, nbytes: int, what: str = "an image") -> Iterator[int]:
        """Hold ``nbytes`` of the budget for the ``with`` block; wait until they fit.

        A request over the capacity is clipped to it (it runs alone). Yields the bytes actually
        held. ``what`` names the image in the log line of a slow wait.
        """
        amount = max(0, min(int(nbytes), self.capacity))
        if getattr(self._local, "depth", 0) > 0:  # nested: waiting here could wait on ourselves
            with self._condition:
                self._charge(amount)
            try:
                self._local.depth += 1
                yield amount
            finally:
                self._local.depth -= 1
                self._release(amount)
            return
        self._acquire(amount, what, nbytes)
        self._local.depth = 1
        try:
            yield amount
        finally:
            self._local.depth = 0
            self._release(amount)

    def _acquire(self, amount: int, what: str, asked: int) -> None:
        started = time.monotonic()
        with self._condition:
            self._tickets += 1
            ticket = self._tickets
            self._queue.append(ticket)
            try:
                while self._queue[0] != ticket or self._reserved + amount > self.capacity:
                    self._condition.wait()
            finally:
                self._queue.remove(ticket)
                self._condition.notify_all()  # the next in line may fit too
            self._charge(amount)
        waited = time.monotonic() - started
        if asked > self.capacity:
            log.warning(
                "decoding %s needs about %d MB, more than the whole decode budget (%d MB): it ran alone",
                what,
                asked // MB,
                self.capacity // MB,
            )
        if waited > SLOW_WAIT_SECONDS:
            log.info("waited %.1f s for %d MB of the decode budget to decode %s", waited, amount // MB, what)

    def _release(self, amount: int) -> None:
        with self._condition:
            self._reserved -= amount
            self._condition.notify_all()


_process_budget: DecodeBudget | None = None
_process_lock = threading.Lock()


def process_budget() -> DecodeBudget:
    """This process's budget, sized from ``IMAGELABELS_DECODE_BUDGET_MB`` on first use."""
    global _process_budget
    budget = _process_budget
    if budget is None:
        with _process_lock:
            if _process_budget is None:
                _process_budget = DecodeBudget(budget_bytes_from_env())
            budget = _process_budget
    return budget
