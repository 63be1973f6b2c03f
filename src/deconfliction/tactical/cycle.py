"""One tactical cycle, pure: reports in, alert changes out (track table -> detector -> alerts).

The services layer owns the clock, the feeds and the delivery of events; this module owns the
order of the steps so that every caller (service, replay, bench, tests) runs them the same way:
ingest the batch, drop silent aircraft, dead-reckon everybody to ``now``, detect, update alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deconfliction.tactical.alerts import (
    Alert,
    AlertChange,
    AlertPolicy,
    PairKey,
    encounters,
    update,
)
from deconfliction.tactical.detector import (
    DEFAULT_HPZ_M,
    DEFAULT_LOOKAHEAD_S,
    DEFAULT_RPZ_M,
    Conflicts,
    detect,
)
from deconfliction.tactical.tracks import IngestStats, ReportBatch, Snapshot, TrackTable


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """The protected zone and look-ahead (SI), and whether same-party pairs are examined."""

    rpz: float = DEFAULT_RPZ_M
    hpz: float = DEFAULT_HPZ_M
    lookahead: float = DEFAULT_LOOKAHEAD_S
    same_party: bool = False


@dataclass(frozen=True, slots=True)
class CycleResult:
    """What one cycle did; ``refused`` counts reports dropped as invalid (``drop_invalid`` only)."""

    now: float
    ingested: IngestStats
    refused: int
    dropped: list[str]
    snapshot: Snapshot
    conflicts: Conflicts
    changes: list[AlertChange]


@dataclass
class TacticalCycle:
    """The state carried from cycle to cycle: the track table and the book of open alerts."""

    settings: DetectionSettings = field(default_factory=DetectionSettings)
    policy: AlertPolicy = field(default_factory=AlertPolicy)
    table: TrackTable = field(default_factory=TrackTable)
    book: dict[PairKey, Alert] = field(default_factory=dict)
    drop_invalid: bool = False

    def step(self, batch: ReportBatch | None, now: float) -> CycleResult:
        """Run one cycle at ``now``; ``batch`` may be ``None`` when no report came in.

        An invalid report refuses the whole batch (``TacticalError``) unless ``drop_invalid``,
        in which case the bad reports are dropped and counted and the rest is ingested: a live
        feed with one garbled message should not blind the cycle.
        """
        refused = 0
        if batch is not None and self.drop_invalid:
            valid = batch.valid_mask()
            refused = int(valid.size - valid.sum())
            if refused:
                batch = batch.select(valid)
        ingested = self.table.ingest(batch, now=now) if batch is not None else IngestStats()
        dropped = self.table.expire(now)
        snapshot = self.table.snapshot(now)
        s = self.settings
        conflicts = detect(
            *snapshot.detector_arrays(),
            rpz=s.rpz,
            hpz=s.hpz,
            lookahead=s.lookahead,
            same_party=s.same_party,
        )
        self.book, changes = update(
            self.book, encounters(conflicts, snapshot.ids), now, self.policy
        )
        return CycleResult(now, ingested, refused, dropped, snapshot, conflicts, changes)
