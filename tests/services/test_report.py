"""The coordination-meeting review page: the right numbers and names, nothing fetched from
outside, every text escaped, and a sensible page for a period where nothing happened."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from deconfliction.core.audit import next_entry
from deconfliction.core.errors import InvalidInput
from deconfliction.core.model import (
    Liveness,
    Message,
    Notice,
    Party,
    Receipt,
)
from deconfliction.services.report import bar_chart_svg, build_report, histogram_svg
from deconfliction.stores.base import Store, Tx

T = TypeVar("T")

D0 = 1_799_971_200.0
"""2027-01-15T00:00:00Z, the start of the reviewed period."""
H = 3_600.0
END = D0 + 72 * H
NOW = END + H

A, B, C = "p-north", "p-south", "p-drones"


def write(tx: Tx, op: str, owner: str, at: float, *conflicts: str) -> None:
    """A write of an operation as the services record it (its audit entry)."""
    payload = {
        "operation": {"id": op, "version": f"v-{op}-{at:.0f}", "state": "Accepted"},
        "key": [],
        "conflicts": [[c, f"v-{c}"] for c in conflicts],
    }
    tx.audit_append(next_entry(tx.audit_head(), at, owner, "operation.file", op, payload))


def notice(op: str, owner: str, party: str, told: float, lead_min: float, required_min: float):
    return Notice(op, owner, party, told, told + lead_min * 60, required_min * 60,
                  lead_min < required_min)  # fmt: skip


def populate(tx: Tx, names: dict[str, str] | None = None) -> None:
    names = names or {A: "Northern Air Force", B: "Southern ANSP", C: "Eastern Drones"}
    for pid, name in names.items():
        tx.add_party(Party(pid, name, D0 - 30 * 86_400))

    # Notices: three in the period (two late), one late one before it.
    tx.put_notices(
        [
            notice("op-a1", A, B, D0 + 1 * H, 30, 15),
            notice("op-a2", A, B, D0 + 26 * H, 5, 15),
            notice("op-b2", B, C, D0 + 49 * H, 20, 30),
            notice("op-old", A, C, D0 - H, 1, 15),
        ]
    )

    # Hotline: B acknowledges in 60 s, C never does (overdue); A acknowledges in 120 s.
    tx.put_message(Message("m1", A, (B, C), "warning", 2, "Tanker track moved north", D0 + 3 * H,
                           ack_deadline=D0 + 3 * H + 600))  # fmt: skip
    tx.put_receipt(Receipt("m1", B, D0 + 3 * H + 60, 0, None))
    tx.put_receipt(Receipt("m1", C, None, 3, D0 + 4 * H))
    tx.put_message(Message("m2", B, (A,), "query", 0, "Confirm exercise end", D0 + 30 * H))
    tx.put_receipt(Receipt("m2", A, D0 + 30 * H + 120, 0, None))

    # Write record: op-b1 predates the period; op-a1 conflicts with it (and again on update,
    # which is the same conflict); op-a2 is a second conflict a day later.
    write(tx, "op-b1", B, D0 - 2 * H)
    write(tx, "op-a1", A, D0 + 1 * H, "op-b1")
    write(tx, "op-a1", A, D0 + 5 * H, "op-b1")
    write(tx, "op-a2", A, D0 + 26 * H, "op-b1")
    # The conflict event for the first conflict repeats it; one conflict is only an event.
    tx.add_event(
        B,
        "conflict",
        D0 + 1 * H,
        {"operation": {"id": "op-a1", "owner": A}, "conflicts_with": ["op-b1"]},
    )
    tx.add_event(C, "conflict", D0 + 50 * H,
                 {"operation": {"id": "op-b2", "owner": B}, "conflicts_with": ["op-c1"]})  # fmt: skip

    # One tactical alert, in both parties' feeds, then its end; one conformance alert.
    for party in (A, B):
        tx.add_event(party, "alert.conflict", D0 + 4 * H,
                     {"alert_id": "t1", "severity": "predicted", "other_party": A if party == B else B})  # fmt: skip
    tx.add_event(A, "alert.conflict", D0 + 4 * H + 90, {"alert_id": "t1", "change": "ended"})
    tx.add_event(C, "alert.nonconformance", D0 + 27 * H, {"operation_id": "op-c1"})

    # C goes Unresponsive, then Down, then Normal again an hour after it left Normal.
    changes = [(10 * H, "Unresponsive", "Normal"), (10 * H + 600, "Down", "Unresponsive"),
               (11 * H, "Normal", "Down")]  # fmt: skip
    for at, state, previous in changes:
        for feed in (A, B):
            tx.add_event(feed, "availability", D0 + at,
                         {"party_id": C, "availability": state, "previous": previous})  # fmt: skip
    tx.put_liveness(Liveness(A, NOW - 5, "Normal", D0 - 86_400))
    tx.put_liveness(Liveness(B, NOW - 5, "Normal", D0 - 86_400))
    tx.put_liveness(Liveness(C, NOW - 5, "Normal", D0 + 11 * H))


def headline(page: str) -> dict[str, str]:
    cards = re.findall(r'<div class="value">(.*?)</div><div class="label">(.*?)</div>', page)
    return {label: value for value, label in cards}


@pytest.fixture
def page(store: Store) -> str:
    store.transact(populate)
    return build_report(store, D0, END, now=NOW)


def test_headline_numbers(page: str) -> None:
    assert headline(page) == {
        "Operations filed": "2",
        "Conflicts": "3",
        "Late notices": "2",
        "Hotline messages": "2",
        "Median ack time": "1.5 min",
        "Tactical alerts": "1",
        "Conformance alerts": "1",
        "Availability incidents": "1",
    }
    assert "of 3 notices (67%)" in page
    assert "3 writes in all" in page
    assert "1 unacknowledged, 1 overdue" in page


def test_pages_use_party_names_not_ids(page: str) -> None:
    for name in ("Northern Air Force", "Southern ANSP", "Eastern Drones"):
        assert name in page
    text = re.sub(r"<[^>]+>", " ", page)
    for pid in (A, B, C):
        assert pid not in text


def test_late_notices_are_listed_with_lead_and_required(page: str) -> None:
    late = page.split("Late notices</h2>")[1].split("<h2>")[0]
    assert "<code>op-a2</code>" in late and "<code>op-b2</code>" in late
    assert "op-a1" not in late and "op-old" not in late
    assert "2027-01-16 02:00Z" in late
    for cell in ("5 min", "15 min", "10 min", "20 min", "30 min"):
        assert f'<td class="num">{cell}</td>' in late


def test_conflicts_are_counted_once_per_pair_of_operations(page: str) -> None:
    conflicts = page.split("Conflicts</h2>")[1].split("<h2>")[0]
    assert 'Northern Air Force ↔ Southern ANSP</td><td class="num">2</td>' in conflicts
    assert 'Eastern Drones ↔ Southern ANSP</td><td class="num">1</td>' in conflicts
    assert "<svg" in conflicts and "Conflicts per day" in conflicts


def test_overdue_acknowledgements_are_listed(page: str) -> None:
    acks = page.split("Hotline acknowledgements</h2>")[1].split("<h2>")[0]
    overdue = acks.split("Overdue and late acknowledgements")[1]
    assert overdue.count("<tr>") == 2  # the header and C's receipt; B acknowledged in time
    assert '<td>not acknowledged</td><td class="num">2 d 22 h</td>' in overdue
    assert "Tanker track moved north" not in acks  # the words stay with sender and recipients
    assert "not acked" in acks  # the histogram's bar for receipts never acknowledged


def test_alerts_merge_feed_copies_and_skip_follow_ups(page: str) -> None:
    alerts = page.split("Tactical and conformance alerts</h2>")[1].split("<h2>")[0]
    assert (
        'Northern Air Force ↔ Southern ANSP</td><td class="num">1</td><td class="num">0</td>'
        in alerts
    )
    assert "alert.conflict: 1" in alerts and "alert.nonconformance: 1" in alerts


def test_availability_incident_runs_from_leaving_normal_to_coming_back(page: str) -> None:
    live = page.split("Availability</h2>")[1]
    assert "<h3>Incidents</h3>" in live
    assert "2027-01-15 10:00Z" in live and "2027-01-15 11:00Z" in live
    assert '<td class="num">60 min</td>' in live and ">Down</span>" in live


def test_incidents_already_running_when_the_period_starts_count(store: Store) -> None:
    def setup(tx: Tx) -> None:
        tx.add_party(Party(A, "Northern Air Force", D0))
        tx.add_party(Party(B, "Southern ANSP", D0))
        tx.put_liveness(Liveness(B, D0 - 86_400, "Down", D0 - 86_400))
        tx.add_event(A, "availability", D0 + 2 * H,
                     {"party_id": A, "availability": "Normal", "previous": "Unresponsive"})  # fmt: skip

    store.transact(setup)
    page = build_report(store, D0, END, now=NOW)
    assert headline(page)["Availability incidents"] == "2"
    incidents = page.split("<h3>Incidents</h3>")[1]
    assert "<td>before the period</td>" in incidents and "≥ 2 h 00 min" in incidents
    assert "<td>ongoing</td>" in incidents and "4 d 0 h" in incidents  # B: Down since D0 - 1 d


def test_page_is_self_contained(page: str) -> None:
    lowered = page.lower()
    for outside in ("http://", "https://", "<script", "src=", "@import", "url(", "<link"):
        assert outside not in lowered
    assert lowered.startswith("<!doctype html>")
    assert "@media print" in page


def test_an_empty_period_renders_a_sensible_page(store: Store) -> None:
    page = build_report(store, D0, END, now=NOW)
    assert headline(page)["Conflicts"] == "0"
    assert headline(page)["Median ack time"] == "–"
    for line in ("No notices in this period.", "No conflicts in this period.",
                 "No hotline messages in this period.", "No alerts in this period.",
                 "No parties yet."):  # fmt: skip
        assert line in page


def test_a_quiet_period_of_a_busy_store_renders(store: Store) -> None:
    store.transact(populate)
    later = END + 365 * 86_400
    page = build_report(store, later, later + 90 * 86_400, now=later + 91 * 86_400)
    assert set(headline(page).values()) <= {"0", "–"}
    assert "No late notices in this period." in page
    assert "No availability incidents in this period." in page


def test_an_hour_long_period_renders(page: str, store: Store) -> None:
    hour = build_report(store, D0 + 3 * H, D0 + 4 * H, now=NOW)
    assert headline(hour)["Hotline messages"] == "1"


def test_hostile_text_is_escaped(store: Store) -> None:
    hostile = "<script>alert(1)</script>"
    store.transact(lambda tx: populate(tx, {A: hostile, B: "B & <b>Co</b>", C: '"quoted"'}))
    store.transact(lambda tx: tx.put_message(
        Message("m3", A, (B,), "text", 0, "<img src=x onerror=alert(1)>", D0 + 5 * H,
                ack_deadline=D0 + 6 * H)))  # fmt: skip
    store.transact(lambda tx: tx.put_receipt(Receipt("m3", B, None, 1, None)))
    page = build_report(store, D0, END, now=NOW, title=f"Review {hostile}")
    assert "<script" not in page and "<img" not in page and "<b>Co" not in page
    assert "onerror" not in page  # message words never reach the shared page at all
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "B &amp; &lt;b&gt;Co&lt;/b&gt;" in page


def test_reads_in_one_read_transaction(store: Store) -> None:
    store.transact(populate)
    calls: list[bool] = []

    class Spy:
        def transact(
            self, fn: Callable[[Tx], T], *, write: bool = True, priority: int = 0, touches=()
        ) -> T:
            calls.append(write)
            return store.transact(fn, write=write)

    build_report(Spy(), D0, END, now=NOW)  # type: ignore[arg-type]
    assert calls == [False]


@pytest.mark.parametrize("start, end", [(D0, D0), (END, D0), (float("nan"), END)])
def test_a_period_must_end_after_it_starts(store: Store, start: float, end: float) -> None:
    with pytest.raises(InvalidInput):
        build_report(store, start, end, now=NOW)


@pytest.mark.parametrize("values", [[], [0.0], [-3.0, 0.0, 2.5, 1e6]])
def test_charts_draw_any_numbers(values: list[Any]) -> None:
    edges = [0.0, 1.0, 2.0, 3.0]
    hist = histogram_svg([v for v in values if v >= 0], edges, marks=[(1.5, "limit")])
    bars = bar_chart_svg([str(i) for i in range(len(values))], [abs(v) for v in values])
    for svg in (hist, bars):
        assert svg.startswith("<svg") and svg.endswith("</svg>")
        assert "nan" not in svg and "inf" not in svg
