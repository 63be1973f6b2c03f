"""The order in which one process's write transactions take their turn.

Stores serialise writers anyway (SQLite has one writer at a time; PostgreSQL writers queue on a
table lock). Left to the operating system, the next writer is whoever the kernel wakes first.
In a hot spot that is the wrong one: every commit makes the keys of all the writers still
waiting stale, so each of them is refused in turn, and a writer refused a moment ago, which has
just learnt what it missed, goes to the back of the line and meets yet another new conflict.

:class:`Turns` lets the writers of one process through one at a time, highest priority first
(the strategic service passes a party's count of consecutive refusals) and otherwise in arrival
order. Across processes the store's own lock still decides; only the head of each process's
line waits on it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Turns:
    """A priority queue of the threads that want to write; one holds the turn at a time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int]] = []
        self._tickets = itertools.count()
        self._holder: int | None = None
        """The thread id holding the turn."""

    @contextmanager
    def turn(self, priority: int = 0) -> Iterator[None]:
        me = threading.get_ident()
        if self._holder == me:
            raise RuntimeError("A write transaction cannot start another one.")
        entry = (-priority, next(self._tickets))
        with self._cond:
            heapq.heappush(self._waiting, entry)
            while self._holder is not None or self._waiting[0] != entry:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._holder = me
        try:
            yield
        finally:
            with self._cond:
                self._holder = None
                self._cond.notify_all()
