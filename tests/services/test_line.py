"""The line: parties refused in one busy area hear of it one at a time (services/line.py)."""

from __future__ import annotations

import threading
import time

import pytest

from deconfliction.config import Settings
from deconfliction.core.errors import MissingKey, VersionMismatch
from deconfliction.geo.volume import IndexBox
from deconfliction.services.line import Line
from deconfliction.services.strategic import Filing, Strategic
from deconfliction.stores.base import Store
from tests.conftest import wait_until
from tests.services.test_strategic import FAR, NOW, vol

HERE: list[IndexBox] = [(7.0, 7.1, 46.0, 46.1, 0.0, 120.0, 0.0, 3_600.0)]
THERE: list[IndexBox] = [(8.0, 8.1, 46.0, 46.1, 0.0, 120.0, 0.0, 3_600.0)]
LONG = 5.0
"""Longer than any test waits for a thread: a wait that ends sooner ended for its reason."""


class Waiter:
    """``line.wait(party, area)`` on a thread of its own."""

    def __init__(self, line: Line, party: str, area: list[IndexBox], done: list[str]) -> None:
        self.waited: bool | None = None
        self.seconds = 0.0

        def run() -> None:
            t = time.monotonic()
            self.waited = line.wait(party, area)
            self.seconds = time.monotonic() - t
            done.append(party)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> bool | None:
        self.thread.join(LONG)
        assert not self.thread.is_alive()
        return self.waited


def bravo_waits_for_alpha(line: Line, done: list[str]) -> Waiter:
    """Alpha is refused and told (it holds HERE); bravo, refused there after it, waits in line."""
    assert line.wait("alpha", HERE) is False
    bravo = Waiter(line, "bravo", HERE, done)
    wait_until(lambda: line.waiting == 1)
    return bravo


def test_a_refusal_is_answered_at_once_when_nobody_else_in_the_area_has_been_told() -> None:
    line = Line()
    assert line.wait("alpha", HERE) is False
    assert line.wait("bravo", THERE) is False  # another area: nobody to wait for
    assert line.waiting == 0


def test_a_party_refused_while_another_is_told_waits_until_that_one_is_back() -> None:
    line = Line(hold_s=LONG, max_wait_s=LONG)
    done: list[str] = []
    bravo = bravo_waits_for_alpha(line, done)
    time.sleep(0.02)
    assert done == []  # still waiting for alpha
    line.back("alpha")  # alpha's next write is decided
    assert bravo.join() is True  # bravo waited: what it was refused for is out of date
    assert bravo.seconds < 1.0 + 0.02


def test_those_in_line_go_in_the_order_they_were_refused() -> None:
    line = Line(hold_s=LONG, max_wait_s=LONG)
    done: list[str] = []
    bravo = bravo_waits_for_alpha(line, done)
    charlie = Waiter(line, "charlie", HERE, done)
    wait_until(lambda: line.waiting == 2)
    line.back("alpha")
    assert bravo.join() is True
    time.sleep(0.02)
    assert done == ["bravo"]  # charlie now waits for bravo, told in its turn
    line.back("bravo")
    assert charlie.join() is True
    assert done == ["bravo", "charlie"]


def test_a_party_told_and_refused_again_keeps_its_place_ahead_of_the_line() -> None:
    line = Line(hold_s=LONG, max_wait_s=LONG)
    done: list[str] = []
    bravo = bravo_waits_for_alpha(line, done)
    # Someone filed before alpha came back: alpha is refused again, and hears at once.
    assert line.wait("alpha", HERE) is False
    assert done == []
    line.back("alpha")
    assert bravo.join() is True


def test_a_party_told_holds_its_area_for_hold_s_at_most() -> None:
    line = Line(hold_s=0.3, max_wait_s=LONG)
    t0 = time.monotonic()
    line.wait("alpha", HERE)  # and alpha never comes back
    bravo = Waiter(line, "bravo", HERE, [])
    assert bravo.join() is True
    assert 0.3 <= time.monotonic() - t0 < 1.0 + 0.3


def test_nobody_waits_longer_than_max_wait() -> None:
    line = Line(hold_s=LONG, max_wait_s=0.3)
    line.wait("alpha", HERE)
    bravo = Waiter(line, "bravo", HERE, [])
    assert bravo.join() is True
    assert 0.3 <= bravo.seconds < 1.0 + 0.3


def test_the_second_in_line_waits_for_the_hold_of_the_first_not_longer() -> None:
    line = Line(hold_s=0.3, max_wait_s=LONG)
    done: list[str] = []
    bravo = bravo_waits_for_alpha(line, done)
    charlie = Waiter(line, "charlie", HERE, done)
    wait_until(lambda: line.waiting == 2)
    t0 = time.monotonic()
    line.back("alpha")
    assert bravo.join() is True  # bravo is told now, and never comes back
    assert charlie.join() is True
    assert time.monotonic() - t0 < 1.0 + 0.3  # bravo's hold, not charlie's max_wait_s
    assert done == ["bravo", "charlie"]


def test_beyond_max_waiting_a_refusal_is_answered_at_once() -> None:
    line = Line(hold_s=LONG, max_wait_s=LONG, max_waiting=1)
    done: list[str] = []
    bravo = bravo_waits_for_alpha(line, done)
    assert line.wait("charlie", HERE) is False  # the line is full
    line.back("alpha")
    line.back("charlie")
    assert bravo.join() is True


def test_a_hold_that_ran_out_holds_nothing() -> None:
    now = [0.0]
    line = Line(hold_s=0.02, max_wait_s=LONG, clock=lambda: now[0])
    line.wait("alpha", HERE)
    now[0] = 1.0  # alpha never came back
    assert line.wait("bravo", HERE) is False


def test_with_no_line_every_refusal_is_answered_at_once() -> None:
    line = Settings(line_hold_ms=20, line_max_wait_ms=0).line()
    line.wait("alpha", HERE)
    assert line.wait("bravo", HERE) is False


def test_the_line_is_set_by_the_deployment() -> None:
    line = Settings(line_hold_ms=100, line_max_wait_ms=250).line()
    assert (line.hold_s, line.max_wait_s) == (0.1, 0.25)
    with pytest.raises(ValueError, match="line_max_wait_ms"):
        Settings(line_max_wait_ms=-1)


def test_a_write_that_goes_through_holds_nothing() -> None:
    line = Line(hold_s=LONG, max_wait_s=LONG)
    line.back("alpha")  # never told: nothing to give back
    line.wait("alpha", HERE)
    line.back("alpha")
    assert line.wait("bravo", HERE) is False


# Through the service ---------------------------------------------------------------------------


def test_a_refusal_answered_after_waiting_lists_what_was_filed_meanwhile(
    strategic: Strategic, store: Store
) -> None:
    assert strategic.clock() == NOW
    svc = Strategic(store, clock=strategic.clock, line=Line(hold_s=60.0, max_wait_s=60.0))
    x, a, b = (svc.add_party(name).id for name in ("X-ray", "Alpha", "Bravo"))
    first = svc.file_operation(x, Filing([vol()])).operation

    with pytest.raises(MissingKey):  # alpha has not seen x-ray's operation; it is told so
        svc.file_operation(a, Filing([vol()]))

    refusal: list[MissingKey] = []

    def bravo() -> None:
        try:
            svc.file_operation(b, Filing([vol()]))
        except MissingKey as exc:
            refusal.append(exc)

    thread = threading.Thread(target=bravo, daemon=True)
    thread.start()
    wait_until(lambda: svc.line.waiting == 1)  # bravo, refused too, waits for alpha to come back
    alphas = svc.file_operation(a, Filing([vol()], key=[first.version])).operation
    thread.join(LONG)
    assert not thread.is_alive()

    # Bravo hears once, and of everything it has to see, alpha's new operation included.
    (exc,) = refusal
    assert {f.operation.version for f in exc.details["missing"]} == {
        first.version,
        alphas.version,
    }
    filed = svc.file_operation(b, Filing([vol()], key=[first.version, alphas.version]))
    assert {f.operation.id for f in filed.conflicts} == {first.id, alphas.id}


def test_a_write_that_waited_goes_through_when_what_it_missed_has_ended(
    strategic: Strategic, store: Store
) -> None:
    svc = Strategic(store, clock=strategic.clock, line=Line(hold_s=60.0, max_wait_s=60.0))
    x, a, b = (svc.add_party(name).id for name in ("X-ray", "Alpha", "Bravo"))
    first = svc.file_operation(x, Filing([vol()])).operation
    with pytest.raises(MissingKey):
        svc.file_operation(a, Filing([vol()]))  # alpha is told, and holds the area

    filed: list[object] = []
    thread = threading.Thread(
        target=lambda: filed.append(svc.file_operation(b, Filing([vol()]))), daemon=True
    )
    thread.start()
    wait_until(lambda: svc.line.waiting == 1)
    svc.end_operation(x, first.id, first.version)  # what bravo missed is gone
    svc.file_operation(a, Filing([vol(east_m=FAR)]))  # alpha is back, elsewhere
    thread.join(LONG)
    assert not thread.is_alive()
    (bravos,) = filed  # decided again after the wait: nothing to be aware of any more
    assert bravos.conflicts == []  # type: ignore[attr-defined]


def test_a_party_whose_next_write_fails_otherwise_holds_the_area_no_more(
    strategic: Strategic, store: Store
) -> None:
    svc = Strategic(store, clock=strategic.clock, line=Line(hold_s=60.0, max_wait_s=60.0))
    x, a, b = (svc.add_party(name).id for name in ("X-ray", "Alpha", "Bravo"))
    svc.file_operation(x, Filing([vol()]))
    mine = svc.file_operation(a, Filing([vol(east_m=FAR)])).operation
    with pytest.raises(MissingKey):
        svc.file_operation(a, Filing([vol()]))

    refused: list[MissingKey] = []

    def bravo() -> None:
        with pytest.raises(MissingKey) as exc:
            svc.file_operation(b, Filing([vol()]))
        refused.append(exc.value)

    thread = threading.Thread(target=bravo, daemon=True)
    thread.start()
    wait_until(lambda: svc.line.waiting == 1)
    with pytest.raises(VersionMismatch):  # alpha's next write: a stale version
        svc.update_operation(a, mine.id, "stale", Filing([vol(east_m=FAR)]))
    thread.join(LONG)
    assert not thread.is_alive() and len(refused) == 1
