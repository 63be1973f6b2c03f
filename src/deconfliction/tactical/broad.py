"""Broad phase: the few aircraft pairs that could possibly be in conflict, in near-linear time.

The exact test (``narrow.evaluate``) is cheap per pair, but there are N²/2 pairs. This module cuts
them down to the pairs whose *swept boxes* overlap, without a Python loop over aircraft or pairs.

**Swept boxes.** Over the look-ahead ``[0, T]`` an aircraft moves along a straight segment in
BlueSky's flat-earth frame. A pair can only be in conflict if, at some common time in ``[0, T]``,
both the horizontal offsets (north and east) are within ``rpz`` and the altitude difference is
within ``hpz``; so the boxes swept by each aircraft, grown by half a separation on each side, must
overlap on every axis. Three axes:

- *north* ``y = R·lat`` (metres): BlueSky's ``dy`` is exactly ``R·Δlat``, the same for every pair,
  so this axis is global and exact;
- *east*, as a longitude arc: BlueSky's ``dx`` is ``R·Δlon·cos(mean latitude of the pair)``, which
  depends on the partner. We bound that cosine from below over every partner the north axis still
  allows, and widen the arc by ``1/cos`` accordingly: the arc can only grow, so the test stays
  necessary. Longitudes are arcs on a circle (BlueSky wraps ``Δlon`` into [-180, 180)), so the
  antimeridian needs no special case; near a pole the bound reaches zero and the arc becomes the
  whole circle, which is also what BlueSky's metric does there (every longitude is close);
- *altitude*, the segment ``alt + vs·t`` (metres).

Margins absorb rounding and BlueSky's clamping of near-zero relative speeds (it divides by at
least 1e-3 m/s horizontally and 1e-6 m/s vertically, which shifts its intervals by at most
``2e-3·T`` metres and ``2e-6·T`` metres): a box is always a little larger than needed, never smaller.

**Finding overlapping boxes.** Latitude is cut into bands of ``cell`` metres; each band into
longitude cells about ``cell`` metres wide at its poleward edge (fewer cells near the poles, one
cell for a band that reaches a pole). Each box is entered in every cell it covers; if that would
take more than ``_ENTRIES_PER_AIRCRAFT`` entries per aircraft (absurd speeds or look-aheads), the
cells are doubled until it fits. Entries are sorted by one exact int64 key (cell, floor of the
lowest altitude) and, inside a cell, each entry is paired with the following entries whose
lowest altitude is not above its highest (a sweep along altitude with ``np.searchsorted``).

**Once per pair.** A pair sharing several cells is kept only in its canonical cell: the later
of the two first bands (so one of the two aircraft is in its first band there) and, in that
band, the cell where one of the two arcs starts (if each arc starts inside the other, the lower
aircraft index decides). Two flag bits per entry make this a few integer operations per pair,
with no global de-duplication. Pairs are produced in chunks of at most ``chunk`` candidates, so
working memory stays small whatever the traffic.

**Mid phase.** Each canonical pair then gets BlueSky's own test with the grown separations and
without its arctan/sin/cos round trip (closed-form entry and exit times), which removes most
pairs that are not conflicts before the exact test (``narrow``) runs on the survivors.

Cost at constant density: O(N) entries, one sort of them, and O(N) candidate pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from deconfliction.tactical.narrow import EARTH_RADIUS_M

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

_TWO_PI_R = 2.0 * np.pi * EARTH_RADIUS_M
_HALF_PI = 0.5 * np.pi
_M_PER_DEG = EARTH_RADIUS_M * np.pi / 180.0
#: Candidate pairs handled at once: small enough for the temporaries to stay in cache.
DEFAULT_CHUNK = 1 << 15
#: Most latitude bands we will create: bounds the band table when boxes are absurdly large.
_MAX_BANDS = 1 << 15
#: Grid entries allowed per aircraft (plus a constant) before the cells are made coarser.
_ENTRIES_PER_AIRCRAFT = 64
_ENTRIES_BASE = 1 << 16


def _margins(rpz: float, hpz: float, lookahead: float) -> tuple[float, float, float]:
    """Look-ahead, horizontal and vertical separations grown so the boxes are conservative."""
    t = max(lookahead, 0.0) * (1.0 + 1e-9) + 1e-9
    rh = rpz * (1.0 + 1e-9) + 1.0 + 4e-3 * t
    hz = hpz * (1.0 + 1e-9) + 1e-3 + 4e-6 * t
    return t, rh, hz


def _ranges(counts: IntArray) -> tuple[IntArray, IntArray]:
    """For ``counts[k]`` items per owner ``k``: each item's owner and its rank within the owner."""
    owner = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    rank = np.arange(owner.size, dtype=np.int64) - starts[owner]
    return owner, rank


def candidate_pairs(
    lat: FloatArray,
    lon: FloatArray,
    alt: FloatArray,
    u: FloatArray,
    v: FloatArray,
    vs: FloatArray,
    party: IntArray,
    rpz: float,
    hpz: float,
    lookahead: float,
    same_party: bool,
    cell: float | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> Iterator[tuple[IntArray, IntArray]]:
    """Yield chunks of pairs ``(i, j)``, ``i < j``, a superset of BlueSky's conflicts, each pair once.

    ``u, v`` are east/north speeds (m/s) as BlueSky forms them. ``cell`` overrides the grid size
    in metres (tests use it to force many shared cells); by default it follows the box sizes.
    """
    n = lat.size
    if n < 2:
        return
    t, rh, hz = _margins(rpz, hpz, lookahead)

    # Swept boxes ------------------------------------------------------------------------------
    y = EARTH_RADIUS_M * np.radians(lat)
    vt = v * t
    ylo = y + np.minimum(vt, 0.0) - 0.5 * rh
    yhi = y + np.maximum(vt, 0.0) + 0.5 * rh
    ut = u * t
    xlo = np.minimum(ut, 0.0) - 0.5 * rh  # metres east of the aircraft
    xhi = np.maximum(ut, 0.0) + 0.5 * rh
    wt = vs * t
    zlo = alt + np.minimum(wt, 0.0) - 0.5 * hz
    zhi = alt + np.maximum(wt, 0.0) + 0.5 * hz

    arc_lo, arc_hi, full = _longitude_arcs(lat, lon, y, ylo, yhi, xlo, xhi)

    # Grid: grow the cells until the entries fit the budget (only absurd inputs need to). ------
    if cell is None:
        cell = max(0.75 * float(np.mean(yhi - ylo)), rh)
    cell = max(cell, float(yhi.max() - ylo.min()) / _MAX_BANDS, 1.0)
    budget = _ENTRIES_PER_AIRCRAFT * n + _ENTRIES_BASE
    grid = _enter(cell, ylo, yhi, arc_lo, arc_hi, full, budget)
    while grid is None:
        cell *= 2.0
        grid = _enter(cell, ylo, yhi, arc_lo, arc_hi, full, budget)
    ent_ac, ent_cell, ent_flags, ent_row, rows = grid

    # Altitude quantised to integers so that (cell, altitude) sorts as one exact int64 key.
    z0 = float(zlo.min())
    n_cells_total = rows.n_cells
    zq = max(1.0, float(zhi.max() - z0) * n_cells_total / float(1 << 61))
    qlo = np.floor((zlo - z0) / zq).astype(np.int64)
    qhi = np.ceil((zhi - z0) / zq).astype(np.int64)
    stride = int(qhi.max()) + 1
    key = ent_cell * stride + qlo[ent_ac]
    order = np.argsort(key)
    key = key[order]
    ent_ac = ent_ac[order]
    ent_row = ent_row[order]
    ent_flags = ent_flags[order]
    ends = np.searchsorted(key, key - qlo[ent_ac] + qhi[ent_ac], side="right")
    following = ends - np.arange(ends.size, dtype=np.int64) - 1
    ent_party = None if same_party else party[ent_ac]

    # Candidate pairs, chunk by chunk -----------------------------------------------------------
    total = np.cumsum(following)
    start = 0
    while start < following.size:
        base = int(total[start - 1]) if start else 0
        stop = int(np.searchsorted(total, base + chunk, side="right"))
        stop = max(stop, start + 1)
        counts = following[start:stop]
        p = np.repeat(np.arange(start, stop, dtype=np.int64), counts)
        q = np.arange(p.size, dtype=np.int64) + np.repeat(
            np.arange(start + 1, stop + 1, dtype=np.int64) - (np.cumsum(counts) - counts), counts
        )
        start = stop
        if p.size == 0:
            continue
        # Keep a pair only in its canonical cell: the later of the two first bands (one of the
        # two is in its first band there), and in it the cell where one of the arcs starts.
        keep = (ent_flags[p] | ent_flags[q]) == 3
        if ent_party is not None:
            keep &= ent_party[p] != ent_party[q]
        sel = np.flatnonzero(keep)
        p, q = p[sel], q[sel]
        a, b = ent_ac[p], ent_ac[q]
        a_starts = (ent_flags[p] & 2).astype(bool)
        b_starts = (ent_flags[q] & 2).astype(bool)
        one = np.flatnonzero(a_starts != b_starts)
        if one.size:
            # Exactly one arc starts here: this is canonical unless the other arc also starts
            # inside the first one and breaks the tie (the lower aircraft index wins).
            rp, rq = ent_row[p[one]], ent_row[q[one]]
            ncell = rows.ncell[rp]
            sa, sb = rows.k0[rp], rows.k0[rq]
            a1, b1 = a[one], b[one]
            a_first = a_starts[one]
            b_in_a = (sb - sa) % ncell < rows.count[rp]
            a_in_b = (sa - sb) % ncell < rows.count[rq]
            other_in = np.where(a_first, b_in_a, a_in_b)
            other_wins = np.where(a_first, b1 < a1, a1 < b1)
            drop = one[other_in & other_wins]
            if drop.size:
                mask = np.ones(a.size, dtype=bool)
                mask[drop] = False
                a, b = a[mask], b[mask]

        keep = _mid_phase(a, b, y, lon, alt, u, v, vs, t, rh, hz)
        a, b = a[keep], b[keep]
        yield np.minimum(a, b), np.maximum(a, b)


def _longitude_arcs(
    lat: FloatArray,
    lon: FloatArray,
    y: FloatArray,
    ylo: FloatArray,
    yhi: FloatArray,
    xlo: FloatArray,
    xhi: FloatArray,
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Each box's east extent as a longitude arc ``[lo, hi]`` (degrees, may pass ±180), or full.

    BlueSky scales a longitude difference by the cosine of the pair's mean latitude. A partner
    can only be as far north or south as the two north extents reach, so the mean latitude is
    at most ``|lat| + (reach + largest reach) / 2R`` from the equator; dividing by the cosine of
    that can only widen the arc. Where the bound reaches a pole, the arc is the whole circle.
    """
    reach = np.maximum(yhi - y, y - ylo)
    phi = np.abs(np.radians(lat)) + (reach + reach.max()) / (2.0 * EARTH_RADIUS_M)
    cos_lo = np.where(phi < _HALF_PI, np.cos(np.minimum(phi, _HALF_PI)), 0.0) * (1.0 - 1e-9) - 1e-15
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scale = np.degrees(1.0 / (EARTH_RADIUS_M * cos_lo))
        arc_lo = lon + xlo * scale - 1e-9
        arc_hi = lon + xhi * scale + 1e-9
        full = ~((cos_lo > 0.0) & (arc_hi - arc_lo < 360.0))
    return np.where(full, -180.0, arc_lo), np.where(full, 180.0, arc_hi), full


@dataclass(frozen=True, slots=True)
class _Rows:
    """One row per (aircraft, latitude band): the band's cell count and the arc's cells in it."""

    ncell: IntArray  # longitude cells in the row's band
    k0: IntArray  # first longitude cell the arc covers (0 <= k0 < ncell)
    count: IntArray  # how many cells it covers, wrapping past the antimeridian
    n_cells: int  # cells in the whole grid (bands x the widest band)


def _enter(
    cell: float,
    ylo: FloatArray,
    yhi: FloatArray,
    arc_lo: FloatArray,
    arc_hi: FloatArray,
    full: BoolArray,
    budget: int,
) -> tuple[IntArray, IntArray, NDArray[np.uint8], IntArray, _Rows] | None:
    """Enter every box in the cells it covers; ``None`` if that takes more than ``budget`` entries.

    Returns per entry: aircraft, cell id, de-duplication flags (1: the aircraft's first band;
    2: the first cell of its arc in that band) and row, plus the rows.
    """
    band_lo = np.floor(ylo / cell).astype(np.int64)
    band_hi = np.floor(yhi / cell).astype(np.int64)
    n_rows = band_hi - band_lo + 1
    if int(n_rows.sum()) > budget:
        return None
    band_min = int(band_lo.min())
    bands = np.arange(band_min, int(band_hi.max()) + 1, dtype=np.float64)
    edge = np.minimum(
        np.maximum(np.abs(bands), np.abs(bands + 1.0)) * cell / EARTH_RADIUS_M, _HALF_PI
    )
    band_cells = np.maximum(np.floor(_TWO_PI_R * np.cos(edge) / cell), 1.0).astype(np.int64)
    max_cells = int(band_cells.max())

    row_ac, row_rank = _ranges(n_rows)
    row_band = band_lo[row_ac] + row_rank
    ncell = band_cells[row_band - band_min]
    width = 360.0 / ncell
    k0 = np.floor((arc_lo[row_ac] + 180.0) / width).astype(np.int64)
    k1 = np.floor((arc_hi[row_ac] + 180.0) / width).astype(np.int64)
    row_full = full[row_ac]
    count = np.where(row_full, ncell, np.minimum(k1 - k0 + 1, ncell))
    if int(count.sum()) > budget:
        return None
    k0 = np.where(row_full, 0, k0 % ncell)

    ent_row, ent_rank = _ranges(count)
    ent_ac = row_ac[ent_row]
    ent_x = (k0[ent_row] + ent_rank) % ncell[ent_row]
    ent_cell = (row_band[ent_row] - band_min) * max_cells + ent_x
    ent_flags = (row_rank[ent_row] == 0).astype(np.uint8) | ((ent_rank == 0).astype(np.uint8) << 1)
    rows = _Rows(ncell=ncell, k0=k0, count=count, n_cells=bands.size * max_cells)
    return ent_ac, ent_cell, ent_flags, ent_row, rows


def _mid_phase(
    a: IntArray,
    b: IntArray,
    y: FloatArray,
    lon: FloatArray,
    alt: FloatArray,
    u: FloatArray,
    v: FloatArray,
    vs: FloatArray,
    t: float,
    rh: float,
    hz: float,
) -> BoolArray:
    """Keep pairs whose grown horizontal and vertical loss intervals meet inside ``[0, t]``.

    BlueSky's geometry (flat earth, the pair's mean-latitude cosine, wrapped longitude, the same
    clamping of near-zero relative speeds) without its arctan/sin/cos round trip, with the grown
    separations ``rh``/``hz``: a superset of BlueSky's conflicts, at a fraction of the cost.
    """
    ya, yb = y[a], y[b]
    cavelat = np.cos((ya + yb) * (0.5 / EARTH_RADIUS_M))
    dlon = lon[b] - lon[a]
    dlon -= 360.0 * np.round(dlon * (1.0 / 360.0))
    dx = dlon * cavelat * _M_PER_DEG
    dy = yb - ya
    du = u[b] - u[a]
    dv = v[b] - v[a]
    a2 = np.maximum(du * du + dv * dv, 1e-6)
    b1 = du * dx + dv * dy
    disc = b1 * b1 - a2 * (dx * dx + dy * dy - rh * rh)
    root = np.sqrt(np.maximum(disc, 0.0))
    h_in = (-b1 - root) / a2
    h_out = (-b1 + root) / a2

    dz = alt[b] - alt[a]
    dw = vs[b] - vs[a]
    dw = np.where(np.abs(dw) < 1e-6, 1e-6, dw)
    z1 = (hz - dz) / dw
    z2 = (-hz - dz) / dw
    start = np.maximum(np.maximum(h_in, np.minimum(z1, z2)), 0.0)
    stop = np.minimum(np.minimum(h_out, np.maximum(z1, z2)), t)
    return (disc >= 0.0) & (start <= stop)
