"""The exact test on a list of aircraft pairs: BlueSky's state-based detector, one pair per element.

``evaluate`` is a line-by-line transcription of ``bluesky.traffic.asas.statebased.StateBased.detect``
(bluesky-simulator 1.1.1) from its ``ntraf x ntraf`` matrices onto 1-D arrays of pairs: the same
operations in the same order, so each element is the same IEEE double BlueSky computes for matrix
element ``[i, j]``. Keeping the arithmetic identical (not merely equivalent) matters at the
thresholds: a pair exactly ``hpz`` apart is, or is not, a conflict in BlueSky because of how its
formulas round, and we want the same answer.

Conventions taken from BlueSky, with the reason each matters:

- Element ``[i, j]`` looks from ``i`` (ownship) at ``j`` (intruder): ``dx, dy`` is the position of
  ``j`` relative to ``i``, ``du, dv, dvs`` the velocity of ``j`` relative to ``i``.
- Positions use ``kwikqdrdist_matrix``: a flat-earth (equirectangular) approximation on a sphere of
  radius 6,371,000 m, longitude difference wrapped to [-180, 180) and scaled by the cosine of the
  pair's mean latitude. Not WGS84: BlueSky's ``StateBased`` does not use ``rwgs84`` here.
- A squared relative speed below 1e-6 m²/s² is replaced by 1e-6, and a vertical relative speed
  below 1e-6 m/s in magnitude by +1e-6 (sign included), to avoid dividing by zero.
- Horizontal: no conflict unless the distance at CPA is strictly below ``rpz``; otherwise the
  interval ``tcpa ± sqrt(rpz² - dcpa²) / vrel``. Vertical: the interval during which the altitude
  difference is inside ``(-hpz, +hpz)``. Conflict iff ``tin <= tout``, ``tout > 0`` and
  ``tin < lookahead`` where ``tin``/``tout`` intersect the two intervals.
- Loss of separation now: ``dist < rpz`` and ``|dalt| < hpz``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Earth radius of BlueSky's flat-earth approximation (``kwikqdrdist_matrix``), metres.
EARTH_RADIUS_M = 6371000.0
#: One nautical mile in metres (``bluesky.tools.aero.nm``); BlueSky converts to NM and back.
NM = 1852.0

FloatArray = NDArray[np.float64]
IndexArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class PairEvaluation:
    """BlueSky's per-element results for the pairs ``(i, j)``, seen from ``i``."""

    conflict: BoolArray
    lost_now: BoolArray
    tcpa: FloatArray
    dcpa: FloatArray
    tin: FloatArray
    tout: FloatArray
    dist: FloatArray


def velocity_components(gs: FloatArray, trk: FloatArray) -> tuple[FloatArray, FloatArray]:
    """East and north speed per aircraft, exactly as BlueSky forms ``ownu``/``ownv`` (m/s)."""
    trkrad = np.radians(trk)
    return gs * np.sin(trkrad), gs * np.cos(trkrad)


def evaluate(
    i: IndexArray,
    j: IndexArray,
    lat: FloatArray,
    lon: FloatArray,
    alt: FloatArray,
    u: FloatArray,
    v: FloatArray,
    vs: FloatArray,
    rpz: float,
    hpz: float,
    lookahead: float,
) -> PairEvaluation:
    """Evaluate BlueSky's matrix element ``[i, j]`` for every pair; ``u, v`` from ``velocity_components``."""
    lat_i, lat_j = lat[i], lat[j]
    lon_i, lon_j = lon[i], lon[j]

    # kwikqdrdist_matrix(lata=lat_i, lona=lon_i, latb=lat_j, lonb=lon_j)
    dlat = np.radians(lat_j - lat_i)
    dlon = np.radians(((lon_j - lon_i) + 180) % 360 - 180)
    cavelat = np.cos(np.radians(lat_j + lat_i) * 0.5)
    dangle = np.sqrt(dlat * dlat + (dlon * dlon) * (cavelat * cavelat))
    dist_nm = EARTH_RADIUS_M * dangle / NM
    qdr = np.degrees(np.arctan2(dlon * cavelat, dlat)) % 360.0

    # Horizontal conflict
    dist = dist_nm * NM
    qdrrad = np.radians(qdr)
    dx = dist * np.sin(qdrrad)
    dy = dist * np.cos(qdrrad)

    du = u[j] - u[i]
    dv = v[j] - v[i]
    dv2 = du * du + dv * dv
    dv2 = np.where(np.abs(dv2) < 1e-6, 1e-6, dv2)
    vrel = np.sqrt(dv2)

    tcpa = -(du * dx + dv * dy) / dv2
    dcpa2 = np.abs(dist * dist - tcpa * tcpa * dv2)

    r2 = rpz * rpz
    swhorconf = dcpa2 < r2
    dxinhor = np.sqrt(np.maximum(0.0, r2 - dcpa2))
    dtinhor = dxinhor / vrel
    tinhor = np.where(swhorconf, tcpa - dtinhor, 1e8)
    touthor = np.where(swhorconf, tcpa + dtinhor, -1e8)

    # Vertical conflict
    dalt = alt[j] - alt[i]
    dvs = vs[j] - vs[i]
    dvs = np.where(np.abs(dvs) < 1e-6, 1e-6, dvs)
    tcrosshi = (dalt + hpz) / -dvs
    tcrosslo = (dalt - hpz) / -dvs
    tinver = np.minimum(tcrosshi, tcrosslo)
    toutver = np.maximum(tcrosshi, tcrosslo)

    # Combined
    tinconf = np.maximum(tinver, tinhor)
    toutconf = np.minimum(toutver, touthor)
    conflict = swhorconf & (tinconf <= toutconf) & (toutconf > 0.0) & (tinconf < lookahead)
    lost_now = (dist < rpz) & (np.abs(dalt) < hpz)
    return PairEvaluation(
        conflict=conflict,
        lost_now=lost_now,
        tcpa=tcpa,
        dcpa=np.sqrt(dcpa2),
        tin=tinconf,
        tout=toutconf,
        dist=dist,
    )
