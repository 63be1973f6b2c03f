"""Tactical use cases: parties send tracks; one cycle owner watches them and raises alerts.

Where the state lives (``docs/tactical.md``). Service processes stay stateless: ``TrackIngest``
(any process) validates a batch of reports and appends it to the store's ``track_reports`` in
one transaction. The track table, the open alerts and the open excursions live in exactly one
process, the *cycle owner*: whichever process holds the store's tactical lease. Its
``TacticalMonitor.run_once`` (a background duty, every ``cycle_s``) renews the lease, reads the
reports appended since its cursor, runs the pure ``Monitor`` and writes the alert events (for
both parties of a conflict; for the owner and the threatened parties of an excursion) and their
audit entries in one transaction that first checks the lease is still its own. A process that
stops renewing loses the lease after ``lease_s``; the next one starts with an empty book, reads
the retained reports (``retention_s``) and re-raises the conflicts that still hold as ``new``.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deconfliction.core import rules
from deconfliction.core.errors import Forbidden, InvalidInput, LimitExceeded
from deconfliction.core.model import NewEvent, TacticalLease, TrackReport
from deconfliction.formats import format_time, is_number, parse_time
from deconfliction.geo import Circle, GeometryError, Volume
from deconfliction.services import audit
from deconfliction.stores.base import Store, Tx
from deconfliction.tactical.alerts import AlertChange
from deconfliction.tactical.conformance import ConformanceSettings, Excursion
from deconfliction.tactical.cycle import DetectionSettings
from deconfliction.tactical.detector import DEFAULT_HPZ_M, DEFAULT_LOOKAHEAD_S, DEFAULT_RPZ_M
from deconfliction.tactical.monitor import Monitor, MonitorResult, MonitorSettings, Zone
from deconfliction.tactical.narrow import EARTH_RADIUS_M
from deconfliction.tactical.tracks import LIMITS, ReportBatch, Snapshot

log = logging.getLogger("deconfliction.tactical")

CONFLICT = "alert.conflict"
NONCONFORMANCE = "alert.nonconformance"

#: Wire name -> (internal name, required). Units are in the names; nothing is converted here.
WIRE_FIELDS: dict[str, tuple[str, bool]] = {
    "aircraft_id": ("id", True),
    "time": ("time", True),
    "lat": ("lat", True),
    "lon": ("lon", True),
    "altitude_m": ("alt", True),
    "ground_speed_mps": ("gs", True),
    "track_deg": ("trk", True),
    "vertical_rate_mps": ("vs", True),
    "operation_id": ("operation", False),
}
_WIRE_OF = {internal: wire for wire, (internal, _) in WIRE_FIELDS.items()}
_ALERT_NAMESPACE = uuid.UUID("5b0f4a52-4c8e-4f3e-9a3c-7c1f1f5d2b61")
_QUOTED = 5


@dataclass(frozen=True, slots=True)
class TacticalSettings:
    """One deployment's tactical choices.

    ``pairs`` maps a pair of parties (names or ids) to the zone they agreed; every other pair
    uses ``monitor.detection``. ``lease_s`` must exceed a few cycles; ``retention_s`` must
    exceed ``monitor.max_age_s`` (a new cycle owner rebuilds its tracks from what is retained).
    """

    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    pairs: Mapping[tuple[str, str], Zone] = field(default_factory=dict)
    cycle_s: float = 1.0
    lease_s: float = 5.0
    retention_s: float = 60.0
    future_tolerance_s: float = 5.0
    max_reports_per_request: int = 10_000
    max_reports_per_cycle: int = 200_000


def tactical_settings(
    *,
    cycle_s: float = 1.0,
    rpz_m: float = DEFAULT_RPZ_M,
    hpz_m: float = DEFAULT_HPZ_M,
    lookahead_s: float = DEFAULT_LOOKAHEAD_S,
    same_party: bool = False,
    pairs: Sequence[Mapping[str, Any]] = (),
    lateral_tolerance_m: float = 0.0,
    vertical_tolerance_m: float = 0.0,
    grace_s: float = 10.0,
    lease_s: float = 5.0,
    retention_s: float = 60.0,
    max_age_s: float = 30.0,
) -> TacticalSettings:
    """Settings from plain values (configuration files, environment), checked for sense."""
    for name, value in (("rpz_m", rpz_m), ("hpz_m", hpz_m), ("cycle_s", cycle_s)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"tactical {name} must be a positive number, got {value!r}")
    if not (math.isfinite(lookahead_s) and lookahead_s >= 0):
        raise ValueError(f"tactical lookahead_s must be >= 0, got {lookahead_s!r}")
    if lease_s <= cycle_s:
        raise ValueError(
            "tactical lease_s must be longer than cycle_s (the lease is renewed every cycle)"
        )
    if retention_s <= max_age_s:
        raise ValueError("tactical retention_s must exceed the track lifetime (30 s)")
    zones: dict[tuple[str, str], Zone] = {}
    for entry in pairs:
        names = entry.get("parties")
        if not isinstance(names, list | tuple) or len(names) != 2 or names[0] == names[1]:
            raise ValueError(f"tactical pair {entry!r}: 'parties' must name two parties")
        zone = Zone(
            float(entry.get("rpz_m", rpz_m)),
            float(entry.get("hpz_m", hpz_m)),
            float(entry.get("lookahead_s", lookahead_s)),
        )
        if not (zone.rpz > 0 and zone.hpz > 0 and zone.lookahead >= 0):
            raise ValueError(f"tactical pair {entry!r}: zone values must be positive")
        zones[(str(names[0]), str(names[1]))] = zone
    return TacticalSettings(
        monitor=MonitorSettings(
            detection=DetectionSettings(rpz_m, hpz_m, lookahead_s, same_party),
            conformance=ConformanceSettings(lateral_tolerance_m, vertical_tolerance_m, grace_s),
            max_age_s=max_age_s,
        ),
        pairs=zones,
        cycle_s=cycle_s,
        lease_s=lease_s,
        retention_s=retention_s,
    )


# Ingest ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestResult:
    """``stored``: appended for the cycle; ``too_old``: older than a track lives, not stored.

    Out-of-order, duplicate and superseded reports are stored and then ignored by the cycle's
    track table, which alone knows what it already holds.
    """

    received: int
    stored: int
    too_old: int

    def __add__(self, other: IngestResult) -> IngestResult:
        return IngestResult(
            self.received + other.received,
            self.stored + other.stored,
            self.too_old + other.too_old,
        )


def parse_reports(
    party: str,
    records: Sequence[Any],
    now: float,
    settings: TacticalSettings,
    *,
    where: str = "",
) -> tuple[list[TrackReport], int]:
    """Wire records -> reports to store, and how many were too old to keep.

    Refuses the whole batch with ``InvalidInput("invalid_report")`` listing every problem as
    ``{"report": index, "field": name, "problem": sentence}``: a missing, unknown or non-numeric
    field, a value no aircraft can report (``tactical.tracks.LIMITS``), a time more than
    ``future_tolerance_s`` ahead of the service's clock.
    """
    problems: list[dict[str, Any]] = []
    oldest = now - settings.monitor.max_age_s
    latest = now + settings.future_tolerance_s
    reports: list[TrackReport] = []
    too_old = 0

    def problem(k: int, name: str, text: str) -> None:
        problems.append({"report": k, "field": name, "problem": text})

    for k, record in enumerate(records):
        before = len(problems)
        if not isinstance(record, Mapping):
            problem(k, "", "a report must be a JSON object")
            continue
        for name in sorted(set(record) - WIRE_FIELDS.keys()):
            problem(k, str(name), f"unknown field {name!r}")
        values: dict[str, Any] = {}
        for wire, (internal, required) in WIRE_FIELDS.items():
            value = record.get(wire)
            if value is None:
                if required:
                    problem(k, wire, f"missing field {wire!r}")
                continue
            values[internal] = _field(k, wire, internal, value, problem)
        if len(problems) > before:
            continue
        if values["time"] > latest:
            problem(
                k,
                "time",
                f"time {format_time(values['time'])} is {values['time'] - now:.1f} s after the "
                f"service's clock (at most {settings.future_tolerance_s:g} s allowed)",
            )
            continue
        if values["time"] < oldest:
            too_old += 1
            continue
        reports.append(
            TrackReport(
                party_id=party,
                aircraft_id=values["id"],
                time=values["time"],
                lat=values["lat"],
                lon=values["lon"],
                alt=values["alt"],
                gs=values["gs"],
                trk=values["trk"],
                vs=values["vs"],
                operation_id=values.get("operation"),
                received_at=now,
            )
        )
    if problems:
        shown = "; ".join(f"report {p['report']}: {p['problem']}" for p in problems[:_QUOTED]) + (
            "; ..." if len(problems) > _QUOTED else ""
        )
        raise InvalidInput(
            f"{where}{len(problems)} problem(s) in a batch of {len(records)} report(s), none "
            f"stored: {shown}",
            code="invalid_report",
            details={"problems": problems},
        )
    return reports, too_old


def _field(
    k: int, wire: str, internal: str, value: Any, problem: Callable[[int, str, str], None]
) -> Any:
    if internal in ("id", "operation"):
        if not isinstance(value, str) or not 0 < len(value) <= 100:
            problem(k, wire, f"{wire} must be a string of 1 to 100 characters")
        return value
    if internal == "time":
        try:
            return parse_time(value, wire)
        except InvalidInput as exc:
            problem(k, wire, exc.message)
            return math.nan
    if not is_number(value):
        problem(k, wire, f"{wire} must be a number, got {value!r}")
        return math.nan
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        number = math.inf
    if not math.isfinite(number):
        problem(k, wire, f"{wire} must be a finite number, got {value!r}")
    elif internal in LIMITS:
        low, high = LIMITS[internal]
        if not low <= number <= high:
            problem(k, wire, f"{wire}={number:g} outside [{low:g}, {high:g}]")
    return number


@dataclass(frozen=True, slots=True)
class Checked:
    """A batch that passed validation: what to store, and the operations it cites."""

    reports: list[TrackReport]
    received: int
    too_old: int
    cited: dict[str, list[int]]
    """Operation id -> indices of the reports (in the batch) flying under it."""
    where: str = ""

    @property
    def result(self) -> IngestResult:
        return IngestResult(self.received, len(self.reports), self.too_old)


@dataclass
class TrackIngest:
    """Any process: validate a batch and append it to the store, one transaction per batch.

    ``ingest`` does it all; the stream path uses the steps (``check``, ``authorize``,
    ``append``) to store many small batches in one transaction.
    """

    store: Store
    settings: TacticalSettings = field(default_factory=TacticalSettings)
    clock: Callable[[], float] = time.time

    def ingest(self, party: str, records: Sequence[Any], *, where: str = "") -> IngestResult:
        """Store a batch of the caller's reports, or refuse it whole (400/403 with the reports)."""
        checked = self.check(party, records, where=where)

        def write(tx: Tx) -> None:
            _check_operations(tx, party, checked)
            if checked.reports:
                tx.add_track_reports(checked.reports)

        if checked.reports or checked.cited:
            self.store.transact(write)
        return checked.result

    def check(self, party: str, records: Sequence[Any], *, where: str = "") -> Checked:
        """Validate without touching the store (see ``parse_reports``)."""
        limit = self.settings.max_reports_per_request
        if len(records) > limit:
            raise LimitExceeded(
                f"{where}at most {limit:,} reports per batch ({len(records):,} given).",
                code="too_many_reports",
            )
        reports, too_old = parse_reports(party, records, self.clock(), self.settings, where=where)
        cited: dict[str, list[int]] = {}
        for k, record in enumerate(records):
            if record.get("operation_id"):
                cited.setdefault(record["operation_id"], []).append(k)
        return Checked(reports, len(records), too_old, cited, where)

    def authorize(self, party: str, checked: Checked, known: set[str]) -> None:
        """Refuse operations that are unknown or not the caller's; ``known`` caches the good
        ones (an operation never changes owner and is never deleted)."""
        if set(checked.cited) <= known:
            return
        self.store.transact(lambda tx: _check_operations(tx, party, checked), write=False)
        known.update(checked.cited)

    def append(self, batches: Sequence[Checked]) -> None:
        """Store authorized batches in one transaction."""
        reports = [r for b in batches for r in b.reports]
        if reports:
            self.store.transact(lambda tx: tx.add_track_reports(reports))


def _check_operations(tx: Tx, party: str, checked: Checked) -> None:
    """Every operation id must name an operation of the caller."""
    where = checked.where
    for op_id, ks in sorted(checked.cited.items()):
        op = tx.get_operation(op_id)
        if op is None:
            raise InvalidInput(
                f"{where}report {ks[0]}: no operation {op_id}.",
                code="unknown_operation",
                details={"operation_id": op_id, "reports": ks},
            )
        if op.owner != party:
            raise Forbidden(
                f"{where}report {ks[0]}: operation {op_id} is not yours; report your aircraft "
                "under your own operations.",
                code="not_your_operation",
                details={"operation_id": op_id, "reports": ks},
            )


# The cycle owner ----------------------------------------------------------------------------------


class LeaseLost(Exception):
    """Another process took the tactical lease while this one was computing a cycle."""


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle of the owner did (for logs, tests and the replay)."""

    now: float
    reports: int
    result: MonitorResult
    events: int


@dataclass(frozen=True, slots=True)
class _Claim:
    fresh: bool
    reports: list[TrackReport]
    parties: dict[str, str]


@dataclass
class TacticalMonitor:
    """Runs the tactical cycle while it holds the store's lease; see the module docstring."""

    store: Store
    settings: TacticalSettings = field(default_factory=TacticalSettings)
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    monitor: Monitor | None = None
    cursor: int = 0
    told: dict[str, set[str]] = field(default_factory=dict)
    """Per open excursion (track key): the parties told of it, who will be told it ended."""

    @property
    def holding(self) -> bool:
        return self.monitor is not None

    def run_once(self) -> CycleReport | None:
        """One cycle if this process holds (or can take) the lease; ``None`` if another does."""
        now = self.clock()
        if not self.holding:
            # Most processes, most of the time: a read tells them someone else runs the cycle.
            lease = self.store.transact(lambda tx: tx.get_tactical_lease(), write=False)
            if lease is not None and lease.owner != self.owner and lease.until > now:
                return None
        claim = self.store.transact(lambda tx: self._claim(tx, now))
        if claim is None:
            self._drop()
            return None
        if claim.fresh or self.monitor is None:
            self._start(claim.parties)
        try:
            return self._cycle(now, claim)
        except LeaseLost:
            log.warning("tactical lease lost during a cycle; another process runs it now")
            self._drop()
            return None
        except BaseException:
            # Changes computed but not written would be lost: start over, re-raising what holds.
            self._drop()
            raise

    def release(self) -> None:
        """Give the lease up at once (a clean stop), so that another process takes over."""
        now = self.clock()

        def write(tx: Tx) -> None:
            lease = tx.get_tactical_lease()
            if lease is not None and lease.owner == self.owner:
                tx.put_tactical_lease(TacticalLease(self.owner, now, lease.since))

        self.store.transact(write)
        self._drop()

    def _drop(self) -> None:
        self.monitor = None
        self.cursor = 0
        self.told = {}

    def _start(self, parties: Mapping[str, str]) -> None:
        self.monitor = Monitor(self._monitor_settings(parties))
        self.cursor = 0
        self.told = {}

    def _monitor_settings(self, parties: Mapping[str, str]) -> MonitorSettings:
        """Per-pair zones keyed by party ids (the settings may name parties)."""
        base = self.settings.monitor
        if not self.settings.pairs:
            return base
        pairs = {
            frozenset((parties.get(a.lower(), a), parties.get(b.lower(), b))): zone
            for (a, b), zone in self.settings.pairs.items()
        }
        return MonitorSettings(base.detection, pairs, base.policy, base.conformance, base.max_age_s)

    def _claim(self, tx: Tx, now: float) -> _Claim | None:
        lease = tx.get_tactical_lease()
        mine = lease is not None and lease.owner == self.owner
        if lease is not None and not mine and lease.until > now:
            return None
        fresh = not mine or self.monitor is None
        since = lease.since if mine and lease is not None else now
        tx.put_tactical_lease(TacticalLease(self.owner, now + self.settings.lease_s, since))
        tx.prune_track_reports(now - self.settings.retention_s)
        cursor = 0 if fresh else self.cursor
        reports = tx.track_reports_after(cursor, self.settings.max_reports_per_cycle)
        parties: dict[str, str] = {}
        if fresh and self.settings.pairs:
            parties = {p.name.lower(): p.id for p in tx.list_parties()}
        return _Claim(fresh, reports, parties)

    def _cycle(self, now: float, claim: _Claim) -> CycleReport:
        monitor = self.monitor
        assert monitor is not None
        if claim.reports:
            monitor.ingest(_batch(claim.reports))
        wanted = sorted(monitor.operation_ids())

        def read(tx: Tx) -> dict[str, Sequence[Volume] | None]:
            ops = {op_id: tx.get_operation(op_id) for op_id in wanted}
            return {
                k: (op.volumes if op is not None and op.live else None) for k, op in ops.items()
            }

        volumes = self.store.transact(read, write=False) if wanted else {}
        result = monitor.step(now, volumes)
        threats = self._threats(result, now)
        events, entries = self._conflict_events(result)
        told = {k: set(v) for k, v in self.told.items()}
        more_events, more_entries = _excursion_events(result, threats, told)
        events += more_events
        entries += more_entries

        def write(tx: Tx) -> None:
            lease = tx.get_tactical_lease()
            if lease is None or lease.owner != self.owner:
                raise LeaseLost
            tx.add_events([NewEvent(party, kind, now, payload) for party, kind, payload in events])
            for action, subject, payload in entries:
                audit.append(
                    tx, now, audit.SERVICE, action, subject, payload, readers=_involved(payload)
                )
            tx.put_tactical_lease(
                TacticalLease(self.owner, now + self.settings.lease_s, lease.since)
            )

        if events or entries:  # else the claim already renewed the lease
            self.store.transact(write)
        if claim.reports:
            self.cursor = claim.reports[-1].seq
        self.told = told
        return CycleReport(now, len(claim.reports), result, len(events))

    # Threats -------------------------------------------------------------------------------
    def _threats(self, result: MonitorResult, now: float) -> dict[str, dict[str, list[str]]]:
        """For every raised excursion: party -> its live operations the aircraft threatens."""
        raised = [x for x in result.open_excursions.values() if x.raised]
        if not raised:
            return {}
        snap = result.snapshot
        row = {aircraft: k for k, aircraft in enumerate(snap.ids)}
        zone = self.settings.monitor.default_zone
        areas: dict[str, tuple[str, Volume]] = {}
        for x in raised:
            k = row.get(x.aircraft)
            if k is not None:
                areas[x.aircraft] = (_split(x.aircraft)[0], path_volume(snap, k, now, zone))

        def read(tx: Tx) -> dict[str, dict[str, list[str]]]:
            out: dict[str, dict[str, list[str]]] = {}
            for aircraft, (party, area) in areas.items():
                found = rules.find_conflicts(
                    [area], tx.operation_candidates([area], exclude_owner=party)
                )
                parties: dict[str, list[str]] = {}
                for f in found:
                    parties.setdefault(f.operation.owner, []).append(f.operation.id)
                out[aircraft] = parties
            return out

        return self.store.transact(read, write=False)

    def _conflict_events(
        self, result: MonitorResult
    ) -> tuple[list[tuple[str, str, dict[str, Any]]], list[tuple[str, str, dict[str, Any]]]]:
        events: list[tuple[str, str, dict[str, Any]]] = []
        entries: list[tuple[str, str, dict[str, Any]]] = []
        snap = result.snapshot
        row = {aircraft: k for k, aircraft in enumerate(snap.ids)}
        for change in result.changes:
            first, second = change.alert.pair
            sides = [(first, second), (second, first)]
            told: set[str] = set()
            alert_id = conflict_alert_id(change)
            for own, other in sides:
                party = _split(own)[0]
                if party in told:
                    continue  # same-party pairs (same_party=True): one event for the party
                told.add(party)
                payload = conflict_payload(change, alert_id, snap, row, own, other)
                events.append((party, CONFLICT, payload))
            entries.append((CONFLICT, alert_id, conflict_audit(change, alert_id)))
        return events, entries


def _excursion_events(
    result: MonitorResult,
    threats: Mapping[str, Mapping[str, list[str]]],
    told: dict[str, set[str]],
) -> tuple[list[tuple[str, str, dict[str, Any]]], list[tuple[str, str, dict[str, Any]]]]:
    """Events for excursion changes, and ``new`` for parties newly threatened by open ones.

    ``told`` (track key -> parties told) is updated in place.
    """
    events: list[tuple[str, str, dict[str, Any]]] = []
    entries: list[tuple[str, str, dict[str, Any]]] = []
    snap = result.snapshot
    row = {aircraft: k for k, aircraft in enumerate(snap.ids)}
    for change in result.excursions:
        x = change.excursion
        owner = _split(x.aircraft)[0]
        if change.kind == "new":
            recipients = {owner, *threats.get(x.aircraft, {})}
        else:
            recipients = told.pop(x.aircraft, {owner})
        threatened = threats.get(x.aircraft, {}) if change.kind == "new" else {}
        for party in sorted(recipients):
            payload = excursion_payload(
                change.kind, change.reason, x, snap, row, owner, party, threatened.get(party, [])
            )
            events.append((party, NONCONFORMANCE, payload))
        if change.kind == "new":
            told[x.aircraft] = recipients
        entries.append(
            (
                NONCONFORMANCE,
                excursion_alert_id(x),
                {
                    "change": change.kind,
                    "reason": change.reason,
                    "party_id": owner,
                    "aircraft_id": _split(x.aircraft)[1],
                    "operation_id": x.operation_id,
                    "since": x.since,
                    "told": sorted(recipients),
                },
            )
        )
    raised_now = {c.excursion.aircraft for c in result.excursions if c.kind == "new"}
    for aircraft, parties in sorted(threats.items()):
        held = result.open_excursions.get(aircraft)
        if held is None or aircraft in raised_now or aircraft not in told:
            continue
        owner = _split(aircraft)[0]
        for party in sorted(set(parties) - told[aircraft]):
            reason = f"{held.reason}; now threatens your operations"
            payload = excursion_payload(
                "new", reason, held, snap, row, owner, party, parties[party]
            )
            events.append((party, NONCONFORMANCE, payload))
            told[aircraft].add(party)
            entries.append(
                (
                    NONCONFORMANCE,
                    excursion_alert_id(held),
                    {
                        "change": "new",
                        "reason": reason,
                        "party_id": owner,
                        "aircraft_id": _split(aircraft)[1],
                        "operation_id": held.operation_id,
                        "since": held.since,
                        "told": [party],
                    },
                )
            )
    return events, entries


# Views ---------------------------------------------------------------------------------------------


def _split(key: str) -> tuple[str, str]:
    """A track key ``party/aircraft`` -> (party id, aircraft id)."""
    party, _, aircraft = key.partition("/")
    return party, aircraft


def track_key(party: str, aircraft: str) -> str:
    """Tracks are keyed per party, so two parties may use the same aircraft id without clashing."""
    return f"{party}/{aircraft}"


def _batch(reports: Sequence[TrackReport]) -> ReportBatch:
    def column(name: str) -> np.ndarray:
        return np.fromiter((getattr(r, name) for r in reports), np.float64, len(reports))

    return ReportBatch(
        ids=[track_key(r.party_id, r.aircraft_id) for r in reports],
        party=[r.party_id for r in reports],
        operation=[r.operation_id for r in reports],
        time=column("time"),
        lat=column("lat"),
        lon=column("lon"),
        alt=column("alt"),
        gs=column("gs"),
        trk=column("trk"),
        vs=column("vs"),
    )


def aircraft_view(
    key: str, snap: Snapshot, row: Mapping[str, int], *, with_operation: bool
) -> dict[str, Any]:
    """An aircraft as a party sees it: where it is now (dead-reckoned) and how it moves.

    ``with_operation`` only for the party's own aircraft: the other party's operation is not
    need-to-know for avoiding its aircraft.
    """
    party, aircraft = _split(key)
    view: dict[str, Any] = {"party_id": party, "aircraft_id": aircraft}
    k = row.get(key)
    if k is None:
        view["tracked"] = False
        return view
    view.update(
        tracked=True,
        reported_at=format_time(float(snap.time[k])),
        lat=round(float(snap.lat[k]), 7),
        lon=round(float(snap.lon[k]), 7),
        altitude_m=round(float(snap.alt[k]), 2),
        ground_speed_mps=round(float(snap.gs[k]), 2),
        track_deg=round(float(snap.trk[k]), 2),
        vertical_rate_mps=round(float(snap.vs[k]), 2),
    )
    if with_operation:
        view["operation_id"] = snap.operation[k]
    return view


def conflict_alert_id(change: AlertChange) -> str:
    """Stable over the alert's life (new, continuing, ended): pair and opening time."""
    a, b = change.alert.pair
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"conflict|{a}|{b}|{change.alert.opened!r}"))


def excursion_alert_id(x: Excursion) -> str:
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"excursion|{x.aircraft}|{x.operation_id}|{x.since!r}"))


def conflict_payload(
    change: AlertChange,
    alert_id: str,
    snap: Snapshot,
    row: Mapping[str, int],
    own: str,
    other: str,
) -> dict[str, Any]:
    """What one party needs to act on a conflict between its aircraft ``own`` and ``other``."""
    e = change.alert.encounter
    return {
        "alert_id": alert_id,
        "change": change.kind,
        "reason": change.reason,
        "severity": change.alert.severity.value,
        "opened_at": format_time(change.alert.opened),
        "loss_at": format_time(change.alert.loss_at),
        "aircraft": aircraft_view(own, snap, row, with_operation=True),
        "other": aircraft_view(other, snap, row, with_operation=False),
        "tcpa_s": _num(e.tcpa),
        "dcpa_m": _num(e.dcpa),
        "tin_s": _num(e.tin),
        "tout_s": _num(e.tout),
        "distance_m": _num(e.dist),
        "lost_now": e.severity.value == "lost",
    }


def _involved(payload: Mapping[str, Any]) -> list[str]:
    """The parties an alert's audit entry concerns: only they read its payload in an export."""
    if "pair" in payload:
        return [p["party_id"] for p in payload["pair"]]
    return [payload["party_id"], *payload.get("told", [])]


def conflict_audit(change: AlertChange, alert_id: str) -> dict[str, Any]:
    """The record: who, which aircraft, how bad; positions stay in the two parties' feeds."""
    e = change.alert.encounter
    return {
        "change": change.kind,
        "reason": change.reason,
        "severity": change.alert.severity.value,
        "pair": [
            dict(zip(("party_id", "aircraft_id"), _split(k), strict=True))
            for k in change.alert.pair
        ],
        "opened_at": change.alert.opened,
        "tcpa_s": _num(e.tcpa),
        "dcpa_m": _num(e.dcpa),
        "tin_s": _num(e.tin),
        "distance_m": _num(e.dist),
    }


def excursion_payload(
    kind: str,
    reason: str,
    x: Excursion,
    snap: Snapshot,
    row: Mapping[str, int],
    owner: str,
    party: str,
    threatened: Iterable[str],
) -> dict[str, Any]:
    """For the owner: its aircraft, operation and why. For a threatened party: the aircraft,
    the operation's reference id (its volumes are public) and which of its own operations."""
    payload: dict[str, Any] = {
        "alert_id": excursion_alert_id(x),
        "change": kind,
        "reason": reason,
        "outside": x.reason,
        "since": format_time(x.since),
        "operation_id": x.operation_id,
        "aircraft": aircraft_view(x.aircraft, snap, row, with_operation=party == owner),
    }
    if party != owner:
        payload["your_operations"] = sorted(threatened)
    return payload


def _num(value: float) -> float | None:
    return round(float(value), 3) if math.isfinite(value) else None


def path_volume(snap: Snapshot, k: int, now: float, zone: Zone) -> Volume:
    """A small 4D volume around aircraft ``k``'s straight path over the look-ahead.

    A circle centred half-way along the path, reaching its ends plus ``rpz``; the altitudes
    swept plus ``hpz``; the window ``[now, now + lookahead]``. Conservative, cheap, and answered
    by the strategic index like any other query.
    """
    horizon = max(zone.lookahead, 1.0)
    half = float(snap.gs[k]) * horizon / 2.0
    trk = math.radians(float(snap.trk[k]))
    lat, lon = float(snap.lat[k]), float(snap.lon[k])
    north, east = half * math.cos(trk), half * math.sin(trk)
    coslat = max(math.cos(math.radians(lat)), 1e-6)
    mid_lat = min(max(lat + math.degrees(north / EARTH_RADIUS_M), -90.0), 90.0)
    mid_lon = (lon + math.degrees(east / (EARTH_RADIUS_M * coslat)) + 180.0) % 360.0 - 180.0
    # Flat-earth dead reckoning is BlueSky's; pad by 1% for its error against WGS84.
    radius = (half + zone.rpz) * 1.01
    alt = float(snap.alt[k])
    end_alt = alt + float(snap.vs[k]) * horizon
    try:
        footprint = Circle.create(mid_lat, mid_lon, radius)
    except GeometryError:  # near a pole: fall back to a circle on the aircraft itself
        footprint = Circle.create(lat, lon, 2 * half + zone.rpz)
    return Volume.create(
        footprint,
        min(alt, end_alt) - zone.hpz,
        max(alt, end_alt) + zone.hpz,
        now,
        now + horizon,
    )
