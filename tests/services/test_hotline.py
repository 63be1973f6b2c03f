"""Hotline: messages, acknowledgement, escalation on an injected clock, liveness, late notices."""

from __future__ import annotations

import pytest

from deconfliction.core.errors import InvalidInput, NotFound
from deconfliction.core.hotline import HotlinePolicy, MessageKind, Urgency
from deconfliction.geo import Circle, Volume
from deconfliction.services.hotline import ALL, Hotline
from deconfliction.services.strategic import Filing, Strategic
from deconfliction.stores.base import Store

from ..conftest import Clock

POLICY = HotlinePolicy(
    repeat_every_s=60,
    max_escalations=3,
    unresponsive_after_s=60,
    down_after_s=300,
    default_lead_time_s=900,
)


@pytest.fixture
def world(store: Store, clock: Clock):
    strategic = Strategic(store, clock=clock, hotline_policy=POLICY)
    hotline = Hotline(store, POLICY, clock)
    parties = {name: strategic.add_party(name).id for name in ("blue", "red", "green", "duty")}
    return strategic, hotline, parties


def kinds(strategic: Strategic, party: str) -> list[str]:
    return [e.kind for e in strategic.events(party, limit=1000)]


def test_a_message_reaches_every_recipient_and_all_means_every_other_party(world) -> None:
    strategic, hotline, p = world
    message = hotline.send(p["blue"], [ALL], MessageKind.NOTICE, "Exercise tomorrow 0600Z")
    assert set(message.recipients) == {p["red"], p["green"], p["duty"]}
    assert kinds(strategic, p["red"]) == ["message"]
    assert kinds(strategic, p["blue"]) == []


def test_bad_messages_are_refused(world) -> None:
    _, hotline, p = world
    with pytest.raises(InvalidInput) as err:
        hotline.send(p["blue"], ["nobody"], MessageKind.TEXT, "hi")
    assert err.value.code == "unknown_recipient"
    with pytest.raises(InvalidInput):
        hotline.send(p["blue"], [p["blue"]], MessageKind.TEXT, "hi")
    with pytest.raises(NotFound):
        hotline.send(p["blue"], [p["red"]], MessageKind.REPLY, "hi", reply_to="nope")


def test_unacknowledged_messages_escalate_on_time_and_stop_when_acknowledged(
    world, clock: Clock
) -> None:
    strategic, hotline, p = world
    hotline.configure(p["red"], escalation_parties=[p["duty"]])
    message = hotline.send(
        p["blue"],
        [p["red"], p["green"]],
        MessageKind.QUERY,
        "Confirm your patrol ends at 1200Z",
        ack_deadline=clock() + 120,
    )
    clock.advance(60)
    hotline.acknowledge(p["green"], message.id)
    clock.advance(59)
    assert hotline.escalate_due() == 0  # one second before the deadline: nothing
    clock.advance(1)
    assert hotline.escalate_due() == 1  # red only; green acknowledged
    overdue = [e for e in strategic.events(p["red"]) if e.kind == "message.overdue"]
    assert overdue[0].payload["escalation_level"] == 1
    assert overdue[0].payload["urgency"] == Urgency.PRIORITY.name.lower()
    assert kinds(strategic, p["duty"]) == ["message.escalated"]  # copied once, at level 1
    assert hotline.escalate_due() == 0  # idempotent: a second run at the same time does nothing
    clock.advance(60)
    assert hotline.escalate_due() == 1
    assert kinds(strategic, p["duty"]) == ["message.escalated"]
    receipt = hotline.acknowledge(p["red"], message.id)
    assert receipt.level == 2 and receipt.acked_at == clock()
    clock.advance(600)
    assert hotline.escalate_due() == 0
    acks = [e for e in strategic.events(p["blue"]) if e.kind == "message.ack"]
    assert [a.payload["late"] for a in acks] == [False, True]
    _, receipts = hotline.get(p["blue"], message.id)
    assert {r.party_id: r.acked_at is not None for r in receipts} == {
        p["red"]: True,
        p["green"]: True,
    }


def test_escalation_stops_after_the_last_repeat(world, clock: Clock) -> None:
    _, hotline, p = world
    hotline.send(
        p["blue"], [p["red"]], MessageKind.WARNING, "Leave area K", ack_deadline=clock() + 30
    )
    done = 0
    for _ in range(10):
        clock.advance(60)
        done += hotline.escalate_due()
    assert done == POLICY.max_escalations


def test_liveness_follows_heartbeats_and_missed_acknowledgements(world, clock: Clock) -> None:
    strategic, hotline, p = world
    assert hotline.heartbeat(p["red"]).availability == "Normal"
    assert "availability" in kinds(strategic, p["blue"])  # others hear red is there
    clock.advance(61)
    changed = {x.party_id: x.availability for x in hotline.check_liveness()}
    assert changed[p["red"]] == "Unresponsive"
    clock.advance(300)
    changed = {x.party_id: x.availability for x in hotline.check_liveness()}
    assert changed[p["red"]] == "Down"
    assert hotline.heartbeat(p["red"]).availability == "Normal"
    hotline.send(p["blue"], [p["red"]], MessageKind.QUERY, "?", ack_deadline=clock() + 10)
    clock.advance(11)
    hotline.heartbeat(p["red"])
    assert {x.party_id: x.availability for x in hotline.liveness()}[p["red"]] == "Unresponsive"
    changes = [
        e.payload
        for e in strategic.events(p["blue"])
        if e.kind == "availability" and e.payload["party_id"] == p["red"]
    ]
    assert [c["availability"] for c in changes] == [
        "Normal",
        "Unresponsive",
        "Down",
        "Normal",
        "Unresponsive",
    ]


def volume(clock: Clock, start_in_s: float) -> Volume:
    return Volume.create(
        Circle.create(35.3, 36.7, 5_000),
        1_000,
        2_000,
        clock() + start_in_s,
        clock() + start_in_s + 3_600,
    )


def area(clock: Clock) -> Volume:
    """A subscription over the region for the next day."""
    return Volume.create(Circle.create(35.3, 36.7, 50_000), 0, 10_000, clock(), clock() + 86_400)


def test_a_notice_shorter_than_the_agreed_lead_time_is_flagged_not_refused(
    world, clock: Clock
) -> None:
    strategic, hotline, p = world
    strategic.subscribe(p["red"], [area(clock)])
    hotline.agree_lead_time("admin", p["blue"], p["red"], minutes=30)
    filed = strategic.file_operation(p["blue"], Filing([volume(clock, 20 * 60)]))
    assert filed.late_notice_to == [p["red"]]
    late = [e for e in strategic.events(p["red"]) if e.kind == "late_notice"]
    assert late[0].payload["lead_s"] == 1_200 and late[0].payload["required_s"] == 1_800
    assert late[0].payload["urgency"] == "flash"
    assert "late_notice" in kinds(strategic, p["blue"])
    on_time = strategic.file_operation(p["blue"], Filing([volume(clock, 40 * 60)]))
    assert on_time.late_notice_to == []


def test_activating_early_turns_a_timely_notice_late(world, clock: Clock) -> None:
    strategic, _, p = world
    strategic.subscribe(p["red"], [area(clock)])
    filed = strategic.file_operation(p["blue"], Filing([volume(clock, 60 * 60)]))
    assert filed.late_notice_to == []
    assert [e.kind for e in strategic.events(p["red"])] == ["operation"]
    clock.advance(5 * 60)
    op = filed.operation
    updated = strategic.update_operation(
        p["blue"], op.id, op.version, Filing(op.volumes, state=op.state.ACTIVATED)
    )
    assert updated.late_notice_to == [p["red"]]


def test_conflicting_with_a_silent_party_warns_both_sides(world, clock: Clock) -> None:
    strategic, hotline, p = world
    hotline.heartbeat(p["red"])
    red_op = strategic.file_operation(p["red"], Filing([volume(clock, 3_600)])).operation
    clock.advance(120)
    hotline.check_liveness()
    filed = strategic.file_operation(
        p["blue"], Filing([volume(clock, 3_600)], key=[red_op.version])
    )
    assert filed.unreachable == [p["red"]]
    hotline.heartbeat(p["blue"])
    clock.advance(120)
    hotline.check_liveness()
    strategic.file_operation(p["blue"], Filing([volume(clock, 3_600)], key=[red_op.version]))
    assert "counterpart_unreachable" in kinds(strategic, p["red"])
