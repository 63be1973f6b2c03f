"""Reader for recorded ADS-B (the OpenSky-style CSV in ``shared/data/adsb``), SI units out.

The file has one row per aircraft per second, sorted by time::

    timestamp,icao24,callsign,latitude,longitude,altitude,groundspeed,track,vertical_rate
    2021-10-07 12:00:01+00:00,398564,AFR9455,48.3634,1.41348,20250,385,16.2721,-2560

with altitude in feet, ground speed in knots, vertical rate in feet per minute, and empty cells
for missing values. This is an edge of the system, so units are converted here and nowhere else
(``ARCHITECTURE.md``: SI inside). ``read_batches`` yields one ``AdsbBatch`` per time step; missing
values are NaN, or, with ``hold_s``, the aircraft's last known value if it is at most that old
(velocity and altitude messages do not always arrive with every position).

``PartyRule`` assigns parties from callsign prefixes, e.g. ``{"AFR": "blue", "EZY": "red"}``.
Reading is the ``csv`` module and numpy: no pandas.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

import numpy as np
from numpy.typing import NDArray

from deconfliction.tactical.tracks import ReportBatch

FT = 0.3048
KT = 1852.0 / 3600.0
FPM = FT / 60.0

COLUMNS = (
    "timestamp",
    "icao24",
    "callsign",
    "latitude",
    "longitude",
    "altitude",
    "groundspeed",
    "track",
    "vertical_rate",
)
# CSV column -> (our field, factor to SI)
_NUMERIC = {
    "latitude": ("lat", 1.0),
    "longitude": ("lon", 1.0),
    "altitude": ("alt", FT),
    "groundspeed": ("gs", KT),
    "track": ("trk", 1.0),
    "vertical_rate": ("vs", FPM),
}
_HELD = ("alt", "gs", "trk", "vs")
_CELLS = [(COLUMNS.index(column), name, factor) for column, (name, factor) in _NUMERIC.items()]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class AdsbBatch:
    """Reports sharing one time step: ``time`` (UNIX s), ids (icao24), callsigns, SI arrays."""

    time: float
    ids: tuple[str, ...]
    callsign: tuple[str, ...]
    lat: FloatArray
    lon: FloatArray
    alt: FloatArray
    gs: FloatArray
    trk: FloatArray
    vs: FloatArray

    def __len__(self) -> int:
        return len(self.ids)

    def complete(self) -> NDArray[np.bool_]:
        """Which reports have every value (the others cannot be tracked yet)."""
        stacked = np.vstack([self.lat, self.lon, self.alt, self.gs, self.trk, self.vs])
        return np.asarray(np.isfinite(stacked).all(axis=0), dtype=bool)

    def reports(self, parties: Sequence[str], mask: NDArray[np.bool_] | None = None) -> ReportBatch:
        """The selected reports as a ``ReportBatch`` for the track table, with one party each."""
        keep = np.arange(len(self)) if mask is None else np.flatnonzero(mask)
        pick = keep.tolist()
        n = keep.size
        return ReportBatch(
            ids=[self.ids[k] for k in pick],
            party=[parties[k] for k in pick],
            time=np.full(n, self.time),
            lat=self.lat[keep],
            lon=self.lon[keep],
            alt=self.alt[keep],
            gs=self.gs[keep],
            trk=self.trk[keep],
            vs=self.vs[keep],
        )


@dataclass(frozen=True, slots=True)
class PartyRule:
    """Party by callsign prefix; the longest matching prefix wins, else ``default``."""

    prefixes: Mapping[str, str] = field(default_factory=dict)
    default: str = "other"

    def assign(self, callsigns: Sequence[str]) -> list[str]:
        ordered = sorted(self.prefixes.items(), key=lambda item: -len(item[0]))
        out = []
        for callsign in callsigns:
            sign = callsign.strip().upper()
            out.append(
                next(
                    (party for prefix, party in ordered if sign.startswith(prefix.upper())),
                    self.default,
                )
            )
        return out


def _number(cell: str) -> float:
    return float(cell) if cell else np.nan


def _open(path: str | Path) -> TextIO:
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_batches(
    path: str | Path,
    *,
    step_s: float = 1.0,
    limit_rows: int | None = None,
    hold_s: float = 0.0,
) -> Iterator[AdsbBatch]:
    """Yield time-ordered batches of ``step_s`` seconds (stamped with the step's start).

    ``limit_rows`` stops after that many data rows (tests read a small slice of a big file).
    If several rows of one aircraft fall into one step, the last one is kept. Rows must come in
    time order (the recorded files do); an earlier row is refused with ``ValueError`` rather
    than silently producing batches out of order.
    """
    with _open(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        if tuple(header) != COLUMNS:
            raise ValueError(f"unexpected ADS-B columns {header}, expected {list(COLUMNS)}")
        last_stamp, last_time = "", 0.0
        step_start: float | None = None
        rows: dict[str, list[str]] = {}
        memory: dict[str, dict[str, tuple[float, float]]] = {}  # icao24 -> field -> (value, time)
        for count, row in enumerate(reader):
            if limit_rows is not None and count >= limit_rows:
                break
            if row[0] != last_stamp:
                last_stamp, time = row[0], datetime.fromisoformat(row[0]).timestamp()
                if time < last_time:
                    raise ValueError(f"row {count + 2}: time {row[0]} goes backwards")
                last_time = time
            step = np.floor(last_time / step_s) * step_s
            if step_start is None:
                step_start = step
            if step != step_start:
                yield _batch(step_start, rows, memory, hold_s)
                rows = {}
                step_start = step
            rows[row[1]] = row
        if rows and step_start is not None:
            yield _batch(step_start, rows, memory, hold_s)


def _batch(
    time: float,
    rows: dict[str, list[str]],
    memory: dict[str, dict[str, tuple[float, float]]],
    hold_s: float,
) -> AdsbBatch:
    """One batch from the last row per aircraft, converting units and filling held values."""
    ids = tuple(rows)
    values: dict[str, list[float]] = {name: [] for name, _ in _NUMERIC.values()}
    for icao in ids:
        row = rows[icao]
        known = memory.setdefault(icao, {})
        for index, name, factor in _CELLS:
            value = _number(row[index]) * factor
            if np.isfinite(value):
                known[name] = (value, time)
            elif hold_s > 0 and name in _HELD and name in known and time - known[name][1] <= hold_s:
                value = known[name][0]
            values[name].append(value)
    return AdsbBatch(
        time=time,
        ids=ids,
        callsign=tuple(rows[icao][2].strip() for icao in ids),
        **{name: np.array(column, dtype=np.float64) for name, column in values.items()},
    )
