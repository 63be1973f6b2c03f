"""The fast detector finds exactly the pairs (and numbers) the all-pairs reference finds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deconfliction.tactical.detector import (
    DEFAULT_HPZ_M,
    DEFAULT_RPZ_M,
    Conflicts,
    detect,
    detect_all_pairs,
)
from deconfliction.tactical.errors import TacticalError

from .tactical_skies import Sky, grazing_pair, skies

FIELDS = ("tcpa", "dcpa", "tin", "tout", "dist")


def assert_same(fast: Conflicts, reference: Conflicts) -> None:
    assert fast.pairs() == reference.pairs()
    assert np.array_equal(fast.i, reference.i) and np.array_equal(fast.j, reference.j)
    assert np.array_equal(fast.lost_now, reference.lost_now)
    for name in FIELDS:
        np.testing.assert_allclose(
            getattr(fast, name), getattr(reference, name), rtol=1e-12, atol=1e-9, err_msg=name
        )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sky=skies(),
    rpz=st.sampled_from([DEFAULT_RPZ_M, 1852.0, 50.0]),
    hpz=st.sampled_from([DEFAULT_HPZ_M, 150.0]),
    lookahead=st.sampled_from([300.0, 0.0, 30.0, 3600.0]),
    same_party=st.booleans(),
    cell=st.sampled_from([None, 1.0, 5_000.0]),
)
def test_fast_detector_equals_all_pairs(
    sky: Sky, rpz: float, hpz: float, lookahead: float, same_party: bool, cell: float | None
) -> None:
    options = {"rpz": rpz, "hpz": hpz, "lookahead": lookahead, "same_party": same_party}
    assert_same(
        detect(*sky.arrays(), cell=cell, **options), detect_all_pairs(*sky.arrays(), **options)
    )


@settings(max_examples=400, deadline=None)
@given(
    pairs=st.lists(grazing_pair(), min_size=1, max_size=3),
    cell=st.sampled_from([None, 1.0]),
)
def test_grazing_encounters_are_never_dropped(pairs: list[Sky], cell: float | None) -> None:
    """Barely-conflicting pairs at the end of the look-ahead, anywhere on Earth, with fine cells.

    ``cell=1.0`` asks for 1 m cells; the grid coarsens itself to its entry budget, which still
    puts many cell boundaries across each box, where a box drawn too small would lose a pair.
    """
    arrays = [np.concatenate([getattr(p, f) for p in pairs]) for f in Sky.__dataclass_fields__]
    arrays[-1] = np.arange(arrays[-1].size)  # every aircraft its own party
    assert_same(detect(*arrays, cell=cell), detect_all_pairs(*arrays))


def _two(**over: float) -> tuple[np.ndarray, ...]:
    """Aircraft 0 at (52N, 5E, 10 km) heading north at 200 m/s; aircraft 1 set by ``over``."""
    a = {"lat": 52.0, "lon": 5.0, "alt": 10000.0, "gs": 200.0, "trk": 0.0, "vs": 0.0}
    b = {**a, **over}
    states = tuple(np.array([a[k], b[k]]) for k in ("lat", "lon", "alt", "gs", "trk", "vs"))
    return (*states, np.array([0, 1]))


def test_head_on_pair_is_found_with_the_expected_times() -> None:
    # 40 km apart head-on at a closing speed of 400 m/s: CPA after 100 s, loss 5 NM before it.
    lat1 = 52.0 + np.degrees(40_000.0 / 6371000.0)
    found = detect(*_two(lat=lat1, trk=180.0))
    assert found.pairs() == {(0, 1)}
    assert found.tcpa[0] == pytest.approx(100.0, rel=1e-9)
    assert found.dcpa[0] == pytest.approx(0.0, abs=1e-3)
    assert found.tin[0] == pytest.approx(100.0 - DEFAULT_RPZ_M / 400.0, rel=1e-9)
    assert found.tout[0] == pytest.approx(100.0 + DEFAULT_RPZ_M / 400.0, rel=1e-9)
    assert not found.lost_now[0]


def test_pair_beyond_the_lookahead_is_not_a_conflict() -> None:
    lat1 = 52.0 + np.degrees(200_000.0 / 6371000.0)  # CPA after 500 s
    assert len(detect(*_two(lat=lat1, trk=180.0))) == 0
    assert len(detect(*_two(lat=lat1, trk=180.0), lookahead=600.0)) == 1


def test_vertical_only_encounter_and_lost_separation_now() -> None:
    above = detect(*_two(alt=10000.0 + 600.0, vs=-5.0))  # same track, descending onto it
    assert above.pairs() == {(0, 1)}
    assert above.tin[0] == pytest.approx((600.0 - DEFAULT_HPZ_M) / 5.0)
    assert not above.lost_now[0]
    stacked = detect(*_two(alt=10000.0 + 100.0))
    assert stacked.pairs() == {(0, 1)} and stacked.lost_now[0]


def test_same_party_pairs_are_skipped_unless_asked() -> None:
    lat, lon, alt, gs, trk, vs, _ = _two(alt=10100.0)
    same = np.array([7, 7])
    assert len(detect(lat, lon, alt, gs, trk, vs, same)) == 0
    assert len(detect(lat, lon, alt, gs, trk, vs, same, same_party=True)) == 1


def test_across_the_antimeridian_and_over_the_pole() -> None:
    east = detect(*_two(lon=179.99, trk=0.0), same_party=True)
    assert len(east) == 0  # 52N 5E vs 52N 180E: far apart
    lat, lon, alt, gs, trk, vs, party = _two()
    lon = np.array([179.99, -179.99])  # 1.4 km apart across the antimeridian
    assert detect(lat, lon, alt, gs, trk, vs, party).lost_now.tolist() == [True]
    lat = np.array([89.99, 89.99])
    lon = np.array([0.0, 180.0])  # 2.2 km apart across the north pole
    pole = detect(lat, lon, alt, gs, trk, vs, party)
    assert pole.lost_now.tolist() == [True]
    assert_same(pole, detect_all_pairs(lat, lon, alt, gs, trk, vs, party))


@pytest.mark.parametrize("lat0", [80.0, 88.0, 89.0, 89.5])
@pytest.mark.parametrize("north", [0.1, 0.3])
@pytest.mark.parametrize("gs", [100.0, 400.0])
def test_polar_encounter_needing_the_partner_latitude_bound(
    lat0: float, north: float, gs: float
) -> None:
    """Eastbound at high latitude, meeting a slightly more poleward aircraft at the look-ahead's end.

    BlueSky scales the east offset by the cosine of the pair's *mean* latitude, smaller than the
    eastbound aircraft's own; a broad phase that used its own latitude would drop this pair.
    """
    r, rpz, t = 6371000.0, DEFAULT_RPZ_M, 300.0
    dy = north * rpz
    lat1 = lat0 + np.degrees(dy / r)
    cavelat = np.cos(np.radians(lat0 + lat1) * 0.5)
    east = gs * t * (1 - 1e-7) + np.sqrt(rpz**2 - dy**2) * (1 - 1e-6)
    states = (
        np.array([lat0, lat1]),
        np.array([0.0, np.degrees(east / (r * cavelat))]),
        np.array([1e4, 1e4]),
        np.array([gs, 0.0]),
        np.array([90.0, 0.0]),
        np.zeros(2),
        np.array([0, 1]),
    )
    reference = detect_all_pairs(*states)
    assert reference.pairs() == {(0, 1)}
    assert_same(detect(*states, cell=1.0), reference)
    assert_same(detect(*states), reference)


def test_empty_and_single_aircraft_skies() -> None:
    empty = np.empty(0)
    assert len(detect(empty, empty, empty, empty, empty, empty, np.empty(0, dtype=int))) == 0
    one = np.array([1.0])
    assert len(detect(one, one, one, one, one, one, np.array([0]))) == 0


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"lat": [91.0, 0.0]}, "invalid_state"),
        ({"alt": [np.nan, 0.0]}, "invalid_state"),
        ({"gs": [1.0]}, "invalid_state"),
        ({"party": [0.5, 1.5]}, "invalid_state"),
    ],
)
def test_bad_states_are_refused(change: dict[str, list[float]], code: str) -> None:
    states = dict(zip(("lat", "lon", "alt", "gs", "trk", "vs", "party"), _two(), strict=True))
    states.update({k: np.array(v) for k, v in change.items()})
    with pytest.raises(TacticalError) as refused:
        detect(**states)
    assert refused.value.code == code


@pytest.mark.parametrize(
    "bad", [{"rpz": 0.0}, {"hpz": -1.0}, {"lookahead": -1.0}, {"lookahead": float("inf")}]
)
def test_bad_parameters_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(TacticalError) as refused:
        detect(*_two(), **bad)
    assert refused.value.code == "invalid_parameter"


def test_dense_sky_matches_all_pairs() -> None:
    """A few hundred aircraft in a small box: many shared cells, many candidate chunks."""
    rng = np.random.default_rng(7)
    n = 400
    lat = 52.0 + rng.uniform(-0.5, 0.5, n)
    lon = 5.0 + rng.uniform(-0.8, 0.8, n)
    alt = rng.uniform(3000.0, 6000.0, n)
    gs = rng.uniform(100.0, 250.0, n)
    trk = rng.uniform(0.0, 360.0, n)
    vs = np.where(rng.random(n) < 0.3, rng.uniform(-10.0, 10.0, n), 0.0)
    party = rng.integers(0, 4, n)
    reference = detect_all_pairs(lat, lon, alt, gs, trk, vs, party)
    assert len(reference) > 100
    assert_same(detect(lat, lon, alt, gs, trk, vs, party), reference)
    assert_same(detect(lat, lon, alt, gs, trk, vs, party, cell=3000.0), reference)
