"""The ADS-B reader converts to SI at the edge and yields ordered batches; a replay slice works."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from deconfliction.tactical import adsb
from deconfliction.tactical.cycle import DetectionSettings, TacticalCycle

SAMPLE = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "adsb"
    / "paris-2021-10-07.csv.gz"
)
HEADER = "timestamp,icao24,callsign,latitude,longitude,altitude,groundspeed,track,vertical_rate\n"


def write(tmp_path: Path, body: str, name: str = "feed.csv.gz") -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(HEADER + body)
    else:
        path.write_text(HEADER + body, encoding="utf-8")
    return path


def test_units_are_converted_and_missing_cells_are_nan(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "2021-10-07 12:00:01+00:00,398564,AFR9455 ,48.3634,1.41348,20250,385,16.2721,-2560\n"
        "2021-10-07 12:00:01+00:00,3964f5,TVF90WP,48.7351,2.3604,,,,\n",
    )
    (only,) = list(adsb.read_batches(path))
    assert only.time == 1633608001.0
    assert only.ids == ("398564", "3964f5")
    assert only.callsign == ("AFR9455", "TVF90WP")
    assert only.alt[0] == pytest.approx(20250 * 0.3048)
    assert only.gs[0] == pytest.approx(385 * 1852 / 3600)
    assert only.vs[0] == pytest.approx(-2560 * 0.3048 / 60)
    assert only.trk[0] == pytest.approx(16.2721)
    assert np.isnan(only.alt[1]) and np.isnan(only.gs[1])
    assert only.complete().tolist() == [True, False]


def test_batches_per_step_last_row_wins_and_values_are_held(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "2021-10-07 12:00:01+00:00,a,X1,48.0,2.0,1000,100,90,0\n"
        "2021-10-07 12:00:02+00:00,a,X1,48.1,2.0,,,,\n"
        "2021-10-07 12:00:03+00:00,a,X1,48.2,2.0,1100,100,90,0\n"
        "2021-10-07 12:00:03+00:00,a,X1,48.3,2.0,1200,100,90,0\n",
        name="feed.csv",
    )
    plain = list(adsb.read_batches(path))
    assert [len(b) for b in plain] == [1, 1, 1]
    assert np.isnan(plain[1].alt[0])
    assert plain[2].lat[0] == 48.3
    held = list(adsb.read_batches(path, hold_s=5.0))
    assert held[1].alt[0] == pytest.approx(1000 * 0.3048)
    coarse = list(adsb.read_batches(path, step_s=10.0))
    assert len(coarse) == 1 and coarse[0].time == 1633608000.0


def test_rows_going_back_in_time_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "2021-10-07 12:00:05+00:00,a,X1,48.0,2.0,1000,100,90,0\n"
        "2021-10-07 12:00:01+00:00,a,X1,48.0,2.0,1000,100,90,0\n",
    )
    with pytest.raises(ValueError, match="backwards"):
        list(adsb.read_batches(path))


def test_party_rule_by_callsign_prefix() -> None:
    rule = adsb.PartyRule({"AFR": "blue", "EZY": "red", "EZYX": "green"}, default="other")
    assert rule.assign(["AFR123", "ezy42", "EZYX9", "DLH1", ""]) == [
        "blue",
        "red",
        "green",
        "other",
        "other",
    ]


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"sample ADS-B file not found at {SAMPLE}")
def test_replay_a_slice_of_the_paris_sample() -> None:
    """The first 3,000 rows (about two minutes of traffic) through table, detector and alerts."""
    rule = adsb.PartyRule({"AFR": "blue", "EZY": "red"})
    cycle = TacticalCycle(settings=DetectionSettings(same_party=True), drop_invalid=True)
    batches = list(adsb.read_batches(SAMPLE, limit_rows=3000, hold_s=10.0))
    assert sum(len(b) for b in batches) == 3000
    times = [b.time for b in batches]
    assert times == sorted(times) and len(set(times)) == len(times)
    seen: set[str] = set()
    complete_rows = refused = 0
    for b in batches:
        assert np.all(np.abs(b.lat) <= 90) and np.all(np.abs(b.lon) <= 180)
        complete = b.complete()
        complete_rows += int(complete.sum())
        result = cycle.step(b.reports(rule.assign(b.callsign), complete), b.time)
        refused += result.refused
        seen.update(result.snapshot.ids)
        assert all(age <= 30.0 for age in result.snapshot.age)
    assert 10 <= len(seen) <= 60
    assert {"blue", "other"} <= set(cycle.table.party_names)
    totals = cycle.table.totals
    assert totals.accepted == complete_rows - refused > 1500
    assert totals.stale == totals.duplicate == 0
