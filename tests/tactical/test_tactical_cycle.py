"""One cycle after another: reports in, alert changes out, in the documented order."""

from __future__ import annotations

import numpy as np
import pytest

from deconfliction.tactical.cycle import TacticalCycle
from deconfliction.tactical.errors import TacticalError
from deconfliction.tactical.tracks import ReportBatch

R = 6371000.0


def reports(
    now: float, north_of_a_m: float, alt_b: float = 3000.0, lat_b_extra: float = 0.0
) -> ReportBatch:
    """A (blue) at 48N 2E flying north at 200 m/s; B (red) ``north_of_a_m`` ahead flying south."""
    lat_b = 48.0 + np.degrees(north_of_a_m / R) + lat_b_extra
    return ReportBatch(
        ids=["A", "B"],
        party=["blue", "red"],
        time=np.array([now, now]),
        lat=np.array([48.0, lat_b]),
        lon=np.array([2.0, 2.0]),
        alt=np.array([3000.0, alt_b]),
        gs=np.array([200.0, 200.0]),
        trk=np.array([0.0, 180.0]),
        vs=np.array([0.0, 0.0]),
    )


def test_head_on_encounter_lifecycle() -> None:
    cycle = TacticalCycle()
    first = cycle.step(reports(0.0, 100_000.0), now=0.0)  # CPA in 250 s: predicted
    assert [(c.kind, c.alert.pair, c.alert.severity.value) for c in first.changes] == [
        ("new", ("A", "B"), "predicted")
    ]
    assert first.conflicts.tin[0] == pytest.approx((100_000.0 - 9260.0) / 400.0, rel=1e-6)

    quiet = cycle.step(None, now=1.0)  # no report: dead reckoning keeps the prediction steady
    assert quiet.changes == [] and len(quiet.conflicts) == 1

    lost = cycle.step(reports(2.0, 5_000.0), now=2.0)  # suddenly 5 km apart: separation lost
    assert [(c.kind, c.reason) for c in lost.changes] == [("continuing", "predicted -> lost")]

    apart = cycle.step(reports(3.0, 5_000.0, alt_b=6000.0), now=3.0)  # B climbed away
    assert [c.kind for c in apart.changes] == ["ended"]
    assert cycle.book == {}


def test_silent_aircraft_expire_and_bad_batches_follow_the_policy() -> None:
    strict = TacticalCycle()
    strict.step(reports(0.0, 100_000.0), now=0.0)
    assert strict.step(None, now=31.0).dropped == ["A", "B"]

    bad = reports(0.0, 100_000.0, lat_b_extra=50.0)  # B beyond the pole
    with pytest.raises(TacticalError):
        TacticalCycle().step(bad, now=0.0)
    lenient = TacticalCycle(drop_invalid=True)
    result = lenient.step(bad, now=0.0)
    assert result.refused == 1 and result.snapshot.ids == ("A",)
