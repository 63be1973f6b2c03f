"""Tactical layer: watch what actually flies and warn of predicted losses of separation.

Pure numpy, no I/O, no clock: ``detector`` (BlueSky-compatible state-based conflict detection
with a near-linear broad phase), ``tracks`` (latest state per aircraft), ``alerts`` (alert
lifecycle), ``cycle`` (the three in order), ``adsb`` (reader for recorded ADS-B, the one edge
that converts feet and knots). See ``docs/tactical.md``.
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
