"""Unit-sphere helpers: the sphere model that makes polygon edges straight.

Coordinates are WGS84 geodetic degrees. Polygon edges are ellipsoidal geodesics; we densify them
(see :mod:`deconfliction.geo.footprint`) until each piece is within 2 millimetres of the great
circle through its ends on the sphere that carries the same latitude and longitude. On that sphere
the gnomonic projection maps every great circle to a straight line, so planar polygon algebra
(shapely) is exact there. Distances that must be true metres use :data:`GEOD` on the ellipsoid.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from pyproj import Geod

FloatArray = npt.NDArray[np.float64]

GEOD = Geod(ellps="WGS84")
"""The ellipsoid every metre in this package is measured on."""

MEAN_RADIUS_M = 6_371_008.8
"""Scale of the gnomonic plane; only used to express planar lengths in approximate metres."""

MIN_RADIUS_OF_CURVATURE_M = 6_335_439.0
"""Smallest radius of curvature of WGS84 (meridional, at the equator).

A geodesic of length ``s`` never spans more than ``s / MIN_RADIUS_OF_CURVATURE_M`` radians of
arc on the sphere model, so angular bounds derived with it are conservative.
"""


MAX_RADIUS_OF_CURVATURE_M = 6_399_593.7
"""Largest radius of curvature of WGS84 (at the poles): the other side of the same bound."""


def to_unit(lat: npt.ArrayLike, lon: npt.ArrayLike) -> FloatArray:
    """Unit vectors (..., 3) for geodetic latitude/longitude in degrees."""
    la = np.radians(np.asarray(lat, dtype=np.float64))
    lo = np.radians(np.asarray(lon, dtype=np.float64))
    cos_la = np.cos(la)
    return np.stack([cos_la * np.cos(lo), cos_la * np.sin(lo), np.sin(la)], axis=-1)


def unit_vector(lat: float, lon: float) -> FloatArray:
    """``to_unit`` for one point, without numpy's per-call overhead (a circle's centre)."""
    la, lo = math.radians(lat), math.radians(lon)
    cos_la = math.cos(la)
    return np.array((cos_la * math.cos(lo), cos_la * math.sin(lo), math.sin(la)))


def to_latlon(xyz: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Latitude and longitude in degrees of (non-zero) vectors (..., 3)."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return np.degrees(np.arctan2(z, np.hypot(x, y))), np.degrees(np.arctan2(y, x))


def angle(a: FloatArray, b: FloatArray) -> FloatArray:
    """Angle in radians between unit vectors; stable for tiny and near-antipodal angles."""
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    dot = np.sum(a * b, axis=-1)
    return np.arctan2(cross, dot)


def normalize(v: FloatArray) -> FloatArray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def tangent_basis(center: FloatArray) -> tuple[FloatArray, FloatArray]:
    """East and north unit vectors at ``center`` (a pole gets a fixed, arbitrary east)."""
    east = np.array([-center[1], center[0], 0.0])
    norm = np.linalg.norm(east)
    east = np.array([0.0, 1.0, 0.0]) if norm < 1e-12 else east / norm
    north = np.cross(center, east)
    return east, north


def gnomonic(points: FloatArray, center: FloatArray) -> FloatArray:
    """Gnomonic projection (N, 2) of unit vectors about ``center``, scaled to about metres.

    Great circles become straight lines. Callers keep every point well inside the hemisphere
    around ``center`` (footprints are bounded so the angle stays below 80 degrees).
    """
    east, north = tangent_basis(center)
    depth = points @ center
    scale = MEAN_RADIUS_M / depth
    return np.stack([(points @ east) * scale, (points @ north) * scale], axis=-1)


def nearest_on_arcs(p: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
    """For each great-circle arc a[i] -> b[i] (short arcs), the parameter t in [0, 1] of the point
    nearest to unit vector ``p`` on the sphere (t measured as a fraction of the arc's angle)."""
    n = np.cross(a, b)
    n_norm = np.linalg.norm(n, axis=-1)
    safe = n_norm > 1e-15
    n = n / np.where(safe, n_norm, 1.0)[:, None]
    q = p - (n @ p)[:, None] * n
    q_norm = np.linalg.norm(q, axis=-1)
    q = q / np.where(q_norm > 1e-15, q_norm, 1.0)[:, None]
    inside = (
        safe
        & (q_norm > 1e-15)
        & (np.sum(np.cross(a, q) * n, axis=-1) >= 0)
        & (np.sum(np.cross(q, b) * n, axis=-1) >= 0)
    )
    arc = angle(a, b)
    t_foot = np.divide(angle(a, q), arc, out=np.zeros_like(arc), where=arc > 0)
    # Outside the arc the nearest point is the nearer end.
    t_end = np.where(angle(p[None, :], a) <= angle(p[None, :], b), 0.0, 1.0)
    return np.clip(np.where(inside, t_foot, t_end), 0.0, 1.0)


def slerp(a: FloatArray, b: FloatArray, t: FloatArray) -> FloatArray:
    """Points at fraction ``t`` (broadcast, shape (N, K)) along arcs a[i] -> b[i]; result (N, K, 3)."""
    omega = angle(a, b)[:, None]
    sin_omega = np.sin(omega)
    small = sin_omega < 1e-12
    safe_sin = np.where(small, 1.0, sin_omega)
    wa = np.where(small, 1.0 - t, np.sin((1.0 - t) * omega) / safe_sin)
    wb = np.where(small, t, np.sin(t * omega) / safe_sin)
    return normalize(wa[..., None] * a[:, None, :] + wb[..., None] * b[:, None, :])


def ring_seen_from(point: FloatArray, ring: FloatArray) -> tuple[float, bool] | None:
    """Angle (radians) from ``point`` to the nearest point of the ring of great-circle arcs, and
    whether ``point`` lies inside the ring; None if the ring reaches beyond 84 degrees from it.

    In the gnomonic projection centred on the point itself the arcs are segments and the angle
    from the centre is atan of the planar distance, so the planar nearest point is the spherical
    one, exactly, and an even-odd ray test from the origin tells inside from outside.
    """
    px, py, pz = point.tolist()
    norm = math.hypot(px, py)
    ex, ey = (-py / norm, px / norm) if norm > 1e-12 else (0.0, 1.0)
    north = (-pz * ey, pz * ex, px * ey - py * ex)  # point x east
    proj = ring @ np.array([[ex, north[0], px], [ey, north[1], py], [0.0, north[2], pz]])
    depth = proj[:, 2]
    if depth.min() < 0.1:
        return None
    x, y = proj[:, 0] / depth, proj[:, 1] / depth
    x2, y2 = np.roll(x, -1), np.roll(y, -1)
    dx, dy = x2 - x, y2 - y
    length2 = dx * dx + dy * dy
    t = np.clip(-(x * dx + y * dy) / np.where(length2 > 0.0, length2, 1.0), 0.0, 1.0)
    cx, cy = x + t * dx, y + t * dy
    arc = math.atan(math.sqrt(float((cx * cx + cy * cy).min())))
    crosses = (y > 0.0) != (y2 > 0.0)
    if crosses.any():
        xc, yc, dxc, dyc = x[crosses], y[crosses], dx[crosses], dy[crosses]
        inside = bool(np.count_nonzero(xc - yc * dxc / dyc > 0.0) % 2)
    else:
        inside = False
    return arc, inside
