"""Footprints: geodesic circles and polygons on WGS84, validated once and kept ready to test.

A footprint carries a bounding *cap* (a spherical cap that surely contains it) and lon/lat *boxes*
for indexes. Both are conservative: rounded outward, never smaller than the true shape.
"""

from __future__ import annotations

import functools
import math
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Final

import numpy as np
import shapely
from shapely.validation import explain_validity

from deconfliction.geo.errors import GeometryError
from deconfliction.geo.sphere import (
    GEOD,
    MAX_RADIUS_OF_CURVATURE_M,
    MIN_RADIUS_OF_CURVATURE_M,
    FloatArray,
    angle,
    gnomonic,
    normalize,
    ring_seen_from,
    to_latlon,
    to_unit,
    unit_vector,
)

MAX_EDGE_M: Final = 5_000.0
"""Longer polygon edges are split along the geodesic; a 5 km piece stays within 1.7 mm of the
great circle the exact tests use (measured: deviation ~ 6.6e-11 * length**2 metres). That keeps the
model's error well below the 1 cm overlap tolerance; 20 km pieces (2.6 cm) did not, and made a
circle tangent to a long edge, or two polygons sharing part of one, count as overlapping."""

MAX_CAP_DEG: Final = 40.0
"""Every footprint must fit in a spherical cap of this angular radius (about 4,400 km): enough
for a continent, and small enough that any two candidates project together into one gnomonic
plane less than 80 degrees from its centre."""

MAX_VERTICES: Final = 10_000
MAX_RING_POINTS: Final = 50_000
"""Bounds on the work one polygon may ask for: its vertices, and its ring once densified (a
continent's outline is a few thousand 5 km pieces; a comb of long thin teeth is not)."""

MIN_RADIUS_M: Final = 1.0
MIN_THICKNESS_M: Final = 0.01
"""A polygon thinner than this (mean thickness, 2 * area / perimeter, of its hull or of the ring
repaired) encloses no area that could ever overlap anything: its vertices are collinear, up to the
model's error."""
BOX_MARGIN_DEG: Final = 1e-5
"""Outward margin of index boxes (about a metre), on top of the float32 rounding of the index."""

Box = tuple[float, float, float, float]
"""(lon_min, lon_max, lat_min, lat_max) in degrees, never crossing the antimeridian."""


def _check_latlon(lat_max_abs: float, lon_max_abs: float) -> None:
    """Refuses coordinates whose largest magnitudes are these (NaN and infinity included:
    ``np.max`` carries a NaN through)."""
    if not (math.isfinite(lat_max_abs) and math.isfinite(lon_max_abs)):
        raise GeometryError("invalid_coordinates", "Coordinates must be finite numbers.")
    if lat_max_abs > 90.0:
        raise GeometryError("invalid_coordinates", "Latitude must lie between -90 and 90 degrees.")
    if lon_max_abs > 180.0:
        raise GeometryError(
            "invalid_coordinates", "Longitude must lie between -180 and 180 degrees."
        )


@dataclass(frozen=True, slots=True, eq=False)
class Circle:
    """A geodesic circle: every point within ``radius_m`` metres (on WGS84) of the centre."""

    lat: float
    lon: float
    radius_m: float
    center: FloatArray = field(repr=False)
    cap_radius: float = field(repr=False)
    """Angular radius (radians) of a cap that surely holds the circle."""
    _boxes: list[Box] | None = field(default=None, repr=False)
    _bytes: bytes | None = field(default=None, repr=False)

    kind: ClassVar[str] = "circle"

    @classmethod
    def create(cls, lat: float, lon: float, radius_m: float) -> Circle:
        lat, lon = float(lat), float(lon)
        _check_latlon(abs(lat), abs(lon))
        if not math.isfinite(radius_m) or radius_m < MIN_RADIUS_M:
            raise GeometryError(
                "invalid_radius", f"A circle's radius must be at least {MIN_RADIUS_M:g} m."
            )
        cap = radius_m / MIN_RADIUS_OF_CURVATURE_M * (1 + 1e-9) + 1e-12
        if math.degrees(cap) > MAX_CAP_DEG:
            raise GeometryError(
                "footprint_too_large",
                f"A circle may span at most {MAX_CAP_DEG:g} degrees of arc (about 4,400 km).",
            )
        return cls(lat, lon, float(radius_m), unit_vector(lat, lon), cap)

    @property
    def area_m2(self) -> float:
        return math.pi * self.radius_m**2

    def inner_radius(self) -> float:
        """Angular radius (radians) of a disc around ``center`` that lies inside the circle."""
        return self.radius_m / MAX_RADIUS_OF_CURVATURE_M

    def boxes(self) -> list[Box]:
        """Index boxes, computed once per footprint (they are on every write's path)."""
        if self._boxes is None:
            object.__setattr__(self, "_boxes", self._compute_boxes())
        return list(self._boxes)  # type: ignore[arg-type]

    def _compute_boxes(self) -> list[Box]:
        rho = math.degrees(self.cap_radius) + BOX_MARGIN_DEG
        lat_lo, lat_hi = self.lat - rho, self.lat + rho
        if lat_hi >= 90.0 or lat_lo <= -90.0:
            return [(-180.0, 180.0, max(lat_lo, -90.0), min(lat_hi, 90.0))]
        # Half-width in longitude of a small circle of angular radius rho on the sphere.
        ratio = math.sin(math.radians(rho)) / math.cos(math.radians(self.lat))
        half = 180.0 if ratio >= 1.0 else math.degrees(math.asin(ratio)) + BOX_MARGIN_DEG
        return _split_lon(self.lon - half, self.lon + half, lat_lo, lat_hi)

    def to_bytes(self) -> bytes:
        if self._bytes is None:
            blob = b"C" + struct.pack("<3d", self.lat, self.lon, self.radius_m)
            object.__setattr__(self, "_bytes", blob)
        return self._bytes  # type: ignore[return-value]

    def to_json(self) -> dict[str, object]:
        return {"circle": {"center": {"lat": self.lat, "lon": self.lon}, "radius_m": self.radius_m}}


@dataclass(frozen=True, slots=True, eq=False)
class Polygon:
    """A simple polygon whose edges are WGS84 geodesics (stored densified, see MAX_EDGE_M).

    ``vertices`` are the caller's vertices (cleaned of repeats); ``lat``/``lon``/``xyz`` the ring
    actually tested, with the geodesic pieces inserted.
    """

    vertices: tuple[tuple[float, float], ...]
    lat: FloatArray = field(repr=False)
    lon: FloatArray = field(repr=False)
    xyz: FloatArray = field(repr=False)
    center: FloatArray = field(repr=False)
    cap_radius: float = field(repr=False)
    contains_pole: int = field(repr=False)
    """+1 or -1 if the north or south pole is inside or on the ring, else 0."""
    _boxes: list[Box] | None = field(default=None, repr=False)
    _bytes: bytes | None = field(default=None, repr=False)
    _inner: float | None = field(default=None, repr=False)
    _area: float | None = field(default=None, repr=False)

    kind: ClassVar[str] = "polygon"

    @classmethod
    def create(cls, vertices: list[tuple[float, float]] | FloatArray) -> Polygon:
        """Validate ``[(lat, lon), ...]`` and build the polygon, or raise GeometryError.

        A small polygon built lately is handed out again (:data:`_MADE`): a client refused for a
        missing key sends the same volumes again, and validating a hexagon costs ~0.26 ms.
        """
        key = _vertex_key(vertices)
        if key is None:
            return cls._build(vertices)
        return _MADE.get_or_make(key, lambda: cls._build(vertices))

    @classmethod
    def _build(cls, vertices: list[tuple[float, float]] | FloatArray) -> Polygon:
        arr = np.asarray(vertices, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise GeometryError(
                "invalid_polygon", "A polygon is a list of (latitude, longitude) vertices."
            )
        if len(arr) > MAX_VERTICES:
            raise GeometryError(
                "footprint_too_complex", f"A polygon may have at most {MAX_VERTICES:,} vertices."
            )
        lat, lon = arr[:, 0], arr[:, 1]
        _check_latlon(float(np.max(np.abs(lat))), float(np.max(np.abs(lon))))
        xyz = to_unit(lat, lon)
        # Drop repeated consecutive vertices and the closing repeat (2 micrometres apart or less).
        keep = angle(xyz, np.roll(xyz, 1, axis=0)) > 3e-13
        if len(xyz) == 1:
            keep[:] = True
        lat, lon, xyz = lat[keep], lon[keep], xyz[keep]
        if len(np.unique(np.round(xyz, 12), axis=0)) < 3:
            raise GeometryError(
                "degenerate_polygon", "A polygon needs at least three distinct vertices."
            )
        center_sum = xyz.sum(axis=0)
        if np.linalg.norm(center_sum) < 1e-9:
            raise GeometryError("footprint_too_large", "The polygon surrounds half the globe.")
        center = normalize(center_sum)
        if np.degrees(angle(xyz, center[None, :])).max() > MAX_CAP_DEG:
            raise GeometryError(
                "footprint_too_large",
                f"A polygon must fit within {MAX_CAP_DEG:g} degrees of arc (about 4,400 km) "
                "of its centre.",
            )
        # Judge the caller's ring before densifying it: a ring that folds back on itself many
        # times would otherwise become tens of thousands of points for GEOS to untangle.
        _check_ring(shapely.Polygon(gnomonic(xyz, center)))
        ring_lat, ring_lon = _densify(lat, lon)
        ring = to_unit(ring_lat, ring_lon)
        cap = float(angle(ring, center[None, :]).max()) + 1e-9
        plane = shapely.Polygon(gnomonic(ring, center))
        # A ring along one geodesic is a thin curve in the plane, not a straight line: its hull
        # can be thick, but the ring, repaired, still encloses nothing.
        _check_ring(plane)
        pole = _pole_inside(plane, center, cap)
        original = tuple((float(a), float(b)) for a, b in zip(lat, lon, strict=True))
        for array in (ring_lat, ring_lon, ring, center):
            array.flags.writeable = False  # one polygon may serve many requests (_MADE)
        return cls(original, ring_lat, ring_lon, ring, center, cap, pole)

    def inner_radius(self) -> float:
        """Angular radius (radians) of a disc around ``center`` that lies inside the ring (0 when
        the centre is outside it), computed once: the ring's edges are great-circle arcs here,
        so the nearest of them bounds the disc exactly."""
        if self._inner is None:
            seen = ring_seen_from(self.center, self.xyz)
            object.__setattr__(self, "_inner", seen[0] if seen is not None and seen[1] else 0.0)
        return self._inner  # type: ignore[return-value]

    @property
    def area_m2(self) -> float:
        """Geodesic area on WGS84 (computed once)."""
        if self._area is None:
            area, _ = GEOD.polygon_area_perimeter(self.lon, self.lat)
            object.__setattr__(self, "_area", abs(float(area)))
        return self._area  # type: ignore[return-value]

    def boxes(self) -> list[Box]:
        """Index boxes, computed once per footprint (they are on every write's path)."""
        if self._boxes is None:
            object.__setattr__(self, "_boxes", self._compute_boxes())
        return list(self._boxes)  # type: ignore[arg-type]

    def _compute_boxes(self) -> list[Box]:
        lat_lo, lat_hi = _arc_latitude_range(self.xyz)
        if self.contains_pole or np.any(np.abs(self.lat) > 90.0 - 1e-9):
            lat_lo = -90.0 if self.contains_pole < 0 or self.lat.min() < -90 + 1e-9 else lat_lo
            lat_hi = 90.0 if self.contains_pole > 0 or self.lat.max() > 90 - 1e-9 else lat_hi
            return _split_lon(-180.0, 180.0, lat_lo - BOX_MARGIN_DEG, lat_hi + BOX_MARGIN_DEG)
        # Along a great-circle arc that misses the poles, longitude is monotonic and changes by
        # less than 180 degrees: unwrapped along the ring (not around the centre, which a ring
        # curling round a pole defeats), the ring points' longitudes bound the whole ring.
        step = (np.diff(self.lon, append=self.lon[:1]) + 180.0) % 360.0 - 180.0
        if np.abs(step).max() > 170.0:  # an arc grazing a pole: take the whole band
            return _split_lon(-180.0, 180.0, lat_lo - BOX_MARGIN_DEG, lat_hi + BOX_MARGIN_DEG)
        unwrapped = float(self.lon[0]) + np.concatenate([[0.0], np.cumsum(step[:-1])])
        cos_max = math.cos(math.radians(min(max(abs(lat_lo), abs(lat_hi)), 89.9)))
        margin_lon = BOX_MARGIN_DEG / cos_max
        return _split_lon(
            float(unwrapped.min()) - margin_lon,
            float(unwrapped.max()) + margin_lon,
            lat_lo - BOX_MARGIN_DEG,
            lat_hi + BOX_MARGIN_DEG,
        )

    def to_bytes(self) -> bytes:
        """The stored form, made once per footprint (it is on every write's path)."""
        if self._bytes is None:
            head = b"P" + struct.pack(
                _POLYGON_HEAD,
                len(self.lat),
                len(self.vertices),
                self.contains_pole,
                *self.center,
                self.cap_radius,
            )
            original = np.asarray(self.vertices, dtype=np.float64)
            blob = head + self.lat.tobytes() + self.lon.tobytes() + original.tobytes()
            object.__setattr__(self, "_bytes", blob)
        return self._bytes  # type: ignore[return-value]

    def to_json(self) -> dict[str, object]:
        return {"polygon": {"vertices": [{"lat": a, "lon": b} for a, b in self.vertices]}}


Footprint = Circle | Polygon


MEMO_VERTICES: Final = 64
MEMO_RING_POINTS: Final = 512
"""Polygons of at most this many vertices, and points once densified, are remembered when built
(1,024 of them: at most ~20 MiB of rings, under 40 MiB with their stored form and vertices)."""


def _vertex_key(vertices: object) -> bytes | None:
    """The vertices' exact bits (``-0.0`` and ``0.0`` differ), or None where the polygon is not
    to be remembered: too many vertices, or anything but a list of (int or float) pairs, which
    is left to the full validation (it explains what is wrong)."""
    if not isinstance(vertices, list | tuple) or len(vertices) > MEMO_VERTICES:
        return None
    flat: list[float] = []
    for pair in vertices:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            return None
        lat, lon = pair
        if not isinstance(lat, int | float) or not isinstance(lon, int | float):
            return None
        flat += (float(lat), float(lon))
    return struct.pack(f"<{len(flat)}d", *flat)


class _Recent:
    """The polygons built most recently, by their vertices' bits. A polygon is immutable (what
    it computes later, its boxes or bytes, is the same whoever asks first), so one object may
    serve every request that names the same vertices. Failures are not remembered."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._made: OrderedDict[bytes, Polygon] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: bytes, make: Callable[[], Polygon]) -> Polygon:
        with self._lock:
            found = self._made.get(key)
            if found is not None:
                self._made.move_to_end(key)
                return found
        made = make()
        if len(made.lat) <= MEMO_RING_POINTS:
            with self._lock:
                self._made[key] = made
                if len(self._made) > self.capacity:
                    self._made.popitem(last=False)
        return made

    def clear(self) -> None:
        with self._lock:
            self._made.clear()


_MADE = _Recent(1024)

_POLYGON_HEAD: Final = "<IIi4d"


def footprint_from_bytes(blob: bytes) -> Footprint:
    """Inverse of ``to_bytes``: fast, trusts that the footprint was validated when stored.

    Footprints are immutable and their bytes say everything about them, so the footprints read
    most recently are kept (with what they computed once, such as index boxes): in a busy area
    every search reads the same few again.
    """
    blob = bytes(blob)
    return _decode(blob) if len(blob) <= MEMO_BYTES else _decode_anew(blob)


MEMO_BYTES: Final = 8 * 1024
"""Stored footprints up to this size (a polygon of about 500 ring points) are remembered when
read; a larger one is decoded at each read, so that 8,192 huge outlines cannot fill the memory."""


def _decode_anew(blob: bytes) -> Footprint:
    if blob[:1] == b"C":
        lat, lon, radius = struct.unpack_from("<3d", blob, 1)
        cap = radius / MIN_RADIUS_OF_CURVATURE_M * (1 + 1e-9) + 1e-12
        return Circle(lat, lon, radius, unit_vector(lat, lon), cap, _bytes=blob)
    if blob[:1] == b"P":
        n, n_vertices, pole, cx, cy, cz, cap = struct.unpack_from(_POLYGON_HEAD, blob, 1)
        offset = 1 + struct.calcsize(_POLYGON_HEAD)
        coords = np.frombuffer(blob, dtype=np.float64, count=2 * (n + n_vertices), offset=offset)
        lat, lon = coords[:n], coords[n : 2 * n]
        original = tuple((a, b) for a, b in coords[2 * n :].reshape(n_vertices, 2).tolist())
        center, xyz = np.array([cx, cy, cz]), to_unit(lat, lon)
        center.flags.writeable = xyz.flags.writeable = False  # shared, as in Polygon._build
        return Polygon(original, lat, lon, xyz, center, cap, pole, _bytes=blob)
    raise ValueError("not a stored footprint")


_decode = functools.lru_cache(maxsize=8192)(_decode_anew)


def _check_ring(plane: shapely.Polygon) -> None:
    """Refuse a planar ring that encloses nothing or whose edges cross or touch."""
    # A ring along one geodesic is a thin curve in the plane, not a straight line: its hull
    # can be thick, but the ring, repaired, still encloses nothing.
    valid = plane.is_valid
    if _thickness(plane.convex_hull) < MIN_THICKNESS_M or (
        not valid and _thickness(shapely.make_valid(plane)) < MIN_THICKNESS_M
    ):
        raise GeometryError(
            "degenerate_polygon", "The polygon encloses no area (its vertices are collinear)."
        )
    if not valid:
        raise GeometryError(
            "self_intersecting_polygon",
            f"The polygon's edges cross or touch each other: {explain_validity(plane)}.",
        )


def _densify(lat: FloatArray, lon: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Insert points along each geodesic edge so no piece exceeds MAX_EDGE_M."""
    lat2, lon2 = np.roll(lat, -1), np.roll(lon, -1)
    az, _, dist = GEOD.inv(lon, lat, lon2, lat2)
    pieces = np.maximum(1, np.ceil(np.asarray(dist) / MAX_EDGE_M)).astype(np.int64)
    if int(pieces.sum()) > MAX_RING_POINTS:
        raise GeometryError(
            "footprint_too_complex",
            f"The polygon's outline is too long for its area: more than "
            f"{MAX_RING_POINTS * MAX_EDGE_M / 1000:,.0f} km of edges.",
        )
    if pieces.max() == 1:
        return lat.copy(), lon.copy()
    edge = np.repeat(np.arange(len(lat)), pieces)
    step = np.arange(len(edge)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    frac = step / pieces[edge]
    moved = step > 0
    out_lat, out_lon = lat[edge].copy(), lon[edge].copy()
    if moved.any():
        e = edge[moved]
        lon_f, lat_f, _ = GEOD.fwd(
            lon[e], lat[e], np.asarray(az)[e], np.asarray(dist)[e] * frac[moved]
        )
        out_lat[moved], out_lon[moved] = lat_f, lon_f
    return out_lat, out_lon


def _arc_latitude_range(ring: FloatArray) -> tuple[float, float]:
    """Min and max latitude over the closed ring of great-circle arcs (arcs bulge poleward)."""
    a, b = ring, np.roll(ring, -1, axis=0)
    lat_v, _ = to_latlon(ring)
    lo, hi = float(lat_v.min()), float(lat_v.max())
    n = np.cross(a, b)
    n_norm = np.linalg.norm(n, axis=1)
    ok = n_norm > 1e-15
    if ok.any():
        n = n[ok] / n_norm[ok, None]
        aa, bb = a[ok], b[ok]
        for sign in (1.0, -1.0):
            z = np.array([0.0, 0.0, sign])
            top = z[None, :] - n[:, 2:3] * n  # highest (or lowest) point of each great circle
            top_norm = np.linalg.norm(top, axis=1)
            good = top_norm > 1e-15
            top = top / np.where(good, top_norm, 1.0)[:, None]
            within = (
                good
                & (np.sum(np.cross(aa, top) * n, axis=1) > 0)
                & (np.sum(np.cross(top, bb) * n, axis=1) > 0)
            )
            if within.any():
                lat_t, _ = to_latlon(top[within])
                lo, hi = min(lo, float(lat_t.min())), max(hi, float(lat_t.max()))
    return lo, hi


def _thickness(shape: shapely.Geometry) -> float:
    """Mean thickness in metres (2 * area / perimeter) of a planar shape; 0 for a line."""
    return 2.0 * shape.area / shape.length if shape.length > 0.0 else 0.0


def _pole_inside(plane: shapely.Polygon, center: FloatArray, cap: float) -> int:
    for sign in (1, -1):
        pole = np.array([0.0, 0.0, float(sign)])
        if float(angle(pole, center)) <= cap + 1e-9:
            xy = gnomonic(pole[None, :], center)[0]
            if plane.intersects(shapely.Point(xy)):
                return sign
    return 0


def _split_lon(lo: float, hi: float, lat_lo: float, lat_hi: float) -> list[Box]:
    lat_lo, lat_hi = max(lat_lo, -90.0), min(lat_hi, 90.0)
    if hi - lo >= 360.0:
        return [(-180.0, 180.0, lat_lo, lat_hi)]
    width = hi - lo
    lo = (lo + 180.0) % 360.0 - 180.0
    hi = lo + width
    if hi <= 180.0:
        return [(lo, hi, lat_lo, lat_hi)]
    return [(lo, 180.0, lat_lo, lat_hi), (-180.0, hi - 360.0, lat_lo, lat_hi)]
