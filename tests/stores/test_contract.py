"""The Store contract: what every store (SQLite now, PostgreSQL later) must do, tested through Tx.

Each test runs once per store kind of the ``store_factory`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from deconfliction.core.audit import next_entry
from deconfliction.core.model import (
    NewEvent,
    Operation,
    OperationDetails,
    OperationState,
    Party,
    Subscription,
    WriteRecord,
)
from deconfliction.geo import Circle, Polygon, Volume
from deconfliction.stores.base import Store
from deconfliction.stores.shared import RecentOperations

S = OperationState
T = 1_800_000_000.0


def epoch_of(store: Store) -> float:
    """The store's time origin where it has one (index times are kept relative to it)."""
    return float(getattr(store, "epoch", T))


def circle(
    lat: float = 0.0,
    lon: float = 0.0,
    radius_m: float = 1_000.0,
    lo: float = 0.0,
    hi: float = 120.0,
    start: float = T,
    end: float = T + 3_600.0,
) -> Volume:
    return Volume.create(Circle.create(lat, lon, radius_m), lo, hi, start, end)


def square(
    lat: float, lon: float, side_deg: float = 0.01, start: float = T, end: float = T + 3_600.0
) -> Volume:
    ring = [
        (lat, lon),
        (lat, lon + side_deg),
        (lat + side_deg, lon + side_deg),
        (lat + side_deg, lon),
    ]
    return Volume.create(Polygon.create(ring), 0.0, 120.0, start, end)


def operation(
    op_id: str,
    owner: str = "alpha",
    volumes: tuple[Volume, ...] | list[Volume] = (),
    *,
    state: OperationState = S.ACCEPTED,
    version: str = "v1",
    revision: int = 1,
    priority: int = 0,
) -> Operation:
    return Operation(
        id=op_id,
        owner=owner,
        state=state,
        priority=priority,
        volumes=tuple(volumes) or (circle(),),
        version=version,
        revision=revision,
        created_at=T - 60.0,
        updated_at=T - 30.0,
    )


def put(store: Store, *ops: Operation) -> None:
    def write(tx):
        for op in ops:
            tx.put_operation(op)

    store.transact(write)


def candidate_ids(
    store: Store, volumes: list[Volume], exclude_owner: str | None = None
) -> set[str]:
    found = store.transact(
        lambda tx: tx.operation_candidates(volumes, exclude_owner=exclude_owner), write=False
    )
    return {op.id for op in found}


def same_volume(a: Volume, b: Volume) -> bool:
    return a.footprint.to_json() == b.footprint.to_json() and (
        a.altitude_lower_m,
        a.altitude_upper_m,
        a.start,
        a.end,
    ) == (b.altitude_lower_m, b.altitude_upper_m, b.start, b.end)


# Parties ---------------------------------------------------------------------------------------


def test_parties_are_added_read_back_and_listed_by_name(store: Store) -> None:
    zulu, alpha = Party("p2", "Zulu Air", T), Party("p1", "Alpha Force", T + 1)
    store.transact(lambda tx: (tx.add_party(zulu), tx.add_party(alpha)))

    assert store.transact(lambda tx: tx.get_party("p2"), write=False) == zulu
    assert store.transact(lambda tx: tx.get_party("nobody"), write=False) is None
    assert store.transact(lambda tx: tx.list_parties(), write=False) == [alpha, zulu]


# Operations ------------------------------------------------------------------------------------


def test_an_operation_reads_back_as_it_was_put_with_volumes_in_order(store: Store) -> None:
    volumes = (circle(10.0, 20.0, 500.0, 30.5, 99.25), square(10.0, 20.0, start=T + 7.125))
    op = Operation(
        id="op-1",
        owner="alpha",
        state=S.ACTIVATED,
        priority=7,
        volumes=volumes,
        version="ovn-1",
        revision=3,
        created_at=T - 10.5,
        updated_at=T - 0.25,
        details=OperationDetails("survey", ("F-16 #12", "F-16 #14"), "two ship"),
    )
    put(store, op)

    back = store.transact(lambda tx: tx.get_operation("op-1"), write=False)
    assert back is not None
    assert (back.id, back.owner, back.state, back.priority, back.version, back.revision) == (
        "op-1",
        "alpha",
        S.ACTIVATED,
        7,
        "ovn-1",
        3,
    )
    assert (back.created_at, back.updated_at) == (T - 10.5, T - 0.25)
    assert back.details == op.details
    assert len(back.volumes) == 2
    assert all(same_volume(a, b) for a, b in zip(back.volumes, volumes, strict=True))
    assert store.transact(lambda tx: tx.get_operation("op-2"), write=False) is None


def test_putting_an_operation_again_replaces_it_and_moves_it_in_the_index(store: Store) -> None:
    here, there = circle(0.0, 0.0), circle(5.0, 5.0)
    put(store, operation("op", volumes=[here, circle(0.5, 0.5)], version="v1"))
    put(store, operation("op", volumes=[there], version="v2", revision=2, priority=3))

    back = store.transact(lambda tx: tx.get_operation("op"), write=False)
    assert back is not None
    assert (back.version, back.revision, back.priority) == ("v2", 2, 3)
    assert len(back.volumes) == 1 and same_volume(back.volumes[0], there)
    assert candidate_ids(store, [there]) == {"op"}
    assert candidate_ids(store, [here]) == set()
    assert candidate_ids(store, [circle(0.5, 0.5)]) == set()


def test_ended_operations_are_kept_but_never_candidates(store: Store) -> None:
    put(store, operation("live"), operation("done", state=S.ENDED))
    put(store, operation("ending"))
    put(store, operation("ending", state=S.ENDED, version="v2", revision=2))

    assert candidate_ids(store, [circle()]) == {"live"}
    ended = store.transact(lambda tx: tx.get_operation("ending"), write=False)
    assert ended is not None and ended.state is S.ENDED and ended.version == "v2"


def test_off_nominal_states_are_still_candidates(store: Store) -> None:
    put(
        store,
        operation("a", state=S.ACCEPTED),
        operation("b", state=S.ACTIVATED),
        operation("c", state=S.NONCONFORMING),
        operation("d", state=S.CONTINGENT),
    )
    assert candidate_ids(store, [circle()]) == {"a", "b", "c", "d"}


def test_candidates_can_leave_out_one_partys_operations(store: Store) -> None:
    put(store, operation("mine", owner="alpha"), operation("theirs", owner="bravo"))

    assert candidate_ids(store, [circle()]) == {"mine", "theirs"}
    assert candidate_ids(store, [circle()], exclude_owner="alpha") == {"theirs"}
    assert candidate_ids(store, [circle()], exclude_owner="charlie") == {"mine", "theirs"}


def test_candidates_come_from_any_of_the_query_volumes(store: Store) -> None:
    put(
        store,
        operation("north", volumes=[circle(10.0, 0.0)]),
        operation("south", volumes=[circle(-10.0, 0.0)]),
        operation("east", volumes=[circle(0.0, 10.0)]),
    )
    query = [circle(10.0, 0.0), circle(-10.0, 0.0)]
    assert candidate_ids(store, query) == {"north", "south"}


def test_candidates_are_narrowed_by_altitude_and_time(store: Store) -> None:
    put(store, operation("op", volumes=[circle(lo=100.0, hi=200.0, start=T, end=T + 600.0)]))

    assert candidate_ids(store, [circle(lo=150.0, hi=300.0)]) == {"op"}
    assert candidate_ids(store, [circle(lo=300.0, hi=400.0)]) == set()
    assert candidate_ids(store, [circle(start=T + 3_600.0, end=T + 7_200.0)]) == set()
    assert candidate_ids(store, [circle(start=T - 7_200.0, end=T - 3_600.0)]) == set()


def test_an_operation_across_the_antimeridian_is_found_from_either_side(store: Store) -> None:
    ring = [(10.0, 179.9), (10.0, -179.9), (10.1, -179.9), (10.1, 179.9)]
    dateline = Volume.create(Polygon.create(ring), 0.0, 120.0, T, T + 3_600.0)
    put(store, operation("dateline", volumes=[dateline]))

    assert candidate_ids(store, [circle(10.05, 179.95, 100.0)]) == {"dateline"}
    assert candidate_ids(store, [circle(10.05, -179.95, 100.0)]) == {"dateline"}
    assert candidate_ids(store, [circle(10.05, 0.0, 100.0)]) == set()


def test_operations_at_their_versions_are_read_together_in_id_order(store: Store) -> None:
    put(store, operation("c"), operation("a", volumes=[square(1.0, 1.0)]), operation("b"))

    def read(tx) -> tuple[list[Operation], list[Operation]]:
        before = tx.operations_at([("c", "v1"), ("a", "v1"), ("gone", "v1")])
        tx.put_operation(operation("b", version="v2", revision=2))
        return before, tx.operations_at({("b", "v2"), ("a", "v1")})

    before, after = store.transact(read)
    assert [(op.id, op.version) for op in before] == [("a", "v1"), ("c", "v1")]
    assert same_volume(before[0].volumes[0], square(1.0, 1.0))
    assert [(op.id, op.version, op.revision) for op in after] == [("a", "v1", 1), ("b", "v2", 2)]
    assert store.transact(lambda tx: tx.operations_at([]), write=False) == []

    # Nothing remembered: everything is read from the database, and a row at another version
    # than the one asked for is left out.
    store._recent = RecentOperations()  # type: ignore[attr-defined]
    fresh = store.transact(
        lambda tx: tx.operations_at([("a", "v1"), ("b", "v1"), ("c", "v1")]), write=False
    )
    assert [(op.id, op.version, op.revision) for op in fresh] == [("a", "v1", 1), ("c", "v1", 1)]
    assert same_volume(fresh[0].volumes[0], square(1.0, 1.0)) and fresh[1].owner == "alpha"


def test_operations_are_listed_by_owner_in_filing_order(store: Store) -> None:
    put(store, operation("a1"), operation("b1", owner="bravo"), operation("a2"))
    put(store, operation("a3", state=S.ENDED), operation("a4"))

    def listed(**kw) -> list[str]:
        return [o.id for o in store.transact(lambda tx: tx.list_operations("alpha", **kw))]

    assert listed() == ["a1", "a2", "a4"]
    assert listed(include_ended=True) == ["a1", "a2", "a3", "a4"]
    assert listed(limit=2) == ["a1", "a2"]
    assert store.transact(lambda tx: tx.list_operations("nobody"), write=False) == []


# Subscriptions ---------------------------------------------------------------------------------


def subscription(
    sub_id: str, owner: str, volumes: list[Volume], version: str = "s1"
) -> Subscription:
    return Subscription(sub_id, owner, tuple(volumes), version, 0, T, T)


def test_subscriptions_are_put_read_listed_and_deleted(store: Store) -> None:
    mine = subscription("s-1", "alpha", [circle()])
    other = subscription("s-2", "bravo", [circle(1.0, 1.0)])
    store.transact(lambda tx: (tx.put_subscription(mine), tx.put_subscription(other)))

    back = store.transact(lambda tx: tx.get_subscription("s-1"), write=False)
    assert back is not None
    assert (back.id, back.owner, back.version, back.notification_index) == ("s-1", "alpha", "s1", 0)
    assert same_volume(back.volumes[0], mine.volumes[0])
    assert [s.id for s in store.transact(lambda tx: tx.list_subscriptions("alpha"))] == ["s-1"]

    store.transact(lambda tx: tx.delete_subscription("s-1"))
    assert store.transact(lambda tx: tx.get_subscription("s-1"), write=False) is None
    assert store.transact(lambda tx: tx.subscription_candidates([circle()])) == []
    assert store.transact(lambda tx: tx.list_subscriptions("alpha")) == []
    store.transact(lambda tx: tx.delete_subscription("never-was"))  # deleting nothing is fine


def test_a_replaced_subscription_is_found_at_its_new_area_only(store: Store) -> None:
    store.transact(lambda tx: tx.put_subscription(subscription("s", "alpha", [circle()])))
    moved = subscription("s", "alpha", [circle(20.0, 20.0)], version="s2")
    store.transact(lambda tx: tx.put_subscription(moved))

    def found(volume: Volume) -> list[str]:
        return [s.id for s in store.transact(lambda tx: tx.subscription_candidates([volume]))]

    assert found(circle(20.0, 20.0)) == ["s"]
    assert found(circle()) == []
    back = store.transact(lambda tx: tx.get_subscription("s"))
    assert back is not None and back.version == "s2"


def test_bumping_a_subscription_increments_its_notification_index(store: Store) -> None:
    store.transact(lambda tx: tx.put_subscription(subscription("s", "alpha", [circle()])))

    assert store.transact(lambda tx: tx.bump_subscriptions(["s"])["s"]) == 1
    assert store.transact(
        lambda tx: [tx.bump_subscriptions(["s"])["s"], tx.bump_subscriptions(["s"])["s"]]
    ) == [
        2,
        3,
    ]
    back = store.transact(lambda tx: tx.get_subscription("s"), write=False)
    assert back is not None and back.notification_index == 3


# Events and write records ----------------------------------------------------------------------


def test_events_are_kept_per_party_in_id_order_and_paged(store: Store) -> None:
    def add_all(tx) -> list[int]:
        return [
            tx.add_event("alpha" if i % 3 else "bravo", "operation", T + i, {"n": i, "list": [i]})
            for i in range(10)
        ]

    ids = store.transact(add_all)
    assert ids == sorted(ids) and len(set(ids)) == 10

    def page(party: str, after: int, limit: int) -> list:
        return store.transact(lambda tx: tx.events_after(party, after, limit), write=False)

    alpha = page("alpha", 0, 100)
    assert [e.payload["n"] for e in alpha] == [1, 2, 4, 5, 7, 8]
    assert all(e.party_id == "alpha" and e.kind == "operation" for e in alpha)
    assert alpha[0].time == T + 1 and alpha[0].payload == {"n": 1, "list": [1]}
    assert [e.id for e in alpha] == sorted(e.id for e in alpha)

    first = page("alpha", 0, 4)
    rest = page("alpha", first[-1].id, 4)
    assert [e.payload["n"] for e in first] == [1, 2, 4, 5]
    assert [e.payload["n"] for e in rest] == [7, 8]
    assert page("alpha", rest[-1].id, 4) == []
    assert [e.payload["n"] for e in page("bravo", 0, 100)] == [0, 3, 6, 9]
    assert page("charlie", 0, 100) == []


def test_events_added_together_are_numbered_in_the_order_given(store: Store) -> None:
    """add_events is add_event for each, in one statement: ids grow per party and across the
    transaction, also between single events added before and after the batch."""
    batch = [NewEvent("bravo" if i % 2 else "alpha", "conflict", T + i, {"n": i}) for i in range(7)]

    def write(tx) -> tuple[int, int]:
        before = tx.add_event("charlie", "operation", T, {"n": "before"})
        tx.add_events(batch)
        tx.add_events([])
        after = tx.add_event("charlie", "operation", T, {"n": "after"})
        return before, after

    store.transact(lambda tx: tx.add_event("bravo", "operation", T, {"n": "earlier"}))
    before, after = store.transact(write)
    store.transact(lambda tx: tx.add_events([NewEvent("alpha", "k", T, {"n": "later"})]))

    def feed(party: str) -> list:
        return store.transact(lambda tx: tx.events_after(party, 0, 100), write=False)

    alpha, bravo, charlie = feed("alpha"), feed("bravo"), feed("charlie")
    assert [e.payload["n"] for e in alpha] == [0, 2, 4, 6, "later"]
    assert [e.payload["n"] for e in bravo] == ["earlier", 1, 3, 5]
    assert [e.payload["n"] for e in charlie] == ["before", "after"]
    assert all(e.kind == "conflict" and e.time == T + e.payload["n"] for e in alpha[:4])
    batch_ids = sorted(e.id for e in alpha[:4] + bravo[1:])
    in_order = [e.id for e in sorted(alpha[:4] + bravo[1:], key=lambda e: e.payload["n"])]
    assert in_order == batch_ids  # numbered in the order given, across parties
    assert before < batch_ids[0] and batch_ids[-1] < after
    assert bravo[0].id < bravo[1].id and alpha[3].id < alpha[4].id


def record(
    tx,
    op_id: str,
    version: str,
    owner: str,
    state: str,
    time: float,
    key: tuple[str, ...] = (),
    conflicts: tuple[tuple[str, str], ...] = (),
) -> None:
    """An operation write as the services record it: an audit entry."""
    payload = {
        "operation": {"id": op_id, "version": version, "state": state},
        "key": list(key),
        "conflicts": [list(c) for c in conflicts],
    }
    tx.audit_append(next_entry(tx.audit_head(), time, owner, "operation.file", op_id, payload))


def test_write_records_are_the_audit_logs_operation_entries_in_order(store: Store) -> None:
    store.transact(lambda tx: record(tx, "op-1", "v1", "alpha", "Accepted", T))
    store.transact(
        lambda tx: tx.audit_append(
            next_entry(tx.audit_head(), T + 1, "alpha", "message.send", "m", {})
        )
    )
    store.transact(
        lambda tx: record(
            tx,
            "op-2",
            "w1",
            "bravo",
            "Activated",
            T + 1.5,
            ("v1", "x9"),
            (("op-1", "v1"), ("op-9", "x9")),
        )
    )

    assert store.transact(lambda tx: tx.write_records(), write=False) == [
        WriteRecord("op-1", "v1", "alpha", S.ACCEPTED, T, (), ()),
        WriteRecord("op-2", "w1", "bravo", S.ACTIVATED, T + 1.5, ("v1", "x9"),
                    (("op-1", "v1"), ("op-9", "x9"))),
    ]  # fmt: skip


# Transactions ----------------------------------------------------------------------------------


def test_transact_returns_what_the_function_returns(store: Store) -> None:
    assert store.transact(lambda tx: 42) == 42
    assert store.transact(lambda tx: "read", write=False) == "read"


def test_an_exception_rolls_back_everything_the_transaction_wrote(store: Store) -> None:
    put(store, operation("before", version="v1"))
    store.transact(lambda tx: tx.put_subscription(subscription("s", "bravo", [circle()])))

    class Boom(Exception):
        pass

    def write_then_fail(tx) -> None:
        tx.add_party(Party("p", "Party", T))
        tx.put_operation(operation("new"))
        tx.put_operation(operation("before", volumes=[circle(30.0, 30.0)], version="v2"))
        tx.put_subscription(subscription("s2", "bravo", [circle()]))
        tx.bump_subscriptions(["s"])
        tx.delete_subscription("s")
        tx.add_event("bravo", "operation", T, {})
        record(tx, "new", "v1", "alpha", "Accepted", T)
        raise Boom

    with pytest.raises(Boom):
        store.transact(write_then_fail)

    def everything(tx):
        return (
            tx.list_parties(),
            tx.get_operation("new"),
            tx.get_operation("before").version,
            [o.id for o in tx.operation_candidates([circle()])],
            [o.id for o in tx.operation_candidates([circle(30.0, 30.0)])],
            [(s.id, s.notification_index) for s in tx.list_subscriptions("bravo")],
            tx.events_after("bravo", 0, 10),
            tx.write_records(),
        )

    assert store.transact(everything, write=False) == (
        [],
        None,
        "v1",
        ["before"],
        [],
        [("s", 0)],
        [],
        [],
    )
    # The store is still usable afterwards.
    put(store, operation("after"))
    assert candidate_ids(store, [circle()]) == {"before", "after"}


def test_a_transaction_sees_its_own_writes(store: Store) -> None:
    def write_and_read(tx) -> tuple[str | None, set[str]]:
        tx.put_operation(operation("op"))
        got = tx.get_operation("op")
        return got and got.id, {o.id for o in tx.operation_candidates([circle()])}

    assert store.transact(write_and_read) == ("op", {"op"})


# Bulk load -------------------------------------------------------------------------------------


def test_bulk_load_stores_and_indexes_operations_without_checks(store: Store) -> None:
    put(store, operation("filed", owner="charlie"))
    loaded = [
        operation(f"bulk-{i}", owner="alpha" if i % 2 else "bravo", volumes=[circle(i / 10, 0.0)])
        for i in range(50)
    ]
    loaded.append(operation("bulk-ended", state=S.ENDED))

    assert store.bulk_load(iter(loaded)) == 51

    back = store.transact(lambda tx: tx.get_operation("bulk-7"), write=False)
    assert (
        back is not None
        and back.owner == "alpha"
        and same_volume(back.volumes[0], circle(0.7, 0.0))
    )
    assert candidate_ids(store, [circle(0.7, 0.0, 100.0)]) == {"bulk-7"}
    assert candidate_ids(store, [circle()]) == {"filed", "bulk-0"}
    assert store.transact(lambda tx: tx.get_operation("bulk-ended"), write=False) is not None
    # A bulk-loaded operation is an ordinary one: replacing it moves it in the index.
    put(store, operation("bulk-7", volumes=[circle(-40.0, 0.0)], version="v2"))
    assert candidate_ids(store, [circle(0.7, 0.0, 100.0)]) == set()
    assert candidate_ids(store, [circle(-40.0, 0.0)]) == {"bulk-7"}
    # And writing after a bulk load neither collides with nor disturbs what was loaded.
    put(store, operation("later", volumes=[circle(0.3, 0.0)]))
    assert candidate_ids(store, [circle(0.3, 0.0, 100.0)]) == {"bulk-3", "later"}


def test_bulk_load_of_nothing_loads_nothing(store: Store) -> None:
    assert store.bulk_load([]) == 0


# The index is conservative ---------------------------------------------------------------------


def not_float32(x: float) -> float:
    assert float(np.float32(x)) != x, "the test needs a value float32 cannot hold"
    return x


def test_a_time_edge_that_float32_cannot_hold_is_still_found(store: Store) -> None:
    e = epoch_of(store)
    start, end = e + not_float32(1_000.1), e + not_float32(2_000.3)
    stored = circle(start=start, end=end)
    put(store, operation("op", volumes=[stored]))

    overlapping_by_a_microsecond = circle(start=end - 1e-6, end=end + 60.0)
    assert candidate_ids(store, [overlapping_by_a_microsecond]) == {"op"}
    assert stored.overlaps(overlapping_by_a_microsecond)
    assert candidate_ids(store, [circle(start=start - 60.0, end=start + 1e-6)]) == {"op"}
    # Touching exactly is no conflict, but the index must still hand it over for the exact check.
    touching = circle(start=end, end=end + 60.0)
    assert candidate_ids(store, [touching]) == {"op"}
    assert not stored.overlaps(touching)


def test_times_far_from_the_epoch_keep_edges_found_and_sub_second_precision(store: Store) -> None:
    # Seconds since the store's epoch, not since 1970, go into the index: 40 days out, float32
    # still resolves a quarter second, where Unix time in float32 would blur to two minutes.
    e = epoch_of(store)
    start = e + not_float32(40 * 86_400.0 + 0.3)
    put(store, operation("op", volumes=[circle(start=start, end=start + 600.0)]))

    assert candidate_ids(store, [circle(start=start - 60.0, end=start + 1e-6)]) == {"op"}
    assert candidate_ids(store, [circle(start=start - 60.0, end=start - 2.0)]) == set()


def test_an_altitude_edge_that_float32_cannot_hold_is_still_found(store: Store) -> None:
    upper = not_float32(100.1)
    put(store, operation("op", volumes=[circle(lo=not_float32(0.3), hi=upper)]))

    assert candidate_ids(store, [circle(lo=upper - 1e-9, hi=200.0)]) == {"op"}
    assert candidate_ids(store, [circle(lo=-50.0, hi=0.3 + 1e-9)]) == {"op"}
    assert candidate_ids(store, [circle(lo=upper, hi=200.0)]) == {"op"}  # touching: a candidate
    assert candidate_ids(store, [circle(lo=101.0, hi=200.0)]) == set()


def test_footprints_sharing_an_edge_are_candidates_and_a_sliver_of_overlap_conflicts(
    store: Store,
) -> None:
    lon = not_float32(10.1)
    west = Volume.create(
        Polygon.create([(0.0, 10.0), (0.0, lon), (0.1, lon), (0.1, 10.0)]), 0, 120, T, T + 3_600
    )
    put(store, operation("west", volumes=[west]))

    sharing_the_edge = Volume.create(
        Polygon.create([(0.0, lon), (0.0, 10.2), (0.1, 10.2), (0.1, lon)]), 0, 120, T, T + 3_600
    )
    assert candidate_ids(store, [sharing_the_edge]) == {"west"}
    assert not west.overlaps(sharing_the_edge)

    a_metre_over = Volume.create(
        Polygon.create([(0.0, lon - 1e-5), (0.0, 10.2), (0.1, 10.2), (0.1, lon - 1e-5)]),
        0,
        120,
        T,
        T + 3_600,
    )
    assert candidate_ids(store, [a_metre_over]) == {"west"}
    assert west.overlaps(a_metre_over)
