"""Strategic rules: state transitions, proof of awareness, priority. Pure; time is passed in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from deconfliction.core.errors import (
    Conflict,
    InvalidTransition,
    LimitExceeded,
    MissingKey,
    PriorityConflict,
)
from deconfliction.core.model import Operation, OperationState
from deconfliction.core.policy import Limits, Policy
from deconfliction.geo import Polygon, Volume

S = OperationState

_TRANSITIONS: dict[OperationState | None, frozenset[OperationState]] = {
    None: frozenset({S.ACCEPTED, S.ACTIVATED}),
    S.ACCEPTED: frozenset({S.ACCEPTED, S.ACTIVATED, S.NONCONFORMING, S.ENDED}),
    S.ACTIVATED: frozenset({S.ACTIVATED, S.NONCONFORMING, S.CONTINGENT, S.ENDED}),
    S.NONCONFORMING: frozenset({S.ACTIVATED, S.NONCONFORMING, S.CONTINGENT, S.ENDED}),
    S.CONTINGENT: frozenset({S.CONTINGENT, S.ENDED}),
    S.ENDED: frozenset(),
}

NEEDS_KEY = frozenset({S.ACCEPTED, S.ACTIVATED})
"""Nominal states must prove awareness; off-nominal ones record reality and may not be refused."""


def check_transition(old: OperationState | None, new: OperationState) -> None:
    """Refuse a state change F3548 does not allow (``old`` is None for a new operation)."""
    if new not in _TRANSITIONS[old]:
        if old is None:
            msg = f"A new operation must start Accepted or Activated, not {new}."
        elif old is S.ENDED:
            msg = "The operation has ended; file a new one."
        else:
            allowed = ", ".join(sorted(_TRANSITIONS[old])) or "none"
            msg = f"An operation cannot go from {old} to {new} (allowed: {allowed})."
        raise InvalidTransition(msg, details={"from": old, "to": new})


@dataclass(frozen=True, slots=True)
class Found:
    """An operation of another party that conflicts, and which volumes of it do."""

    operation: Operation
    volumes: tuple[int, ...]


def find_conflicts(volumes: Sequence[Volume], candidates: Iterable[Operation]) -> list[Found]:
    """The candidates (an index's conservative answer) that truly conflict with ``volumes``."""
    found = []
    for op in candidates:
        hits = tuple(
            j for j, theirs in enumerate(op.volumes) if any(v.overlaps(theirs) for v in volumes)
        )
        if hits:
            found.append(Found(op, hits))
    return found


def any_overlap(a: Sequence[Volume], b: Sequence[Volume]) -> bool:
    """True when some volume of ``a`` intersects some volume of ``b`` in all four dimensions."""
    return any(va.overlaps(vb) for va in a for vb in b)


def check_key(state: OperationState, conflicts: Sequence[Found], key: Iterable[str]) -> None:
    """Proof of awareness alone: the key holds the version of every conflicting operation."""
    if state not in NEEDS_KEY or not conflicts:
        return
    seen = set(key)
    missing = [f for f in conflicts if f.operation.version not in seen]
    if missing:
        raise MissingKey(
            f"The key lacks the current version of {len(missing)} conflicting operation(s); "
            "look at them, then retry with their versions in the key.",
            details={"missing": missing},
        )


def check_awareness(
    state: OperationState,
    priority: int,
    conflicts: Sequence[Found],
    key: Iterable[str],
    policy: Policy,
) -> None:
    """Proof of awareness and priority for a write into ``state``.

    The key must hold the current version of every conflicting operation; then no operation may
    come into conflict with a higher-priority one, and at equal priority only if the policy allows.
    """
    if state not in NEEDS_KEY or not conflicts:
        return
    check_key(state, conflicts, key)
    higher = [f for f in conflicts if f.operation.priority > priority]
    if higher:
        raise PriorityConflict(
            f"The operation would conflict with {len(higher)} operation(s) of higher priority.",
            details={"conflicts": higher},
        )
    if not policy.allow_equal_priority_conflicts:
        equal = [f for f in conflicts if f.operation.priority == priority]
        if equal:
            raise Conflict(
                "This deployment does not allow conflicts between operations of equal priority.",
                code="conflict_not_allowed",
                details={"conflicts": equal},
            )


def check_area_limits(volumes: Sequence[Volume], limits: Limits) -> None:
    """Refuse more volumes, vertices or area than the deployment allows (filings, queries)."""
    if not volumes:
        raise LimitExceeded(
            "An operation (or a query) needs at least one volume.", code="no_volumes"
        )
    if len(volumes) > limits.max_volumes_per_operation:
        raise LimitExceeded(
            f"At most {limits.max_volumes_per_operation} volumes per operation "
            f"({len(volumes)} given)."
        )
    for i, v in enumerate(volumes):
        where = f"Volume {i}: "
        fp = v.footprint
        if isinstance(fp, Polygon) and len(fp.vertices) > limits.max_vertices_per_polygon:
            raise LimitExceeded(
                where + f"at most {limits.max_vertices_per_polygon} vertices per polygon "
                f"({len(fp.vertices)} given)."
            )
        if fp.area_m2 > limits.max_footprint_area_m2:
            raise LimitExceeded(
                where + f"the footprint covers {fp.area_m2 / 1e6:,.0f} km², more than the "
                f"{limits.max_footprint_area_m2 / 1e6:,.0f} km² allowed."
            )


def check_limits(volumes: Sequence[Volume], now: float, limits: Limits) -> None:
    """Refuse what is larger or further ahead than the deployment allows."""
    check_area_limits(volumes, limits)
    for i, v in enumerate(volumes):
        where = f"Volume {i}: "
        if v.altitude_lower_m < limits.min_altitude_m or v.altitude_upper_m > limits.max_altitude_m:
            raise LimitExceeded(
                where + f"altitudes must lie between {limits.min_altitude_m:g} m and "
                f"{limits.max_altitude_m:g} m.",
                code="altitude_out_of_range",
            )
        if v.end > now + limits.max_plan_horizon_s:
            raise LimitExceeded(
                where + f"ends more than {limits.max_plan_horizon_s / 86400:g} days ahead.",
                code="beyond_plan_horizon",
            )
        if v.end - v.start > limits.max_volume_duration_s:
            raise LimitExceeded(
                where + f"lasts longer than {limits.max_volume_duration_s / 86400:g} days."
            )
    if max(v.end for v in volumes) <= now:
        # Per operation, not per volume: an operation under way keeps its flown volumes.
        raise LimitExceeded("The operation ends in the past.", code="ends_in_past")
