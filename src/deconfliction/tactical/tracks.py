"""The track table: the latest state of every aircraft, kept as arrays ready for the detector.

Pure and in memory: reports come in as batches, time comes in as an argument, nothing is read
from a clock, a socket or a disk. Surveillance feeds repeat themselves, arrive out of order and
sometimes talk nonsense, so the table is defensive:

- a batch with an impossible value is refused whole, with every problem listed, and the table is
  left exactly as it was (``TacticalError`` with ``code="invalid_report"``);
- a report older than what the table already holds for that aircraft is *stale*, one with the
  same time is a *duplicate*: both are ignored and counted, never applied. Within a batch the
  newest report of each aircraft wins, whatever the order of the batch, so the table's content
  never depends on how reports were batched or ordered — only on which reports arrived;
- ``expire(now)`` drops aircraft not heard from for ``max_age_s``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from deconfliction.tactical.errors import TacticalError
from deconfliction.tactical.narrow import EARTH_RADIUS_M

FloatArray = NDArray[np.float64]

#: Numeric fields of a report and their SI units.
NUMBERS = ("time", "lat", "lon", "alt", "gs", "trk", "vs")
#: Every field a report must carry (``operation`` is optional).
REQUIRED = ("id", "party", *NUMBERS)

#: Plausibility limits (inclusive), SI: what no real aircraft report can exceed.
LIMITS: dict[str, tuple[float, float]] = {
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
    "alt": (-500.0, 30000.0),
    "gs": (0.0, 1000.0),
    "vs": (-200.0, 200.0),
}
#: How many problems a refusal message quotes (all are in ``TacticalError.problems``).
_QUOTED = 5


@dataclass(frozen=True, slots=True)
class ReportBatch:
    """Reports of aircraft states, one element per report, SI units.

    ``time`` is seconds on any consistent scale (e.g. UNIX time); ``trk`` is degrees true, any
    finite value (normalised to [0, 360) on ingest). ``operation`` is optional per report.
    Build one from dicts with ``from_records`` or from arrays directly.
    """

    ids: Sequence[str]
    party: Sequence[str]
    time: FloatArray
    lat: FloatArray
    lon: FloatArray
    alt: FloatArray
    gs: FloatArray
    trk: FloatArray
    vs: FloatArray
    operation: Sequence[str | None] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> ReportBatch:
        """Batch from mappings with the ``REQUIRED`` keys; refuses missing or non-numeric fields."""
        rows = list(records)
        problems = [
            f"report {k}: missing field {name!r}"
            for k, row in enumerate(rows)
            for name in REQUIRED
            if row.get(name) is None
        ]
        numbers: dict[str, FloatArray] = {}
        for name in NUMBERS:
            column = np.full(len(rows), np.nan)
            for k, row in enumerate(rows):
                value = row.get(name)
                if value is None:
                    continue
                try:
                    column[k] = float(value)
                except OverflowError:  # an integer too large for a float: refused as not finite
                    column[k] = np.inf
                except (TypeError, ValueError):
                    problems.append(f"report {k}: {name} is not a number: {value!r}")
            numbers[name] = column
        if problems:
            raise _refusal(problems, len(rows))
        return cls(
            ids=[str(row["id"]) for row in rows],
            party=[str(row["party"]) for row in rows],
            operation=[
                None if row.get("operation") is None else str(row["operation"]) for row in rows
            ],
            **numbers,
        )

    def problems(self) -> list[str]:
        """Every reason to refuse this batch, one line per report and field; empty if none."""
        return [message for _, message in self._check()]

    def valid_mask(self) -> NDArray[np.bool_]:
        """Which reports have no problem (for callers that drop bad reports rather than refuse)."""
        mask = np.ones(len(self.ids), dtype=bool)
        for row, _ in self._check():
            if row < 0:
                return np.zeros(len(self.ids), dtype=bool)
            mask[row] = False
        return mask

    def select(self, mask: NDArray[np.bool_]) -> ReportBatch:
        """The reports where ``mask`` is true."""
        keep = np.flatnonzero(mask)
        pick = keep.tolist()
        return ReportBatch(
            ids=[self.ids[k] for k in pick],
            party=[self.party[k] for k in pick],
            operation=None if self.operation is None else [self.operation[k] for k in pick],
            **{name: np.asarray(getattr(self, name), dtype=np.float64)[keep] for name in NUMBERS},
        )

    def _check(self) -> list[tuple[int, str]]:
        """``(report index, problem)`` pairs; index -1 when the batch itself is malformed."""
        n = len(self.ids)
        found: list[tuple[int, str]] = []
        columns = {name: np.asarray(getattr(self, name), dtype=np.float64) for name in NUMBERS}
        for name, column in columns.items():
            if column.shape != (n,):
                return [(-1, f"{name} has shape {column.shape} for {n} reports")]
        if len(self.party) != n or (self.operation is not None and len(self.operation) != n):
            return [(-1, f"party/operation lengths differ from the {n} reports")]
        for k in range(n):
            if not isinstance(self.ids[k], str) or not self.ids[k]:
                found.append((k, f"report {k}: id must be a non-empty string"))
            if not isinstance(self.party[k], str) or not self.party[k]:
                found.append((k, f"report {k}: party must be a non-empty string"))
        for name, column in columns.items():
            for k in np.flatnonzero(~np.isfinite(column)).tolist():
                found.append(
                    (k, f"report {k}: {name} is not a finite number ({float(column[k])!r})")
                )
        for name, (low, high) in LIMITS.items():
            column = columns[name]
            with np.errstate(invalid="ignore"):
                outside = np.flatnonzero(np.isfinite(column) & ((column < low) | (column > high)))
            for k in outside.tolist():
                found.append(
                    (k, f"report {k}: {name}={float(column[k])!r} outside [{low}, {high}]")
                )
        return found


@dataclass(frozen=True, slots=True)
class IngestStats:
    """What one ``ingest`` did with each report."""

    accepted: int = 0
    stale: int = 0
    duplicate: int = 0

    def __add__(self, other: IngestStats) -> IngestStats:
        return IngestStats(
            self.accepted + other.accepted,
            self.stale + other.stale,
            self.duplicate + other.duplicate,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The table at one instant, as the detector wants it: parallel arrays, SI units.

    ``party`` holds integer codes, ``party_names[code]`` the party; ``time`` is each track's
    report time and ``age`` how old it is at the snapshot's ``now``.
    """

    now: float
    ids: tuple[str, ...]
    lat: FloatArray
    lon: FloatArray
    alt: FloatArray
    gs: FloatArray
    trk: FloatArray
    vs: FloatArray
    time: FloatArray
    age: FloatArray
    party: NDArray[np.int64]
    party_names: tuple[str, ...]
    operation: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def detector_arrays(
        self,
    ) -> tuple[
        FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, NDArray[np.int64]
    ]:
        """``(lat, lon, alt, gs, trk, vs, party)``, the detector's positional arguments."""
        return self.lat, self.lon, self.alt, self.gs, self.trk, self.vs, self.party


@dataclass
class TrackTable:
    """Latest state per aircraft id; see the module docstring for the rules.

    ``future_tolerance_s``: with ``ingest(..., now=...)``, reports stamped more than this after
    ``now`` are refused, because one bad clock would otherwise make every later report stale.
    """

    max_age_s: float = 30.0
    future_tolerance_s: float = 5.0
    totals: IngestStats = IngestStats()
    _slot: dict[str, int] = field(default_factory=dict, repr=False)
    _ids: list[str] = field(default_factory=list, repr=False)
    _operation: list[str | None] = field(default_factory=list, repr=False)
    _numbers: dict[str, FloatArray] = field(default_factory=dict, repr=False)
    _party: NDArray[np.int64] = field(
        default_factory=lambda: np.empty(0, dtype=np.int64), repr=False
    )
    _party_code: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self._numbers:
            self._numbers = {name: np.empty(0) for name in NUMBERS}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, aircraft: object) -> bool:
        return aircraft in self._slot

    @property
    def party_names(self) -> tuple[str, ...]:
        """Party name per integer code used in snapshots (codes are stable for the table's life)."""
        return tuple(self._party_code)

    def ingest(self, batch: ReportBatch, *, now: float | None = None) -> IngestStats:
        """Apply the newest valid report of each aircraft; refuse the whole batch if any is invalid."""
        problems = batch.problems()
        if now is not None:
            late = np.flatnonzero(
                np.asarray(batch.time, dtype=np.float64) > now + self.future_tolerance_s
            )
            problems += [
                f"report {k}: time {batch.time[k]!r} is after now={now!r}" for k in late.tolist()
            ]
        if problems:
            raise _refusal(problems, len(batch))
        n = len(batch)
        if n == 0:
            return IngestStats()

        slots = np.fromiter((self._slot.get(aircraft, -1) for aircraft in batch.ids), np.int64, n)
        unknown = np.flatnonzero(slots < 0)
        if unknown.size:
            slots[unknown] = self._add([batch.ids[k] for k in unknown.tolist()])

        time = np.asarray(batch.time, dtype=np.float64)
        held = self._numbers["time"][slots]
        # Newest report per aircraft (first in the batch among equal times) is its candidate.
        order = np.lexsort((np.arange(n), -time, slots))
        first = np.ones(n, dtype=bool)
        first[1:] = slots[order][1:] != slots[order][:-1]
        winner_of = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        winner = order[first]
        same_as_winner = time[order] == time[order][winner_of]
        newer = time[winner] > held[winner]
        accepted = winner[newer]

        losers = ~first
        duplicate = int(np.count_nonzero(losers & same_as_winner)) + int(
            np.count_nonzero(time[winner] == held[winner])
        )
        stats = IngestStats(
            accepted=int(accepted.size),
            stale=n - int(accepted.size) - duplicate,
            duplicate=duplicate,
        )

        target = slots[accepted]
        for name in NUMBERS:
            values = np.asarray(getattr(batch, name), dtype=np.float64)[accepted]
            self._numbers[name][target] = np.mod(values, 360.0) if name == "trk" else values
        self._party[target] = [self._code(batch.party[k]) for k in accepted.tolist()]
        operations = batch.operation
        for k, slot in zip(accepted.tolist(), target.tolist(), strict=True):
            self._operation[slot] = None if operations is None else operations[k]
        self.totals = self.totals + stats
        return stats

    def expire(self, now: float) -> list[str]:
        """Drop aircraft whose last report is more than ``max_age_s`` before ``now``; return their ids."""
        keep = self._numbers["time"] >= now - self.max_age_s
        if keep.all():
            return []
        dropped = [self._ids[k] for k in np.flatnonzero(~keep).tolist()]
        kept = np.flatnonzero(keep).tolist()
        self._ids = [self._ids[k] for k in kept]
        self._operation = [self._operation[k] for k in kept]
        self._numbers = {name: values[keep] for name, values in self._numbers.items()}
        self._party = self._party[keep]
        self._slot = {aircraft: k for k, aircraft in enumerate(self._ids)}
        return dropped

    def snapshot(self, now: float, *, extrapolate: bool = True) -> Snapshot:
        """Every track at ``now``; with ``extrapolate``, positions are dead-reckoned to ``now``.

        Reports arrive up to ``max_age_s`` old; at 250 m/s a 10 s old position is 2.5 km off,
        a quarter of a 5 NM protected zone, so the detector should see where aircraft are *now*.
        Dead reckoning uses BlueSky's flat-earth frame (straight line at constant ground speed,
        track and vertical rate); latitude is clamped to the poles, longitude wrapped.
        """
        x = {name: values.copy() for name, values in self._numbers.items()}
        age = now - x["time"]
        if extrapolate and len(self):
            trk = np.radians(x["trk"])
            north = x["gs"] * np.cos(trk) * age
            east = x["gs"] * np.sin(trk) * age
            coslat = np.maximum(np.cos(np.radians(x["lat"])), 1e-6)
            x["lon"] = (
                x["lon"] + np.degrees(east / (EARTH_RADIUS_M * coslat)) + 180.0
            ) % 360.0 - 180.0
            x["lat"] = np.clip(x["lat"] + np.degrees(north / EARTH_RADIUS_M), -90.0, 90.0)
            x["alt"] = x["alt"] + x["vs"] * age
        return Snapshot(
            now=now,
            ids=tuple(self._ids),
            lat=x["lat"],
            lon=x["lon"],
            alt=x["alt"],
            gs=x["gs"],
            trk=x["trk"],
            vs=x["vs"],
            time=x["time"],
            age=age,
            party=self._party.copy(),
            party_names=self.party_names,
            operation=tuple(self._operation),
        )

    def _add(self, ids: list[str]) -> NDArray[np.int64]:
        """Give new aircraft slots (once each, even if repeated in ``ids``); return one per id."""
        fresh = list(dict.fromkeys(ids))
        start = len(self._ids)
        for k, aircraft in enumerate(fresh):
            self._slot[aircraft] = start + k
        self._ids.extend(fresh)
        self._operation.extend([None] * len(fresh))
        grow = len(fresh)
        for name, values in self._numbers.items():
            filler = -np.inf if name == "time" else np.nan
            self._numbers[name] = np.concatenate([values, np.full(grow, filler)])
        self._party = np.concatenate([self._party, np.full(grow, -1, dtype=np.int64)])
        return np.array([self._slot[aircraft] for aircraft in ids], dtype=np.int64)

    def _code(self, party: str) -> int:
        return self._party_code.setdefault(party, len(self._party_code))


def _refusal(problems: list[str], n: int) -> TacticalError:
    shown = "; ".join(problems[:_QUOTED]) + ("; ..." if len(problems) > _QUOTED else "")
    return TacticalError(
        "invalid_report",
        f"batch of {n} reports refused, {len(problems)} problem(s): {shown}",
        tuple(problems),
    )
