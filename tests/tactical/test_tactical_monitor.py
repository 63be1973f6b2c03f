"""The monitor: per-pair protected zones give exactly what each pair's own detection gives."""

from __future__ import annotations

import numpy as np
import pytest

from deconfliction.tactical.alerts import pair_key
from deconfliction.tactical.cycle import DetectionSettings
from deconfliction.tactical.detector import detect_all_pairs
from deconfliction.tactical.monitor import Monitor, MonitorSettings, Zone
from deconfliction.tactical.tracks import ReportBatch

PARTIES = ("blue", "red", "green")
ZONES = {
    frozenset(("blue", "red")): Zone(2_000.0, 150.0, 120.0),
    frozenset(("red", "green")): Zone(15_000.0, 600.0, 600.0),  # wider than the default
}


def random_sky(seed: int, n: int = 300) -> ReportBatch:
    rng = np.random.default_rng(seed)
    return ReportBatch(
        ids=[f"a{k}" for k in range(n)],
        party=[PARTIES[k] for k in rng.integers(0, 3, n)],
        time=np.zeros(n),
        lat=rng.uniform(48.0, 49.0, n),
        lon=rng.uniform(2.0, 3.5, n),
        alt=rng.uniform(2_000.0, 4_000.0, n),
        gs=rng.uniform(50.0, 250.0, n),
        trk=rng.uniform(0.0, 360.0, n),
        vs=rng.choice([0.0, 0.0, 5.0, -5.0], n),
    )


@pytest.mark.parametrize("seed", range(5))
def test_per_pair_zones_match_each_pairs_own_brute_force_detection(seed: int) -> None:
    sky = random_sky(seed)
    default = DetectionSettings()
    monitor = Monitor(MonitorSettings(default, ZONES))
    monitor.ingest(sky)
    found = monitor.step(0.0).conflicts

    expected: dict[tuple[str, str], float] = {}
    party = np.array(sky.party)
    for a in range(3):
        for b in range(a + 1, 3):
            pa, pb = PARTIES[a], PARTIES[b]
            zone = ZONES.get(frozenset((pa, pb)), Zone(default.rpz, default.hpz, default.lookahead))
            pick = np.flatnonzero((party == pa) | (party == pb))
            codes = (party[pick] == pb).astype(np.int64)
            arrays = [
                np.asarray(getattr(sky, x))[pick] for x in ("lat", "lon", "alt", "gs", "trk", "vs")
            ]
            conflicts = detect_all_pairs(
                *arrays, codes, rpz=zone.rpz, hpz=zone.hpz, lookahead=zone.lookahead
            )
            for i, j, tin in zip(conflicts.i, conflicts.j, conflicts.tin, strict=True):
                expected[pair_key(sky.ids[pick[i]], sky.ids[pick[j]])] = float(tin)
    assert set(found) == set(expected)
    for key, tin in expected.items():
        assert found[key].tin == pytest.approx(tin, rel=1e-9, abs=1e-6)
    assert len(expected) > 0  # the skies are dense enough to test something
