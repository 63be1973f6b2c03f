"""Tactical layer: watch what actually flies and warn of predicted losses of separation.

Pure numpy, no clock: ``detector`` (BlueSky-compatible state-based conflict detection with a
near-linear broad phase), ``tracks`` (latest state per aircraft), ``alerts`` (alert lifecycle),
``conformance`` and ``monitor`` (what the service's cycle runs), ``cycle`` (detector, tracks and
alerts in order, for the bench and tests). The one exception to "no I/O" is ``adsb``, the reader
of recorded ADS-B files, the edge that converts feet and knots. See ``docs/tactical.md``.
"""

from deconfliction.tactical.alerts import (
    Alert,
    AlertChange,
    AlertPolicy,
    Encounter,
    Severity,
    encounters,
    update,
)
from deconfliction.tactical.cycle import CycleResult, DetectionSettings, TacticalCycle
from deconfliction.tactical.detector import Conflicts, detect, detect_all_pairs
from deconfliction.tactical.errors import TacticalError
from deconfliction.tactical.tracks import IngestStats, ReportBatch, Snapshot, TrackTable

__all__ = [
    "Alert",
    "AlertChange",
    "AlertPolicy",
    "Conflicts",
    "CycleResult",
    "DetectionSettings",
    "Encounter",
    "IngestStats",
    "ReportBatch",
    "Severity",
    "Snapshot",
    "TacticalCycle",
    "TacticalError",
    "TrackTable",
    "detect",
    "detect_all_pairs",
    "encounters",
    "update",
]
