"""footprints_overlap gives the true answer, checked against an independent brute force.

Random pairs at three scales are compared with tests/geo/geo_reference.py (pyproj geodesics only);
pairs whose true answer lies within half a metre of the decision are skipped. Hand-built pairs then
sit exactly on the thresholds: touching is not overlap, an overlap of a metre is.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from deconfliction.geo import Circle, Polygon, footprints_overlap, intersect
from deconfliction.geo.intersect import footprint_contains
from deconfliction.geo.sphere import GEOD, MIN_RADIUS_OF_CURVATURE_M, to_latlon

from .geo_reference import (
    SURE_M,
    GeodesicPolygon,
    circle_polygon_overlap,
    circles_overlap,
    polygons_overlap,
)
from .geo_shapes import (
    REGIONS,
    offset,
    pair_centres,
    point,
    random_footprint,
    size,
    star_vertices,
)

SEEDS = st.integers(0, 2**32 - 1)


def both_ways(a, b) -> bool:
    answer = footprints_overlap(a, b)
    assert footprints_overlap(b, a) == answer, "overlap must be symmetric"
    return answer


# --- random pairs against the reference ----------------------------------------------------------


@pytest.mark.parametrize("scale", ["tiny", "normal", "continent"])
@pytest.mark.parametrize("region", REGIONS)
@settings(max_examples=40, deadline=None)
@given(seed=SEEDS)
def test_circle_circle_matches_geodesic_distance(scale, region, seed):
    rng = np.random.default_rng(seed)
    ra, rb = size(rng, scale), size(rng, scale)
    (lat_a, lon_a), (lat_b, lon_b) = pair_centres(rng, region, ra, rb)
    truth, margin = circles_overlap((lat_a, lon_a, ra), (lat_b, lon_b, rb))
    assume(margin > SURE_M)
    a, b = Circle.create(lat_a, lon_a, ra), Circle.create(lat_b, lon_b, rb)
    assert both_ways(a, b) == truth


@pytest.mark.parametrize("scale", ["tiny", "normal", "continent"])
@pytest.mark.parametrize("region", REGIONS)
@settings(max_examples=12, deadline=None)
@given(seed=SEEDS)
def test_circle_polygon_matches_geodesic_edges(scale, region, seed):
    rng = np.random.default_rng(seed)
    rc, sp = size(rng, scale), size(rng, scale)
    (lat_c, lon_c), (lat_p, lon_p) = pair_centres(rng, region, rc, sp)
    vertices = star_vertices(rng, lat_p, lon_p, sp)
    truth, margin = circle_polygon_overlap((lat_c, lon_c, rc), GeodesicPolygon(vertices))
    assume(margin > SURE_M)
    assert both_ways(Circle.create(lat_c, lon_c, rc), Polygon.create(vertices)) == truth


@pytest.mark.parametrize("scale", ["tiny", "normal", "continent"])
@pytest.mark.parametrize("region", REGIONS)
@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_polygon_polygon_matches_geodesic_edges(scale, region, seed):
    rng = np.random.default_rng(seed)
    sa, sb = size(rng, scale), size(rng, scale)
    (lat_a, lon_a), (lat_b, lon_b) = pair_centres(rng, region, sa, sb)
    va, vb = star_vertices(rng, lat_a, lon_a, sa), star_vertices(rng, lat_b, lon_b, sb)
    reference = polygons_overlap(GeodesicPolygon(va), GeodesicPolygon(vb), rng)
    assume(reference is not None)
    truth, _ = reference
    assert both_ways(Polygon.create(va), Polygon.create(vb)) == truth


# --- exactly at the thresholds -------------------------------------------------------------------

PLACES = [
    pytest.param(0.0, 0.0, id="equator"),
    pytest.param(47.0, 8.0, id="mid-latitude"),
    pytest.param(-33.0, 151.0, id="south"),
    pytest.param(69.5, 179.99, id="antimeridian"),
    pytest.param(89.9, 40.0, id="near-pole"),
]
AZIMUTHS = [0.0, 37.0, 90.0, 128.0]


def perpendicular(lat, lon, azimuth, along_m, side, across_m):
    """The point ``across_m`` to the left (side=-1) or right (+1) of the geodesic that leaves
    (lat, lon) at ``azimuth``, measured from the point ``along_m`` along it."""
    from .geo_reference import GEOD

    lon1, lat1, back = GEOD.fwd(lon, lat, azimuth, along_m)
    return offset(float(lat1), float(lon1), float(back) + 180.0 + 90.0 * side, across_m)


@pytest.mark.parametrize(("lat", "lon"), PLACES)
@pytest.mark.parametrize("azimuth", AZIMUTHS)
@pytest.mark.parametrize("radii", [(1.0, 2.0), (5_000.0, 10_000.0), (1_500_000.0, 900_000.0)])
def test_tangent_circles_do_not_overlap_but_one_metre_does(lat, lon, azimuth, radii):
    from .geo_reference import distance_m

    lat2, lon2 = offset(lat, lon, azimuth, radii[0] + radii[1])
    d = float(distance_m(lat, lon, lat2, lon2))
    a = Circle.create(lat, lon, radii[0])
    assert not both_ways(a, Circle.create(lat2, lon2, d - radii[0]))  # tangent
    assert not both_ways(a, Circle.create(lat2, lon2, d - radii[0] + 0.005))  # under tolerance
    assert both_ways(a, Circle.create(lat2, lon2, d - radii[0] + 1.0))  # one metre deep
    assert not both_ways(a, Circle.create(lat2, lon2, d - radii[0] - 0.5))  # half a metre apart


@pytest.mark.parametrize(("lat", "lon"), PLACES[:4])
@pytest.mark.parametrize("azimuth", AZIMUTHS)
@pytest.mark.parametrize("edge_m", [40_000.0, 400_000.0, 2_000_000.0])
@pytest.mark.parametrize("at", [0.13, 0.5, 0.71])
def test_circle_tangent_to_a_long_geodesic_edge_does_not_overlap(lat, lon, azimuth, edge_m, at):
    end = offset(lat, lon, azimuth, edge_m)
    apex = perpendicular(lat, lon, azimuth, edge_m / 2, -1, edge_m / 2)
    polygon = Polygon.create([(lat, lon), end, apex])  # the geodesic edge, polygon on its left
    radius = min(10_000.0, edge_m / 10)
    centre = perpendicular(lat, lon, azimuth, at * edge_m, +1, radius)  # tangent from the right
    assert not both_ways(Circle.create(*centre, radius), polygon)
    assert not both_ways(Circle.create(*centre, radius + 0.005), polygon)
    assert both_ways(Circle.create(*centre, radius + 1.0), polygon)


@pytest.mark.parametrize(("lat", "lon"), PLACES[:4])
@pytest.mark.parametrize("azimuth", AZIMUTHS)
@pytest.mark.parametrize("edge_m", [40_000.0, 400_000.0, 2_000_000.0])
def test_polygons_sharing_an_edge_do_not_overlap(lat, lon, azimuth, edge_m):
    end = offset(lat, lon, azimuth, edge_m)
    left = Polygon.create(
        [(lat, lon), end, perpendicular(lat, lon, azimuth, edge_m / 2, -1, edge_m / 3)]
    )
    right = Polygon.create(
        [end, (lat, lon), perpendicular(lat, lon, azimuth, edge_m / 2, +1, edge_m / 3)]
    )
    assert not both_ways(left, right)
    # Sharing only part of the edge: the right polygon's vertices lie on the left one's geodesic,
    # between the points where the left one's edge was densified.
    for lo, hi in [(0.3, 0.7), (0.1234, 0.4321), (0.05, 1.0)]:
        m1 = perpendicular(lat, lon, azimuth, lo * edge_m, +1, 0.0)
        m2 = perpendicular(lat, lon, azimuth, hi * edge_m, +1, 0.0)
        apex = perpendicular(lat, lon, azimuth, (lo + hi) / 2 * edge_m, +1, edge_m / 5)
        assert not both_ways(left, Polygon.create([m2, m1, apex]))
        # The same polygon pushed one metre across the shared edge overlaps by a 1 m strip.
        m1 = perpendicular(lat, lon, azimuth, lo * edge_m, -1, 1.0)
        m2 = perpendicular(lat, lon, azimuth, hi * edge_m, -1, 1.0)
        assert both_ways(left, Polygon.create([m2, m1, apex]))


def square(lat, lon, side_m, azimuth=0.0):
    """A geodesic 'square' with its first corner at (lat, lon), going clockwise."""
    b = offset(lat, lon, azimuth, side_m)
    c = perpendicular(lat, lon, azimuth, side_m, +1, side_m)
    d = perpendicular(lat, lon, azimuth, 0.0, +1, side_m)
    return [(lat, lon), b, c, d]


@pytest.mark.parametrize(("lat", "lon"), PLACES[:4])
@pytest.mark.parametrize("side_m", [3.0, 10_000.0])
def test_polygons_touching_at_a_corner_do_not_overlap(lat, lon, side_m):
    a = square(lat, lon, side_m)
    corner = a[2]
    # Another square hanging off the far corner, turned 45 degrees away from the first.
    b = square(*corner, side_m, azimuth=45.0)
    assert not both_ways(Polygon.create(a), Polygon.create(b))
    # A triangle whose tip touches the middle of an edge, and one whose tip goes 1 m past it.
    mid = perpendicular(lat, lon, 0.0, side_m / 2, +1, 0.0)
    base1 = perpendicular(lat, lon, 0.0, side_m / 4, -1, side_m / 2)
    base2 = perpendicular(lat, lon, 0.0, 3 * side_m / 4, -1, side_m / 2)
    assert not both_ways(Polygon.create(a), Polygon.create([mid, base1, base2]))
    tip = perpendicular(lat, lon, 0.0, side_m / 2, +1, 1.0)
    assert both_ways(Polygon.create(a), Polygon.create([tip, base1, base2]))


def test_a_metre_deep_incursion_counts_even_beside_a_long_sub_tolerance_sliver():
    """The common region's *thickest* part decides, not its average over a long thin sliver."""
    a = Polygon.create([(0.0, 0.0), (0.0, 0.5), (0.3, 0.5), (0.3, 0.0)])  # north of the equator
    mm5 = 0.005 / 110_574.0  # degrees of latitude in 5 mm
    m1 = 1.0 / 110_574.0
    sliver = [(-0.3, 0.0), (mm5, 0.0), (mm5, 0.5), (-0.3, 0.5)]
    assert not both_ways(a, Polygon.create(sliver))  # 5 mm x 55 km: touching, not overlap
    bump = [*sliver[:2], (mm5, 0.2499), (m1, 0.25), (mm5, 0.2501), *sliver[2:]]
    assert both_ways(a, Polygon.create(bump))


@pytest.mark.parametrize("gap_deg", [-1.0, -0.001, 0.001, 1.0])
@pytest.mark.parametrize("kind", ["circle", "polygon"])
def test_giant_footprints_reaching_past_each_others_horizon(gap_deg, kind):
    """A 4,000 km circle beside a continent whose far side is more than 90 degrees from the
    circle's centre: the answer still follows the geodesics."""
    from .geo_reference import GEOD

    radius = 4_000_000.0
    lon_edge, _, _ = GEOD.fwd(0.0, 0.0, 90.0, radius)  # where the circle ends along the equator
    west = float(lon_edge) + gap_deg
    vertices = [(-25.0, west), (25.0, west), (25.0, west + 50.0), (-25.0, west + 50.0)]
    circle = (0.0, 0.0, radius)
    truth, margin = circle_polygon_overlap(circle, GeodesicPolygon(vertices))
    assert margin > SURE_M
    polygon = Polygon.create(vertices)
    if kind == "circle":
        assert both_ways(Circle.create(*circle), polygon) == truth
    else:
        square = [(-20.0, -20.0), (20.0, -20.0), (20.0, west - gap_deg), (-20.0, west - gap_deg)]
        assert both_ways(Polygon.create(square), polygon) == (gap_deg < 0)


# --- the shortcut for heavy overlaps -------------------------------------------------------------


@pytest.mark.parametrize("scale", ["tiny", "normal", "continent"])
@pytest.mark.parametrize("region", REGIONS)
@settings(max_examples=15, deadline=None)
@given(seed=SEEDS)
def test_a_footprints_inner_disc_lies_inside_it(scale, region, seed):
    rng = np.random.default_rng(seed)
    lat, lon = point(rng, region)
    fp, _ = random_footprint(
        rng, str(rng.choice(["circle", "polygon"])), lat, lon, size(rng, scale)
    )
    inner = fp.inner_radius()
    assert 0.0 <= inner <= fp.cap_radius
    assume(inner > 0.0)
    # Points on the disc's rim (a hair inside it), all around: every one lies in the footprint.
    centre_lat, centre_lon = (float(x[0]) for x in to_latlon(fp.center[None, :]))
    rim_m = inner * MIN_RADIUS_OF_CURVATURE_M * (1 - 1e-6)
    azimuths = np.linspace(0.0, 360.0, 72, endpoint=False)
    lon2, lat2, _ = GEOD.fwd(
        np.full(72, centre_lon), np.full(72, centre_lat), azimuths, np.full(72, rim_m)
    )
    assert footprint_contains(fp, lat2, lon2).all()


@pytest.mark.parametrize("scale", ["tiny", "normal", "continent"])
@pytest.mark.parametrize("region", REGIONS)
@settings(max_examples=20, deadline=None)
@given(seed=SEEDS)
def test_the_inner_disc_shortcut_agrees_with_the_exact_test(scale, region, seed):
    rng = np.random.default_rng(seed)
    sa, sb = size(rng, scale), size(rng, scale)
    # Closer than pair_centres: mostly heavy overlaps, where the shortcut decides.
    lat, lon = point(rng, region)
    lat2, lon2 = offset(lat, lon, rng.uniform(0, 360), rng.uniform(0, 0.6) * (sa + sb))
    a, _ = random_footprint(rng, str(rng.choice(["circle", "polygon"])), lat, lon, sa)
    b, _ = random_footprint(rng, str(rng.choice(["circle", "polygon"])), lat2, lon2, sb)
    fast = both_ways(a, b)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(intersect, "SURE_LENS_RAD", math.inf)  # the exact test alone
        assert both_ways(a, b) == fast
