"""Operations read lately are kept by (id, version): a new version is never served from them."""

from __future__ import annotations

from dataclasses import replace

from deconfliction.core.model import Operation, OperationState
from deconfliction.geo import Circle, Volume
from deconfliction.stores.shared import RecentOperations


def operation(op_id: str, version: str) -> Operation:
    volume = Volume.create(Circle.create(46.0, 7.0, 500.0), 0.0, 100.0, 1e9, 1e9 + 600)
    return Operation(op_id, "owner", OperationState.ACCEPTED, 0, (volume,), version, 1, 0.0, 0.0)


def test_an_operation_is_found_at_the_version_it_was_read_and_no_other() -> None:
    recent = RecentOperations()
    first = operation("a", "v1")
    recent.put(first)
    assert recent.get("a", "v1") is first
    assert recent.get("a", "v2") is None
    second = replace(first, version="v2", revision=2)
    recent.put(second)
    assert recent.get("a", "v2") is second and recent.get("a", "v1") is first


def test_the_oldest_read_is_forgotten_beyond_capacity() -> None:
    recent = RecentOperations(capacity=2)
    for k in range(3):
        recent.put(operation(f"op{k}", "v"))
    assert recent.get("op0", "v") is None
    assert recent.get("op1", "v") is not None and recent.get("op2", "v") is not None
