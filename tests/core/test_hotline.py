"""Hotline rules: escalation steps, availability from heartbeats and acknowledgements, notice lead."""

from __future__ import annotations

import pytest

from deconfliction.core.errors import InvalidInput
from deconfliction.core.hotline import (
    Availability,
    HotlinePolicy,
    MessageKind,
    Urgency,
    availability,
    check_message,
    min_lead_time,
    next_escalation,
    notice_lead,
)

P = HotlinePolicy(repeat_every_s=60, max_escalations=3, unresponsive_after_s=60, down_after_s=300)


def test_nothing_escalates_before_the_deadline() -> None:
    assert next_escalation(Urgency.ROUTINE, deadline=100, level=0, now=99.9, policy=P) is None


def test_escalation_repeats_raises_urgency_and_copies_once_then_stops() -> None:
    first = next_escalation(Urgency.ROUTINE, deadline=100, level=0, now=100, policy=P)
    assert first is not None
    assert (first.level, first.urgency, first.copy_to_escalation_list, first.next_at) == (
        1,
        Urgency.PRIORITY,
        True,
        160,
    )
    assert next_escalation(Urgency.ROUTINE, 100, level=1, now=159, policy=P) is None
    second = next_escalation(Urgency.ROUTINE, 100, level=1, now=160, policy=P)
    assert second is not None
    assert (second.level, second.urgency, second.copy_to_escalation_list) == (
        2,
        Urgency.IMMEDIATE,
        False,
    )
    third = next_escalation(Urgency.IMMEDIATE, 100, level=2, now=500, policy=P)
    assert third is not None and third.urgency is Urgency.FLASH and third.next_at is None
    assert next_escalation(Urgency.ROUTINE, 100, level=3, now=10_000, policy=P) is None


@pytest.mark.parametrize(
    ("heartbeat", "overdue", "now", "expected"),
    [
        (None, 0, 1_000, Availability.UNKNOWN),
        (None, 1, 1_000, Availability.UNRESPONSIVE),
        (990, 0, 1_000, Availability.NORMAL),
        (990, 2, 1_000, Availability.UNRESPONSIVE),
        (940, 0, 1_000, Availability.UNRESPONSIVE),
        (700, 0, 1_000, Availability.DOWN),
    ],
)
def test_availability(heartbeat, overdue, now, expected) -> None:
    assert availability(heartbeat, overdue, now, P) is expected


def test_messages_are_checked() -> None:
    check_message(MessageKind.NOTICE, "hello", ["b"], 100.0, 0.0, P)
    for args, code in [
        ((MessageKind.TEXT, "hi", [], None), "no_recipients"),
        ((MessageKind.TEXT, "  ", ["b"], None), "invalid_text"),
        ((MessageKind.QUERY, "hi", ["b"], 1.0), "invalid_deadline"),
    ]:
        with pytest.raises(InvalidInput) as err:
            check_message(*args, now=0.0, policy=P)
        assert err.value.code == code


def test_lead_time_uses_the_pair_agreement_or_the_default() -> None:
    agreements = {frozenset(("a", "b")): 3_600.0}
    assert min_lead_time("b", "a", agreements, P) == 3_600.0
    assert min_lead_time("a", "c", agreements, P) == P.default_lead_time_s
    assert notice_lead(told_at=0, active_at=50, required_s=60).late
    assert not notice_lead(told_at=0, active_at=60, required_s=60).late


def test_urgency_parses_names() -> None:
    assert Urgency.parse("flash") is Urgency.FLASH
    with pytest.raises(InvalidInput):
        Urgency.parse("whenever")
