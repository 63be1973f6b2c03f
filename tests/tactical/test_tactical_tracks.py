"""The track table keeps the newest valid report per aircraft, whatever the order of arrival."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deconfliction.tactical.errors import TacticalError
from deconfliction.tactical.tracks import ReportBatch, TrackTable


def report(aircraft: str = "A", at: float = 100.0, **over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": aircraft,
        "party": "blue",
        "time": at,
        "lat": 48.0,
        "lon": 2.0,
        "alt": 3000.0,
        "gs": 200.0,
        "trk": 90.0,
        "vs": 0.0,
    }
    return {**base, **over}


def batch(*records: dict[str, object]) -> ReportBatch:
    return ReportBatch.from_records(records)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("lat", 90.5, "lat=90.5 outside"),
        ("lon", -180.01, "lon=-180.01 outside"),
        ("gs", -1.0, "gs=-1.0 outside"),
        ("gs", 1000.5, "gs=1000.5 outside"),
        ("vs", 250.0, "vs=250.0 outside"),
        ("alt", 30001.0, "alt=30001.0 outside"),
        ("alt", -600.0, "alt=-600.0 outside"),
        ("trk", float("nan"), "trk is not a finite number"),
        ("time", float("inf"), "time is not a finite number"),
    ],
)
def test_impossible_values_refuse_the_batch_and_leave_the_table_alone(
    field: str, value: float, words: str
) -> None:
    table = TrackTable()
    table.ingest(batch(report("A", 100.0)))
    before = table.snapshot(100.0, extrapolate=False)
    with pytest.raises(TacticalError) as refused:
        table.ingest(batch(report("A", 101.0), report("B", 101.0, **{field: value})))
    assert refused.value.code == "invalid_report"
    assert any(words in line and line.startswith("report 1:") for line in refused.value.problems)
    after = table.snapshot(100.0, extrapolate=False)
    assert after.ids == before.ids == ("A",)
    assert after.time.tolist() == [100.0]


def test_missing_and_non_numeric_fields_are_named() -> None:
    incomplete = report("A")
    del incomplete["gs"]
    with pytest.raises(TacticalError) as refused:
        ReportBatch.from_records([incomplete, report("B", alt="high")])
    assert refused.value.problems == (
        "report 0: missing field 'gs'",
        "report 1: alt is not a number: 'high'",
    )


def test_all_problems_are_listed_at_once() -> None:
    with pytest.raises(TacticalError) as refused:
        TrackTable().ingest(batch(report("A", lat=95.0, gs=-3.0), report("", 1.0)))
    assert len(refused.value.problems) == 3
    assert "3 problem(s)" in refused.value.message


def test_stale_and_duplicate_reports_are_ignored_and_counted() -> None:
    table = TrackTable()
    assert table.ingest(batch(report("A", 100.0, alt=1000.0))).accepted == 1
    stats = table.ingest(batch(report("A", 99.0, alt=2000.0), report("A", 100.0, alt=3000.0)))
    assert (stats.accepted, stats.stale, stats.duplicate) == (0, 1, 1)
    assert table.snapshot(100.0).alt.tolist() == [1000.0]
    stats = table.ingest(batch(report("A", 102.0, alt=5000.0), report("A", 101.0, alt=4000.0)))
    assert (stats.accepted, stats.stale, stats.duplicate) == (1, 1, 0)
    assert table.snapshot(102.0).alt.tolist() == [5000.0]
    assert table.totals.accepted == 2 and table.totals.stale == 2 and table.totals.duplicate == 1


def test_reports_from_the_future_are_refused_when_now_is_given() -> None:
    table = TrackTable(future_tolerance_s=5.0)
    with pytest.raises(TacticalError):
        table.ingest(batch(report("A", 1000.0)), now=100.0)
    assert table.ingest(batch(report("A", 104.0)), now=100.0).accepted == 1


def test_silent_aircraft_are_dropped_after_max_age() -> None:
    table = TrackTable(max_age_s=30.0)
    table.ingest(batch(report("A", 100.0), report("B", 120.0), report("C", 125.0)))
    assert table.expire(130.0) == []
    assert table.expire(140.5) == ["A"]
    assert table.snapshot(140.5).ids == ("B", "C")
    table.ingest(batch(report("A", 141.0), report("B", 141.0, alt=777.0)))
    snap = table.snapshot(141.0)
    assert snap.ids == ("B", "C", "A")
    assert snap.alt.tolist() == [777.0, 3000.0, 3000.0]


def test_party_and_operation_follow_the_latest_report() -> None:
    table = TrackTable()
    table.ingest(
        batch(report("A", 1.0, party="blue", operation="op-1"), report("B", 1.0, party="red"))
    )
    table.ingest(batch(report("A", 2.0, party="blue", operation="op-2")))
    snap = table.snapshot(2.0)
    assert [snap.party_names[code] for code in snap.party] == ["blue", "red"]
    assert snap.operation == ("op-2", None)


def test_snapshot_dead_reckons_to_now() -> None:
    table = TrackTable()
    table.ingest(batch(report("E", 100.0, lat=0.0, lon=0.0, trk=90.0, gs=100.0, vs=-5.0)))
    moved = table.snapshot(110.0)
    assert moved.lon[0] == pytest.approx(np.degrees(1000.0 / 6371000.0))
    assert moved.lat[0] == pytest.approx(0.0, abs=1e-12)
    assert moved.alt[0] == pytest.approx(2950.0)
    assert moved.age.tolist() == [10.0]
    assert table.snapshot(110.0, extrapolate=False).lon[0] == 0.0


def test_track_angles_are_normalised() -> None:
    table = TrackTable()
    table.ingest(batch(report("A", trk=-90.0), report("B", trk=450.0)))
    assert table.snapshot(100.0).trk.tolist() == [270.0, 90.0]


reports = st.lists(
    st.tuples(st.sampled_from("ABCDE"), st.integers(0, 20), st.floats(0.0, 10000.0)),
    min_size=1,
    max_size=40,
    unique_by=lambda r: (r[0], r[1]),  # one report per aircraft and time
)


@settings(max_examples=150, deadline=None)
@given(reports=reports, data=st.data())
def test_final_state_does_not_depend_on_order_or_batching(
    reports: list[tuple[str, int, float]], data: st.DataObject
) -> None:
    """Any shuffle and any split into batches ends with the newest report of each aircraft."""
    shuffled = data.draw(st.permutations(reports))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shuffled)), max_size=5)))
    table = TrackTable()
    for start, stop in zip([0, *cuts], [*cuts, len(shuffled)], strict=True):
        part = shuffled[start:stop]
        if part:
            table.ingest(batch(*(report(a, float(t), alt=alt) for a, t, alt in part)))
    newest: dict[str, tuple[int, float]] = {}
    for aircraft, t, alt in reports:
        if aircraft not in newest or t > newest[aircraft][0]:
            newest[aircraft] = (t, alt)
    snap = table.snapshot(20.0, extrapolate=False)
    assert {
        a: (int(t), alt) for a, t, alt in zip(snap.ids, snap.time, snap.alt, strict=True)
    } == newest
    assert table.totals.accepted + table.totals.stale + table.totals.duplicate == len(reports)
