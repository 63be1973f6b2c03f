"""Volumes overlap only when they share a region in all four dimensions; touching is not enough."""

from __future__ import annotations

import math

import pytest

from deconfliction.geo import Circle, GeometryError, Polygon, Volume

HERE = Circle.create(47.0, 8.0, 5_000.0)
NEARBY = Circle.create(47.0, 8.05, 5_000.0)  # about 3.8 km away: the footprints overlap
FAR = Polygon.create([(10.0, 10.0), (10.0, 10.1), (10.1, 10.1)])


def volume(footprint=HERE, lo=0.0, hi=100.0, start=0.0, end=60.0) -> Volume:
    return Volume.create(footprint, lo, hi, start, end)


def test_volumes_sharing_space_altitude_and_time_overlap():
    assert volume().overlaps(volume(NEARBY, 50.0, 150.0, 30.0, 90.0))


@pytest.mark.parametrize(
    "other",
    [
        dict(start=60.0, end=120.0),  # starts as the first ends
        dict(start=-60.0, end=0.0),  # ends as the first starts
        dict(lo=100.0, hi=200.0),  # floor on the first's ceiling
        dict(lo=-100.0, hi=0.0),  # ceiling on the first's floor
        dict(footprint=FAR),
    ],
    ids=["after", "before", "above", "below", "elsewhere"],
)
def test_touching_in_time_or_altitude_is_not_overlap(other):
    a, b = volume(), volume(**{"footprint": NEARBY, **other})
    assert not a.overlaps(b)
    assert not b.overlaps(a)


def test_the_slightest_shared_second_or_metre_is_overlap():
    assert volume().overlaps(volume(NEARBY, start=59.999, end=120.0))
    assert volume().overlaps(volume(NEARBY, lo=99.999, hi=200.0))


@pytest.mark.parametrize(
    ("lo", "hi"), [(100.0, 100.0), (200.0, 100.0), (math.nan, 100.0), (0.0, math.inf)]
)
def test_an_altitude_band_must_be_finite_and_go_up(lo, hi):
    with pytest.raises(GeometryError) as info:
        volume(lo=lo, hi=hi)
    assert info.value.code == "invalid_altitude"


@pytest.mark.parametrize(
    ("start", "end"), [(60.0, 60.0), (60.0, 0.0), (math.nan, 60.0), (0.0, math.inf)]
)
def test_a_time_window_must_be_finite_and_go_forward(start, end):
    with pytest.raises(GeometryError) as info:
        volume(start=start, end=end)
    assert info.value.code == "invalid_time"


def test_index_boxes_carry_the_altitude_band_and_time_window_of_every_footprint_box():
    across = Circle.create(0.0, 179.99, 5_000.0)
    boxes = volume(across, 10.0, 20.0, 100.0, 200.0).index_boxes()
    assert len(boxes) == len(across.boxes()) == 2
    for box, flat in zip(boxes, across.boxes(), strict=True):
        assert box == (*flat, 10.0, 20.0, 100.0, 200.0)
