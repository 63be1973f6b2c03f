"""An independent, slow reference for footprint overlap, built only on pyproj's WGS84 geodesics.

Nothing here uses the sphere, the gnomonic plane or the densified ring of the code under test:
distances to a polygon are minimised along the true geodesic edges (coarse samples, then a zoom),
and "inside" is a winding number of the azimuths from the point to the vertices.

Every function reports a *margin* in metres alongside its answer, so a test can skip the examples
whose answer sits closer to the boundary than the reference can promise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyproj import Geod

GEOD = Geod(ellps="WGS84")
SURE_M = 0.5
"""Examples whose true answer lies within this many metres of the decision are skipped."""


def distance_m(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (lat1, lon1, lat2, lon2))
    )
    _, _, d = GEOD.inv(lon1.ravel(), lat1.ravel(), lon2.ravel(), lat2.ravel())
    return np.asarray(d).reshape(lat1.shape)


@dataclass
class GeodesicPolygon:
    """A polygon given by its vertices, with every edge the WGS84 geodesic between them."""

    lat: np.ndarray
    lon: np.ndarray

    def __init__(self, vertices) -> None:
        v = np.asarray(vertices, dtype=np.float64)
        self.lat, self.lon = v[:, 0], v[:, 1]
        az, _, length = GEOD.inv(self.lon, self.lat, np.roll(self.lon, -1), np.roll(self.lat, -1))
        self.azimuth, self.length = np.asarray(az), np.asarray(length)

    def edge_points(self, edge: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points ``s`` metres along edges ``edge`` (arrays of one shape)."""
        e, s = np.broadcast_arrays(edge, s)
        lon, lat, _ = GEOD.fwd(
            self.lon[e].ravel(), self.lat[e].ravel(), self.azimuth[e].ravel(), s.ravel()
        )
        return np.asarray(lat).reshape(s.shape), np.asarray(lon).reshape(s.shape)

    def boundary_samples(self, per_edge: int) -> tuple[np.ndarray, np.ndarray]:
        frac = np.arange(per_edge) / per_edge
        edge = np.repeat(np.arange(len(self.lat)), per_edge)
        s = np.tile(frac, len(self.lat)) * self.length[edge]
        return self.edge_points(edge, s)

    def distance_to_boundary(self, lat, lon) -> np.ndarray:
        """Metres from each point to the nearest point of the geodesic ring (to well below 1 mm)."""
        lat, lon = np.atleast_1d(lat).astype(float), np.atleast_1d(lon).astype(float)
        n_pts, n_edges, k = len(lat), len(self.lat), 33
        frac = np.linspace(0.0, 1.0, k)
        s = frac[None, None, :] * self.length[None, :, None]
        e = np.broadcast_to(np.arange(n_edges)[None, :, None], (n_pts, n_edges, k))
        plat, plon = self.edge_points(e, np.broadcast_to(s, e.shape))
        d = distance_m(lat[:, None, None], lon[:, None, None], plat, plon)
        best = d.min(axis=2)
        # The distance along an edge is 1-Lipschitz in arc length: edges that cannot beat the best
        # sample need no refinement.
        spacing = self.length / (k - 1)
        bound = best - spacing[None, :] / 2
        pairs = np.argwhere(bound <= best.min(axis=1, keepdims=True))
        p, e = pairs[:, 0], pairs[:, 1]
        centre = frac[np.argmin(d[p, e], axis=1)] * self.length[e]
        half = spacing[e].copy()
        fine = np.linspace(-1.0, 1.0, 9)
        value = best[p, e]
        for _ in range(30):
            s = np.clip(
                centre[:, None] + fine[None, :] * half[:, None], 0.0, self.length[e][:, None]
            )
            plat, plon = self.edge_points(np.broadcast_to(e[:, None], s.shape), s)
            d = distance_m(lat[p][:, None], lon[p][:, None], plat, plon)
            i = np.argmin(d, axis=1)
            centre = s[np.arange(len(s)), i]
            value = np.minimum(value, d.min(axis=1))
            half = half / 4.0
            if half.max() < 1e-4:
                break
        out = np.full(n_pts, np.inf)
        np.minimum.at(out, p, value)
        return out

    def winding(self, lat, lon) -> np.ndarray:
        """Turns of the ring around each point: 0 outside, +-1 inside (geodesic triangles)."""
        lat, lon = np.atleast_1d(lat).astype(float), np.atleast_1d(lon).astype(float)
        n = len(self.lat)
        az, _, _ = GEOD.inv(
            np.repeat(lon, n),
            np.repeat(lat, n),
            np.tile(self.lon, len(lat)),
            np.tile(self.lat, len(lat)),
        )
        az = np.asarray(az).reshape(len(lat), n)
        turn = (np.roll(az, -1, axis=1) - az + 180.0) % 360.0 - 180.0
        return np.rint(turn.sum(axis=1) / 360.0).astype(int)

    def signed_distance(self, lat, lon) -> np.ndarray:
        """Distance to the boundary, positive inside and negative outside."""
        d = self.distance_to_boundary(lat, lon)
        return np.where(self.winding(lat, lon) != 0, d, -d)


def circles_overlap(c1, c2) -> tuple[bool, float]:
    """(answer, margin): circles are (lat, lon, radius_m)."""
    depth = c1[2] + c2[2] - float(distance_m(c1[0], c1[1], c2[0], c2[1]))
    return depth > 0.0, abs(depth)


def circle_polygon_overlap(circle, poly: GeodesicPolygon) -> tuple[bool, float]:
    lat, lon, radius = circle
    sd = float(poly.signed_distance(lat, lon)[0])
    if sd > 0:  # the centre is inside: overlap, as deep as the radius at least
        return True, sd + radius
    depth = radius + sd
    return depth > 0.0, abs(depth)


def polygons_overlap(a: GeodesicPolygon, b: GeodesicPolygon, rng: np.random.Generator):
    """(answer, margin) when the reference can tell, else None.

    Overlap is certified by a witness point at least SURE_M inside both; separation by the two
    boundaries staying SURE_M apart with no vertex of either inside the other.
    """
    # Overlap: look for a point deep inside both.
    cand_lat = [a.lat, b.lat]
    cand_lon = [a.lon, b.lon]
    for poly in (a, b):
        lo_lat, hi_lat = poly.lat.min(), poly.lat.max()
        lons = np.unwrap(np.radians(poly.lon))
        lo_lon, hi_lon = np.degrees(lons.min()), np.degrees(lons.max())
        n = 150
        cand_lat.append(rng.uniform(lo_lat, hi_lat, n))
        cand_lon.append((rng.uniform(lo_lon, hi_lon, n) + 180.0) % 360.0 - 180.0)
    la, lo = np.concatenate(cand_lat), np.concatenate(cand_lon)
    in_both = (a.winding(la, lo) != 0) & (b.winding(la, lo) != 0)
    if in_both.any():
        la, lo = la[in_both], lo[in_both]
        depth = np.minimum(a.distance_to_boundary(la, lo), b.distance_to_boundary(la, lo))
        if depth.max() >= SURE_M:
            return True, float(depth.max())
    # Separation: Lipschitz branch-and-bound of the distance from A's boundary to B's.
    per_edge = 48
    lat, lon = a.boundary_samples(per_edge)
    edge = np.repeat(np.arange(len(a.lat)), per_edge)
    s = np.tile(np.arange(per_edge) / per_edge, len(a.lat)) * a.length[edge]
    step = a.length[edge] / per_edge
    separated = None
    for _ in range(8):
        g = b.distance_to_boundary(lat, lon)
        if g.min() < SURE_M:
            separated = False
            break
        doubtful = g - step < SURE_M
        if not doubtful.any():
            separated = True
            break
        if doubtful.sum() > 2_000:
            break
        edge, s, step = edge[doubtful], s[doubtful], step[doubtful]
        sub = np.linspace(-1.0, 1.0, 9)
        s = np.clip((s[:, None] + sub[None, :] * step[:, None]).ravel(), 0, None)
        edge = np.repeat(edge, 9)
        s = np.minimum(s, a.length[edge])
        step = np.repeat(step / 4.0, 9)
        lat, lon = a.edge_points(edge, s)
    if separated:
        inside = (b.winding(a.lat, a.lon) != 0).any() or (a.winding(b.lat, b.lon) != 0).any()
        if not inside:
            return False, SURE_M
    return None
