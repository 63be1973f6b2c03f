"""Hypothesis strategies for random skies that poke at the places a broad phase gets wrong.

A sky is one or more clusters of aircraft; a cluster sits somewhere ordinary, on a pole, or
across the antimeridian, and some of its aircraft are built as awkward encounters: head-on,
vertical-only (same position, different levels), zero relative speed, exactly ``hpz`` apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from deconfliction.tactical.detector import DEFAULT_HPZ_M, DEFAULT_RPZ_M

R = 6371000.0


@dataclass(frozen=True)
class Sky:
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    gs: np.ndarray
    trk: np.ndarray
    vs: np.ndarray
    party: np.ndarray

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.lat, self.lon, self.alt, self.gs, self.trk, self.vs, self.party)

    def __len__(self) -> int:
        return int(self.lat.size)


def _wrap_lon(lon: np.ndarray) -> np.ndarray:
    return (lon + 180.0) % 360.0 - 180.0


@st.composite
def cluster(draw: st.DrawFn, hpz: float = DEFAULT_HPZ_M) -> Sky:
    """A handful of aircraft within ~100 km of a centre chosen to be ordinary or awkward."""
    where = draw(
        st.sampled_from(["anywhere", "north_pole", "south_pole", "antimeridian", "equator"])
    )
    n = draw(st.integers(1, 14))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    spread_m = draw(st.sampled_from([2_000.0, 20_000.0, 100_000.0]))

    if where == "anywhere":
        lat0, lon0 = draw(st.floats(-80, 80)), draw(st.floats(-180, 180))
    elif where == "north_pole":
        lat0, lon0 = draw(st.floats(88.5, 90.0)), draw(st.floats(-180, 180))
    elif where == "south_pole":
        lat0, lon0 = draw(st.floats(-90.0, -88.5)), draw(st.floats(-180, 180))
    elif where == "antimeridian":
        lat0, lon0 = (
            draw(st.floats(-70, 70)),
            draw(st.sampled_from([180.0, -180.0, 179.95, -179.95])),
        )
    else:
        lat0, lon0 = 0.0, draw(st.floats(-180, 180))

    dy = rng.uniform(-spread_m, spread_m, n)
    dx = rng.uniform(-spread_m, spread_m, n)
    lat = np.clip(lat0 + np.degrees(dy / R), -90.0, 90.0)
    coslat = max(np.cos(np.radians(lat0)), 1e-3)
    lon = _wrap_lon(lon0 + np.degrees(dx / (R * coslat)))
    if where == "antimeridian":
        # Keep some values exactly on +/-180: both spellings of the same meridian.
        edge = rng.random(n) < 0.2
        lon[edge] = rng.choice([-180.0, 180.0], int(edge.sum()))

    base = draw(st.floats(0.0, 12000.0))
    levels = rng.integers(-3, 4, n) * hpz  # whole multiples of hpz: exact threshold cases
    jitter = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(-400.0, 400.0, n))
    alt = base + levels + jitter
    gs = np.where(rng.random(n) < 0.15, 0.0, rng.uniform(0.0, 300.0, n))
    trk = np.where(
        rng.random(n) < 0.2, rng.choice([0.0, 90.0, 180.0, 270.0, 360.0], n), rng.uniform(0, 360, n)
    )
    vs = np.where(rng.random(n) < 0.7, 0.0, rng.uniform(-20.0, 20.0, n))

    kind = draw(st.sampled_from(["plain", "head_on", "vertical_only", "same_velocity", "stacked"]))
    if n >= 2 and kind == "head_on":
        # Aircraft 1 flies straight at aircraft 0, co-altitude.
        d = draw(st.sampled_from([DEFAULT_RPZ_M, 30_000.0, 80_000.0]))
        lat[1] = np.clip(lat[0] + np.degrees(d / R), -90.0, 90.0)
        lon[1] = lon[0]
        alt[1] = alt[0]
        trk[0], trk[1] = 0.0, 180.0
        gs[0] = gs[1] = 200.0
        vs[0] = vs[1] = 0.0
    elif n >= 2 and kind == "vertical_only":
        # Same position and track, converging only vertically.
        lat[1], lon[1], gs[1], trk[1] = lat[0], lon[0], gs[0], trk[0]
        alt[1] = alt[0] + draw(st.sampled_from([hpz, 2 * hpz, 1500.0]))
        vs[0], vs[1] = 0.0, -draw(st.sampled_from([0.0, 1e-7, 2.0, 10.0]))
    elif n >= 2 and kind == "same_velocity":
        gs[:] = gs[0]
        trk[:] = trk[0]
    elif n >= 2 and kind == "stacked":
        # Same position, levels exactly hpz apart, no vertical speed: BlueSky's threshold case.
        lat[:], lon[:] = lat[0], lon[0]
        alt[:] = alt[0] + hpz * np.arange(n)
        vs[:] = 0.0

    party = rng.integers(0, 3, n)
    return Sky(lat, lon, alt, gs, trk, vs, party)


@st.composite
def grazing_pair(draw: st.DrawFn, rpz: float = DEFAULT_RPZ_M, lookahead: float = 300.0) -> Sky:
    """Two aircraft whose predicted miss is a hair inside (or outside) ``rpz`` at a chosen time.

    Built backwards in BlueSky's flat-earth frame: pick the relative position at a time ``t*`` in
    the look-ahead (distance ``rpz·(1 + eps)``), subtract the relative motion to get it now, and
    turn that into a latitude/longitude offset with the pair's own mean-latitude cosine. These
    are the pairs a broad phase with too tight a bound would drop: far apart now, barely in
    conflict at the very end of the look-ahead, at any latitude and across the antimeridian.
    """
    lat0 = draw(st.floats(-89.9, 89.9))
    lon0 = draw(st.floats(-180.0, 180.0))
    gs = np.array([draw(st.floats(0.0, 400.0)), draw(st.floats(0.0, 400.0))])
    trk = np.array([draw(st.floats(0.0, 360.0)), draw(st.floats(0.0, 360.0))])
    vs = np.array([0.0, draw(st.sampled_from([0.0, -5.0, 5.0]))])
    t_star = draw(st.sampled_from([lookahead, lookahead * (1 - 1e-9), lookahead / 2, 0.0]))
    eps = draw(st.sampled_from([-1e-3, -1e-9, 0.0, 1e-9, 1e-3]))
    bearing = np.radians(draw(st.floats(0.0, 360.0)))
    u = gs * np.sin(np.radians(trk))
    v = gs * np.cos(np.radians(trk))
    rel = rpz * (1.0 + eps) * np.array([np.sin(bearing), np.cos(bearing)])
    dx, dy = rel - np.array([u[1] - u[0], v[1] - v[0]]) * t_star
    lat1 = lat0 + np.degrees(dy / R)
    if abs(lat1) > 90.0:
        lat1 = float(np.clip(lat1, -90.0, 90.0))
    cavelat = np.cos(np.radians(lat0 + lat1) * 0.5)
    lon1 = lon0 + np.degrees(dx / (R * max(cavelat, 1e-6)))
    alt0 = draw(st.floats(0.0, 12000.0))
    alt1 = alt0 - vs[1] * t_star + draw(st.sampled_from([0.0, 100.0, -DEFAULT_HPZ_M]))
    return Sky(
        lat=np.array([lat0, lat1]),
        lon=_wrap_lon(np.array([lon0, lon1])),
        alt=np.array([alt0, alt1]),
        gs=gs,
        trk=trk,
        vs=vs,
        party=np.array([0, 1]),
    )


@st.composite
def skies(draw: st.DrawFn, max_clusters: int = 4) -> Sky:
    """One to ``max_clusters`` clusters (some of them grazing pairs) joined into one sky."""
    parts = draw(st.lists(st.one_of(cluster(), grazing_pair()), min_size=1, max_size=max_clusters))
    fields = [np.concatenate([getattr(p, f) for p in parts]) for f in Sky.__dataclass_fields__]
    return Sky(*fields)
