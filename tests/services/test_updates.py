"""Updates keep what the caller leaves out, and an operation under way keeps its flown volumes."""

from __future__ import annotations

from deconfliction.core.model import OperationDetails, OperationState
from deconfliction.geo import Circle, Volume
from deconfliction.services.strategic import Filing, Strategic

from ..conftest import Clock


def volume(clock: Clock, start: float, end: float) -> Volume:
    return Volume.create(Circle.create(35.3, 36.7, 5_000), 0, 1_000, clock() + start, clock() + end)


def test_an_update_that_omits_priority_and_details_keeps_them(
    strategic: Strategic, clock: Clock
) -> None:
    party = strategic.add_party("blue").id
    op = strategic.file_operation(
        party,
        Filing(
            [volume(clock, 600, 3_600)],
            priority=5,
            details=OperationDetails(purpose="medevac", aircraft=("M1",)),
        ),
    ).operation
    updated = strategic.update_operation(
        party,
        op.id,
        op.version,
        Filing(op.volumes, OperationState.ACTIVATED, priority=None, details=None),
    ).operation
    assert updated.priority == 5 and updated.details.purpose == "medevac"


def test_an_operation_under_way_can_go_contingent_with_its_flown_volumes(
    strategic: Strategic, clock: Clock
) -> None:
    party = strategic.add_party("blue").id
    flown, ahead = volume(clock, 60, 1_200), volume(clock, 1_200, 3_600)
    op = strategic.file_operation(party, Filing([flown, ahead], OperationState.ACTIVATED)).operation
    clock.advance(1_800)  # the first volume is over
    contingent = strategic.update_operation(
        party,
        op.id,
        op.version,
        Filing([flown, ahead], OperationState.CONTINGENT, priority=None, details=None),
    ).operation
    assert contingent.state is OperationState.CONTINGENT and len(contingent.volumes) == 2
