"""Hotline rules: messages that must be acknowledged, escalation, liveness and notice lead time.

Pure: the clock is an argument. The services decide when to ask; these functions decide what the
answer is, so every face and every background loop applies the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from deconfliction.core.errors import InvalidInput


class MessageKind(StrEnum):
    NOTICE = "notice"
    QUERY = "query"
    WARNING = "warning"
    REPLY = "reply"
    TEXT = "text"


class Urgency(IntEnum):
    ROUTINE = 0
    PRIORITY = 1
    IMMEDIATE = 2
    FLASH = 3

    @classmethod
    def parse(cls, value: str | int) -> Urgency:
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.upper()]
        except KeyError:
            raise InvalidInput(f"Unknown urgency {value!r}.", code="invalid_urgency") from None


class Availability(StrEnum):
    """F3548 keeps the same idea for USSs; Unknown is a party never heard from."""

    UNKNOWN = "Unknown"
    NORMAL = "Normal"
    UNRESPONSIVE = "Unresponsive"
    DOWN = "Down"


SILENT = (Availability.UNRESPONSIVE, Availability.DOWN)
"""The availabilities of a party that cannot be reached now."""


@dataclass(frozen=True, slots=True)
class HotlinePolicy:
    max_recipients: int = 1_000
    max_text_chars: int = 10_000
    min_deadline_s: float = 10.0
    max_deadline_s: float = 7 * 86_400.0
    repeat_every_s: float = 60.0
    """After a missed deadline, repeat (and raise urgency) this often until acknowledged."""
    max_escalations: int = 5
    unresponsive_after_s: float = 60.0
    """No heartbeat for this long, or an acknowledgement overdue: Unresponsive."""
    down_after_s: float = 300.0
    default_lead_time_s: float = 15 * 60.0
    """Minimum notice lead time between two parties unless they agreed otherwise."""


def check_message(
    kind: MessageKind,
    text: str,
    recipients: list[str],
    ack_deadline: float | None,
    now: float,
    policy: HotlinePolicy,
) -> None:
    if not recipients:
        raise InvalidInput("A message needs at least one recipient.", code="no_recipients")
    if len(recipients) > policy.max_recipients:
        raise InvalidInput(f"At most {policy.max_recipients} recipients.", code="limit_exceeded")
    if not text.strip() or len(text) > policy.max_text_chars:
        raise InvalidInput(
            f"A message needs text of 1 to {policy.max_text_chars} characters.", code="invalid_text"
        )
    if ack_deadline is not None:
        lead = ack_deadline - now
        if lead < policy.min_deadline_s or lead > policy.max_deadline_s:
            raise InvalidInput(
                f"An acknowledgement deadline must fall {policy.min_deadline_s:g} s to "
                f"{policy.max_deadline_s / 86_400:g} days ahead.",
                code="invalid_deadline",
            )


@dataclass(frozen=True, slots=True)
class Escalation:
    """One step of escalation for an unacknowledged message to one recipient."""

    level: int
    urgency: Urgency
    copy_to_escalation_list: bool
    next_at: float | None


def next_escalation(
    urgency: Urgency, deadline: float, level: int, now: float, policy: HotlinePolicy
) -> Escalation | None:
    """What to do now for a recipient at ``level`` (0: not escalated yet), or None if not due.

    Level 1 comes at the deadline: the message is repeated one urgency higher and copied to the
    recipient's escalation list. Each further ``repeat_every_s`` raises it again, up to FLASH and
    ``max_escalations`` repetitions.
    """
    if level >= policy.max_escalations:
        return None
    due = deadline + level * policy.repeat_every_s
    if now < due:
        return None
    new_level = level + 1
    raised = Urgency(min(Urgency.FLASH, urgency + new_level))
    more = new_level < policy.max_escalations
    return Escalation(
        new_level,
        raised,
        new_level == 1,
        deadline + new_level * policy.repeat_every_s if more else None,
    )


def availability(
    last_heartbeat: float | None, overdue_acks: int, now: float, policy: HotlinePolicy
) -> Availability:
    """A party's availability from its heartbeats and its acknowledgement behaviour."""
    if last_heartbeat is None:
        return Availability.UNKNOWN if overdue_acks == 0 else Availability.UNRESPONSIVE
    silent = now - last_heartbeat
    if silent >= policy.down_after_s:
        return Availability.DOWN
    if silent >= policy.unresponsive_after_s or overdue_acks > 0:
        return Availability.UNRESPONSIVE
    return Availability.NORMAL


def min_lead_time(
    owner: str, other: str, agreements: Mapping[frozenset[str], float], policy: HotlinePolicy
) -> float:
    """The notice lead time two parties agreed, or the deployment's default."""
    return agreements.get(frozenset((owner, other)), policy.default_lead_time_s)


@dataclass(frozen=True, slots=True)
class NoticeCheck:
    lead_s: float
    required_s: float

    @property
    def late(self) -> bool:
        return self.lead_s < self.required_s


def notice_lead(told_at: float, active_at: float, required_s: float) -> NoticeCheck:
    """Lead time of a notice: from when a party was told to when the operation becomes active.

    A late notice is not refused (freedom of action); it is flagged, pushed at FLASH urgency and
    counted.
    """
    return NoticeCheck(active_at - told_at, required_s)
