"""The decode budget: a byte-weighted, first-come-first-served semaphore that never over-admits,
lets an over-budget decode run alone, never deadlocks and never drops a request.

Deterministic: sizes are small made-up numbers, and every wait is on the budget's own state.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from imagelabels.preflight import decode_budget
from imagelabels.preflight.decode_budget import DEFAULT_BUDGET_MB, MB, DecodeBudget, budget_bytes_from_env

JOIN_SECONDS = 30  # a deadlock fails the test instead of hanging it


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + JOIN_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the budget"
        time.sleep(0.001)


class _Holders:
    """Counts what is held inside reservations, independently of the budget's own books."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held = 0
        self.most = 0
        self.alone_violations = 0
        self.finished = 0

    def enter(self, amount: int) -> None:
        with self.lock:
            self.held += amount
            self.most = max(self.most, self.held)

    def leave(self, amount: int) -> None:
        with self.lock:
            self.held -= amount
            self.finished += 1


def test_sixteen_threads_never_hold_more_than_the_capacity() -> None:
    budget = DecodeBudget(100)
    holders = _Holders()
    rng = random.Random(5)
    sizes = [rng.randint(1, 100) for _ in range(200)]

    def decode(size: int) -> None:
        with budget.reserve(size) as held:
            holders.enter(held)
            time.sleep(0.0005)
            holders.leave(held)

    threads = [threading.Thread(target=lambda i=i: [decode(s) for s in sizes[i::16]]) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)

    assert not any(thread.is_alive() for thread in threads), "deadlock"
    assert holders.finished == budget.granted == len(sizes)  # nothing dropped
    assert holders.most <= 100
    assert budget.peak_reserved <= 100
    assert budget.reserved == 0


def test_a_reservation_over_the_whole_budget_waits_for_an_empty_budget_and_runs_alone() -> None:
    budget = DecodeBudget(100)
    order: list[str] = []
    small_held = threading.Event()
    release_small = threading.Event()

    def small() -> None:
        with budget.reserve(30):
            order.append("small in")
            small_held.set()
            release_small.wait(JOIN_SECONDS)
            order.append("small out")

    def huge() -> None:
        with budget.reserve(250) as held:  # more than the capacity: clipped, alone
            order.append(f"huge in {held} with {budget.reserved} reserved")

    first = threading.Thread(target=small)
    first.start()
    small_held.wait(JOIN_SECONDS)
    second = threading.Thread(target=huge)
    second.start()
    _wait_until(lambda: budget.waiting == 1)
    assert order == ["small in"]  # the huge one waits although it asked before anything else ran
    release_small.set()
    first.join(JOIN_SECONDS)
    second.join(JOIN_SECONDS)

    assert order == ["small in", "small out", "huge in 100 with 100 reserved"]
    assert budget.peak_reserved == 100


def test_first_come_first_served_a_waiting_large_request_is_not_overtaken() -> None:
    budget = DecodeBudget(100)
    admitted: list[str] = []
    release_first = threading.Event()
    first_held = threading.Event()

    def hold(name: str, size: int, release: threading.Event | None = None) -> None:
        with budget.reserve(size):
            admitted.append(name)
            if release is not None:
                first_held.set()
                release.wait(JOIN_SECONDS)

    first = threading.Thread(target=hold, args=("first", 60, release_first))
    first.start()
    first_held.wait(JOIN_SECONDS)
    large = threading.Thread(target=hold, args=("large", 60))
    large.start()
    _wait_until(lambda: budget.waiting == 1)
    small = threading.Thread(target=hold, args=("small", 10))
    small.start()
    _wait_until(lambda: budget.waiting == 2)

    assert budget.reserved == 60  # the small one would fit, but the large one came first
    release_first.set()
    for thread in (first, large, small):
        thread.join(JOIN_SECONDS)
    assert admitted == ["first", "large", "small"]


def test_a_nested_reservation_on_the_same_thread_does_not_wait_for_itself() -> None:
    budget = DecodeBudget(100)
    done = threading.Event()

    def nested() -> None:
        with budget.reserve(80), budget.reserve(80) as inner:
            assert inner == 80
            assert budget.reserved == 160  # counted, honestly, though over the capacity
        done.set()

    thread = threading.Thread(target=nested)
    thread.start()
    thread.join(JOIN_SECONDS)
    assert done.is_set(), "a thread waited on its own reservation"
    assert budget.reserved == 0


def test_a_failing_decode_gives_its_reservation_back() -> None:
    budget = DecodeBudget(100)
    with pytest.raises(RuntimeError), budget.reserve(70):
        raise RuntimeError("the decoder raised")
    assert budget.reserved == 0
    with budget.reserve(100) as held:  # the whole budget is free again
        assert held == 100


@pytest.mark.parametrize(
    ("raw", "expected"), [("", DEFAULT_BUDGET_MB * MB), ("300", 300 * MB), (" 64 ", 64 * MB)]
)
def test_the_budget_comes_from_the_environment(raw: str, expected: int) -> None:
    assert budget_bytes_from_env({"IMAGELABELS_DECODE_BUDGET_MB": raw}) == expected


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "lots"])
def test_a_nonsense_budget_is_refused_with_the_setting_named(raw: str) -> None:
    with pytest.raises(ValueError, match="IMAGELABELS_DECODE_BUDGET_MB"):
        budget_bytes_from_env({"IMAGELABELS_DECODE_BUDGET_MB": raw})


def test_the_process_budget_is_built_once_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode_budget, "_process_budget", None)
    monkeypatch.setenv("IMAGELABELS_DECODE_BUDGET_MB", "12")
    first = decode_budget.process_budget()
    monkeypatch.setenv("IMAGELABELS_DECODE_BUDGET_MB", "99")
    assert decode_budget.process_budget() is first
    assert first.capacity == 12 * MB
