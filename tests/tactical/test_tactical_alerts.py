"""Alerts start, change only when it matters, and end; keyed by the unordered pair."""

from __future__ import annotations

import numpy as np
import pytest

from deconfliction.tactical.alerts import (
    AlertPolicy,
    Encounter,
    Severity,
    encounters,
    pair_key,
    update,
)
from deconfliction.tactical.detector import Conflicts


def seen(tin: float = 60.0, severity: Severity = Severity.PREDICTED) -> Encounter:
    return Encounter(
        severity=severity, tin=tin, tout=tin + 40.0, tcpa=tin + 20.0, dcpa=500.0, dist=20000.0
    )


def kinds(changes: list) -> list[tuple[str, tuple[str, str]]]:
    return [(c.kind, c.alert.pair) for c in changes]


def test_lifecycle_new_quiet_continuing_ended() -> None:
    key = pair_key("B", "A")
    book, changes = update({}, {key: seen(60.0)}, now=0.0)
    assert kinds(changes) == [("new", ("A", "B"))]

    book, changes = update(book, {key: seen(59.0)}, now=1.0)  # same prediction, a second later
    assert changes == []

    book, changes = update(book, {key: seen(-1.0, Severity.LOST)}, now=2.0)
    assert kinds(changes) == [("continuing", ("A", "B"))]
    assert changes[0].alert.severity is Severity.LOST
    assert changes[0].reason == "predicted -> lost"

    book, changes = update(book, {key: seen(-2.0, Severity.LOST)}, now=3.0)
    assert changes == []

    book, changes = update(book, {}, now=4.0)
    assert kinds(changes) == [("ended", ("A", "B"))]
    assert book == {}


def test_material_retiming_is_announced_small_drift_is_not() -> None:
    key = pair_key("A", "B")
    book, _ = update({}, {key: seen(200.0)}, now=0.0)
    book, changes = update(book, {key: seen(190.0)}, now=20.0)  # loss at 210 vs 200: drift
    assert changes == []
    book, changes = update(book, {key: seen(60.0)}, now=21.0)  # loss at 81 vs 200: material
    assert kinds(changes) == [("continuing", ("A", "B"))]
    assert changes[0].alert.loss_at == 81.0
    _, changes = update(book, {key: seen(50.0)}, now=22.0)  # 72 vs the announced 81: quiet
    assert changes == []


def test_end_hold_off_rides_out_a_flicker() -> None:
    policy = AlertPolicy(end_after_s=5.0)
    key = pair_key("A", "B")
    book, _ = update({}, {key: seen()}, now=0.0, policy=policy)
    book, changes = update(book, {}, now=1.0, policy=policy)
    assert changes == [] and key in book
    book, changes = update(book, {key: seen()}, now=2.0, policy=policy)
    assert changes == []
    book, changes = update(book, {}, now=7.0, policy=policy)
    assert kinds(changes) == [("ended", ("A", "B"))]


def test_update_is_pure_and_ordered() -> None:
    ab, cd, ef = pair_key("A", "B"), pair_key("C", "D"), pair_key("E", "F")
    book, _ = update({}, {ab: seen(), cd: seen()}, now=0.0)
    frozen = dict(book)
    _, changes = update(book, {cd: seen(-1.0, Severity.LOST), ef: seen()}, now=1.0)
    assert book == frozen
    assert kinds(changes) == [("ended", ab), ("new", ef), ("continuing", cd)]


def test_pair_key_is_unordered_and_refuses_self_pairs() -> None:
    assert pair_key("Z", "A") == pair_key("A", "Z") == ("A", "Z")
    with pytest.raises(ValueError):
        pair_key("A", "A")


def test_encounters_are_keyed_by_aircraft_ids() -> None:
    f = np.array([10.0, -1.0])
    conflicts = Conflicts(
        i=np.array([0, 1]),
        j=np.array([2, 2]),
        tcpa=f,
        dcpa=f,
        tin=f,
        tout=f + 5,
        dist=f,
        lost_now=np.array([False, True]),
    )
    found = encounters(conflicts, ("X", "B", "A"))
    assert set(found) == {("A", "X"), ("A", "B")}
    assert found[("A", "B")].severity is Severity.LOST
    assert found[("A", "X")].tin == 10.0
