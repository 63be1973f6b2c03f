"""Random footprints for property tests, drawn from a numpy generator (hypothesis picks the seed)."""

from __future__ import annotations

import numpy as np

from deconfliction.geo import Circle, Polygon

from .geo_reference import GEOD

SCALES = {
    # (smallest, largest) size in metres: a circle's radius, a polygon's largest vertex distance.
    "tiny": (2.0, 20.0),
    "normal": (500.0, 50_000.0),
    "continent": (300_000.0, 2_500_000.0),
}
REGIONS = ("anywhere", "antimeridian", "polar")


def point(rng: np.random.Generator, region: str) -> tuple[float, float]:
    if region == "antimeridian":
        return float(rng.uniform(-70, 70)), float((180.0 + rng.normal(0, 0.3) + 180) % 360 - 180)
    if region == "polar":
        return float(rng.choice([-1, 1]) * rng.uniform(80.0, 90.0)), float(rng.uniform(-180, 180))
    return float(rng.uniform(-75, 75)), float(rng.uniform(-180, 180))


def offset(lat: float, lon: float, azimuth: float, distance: float) -> tuple[float, float]:
    lon2, lat2, _ = GEOD.fwd(lon, lat, azimuth, distance)
    return float(lat2), float(lon2)


def star_vertices(rng, lat, lon, size, k=None) -> list[tuple[float, float]]:
    """A polygon star-shaped about (lat, lon): simple by construction."""
    k = int(rng.integers(3, 9)) if k is None else k
    az = (np.arange(k) + rng.uniform(0.15, 0.85, k)) * 360.0 / k + rng.uniform(0, 360)
    dist = size * rng.uniform(0.4, 1.0, k)
    lon2, lat2, _ = GEOD.fwd(np.full(k, lon), np.full(k, lat), az, dist)
    return [(float(a), float(b)) for a, b in zip(lat2, lon2, strict=True)]


def size(rng, scale: str) -> float:
    lo, hi = SCALES[scale]
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def pair_centres(rng, region, size_a, size_b):
    """Two centres close enough that the footprints overlap about half the time."""
    lat, lon = point(rng, region)
    lat2, lon2 = offset(lat, lon, rng.uniform(0, 360), rng.uniform(0, 1.3) * (size_a + size_b))
    return (lat, lon), (lat2, lon2)


def random_footprint(rng, kind: str, lat: float, lon: float, size_m: float):
    """(footprint, spec): spec is (lat, lon, radius) or the vertex list."""
    if kind == "circle":
        return Circle.create(lat, lon, size_m), (lat, lon, size_m)
    vertices = star_vertices(rng, lat, lon, size_m)
    return Polygon.create(vertices), vertices
