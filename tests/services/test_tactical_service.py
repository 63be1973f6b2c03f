"""The tactical service: tracks in through the store, one cycle owner, alerts out as events.

Every clock is injected: reports are stamped with the test clock and the cycle runs when the
test says so, so nothing here sleeps or depends on timing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deconfliction.core.errors import Forbidden, InvalidInput, LimitExceeded
from deconfliction.core.model import OperationState
from deconfliction.geo import Circle, Volume
from deconfliction.services.strategic import Filing, Strategic
from deconfliction.services.tactical import (
    CONFLICT,
    NONCONFORMANCE,
    TacticalMonitor,
    TrackIngest,
    tactical_settings,
)
from deconfliction.stores.base import Store
from deconfliction.stores.sqlite import SqliteStore

from ..conftest import NO_LEAD_TIME, Clock

R = 6_371_000.0


def north_of(lat: float, metres: float) -> float:
    return lat + math.degrees(metres / R)


def report(
    aircraft: str,
    t: float,
    lat: float,
    *,
    lon: float = 2.0,
    alt: float = 3000.0,
    gs: float = 200.0,
    trk: float = 0.0,
    vs: float = 0.0,
    operation: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "aircraft_id": aircraft,
        "time": t,
        "lat": lat,
        "lon": lon,
        "altitude_m": alt,
        "ground_speed_mps": gs,
        "track_deg": trk,
        "vertical_rate_mps": vs,
    }
    if operation:
        out["operation_id"] = operation
    return out


@dataclass
class Sky:
    store: Store
    clock: Clock
    strategic: Strategic
    ingest: TrackIngest
    monitor: TacticalMonitor
    parties: dict[str, str]
    seen: dict[str, int] = field(default_factory=dict)

    def send(self, party: str, *reports: dict[str, Any]) -> Any:
        return self.ingest.ingest(self.parties[party], list(reports))

    def cycle(self) -> Any:
        return self.monitor.run_once()

    def new_events(self, party: str, kind: str | None = None) -> list[Any]:
        """Events of ``party`` since the last call (optionally of one kind)."""
        pid = self.parties[party]
        events = self.strategic.events(pid, after=self.seen.get(pid, 0), limit=1000)
        if events:
            self.seen[pid] = events[-1].id
        return [e for e in events if kind is None or e.kind == kind]

    def tick(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)


def make_sky(store: Store, clock: Clock, **settings: Any) -> Sky:
    strategic = Strategic(store, clock=clock, hotline_policy=NO_LEAD_TIME)
    parties = {name: strategic.add_party(name).id for name in ("blue", "red", "green")}
    tactical = tactical_settings(**settings)
    return Sky(
        store,
        clock,
        strategic,
        TrackIngest(store, tactical, clock),
        TacticalMonitor(store, tactical, clock),
        parties,
    )


@pytest.fixture
def sky(store: Store, clock: Clock) -> Sky:
    return make_sky(store, clock)


def converging(sky: Sky, gap_m: float, *, alt_b: float = 3000.0) -> None:
    """Blue A at 48N flying north, red B ``gap_m`` north of it flying south, both at 200 m/s."""
    now = sky.clock()
    sky.send("blue", report("A", now, 48.0))
    sky.send("red", report("B", now, north_of(48.0, gap_m), trk=180.0, alt=alt_b))


# Ingest ----------------------------------------------------------------------------------------


def test_impossible_values_refuse_the_batch_naming_each_report(sky: Sky) -> None:
    now = sky.clock()
    bad = [
        report("A", now, 48.0),
        report("B", now, 95.0),
        {**report("C", now, 48.0), "ground_speed_mps": "fast"},
        {k: v for k, v in report("D", now, 48.0).items() if k != "altitude_m"},
        {**report("E", now, 48.0), "altitude_ft": 10_000},
        report("F", now + 60.0, 48.0),
        report("G", now, 48.0, vs=float("nan")),
    ]
    with pytest.raises(InvalidInput) as refused:
        sky.send("blue", *bad)
    assert refused.value.code == "invalid_report"
    problems = refused.value.details["problems"]
    assert {(p["report"], p["field"]) for p in problems} == {
        (1, "lat"),
        (2, "ground_speed_mps"),
        (3, "altitude_m"),
        (4, "altitude_ft"),
        (5, "time"),
        (6, "vertical_rate_mps"),
    }
    assert "report 1" in refused.value.message
    # Refused whole: not even the good report was stored.
    assert sky.store.transact(lambda tx: tx.track_reports_after(0, 10), write=False) == []


def test_too_many_reports_in_one_batch_are_refused(store: Store, clock: Clock) -> None:
    ingest = TrackIngest(store, tactical_settings(), clock)
    ingest.settings = type(ingest.settings)(max_reports_per_request=2)
    with pytest.raises(LimitExceeded) as refused:
        ingest.ingest("p", [report(str(k), clock(), 48.0) for k in range(3)])
    assert refused.value.code == "too_many_reports"


def test_times_may_be_iso_8601_and_old_reports_are_not_stored(sky: Sky) -> None:
    result = sky.send(
        "blue",
        {**report("A", 0, 48.0), "time": "2027-01-15T08:00:00Z"},
        report("B", sky.clock() - 31.0, 48.0),
    )
    assert (result.received, result.stored, result.too_old) == (2, 1, 1)


def test_reports_under_unknown_or_foreign_operations_are_refused(sky: Sky) -> None:
    theirs = sky.strategic.file_operation(
        sky.parties["red"], Filing([circle(48.0, 2.0, 5_000.0, sky.clock())])
    ).operation
    now = sky.clock()
    with pytest.raises(InvalidInput) as unknown:
        sky.send("blue", report("A", now, 48.0), report("A2", now, 48.0, operation="nope"))
    assert unknown.value.code == "unknown_operation"
    assert unknown.value.details == {"operation_id": "nope", "reports": [1]}
    with pytest.raises(Forbidden) as foreign:
        sky.send("blue", report("A", now, 48.0, operation=theirs.id))
    assert foreign.value.code == "not_your_operation"


def test_reordered_and_duplicated_reports_leave_the_newest_state(sky: Sky) -> None:
    now = sky.clock()
    newest = report("A", now, 48.02)
    sky.send("blue", newest, report("A", now - 2.0, 48.0))  # newest first within a batch
    sky.send("blue", report("A", now - 1.0, 48.01))  # a late, older report
    sky.send("blue", newest, newest)  # duplicates
    sky.cycle()
    table = sky.monitor.monitor.table
    snap = table.snapshot(now, extrapolate=False)
    assert len(snap) == 1 and snap.lat[0] == pytest.approx(48.02)
    assert table.totals.accepted == 1
    assert table.totals.stale + table.totals.duplicate == 4


def test_two_parties_may_use_the_same_aircraft_id(sky: Sky) -> None:
    now = sky.clock()
    sky.send("blue", report("X1", now, 48.0))
    sky.send("red", report("X1", now, north_of(48.0, 50_000.0), trk=180.0))
    result = sky.cycle()
    assert len(result.result.snapshot) == 2
    assert [c.kind for c in result.result.changes] == ["new"]


# Conflicts -------------------------------------------------------------------------------------


def test_converging_aircraft_alert_both_parties_once_then_end(sky: Sky) -> None:
    converging(sky, 100_000.0)
    sky.cycle()
    blue = sky.new_events("blue", CONFLICT)
    red = sky.new_events("red", CONFLICT)
    assert [e.payload["change"] for e in blue] == ["new"]
    assert [e.payload["change"] for e in red] == ["new"]
    b, r = blue[0].payload, red[0].payload
    assert b["alert_id"] == r["alert_id"]
    assert (b["aircraft"]["aircraft_id"], b["other"]["aircraft_id"]) == ("A", "B")
    assert (r["aircraft"]["aircraft_id"], r["other"]["aircraft_id"]) == ("B", "A")
    assert r["other"]["party_id"] == sky.parties["blue"]
    assert b["tcpa_s"] == pytest.approx(250.0, rel=1e-6)
    assert b["tin_s"] == pytest.approx((100_000.0 - 9_260.0) / 400.0, rel=1e-6)
    assert b["dcpa_m"] < 1.0 and b["lost_now"] is False and b["severity"] == "predicted"
    for key in ("tout_s", "distance_m", "loss_at", "opened_at"):
        assert key in b

    # The same encounter a second later, exactly as predicted: nothing new to say.
    sky.tick()
    converging(sky, 100_000.0 - 400.0)
    sky.cycle()
    assert sky.new_events("blue") == [] and sky.new_events("red") == []

    # Suddenly much closer: separation lost, a material change.
    sky.tick()
    converging(sky, 5_000.0)
    sky.cycle()
    continuing = sky.new_events("red", CONFLICT)
    assert [(e.payload["change"], e.payload["severity"]) for e in continuing] == [
        ("continuing", "lost")
    ]
    assert continuing[0].payload["lost_now"] is True
    assert [e.payload["change"] for e in sky.new_events("blue", CONFLICT)] == ["continuing"]

    # B climbs away: the alert ends, for both.
    sky.tick()
    converging(sky, 5_000.0, alt_b=6_000.0)
    sky.cycle()
    assert [e.payload["change"] for e in sky.new_events("blue", CONFLICT)] == ["ended"]
    assert [e.payload["change"] for e in sky.new_events("red", CONFLICT)] == ["ended"]


def test_conflict_alerts_carry_nothing_of_the_other_party_beyond_the_aircraft(sky: Sky) -> None:
    now = sky.clock()
    op = sky.strategic.file_operation(
        sky.parties["blue"],
        Filing([circle(48.0, 2.0, 200_000.0, now)], details=_details("secret sortie")),
    ).operation
    sky.send(
        "blue",
        report("A", now, 48.0, operation=op.id),
        report("C", now, 48.5, lon=3.0, trk=90.0, operation=op.id),  # another blue aircraft
    )
    sky.send("red", report("B", now, north_of(48.0, 100_000.0), trk=180.0))
    sky.cycle()
    (event,) = sky.new_events("red", CONFLICT)
    text = json.dumps(event.payload)
    assert op.id not in text and "secret" not in text and '"C"' not in text
    assert "operation_id" not in event.payload["other"]
    assert set(event.payload["other"]) == {
        "party_id",
        "aircraft_id",
        "tracked",
        "reported_at",
        "lat",
        "lon",
        "altitude_m",
        "ground_speed_mps",
        "track_deg",
        "vertical_rate_mps",
    }
    # The owner sees its own operation on its own aircraft.
    (mine,) = sky.new_events("blue", CONFLICT)
    assert mine.payload["aircraft"]["operation_id"] == op.id


def test_same_party_pairs_are_ignored_unless_the_deployment_watches_them(
    store: Store, clock: Clock
) -> None:
    for same_party, expected in ((False, 0), (True, 1)):
        sky = make_sky(
            SqliteStore(store.path + f".{same_party}", synchronous="OFF"),
            clock,
            same_party=same_party,
        )  # type: ignore[attr-defined]
        now = clock()
        sky.send("blue", report("A", now, 48.0), report("B", now, 48.5, trk=180.0))
        assert len(sky.cycle().result.changes) == expected
        assert len(sky.new_events("blue", CONFLICT)) == expected
        sky.store.close()


def test_parties_may_agree_a_smaller_zone_between_them(store: Store, clock: Clock) -> None:
    sky = make_sky(
        store, clock, pairs=[{"parties": ["blue", "red"], "rpz_m": 1_000.0, "lookahead_s": 60.0}]
    )
    now = clock()
    # Head-on 100 km apart: in conflict under 5 NM / 300 s, not under 1 km / 60 s.
    sky.send("blue", report("A", now, 48.0))
    sky.send("red", report("B", now, north_of(48.0, 100_000.0), trk=180.0))
    # The same geometry between blue and green, further north: the default zone applies.
    sky.send("blue", report("A2", now, 50.0))
    sky.send("green", report("G", now, north_of(50.0, 100_000.0), trk=180.0))
    sky.cycle()
    assert [e.payload["other"]["aircraft_id"] for e in sky.new_events("blue", CONFLICT)] == ["G"]
    assert sky.new_events("red", CONFLICT) == []


def test_alert_changes_are_recorded_in_the_audit_log(sky: Sky) -> None:
    converging(sky, 100_000.0)
    sky.cycle()
    head = sky.store.transact(lambda tx: tx.audit_head(), write=False)
    assert head.action == CONFLICT and head.actor == "service"
    assert head.payload["change"] == "new"
    assert {p["aircraft_id"] for p in head.payload["pair"]} == {"A", "B"}
    assert "lat" not in json.dumps(head.payload)  # positions stay in the parties' feeds


# Conformance -----------------------------------------------------------------------------------


def circle(lat: float, lon: float, radius_m: float, now: float) -> Volume:
    return Volume.create(Circle.create(lat, lon, radius_m), 0.0, 4_000.0, now - 60.0, now + 3_600.0)


def _details(purpose: str) -> Any:
    from deconfliction.core.model import OperationDetails

    return OperationDetails(purpose=purpose)


@pytest.fixture
def flight(sky: Sky) -> tuple[Sky, str, str]:
    """Blue's operation: 5 km around 48N 2E. Red's: 5 km around 48.3N 2E, north of it."""
    now = sky.clock()
    blue = sky.strategic.file_operation(
        sky.parties["blue"], Filing([circle(48.0, 2.0, 5_000.0, now)], OperationState.ACTIVATED)
    ).operation
    red = sky.strategic.file_operation(
        sky.parties["red"], Filing([circle(48.3, 2.0, 5_000.0, now)], OperationState.ACTIVATED)
    ).operation
    return sky, blue.id, red.id


def fly(sky: Sky, op: str, lat: float, seconds: int) -> None:
    """Blue A reports at ``lat`` (heading north) and a cycle runs, once a second."""
    for _ in range(seconds):
        sky.send("blue", report("A", sky.clock(), lat, gs=100.0, operation=op))
        sky.cycle()
        sky.tick()


def test_an_aircraft_inside_its_operation_raises_nothing(flight) -> None:
    sky, blue_op, _ = flight
    fly(sky, blue_op, 48.0, 30)
    assert sky.new_events("blue") == [] and sky.new_events("red") == []


def test_an_excursion_shorter_than_the_grace_period_raises_nothing(flight) -> None:
    sky, blue_op, _ = flight
    fly(sky, blue_op, 48.0, 2)
    fly(sky, blue_op, 48.1, 10)  # outside for 9 s of cycles: within the 10 s grace
    fly(sky, blue_op, 48.0, 2)
    fly(sky, blue_op, 48.1, 10)  # a new excursion starts its own grace period
    fly(sky, blue_op, 48.0, 2)
    assert sky.new_events("blue") == [] and sky.new_events("red") == []


def test_a_long_excursion_alerts_the_owner_and_the_threatened_party(flight) -> None:
    sky, blue_op, red_op = flight
    fly(sky, blue_op, 48.0, 2)
    fly(sky, blue_op, 48.1, 11)  # outside 10 s: not yet
    assert sky.new_events("blue") == []
    fly(sky, blue_op, 48.1, 1)  # 11 s: raised
    (owner,) = sky.new_events("blue", NONCONFORMANCE)
    (threatened,) = sky.new_events("red", NONCONFORMANCE)
    assert sky.new_events("green") == []
    assert owner.payload["change"] == threatened.payload["change"] == "new"
    assert owner.payload["outside"] == "outside the footprint"
    assert owner.payload["operation_id"] == blue_op
    assert owner.payload["aircraft"]["operation_id"] == blue_op
    assert threatened.payload["your_operations"] == [red_op]
    assert threatened.payload["aircraft"]["aircraft_id"] == "A"
    assert "operation_id" not in threatened.payload["aircraft"]
    assert owner.payload["alert_id"] == threatened.payload["alert_id"]

    fly(sky, blue_op, 48.1, 5)  # still outside: nothing more
    assert sky.new_events("blue") == [] and sky.new_events("red") == []

    # The owner reacts through the existing update endpoint.
    op = sky.strategic.get_operation(blue_op)
    sky.strategic.update_operation(
        sky.parties["blue"],
        blue_op,
        op.version,
        Filing(op.volumes, OperationState.NONCONFORMING),
    )
    sky.new_events("red")  # the strategic side may tell red of the change; not under test

    fly(sky, blue_op, 48.0, 1)  # back inside: ended, for everyone told
    assert [e.payload["change"] for e in sky.new_events("blue", NONCONFORMANCE)] == ["ended"]
    assert [e.payload["change"] for e in sky.new_events("red", NONCONFORMANCE)] == ["ended"]
    actions = [
        e.action for e in sky.store.transact(lambda tx: tx.audit_entries(1, 10_000), write=False)
    ]
    assert actions.count(NONCONFORMANCE) == 2


def test_a_party_threatened_later_in_an_excursion_is_told_then(flight) -> None:
    sky, blue_op, red_op = flight

    def fly_heading(trk: float, seconds: int) -> None:
        for _ in range(seconds):
            sky.send("blue", report("A", sky.clock(), 48.1, gs=100.0, trk=trk, operation=blue_op))
            sky.cycle()
            sky.tick()

    fly_heading(180.0, 12)  # outside, heading south: away from red's operation
    assert [e.payload["change"] for e in sky.new_events("blue", NONCONFORMANCE)] == ["new"]
    assert sky.new_events("red") == []
    fly_heading(0.0, 1)  # turns north: now it threatens red's operation
    (event,) = sky.new_events("red", NONCONFORMANCE)
    assert event.payload["change"] == "new" and event.payload["your_operations"] == [red_op]
    assert sky.new_events("blue") == []
    fly_heading(0.0, 3)
    assert sky.new_events("red") == []


def test_an_aircraft_flying_too_high_or_after_its_window_is_nonconforming(flight) -> None:
    sky, blue_op, _ = flight
    for _ in range(12):
        sky.send("blue", report("A", sky.clock(), 48.0, gs=0.0, alt=4_500.0, operation=blue_op))
        sky.cycle()
        sky.tick()
    (event,) = sky.new_events("blue", NONCONFORMANCE)
    assert event.payload["outside"] == "outside the altitude band"


def test_a_tolerance_widens_the_volumes(store: Store, clock: Clock) -> None:
    sky = make_sky(store, clock, lateral_tolerance_m=2_000.0)
    now = clock()
    op = sky.strategic.file_operation(
        sky.parties["blue"], Filing([circle(48.0, 2.0, 5_000.0, now)])
    ).operation
    lat = north_of(48.0, 6_000.0)  # 1 km outside the circle, within the tolerance
    fly(sky, op.id, lat, 15)
    assert sky.new_events("blue") == []


# The lease -------------------------------------------------------------------------------------


def test_one_cycle_owner_at_a_time_and_a_takeover_when_it_stops(
    sky: Sky, clock: Clock, tmp_path: Path
) -> None:
    other_store = SqliteStore(sky.store.path, synchronous="OFF")  # type: ignore[attr-defined]
    try:
        second = TacticalMonitor(other_store, sky.monitor.settings, clock)
        converging(sky, 100_000.0)
        assert sky.cycle() is not None
        assert second.run_once() is None and not second.holding
        assert len(sky.new_events("red", CONFLICT)) == 1

        for _ in range(3):  # both keep trying; only the holder runs, nothing is repeated
            sky.tick()
            assert sky.cycle() is not None
            assert second.run_once() is None
        assert sky.new_events("red") == []

        # The holder stops renewing; after the lease (5 s) the other one takes over.
        sky.tick(4.0)
        assert second.run_once() is None  # 4 s after the last renewal: still held
        sky.tick(1.5)
        converging(sky, 100_000.0 - 400.0 * 5.5)
        assert second.run_once() is not None and second.holding
        # It started with an empty book: the live conflict is raised again, as new.
        assert [e.payload["change"] for e in sky.new_events("red", CONFLICT)] == ["new"]

        # The old holder comes back: it finds the lease taken and drops its state.
        assert sky.cycle() is None and not sky.monitor.holding
        assert sky.new_events("red") == []

        # A clean stop hands over at once.
        second.release()
        assert sky.cycle() is not None
    finally:
        other_store.close()


def test_old_reports_are_pruned_by_the_cycle_owner(sky: Sky) -> None:
    converging(sky, 100_000.0)
    sky.cycle()
    sky.tick(61.0)
    sky.cycle()
    assert sky.store.transact(lambda tx: tx.track_reports_after(0, 10), write=False) == []


def test_a_holder_that_stalls_past_its_lease_writes_nothing(sky: Sky, clock: Clock) -> None:
    second = TacticalMonitor(sky.store, sky.monitor.settings, clock)
    converging(sky, 100_000.0)
    sky.cycle()
    assert len(sky.new_events("red", CONFLICT)) == 1

    # The holder stalls in the middle of a cycle for longer than its lease; another takes over.
    holder = sky.monitor.monitor
    step = holder.step

    def stalled(now: float, volumes: Any = None) -> Any:
        result = step(now, volumes)
        clock.advance(6.0)
        assert second.run_once() is not None
        return result

    holder.step = stalled  # type: ignore[method-assign]
    sky.tick()
    converging(sky, 5_000.0)  # separation lost: the stalled holder would say "continuing"
    assert sky.cycle() is None and not sky.monitor.holding
    # Only the new holder spoke: it raised the conflict afresh, as lost.
    assert [(e.payload["change"], e.payload["severity"]) for e in sky.new_events("red")] == [
        ("new", "lost")
    ]
