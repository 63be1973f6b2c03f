"""Strategic deconfliction as F3548 describes it: filing, proof of awareness, priority, states,
versions, limits, need to know, subscriptions and the events every change leaves behind."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from deconfliction.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidTransition,
    LimitExceeded,
    MissingKey,
    NotFound,
    PriorityConflict,
    VersionMismatch,
)
from deconfliction.core.model import Operation, OperationDetails, OperationState
from deconfliction.core.policy import Limits, Policy
from deconfliction.geo import Circle, Polygon, Volume
from deconfliction.services.strategic import Filing, Strategic, conflict_details
from deconfliction.services.views import operation_view
from deconfliction.stores.base import Store
from tests.conftest import NO_LEAD_TIME

S = OperationState
NOW = 1_800_000_000.0
"""The conftest clock's 'now'."""
LAT, LON = 46.0, 7.0
M_PER_DEG = 111_195.0


def vol(
    east_m: float = 0.0,
    north_m: float = 0.0,
    radius_m: float = 500.0,
    lo: float = 0.0,
    hi: float = 120.0,
    start: float = NOW + 600.0,
    end: float = NOW + 4_200.0,
) -> Volume:
    """A circle ``east_m``/``north_m`` from the test site; the defaults all overlap each other."""
    lat = LAT + north_m / M_PER_DEG
    lon = LON + east_m / (M_PER_DEG * math.cos(math.radians(LAT)))
    return Volume.create(Circle.create(lat, lon, radius_m), lo, hi, start, end)


FAR = 50_000.0


@dataclass
class World:
    svc: Strategic
    store: Store
    a: str
    b: str
    c: str

    def file(self, party: str, *volumes: Volume, **kw) -> Operation:
        return self.svc.file_operation(party, Filing(list(volumes) or [vol()], **kw)).operation

    def file_aware(self, party: str, *volumes: Volume, **kw) -> Operation:
        """File with every conflicting version in the key, as a well-behaved party does."""
        seen = self.svc.conflicts_for(party, list(volumes) or [vol()])
        return self.file(party, *volumes, key=[f.operation.version for f in seen], **kw)

    def events(self, party: str, kind: str | None = None) -> list:
        return [e for e in self.svc.events(party, limit=1000) if kind in (None, e.kind)]

    def records(self) -> list:
        return self.store.transact(lambda tx: tx.write_records(), write=False)


@pytest.fixture
def world(strategic: Strategic, store: Store) -> World:
    assert strategic.clock() == NOW
    a, b, c = (strategic.add_party(name).id for name in ("Alpha", "Bravo", "Charlie"))
    return World(strategic, store, a, b, c)


def missing_of(exc: pytest.ExceptionInfo[MissingKey]) -> set[tuple[str, str, str, tuple[int, ...]]]:
    return {
        (f.operation.id, f.operation.owner, f.operation.version, f.volumes)
        for f in exc.value.details["missing"]
    }


# Filing ----------------------------------------------------------------------------------------


def test_a_filed_operation_is_accepted_at_revision_one_with_a_fresh_version(world: World) -> None:
    filed = world.svc.file_operation(world.a, Filing([vol()], priority=2))

    op = filed.operation
    assert (op.owner, op.state, op.priority, op.revision) == (world.a, S.ACCEPTED, 2, 1)
    assert op.version and op.created_at == op.updated_at == NOW
    assert filed.conflicts == []
    assert world.svc.get_operation(op.id).version == op.version
    assert [(r.operation_id, r.version, r.key) for r in world.records()] == [
        (op.id, op.version, ())
    ]


def test_an_operation_may_be_filed_activated_and_under_a_chosen_id(world: World) -> None:
    op = world.file(world.a, state=S.ACTIVATED)
    assert op.state is S.ACTIVATED
    chosen = world.svc.file_operation(world.a, Filing([vol(FAR)]), operation_id="op-42")
    assert chosen.operation.id == "op-42"


@pytest.mark.parametrize("state", [S.NONCONFORMING, S.CONTINGENT, S.ENDED])
def test_a_new_operation_must_start_accepted_or_activated(world: World, state: S) -> None:
    with pytest.raises(InvalidTransition) as exc:
        world.file(world.a, state=state)
    assert exc.value.code == "invalid_transition"
    assert world.svc.list_operations(world.a, include_ended=True) == []


def test_filing_under_an_id_already_in_use_is_refused(world: World) -> None:
    world.svc.file_operation(world.a, Filing([vol()]), operation_id="op-1")
    with pytest.raises(VersionMismatch) as exc:
        world.svc.file_operation(world.b, Filing([vol(FAR)]), operation_id="op-1")
    assert exc.value.code == "already_exists"


def test_every_write_gets_a_new_version_and_the_next_revision(world: World) -> None:
    op = world.file(world.a)
    updated = world.svc.update_operation(world.a, op.id, op.version, Filing([vol(10.0)]))
    ended = world.svc.end_operation(world.a, op.id, updated.operation.version)

    versions = [op.version, updated.operation.version, ended.version]
    assert len(set(versions)) == 3
    assert [updated.operation.revision, ended.revision] == [2, 3]


# Proof of awareness ----------------------------------------------------------------------------


def test_operations_of_the_same_party_never_conflict(world: World) -> None:
    first = world.file(world.a)
    second = world.svc.file_operation(world.a, Filing([vol()]))  # no key needed
    assert second.conflicts == []
    assert world.svc.conflicts_for(world.a, [vol()]) == []
    assert {o.id for o in world.svc.query_operations([vol()])} == {first.id, second.operation.id}


def test_a_conflicting_operation_of_another_party_needs_its_version_in_the_key(
    world: World,
) -> None:
    two_of_three = world.file(world.a, vol(200.0), vol(FAR), vol(-200.0))
    world.file(world.a, vol(-FAR))  # Alpha's, elsewhere
    charlies = world.file_aware(world.c, vol(north_m=300.0))
    world.file_aware(world.b, vol())  # Bravo's own

    with pytest.raises(MissingKey) as exc:
        world.file(world.b, vol())

    assert exc.value.code == "missing_key"
    assert missing_of(exc) == {
        (two_of_three.id, world.a, two_of_three.version, (0, 2)),
        (charlies.id, world.c, charlies.version, (0,)),
    }


def test_only_the_versions_missing_from_the_key_are_listed(world: World) -> None:
    alphas = world.file(world.a)
    charlies = world.file_aware(world.c)
    with pytest.raises(MissingKey) as exc:
        world.file(world.b, key=[alphas.version])
    assert missing_of(exc) == {(charlies.id, world.c, charlies.version, (0,))}


def test_a_stale_version_in_the_key_counts_as_missing(world: World) -> None:
    seen = world.file(world.a)
    moved = world.svc.update_operation(world.a, seen.id, seen.version, Filing([vol(100.0)]))

    with pytest.raises(MissingKey) as exc:
        world.file(world.b, key=[seen.version])
    assert missing_of(exc) == {(seen.id, world.a, moved.operation.version, (0,))}


def test_retrying_with_the_versions_seen_succeeds_and_is_recorded(world: World) -> None:
    alphas = world.file(world.a, vol(), vol(FAR))
    charlies = world.file_aware(world.c)

    seen = world.svc.conflicts_for(world.b, [vol()])
    assert {(f.operation.id, f.volumes) for f in seen} == {(alphas.id, (0,)), (charlies.id, (0,))}
    key = [f.operation.version for f in seen]
    filed = world.svc.file_operation(world.b, Filing([vol()], key=key))

    assert {f.operation.id for f in filed.conflicts} == {alphas.id, charlies.id}
    record = world.records()[-1]
    assert (record.operation_id, record.version) == (filed.operation.id, filed.operation.version)
    assert set(record.key) == set(key)
    assert set(record.conflicts) == {(alphas.id, alphas.version), (charlies.id, charlies.version)}


def test_extra_versions_in_the_key_do_no_harm(world: World) -> None:
    alphas = world.file(world.a)
    filed = world.svc.file_operation(
        world.b, Filing([vol()], key=[alphas.version, "not-a-version", alphas.version])
    )
    assert [f.operation.id for f in filed.conflicts] == [alphas.id]


@pytest.mark.parametrize(
    "apart",
    [
        pytest.param(vol(FAR), id="elsewhere"),
        pytest.param(vol(lo=120.0, hi=300.0), id="above, touching"),
        pytest.param(vol(lo=500.0, hi=900.0), id="far above"),
        pytest.param(vol(start=NOW + 4_200.0, end=NOW + 7_200.0), id="later, touching"),
        pytest.param(vol(start=NOW + 60.0, end=NOW + 600.0), id="earlier, touching"),
        pytest.param(vol(east_m=1_000.0), id="side by side, touching"),
    ],
)
def test_no_key_is_needed_where_volumes_are_apart_in_any_dimension(
    world: World, apart: Volume
) -> None:
    world.file(world.a)
    assert world.svc.file_operation(world.b, Filing([apart])).conflicts == []


def test_conflict_details_name_the_operation_its_owner_version_and_conflicting_volumes(
    world: World,
) -> None:
    alphas = world.file(world.a, vol(FAR), vol())
    with pytest.raises(MissingKey) as exc:
        world.file(world.b)

    (detail,) = conflict_details(exc.value.details["missing"])
    assert {k: detail[k] for k in ("id", "owner", "version", "state", "priority")} == {
        "id": alphas.id,
        "owner": world.a,
        "version": alphas.version,
        "state": "Accepted",
        "priority": 0,
    }
    assert len(detail["conflicting_volumes"]) == 1
    assert detail["conflicting_volumes"][0]["footprint"]["circle"]["center"]["lon"] == LON
    assert "details" not in detail


# Priority --------------------------------------------------------------------------------------


def test_an_operation_may_not_come_into_conflict_with_a_higher_priority_one(world: World) -> None:
    higher = world.file(world.a, priority=10)
    with pytest.raises(PriorityConflict) as exc:
        world.file(world.b, priority=5, key=[higher.version])
    assert exc.value.code == "priority_conflict"
    assert [f.operation.id for f in exc.value.details["conflicts"]] == [higher.id]
    assert world.svc.list_operations(world.b) == []


def test_a_higher_priority_operation_may_conflict_with_a_lower_one_once_aware(
    world: World,
) -> None:
    lower = world.file(world.a, priority=0)
    with pytest.raises(MissingKey):
        world.file(world.b, priority=10)
    filed = world.svc.file_operation(world.b, Filing([vol()], priority=10, key=[lower.version]))
    assert [f.operation.id for f in filed.conflicts] == [lower.id]


def test_equal_priorities_may_conflict_once_aware_by_default(world: World) -> None:
    theirs = world.file(world.a, priority=3)
    filed = world.svc.file_operation(world.b, Filing([vol()], priority=3, key=[theirs.version]))
    assert [f.operation.id for f in filed.conflicts] == [theirs.id]


def test_a_deployment_may_refuse_conflicts_between_equal_priorities(store: Store, clock) -> None:
    svc = Strategic(store, Policy(allow_equal_priority_conflicts=False), clock)
    a, b = svc.add_party("Alpha").id, svc.add_party("Bravo").id
    theirs = svc.file_operation(a, Filing([vol()], priority=3)).operation

    with pytest.raises(Conflict) as exc:
        svc.file_operation(b, Filing([vol()], priority=3, key=[theirs.version]))
    assert exc.value.code == "conflict_not_allowed"
    with pytest.raises(PriorityConflict):
        svc.file_operation(b, Filing([vol()], priority=2, key=[theirs.version]))
    assert svc.file_operation(b, Filing([vol()], priority=4, key=[theirs.version])).conflicts


# Off-nominal states ----------------------------------------------------------------------------


def test_off_nominal_states_record_reality_without_key_or_priority(world: World) -> None:
    important = world.file(world.a, priority=100)
    mine = world.file(world.b, vol(FAR), state=S.ACTIVATED)

    astray = world.svc.update_operation(
        world.b, mine.id, mine.version, Filing([vol()], state=S.NONCONFORMING)
    )
    assert [f.operation.id for f in astray.conflicts] == [important.id]
    worse = world.svc.update_operation(
        world.b, mine.id, astray.operation.version, Filing([vol()], state=S.CONTINGENT)
    )
    assert worse.operation.state is S.CONTINGENT
    assert [f.operation.id for f in worse.conflicts] == [important.id]


def test_returning_to_activated_needs_the_key_again(world: World) -> None:
    theirs = world.file(world.a)
    mine = world.file(world.b, vol(FAR), state=S.ACTIVATED)
    astray = world.svc.update_operation(
        world.b, mine.id, mine.version, Filing([vol()], state=S.NONCONFORMING)
    )

    with pytest.raises(MissingKey):
        world.svc.update_operation(
            world.b, mine.id, astray.operation.version, Filing([vol()], state=S.ACTIVATED)
        )
    back = world.svc.update_operation(
        world.b,
        mine.id,
        astray.operation.version,
        Filing([vol()], state=S.ACTIVATED, key=[theirs.version]),
    )
    assert back.operation.state is S.ACTIVATED


# State transitions -----------------------------------------------------------------------------

ALLOWED = {
    S.ACCEPTED: {S.ACCEPTED, S.ACTIVATED, S.NONCONFORMING, S.ENDED},
    S.ACTIVATED: {S.ACTIVATED, S.NONCONFORMING, S.CONTINGENT, S.ENDED},
    S.NONCONFORMING: {S.ACTIVATED, S.NONCONFORMING, S.CONTINGENT, S.ENDED},
    S.CONTINGENT: {S.CONTINGENT, S.ENDED},
    S.ENDED: set(),
}
"""F3548-21 operational intent states: from each state (rows), the states a write may go to."""

PATH_TO = {
    S.ACCEPTED: [],
    S.ACTIVATED: [S.ACTIVATED],
    S.NONCONFORMING: [S.NONCONFORMING],
    S.CONTINGENT: [S.ACTIVATED, S.CONTINGENT],
    S.ENDED: [S.ENDED],
}


@pytest.mark.parametrize("new", list(S), ids=str)
@pytest.mark.parametrize("old", list(S), ids=str)
def test_an_operation_changes_state_only_as_f3548_allows(world: World, old: S, new: S) -> None:
    op = world.file(world.a)
    for state in PATH_TO[old]:
        if state is S.ENDED:
            op = world.svc.end_operation(world.a, op.id, op.version)
        else:
            filing = Filing([vol()], state=state)
            op = world.svc.update_operation(world.a, op.id, op.version, filing).operation
    assert op.state is old

    def change() -> Operation:
        if new is S.ENDED:
            return world.svc.end_operation(world.a, op.id, op.version)
        filing = Filing([vol()], state=new)
        return world.svc.update_operation(world.a, op.id, op.version, filing).operation

    if new in ALLOWED[old]:
        assert change().state is new
    else:
        with pytest.raises(InvalidTransition) as exc:
            change()
        assert exc.value.code == "invalid_transition"
        assert world.svc.get_operation(op.id).version == op.version


# Versions and ownership ------------------------------------------------------------------------


def test_a_stale_version_cannot_update_or_end(world: World) -> None:
    op = world.file(world.a)
    current = world.svc.update_operation(world.a, op.id, op.version, Filing([vol(10.0)])).operation

    with pytest.raises(VersionMismatch) as exc:
        world.svc.update_operation(world.a, op.id, op.version, Filing([vol(20.0)]))
    assert exc.value.code == "version_mismatch"
    assert exc.value.details == {"current_version": current.version}
    with pytest.raises(VersionMismatch):
        world.svc.end_operation(world.a, op.id, op.version)
    assert world.svc.get_operation(op.id).version == current.version


def test_only_the_owner_may_change_an_operation(world: World) -> None:
    op = world.file(world.a)
    with pytest.raises(Forbidden) as exc:
        world.svc.update_operation(world.b, op.id, op.version, Filing([vol()], key=[op.version]))
    assert exc.value.code == "forbidden"
    with pytest.raises(Forbidden):
        world.svc.end_operation(world.b, op.id, op.version)
    assert world.svc.get_operation(op.id).version == op.version


def test_an_unknown_operation_is_not_found(world: World) -> None:
    with pytest.raises(NotFound) as exc:
        world.svc.update_operation(world.a, "nope", "v", Filing([vol()]))
    assert exc.value.code == "not_found"
    with pytest.raises(NotFound):
        world.svc.end_operation(world.a, "nope", "v")
    with pytest.raises(NotFound):
        world.svc.get_operation("nope")


def test_an_ended_operation_is_kept_but_no_longer_matched_or_changed(world: World) -> None:
    op = world.file(world.a)
    ended = world.svc.end_operation(world.a, op.id, op.version)

    assert world.svc.get_operation(op.id).state is S.ENDED
    assert [o.id for o in world.svc.list_operations(world.a, include_ended=True)] == [op.id]
    assert world.svc.list_operations(world.a) == []
    assert world.svc.conflicts_for(world.b, [vol()]) == []
    assert world.svc.query_operations([vol()]) == []
    assert world.svc.file_operation(world.b, Filing([vol()])).conflicts == []  # no key needed
    with pytest.raises(InvalidTransition):
        world.svc.update_operation(world.a, op.id, ended.version, Filing([vol()]))
    with pytest.raises(InvalidTransition):
        world.svc.end_operation(world.a, op.id, ended.version)


# Limits ----------------------------------------------------------------------------------------

SMALL = Limits(max_volumes_per_operation=3, max_vertices_per_polygon=5, max_footprint_area_m2=1e7)


def pentagon_plus_one() -> Volume:
    ring = [(LAT + 0.01 * math.sin(k), LON + 0.01 * math.cos(k)) for k in range(6)]
    return Volume.create(Polygon.create(ring), 0, 120, NOW + 600, NOW + 4_200)


LIMIT_CASES = [
    pytest.param(lambda: [], "no_volumes", "at least one volume", id="no volumes"),
    pytest.param(
        lambda: [vol(i * FAR) for i in range(4)],
        "limit_exceeded",
        "volumes per operation",
        id="too many volumes",
    ),
    pytest.param(
        lambda: [pentagon_plus_one()],
        "limit_exceeded",
        "vertices per polygon",
        id="too many vertices",
    ),
    pytest.param(lambda: [vol(radius_m=2_000.0)], "limit_exceeded", "km²", id="too large an area"),
    pytest.param(
        lambda: [vol(start=NOW + 57 * 86_400, end=NOW + 57 * 86_400 + 60)],
        "beyond_plan_horizon",
        "days ahead",
        id="beyond the horizon",
    ),
    pytest.param(
        lambda: [vol(start=NOW, end=NOW + 31 * 86_400)],
        "limit_exceeded",
        "lasts longer",
        id="too long",
    ),
    pytest.param(
        lambda: [vol(lo=-600.0, hi=100.0)], "altitude_out_of_range", "altitudes", id="too low"
    ),
    pytest.param(
        lambda: [vol(lo=0.0, hi=30_001.0)], "altitude_out_of_range", "altitudes", id="too high"
    ),
    pytest.param(lambda: [vol(start=NOW - 600, end=NOW)], "ends_in_past", "past", id="ends now"),
    pytest.param(lambda: [vol(start=NOW - 600, end=NOW - 1)], "ends_in_past", "past", id="ended"),
]
"""(volumes, code, words of the message): three limits share the generic code, so the message
tells which one refused."""


@pytest.mark.parametrize(("volumes", "code", "words"), LIMIT_CASES)
def test_filings_beyond_the_limits_are_refused_with_a_code(
    store: Store, clock, volumes, code: str, words: str
) -> None:
    svc = Strategic(store, Policy(limits=SMALL), clock)
    a = svc.add_party("Alpha").id
    with pytest.raises(LimitExceeded) as exc:
        svc.file_operation(a, Filing(volumes()))
    assert (exc.value.code, words in exc.value.message) == (code, True)

    op = svc.file_operation(a, Filing([vol()])).operation
    with pytest.raises(LimitExceeded) as exc:
        svc.update_operation(a, op.id, op.version, Filing(volumes()))
    assert exc.value.code == code
    with pytest.raises(LimitExceeded) as exc:
        svc.subscribe(a, volumes())
    assert exc.value.code == code
    assert svc.get_operation(op.id).version == op.version
    assert svc.list_subscriptions(a) == []


def test_the_limits_themselves_are_allowed(store: Store, clock) -> None:
    svc = Strategic(store, Policy(limits=SMALL), clock)
    a = svc.add_party("Alpha").id
    at_the_limits = [
        vol(lo=-500.0, hi=30_000.0, start=NOW - 600.0, end=NOW + 1.0),
        vol(FAR, start=NOW + 56 * 86_400 - 30 * 86_400, end=NOW + 56 * 86_400),
        vol(2 * FAR, radius_m=1_784.0),  # just under 10 km²
    ]
    assert svc.file_operation(a, Filing(at_the_limits)).operation.revision == 1


# Need to know ----------------------------------------------------------------------------------


def test_only_the_owner_sees_an_operations_details(world: World) -> None:
    private = OperationDetails("ISR", ("Reaper 07",), "do not share")
    op = world.file(world.a, details=private)

    public = operation_view(op, owner_view=False)
    assert "details" not in public and "created_at" not in public
    assert {"id", "owner", "state", "priority", "version", "volumes"} <= public.keys()
    assert operation_view(op, owner_view=True)["details"] == private.to_json()


def test_events_about_an_operation_carry_no_private_details(world: World) -> None:
    world.svc.subscribe(world.b, [vol()])
    theirs = world.file(world.b, vol(200.0))
    world.file(world.a, key=[theirs.version], details=OperationDetails("ISR", ("Reaper 07",)))

    events = world.events(world.b)
    assert {e.kind for e in events} == {"operation", "conflict"}
    for event in events:
        assert "details" not in event.payload["operation"]
        assert "Reaper" not in str(event.payload)


# Subscriptions ---------------------------------------------------------------------------------


def test_a_change_in_a_subscribed_area_notifies_the_subscriber(world: World) -> None:
    sub = world.svc.subscribe(world.b, [vol(radius_m=5_000.0)])
    assert sub.notification_index == 0

    op = world.file(world.a)

    (event,) = world.events(world.b)
    assert event.kind == "operation" and event.time == NOW
    assert event.payload["subscription_id"] == sub.id
    assert event.payload["notification_index"] == 1
    assert event.payload["operation"]["id"] == op.id
    assert event.payload["operation"]["version"] == op.version
    assert world.svc.get_subscription(world.b, sub.id).notification_index == 1

    updated = world.svc.update_operation(world.a, op.id, op.version, Filing([vol(100.0)]))
    world.svc.end_operation(world.a, op.id, updated.operation.version)
    indexes = [e.payload["notification_index"] for e in world.events(world.b)]
    assert indexes == [1, 2, 3]
    assert world.svc.get_subscription(world.b, sub.id).notification_index == 3


def test_a_subscriber_is_not_notified_of_its_own_changes(world: World) -> None:
    sub = world.svc.subscribe(world.a, [vol()])
    world.file(world.a)
    assert world.events(world.a) == []
    assert world.svc.get_subscription(world.a, sub.id).notification_index == 0


@pytest.mark.parametrize(
    "elsewhere",
    [
        pytest.param(vol(FAR), id="elsewhere"),
        pytest.param(vol(start=NOW + 4_200.0, end=NOW + 7_200.0), id="after it"),
        pytest.param(vol(lo=120.0, hi=500.0), id="above it"),
        pytest.param(vol(east_m=1_000.0), id="touching it"),
    ],
)
def test_a_change_outside_the_subscribed_area_notifies_nobody(
    world: World, elsewhere: Volume
) -> None:
    sub = world.svc.subscribe(world.b, [vol()])
    world.file(world.a, elsewhere)
    assert world.events(world.b) == []
    assert world.svc.get_subscription(world.b, sub.id).notification_index == 0


def test_moving_an_operation_out_of_a_subscribed_area_still_notifies(world: World) -> None:
    op = world.file(world.a)
    sub = world.svc.subscribe(world.b, [vol()])
    world.svc.update_operation(world.a, op.id, op.version, Filing([vol(FAR)]))
    assert [e.payload["subscription_id"] for e in world.events(world.b)] == [sub.id]


def test_every_subscription_touched_is_notified_once_per_change(world: World) -> None:
    first = world.svc.subscribe(world.b, [vol()])
    second = world.svc.subscribe(world.b, [vol(100.0), vol(-100.0)])
    charlies = world.svc.subscribe(world.c, [vol()])
    world.file(world.a)

    assert sorted(e.payload["subscription_id"] for e in world.events(world.b)) == sorted(
        [first.id, second.id]
    )
    assert [e.payload["subscription_id"] for e in world.events(world.c)] == [charlies.id]


def test_a_subscription_is_only_seen_and_removed_by_its_owner_with_its_version(
    world: World,
) -> None:
    sub = world.svc.subscribe(world.b, [vol()])
    assert [s.id for s in world.svc.list_subscriptions(world.b)] == [sub.id]
    assert world.svc.list_subscriptions(world.a) == []
    with pytest.raises(NotFound):
        world.svc.get_subscription(world.a, sub.id)
    with pytest.raises(NotFound):
        world.svc.unsubscribe(world.a, sub.id, sub.version)
    with pytest.raises(VersionMismatch):
        world.svc.unsubscribe(world.b, sub.id, "stale")

    world.svc.unsubscribe(world.b, sub.id, sub.version)
    world.file(world.a)
    assert world.events(world.b) == []
    with pytest.raises(NotFound):
        world.svc.get_subscription(world.b, sub.id)


# Events for affected parties -------------------------------------------------------------------


def test_owners_of_conflicting_operations_are_told_of_the_conflict(world: World) -> None:
    alphas = world.file(world.a, vol(), vol(200.0))
    world.file(world.a, vol(FAR))
    charlies = [world.file_aware(world.c), world.file_aware(world.c, vol(-100.0))]
    bravos = world.file_aware(world.b)

    to_alpha = world.events(world.a, "conflict")[-1]
    assert to_alpha.payload["operation"]["id"] == bravos.id
    assert to_alpha.payload["operation"]["version"] == bravos.version
    assert to_alpha.payload["conflicts_with"] == [alphas.id]
    to_charlie = world.events(world.c, "conflict")[-1]
    assert to_charlie.payload["operation"]["id"] == bravos.id
    assert sorted(to_charlie.payload["conflicts_with"]) == sorted(op.id for op in charlies)
    assert world.events(world.b) == []  # the filer learns from the answer, not from its feed


def test_moving_out_of_a_conflict_tells_the_party_it_conflicted_with(world: World) -> None:
    theirs = world.file(world.a)
    mine = world.file(world.b, key=[theirs.version])
    world.svc.update_operation(world.b, mine.id, mine.version, Filing([vol(FAR)]))

    first, second = world.events(world.a, "conflict")
    assert first.payload["conflicts_with"] == [theirs.id]
    assert second.payload["operation"]["id"] == mine.id
    assert second.payload["conflicts_with"] == []


def test_activating_in_place_tells_each_party_in_conflict_and_each_subscriber_once(
    world: World,
) -> None:
    world.svc.subscribe(world.c, [vol()])
    theirs = world.file(world.a)
    mine = world.file(world.b, key=[theirs.version])
    active = world.svc.update_operation(
        world.b, mine.id, mine.version, Filing([vol()], state=S.ACTIVATED, key=[theirs.version])
    ).operation

    first, second = world.events(world.a, "conflict")
    assert first.payload["operation"]["id"] == second.payload["operation"]["id"] == mine.id
    assert second.payload["operation"]["state"] == "Activated"
    assert second.payload["operation"]["version"] == active.version
    assert second.payload["conflicts_with"] == [theirs.id]
    told = world.events(world.c, "operation")
    assert [e.payload["operation"]["id"] for e in told] == [theirs.id, mine.id, mine.id]
    assert [e.payload["notification_index"] for e in told] == [1, 2, 3]


def test_ending_an_operation_tells_the_party_it_conflicted_with(world: World) -> None:
    theirs = world.file(world.a)
    mine = world.file(world.b, key=[theirs.version])
    world.svc.end_operation(world.b, mine.id, mine.version)

    last = world.events(world.a, "conflict")[-1]
    assert last.payload["operation"]["state"] == "Ended"
    assert last.payload["conflicts_with"] == []


def test_a_refused_filing_leaves_no_trace(world: World) -> None:
    sub = world.svc.subscribe(world.c, [vol()])
    world.file(world.a)
    before = (world.events(world.a), world.events(world.c), world.records())

    with pytest.raises(MissingKey):
        world.file(world.b)

    assert (world.events(world.a), world.events(world.c), world.records()) == before
    assert world.svc.get_subscription(world.c, sub.id).notification_index == 1
    assert world.svc.list_operations(world.b) == []


class FailingRecordStore:
    """A store whose transactions fail at the very last step of a write: recording it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def transact(self, fn, *, write: bool = True, priority: int = 0, touches=()):
        def failing(tx):
            class Tx:
                def __getattr__(self, name):
                    return getattr(tx, name)

                def audit_append(self, entry):
                    raise RuntimeError("disk full")  # the last write of a filing

            return fn(Tx())

        return self.inner.transact(failing, write=write)


def test_events_and_the_change_are_written_in_one_transaction(world: World, clock) -> None:
    sub = world.svc.subscribe(world.c, [vol()])
    theirs = world.file(world.a)
    failing = Strategic(FailingRecordStore(world.store), clock=clock, hotline_policy=NO_LEAD_TIME)

    with pytest.raises(RuntimeError):
        failing.file_operation(world.b, Filing([vol()], key=[theirs.version]))

    assert world.svc.list_operations(world.b) == []
    assert world.events(world.a, "conflict") == []
    assert len(world.events(world.c)) == 1
    assert world.svc.get_subscription(world.c, sub.id).notification_index == 1


def test_a_party_reads_its_feed_in_pages(world: World) -> None:
    world.svc.subscribe(world.b, [vol(radius_m=5_000.0)])
    for i in range(5):
        world.file(world.a, vol(i * 100.0))

    first = world.svc.events(world.b, after=0, limit=3)
    rest = world.svc.events(world.b, after=first[-1].id, limit=3)
    assert [e.payload["notification_index"] for e in first + rest] == [1, 2, 3, 4, 5]
    assert len(world.svc.events(world.b, limit=0)) == 1  # a page holds at least one event


# Parties ---------------------------------------------------------------------------------------


def test_party_names_are_unique_regardless_of_case(world: World) -> None:
    with pytest.raises(InvalidInput) as exc:
        world.svc.add_party("  alpha ")
    assert exc.value.code == "party_exists"
    assert world.svc.find_party("ALPHA").id == world.a
    assert world.svc.find_party(world.b).name == "Bravo"
    with pytest.raises(NotFound):
        world.svc.find_party("Delta")


# Between the look and the write ------------------------------------------------------------------


def meanwhile(world: World, monkeypatch: pytest.MonkeyPatch, action) -> None:
    """Make the service look ahead on the next write (as it does while other writes are under
    way), and run ``action`` after that look and before the write: another party's change."""
    look = world.svc._look

    def look_then_act(party, volumes):
        world.svc._busy += 1  # the look only happens while another write is under way
        try:
            seen = look(party, volumes)
        finally:
            world.svc._busy -= 1
        assert seen is not None
        monkeypatch.setattr(world.svc, "_look", look)  # once
        action()
        return seen

    monkeypatch.setattr(world.svc, "_look", look_then_act)


def test_a_conflict_filed_between_the_look_and_the_write_is_caught(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = world.file(world.a)
    later: list[Operation] = []
    meanwhile(world, monkeypatch, lambda: later.append(world.file_aware(world.c)))

    with pytest.raises(MissingKey) as refused:
        world.file(world.b, key=[first.version])

    (second,) = later
    assert missing_of(refused) == {(second.id, world.c, second.version, (0,))}
    filed = world.svc.file_operation(world.b, Filing([vol()], key=[first.version, second.version]))
    assert {f.operation.id for f in filed.conflicts} == {first.id, second.id}


def test_an_operation_ended_between_the_look_and_the_write_no_longer_conflicts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = world.file(world.a)
    meanwhile(world, monkeypatch, lambda: world.svc.end_operation(world.a, first.id, first.version))

    filed = world.svc.file_operation(world.b, Filing([vol()], key=[first.version]))

    assert filed.conflicts == []
    assert world.events(world.a, "conflict") == []


def test_a_key_already_stale_on_the_look_is_refused_before_queueing_to_write(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = world.file(world.a)
    writes = []
    transact = world.store.transact

    def counting(fn, *, write=True, priority=0, touches=()):
        writes.append(write)
        return transact(fn, write=write, priority=priority, touches=touches)

    monkeypatch.setattr(world.store, "transact", counting)
    meanwhile(world, monkeypatch, lambda: None)

    with pytest.raises(MissingKey) as refused:
        world.file(world.b, key=[])

    assert {m[0] for m in missing_of(refused)} == {first.id}
    assert True not in writes
    assert world.svc._refused[world.b] == 1  # and the party goes first next time


def test_an_update_under_load_is_judged_on_the_operation_before_the_key(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether others are writing (and the service looks ahead) never changes which refusal a
    request gets: a missing or foreign operation is 404 or 403, not a stale key."""
    theirs = world.file(world.a)
    meanwhile(world, monkeypatch, lambda: None)
    with pytest.raises(NotFound):
        world.svc.update_operation(world.b, "no-such-operation", "v", Filing([vol()], key=[]))
    meanwhile(world, monkeypatch, lambda: None)
    with pytest.raises(Forbidden):
        world.svc.update_operation(world.b, theirs.id, theirs.version, Filing([vol()], key=[]))


def test_a_retry_after_a_refusal_still_sees_what_was_filed_since(world: World) -> None:
    """A refused write remembers what it saw for its party's retry, which then re-checks only
    what changed: an operation filed in between is still caught, and listed alone."""
    first = world.file(world.a)
    with pytest.raises(MissingKey):
        world.file(world.b, key=[])
    assert world.b in world.svc._learnt
    second = world.file_aware(world.c)

    with pytest.raises(MissingKey) as refused:
        world.file(world.b, key=[first.version])

    assert {m[0] for m in missing_of(refused)} == {second.id}
    filed = world.svc.file_operation(world.b, Filing([vol()], key=[first.version, second.version]))
    assert {f.operation.id for f in filed.conflicts} == {first.id, second.id}
    assert world.b not in world.svc._learnt and world.b not in world.svc._refused


def test_what_a_refused_write_saw_serves_only_a_retry_of_the_same_volumes(world: World) -> None:
    world.file(world.a)
    with pytest.raises(MissingKey):
        world.file(world.b, key=[])
    elsewhere = vol(east_m=FAR)
    filed = world.svc.file_operation(world.b, Filing([elsewhere], key=[]))
    assert filed.conflicts == []
    assert world.b not in world.svc._learnt
