"""The line: parties refused in one busy area hear of it one at a time.

In an area where several parties file at once, every write that commits makes the keys of the
others stale. Told at once, every refused party comes back at once, and all but one of them are
refused again: each success costs a refusal and a round trip for nearly every party in the
area, and those round trips are what a busy service runs out of (docs/writes.md, "The line").

So a party refused while another party in the same area has been told of its own refusal, and
has not come back yet, waits in line instead of hearing now. When the one told comes back (its
next write goes through or fails for another reason; a new refusal renews its hold) or stays
away longer than ``hold_s``, the first in line goes. What it was refused for is out of date by
then, so its write is decided again before it hears: either it goes through, or it is refused
with everything it missed while it waited.

A party told, back within its hold and refused again (someone filed in between) keeps its place
ahead of the line. Nobody waits longer than ``max_wait_s`` at a time (0: no line at all), and
at most ``max_waiting`` wait at once (each waits on a thread); beyond that a refusal is
answered at once (and holds the area like any party told). Waiting changes only *when* a write
is decided, never by which rules: every answer is a decision of the write itself. The line is
one process's; other processes keep their own.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence

from deconfliction.geo.volume import IndexBox, boxes_meet

HOLD_S = 0.02
"""How long a party told of a refusal holds its area: a round trip on a LAN, with room."""
MAX_WAIT_S = 0.05
MAX_WAITING = 16


class Line:
    """Refused parties of one area, in the order they were refused."""

    def __init__(
        self,
        *,
        hold_s: float = HOLD_S,
        max_wait_s: float = MAX_WAIT_S,
        max_waiting: int = MAX_WAITING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hold_s = hold_s
        self.max_wait_s = max_wait_s
        self.max_waiting = max_waiting
        self._clock = clock
        self._cond = threading.Condition()
        self._told: dict[str, tuple[Sequence[IndexBox], float]] = {}
        """Parties told of a refusal and not back yet: their area, and until when it is held."""
        self._waiting: list[tuple[int, str, Sequence[IndexBox]]] = []
        """(ticket, party, area), oldest first."""
        self._tickets = itertools.count()
        self._ahead = itertools.count(-1, -1)

    @property
    def waiting(self) -> int:
        """How many parties wait in line now."""
        with self._cond:
            return len(self._waiting)

    def wait(self, party: str, area: Sequence[IndexBox]) -> bool:
        """A write of ``party`` into ``area`` was refused: wait for its turn to hear, then hold
        the area for it until :meth:`back` (or ``hold_s``). True if it waited, so that what it
        was refused for is out of date and the write should be decided again."""
        if self.max_wait_s <= 0:  # no line: every refusal is answered at once
            return False
        with self._cond:
            now = self._clock()
            # Holds that ran out are forgotten: the scans below stay as short as the line.
            self._told = {p: held for p, held in self._told.items() if held[1] > now}
            # Told, back within its hold and refused again (someone got in first): it keeps
            # its place, ahead of those in line.
            ahead = self._told.pop(party, None) is not None
            if ahead and self._waiting:
                self._cond.notify_all()  # its hold is over, whatever comes next
            if (
                self._blocked(party, area, now, ticket=None, ahead=ahead) is None
                or len(self._waiting) >= self.max_waiting
            ):
                self._hold(party, area, now)
                return False
            # A party ahead who must still wait (for another party's hold) goes before
            # everyone in line: its ticket comes before theirs.
            me = (next(self._ahead if ahead else self._tickets), party, area)
            self._waiting.append(me)
            give_up = now + self.max_wait_s
            try:
                while now < give_up:
                    until = self._blocked(party, area, now, ticket=me[0], ahead=ahead)
                    if until is None:
                        break
                    self._cond.wait(min(until, give_up) - now)
                    now = self._clock()
                self._hold(party, area, now)
                return True
            finally:
                self._waiting.remove(me)
                if self._waiting:
                    self._cond.notify_all()  # those behind it look again

    def told(self, party: str, area: Sequence[IndexBox]) -> None:
        """``party`` is told of a refusal again (its write decided after a wait): it holds the
        area from now."""
        with self._cond:
            self._hold(party, area, self._clock())

    def _hold(self, party: str, area: Sequence[IndexBox], now: float) -> None:
        self._told[party] = (area, now + self.hold_s)

    def back(self, party: str) -> None:
        """A write of ``party`` has gone through (or failed otherwise): it holds nothing now."""
        with self._cond:
            if self._told.pop(party, None) is not None and self._waiting:
                self._cond.notify_all()

    def _blocked(
        self,
        party: str,
        area: Sequence[IndexBox],
        now: float,
        *,
        ticket: int | None,
        ahead: bool,
    ) -> float | None:
        """None if ``party`` may hear now; otherwise when to look again. It waits for anyone
        else told in its area and still holding it, and (unless ``ahead``) for anyone before it
        in line there, who wakes it on leaving."""
        until: float | None = None
        for other, (theirs, deadline) in self._told.items():
            if other != party and deadline > now and _meet(area, theirs):
                until = deadline if until is None else min(until, deadline)
        if until is None and not ahead:
            for t, other, theirs in self._waiting:
                if (ticket is None or t < ticket) and other != party and _meet(area, theirs):
                    return now + self.max_wait_s
        return until


def _meet(a: Sequence[IndexBox], b: Sequence[IndexBox]) -> bool:
    return any(boxes_meet(x, y) for x in a for y in b)
