"""How few round trips a PostgreSQL transaction takes, and that sending late loses nothing:
a failed statement raises its own error (retried, refused or reported as before), a connection
that died while idle is replaced, and the array parameters reach the server bit for bit."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from deconfliction.core.model import Party
from deconfliction.geo import Circle, Volume
from tests.pg import Schemas

pytestmark = pytest.mark.postgres

T = 1_800_000_000.0


@pytest.fixture
def url(pg_schemas: Schemas) -> str:
    return pg_schemas.new()


@pytest.fixture
def pg(url: str) -> Iterator[object]:
    from deconfliction.stores.postgres import PostgresStore

    store = PostgresStore(url, pool_size=1)
    yield store
    store.close()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per round trip a transaction takes: how many statements went in it."""
    from deconfliction.stores import postgres

    sent: list[int] = []
    send = postgres.PostgresTx._send

    def counting(self, *reads):
        statements = len(self._queued) + len(reads)
        cursors = send(self, *reads)  # a send refused before it went (see alone) is no trip
        if statements:
            sent.append(statements)
        return cursors

    monkeypatch.setattr(postgres.PostgresTx, "_send", counting)
    return sent


def volume(lat: float, lon: float) -> list[Volume]:
    start = T + 3600
    return [Volume.create(Circle.create(lat, lon, 300.0), 0.0, 60.0, start, start + 600)]


def test_a_filing_takes_two_round_trips(pg, round_trips: list[int]) -> None:
    from deconfliction.services.strategic import Filing, Strategic

    svc = Strategic(pg, clock=lambda: T)
    party = svc.add_party("alpha").id
    svc.subscribe(party, volume(45.0, 7.0))
    round_trips.clear()
    svc.file_operation(party, Filing(volume(45.0, 7.0), key=[]))
    # BEGIN, the lock, the search, its reads ahead; the operation, its index rows with the
    # audit entry, COMMIT.
    assert round_trips == [4, 3]
    round_trips.clear()
    svc.file_operation(party, Filing(volume(10.0, 10.0), key=[]))
    assert round_trips == [4, 3]
    round_trips.clear()
    assert svc.conflicts_for(party, volume(45.0, 7.0)) == []
    assert round_trips == [1]  # a read of one statement goes alone: no BEGIN, no COMMIT


def test_a_filing_in_a_crowd_takes_two_round_trips_and_one_more_for_subscriptions(
    pg, round_trips: list[int]
) -> None:
    """Conflicts with three parties, one of them Down, under a lead-time agreement: its events,
    notices and the warning about the silent party go in the second round trip, and the
    agreements and who is silent come with the first (read ahead)."""
    from deconfliction.core.model import Liveness, OperationState
    from deconfliction.services.strategic import Filing, Strategic

    svc = Strategic(pg, clock=lambda: T)
    me, *others = (svc.add_party(name).id for name in ("alpha", "bravo", "charlie", "delta"))
    theirs: list = []
    for party in others:
        key = [op.version for op in theirs]
        theirs.append(svc.file_operation(party, Filing(volume(45.0, 7.0), key=key)).operation)
    pg.transact(
        lambda tx: (
            tx.put_liveness(Liveness(others[0], T - 900, "Down", T - 600)),
            tx.put_lead_time(me, others[1], 7_200.0),
        )
    )
    seen = pg.transact(lambda tx: tx.latest_event_ids(others), write=False)
    round_trips.clear()
    filed = svc.file_operation(me, Filing(volume(45.0, 7.0), key=[op.version for op in theirs]))
    assert len(round_trips) == 2
    assert len(filed.conflicts) == 3
    assert filed.unreachable == [others[0]]
    assert filed.late_notice_to == [others[1]]
    feeds = pg.transact(
        lambda tx: [tx.events_after(p, seen.get(p, 0), 10) for p in others], write=False
    )
    assert [[e.kind for e in feed] for feed in feeds] == [
        ["conflict"],
        ["conflict", "late_notice"],
        ["conflict"],
    ]

    # Another party's subscriptions over the area take one more round trip, for all of them at
    # once: their new notification indexes come back.
    for _ in range(3):
        svc.subscribe(others[2], volume(45.0, 7.0))
    key = [*(op.version for op in theirs), filed.operation.version]
    seen = pg.transact(lambda tx: tx.latest_event_ids(others), write=False)
    round_trips.clear()
    svc.file_operation(me, Filing(volume(45.0, 7.0), key=key))
    assert len(round_trips) == 3
    told = pg.transact(lambda tx: tx.events_after(others[2], seen[others[2]], 10), write=False)
    assert sorted(e.kind for e in told) == ["conflict", "operation", "operation", "operation"]
    assert {e.payload.get("notification_index") for e in told} == {None, 1}

    # Activating in place reads the operation and its notices besides; its volumes are touched
    # once, and the parties in conflict are those the search found (no second search).
    round_trips.clear()
    svc.update_operation(
        me,
        filed.operation.id,
        filed.operation.version,
        Filing(volume(45.0, 7.0), state=OperationState.ACTIVATED, key=key[:-1]),
    )
    assert len(round_trips) == 5


def test_what_a_write_read_ahead_is_read_again_once_it_wrote_there(pg) -> None:
    """Who cannot be reached and the lead-time agreements come with a write's first search;
    writing either table in the same transaction makes the next read ask the server again."""
    from deconfliction.core.model import Liveness

    pg.transact(lambda tx: [tx.add_party(Party(p, p, T)) for p in ("a", "b")])

    def write(tx):
        tx.operation_candidates(volume(45.0, 7.0), exclude_owner="a")  # reads ahead
        before = (tx.silent_among(["a", "b"]), tx.lead_times())
        tx.put_liveness(Liveness("b", T, "Unresponsive", T))
        tx.put_lead_time("a", "b", 600.0)
        return before, (tx.silent_among(["a", "b"]), tx.lead_times())

    before, after = pg.transact(write)
    assert before == ({}, {})
    assert after == (
        {"b": Liveness("b", T, "Unresponsive", T)},
        {frozenset(("a", "b")): 600.0},
    )


def test_a_read_of_several_statements_runs_again_in_a_transaction_and_begins_so_next_time(
    pg, round_trips: list[int]
) -> None:
    from deconfliction.stores.postgres import PostgresTx

    pg.transact(lambda tx: tx.add_party(Party("a", "alpha", T)))
    pg.transact(lambda tx: tx.add_party(Party("b", "bravo", T)))

    def two_reads(tx: PostgresTx) -> tuple[object, object]:
        return tx.get_party("a"), tx.get_party("b")

    round_trips.clear()
    first = pg.transact(two_reads, write=False)
    assert [p.name for p in first] == ["alpha", "bravo"]
    # Alone, then again from the start: BEGIN with the first read, the second, COMMIT.
    assert round_trips == [1, 2, 1, 1]
    round_trips.clear()
    assert pg.transact(two_reads, write=False) == first
    assert round_trips == [2, 1, 1]  # remembered: the transaction begins at once


def test_a_write_in_a_read_transaction_never_goes_alone(pg) -> None:
    import psycopg

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        pg.transact(lambda tx: tx.add_event("a", "note", T, {}), write=False)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        pg.transact(lambda tx: tx.add_party(Party("c", "charlie", T)), write=False)
    assert pg.transact(lambda tx: tx.events_after("a", 0, 10), write=False) == []
    assert pg.transact(lambda tx: tx.list_parties(), write=False) == []


def test_a_failed_statement_sent_late_raises_its_own_error(pg, url: str) -> None:
    import psycopg
    from psycopg import errors

    from deconfliction.stores.postgres import _pipelined

    pg.transact(lambda tx: tx.add_party(Party("p1", "one", T)))
    calls: list[int] = []

    def write(tx) -> None:
        calls.append(1)
        tx.add_party(Party("p1", "again", T))  # queued: fails at the next read
        tx.list_parties()

    # A unique violation is run again twice (a race may resolve), then raised as it is.
    with pytest.raises(errors.UniqueViolation):
        pg.transact(write)
    assert len(calls) == 3
    # And on a bare connection, statements after the failed one do not hide it.
    with psycopg.connect(url, autocommit=True) as conn:
        statements = [
            ("BEGIN", None),
            ("SELECT 1", None),
            ("INSERT INTO parties (id, name, created_at) VALUES (%s, %s, %s)", ("p1", "x", T)),
            ("SELECT 2", None),
            ("COMMIT", None),
        ]
        with pytest.raises(errors.UniqueViolation):
            _pipelined(conn, statements, 0)
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM parties").fetchone() == (1,)


def test_a_connection_that_died_while_idle_is_replaced(pg, url: str) -> None:
    import psycopg

    def backend(tx) -> int:
        return tx.conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def kill() -> None:
        pid = pg.transact(backend, write=False)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    kill()  # a write that reads first
    pg.transact(lambda tx: (tx.list_parties(), tx.add_party(Party("p1", "one", T))))
    kill()  # a write that only writes
    pg.transact(lambda tx: tx.add_party(Party("p2", "two", T)))
    kill()  # a read
    parties = pg.transact(lambda tx: tx.list_parties(), write=False)
    assert [p.id for p in parties] == ["p1", "p2"]


def test_array_parameters_reach_the_server_exactly(url: str) -> None:
    import psycopg

    from deconfliction.stores.postgres import (
        _Float8Array,
        _Int2Array,
        _Int4Array,
        _Int8Array,
        _pack,
    )

    big = [-(2**63), 2**63 - 1, 0, -5, 3_458_764_513_820_540_928]
    floats = [-math.inf, math.inf, 0.1, -0.0, 5e-324, 1.7976931348623157e308, T + 1e-6]
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT %b::int8[], %b::int2[], %b::int4[], %b::float8[], %b::float8[]",
            (
                _pack(_Int8Array, big),
                _pack(_Int2Array, [1, -2, 32767]),
                _pack(_Int4Array, [7, -(2**31)]),
                _pack(_Float8Array, floats),
                _pack(_Float8Array, []),
            ),
        ).fetchone()
    assert row is not None
    assert row[0] == big and row[1] == [1, -2, 32767] and row[2] == [7, -(2**31)]
    assert [float(x).hex() for x in row[3]] == [x.hex() for x in floats]
    assert row[4] == []


def test_a_read_that_catches_exceptions_still_gets_its_whole_answer(pg) -> None:
    from deconfliction.stores.postgres import PostgresTx

    pg.transact(
        lambda tx: [tx.add_party(Party("a", "alpha", T)), tx.add_party(Party("b", "bravo", T))]
    )

    def careful(tx: PostgresTx) -> tuple[object, object]:
        first = tx.get_party("a")
        try:
            second = tx.get_party("b")
        except Exception:  # the point: this must not swallow the store's retry
            second = None
        return first, second

    first, second = pg.transact(careful, write=False)
    assert first is not None and second is not None and second.name == "bravo"
