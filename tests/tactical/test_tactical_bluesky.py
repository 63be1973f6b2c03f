"""The all-pairs reference agrees with BlueSky's own ``StateBased`` detector, when it is installed.

BlueSky is a bench-only extra (``pip install -e '.[bench]'``); without it this module is skipped.
Its ``StateBased.detect`` does not use ``self``, so we call it on a bare object carrying the
traffic arrays, no simulator, GUI or network needed.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deconfliction.tactical.detector import DEFAULT_HPZ_M, DEFAULT_RPZ_M, detect, detect_all_pairs

from .tactical_skies import Sky, grazing_pair, skies

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    statebased = pytest.importorskip(
        "bluesky.traffic.asas.statebased",
        reason="bluesky-simulator is not installed (bench-only extra: pip install -e '.[bench]')",
    )


def bluesky_detect(sky: Sky, rpz: float, hpz: float, lookahead: float) -> tuple[set, set, dict]:
    """BlueSky's unordered conflict and LoS pairs, and its numbers per ordered pair."""
    n = len(sky)
    traffic = SimpleNamespace(
        ntraf=n,
        id=list(range(n)),
        lat=sky.lat.astype(float),
        lon=sky.lon.astype(float),
        alt=sky.alt.astype(float),
        gs=sky.gs.astype(float),
        trk=sky.trk.astype(float),
        vs=sky.vs.astype(float),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # np.matrix is pending deprecation
        confpairs, lospairs, _, _, _, _, dcpa, tcpa, tin = statebased.StateBased.detect(
            None, traffic, traffic, np.full(n, rpz), np.full(n, hpz), np.full(n, lookahead)
        )
    numbers = {pair: (tcpa[k], dcpa[k], tin[k]) for k, pair in enumerate(confpairs)}
    unordered = {tuple(sorted(pair)) for pair in confpairs}
    lost = {tuple(sorted(pair)) for pair in lospairs}
    return unordered, lost, numbers


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sky=st.one_of(skies(max_clusters=3), grazing_pair()),
    rpz=st.sampled_from([DEFAULT_RPZ_M, 1852.0]),
    lookahead=st.sampled_from([300.0, 60.0]),
)
def test_reference_matches_bluesky_statebased(sky: Sky, rpz: float, lookahead: float) -> None:
    hpz = DEFAULT_HPZ_M
    conflicts, lost, numbers = bluesky_detect(sky, rpz, hpz, lookahead)
    ours = detect_all_pairs(*sky.arrays(), rpz=rpz, hpz=hpz, lookahead=lookahead, same_party=True)
    assert ours.pairs() == conflicts | lost
    assert {
        p for p, flag in zip(ours.pairs_list(), ours.lost_now.tolist(), strict=True) if flag
    } == lost
    for k, (i, j) in enumerate(ours.pairs_list()):
        theirs = numbers.get((i, j), numbers.get((j, i)))
        if theirs is None:  # a LoS BlueSky lists only in lospairs
            continue
        np.testing.assert_allclose(
            [ours.tcpa[k], ours.dcpa[k], ours.tin[k]],
            theirs,
            rtol=1e-9,
            atol=1e-6,
            err_msg=str((i, j)),
        )
    fast = detect(*sky.arrays(), rpz=rpz, hpz=hpz, lookahead=lookahead, same_party=True)
    assert fast.pairs() == ours.pairs()


def test_dense_random_sky_matches_bluesky() -> None:
    """300 aircraft in a 200 km box, as in BlueSky's own scenarios: hundreds of conflicts."""
    rng = np.random.default_rng(11)
    n = 300
    sky = Sky(
        lat=52.0 + rng.uniform(-0.9, 0.9, n),
        lon=5.0 + rng.uniform(-1.5, 1.5, n),
        alt=rng.uniform(3000.0, 12000.0, n),
        gs=rng.uniform(100.0, 260.0, n),
        trk=rng.uniform(0.0, 360.0, n),
        vs=np.where(rng.random(n) < 0.2, rng.uniform(-10.0, 10.0, n), 0.0),
        party=np.zeros(n, dtype=int),
    )
    conflicts, lost, _ = bluesky_detect(sky, DEFAULT_RPZ_M, DEFAULT_HPZ_M, 300.0)
    assert len(conflicts) > 50
    ours = detect(*sky.arrays(), same_party=True)
    assert ours.pairs() == conflicts | lost


def _pair(a: dict[str, float], b: dict[str, float]) -> Sky:
    """Two aircraft at 52N 5E, 3,000 m, standing still, changed by ``a`` and ``b``."""
    base = {"lat": 52.0, "lon": 5.0, "alt": 3000.0, "gs": 0.0, "trk": 0.0, "vs": 0.0}
    first, second = {**base, **a}, {**base, **b}
    return Sky(**{k: np.array([first[k], second[k]]) for k in base}, party=np.array([0, 1]))


# name: (aircraft 0, aircraft 1, hpz, look-ahead); binary-exact numbers so the ties are real ties.
THRESHOLDS: dict[str, tuple[dict[str, float], dict[str, float], float, float]] = {
    "stacked exactly hpz apart, level": ({}, {"alt": 3150.0}, 150.0, 300.0),
    "stacked exactly hpz apart, creeping up": ({}, {"alt": 3150.0, "vs": 1e-7}, 150.0, 300.0),
    "stacked exactly hpz apart, creeping down": ({}, {"alt": 3150.0, "vs": -1e-7}, 150.0, 300.0),
    "entry exactly at the look-ahead": ({}, {"alt": 3450.0, "vs": -5.0}, 150.0, 60.0),
    "entry just inside the look-ahead": ({}, {"alt": 3450.0, "vs": -5.0}, 150.0, 60.000001),
    "exit exactly now": ({}, {"alt": 3150.0, "vs": 5.0}, 150.0, 300.0),
    "same place, same level, no speed": ({}, {}, 150.0, 300.0),
    "same velocity, 1 km apart": (
        {"gs": 200.0, "trk": 45.0},
        {"lat": 52.009, "gs": 200.0, "trk": 45.0},
        150.0,
        300.0,
    ),
    "across the antimeridian": (
        {"lon": 179.999},
        {"lon": -179.999, "gs": 100.0, "trk": 90.0},
        150.0,
        300.0,
    ),
    "at the antimeridian, both spellings": ({"lon": 180.0}, {"lon": -180.0}, 150.0, 300.0),
    "across the north pole": ({"lat": 89.999}, {"lat": 89.999, "lon": 185.0}, 150.0, 300.0),
    "head-on, 20 km": (
        {"gs": 100.0},
        {"lat": 52.0 + 20_000 / 111_195.0, "gs": 100.0, "trk": 180.0},
        150.0,
        300.0,
    ),
}


@pytest.mark.parametrize("case", sorted(THRESHOLDS))
@pytest.mark.parametrize("swap", [False, True])
def test_threshold_cases_match_bluesky(case: str, swap: bool) -> None:
    a, b, hpz, lookahead = THRESHOLDS[case]
    sky = _pair(b, a) if swap else _pair(a, b)
    conflicts, lost, _ = bluesky_detect(sky, DEFAULT_RPZ_M, hpz, lookahead)
    ours = detect(*sky.arrays(), hpz=hpz, lookahead=lookahead)
    assert ours.pairs() == conflicts | lost
    assert {
        p for p, flag in zip(ours.pairs_list(), ours.lost_now.tolist(), strict=True) if flag
    } == lost
