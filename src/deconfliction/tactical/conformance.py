"""Conformance: is an aircraft inside the volumes of the operation it flies under?

An operation's volumes are a promise to the other parties; an aircraft outside them threatens
airspace nobody was told about. ``check`` tests positions against volumes (footprint, altitude
band, time window, with optional tolerances), ``update`` turns successive observations into the
few changes a party must hear, with a grace period per excursion. Pure: volumes, positions and
time come in as arguments; reading operations from a store is the services layer's job.

Semantics (``docs/tactical.md``):

- *Inside* means inside at least one volume ``v`` of the operation at once in all four
  dimensions: ``v.start <= now < v.end``, ``lower - vertical_tolerance_m <= alt <= upper +
  vertical_tolerance_m`` and the position within ``lateral_tolerance_m`` of the footprint
  (boundary included). Tolerances default to 0: F3548 expects the volumes themselves to hold the
  navigation error; a deployment with noisier surveillance may widen them.
- An operation that is not live (ended, or unknown to the caller) has no volumes to be inside.
- An excursion is raised only once it has lasted *longer* than ``grace_s`` (F3548 allows at most
  10 s outside per excursion before the operation must be declared nonconforming) and ends at
  the first observation back inside, when the aircraft is no longer tracked, or when it flies
  under another operation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from deconfliction.geo import Circle, Volume, footprint_contains
from deconfliction.geo.sphere import GEOD, nearest_on_arcs, slerp, to_latlon, to_unit

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Why an aircraft is not conforming (the first dimension it fails in, in this order).
NOT_LIVE = "operation not live"
OUTSIDE_TIME = "outside the time window"
OUTSIDE_FOOTPRINT = "outside the footprint"
OUTSIDE_ALTITUDE = "outside the altitude band"


@dataclass(frozen=True, slots=True)
class ConformanceSettings:
    """Tolerances (m) added to every volume, and how long (s) an excursion may last unreported."""

    lateral_tolerance_m: float = 0.0
    vertical_tolerance_m: float = 0.0
    grace_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("lateral_tolerance_m", "vertical_tolerance_m", "grace_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check(
    volumes: Sequence[Volume] | None,
    lat: FloatArray,
    lon: FloatArray,
    alt: FloatArray,
    now: float,
    settings: ConformanceSettings = ConformanceSettings(),
) -> list[str | None]:
    """For aircraft flying under one operation: ``None`` where inside, else the reason.

    ``volumes`` is ``None`` when the operation is not live. One numpy pass per volume: the
    footprint test runs on all aircraft at once; only aircraft outside a footprint by less than
    the lateral tolerance take the slower per-point distance test.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    alt = np.asarray(alt, dtype=np.float64)
    n = lat.size
    if volumes is None:
        return [NOT_LIVE] * n
    inside = np.zeros(n, dtype=bool)
    in_time = np.zeros(n, dtype=bool)
    in_footprint = np.zeros(n, dtype=bool)
    tol_v = settings.vertical_tolerance_m
    for v in volumes:
        if not v.start <= now < v.end:
            continue
        in_time[:] = True
        lateral = _within(v, lat, lon, settings.lateral_tolerance_m)
        in_footprint |= lateral
        inside |= (
            lateral & (alt >= v.altitude_lower_m - tol_v) & (alt <= v.altitude_upper_m + tol_v)
        )
    reasons: list[str | None] = []
    for k in range(n):
        if inside[k]:
            reasons.append(None)
        elif not in_time[k]:
            reasons.append(OUTSIDE_TIME)
        elif not in_footprint[k]:
            reasons.append(OUTSIDE_FOOTPRINT)
        else:
            reasons.append(OUTSIDE_ALTITUDE)
    return reasons


def _within(v: Volume, lat: FloatArray, lon: FloatArray, tolerance_m: float) -> BoolArray:
    """Inside the footprint, or within ``tolerance_m`` of it."""
    fp = v.footprint
    if isinstance(fp, Circle):
        if tolerance_m > 0:
            fp = Circle.create(fp.lat, fp.lon, fp.radius_m + tolerance_m)
        return np.asarray(footprint_contains(fp, lat, lon), dtype=bool)
    out = np.asarray(footprint_contains(fp, lat, lon), dtype=bool)
    if tolerance_m > 0:
        for k in np.flatnonzero(~out).tolist():
            out[k] = _distance_to_ring_m(fp.xyz, float(lat[k]), float(lon[k])) <= tolerance_m
    return out


def _distance_to_ring_m(ring: FloatArray, lat: float, lon: float) -> float:
    """Ellipsoidal distance from a point to the nearest point of a polygon's (densified) ring.

    The nearest point is found on the sphere model whose great circles are the ring's pieces
    (``geo.sphere``), then measured on WGS84: exact to well under a metre at tolerance scales.
    """
    p = to_unit(lat, lon)
    a = ring
    b = np.roll(ring, -1, axis=0)
    t = nearest_on_arcs(p, a, b)
    points = slerp(a, b, t[:, None])[:, 0, :]
    plat, plon = to_latlon(points)
    _, _, dist = GEOD.inv(np.full(plat.shape, lon), np.full(plat.shape, lat), plon, plat)
    return float(np.min(dist))


@dataclass(frozen=True, slots=True)
class Excursion:
    """An aircraft outside its operation's volumes: since when, and whether it was raised."""

    aircraft: str
    operation_id: str
    since: float
    reason: str
    raised: bool = False


@dataclass(frozen=True, slots=True)
class ExcursionChange:
    """``new``: the excursion outlasted the grace period; ``ended``: it is over."""

    kind: Literal["new", "ended"]
    excursion: Excursion
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Observation:
    """One aircraft in one cycle: the operation it flies under and why it is outside (or None)."""

    operation_id: str
    outside: str | None


def update(
    book: Mapping[str, Excursion],
    observed: Mapping[str, Observation],
    now: float,
    grace_s: float,
) -> tuple[dict[str, Excursion], list[ExcursionChange]]:
    """The new book of excursions and the changes to announce (``ended`` first, then ``new``).

    ``observed`` holds every tracked aircraft that flies under an operation; an excursion whose
    aircraft is missing from it ends ("no longer tracked or no longer under an operation").
    """
    new_book: dict[str, Excursion] = {}
    ended: list[ExcursionChange] = []
    raised: list[ExcursionChange] = []
    for aircraft in sorted(book.keys() - observed.keys()):
        excursion = book[aircraft]
        if excursion.raised:
            ended.append(ExcursionChange("ended", excursion, now, "no longer tracked"))
    for aircraft in sorted(observed):
        seen = observed[aircraft]
        previous = book.get(aircraft)
        if previous is not None and previous.operation_id != seen.operation_id:
            if previous.raised:
                ended.append(
                    ExcursionChange("ended", previous, now, "flying under another operation")
                )
            previous = None
        if seen.outside is None:
            if previous is not None and previous.raised:
                ended.append(ExcursionChange("ended", previous, now, "back inside"))
            continue
        excursion = previous or Excursion(aircraft, seen.operation_id, now, seen.outside)
        excursion = replace(excursion, reason=seen.outside)
        if not excursion.raised and now - excursion.since > grace_s:
            excursion = replace(excursion, raised=True)
            raised.append(
                ExcursionChange(
                    "new", excursion, now, f"{seen.outside} for {now - excursion.since:.0f} s"
                )
            )
        new_book[aircraft] = excursion
    return new_book, ended + raised
