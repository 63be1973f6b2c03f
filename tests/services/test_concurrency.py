"""Many parties filing into one hot spot at once: the key invariant holds in what was stored.

Each thread is one party with its own view of the airspace. It looks (``conflicts_for``), files
with the versions it saw as its key, and retries when someone got in between. Some first attempts
present a deliberately stale key. Afterwards only stored data is consulted: for every two live
operations of different parties that conflict, the later write must have presented the earlier
one's version.
"""

from __future__ import annotations

import math
import random
import threading
from collections import Counter
from pathlib import Path

import pytest

from deconfliction.core import rules
from deconfliction.core.errors import MissingKey, Unavailable, VersionMismatch
from deconfliction.core.model import Operation
from deconfliction.geo import Circle, Volume
from deconfliction.services.strategic import Filing, Strategic
from deconfliction.stores.base import Store
from deconfliction.stores.sqlite import SqliteStore
from tests.pg import pg_schemas, postgres_url  # noqa: F401  (fixtures)

NOW = 1_800_000_000.0
LAT, LON = 46.0, 7.0
THREADS = 12
OPERATIONS_PER_THREAD = 5
UPDATES_PER_THREAD = 2
MAX_ATTEMPTS = 50


def hot_spot_volume(rng: random.Random) -> Volume:
    """A 1-1.5 km circle within 1.5 km of one point, in one of three overlapping hours."""
    bearing, distance = rng.uniform(0, 2 * math.pi), rng.uniform(0, 1_500.0)
    lat = LAT + distance * math.cos(bearing) / 111_195.0
    lon = LON + distance * math.sin(bearing) / (111_195.0 * math.cos(math.radians(LAT)))
    start = NOW + rng.choice([600.0, 1_800.0, 3_000.0])
    lower = rng.choice([0.0, 60.0])
    return Volume.create(
        Circle.create(lat, lon, rng.uniform(1_000.0, 1_500.0)),
        lower,
        lower + 120.0,
        start,
        start + 3_600.0,
    )


class Party:
    """One thread's party: files and updates operations, keeping what the service answered."""

    def __init__(self, svc: Strategic, party_id: str, seed: int) -> None:
        self.svc = svc
        self.id = party_id
        self.rng = random.Random(seed)
        self.succeeded: list[tuple[str, str]] = []  # (operation id, version) of every write
        self.current: dict[str, Operation] = {}
        self.refusals: Counter[str] = Counter()

    def key_for(self, volumes: list[Volume], first_attempt: bool) -> list[str]:
        key = [f.operation.version for f in self.svc.conflicts_for(self.id, volumes)]
        if first_attempt and key and self.rng.random() < 0.3:
            key[self.rng.randrange(len(key))] = "stale-" + key[0]  # deliberately out of date
        return key

    def write(self, volumes: list[Volume], op: Operation | None) -> None:
        for attempt in range(MAX_ATTEMPTS):
            filing = Filing(volumes, key=self.key_for(volumes, attempt == 0))
            try:
                if op is None:
                    filed = self.svc.file_operation(self.id, filing)
                else:
                    filed = self.svc.update_operation(self.id, op.id, op.version, filing)
            except (MissingKey, VersionMismatch, Unavailable) as exc:
                self.refusals[exc.code] += 1
                continue
            self.succeeded.append((filed.operation.id, filed.operation.version))
            self.current[filed.operation.id] = filed.operation
            return
        raise AssertionError(f"party {self.id} gave up after {MAX_ATTEMPTS} attempts")

    def run(self) -> None:
        for _ in range(OPERATIONS_PER_THREAD):
            self.write([hot_spot_volume(self.rng) for _ in range(self.rng.randint(1, 2))], None)
        for _ in range(UPDATES_PER_THREAD):
            op = self.current[self.rng.choice(sorted(self.current))]
            self.write([hot_spot_volume(self.rng)], op)


def hot_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "postgres":
        from deconfliction.stores.postgres import PostgresStore

        return PostgresStore(request.getfixturevalue("pg_schemas").new(), pool_size=THREADS)
    return SqliteStore(tmp_path / "hot.db", synchronous="OFF", group_commit=kind == "sqlite")


@pytest.mark.parametrize(
    "kind",
    ["sqlite", "sqlite-one-by-one", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def test_concurrent_filings_into_one_hot_spot_keep_the_key_invariant(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """SQLite with group commit (writes share transactions) and without; PostgreSQL with its
    writers queued on the table lock."""
    store = hot_store(kind, tmp_path, request)
    try:
        svc = Strategic(store, clock=lambda: NOW)
        parties = [Party(svc, svc.add_party(f"Party {i}").id, seed=i) for i in range(THREADS)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(THREADS)

        def run(party: Party) -> None:
            try:
                barrier.wait()
                party.run()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(p,)) for p in parties]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a thread hung"
        assert errors == []

        records = store.transact(lambda tx: tx.write_records(), write=False)
        stored = store.transact(
            lambda tx: [op for p in parties for op in tx.list_operations(p.id)], write=False
        )
    finally:
        store.close()

    # Nothing any thread saw succeed is missing, and each operation is as its owner last left it.
    written = {(r.operation_id, r.version): seq for seq, r in enumerate(records)}
    for party in parties:
        assert all(write in written for write in party.succeeded)
    assert len(records) == sum(len(p.succeeded) for p in parties)
    assert {(op.id, op.version) for op in stored} == {
        (op.id, op.version) for p in parties for op in p.current.values()
    }

    # The hot spot was hot, and racing and stale keys were refused on the way.
    pairs = [
        (x, y)
        for i, x in enumerate(stored)
        for y in stored[i + 1 :]
        if x.owner != y.owner and rules.any_overlap(x.volumes, y.volumes)
    ]
    assert len(pairs) >= len(stored), "too few conflicts to test anything"
    refusals = sum((p.refusals for p in parties), Counter())
    assert refusals["missing_key"] > 0

    # The invariant, from stored data only: the later of two conflicting writes presented the
    # earlier operation's version in its key, and recorded the conflict.
    for x, y in pairs:
        earlier, later = sorted((x, y), key=lambda op: written[(op.id, op.version)])
        record = records[written[(later.id, later.version)]]
        assert earlier.version in record.key, (earlier.id, later.id)
        assert (earlier.id, earlier.version) in record.conflicts
