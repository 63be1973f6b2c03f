"""Shared fixtures: a store factory every store-backed test runs against, and a settable clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deconfliction.core.hotline import HotlinePolicy
from deconfliction.services.strategic import Strategic
from deconfliction.stores.base import Store
from deconfliction.stores.sqlite import SqliteStore


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` (another thread's progress) until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


T0 = 1_800_000_000.0
"""'Now' for service tests (2027-01-15T08:00:00Z): a fixed instant, so tests never race the clock."""

StoreFactory = Callable[[], Store]


def _sqlite(directory: Path) -> Callable[[], Store]:
    count = 0

    def make() -> Store:
        nonlocal count
        count += 1
        # Durability is not under test here; skipping fsync keeps the suite fast.
        return SqliteStore(directory / f"store-{count}.db", synchronous="OFF")

    return make


_BACKENDS = {"sqlite": _sqlite}
"""Store kinds every store-backed test runs against. The contract tests under tests/stores/ add
PostgreSQL (their conftest overrides ``store_factory``)."""


def closing_factory(make: Callable[[], Store]) -> Iterator[StoreFactory]:
    """A fixture body: a factory of stores made by ``make``, each closed when the test ends."""
    made: list[Store] = []

    def factory() -> Store:
        store = make()
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


@pytest.fixture(params=["sqlite"], ids=["sqlite"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes fresh, empty stores of one kind; each is closed when the test ends."""
    yield from closing_factory(_BACKENDS[request.param](tmp_path))


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory()


class Clock:
    """A clock the test moves by hand: ``clock()`` is what the service sees as now."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


NO_LEAD_TIME = HotlinePolicy(default_lead_time_s=0.0)
"""Notice lead time off: event tests count subscription and conflict events only; late notices
have tests of their own (tests/services/test_notices.py)."""


@pytest.fixture
def strategic(store: Store, clock: Clock) -> Strategic:
    return Strategic(store, clock=clock, hotline_policy=NO_LEAD_TIME)
