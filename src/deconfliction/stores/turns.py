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
    """A priority queue of the threads that want to write; one holds the turn at a time.

    The turn is handed over directly: whoever finishes wakes exactly the next writer, so a
    long line costs nothing more per turn than a short one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, int, int, threading.Lock]] = []
        """(-priority, ticket, thread id, gate): the gate is released to hand the turn over."""
        self._tickets = itertools.count()
        self._holder: int | None = None
        """The thread id holding the turn."""

    @contextmanager
    def turn(self, priority: int = 0) -> Iterator[None]:
        me = threading.get_ident()
        if self._holder == me:
            raise RuntimeError("A write transaction cannot start another one.")
        with self._lock:
            if self._holder is None:
                self._holder = me
                gate = None
            else:
                gate = threading.Lock()
                gate.acquire()
                heapq.heappush(self._waiting, (-priority, next(self._tickets), me, gate))
        if gate is not None:
            gate.acquire()  # until the holder before us hands the turn over
        try:
            yield
        finally:
            with self._lock:
                if self._waiting:
                    _, _, self._holder, gate = heapq.heappop(self._waiting)
                    gate.release()
                else:
                    self._holder = None
