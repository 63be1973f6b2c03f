"""A write transaction reads what it wrote, whatever the store reads early or late.

PostgreSQL answers a write's subscription, liveness and audit-head reads from what it read ahead
with the transaction's first search, and sends writes late (with the next read or the COMMIT).
These contract tests hold every store to the plain meaning: a read sees the snapshot plus the
transaction's own writes, and a write that fails takes the whole transaction with it.
"""

from __future__ import annotations

import pytest

from deconfliction.core.audit import AuditEntry, next_entry
from deconfliction.core.model import Liveness, Operation, OperationState, Party, Subscription
from deconfliction.geo import Circle, Volume
from deconfliction.stores.base import Store, Tx

T = 1_800_000_000.0


def circle(lat: float, lon: float, radius_m: float = 500.0) -> Volume:
    return Volume.create(Circle.create(lat, lon, radius_m), 0.0, 120.0, T, T + 3600)


HERE = circle(45.0, 7.0)
THERE = circle(46.0, 8.0)


def operation(op_id: str, *volumes: Volume, owner: str = "alpha") -> Operation:
    return Operation(op_id, owner, OperationState.ACCEPTED, 0, volumes, "v1", 1, T, T)


def subscription(sub_id: str, *volumes: Volume, owner: str = "beta") -> Subscription:
    return Subscription(sub_id, owner, volumes, "s1", 0, T, T)


def entry(prev: AuditEntry | None, subject: str) -> AuditEntry:
    return next_entry(prev, T, "alpha", "operation.file", subject, {"n": [1, 2.5, "x"]})


def search(tx: Tx, *volumes: Volume) -> list[str]:
    """A filing's first read: the one after which PostgreSQL answers from what it read ahead."""
    return [op.id for op in tx.operation_candidates(list(volumes), exclude_owner="alpha")]


@pytest.fixture
def store(store_factory) -> Store:
    return store_factory()


def test_reads_after_a_search_see_what_was_committed_before(store: Store) -> None:
    first = entry(None, "op-0")
    live = Liveness("alpha", T, "Unresponsive", T)

    def setup(tx: Tx) -> None:
        tx.put_operation(operation("theirs", HERE, owner="gamma"))
        tx.put_subscription(subscription("sub", HERE))
        tx.put_liveness(live)
        tx.audit_append(first)

    store.transact(setup)

    def write(tx: Tx) -> tuple:
        volumes = [HERE]
        return (
            search(tx, *volumes),
            [s.id for s in tx.subscription_candidates(volumes)],
            tx.get_liveness("alpha"),
            tx.get_liveness("gamma"),
            tx.audit_head(),
            tx.audit_tip(),
        )

    tip = (first.seq, first.time, first.digest)
    assert store.transact(write) == (["theirs"], ["sub"], live, None, first, tip)


def test_a_write_transaction_reads_its_own_subscription_changes_after_a_search(
    store: Store,
) -> None:
    def write(tx: Tx) -> list[list[tuple[str, int]]]:
        seen = []

        def subs() -> None:
            seen.append([(s.id, s.notification_index) for s in tx.subscription_candidates([HERE])])

        assert search(tx, HERE) == []
        subs()
        tx.put_subscription(subscription("a", HERE))
        subs()
        tx.bump_subscriptions(["a"])
        subs()
        tx.put_subscription(subscription("b", HERE, owner="gamma"))
        tx.put_subscription(subscription("a", THERE))  # moved away
        subs()
        tx.delete_subscription("b")
        subs()
        return seen

    assert store.transact(write) == [[], [("a", 0)], [("a", 1)], [("b", 0)], []]


def test_a_write_transaction_reads_its_own_liveness_and_audit_entries_after_a_search(
    store: Store,
) -> None:
    def write(tx: Tx) -> tuple:
        assert search(tx, HERE) == []
        assert tx.get_liveness("alpha") is None
        assert tx.audit_head() is None and tx.audit_tip() is None
        live = Liveness("alpha", T, "Down", T)
        tx.put_liveness(live)
        first = entry(None, "op-1")
        tx.audit_append(first)
        after_first = tx.audit_head(), tx.audit_tip()
        second = entry(first, "op-2")
        tx.audit_append(second)
        return (
            tx.get_liveness("alpha"),
            after_first == (first, (first.seq, first.time, first.digest)),
            tx.audit_head() == second,
            tx.audit_tip() == (second.seq, second.time, second.digest),
        )

    assert store.transact(write) == (Liveness("alpha", T, "Down", T), True, True, True)


def test_subscriptions_of_other_volumes_than_the_search_are_read_as_usual(store: Store) -> None:
    store.transact(lambda tx: tx.put_subscription(subscription("far", THERE)))

    def write(tx: Tx) -> tuple[list[str], list[str]]:
        search(tx, HERE)
        # An update touches its new volumes and its old ones.
        return (
            [s.id for s in tx.subscription_candidates([HERE])],
            [s.id for s in tx.subscription_candidates([HERE, THERE])],
        )

    assert store.transact(write) == ([], ["far"])


def test_an_update_of_the_same_volumes_keeps_the_operation_found_once(store: Store) -> None:
    store.transact(lambda tx: tx.put_operation(operation("op", HERE, THERE)))
    for revision in (2, 3):
        again = operation("op", HERE, THERE)
        store.transact(lambda tx, op=again: tx.put_operation(op))
        found = store.transact(lambda tx: tx.operation_candidates([HERE, THERE]), write=False)
        assert [op.id for op in found] == ["op"], revision
    ended = Operation("op", "alpha", OperationState.ENDED, 0, (HERE,), "v9", 9, T, T)
    store.transact(lambda tx: tx.put_operation(ended))
    assert store.transact(lambda tx: tx.operation_candidates([HERE]), write=False) == []
    again = operation("op", HERE)
    store.transact(lambda tx: tx.put_operation(again))
    found = store.transact(lambda tx: tx.operation_candidates([HERE, THERE]), write=False)
    assert [op.id for op in found] == ["op"]
    assert found[0].created_at == T


def test_a_failing_write_takes_the_whole_transaction_with_it(store: Store) -> None:
    store.transact(lambda tx: tx.add_party(Party("p1", "one", T)))

    def write(tx: Tx) -> None:
        search(tx, HERE)
        tx.add_party(Party("p2", "two", T))
        tx.put_operation(operation("op", HERE))
        tx.add_party(Party("p1", "one again", T))  # the id is taken
        tx.audit_append(entry(tx.audit_head(), "op"))

    with pytest.raises(Exception):  # noqa: B017 - each store raises its own driver's error
        store.transact(write)

    def state(tx: Tx) -> tuple:
        return (
            [p.id for p in tx.list_parties()],
            tx.get_operation("op"),
            tx.operation_candidates([HERE]),
            tx.audit_head(),
        )

    assert store.transact(state, write=False) == (["p1"], None, [], None)
    # The store still works.
    store.transact(lambda tx: tx.add_party(Party("p2", "two", T)))
    assert len(store.transact(lambda tx: tx.list_parties(), write=False)) == 2
