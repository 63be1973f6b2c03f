"""Domain records: parties, operations, subscriptions, events. Plain immutable data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from deconfliction.geo import Volume


class OperationState(StrEnum):
    """ASTM F3548-21 operational intent states."""

    ACCEPTED = "Accepted"
    ACTIVATED = "Activated"
    NONCONFORMING = "Nonconforming"
    CONTINGENT = "Contingent"
    ENDED = "Ended"


@dataclass(frozen=True, slots=True)
class Party:
    id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class OperationDetails:
    """What only the owner sees (need to know)."""

    purpose: str | None = None
    aircraft: tuple[str, ...] = ()
    remarks: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"purpose": self.purpose, "aircraft": list(self.aircraft), "remarks": self.remarks}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> OperationDetails:
        data = data or {}
        return cls(data.get("purpose"), tuple(data.get("aircraft") or ()), data.get("remarks"))


@dataclass(frozen=True, slots=True)
class Operation:
    id: str
    owner: str
    state: OperationState
    priority: int
    volumes: tuple[Volume, ...]
    version: str
    revision: int
    created_at: float
    updated_at: float
    details: OperationDetails = field(default_factory=OperationDetails)

    @property
    def start(self) -> float:
        return min(v.start for v in self.volumes)

    @property
    def end(self) -> float:
        return max(v.end for v in self.volumes)

    @property
    def live(self) -> bool:
        return self.state is not OperationState.ENDED


@dataclass(frozen=True, slots=True)
class Subscription:
    """A party's standing interest in a 4D area."""

    id: str
    owner: str
    volumes: tuple[Volume, ...]
    version: str
    notification_index: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a party's feed."""

    id: int
    party_id: str
    kind: str
    time: float
    payload: dict[str, Any]


class NewEvent(NamedTuple):
    """An entry for a party's feed, not yet stored (its id is the store's to give)."""

    party_id: str
    kind: str
    time: float
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """What a write of an operation saw and presented: the evidence behind the key invariant."""

    operation_id: str
    version: str
    owner: str
    state: OperationState
    time: float
    key: tuple[str, ...]
    conflicts: tuple[tuple[str, str], ...]
    """(operation id, version) of every other party's operation it conflicted with."""


@dataclass(frozen=True, slots=True)
class PartySettings:
    """How a party wants to be reached, and who is told when it does not answer."""

    party_id: str
    webhook_url: str | None = None
    webhook_secret: str | None = None
    escalation_parties: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Message:
    """A hotline message from one party to others."""

    id: str
    sender: str
    recipients: tuple[str, ...]
    kind: str
    urgency: int
    text: str
    sent_at: float
    ack_deadline: float | None = None
    operation_id: str | None = None
    alert_id: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """One recipient's copy of a message: acknowledged or not, and how far it has escalated."""

    message_id: str
    party_id: str
    acked_at: float | None
    level: int
    next_at: float | None
    """When escalation next falls due (None: acknowledged, no deadline, or fully escalated)."""


@dataclass(frozen=True, slots=True)
class Liveness:
    party_id: str
    last_heartbeat: float | None
    availability: str
    changed_at: float


@dataclass(frozen=True, slots=True)
class Notice:
    """The record that a party was told of an operation, with its lead time."""

    operation_id: str
    owner: str
    party_id: str
    told_at: float
    active_at: float
    required_s: float
    late: bool

    @property
    def lead_s(self) -> float:
        return self.active_at - self.told_at


@dataclass(frozen=True, slots=True)
class WebhookCursor:
    """How far a party's webhook has been fed, and who holds the right to feed it now."""

    party_id: str
    delivered: int
    attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_until: float
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class TrackReport:
    """One reported aircraft state as ingested: SI units, times in UNIX seconds.

    ``seq`` is given by the store on append (0 before): reports are read back in ``seq`` order,
    which is commit order, so a reader's cursor never skips a report committed after it read.
    """

    party_id: str
    aircraft_id: str
    time: float
    lat: float
    lon: float
    alt: float
    gs: float
    trk: float
    vs: float
    operation_id: str | None
    received_at: float
    seq: int = 0


@dataclass(frozen=True, slots=True)
class TacticalLease:
    """Who runs the tactical cycle, until when (renewed every cycle), and since when."""

    owner: str
    until: float
    since: float
