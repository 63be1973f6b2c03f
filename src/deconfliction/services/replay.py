"""Replay recorded traffic through the monitor: what the service would have raised, and how fast.

Runs the same pure ``Monitor`` as the live cycle owner, in-process, with no store and no server:
read a recorded ADS-B file step by step (``tactical.adsb``), assign parties by callsign prefix,
run one cycle per step, and keep score. As fast as possible by default; ``realtime`` paces the
steps on the wall clock (``speed`` times real time). The clock and the sleep are injected so
tests never wait.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deconfliction.tactical import adsb
from deconfliction.tactical.alerts import PairKey, Severity
from deconfliction.tactical.monitor import Monitor, MonitorResult, MonitorSettings


@dataclass
class EncounterRecord:
    """One conflict alert from opening to end: who, when, and how close it came."""

    pair: PairKey
    parties: tuple[str, str]
    callsigns: tuple[str, str]
    opened: float
    last_seen: float
    min_distance_m: float
    min_dcpa_m: float
    lost: bool = False
    ended: bool = False

    @property
    def duration_s(self) -> float:
        return self.last_seen - self.opened


@dataclass
class ReplaySummary:
    steps: int = 0
    reports: int = 0
    incomplete: int = 0
    """Rows lacking a value (no position, altitude or velocity yet): not tracked."""
    aircraft: set[str] = field(default_factory=set)
    first_time: float | None = None
    last_time: float | None = None
    wall_s: float = 0.0
    changes: Counter[str] = field(default_factory=Counter)
    """Alert changes by kind: new, continuing, ended."""
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    """New conflict alerts by (sorted) pair of parties."""
    encounters: dict[tuple[PairKey, float], EncounterRecord] = field(default_factory=dict)

    @property
    def sky_s(self) -> float:
        """Recorded time covered (the last step counts for one second)."""
        if self.first_time is None or self.last_time is None:
            return 0.0
        return self.last_time - self.first_time + 1.0

    @property
    def speed(self) -> float:
        """Replay speed as a multiple of real time."""
        return self.sky_s / self.wall_s if self.wall_s > 0 else float("inf")

    def top(self, n: int = 10) -> list[EncounterRecord]:
        """The closest encounters: separation lost first, then by smallest distance."""
        return sorted(
            self.encounters.values(), key=lambda e: (not e.lost, e.min_distance_m, e.opened)
        )[:n]


def replay(
    path: str | Path,
    rule: adsb.PartyRule,
    settings: MonitorSettings | None = None,
    *,
    limit_rows: int | None = None,
    realtime: bool = False,
    speed: float = 1.0,
    hold_s: float = 10.0,
    on_step: Callable[[adsb.AdsbBatch, MonitorResult, ReplaySummary], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplaySummary:
    """Play ``path`` through a fresh ``Monitor``; ``on_step`` sees every step (progress bars)."""
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed!r}")
    monitor = Monitor(settings or MonitorSettings())
    summary = ReplaySummary()
    callsign: dict[str, str] = {}
    party: dict[str, str] = {}
    started = clock()
    for batch in adsb.read_batches(path, limit_rows=limit_rows, hold_s=hold_s):
        if summary.first_time is None:
            summary.first_time = batch.time
        if realtime:
            due = started + (batch.time - summary.first_time) / speed
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        complete = batch.complete()
        parties = rule.assign(batch.callsign)
        for aircraft, sign, name in zip(batch.ids, batch.callsign, parties, strict=True):
            callsign[aircraft] = sign or aircraft
            party[aircraft] = name
        monitor.ingest(batch.reports(parties, complete))
        result = monitor.step(batch.time)
        summary.steps += 1
        summary.reports += len(batch)
        summary.incomplete += int(len(batch) - complete.sum())
        summary.aircraft.update(batch.ids)
        summary.last_time = batch.time
        _score(summary, result, callsign, party)
        if on_step is not None:
            on_step(batch, result, summary)
    summary.wall_s = clock() - started
    return summary


def _score(
    summary: ReplaySummary,
    result: MonitorResult,
    callsign: dict[str, str],
    party: dict[str, str],
) -> None:
    for change in result.changes:
        alert = change.alert
        a, b = alert.pair
        summary.changes[change.kind] += 1
        key = (alert.pair, alert.opened)
        record = summary.encounters.get(key)
        if record is None:
            pa, pb = party.get(a, "?"), party.get(b, "?")
            summary.pairs[(min(pa, pb), max(pa, pb))] += 1
            record = EncounterRecord(
                alert.pair,
                (pa, pb),
                (callsign.get(a, a), callsign.get(b, b)),
                alert.opened,
                alert.last_seen,
                alert.encounter.dist,
                alert.encounter.dcpa,
            )
            summary.encounters[key] = record
        if change.kind == "ended":
            record.ended = True
    for pair, encounter in result.conflicts.items():
        held = result.book.get(pair)
        if held is None:
            continue
        record = summary.encounters.get((pair, held.opened))
        if record is None:
            continue
        record.last_seen = result.now
        record.min_distance_m = min(record.min_distance_m, encounter.dist)
        record.min_dcpa_m = min(record.min_dcpa_m, encounter.dcpa)
        record.lost = record.lost or encounter.severity is Severity.LOST
