"""What footprints are accepted, how they are cleaned, and what is refused with which code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deconfliction.geo import Circle, GeometryError, Polygon, footprints_overlap

from .geo_reference import GEOD

M = 1.0 / 111_320.0  # about a metre in degrees at the equator


def refused(code: str):
    class Refused:
        def __enter__(self):
            self.ctx = pytest.raises(GeometryError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            assert self.info.value.code == code, self.info.value.message
            assert self.info.value.message
            return handled

    return Refused()


# --- circles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [0.0, -5.0, 0.5, math.nan, math.inf])
def test_a_circle_needs_a_radius_of_at_least_a_metre(radius):
    with refused("invalid_radius"):
        Circle.create(10.0, 10.0, radius)


@pytest.mark.parametrize(
    ("lat", "lon"),
    [
        (math.nan, 0.0),
        (0.0, math.nan),
        (math.inf, 0.0),
        (0.0, -math.inf),
        (90.01, 0.0),
        (-91.0, 0.0),
        (0.0, 180.01),
        (0.0, -360.0),
    ],
)
def test_a_circle_centre_must_be_a_real_position(lat, lon):
    with refused("invalid_coordinates"):
        Circle.create(lat, lon, 100.0)


def test_a_circle_may_span_a_continent_but_not_more():
    Circle.create(0.0, 0.0, 4_000_000.0)
    with refused("footprint_too_large"):
        Circle.create(0.0, 0.0, 4_500_000.0)


@pytest.mark.parametrize(("lat", "lon"), [(90.0, 0.0), (-90.0, 123.0), (0.0, 180.0), (0.0, -180.0)])
def test_a_circle_may_sit_on_a_pole_or_the_antimeridian(lat, lon):
    circle = Circle.create(lat, lon, 1_000.0)
    assert footprints_overlap(circle, Circle.create(lat, lon, 1.0))


def test_the_two_names_of_the_antimeridian_are_the_same_place():
    assert footprints_overlap(Circle.create(10.0, 180.0, 5.0), Circle.create(10.0, -180.0, 5.0))


# --- polygons: accepted and cleaned --------------------------------------------------------------


def test_a_repeated_closing_vertex_is_dropped():
    polygon = Polygon.create([(0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.0, 0.0)])
    assert polygon.vertices == ((0.0, 1.0), (1.0, 1.0), (0.0, 0.0))


def test_repeated_consecutive_vertices_are_dropped():
    polygon = Polygon.create([(0.0, 0.0), (0.0, 0.0), (0.0, 1.0), (0.0, 1.0), (1.0, 1.0)])
    assert len(polygon.vertices) == 3
    assert footprints_overlap(polygon, Polygon.create([(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)]))


def test_a_vertex_on_the_pole_is_one_vertex_whatever_its_longitude():
    polygon = Polygon.create([(90.0, 0.0), (90.0, 45.0), (80.0, 90.0), (80.0, 0.0)])
    assert len(polygon.vertices) == 3


def test_a_collinear_vertex_in_the_middle_of_an_edge_is_fine():
    Polygon.create([(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0)])


@pytest.mark.parametrize("side_m", [1.0, 3.0, 10.0])
def test_tiny_polygons_are_accepted(side_m):
    triangle = Polygon.create([(0.0, 0.0), (0.0, side_m * M), (side_m * M, 0.0)])
    assert triangle.area_m2 == pytest.approx(side_m**2 / 2, rel=0.02)


def test_a_continent_sized_polygon_is_accepted():
    polygon = Polygon.create([(-30.0, -20.0), (-30.0, 30.0), (30.0, 30.0), (30.0, -20.0)])
    assert polygon.area_m2 > 3e13


# --- polygons: refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vertices",
    [
        [(0.0, 0.0), (1.0, 1.0)],
        [(0.0, 0.0), (1.0, 1.0), (0.0, 0.0)],
        [(0.0, 0.0), (1.0, 1.0), (0.0, 0.0), (1.0, 1.0)],
        [(5.0, 5.0)] * 4,
        [(90.0, 0.0), (90.0, 90.0), (90.0, 180.0)],
    ],
    ids=["two", "two-closed", "two-repeated", "one-repeated", "pole-thrice"],
)
def test_fewer_than_three_distinct_vertices_are_refused(vertices):
    with refused("degenerate_polygon"):
        Polygon.create(vertices)


def _on_one_geodesic(lat1, lon1, lat2, lon2, n):
    points = GEOD.npts(lon1, lat1, lon2, lat2, n)
    return [(lat1, lon1), *((la, lo) for lo, la in points), (lat2, lon2)]


@pytest.mark.parametrize(
    "vertices",
    [
        [(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)],  # a meridian
        [(0.0, 0.0), (0.0, 1.0), (0.0, 2.0), (0.0, 0.5)],  # the equator, doubling back
        _on_one_geodesic(40.0, 10.0, 50.0, 40.0, 3),  # a long WGS84 geodesic (curved on the sphere)
        _on_one_geodesic(-10.0, 100.0, -10.001, 100.02, 5),  # a short one
        [(0.0, 0.0), (0.0, 2e-4 * M), (1e-4 * M, 1e-4 * M)],  # 0.1 mm: nothing to overlap
    ],
    ids=["meridian", "equator", "long-geodesic", "short-geodesic", "sub-millimetre"],
)
def test_collinear_vertices_are_refused(vertices):
    with refused("degenerate_polygon"):
        Polygon.create(vertices)


@pytest.mark.parametrize(
    "vertices",
    [
        [(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)],  # bow-tie
        [(0.0, 0.0), (0.0, 1e-4), (1e-4, 0.0), (1e-4, 1e-4)],  # a tiny bow-tie (11 m)
        [(0.0, 0.0), (0.0, 2.0), (1.0, 1.0), (2.0, 2.0), (2.0, 0.0), (1.0, 1.0)],  # touches itself
        [(0.0, 0.0), (0.0, 2.0), (2.0, 2.0), (2.0, 0.0), (0.0, 1.0)],  # vertex on its own edge
        [
            (0.0, 0.0),
            (0.0, 3.0),
            (1.0, 3.0),
            (1.0, 1.0),
            (2.0, 1.0),
            (2.0, 3.0),
            (3.0, 3.0),
            (3.0, 0.0),
            (1.0, 0.0),
            (1.0, 2.0),
        ],  # folds over itself
    ],
    ids=["bow-tie", "tiny-bow-tie", "self-touching", "vertex-on-edge", "folded"],
)
def test_self_intersecting_and_self_touching_polygons_are_refused(vertices):
    with refused("self_intersecting_polygon"):
        Polygon.create(vertices)


@pytest.mark.parametrize(
    "bad", [(math.nan, 0.0), (0.0, math.inf), (91.0, 0.0), (0.0, 181.0), (-90.5, 0.0)]
)
def test_a_polygon_vertex_must_be_a_real_position(bad):
    with refused("invalid_coordinates"):
        Polygon.create([(0.0, 0.0), (0.0, 1.0), bad, (1.0, 0.0)])


@pytest.mark.parametrize(
    "vertices", [[], [1.0, 2.0, 3.0], [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (2.0, 0.0, 0.0)]]
)
def test_a_polygon_is_a_list_of_latitude_longitude_pairs(vertices):
    with refused("invalid_polygon"):
        Polygon.create(vertices)


@pytest.mark.parametrize(
    "vertices",
    [
        [(-50.0, 0.0), (-50.0, 120.0), (50.0, 120.0), (50.0, 0.0)],  # wider than 80 degrees
        [(0.0, 0.0), (0.0, 120.0), (0.0, -120.0)],  # the equator's three thirds: half the globe
        [(-10.0, 0.0), (-10.0, 90.0), (-10.0, 180.0), (-10.0, -90.0)],  # all but a polar cap
    ],
)
def test_polygons_larger_than_the_cap_are_refused(vertices):
    with refused("footprint_too_large"):
        Polygon.create(vertices)


# --- poles and the antimeridian ------------------------------------------------------------------


def test_a_polygon_around_the_pole_contains_it():
    north = Polygon.create([(80.0, 0.0), (80.0, 90.0), (80.0, 180.0), (80.0, -90.0)])
    south = Polygon.create([(-80.0, 0.0), (-80.0, -90.0), (-80.0, 180.0), (-80.0, 90.0)])
    assert (north.contains_pole, south.contains_pole) == (1, -1)
    assert footprints_overlap(north, Circle.create(90.0, 0.0, 10.0))
    assert footprints_overlap(north, Circle.create(89.0, 137.0, 10.0))
    assert not footprints_overlap(north, south)


def test_a_polygon_beside_the_pole_does_not_contain_it():
    polygon = Polygon.create([(80.0, 0.0), (85.0, 90.0), (80.0, 170.0)])
    assert polygon.contains_pole == 0
    assert not footprints_overlap(polygon, Circle.create(90.0, 0.0, 10.0))


def test_polygons_meeting_along_a_meridian_through_the_pole_touch_but_do_not_overlap():
    east = Polygon.create([(80.0, 0.0), (90.0, 0.0), (80.0, 180.0), (80.0, 90.0)])
    west = Polygon.create([(80.0, 180.0), (90.0, 0.0), (80.0, 0.0), (80.0, -90.0)])
    assert not footprints_overlap(east, west)
    assert footprints_overlap(east, Circle.create(89.999, -90.0, 112.0))  # reaches 1 m over
    assert not footprints_overlap(east, Circle.create(89.999, -90.0, 110.0))


def test_a_circle_containing_the_pole_meets_a_polygon_on_the_far_side():
    circle = Circle.create(89.0, 0.0, 200_000.0)  # reaches about 89 degrees on the far side
    assert footprints_overlap(
        circle, Polygon.create([(89.5, 170.0), (89.5, -170.0), (88.0, 180.0)])
    )
    assert not footprints_overlap(
        circle, Polygon.create([(88.0, 170.0), (88.0, -170.0), (86.0, 180.0)])
    )


def test_shapes_across_the_antimeridian_meet_their_neighbours_on_either_side():
    polygon = Polygon.create([(-1.0, 179.5), (-1.0, -179.5), (1.0, -179.5), (1.0, 179.5)])
    assert footprints_overlap(polygon, Circle.create(0.0, -179.9, 1_000.0))
    assert footprints_overlap(polygon, Circle.create(0.0, 179.9, 1_000.0))
    assert footprints_overlap(
        polygon, Polygon.create([(0.0, -179.0), (0.5, -179.0), (0.0, -179.6)])
    )
    east_edge = -179.5
    beyond = Circle.create(0.0, east_edge + 1_000.0 / 111_320.0, 999.0)
    assert not footprints_overlap(polygon, beyond)
    assert polygon.area_m2 == pytest.approx(111_320.0 * 221_000.0, rel=0.01)


def test_a_narrow_polygon_is_not_mistaken_for_its_complement_across_the_antimeridian():
    polygon = Polygon.create([(0.0, 179.9), (0.0, -179.9), (0.1, -179.9), (0.1, 179.9)])
    assert not footprints_overlap(polygon, Circle.create(0.05, 0.0, 1_000.0))
    assert polygon.area_m2 < 1e9


@pytest.mark.parametrize("n", [3, 7, 50])
def test_vertex_order_does_not_matter(n):
    rng = np.random.default_rng(n)
    az = np.sort(rng.uniform(0, 360, n)) if n > 3 else np.array([0.0, 120.0, 240.0])
    az = np.linspace(0, 360, n, endpoint=False) if n > 3 else az
    lon, lat, _ = GEOD.fwd(np.full(n, 20.0), np.full(n, 50.0), az, np.full(n, 30_000.0))
    clockwise = list(zip(lat, lon, strict=True))
    a, b = Polygon.create(clockwise), Polygon.create(clockwise[::-1])
    probe = Circle.create(50.0, 20.0 + 30_500.0 / 71_700.0, 1_000.0)
    assert footprints_overlap(a, probe) == footprints_overlap(b, probe)
    assert a.area_m2 == pytest.approx(b.area_m2)


def test_a_ring_folding_back_on_itself_hundreds_of_times_is_refused_before_densifying() -> None:
    """Three far-apart vertices repeated 333 times: once densified into 5 km pieces this was a
    26,000-point tangle that GEOS took tens of seconds (or all memory) to judge."""
    with pytest.raises(GeometryError) as refused:
        Polygon.create([(0.0, 0.0), (10.0, 10.0), (0.0, 10.0)] * 333)
    assert refused.value.code == "self_intersecting_polygon"


def test_a_comb_of_long_thin_teeth_is_refused_before_it_costs_anything() -> None:
    """1,000 vertices whose outline would densify into hundreds of thousands of points."""
    teeth = []
    for k in range(250):
        lon = 10.0 + k * 0.01
        teeth += [(30.0, lon), (60.0, lon), (60.0, lon + 0.005), (30.0, lon + 0.005)]
    teeth += [(29.0, 12.5), (29.0, 10.0)]  # a base under the teeth closes the comb simply
    with pytest.raises(GeometryError) as refused:
        Polygon.create(teeth)
    assert refused.value.code == "footprint_too_complex"
    with pytest.raises(GeometryError) as too_many:
        Polygon.create([(0.0, 0.001 * k) for k in range(10_001)])
    assert too_many.value.code == "footprint_too_complex"
