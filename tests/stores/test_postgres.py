"""What only the PostgreSQL store promises: migrations that two processes may run at once,
retries of lost serialization races, Unavailable when the server is gone, coarse coverings that
still find everything, and event ids that grow per party in commit order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deconfliction.core.errors import Unavailable
from deconfliction.core.model import Operation, OperationState
from deconfliction.geo import Circle, Polygon, Volume
from deconfliction.stores.codec import decode_volumes, encode_volumes
from tests.pg import Schemas

T = 1_800_000_000.0


def circle(lat: float, lon: float, radius_m: float, start: float = T, hours: float = 1.0) -> Volume:
    return Volume.create(Circle.create(lat, lon, radius_m), 0.0, 120.0, start, start + hours * 3600)


def operation(op_id: str, *volumes: Volume, owner: str = "alpha") -> Operation:
    return Operation(op_id, owner, OperationState.ACCEPTED, 0, volumes, "v1", 1, T, T)


@pytest.fixture
def url(pg_schemas: Schemas) -> str:
    return pg_schemas.new()


@pytest.fixture
def pg(url: str) -> Iterator[object]:
    from deconfliction.stores.postgres import PostgresStore

    store = PostgresStore(url, pool_size=4)
    yield store
    store.close()


def candidates(store, volume: Volume, exclude: str | None = None) -> set[str]:
    found = store.transact(
        lambda tx: tx.operation_candidates([volume], exclude_owner=exclude), write=False
    )
    return {op.id for op in found}


# The probes (no server needed) -----------------------------------------------------------------


def reference_probes(volume: Volume, budget: int) -> tuple[dict[int, int], list[tuple[int, int]]]:
    """The probes computed with S2's own cell methods (``parent``, ``range_min``,
    ``range_max``): ``({signed id: level}, merged ranges)``."""
    from deconfliction.stores.postgres import FINE_LEVEL, LEVELS, _signed, cover

    level, cells = cover(volume.footprint, budget)
    exact: dict[int, int] = {}
    ranges: list[tuple[int, int]] = []
    for cell in cells:
        if level == FINE_LEVEL:
            exact[_signed(cell.id())] = FINE_LEVEL
        else:
            ranges.append((_signed(cell.range_min().id()), _signed(cell.range_max().id())))
        for lv in LEVELS:
            if lv < level:
                exact[_signed(cell.parent(lv).id())] = lv
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and lo == merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return exact, merged


@settings(max_examples=300, deadline=None)
@given(
    lat=st.floats(-90.0, 90.0),
    lon=st.floats(-180.0, 180.0),
    radius_m=st.one_of(st.floats(1.0, 50_000.0), st.floats(50_000.0, 4_000_000.0)),
    budget=st.sampled_from([4, 16, 64]),
)
def test_the_probes_are_the_cells_ancestors_and_ranges_s2_gives(
    lat: float, lon: float, radius_m: float, budget: int
) -> None:
    """The store finds each cell's ancestors and descendants with bit arithmetic on its id;
    they are exactly what S2's own cell methods give: every exact id once, with its level, and
    the same merged ranges in signed order."""
    from deconfliction.stores.postgres import query_probes

    volume = circle(lat, lon, radius_m)
    assert query_probes(volume, budget) == reference_probes(volume, budget)


def test_probe_parameters_hold_one_row_per_cell_and_duration_class() -> None:
    from deconfliction.stores.postgres import _OPS, SPAN_SLACK_S, SPANS, query_probes

    volume = circle(46.0, 7.0, 10_000.0)
    params, with_ranges = _OPS.probe_params([volume, volume], 64)
    exact, _ = query_probes(volume, 64)
    rows = 2 * len(exact) * len(SPANS)
    assert not with_ranges and set(params) == {
        "e_cell", "e_level", "e_span", "e_from", "e_to", "e_start", "e_lo", "e_hi"
    }  # fmt: skip
    header = 20  # dimensions, flags, element type, length, lower bound
    for name, width in (("e_cell", 8), ("e_level", 2), ("e_span", 2), ("e_from", 8)):
        assert len(params[name]) == header + rows * (4 + width), name
    first_from = np.frombuffer(bytes(params["e_from"])[header:], ">i4, >f8")["f1"][: len(SPANS)]
    assert first_from.tolist() == [volume.start - limit - SPAN_SLACK_S for limit in SPANS]


# The codec (no server needed) ------------------------------------------------------------------


def test_the_volume_codec_round_trips_every_bit() -> None:
    ring = [(10.0, 179.9), (10.0, -179.9), (10.1, -179.9), (10.1, 179.9)]
    volumes = (
        Volume.create(Circle.create(1.1, 2.2, 333.3), -10.5, 99.1, T + 0.1, T + 7.3),
        Volume.create(Polygon.create(ring), 0.3, 1e4, T, T + 86_400.0),
    )
    back = decode_volumes(encode_volumes(volumes))
    assert len(back) == 2
    for a, b in zip(back, volumes, strict=True):
        assert a.footprint.to_bytes() == b.footprint.to_bytes()
        assert (a.altitude_lower_m, a.altitude_upper_m, a.start, a.end) == (
            b.altitude_lower_m,
            b.altitude_upper_m,
            b.start,
            b.end,
        )
    assert decode_volumes(encode_volumes(())) == ()
    with pytest.raises(ValueError):
        decode_volumes(encode_volumes(volumes) + b"x")


# Migrations ------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_two_processes_migrating_at_once_both_succeed_and_apply_each_version_once(
    url: str,
) -> None:
    import psycopg

    from deconfliction.stores.postgres import LATEST, migrate

    barrier = threading.Barrier(4)
    results: list[object] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(url))
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert results == [LATEST] * 4
    with psycopg.connect(url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert sorted(versions) == list(range(1, LATEST + 1))
    assert migrate(url) == LATEST  # and once more is a no-op


@pytest.mark.postgres
def test_the_cli_upgrades_a_database_and_prints_its_version(url: str) -> None:
    from typer.testing import CliRunner

    from deconfliction.cli import app
    from deconfliction.stores.postgres import LATEST

    # The CLI takes URLs; pass the schema through libpq's environment instead.
    options = url.split("options=")[1].strip("'")
    result = CliRunner().invoke(
        app,
        ["db", "upgrade", "--db", "postgresql://postgres@127.0.0.1:5432/test"],
        env={"PGOPTIONS": options},
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"schema version {LATEST}"


# Serializable transactions ---------------------------------------------------------------------


def _racing_filers(store, attempts: list[str], seen: dict[str, set[str]]) -> list[object]:
    """Two transactions that both read the same cells, then both insert there."""
    both_read = threading.Barrier(2, timeout=10)
    volume = circle(45.0, 7.0, 2_000.0)
    results: list[object] = []

    def file(op_id: str) -> None:
        def write(tx) -> None:
            attempts.append(op_id)
            seen[op_id] = {o.id for o in tx.operation_candidates([volume])}
            if attempts.count(op_id) == 1:
                both_read.wait()  # first attempt only: both have read before either writes
            tx.put_operation(operation(op_id, volume, owner=op_id))

        try:
            results.append(store.transact(write))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=file, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture
def pg_unqueued(url: str) -> Iterator[object]:
    """Writers not queued on the table lock: SERIALIZABLE alone orders them (CockroachDB)."""
    from deconfliction.stores.postgres import PostgresStore

    store = PostgresStore(url, pool_size=4, queue_writers=False)
    yield store
    store.close()


@pytest.mark.postgres
def test_queued_writers_each_see_the_one_before_without_a_retry(url: str) -> None:
    from deconfliction.stores.postgres import PostgresStore

    store = PostgresStore(url, pool_size=4)
    attempts: list[str] = []
    seen: dict[str, set[str]] = {}
    volume = circle(45.0, 7.0, 2_000.0)
    both_in = threading.Barrier(2, timeout=10)
    results: list[object] = []

    def file(op_id: str) -> None:
        def write(tx) -> None:
            attempts.append(op_id)
            seen[op_id] = {o.id for o in tx.operation_candidates([volume])}
            tx.put_operation(operation(op_id, volume, owner=op_id))

        both_in.wait()
        try:
            results.append(store.transact(write))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=file, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert results == [None, None]
    assert sorted(attempts) == ["a", "b"]  # no retries: the second waited, then saw the first
    assert sorted(seen.values(), key=len) == [set(), {"a"} if seen["b"] else {"b"}]


@pytest.mark.postgres
def test_conflicting_writers_are_serialized_by_retrying_the_loser(pg_unqueued) -> None:
    pg = pg_unqueued
    attempts: list[str] = []
    seen: dict[str, set[str]] = {}

    assert _racing_filers(pg, attempts, seen) == [None, None]

    # One of them lost the race and ran again; on its final run it saw the winner's operation,
    # exactly as if the two had run one after the other.
    assert len(attempts) >= 3
    assert sorted(seen.values(), key=len) == [set(), {"a"} if seen["b"] else {"b"}]
    assert candidates(pg, circle(45.0, 7.0, 10.0)) == {"a", "b"}


@pytest.mark.postgres
def test_retries_used_up_are_reported_unavailable(url: str) -> None:
    from deconfliction.stores.postgres import PostgresStore

    store = PostgresStore(url, pool_size=2, max_attempts=1, queue_writers=False)
    try:
        results = _racing_filers(store, [], {})
    finally:
        store.close()
    assert sum(isinstance(r, Unavailable) for r in results) == 1
    assert results.count(None) == 1


@pytest.mark.postgres
def test_an_unreachable_server_is_unavailable_not_an_internal_error() -> None:
    from deconfliction.stores.postgres import PostgresStore

    began = time.monotonic()
    with pytest.raises(Unavailable):
        PostgresStore("postgresql://postgres@127.0.0.1:1/test", timeout_s=2.0)
    store = PostgresStore(
        "postgresql://postgres@127.0.0.1:1/test", timeout_s=2.0, apply_migrations=False
    )
    try:
        with pytest.raises(Unavailable):
            store.transact(lambda tx: tx.list_parties(), write=False)
    finally:
        store.close()
    assert time.monotonic() - began < 10.0


@pytest.mark.postgres
def test_an_error_inside_the_transaction_is_not_retried(pg) -> None:
    calls = []

    def boom(tx) -> None:
        calls.append(1)
        tx.put_operation(operation("op", circle(0.0, 0.0, 100.0)))
        raise KeyError("boom")

    with pytest.raises(KeyError):
        pg.transact(boom)
    assert calls == [1]
    assert pg.transact(lambda tx: tx.get_operation("op"), write=False) is None


# Coverings -------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_huge_footprints_use_coarse_cells_and_are_still_found_both_ways(pg) -> None:
    import psycopg

    from deconfliction.stores.postgres import FINE_LEVEL, MAX_CELLS, QUERY_MAX_CELLS, cover

    huge = circle(50.0, 10.0, 3_000_000.0)  # 3,000 km
    level, cells = cover(huge.footprint)
    assert level < FINE_LEVEL and len(cells) <= MAX_CELLS

    pg.transact(
        lambda tx: [
            tx.put_operation(operation("huge", huge)),
            tx.put_operation(operation("small", circle(50.0, 10.0, 500.0), owner="bravo")),
            tx.put_operation(operation("far", circle(-30.0, 140.0, 500.0), owner="bravo")),
        ]
    )
    with psycopg.connect(pg.conninfo) as conn:
        rows = conn.execute("SELECT count(*) FROM operation_cells WHERE op_id = 'huge'").fetchone()
    assert rows is not None and rows[0] == len(cells)

    # A small query deep inside, and one near the edge, find the huge operation by its ancestors.
    assert candidates(pg, circle(50.0, 10.0, 100.0)) == {"huge", "small"}
    assert candidates(pg, circle(50.0, 10.0 + 38.0, 1_000.0)) == {"huge"}
    # A huge query finds the small operation inside it by range, and not the one far away.
    assert candidates(pg, circle(48.0, 12.0, 2_000_000.0)) == {"huge", "small"}
    assert candidates(pg, circle(50.0, 10.0, 3_000_000.0), exclude="alpha") == {"small"}
    # A query as large as footprints go (a 40-degree cap) is looked up at the coarsest level: it
    # has no ancestors to look up, only ranges.
    assert cover(circle(20.0, 10.0, 4_400_000.0).footprint, QUERY_MAX_CELLS)[0] == 2
    assert candidates(pg, circle(20.0, 10.0, 4_400_000.0)) == {"huge", "small"}
    # Time still narrows coarse candidates.
    assert candidates(pg, circle(50.0, 10.0, 100.0, start=T + 7_200.0)) == set()


@pytest.mark.postgres
def test_volumes_of_every_duration_class_are_found_from_late_in_their_window(pg) -> None:
    from deconfliction.stores.postgres import SPANS

    durations = [1.0, 3_600.0, 5 * 3_600.0, 20 * 3_600.0, 6 * 86_400.0, 59 * 86_400.0, 90 * 86_400]
    assert max(durations) > SPANS[-2]
    ops = [
        operation(f"op-{i}", circle(0.0, 0.0, 500.0, hours=d / 3_600.0), owner=f"p{i}")
        for i, d in enumerate(durations)
    ]
    pg.transact(lambda tx: [tx.put_operation(op) for op in ops])

    for i, d in enumerate(durations):
        late = circle(0.0, 0.0, 100.0, start=T + d - 0.5, hours=1.0)
        found = candidates(pg, late)
        assert f"op-{i}" in found
        assert all(durations[int(name[3:])] >= d - 0.5 for name in found)


# Events ----------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_event_ids_grow_per_party_in_commit_order(pg) -> None:
    holding = threading.Event()
    release = threading.Event()
    results: dict[str, int] = {}
    order: list[str] = []

    def first(tx) -> int:
        event_id = tx.add_event("alpha", "operation", T, {"n": 1})
        holding.set()
        release.wait(10)
        return event_id

    def second(tx) -> int:
        return tx.add_event("alpha", "operation", T, {"n": 2})

    def run(name: str, fn) -> None:
        results[name] = pg.transact(fn)
        order.append(name)

    slow = threading.Thread(target=run, args=("first", first))
    slow.start()
    assert holding.wait(10)
    # "first" holds id 1, uncommitted. A reader now sees nothing; "second" must not slip in
    # below it: it waits on the party's counter row (and retries) until "first" commits.
    assert pg.transact(lambda tx: tx.events_after("alpha", 0, 10), write=False) == []
    fast = threading.Thread(target=run, args=("second", second))
    fast.start()
    time.sleep(0.3)
    assert order == []
    release.set()
    slow.join()
    fast.join()

    assert sorted(order) == ["first", "second"]
    assert results["second"] > results["first"]
    seen = pg.transact(lambda tx: tx.events_after("alpha", 0, 10), write=False)
    assert [e.payload["n"] for e in seen] == [1, 2]


@pytest.mark.postgres
def test_concurrent_events_get_distinct_increasing_ids_and_none_are_lost(pg) -> None:
    def add(n: int) -> None:
        pg.transact(lambda tx: tx.add_event("alpha", "k", T, {"n": n}))

    threads = [threading.Thread(target=add, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    events = pg.transact(lambda tx: tx.events_after("alpha", 0, 100), write=False)
    assert sorted(e.payload["n"] for e in events) == list(range(12))
    ids = [e.id for e in events]
    assert ids == sorted(set(ids))
    # Another party's feed has its own ids, and a transaction's ids increase across parties.
    pair = pg.transact(
        lambda tx: [tx.add_event("bravo", "k", T, {}), tx.add_event("alpha", "k", T, {})]
    )
    assert pair[0] < pair[1] and pair[1] > ids[-1]


@pytest.mark.postgres
def test_events_added_together_by_concurrent_writers_keep_their_order_and_ids(pg) -> None:
    from deconfliction.core.model import NewEvent

    def add(n: int) -> None:
        batch = [NewEvent(p, "k", T, {"n": n, "i": i}) for i in range(3) for p in ("a", "b")]
        pg.transact(lambda tx: tx.add_events(batch))

    threads = [threading.Thread(target=add, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for party in ("a", "b"):
        feed = pg.transact(lambda tx, p=party: tx.events_after(p, 0, 100), write=False)
        assert sorted((e.payload["n"], e.payload["i"]) for e in feed) == [
            (n, i) for n in range(10) for i in range(3)
        ]
        ids = [e.id for e in feed]
        assert ids == sorted(set(ids))
        # One transaction's events for a party come together, in the order they were given.
        by_tx: dict[int, list[int]] = {}
        for position, e in enumerate(feed):
            by_tx.setdefault(e.payload["n"], []).append(position)
        for n, positions in by_tx.items():
            assert positions == list(range(positions[0], positions[0] + 3)), n
            assert [feed[k].payload["i"] for k in positions] == [0, 1, 2]


@pytest.mark.postgres
def test_text_postgresql_cannot_hold_is_refused_as_bad_input(pg) -> None:
    from deconfliction.core.errors import InvalidInput
    from deconfliction.core.model import Party

    with pytest.raises(InvalidInput):
        pg.transact(lambda tx: tx.get_operation("nul\x00here"), write=False)
    with pytest.raises(InvalidInput):
        pg.transact(lambda tx: tx.add_party(Party("p\x00", "name", 0.0)))
