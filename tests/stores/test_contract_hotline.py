"""The store contract, continued: hotline, notices, liveness, audit, webhooks and tactical state.

Runs once per store kind (SQLite always, PostgreSQL where it is up), like test_contract.py.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from deconfliction.core.audit import next_entry, seal
from deconfliction.core.model import (
    Liveness,
    Message,
    Notice,
    Party,
    PartySettings,
    Receipt,
    TacticalLease,
    TrackReport,
    WebhookCursor,
)
from deconfliction.stores.base import Store

KEY = ec.generate_private_key(ec.SECP256R1())


def parties(store: Store, *names: str) -> None:
    store.transact(lambda tx: [tx.add_party(Party(n, n, 0.0)) for n in names])


def test_settings_and_lead_times_roundtrip(store: Store) -> None:
    parties(store, "a", "b")
    store.transact(lambda tx: tx.put_settings(PartySettings("a", "http://x/h", "s", ("b",))))
    store.transact(lambda tx: tx.put_lead_time("b", "a", 1_800.0))
    got = store.transact(lambda tx: (tx.get_settings("a"), tx.get_settings("b"), tx.lead_times()))
    assert got[0] == PartySettings("a", "http://x/h", "s", ("b",))
    assert got[1] == PartySettings("b")
    assert got[2] == {frozenset(("a", "b")): 1_800.0}
    backlog = store.transact(lambda tx: tx.webhook_backlog())
    assert [(s.party_id, c, latest) for s, c, latest in backlog] == [("a", None, 0)]


def test_messages_receipts_and_overdue_counts(store: Store) -> None:
    parties(store, "a", "b", "c")
    m = Message("m1", "a", ("b", "c"), "query", 1, "hi", 100.0, 160.0)

    def write(tx):
        tx.put_message(m)
        tx.put_receipt(Receipt("m1", "b", None, 0, 160.0))
        tx.put_receipt(Receipt("m1", "c", 150.0, 0, None))

    store.transact(write)
    got = store.transact(
        lambda tx: (
            tx.get_message("m1"),
            tx.receipts("m1"),
            tx.due_receipts(200.0, 10),
            tx.overdue_counts(200.0),
            tx.messages_between(0, 1_000),
        )
    )
    assert got[0] == m
    assert [r.party_id for r in got[1]] == ["b", "c"]
    assert [r.party_id for r in got[2]] == ["b"]
    assert got[3] == {"b": 1}
    assert got[4] == [m]
    pairs = store.transact(lambda tx: tx.receipts_between(0, 1_000))
    assert {(msg.id, r.party_id) for msg, r in pairs} == {("m1", "b"), ("m1", "c")}


def test_notices_liveness_and_events_bookkeeping(store: Store) -> None:
    parties(store, "a", "b")
    n = Notice("op", "a", "b", 10.0, 500.0, 900.0, True)

    def write(tx):
        tx.put_notices([n])
        tx.put_liveness(Liveness("a", 5.0, "Normal", 5.0))
        tx.add_event("b", "late_notice", 10.0, {"x": 1})
        tx.add_event("b", "message", 11.0, {"x": 2})

    store.transact(write)
    got = store.transact(
        lambda tx: (
            tx.notices_of("op").get("b"),
            tx.notices_between(0, 100),
            tx.get_liveness("a"),
            tx.list_liveness(),
            tx.latest_event_ids(["a", "b"]),
            tx.latest_event_id("b"),
            [e.kind for e in tx.events_between(0, 100, ["message"])],
        )
    )
    assert got[0] == n and got[1] == [n]
    assert got[2] == Liveness("a", 5.0, "Normal", 5.0) and len(got[3]) == 1
    assert set(got[4]) == {"b"} and got[4]["b"] == got[5]
    assert got[6] == ["message"]


def test_notices_written_together_upsert_each_pair(store: Store) -> None:
    first = [Notice("op", "a", p, 10.0, 500.0, 900.0, False) for p in ("b", "c")]
    store.transact(lambda tx: tx.put_notices(first))
    # A later notice of the same pair moves its activation and lateness, never when it was told.
    again = [
        Notice("op", "a", "c", 20.0, 400.0, 900.0, True),
        Notice("op", "a", "d", 20.0, 400.0, 900.0, False),
        # The same pair twice in one batch: as two puts one after the other.
        Notice("op", "a", "e", 30.0, 800.0, 900.0, False),
        Notice("op", "a", "e", 40.0, 700.0, 600.0, True),
    ]
    store.transact(lambda tx: tx.put_notices(again))
    store.transact(lambda tx: tx.put_notices([]))
    got = store.transact(lambda tx: {n.party_id: n for n in tx.notices_between(0, 100)})
    assert got == {
        "b": first[0],
        "c": Notice("op", "a", "c", 10.0, 400.0, 900.0, True),
        "d": again[1],
        "e": Notice("op", "a", "e", 30.0, 700.0, 900.0, True),
    }
    assert store.transact(lambda tx: tx.notices_of("op")) == got
    assert store.transact(lambda tx: tx.notices_of("another")) == {}


def test_silent_among_names_only_the_parties_asked_about_that_cannot_be_reached(
    store: Store,
) -> None:
    rows = [
        Liveness("a", 5.0, "Normal", 5.0),
        Liveness("b", 5.0, "Unresponsive", 6.0),
        Liveness("c", 5.0, "Down", 7.0),
        Liveness("d", 5.0, "Down", 8.0),
    ]
    store.transact(lambda tx: [tx.put_liveness(x) for x in rows])
    got = store.transact(lambda tx: tx.silent_among(["a", "b", "c", "e", "b"]), write=False)
    assert got == {"b": rows[1], "c": rows[2]}
    assert store.transact(lambda tx: tx.silent_among([]), write=False) == {}


def test_audit_entries_and_seals(store: Store) -> None:
    first = next_entry(None, 1.0, "a", "x", "s", {"n": 1})
    second = next_entry(first, 2.0, "a", "y", "s", {"n": 2})
    store.transact(lambda tx: [tx.audit_append(first), tx.audit_append(second)])
    store.transact(lambda tx: tx.put_seal(seal(second, 3.0, KEY)))
    assert store.transact(lambda tx: tx.audit_tip(), write=False) == (2, 2.0, second.digest)
    got = store.transact(
        lambda tx: (tx.audit_head(), tx.audit_entries(1, 2), tx.audit_seq_at(1.5), tx.seals(1, 10))
    )
    assert got[0] == second and got[1] == [first, second]
    assert got[2] == 1 and [s.seq for s in got[3]] == [2]


def test_webhook_cursors_roundtrip(store: Store) -> None:
    cursor = WebhookCursor("a", 5, 2, 100.0, "owner", 130.0, "HTTP 500")
    store.transact(lambda tx: tx.put_webhook_cursor(cursor))
    assert store.transact(lambda tx: tx.get_webhook_cursor("a")) == cursor


def test_track_reports_are_numbered_in_commit_order_and_pruned(store: Store) -> None:
    def report(aircraft: str, received: float) -> TrackReport:
        return TrackReport("a", aircraft, received, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, None, received)

    store.transact(lambda tx: tx.add_track_reports([report("x", 1.0), report("y", 2.0)]))
    store.transact(lambda tx: tx.add_track_reports([report("z", 3.0)]))
    got = store.transact(lambda tx: tx.track_reports_after(0, 10))
    assert [r.aircraft_id for r in got] == ["x", "y", "z"]
    assert [r.seq for r in got] == sorted({r.seq for r in got})
    assert [
        r.aircraft_id for r in store.transact(lambda tx: tx.track_reports_after(got[0].seq, 10))
    ] == ["y", "z"]
    assert store.transact(lambda tx: tx.prune_track_reports(2.5)) == 2
    lease = TacticalLease("me", 10.0, 1.0)
    store.transact(lambda tx: tx.put_tactical_lease(lease))
    assert store.transact(lambda tx: tx.get_tactical_lease()) == lease
