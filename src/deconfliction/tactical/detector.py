"""Tactical conflict detection: which aircraft pairs will lose separation within the look-ahead.

Array in, array out, no I/O and no clock: the tactical cycle hands in the current states of N
aircraft and gets back the conflicting pairs. The semantics are BlueSky's state-based detector
(``bluesky.traffic.asas.statebased.StateBased.detect``, bluesky-simulator 1.1.1), applied to
every unordered pair; see ``narrow`` for the transcription and ``broad`` for how we avoid looking
at N²/2 pairs. ``detect_all_pairs`` is the slow, obviously complete reference the tests compare
``detect`` with.

Deliberate differences from BlueSky, all in the *shape* of the answer, none in which pairs are in
conflict or the numbers reported for them:

- Pairs only, each once as ``i < j``. BlueSky fills an ``N x N`` matrix and lists both ``(i, j)``
  and ``(j, i)``; its ``ConflictDetection.update`` then keeps the unordered set
  (``confpairs_unique``). We return that set: a pair is reported if BlueSky flags ``[i, j]`` *or*
  ``[j, i]`` (they differ only through rounding at exact thresholds) and the numbers are those of
  ``[i, j]`` unless only ``[j, i]`` is flagged.
- A pair in loss of separation now (BlueSky's ``lospairs``) is always reported, with
  ``lost_now=True``. With a positive look-ahead BlueSky's conflicts already include every such
  pair; with a zero look-ahead they would not, and a loss of separation must never go unreported.
- One protected zone (``rpz``, ``hpz``) and one look-ahead for everybody; BlueSky allows one per
  aircraft and takes the larger of the two.
- Party filter: by default only pairs of different parties are examined, because a party
  separates its own aircraft itself; ``same_party=True`` examines every pair as BlueSky does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from deconfliction.tactical import broad, narrow
from deconfliction.tactical.errors import TacticalError

#: Default horizontal protected radius: 5 NM, in metres.
DEFAULT_RPZ_M = 5.0 * narrow.NM
#: Default half vertical separation: 1,000 ft, in metres.
DEFAULT_HPZ_M = 1000.0 * 0.3048
#: Default look-ahead, seconds.
DEFAULT_LOOKAHEAD_S = 300.0

FloatArray = NDArray[np.float64]
IndexArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Conflicts:
    """Conflicting pairs ``(i[k], j[k])`` with ``i < j``, sorted by ``(i, j)``; SI units.

    - ``tcpa``: time to closest point of approach (s; negative when diverging);
    - ``dcpa``: horizontal distance at the closest point of approach (m);
    - ``tin``/``tout``: when the loss of separation starts and ends (s from now; ``tin`` is
      negative when it has already started);
    - ``dist``: horizontal distance now (m);
    - ``lost_now``: separation is already lost (``dist < rpz`` and ``|Δalt| < hpz``).
    """

    i: IndexArray
    j: IndexArray
    tcpa: FloatArray
    dcpa: FloatArray
    tin: FloatArray
    tout: FloatArray
    dist: FloatArray
    lost_now: BoolArray

    def __len__(self) -> int:
        return int(self.i.size)

    def pairs(self) -> set[tuple[int, int]]:
        """The pairs as a set of ``(i, j)`` tuples (for tests and small outputs)."""
        return set(self.pairs_list())

    def pairs_list(self) -> list[tuple[int, int]]:
        """The pairs as ``(i, j)`` tuples, in the arrays' order."""
        return list(zip(self.i.tolist(), self.j.tolist(), strict=True))


@dataclass(frozen=True, slots=True)
class _States:
    lat: FloatArray
    lon: FloatArray
    alt: FloatArray
    u: FloatArray
    v: FloatArray
    vs: FloatArray
    party: NDArray[np.int64]


def detect(
    lat: ArrayLike,
    lon: ArrayLike,
    alt: ArrayLike,
    gs: ArrayLike,
    trk: ArrayLike,
    vs: ArrayLike,
    party: ArrayLike,
    *,
    rpz: float = DEFAULT_RPZ_M,
    hpz: float = DEFAULT_HPZ_M,
    lookahead: float = DEFAULT_LOOKAHEAD_S,
    same_party: bool = False,
    cell: float | None = None,
) -> Conflicts:
    """Conflicts among N aircraft: lat, lon (deg), alt (m), gs (m/s), trk (deg true), vs (m/s).

    ``party`` is one integer per aircraft. Cost is near-linear in N at constant traffic density
    (see ``broad``); the answer is exactly ``detect_all_pairs``'s. ``cell`` overrides the broad
    phase's grid size in metres, for tests; leave it alone otherwise.
    """
    states = _validate(lat, lon, alt, gs, trk, vs, party, rpz, hpz, lookahead)
    chunks = [
        _finish(i, j, states, rpz, hpz, lookahead)
        for i, j in broad.candidate_pairs(
            states.lat,
            states.lon,
            states.alt,
            states.u,
            states.v,
            states.vs,
            states.party,
            rpz,
            hpz,
            lookahead,
            same_party,
            cell=cell,
        )
    ]
    return _concat(chunks)


def detect_all_pairs(
    lat: ArrayLike,
    lon: ArrayLike,
    alt: ArrayLike,
    gs: ArrayLike,
    trk: ArrayLike,
    vs: ArrayLike,
    party: ArrayLike,
    *,
    rpz: float = DEFAULT_RPZ_M,
    hpz: float = DEFAULT_HPZ_M,
    lookahead: float = DEFAULT_LOOKAHEAD_S,
    same_party: bool = False,
) -> Conflicts:
    """Reference: BlueSky's test on every pair ``i < j``, no broad phase. O(N²); for tests only."""
    states = _validate(lat, lon, alt, gs, trk, vs, party, rpz, hpz, lookahead)
    i, j = np.triu_indices(states.lat.size, 1)
    if not same_party:
        different = states.party[i] != states.party[j]
        i, j = i[different], j[different]
    return _concat([_finish(i, j, states, rpz, hpz, lookahead)])


def _finish(
    i_any: NDArray[np.integer],
    j_any: NDArray[np.integer],
    s: _States,
    rpz: float,
    hpz: float,
    lookahead: float,
) -> Conflicts:
    """Run the exact test both ways round on candidate pairs and keep BlueSky's unordered answer."""
    i: IndexArray = i_any.astype(np.intp, copy=False)
    j: IndexArray = j_any.astype(np.intp, copy=False)
    fwd = narrow.evaluate(i, j, s.lat, s.lon, s.alt, s.u, s.v, s.vs, rpz, hpz, lookahead)
    rev = narrow.evaluate(j, i, s.lat, s.lon, s.alt, s.u, s.v, s.vs, rpz, hpz, lookahead)
    use_fwd = fwd.conflict | fwd.lost_now
    keep = np.flatnonzero(use_fwd | rev.conflict | rev.lost_now)
    f = use_fwd[keep]

    def pick(a: FloatArray, b: FloatArray) -> FloatArray:
        return np.where(f, a[keep], b[keep])

    return Conflicts(
        i=i[keep],
        j=j[keep],
        tcpa=pick(fwd.tcpa, rev.tcpa),
        dcpa=pick(fwd.dcpa, rev.dcpa),
        tin=pick(fwd.tin, rev.tin),
        tout=pick(fwd.tout, rev.tout),
        dist=pick(fwd.dist, rev.dist),
        lost_now=fwd.lost_now[keep] | rev.lost_now[keep],
    )


def _concat(parts: list[Conflicts]) -> Conflicts:
    if not parts:
        empty_f = np.empty(0, dtype=np.float64)
        empty_i = np.empty(0, dtype=np.intp)
        return Conflicts(
            empty_i, empty_i, empty_f, empty_f, empty_f, empty_f, empty_f, np.empty(0, dtype=bool)
        )
    i = np.concatenate([c.i for c in parts])
    j = np.concatenate([c.j for c in parts])
    order = np.lexsort((j, i))
    return Conflicts(
        i=i[order],
        j=j[order],
        tcpa=np.concatenate([c.tcpa for c in parts])[order],
        dcpa=np.concatenate([c.dcpa for c in parts])[order],
        tin=np.concatenate([c.tin for c in parts])[order],
        tout=np.concatenate([c.tout for c in parts])[order],
        dist=np.concatenate([c.dist for c in parts])[order],
        lost_now=np.concatenate([c.lost_now for c in parts])[order],
    )


def _as_float(name: str, values: ArrayLike) -> FloatArray:
    array = np.ascontiguousarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise TacticalError("invalid_state", f"{name} must be a 1-D array, got shape {array.shape}")
    return array


def _validate(
    lat: ArrayLike,
    lon: ArrayLike,
    alt: ArrayLike,
    gs: ArrayLike,
    trk: ArrayLike,
    vs: ArrayLike,
    party: ArrayLike,
    rpz: float,
    hpz: float,
    lookahead: float,
) -> _States:
    """Refuse what would make the answer meaningless; the broad phase relies on |lat| <= 90."""
    for name, value in (("rpz", rpz), ("hpz", hpz), ("lookahead", lookahead)):
        if not np.isfinite(value) or value < 0.0 or (name != "lookahead" and value == 0.0):
            raise TacticalError(
                "invalid_parameter", f"{name} must be finite and positive, got {value!r}"
            )
    arrays = {
        name: _as_float(name, values)
        for name, values in (
            ("lat", lat),
            ("lon", lon),
            ("alt", alt),
            ("gs", gs),
            ("trk", trk),
            ("vs", vs),
        )
    }
    parties = np.ascontiguousarray(party)
    if parties.ndim != 1 or not np.issubdtype(parties.dtype, np.integer):
        raise TacticalError("invalid_state", "party must be a 1-D array of integers")
    n = parties.size
    for name, array in arrays.items():
        if array.size != n:
            raise TacticalError("invalid_state", f"{name} has {array.size} values for {n} aircraft")
        if not np.isfinite(array).all():
            raise TacticalError("invalid_state", f"{name} has non-finite values")
    if n and np.abs(arrays["lat"]).max() > 90.0:
        raise TacticalError("invalid_state", "lat must be within [-90, 90] degrees")
    u, v = narrow.velocity_components(arrays["gs"], arrays["trk"])
    return _States(
        lat=arrays["lat"],
        lon=arrays["lon"],
        alt=arrays["alt"],
        u=u,
        v=v,
        vs=arrays["vs"],
        party=parties.astype(np.int64, copy=False),
    )
