"""Index boxes and bounding caps are conservative: they may over-cover, never miss."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deconfliction.geo import Circle, Polygon, footprint_contains, footprints_overlap
from deconfliction.geo.sphere import angle, to_unit

from .geo_reference import GEOD, GeodesicPolygon
from .geo_shapes import REGIONS, SCALES, pair_centres, point, random_footprint, size

SEEDS = st.integers(0, 2**32 - 1)
KINDS = st.sampled_from(["circle", "polygon"])


def in_boxes(boxes, lat, lon) -> np.ndarray:
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    hit = np.zeros(lat.shape, dtype=bool)
    for lon_lo, lon_hi, lat_lo, lat_hi in boxes:
        in_lat = (lat >= lat_lo) & (lat <= lat_hi)
        # +180 and -180 are one meridian.
        for lo in (lon, np.where(lon == 180.0, -180.0, lon), np.where(lon == -180.0, 180.0, lon)):
            hit |= in_lat & (lo >= lon_lo) & (lo <= lon_hi)
    return hit


def boxes_meet(boxes_a, boxes_b) -> bool:
    return any(
        a[0] <= b[1] and b[0] <= a[1] and a[2] <= b[3] and b[2] <= a[3]
        for a in boxes_a
        for b in boxes_b
    )


def points_of(fp, spec, rng, n=400):
    """Points of the true footprint: its boundary (true geodesics), centre and interior samples."""
    if isinstance(fp, Circle):
        lat, lon, radius = spec
        az = rng.uniform(0, 360, n)
        dist = radius * np.concatenate([np.sqrt(rng.uniform(0, 1, n // 2)), np.ones(n - n // 2)])
        lon2, lat2, _ = GEOD.fwd(np.full(n, lon), np.full(n, lat), az, dist)
        return np.asarray(lat2), np.asarray(lon2)
    ring = GeodesicPolygon(spec)
    b_lat, b_lon = ring.boundary_samples(64)
    # Interior: candidates around the polygon, kept where the model says inside.
    c_lat = rng.uniform(ring.lat.min() - 0.1, ring.lat.max() + 0.1, n).clip(-90, 90)
    c_lon = ring.lon[0] + rng.uniform(-1, 1, n) * np.ptp(
        np.unwrap(np.radians(ring.lon), period=360)
    )
    c_lon = (c_lon + 180.0) % 360.0 - 180.0
    inside = footprint_contains(fp, c_lat, c_lon)
    return np.concatenate([b_lat, ring.lat, c_lat[inside]]), np.concatenate(
        [b_lon, ring.lon, c_lon[inside]]
    )


@settings(max_examples=150, deadline=None)
@given(seed=SEEDS, kind=KINDS, scale=st.sampled_from(list(SCALES)), region=st.sampled_from(REGIONS))
def test_every_point_of_a_footprint_lies_in_one_of_its_boxes_and_in_its_cap(
    seed, kind, scale, region
):
    rng = np.random.default_rng(seed)
    fp, spec = random_footprint(rng, kind, *point(rng, region), size(rng, scale))
    boxes = fp.boxes()
    for lon_lo, lon_hi, lat_lo, lat_hi in boxes:
        assert -180.0 <= lon_lo <= lon_hi <= 180.0
        assert -90.0 <= lat_lo <= lat_hi <= 90.0
    lat, lon = points_of(fp, spec, rng)
    assert in_boxes(boxes, lat, lon).all()
    assert (angle(to_unit(lat, lon), fp.center[None, :]) <= fp.cap_radius).all()


@settings(max_examples=300, deadline=None)
@given(
    seed=SEEDS,
    kinds=st.tuples(KINDS, KINDS),
    scale=st.sampled_from(["tiny", "normal", "continent"]),
    region=st.sampled_from(REGIONS),
)
def test_footprints_that_overlap_have_boxes_that_meet(seed, kinds, scale, region):
    rng = np.random.default_rng(seed)
    sa, sb = size(rng, scale), size(rng, scale)
    ca, cb = pair_centres(rng, region, sa, sb)
    a, _ = random_footprint(rng, kinds[0], *ca, sa)
    b, _ = random_footprint(rng, kinds[1], *cb, sb)
    if footprints_overlap(a, b):
        assert boxes_meet(a.boxes(), b.boxes())
        assert float(angle(a.center, b.center)) <= a.cap_radius + b.cap_radius


def test_a_footprint_across_the_antimeridian_gets_two_boxes():
    circle = Circle.create(10.0, 179.99, 5_000.0)
    polygon = Polygon.create([(0.0, 179.0), (0.0, -179.0), (1.0, -179.0), (1.0, 179.0)])
    for fp in (circle, polygon):
        boxes = fp.boxes()
        assert len(boxes) == 2
        assert {boxes[0][1], boxes[1][0]} == {180.0, -180.0}
    assert boxes_meet(polygon.boxes(), Circle.create(0.5, -179.2, 10.0).boxes())


def test_a_footprint_over_a_pole_gets_the_whole_band_of_longitude():
    for fp in (
        Circle.create(89.95, 10.0, 10_000.0),
        Polygon.create([(80.0, 0.0), (80.0, 120.0), (80.0, -120.0)]),
        Polygon.create([(90.0, 0.0), (85.0, 10.0), (85.0, 20.0)]),
    ):
        ((lon_lo, lon_hi, _, lat_hi),) = fp.boxes()
        assert (lon_lo, lon_hi, lat_hi) == (-180.0, 180.0, 90.0)


@pytest.mark.parametrize("lat", [75.0, 85.0, 89.0])
def test_a_ring_curling_round_a_pole_without_holding_it_is_fully_boxed(lat):
    """A horseshoe round the pole whose vertices crowd on one side: its centre's far meridian is
    crossed by its edges, so boxes must follow the ring, not the centre."""
    lons = np.concatenate([np.linspace(10, 170, 40), np.linspace(170, 350, 6)[1:]])
    outer = [(lat + 0.5, (x + 180) % 360 - 180) for x in lons]
    inner = [(lat - 0.5, (x + 180) % 360 - 180) for x in lons[::-1]]
    polygon = Polygon.create(outer + inner)
    assert polygon.contains_pole == 0
    lat_s, lon_s = GeodesicPolygon(outer + inner).boundary_samples(32)
    assert in_boxes(polygon.boxes(), lat_s, lon_s).all()
    assert not in_boxes(polygon.boxes(), np.array([lat]), np.array([0.0])).all()  # the gap


def test_the_cap_of_a_circle_holds_its_whole_edge():
    for lat in (0.0, 45.0, 89.0):
        circle = Circle.create(lat, 30.0, 2_000_000.0)
        az = np.linspace(0, 360, 720)
        lon, lat2, _ = GEOD.fwd(np.full(720, 30.0), np.full(720, lat), az, np.full(720, 2e6))
        gap = circle.cap_radius - angle(to_unit(lat2, lon), circle.center[None, :])
        assert (gap >= 0).all()
        assert gap.min() < 0.01  # and it is not wildly loose
