"""Alert lifecycle: from the conflicts of successive cycles to the few changes a party must see.

The detector runs every cycle (say once a second) and finds the same conflicts again and again.
A person wants to hear about a conflict when it starts, when it gets materially worse or better,
and when it is over — not forty times a minute. ``update`` is a pure function from the previous
book of open alerts and this cycle's conflicts to the new book and the list of changes:

- ``new``: a pair in conflict that had no open alert;
- ``continuing``: an open alert whose *severity* changed (predicted <-> separation lost), or
  whose predicted time of loss moved by more than ``AlertPolicy.retime_s`` since it was last
  announced; otherwise nothing is emitted for it;
- ``ended``: an open alert whose pair has not been in conflict for ``AlertPolicy.end_after_s``
  (0 by default: the first cycle without it). A short hold-off stops a pair that flickers at the
  edge of the protected zone from ending and restarting every other cycle.

Alerts are keyed by the unordered aircraft pair (``pair_key``); time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

from deconfliction.tactical.detector import Conflicts

PairKey = tuple[str, str]


class Severity(StrEnum):
    """How bad it is: a loss of separation predicted within the look-ahead, or already lost."""

    PREDICTED = "predicted"
    LOST = "lost"


def pair_key(a: str, b: str) -> PairKey:
    """The unordered pair as a sorted tuple, so ``(a, b)`` and ``(b, a)`` are the same alert."""
    if a == b:
        raise ValueError(f"an alert needs two different aircraft, got {a!r} twice")
    return (a, b) if a < b else (b, a)


@dataclass(frozen=True, slots=True)
class Encounter:
    """One conflicting pair in one cycle (times in seconds from that cycle, distances in metres)."""

    severity: Severity
    tin: float
    tout: float
    tcpa: float
    dcpa: float
    dist: float


@dataclass(frozen=True, slots=True)
class Alert:
    """An open alert: what was last announced and when the pair was last seen in conflict."""

    pair: PairKey
    opened: float
    severity: Severity
    loss_at: float  # absolute time the loss of separation starts (announced value)
    last_seen: float
    encounter: Encounter


@dataclass(frozen=True, slots=True)
class AlertChange:
    """A change to announce: ``kind`` and the alert as it stands after the change."""

    kind: Literal["new", "continuing", "ended"]
    alert: Alert
    at: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """What counts as material: ``retime_s`` of change in the predicted loss time; ``end_after_s``
    of absence before an alert ends."""

    retime_s: float = 30.0
    end_after_s: float = 0.0


def encounters(conflicts: Conflicts, ids: tuple[str, ...] | list[str]) -> dict[PairKey, Encounter]:
    """Key the detector's output by aircraft-id pair (one Python step per conflict, not per aircraft)."""
    found: dict[PairKey, Encounter] = {}
    columns = zip(
        conflicts.i.tolist(),
        conflicts.j.tolist(),
        conflicts.lost_now.tolist(),
        conflicts.tin.tolist(),
        conflicts.tout.tolist(),
        conflicts.tcpa.tolist(),
        conflicts.dcpa.tolist(),
        conflicts.dist.tolist(),
        strict=True,
    )
    for i, j, lost, tin, tout, tcpa, dcpa, dist in columns:
        severity = Severity.LOST if lost else Severity.PREDICTED
        found[pair_key(ids[i], ids[j])] = Encounter(severity, tin, tout, tcpa, dcpa, dist)
    return found


def update(
    book: Mapping[PairKey, Alert],
    current: Mapping[PairKey, Encounter],
    now: float,
    policy: AlertPolicy = AlertPolicy(),
) -> tuple[dict[PairKey, Alert], list[AlertChange]]:
    """The new book of open alerts and the changes to announce, in a stable order.

    ``book`` is not modified. Changes come out sorted by kind (ended, new, continuing) then pair,
    so two runs over the same inputs announce the same things in the same order.
    """
    new_book: dict[PairKey, Alert] = {}
    ended: list[AlertChange] = []
    opened: list[AlertChange] = []
    changed: list[AlertChange] = []

    for key in sorted(book.keys() - current.keys()):
        alert = book[key]
        if now - alert.last_seen >= policy.end_after_s:
            ended.append(AlertChange("ended", alert, now, "no longer in conflict"))
        else:
            new_book[key] = alert

    for key in sorted(current):
        encounter = current[key]
        loss_at = now + max(encounter.tin, 0.0)
        previous = book.get(key)
        if previous is None:
            alert = Alert(key, now, encounter.severity, loss_at, now, encounter)
            opened.append(AlertChange("new", alert, now, encounter.severity.value))
            new_book[key] = alert
            continue
        reason = ""
        if encounter.severity != previous.severity:
            reason = f"{previous.severity.value} -> {encounter.severity.value}"
        elif (
            encounter.severity is Severity.PREDICTED
            and abs(loss_at - previous.loss_at) > policy.retime_s
        ):
            reason = f"loss of separation now in {loss_at - now:.0f} s, announced for {previous.loss_at - now:.0f} s"
        if reason:
            alert = replace(
                previous,
                severity=encounter.severity,
                loss_at=loss_at,
                last_seen=now,
                encounter=encounter,
            )
            changed.append(AlertChange("continuing", alert, now, reason))
        else:
            alert = replace(previous, last_seen=now, encounter=encounter)
        new_book[key] = alert
    return new_book, ended + opened + changed
