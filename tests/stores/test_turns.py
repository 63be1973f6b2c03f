"""Writers of one process take their turn highest priority first, then in arrival order."""

from __future__ import annotations

import threading
import time

import pytest

from deconfliction.stores.turns import Turns
from tests.conftest import wait_until


def test_waiting_writers_go_in_priority_order_then_first_come() -> None:
    turns = Turns()
    order: list[str] = []
    release = threading.Event()

    def holder() -> None:
        with turns.turn():
            release.wait()

    def writer(name: str, priority: int) -> None:
        with turns.turn(priority):
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    wait_until(lambda: turns._holder is not None)
    waiting = []
    for name, priority in [("a0", 0), ("b2", 2), ("c1", 1), ("d2", 2), ("e0", 0)]:
        t = threading.Thread(target=writer, args=(name, priority))
        t.start()
        waiting.append(t)
        wait_until(lambda n=len(waiting): len(turns._waiting) == n)
    release.set()
    for t in [first, *waiting]:
        t.join(5)
    assert order == ["b2", "d2", "c1", "a0", "e0"]


def test_only_one_writer_holds_the_turn_at_a_time() -> None:
    turns = Turns()
    inside = 0
    most = 0
    lock = threading.Lock()

    def writer(k: int) -> None:
        nonlocal inside, most
        for _ in range(50):
            with turns.turn(k % 3):
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most == 1


def test_a_writer_cannot_start_a_second_write_inside_its_own() -> None:
    turns = Turns()
    with turns.turn(), pytest.raises(RuntimeError, match="cannot start another"), turns.turn():
        pass
    with turns.turn():  # the failed attempt left nothing behind
        pass


def test_a_writer_that_fails_still_hands_the_turn_on() -> None:
    turns = Turns()
    with pytest.raises(ValueError), turns.turn():
        raise ValueError("refused")
    done = threading.Event()

    def next_writer() -> None:
        with turns.turn():
            done.set()

    threading.Thread(target=next_writer).start()
    assert done.wait(5)
