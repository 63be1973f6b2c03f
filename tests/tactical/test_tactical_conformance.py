"""Conformance, pure: inside/outside a volume in four dimensions, tolerances, the grace period."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deconfliction.geo import Circle, Polygon, Volume
from deconfliction.geo.sphere import GEOD
from deconfliction.tactical import conformance as c
from deconfliction.tactical.conformance import ConformanceSettings, Observation

T0 = 1_800_000_000.0


def box_volume(lower: float = 0.0, upper: float = 1_000.0) -> Volume:
    square = Polygon.create([(48.0, 2.0), (48.0, 2.1), (48.1, 2.1), (48.1, 2.0)])
    return Volume.create(square, lower, upper, T0, T0 + 600.0)


def at(distance_m: float, azimuth: float = 0.0, lat: float = 48.1, lon: float = 2.05):
    """A point ``distance_m`` from (lat, lon) along ``azimuth`` (true metres)."""
    lon2, lat2, _ = GEOD.fwd(lon, lat, azimuth, distance_m)
    return float(lat2), float(lon2)


def run(volumes, points, alt=500.0, now=T0 + 1, **settings):
    lat = np.array([p[0] for p in points])
    lon = np.array([p[1] for p in points])
    return c.check(
        volumes, lat, lon, np.full(len(points), alt), now, ConformanceSettings(**settings)
    )


def test_inside_means_inside_one_volume_in_all_four_dimensions() -> None:
    v = box_volume()
    assert run([v], [(48.05, 2.05)]) == [None]
    assert run([v], [(48.2, 2.05)]) == [c.OUTSIDE_FOOTPRINT]
    assert run([v], [(48.05, 2.05)], alt=1_200.0) == [c.OUTSIDE_ALTITUDE]
    assert run([v], [(48.05, 2.05)], now=T0 + 600.0) == [c.OUTSIDE_TIME]  # end is exclusive
    assert run(None, [(48.05, 2.05)]) == [c.NOT_LIVE]
    # Two volumes: inside either one counts.
    higher = Volume.create(Circle.create(48.2, 2.05, 3_000.0), 1_000.0, 2_000.0, T0, T0 + 600)
    assert run([v, higher], [(48.2, 2.05), (48.05, 2.05)], alt=1_500.0) == [
        None,
        c.OUTSIDE_ALTITUDE,
    ]


@pytest.mark.parametrize(
    ("origin", "azimuth"),
    [
        ((48.1, 2.05), 0.0),  # from the middle of the north edge, northward
        ((48.05, 2.1), 90.0),  # east edge, eastward
        ((48.05, 2.0), 270.0),  # west edge, westward
        ((48.1, 2.1), 45.0),  # past the north-east corner
    ],
)
def test_a_lateral_tolerance_is_a_true_distance_from_a_polygon(
    origin: tuple[float, float], azimuth: float
) -> None:
    v = box_volume()
    near = at(95.0, azimuth, *origin)
    far = at(105.0, azimuth, *origin)
    assert run([v], [near, far], lateral_tolerance_m=100.0) == [None, c.OUTSIDE_FOOTPRINT]
    assert run([v], [near]) == [c.OUTSIDE_FOOTPRINT]


def test_a_lateral_tolerance_grows_a_circle_and_a_vertical_one_the_band() -> None:
    v = Volume.create(Circle.create(48.0, 2.0, 1_000.0), 0.0, 1_000.0, T0, T0 + 600)
    assert run([v], [at(1_049.0, 30.0, 48.0, 2.0)], lateral_tolerance_m=50.0) == [None]
    assert run([v], [at(1_051.0, 30.0, 48.0, 2.0)], lateral_tolerance_m=50.0) == [
        c.OUTSIDE_FOOTPRINT
    ]
    assert run([v], [(48.0, 2.0)], alt=1_020.0, vertical_tolerance_m=30.0) == [None]


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        ConformanceSettings(grace_s=-1)
    with pytest.raises(ValueError):
        ConformanceSettings(lateral_tolerance_m=math.nan)


def test_an_excursion_is_raised_only_after_the_grace_period_and_ends_once() -> None:
    book: dict = {}
    out = Observation("op", c.OUTSIDE_FOOTPRINT)
    inside = Observation("op", None)
    changes = []
    for t in range(12):  # outside from t=0 to t=11
        book, step = c.update(book, {"A": out}, float(t), grace_s=10.0)
        changes += [(t, ch.kind) for ch in step]
    assert changes == [(11, "new")]
    book, step = c.update(book, {"A": inside}, 12.0, grace_s=10.0)
    assert [(ch.kind, ch.reason) for ch in step] == [("ended", "back inside")] and book == {}


def test_short_excursions_are_forgotten_and_new_ones_start_their_own_grace() -> None:
    book: dict = {}
    for t, obs in enumerate(
        [Observation("op", c.OUTSIDE_TIME)] * 8
        + [Observation("op", None)]
        + [Observation("op", c.OUTSIDE_TIME)] * 8
    ):
        book, step = c.update(book, {"A": obs}, float(t), grace_s=10.0)
        assert step == []


def test_an_excursion_ends_when_the_track_is_lost_or_the_operation_changes() -> None:
    out = Observation("op", c.OUTSIDE_FOOTPRINT)
    book, _ = c.update({}, {"A": out, "B": out}, 0.0, grace_s=0.0)
    book, step = c.update(book, {"A": out, "B": out}, 1.0, grace_s=0.0)
    assert [ch.kind for ch in step] == ["new", "new"]
    book, step = c.update(book, {"B": Observation("other-op", None)}, 2.0, grace_s=0.0)
    assert sorted((ch.excursion.aircraft, ch.reason) for ch in step) == [
        ("A", "no longer tracked"),
        ("B", "flying under another operation"),
    ]
    assert book == {}
