"""The monitor: everything one tactical cycle decides, for the live service and the replay alike.

``TacticalCycle`` runs track table -> detector -> alerts with one protected zone. The monitor
adds what a deployment needs on top, still pure (no store, no clock):

- **Per pair of parties protected zones.** Parties may agree a different ``rpz``/``hpz``/
  look-ahead between them (``MonitorSettings.pairs``). Detection runs once with the *largest*
  zone and look-ahead of all, which finds a superset of every pair's conflicts (a conflict with a
  smaller cylinder and shorter look-ahead is one with a larger one); each conflict whose pair
  agreed a smaller zone is then tested again, alone, with its own values, and kept with those
  numbers or dropped. Cost: one two-aircraft detection per such conflict.
- **Conformance** (``conformance``): aircraft flying under an operation are checked against its
  volumes every cycle; excursions longer than the grace period are raised.

Use: ``ingest`` report batches as they come, then once per cycle ``step(now, volumes)`` where
``volumes`` maps every id of ``operation_ids()`` to the operation's volumes (``None`` when it is
not live). The two steps are separate so that the caller can read exactly the operations the
tracks reference, between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from deconfliction.geo import Volume
from deconfliction.tactical import conformance
from deconfliction.tactical.alerts import (
    Alert,
    AlertChange,
    AlertPolicy,
    Encounter,
    PairKey,
    encounters,
    update,
)
from deconfliction.tactical.conformance import (
    ConformanceSettings,
    Excursion,
    ExcursionChange,
    Observation,
)
from deconfliction.tactical.cycle import DetectionSettings
from deconfliction.tactical.detector import Conflicts, detect
from deconfliction.tactical.tracks import IngestStats, ReportBatch, Snapshot, TrackTable


@dataclass(frozen=True, slots=True)
class Zone:
    """A protected zone and look-ahead (SI) agreed between two parties."""

    rpz: float
    hpz: float
    lookahead: float


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """Detection (deployment default), per-pair zones, alert policy, conformance, track expiry.

    ``pairs`` is keyed by the unordered pair of party names as they appear in the reports
    (``frozenset({"blue", "red"})``).
    """

    detection: DetectionSettings = field(default_factory=DetectionSettings)
    pairs: Mapping[frozenset[str], Zone] = field(default_factory=dict)
    policy: AlertPolicy = field(default_factory=AlertPolicy)
    conformance: ConformanceSettings = field(default_factory=ConformanceSettings)
    max_age_s: float = 30.0

    @property
    def default_zone(self) -> Zone:
        d = self.detection
        return Zone(d.rpz, d.hpz, d.lookahead)

    def zone(self, party_a: str, party_b: str) -> Zone:
        return self.pairs.get(frozenset((party_a, party_b)), self.default_zone)

    @property
    def widest(self) -> Zone:
        zones = [self.default_zone, *self.pairs.values()]
        return Zone(
            max(z.rpz for z in zones), max(z.hpz for z in zones), max(z.lookahead for z in zones)
        )


@dataclass(frozen=True, slots=True)
class MonitorResult:
    """One cycle: the snapshot it judged, the alert changes and the conformance changes."""

    now: float
    dropped: list[str]
    snapshot: Snapshot
    conflicts: dict[PairKey, Encounter]
    changes: list[AlertChange]
    excursions: list[ExcursionChange]
    book: Mapping[PairKey, Alert]
    open_excursions: Mapping[str, Excursion]


@dataclass
class Monitor:
    """Tracks, open alerts and open excursions, carried from cycle to cycle."""

    settings: MonitorSettings = field(default_factory=MonitorSettings)
    table: TrackTable = field(init=False)
    book: dict[PairKey, Alert] = field(default_factory=dict)
    excursions: dict[str, Excursion] = field(default_factory=dict)
    refused: int = 0

    def __post_init__(self) -> None:
        self.table = TrackTable(max_age_s=self.settings.max_age_s)

    def ingest(self, batch: ReportBatch) -> IngestStats:
        """Apply a batch; invalid reports are dropped and counted (a feed must not blind us)."""
        valid = batch.valid_mask()
        bad = int(valid.size - valid.sum())
        if bad:
            self.refused += bad
            batch = batch.select(valid)
        return self.table.ingest(batch)

    def operation_ids(self) -> set[str]:
        """The operations the tracked aircraft fly under (what ``step`` needs volumes for)."""
        return {op for op in self.table.snapshot(0.0, extrapolate=False).operation if op}

    def step(
        self, now: float, volumes: Mapping[str, Sequence[Volume] | None] | None = None
    ) -> MonitorResult:
        """Expire, dead-reckon to ``now``, detect with per-pair zones, update alerts and
        excursions. ``volumes``: see the module docstring (missing ids count as not live)."""
        dropped = self.table.expire(now)
        snap = self.table.snapshot(now)
        current = self._encounters(snap)
        self.book, changes = update(self.book, current, now, self.settings.policy)
        observed = self._observe(snap, now, volumes or {})
        self.excursions, excursions = conformance.update(
            self.excursions, observed, now, self.settings.conformance.grace_s
        )
        return MonitorResult(
            now, dropped, snap, current, changes, excursions, self.book, self.excursions
        )

    def _encounters(self, snap: Snapshot) -> dict[PairKey, Encounter]:
        s = self.settings
        wide = s.widest
        conflicts = detect(
            *snap.detector_arrays(),
            rpz=wide.rpz,
            hpz=wide.hpz,
            lookahead=wide.lookahead,
            same_party=s.detection.same_party,
        )
        if not s.pairs or not len(conflicts):
            return encounters(conflicts, snap.ids)
        names = snap.party_names
        zones = [
            s.zone(names[snap.party[i]], names[snap.party[j]]) for i, j in conflicts.pairs_list()
        ]
        keep = np.array([zone == wide for zone in zones], dtype=bool)
        found = encounters(_select(conflicts, keep), snap.ids)
        for k in np.flatnonzero(~keep).tolist():
            i, j = int(conflicts.i[k]), int(conflicts.j[k])
            zone = zones[k]
            pick = np.array([i, j])
            alone = detect(
                snap.lat[pick],
                snap.lon[pick],
                snap.alt[pick],
                snap.gs[pick],
                snap.trk[pick],
                snap.vs[pick],
                np.array([0, 1]),
                rpz=zone.rpz,
                hpz=zone.hpz,
                lookahead=zone.lookahead,
            )
            found.update(encounters(alone, [snap.ids[i], snap.ids[j]]))
        return found

    def _observe(
        self, snap: Snapshot, now: float, volumes: Mapping[str, Sequence[Volume] | None]
    ) -> dict[str, Observation]:
        by_operation: dict[str, list[int]] = {}
        for k, op in enumerate(snap.operation):
            if op:
                by_operation.setdefault(op, []).append(k)
        observed: dict[str, Observation] = {}
        for op, rows in by_operation.items():
            pick = np.array(rows)
            reasons = conformance.check(
                volumes.get(op),
                snap.lat[pick],
                snap.lon[pick],
                snap.alt[pick],
                now,
                self.settings.conformance,
            )
            for k, reason in zip(rows, reasons, strict=True):
                observed[snap.ids[k]] = Observation(op, reason)
        return observed


def _select(conflicts: Conflicts, keep: np.ndarray) -> Conflicts:
    return Conflicts(
        conflicts.i[keep],
        conflicts.j[keep],
        conflicts.tcpa[keep],
        conflicts.dcpa[keep],
        conflicts.tin[keep],
        conflicts.tout[keep],
        conflicts.dist[keep],
        conflicts.lost_now[keep],
    )
