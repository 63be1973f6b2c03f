"""The pure strategic rules: transitions, proof of awareness, priority, limits. No store, no clock."""

from __future__ import annotations

import pytest

from deconfliction.core import errors, rules
from deconfliction.core.model import Operation, OperationState
from deconfliction.core.policy import Limits, Policy
from deconfliction.geo import Circle, Volume

S = OperationState
NOW = 1_800_000_000.0

ALLOWED: dict[S | None, set[S]] = {
    None: {S.ACCEPTED, S.ACTIVATED},
    S.ACCEPTED: {S.ACCEPTED, S.ACTIVATED, S.NONCONFORMING, S.ENDED},
    S.ACTIVATED: {S.ACTIVATED, S.NONCONFORMING, S.CONTINGENT, S.ENDED},
    S.NONCONFORMING: {S.ACTIVATED, S.NONCONFORMING, S.CONTINGENT, S.ENDED},
    S.CONTINGENT: {S.CONTINGENT, S.ENDED},
    S.ENDED: set(),
}
"""F3548-21 operational intent states: from each state (None: a new operation), where it may go."""


def vol(
    lon: float = 0.0, lo: float = 0.0, hi: float = 100.0, start: float = NOW, end: float = NOW + 600
) -> Volume:
    return Volume.create(Circle.create(0.0, lon, 1_000.0), lo, hi, start, end)


def op(op_id: str, *volumes: Volume, priority: int = 0, version: str | None = None) -> Operation:
    return Operation(
        op_id,
        "other",
        S.ACCEPTED,
        priority,
        volumes or (vol(),),
        version or f"{op_id}-v",
        1,
        NOW,
        NOW,
    )


@pytest.mark.parametrize("new", list(S), ids=str)
@pytest.mark.parametrize("old", [None, *S], ids=str)
def test_state_changes_follow_the_f3548_table(old: S | None, new: S) -> None:
    if new in ALLOWED[old]:
        rules.check_transition(old, new)
    else:
        with pytest.raises(errors.InvalidTransition) as exc:
            rules.check_transition(old, new)
        assert exc.value.details == {"from": old, "to": new}


def test_find_conflicts_names_each_conflicting_operation_with_its_conflicting_volumes() -> None:
    near, far, later = vol(), vol(lon=1.0), vol(start=NOW + 600, end=NOW + 1200)
    found = rules.find_conflicts([vol(), later], [op("a", far, near, later), op("b", far)])
    assert [(f.operation.id, f.volumes) for f in found] == [("a", (1, 2))]


def test_no_conflicts_need_no_key() -> None:
    rules.check_awareness(S.ACCEPTED, 0, [], [], Policy())


def test_the_key_must_hold_every_conflicting_version() -> None:
    found = rules.find_conflicts([vol()], [op("a"), op("b"), op("c")])
    with pytest.raises(errors.MissingKey) as exc:
        rules.check_awareness(S.ACTIVATED, 0, found, ["a-v", "c-old"], Policy())
    assert [f.operation.id for f in exc.value.details["missing"]] == ["b", "c"]
    rules.check_awareness(S.ACTIVATED, 0, found, ["a-v", "b-v", "c-v", "x"], Policy())


@pytest.mark.parametrize("state", [S.NONCONFORMING, S.CONTINGENT, S.ENDED])
def test_off_nominal_writes_need_neither_key_nor_priority(state: S) -> None:
    found = rules.find_conflicts([vol()], [op("a", priority=99)])
    rules.check_awareness(state, 0, found, [], Policy(allow_equal_priority_conflicts=False))


def test_the_key_is_checked_before_priority() -> None:
    found = rules.find_conflicts([vol()], [op("a", priority=5)])
    with pytest.raises(errors.MissingKey):
        rules.check_awareness(S.ACCEPTED, 0, found, [], Policy())


@pytest.mark.parametrize(
    ("mine", "allow_equal", "refusal"),
    [
        (4, True, "priority_conflict"),
        (4, False, "priority_conflict"),
        (5, True, None),
        (5, False, "conflict_not_allowed"),
        (6, True, None),
        (6, False, None),
    ],
)
def test_priority_decides_once_the_filer_is_aware(
    mine: int, allow_equal: bool, refusal: str | None
) -> None:
    found = rules.find_conflicts([vol()], [op("a", priority=5)])
    policy = Policy(allow_equal_priority_conflicts=allow_equal)
    if refusal is None:
        rules.check_awareness(S.ACCEPTED, mine, found, ["a-v"], policy)
    else:
        with pytest.raises(errors.Conflict) as exc:
            rules.check_awareness(S.ACCEPTED, mine, found, ["a-v"], policy)
        assert exc.value.code == refusal


def test_limits_are_inclusive_and_refusals_carry_codes() -> None:
    limits = Limits(
        max_volumes_per_operation=2, max_plan_horizon_s=3_600.0, max_volume_duration_s=600.0
    )
    rules.check_limits([vol(start=NOW + 3_000, end=NOW + 3_600)] * 2, NOW, limits)
    cases = [
        ("no_volumes", []),
        ("limit_exceeded", [vol()] * 3),  # too many volumes
        ("beyond_plan_horizon", [vol(start=NOW + 3_000, end=NOW + 3_601)]),
        ("limit_exceeded", [vol(start=NOW, end=NOW + 601)]),  # too long
        ("ends_in_past", [vol(start=NOW - 600, end=NOW)]),
        ("altitude_out_of_range", [vol(lo=-501.0)]),
    ]
    for code, volumes in cases:
        with pytest.raises(errors.LimitExceeded) as exc:
            rules.check_limits(volumes, NOW, limits)
        assert exc.value.code == code


def test_every_error_carries_a_stable_code_and_a_class_a_face_can_map() -> None:
    assert issubclass(errors.LimitExceeded, errors.InvalidInput)
    for cls in (
        errors.VersionMismatch,
        errors.MissingKey,
        errors.PriorityConflict,
        errors.InvalidTransition,
    ):
        assert issubclass(cls, errors.Conflict)
    error = errors.MissingKey("look again", details={"missing": []})
    assert (error.code, error.message, error.details, str(error)) == (
        "missing_key",
        "look again",
        {"missing": []},
        "look again",
    )
    assert errors.Conflict("x", code="conflict_not_allowed").code == "conflict_not_allowed"
    assert errors.Conflict("x").code == "conflict"
