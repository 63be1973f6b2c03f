"""Exact footprint overlap.

Two footprints *overlap* when their interiors share a region at least ``OVERLAP_TOLERANCE_M``
thick. Shapes that merely touch (a shared edge, tangent circles) do not; an overlap of 1 m always
does. The answer is decided on the true geometry: geodesic circles with ellipsoidal distances,
polygons with densified geodesic edges in a gnomonic plane where those edges are straight.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import shapely

from deconfliction.geo.footprint import Circle, Footprint, Polygon
from deconfliction.geo.sphere import (
    GEOD,
    MAX_RADIUS_OF_CURVATURE_M,
    MIN_RADIUS_OF_CURVATURE_M,
    FloatArray,
    angle,
    gnomonic,
    nearest_on_arcs,
    ring_seen_from,
    slerp,
    to_latlon,
    to_unit,
)

OVERLAP_TOLERANCE_M: Final = 0.01
"""Overlaps thinner than this are touching, not conflicting (floating-point noise lives far below)."""

SURE_LENS_RAD: Final = 1.0 / MIN_RADIUS_OF_CURVATURE_M
"""A lens this thick (over a metre on WGS84) between two footprints' inner discs is an overlap
beyond doubt: the shortcut that settles most heavily overlapping pairs without the exact test."""


def footprints_overlap(a: Footprint, b: Footprint) -> bool:
    """True when the two footprints' interiors overlap by more than the tolerance."""
    between = _angle3(a.center, b.center)
    if between > a.cap_radius + b.cap_radius:
        return False
    ra, rb = a.inner_radius(), b.inner_radius()
    if between + SURE_LENS_RAD < ra + rb and min(ra, rb) > SURE_LENS_RAD:
        return True  # discs inside each footprint overlap by a lens over a metre thick
    if isinstance(a, Circle) and isinstance(b, Circle):
        reach = a.radius_m + b.radius_m - OVERLAP_TOLERANCE_M
        sure = _decided_by_sphere(between, reach)
        if sure is not None:
            return sure
        _, _, dist = GEOD.inv(a.lon, a.lat, b.lon, b.lat)
        return float(dist) < reach
    if isinstance(a, Circle):
        assert isinstance(b, Polygon)
        return _circle_polygon(a, b)
    if isinstance(b, Circle):
        return _circle_polygon(b, a)
    return _polygon_polygon(a, b)


def _angle3(a: FloatArray, b: FloatArray) -> float:
    """``angle`` for two single vectors in plain floats: numpy's per-call cost dominates here."""
    ax, ay, az = a.tolist()
    bx, by, bz = b.tolist()
    cx, cy, cz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
    return math.atan2(math.sqrt(cx * cx + cy * cy + cz * cz), ax * bx + ay * by + az * bz)


def _decided_by_sphere(arc: float, reach_m: float) -> bool | None:
    """Whether an ellipsoidal distance is below ``reach_m``, if the sphere already tells.

    On the sphere of geodetic coordinates a path of angle ``arc`` is at least MIN and at most MAX
    radius of curvature times ``arc`` long on WGS84, so most cases need no geodesic solution.
    """
    if arc * MIN_RADIUS_OF_CURVATURE_M >= reach_m * (1 + 1e-9):
        return False
    if arc * MAX_RADIUS_OF_CURVATURE_M < reach_m * (1 - 1e-9):
        return True
    return None


def _shared_center(a: Footprint, b: Footprint) -> FloatArray:
    mid = a.center + b.center
    norm = np.linalg.norm(mid)
    return a.center if norm < 1e-12 else mid / norm


def _polygon_polygon(a: Polygon, b: Polygon) -> bool:
    center = _shared_center(a, b)
    pa = shapely.Polygon(gnomonic(a.xyz, center))
    pb = shapely.Polygon(gnomonic(b.xyz, center))
    if not pa.intersects(pb):
        return False
    common = pa.intersection(pb)
    if common.area <= 0.0:
        return False
    # Overlap means the common region holds a disc OVERLAP_TOLERANCE_M across. A region's inradius
    # is at least area / perimeter, so a large mean thickness settles it at once; otherwise a long
    # sub-tolerance sliver (a border digitised twice) may still hide a real incursion: shrink the
    # region by the disc's radius and see whether anything is left.
    if 2.0 * common.area / common.length > OVERLAP_TOLERANCE_M:
        return True
    return not common.buffer(-OVERLAP_TOLERANCE_M / 2, quad_segs=2).is_empty


def _circle_polygon(c: Circle, p: Polygon) -> bool:
    reach = c.radius_m - OVERLAP_TOLERANCE_M
    seen = ring_seen_from(c.center, p.xyz)
    if seen is None:  # part of the ring is near or past the circle centre's horizon
        return _circle_polygon_far(c, p)
    arc, inside = seen
    sure = _decided_by_sphere(arc, reach)
    if sure or inside:
        return True
    if sure is False:
        return False
    return distance_to_ring_m(c.center, c.lat, c.lon, p.xyz) < reach


def _circle_polygon_far(c: Circle, p: Polygon) -> bool:
    center = _shared_center(c, p)
    plane = shapely.Polygon(gnomonic(p.xyz, center))
    xy = gnomonic(c.center[None, :], center)[0]
    if shapely.contains_xy(plane, xy[0], xy[1]):
        return True
    reach = c.radius_m - OVERLAP_TOLERANCE_M
    a, b = p.xyz, np.roll(p.xyz, -1, axis=0)
    t0 = nearest_on_arcs(c.center, a, b)
    arc = float(angle(c.center[None, :], slerp(a, b, t0[:, None])[:, 0, :]).min())
    sure = _decided_by_sphere(arc, reach)
    if sure is not None:
        return sure
    return distance_to_ring_m(c.center, c.lat, c.lon, p.xyz) < reach


def distance_to_ring_m(point: FloatArray, lat: float, lon: float, ring: FloatArray) -> float:
    """Ellipsoidal distance in metres from a point to a closed ring of short geodesic edges.

    The nearest point of each edge is first found on the sphere, then refined on the ellipsoid by
    a parabola through nearby samples, so the error is far below a centimetre.
    """
    a, b = ring, np.roll(ring, -1, axis=0)
    t0 = nearest_on_arcs(point, a, b)
    arc = angle(a, b)
    sphere_dist = angle(point[None, :], slerp(a, b, t0[:, None])[:, 0, :])
    # Only edges that can be nearest on the ellipsoid (metrics differ by < 1%) need refining.
    near = sphere_dist <= sphere_dist.min() * 1.02 + 1e-7
    a, b, t0, arc, sphere_dist = a[near], b[near], t0[near], arc[near], sphere_dist[near]
    # Sample around the spherical foot, +-2% of the distance along the edge.
    h = np.divide(0.01 * sphere_dist + 1e-9, arc, out=np.full_like(arc, 0.5), where=arc > 0)
    offsets = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    ts = np.clip(t0[:, None] + offsets[None, :] * h[:, None], 0.0, 1.0)
    dist = _distances(lat, lon, slerp(a, b, ts))
    best = np.argmin(dist, axis=1)
    inner = np.clip(best, 1, 3)
    rows = np.arange(len(best))
    d_l, d_c, d_r = dist[rows, inner - 1], dist[rows, inner], dist[rows, inner + 1]
    curv = d_l - 2 * d_c + d_r
    shift = np.divide(d_l - d_r, 2 * curv, out=np.zeros_like(curv), where=curv > 1e-12)
    t_ref = np.clip(ts[rows, inner] + np.clip(shift, -1, 1) * h, 0.0, 1.0)
    refined = _distances(lat, lon, slerp(a, b, t_ref[:, None]))[:, 0]
    return float(min(dist.min(), refined.min()))


def _distances(lat: float, lon: float, pts: FloatArray) -> FloatArray:
    plat, plon = to_latlon(pts)
    shape = plat.shape
    _, _, d = GEOD.inv(np.full(plat.size, lon), np.full(plat.size, lat), plon.ravel(), plat.ravel())
    return np.asarray(d).reshape(shape)


def footprint_contains(fp: Footprint, lat: FloatArray, lon: FloatArray) -> np.ndarray:
    """Vectorised point-in-footprint test (boundary counts as inside)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if isinstance(fp, Circle):
        _, _, d = GEOD.inv(np.full(lat.shape, fp.lon), np.full(lat.shape, fp.lat), lon, lat)
        return np.asarray(d) <= fp.radius_m
    pts = to_unit(lat, lon).reshape(-1, 3)
    ok = angle(pts, fp.center[None, :]) <= fp.cap_radius
    out = np.zeros(len(pts), dtype=bool)
    if ok.any():
        xy = gnomonic(pts[ok], fp.center)
        plane = shapely.Polygon(gnomonic(fp.xyz, fp.center))
        out[ok] = shapely.intersects_xy(plane, xy[:, 0], xy[:, 1])  # boundary included
    return out.reshape(lat.shape)
