"""The audit log as a service: append in the caller's transaction, seal, verify, export.

Every write and every message appends one entry in the same transaction as the change, so the
record and the state can never disagree. Private details never enter the log; their SHA-256
does, so an owner can later prove what it filed without the log revealing it to others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from deconfliction.core.audit import (
    READERS,
    AuditEntry,
    Break,
    Seal,
    canonical,
    make_bundle,
    next_entry,
    public_pem,
    seal,
    seal_is_valid,
    verify_chain,
)
from deconfliction.core.errors import InvalidInput
from deconfliction.stores.base import Store, Tx

SERVICE = "service"
"""The actor of entries the service writes on its own (escalations, liveness, seals)."""

PAGE = 5_000


def append(
    tx: Tx,
    time: float,
    actor: str,
    action: str,
    subject: str,
    payload: dict[str, Any],
    readers: Iterable[str] | None = None,
    *,
    finite: bool = False,
) -> AuditEntry:
    """Chain one entry onto the log inside ``tx``.

    ``readers``: who besides the actor may read the payload in an export (None: every party).
    The chain itself, and so the proof, stays whole for everyone. ``finite``: the payload holds
    no NaN or infinity (its numbers were validated), which saves a check (core.audit.canonical).
    """
    if readers is not None:
        payload = {**payload, READERS: sorted(set(readers))}
    head = tx.audit_tip()
    # Processes' clocks differ a little; the log's times never go backwards, so a time range
    # of the log is always one run of entries.
    time = max(time, head.time) if head else time
    entry = next_entry(head, time, actor, action, subject, payload, finite=finite)
    tx.audit_append(entry)
    return entry


def digest_of(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


@dataclass(frozen=True, slots=True)
class Verification:
    entries: int
    seals: int
    broken: Break | None
    bad_seals: list[int]

    @property
    def intact(self) -> bool:
        return self.broken is None and not self.bad_seals


@dataclass
class AuditLog:
    store: Store
    signing_key: Any
    clock: Callable[[], float]

    def seal_now(self) -> Seal | None:
        """Sign the chain's current head (no-op on an empty log or an already sealed head)."""
        now = self.clock()

        def do(tx: Tx) -> Seal | None:
            head = tx.audit_head()
            if head is None or tx.seals(head.seq, head.seq):
                return None
            s = seal(head, now, self.signing_key)
            tx.put_seal(s)
            return s

        return self.store.transact(do)

    def _pages(self, first: int, last: int) -> Iterator[list[AuditEntry]]:
        seq = first
        while seq <= last:
            page = self.store.transact(
                lambda tx, a=seq: tx.audit_entries(a, min(a + PAGE - 1, last)), write=False
            )
            if not page:
                return
            yield page
            seq = page[-1].seq + 1

    def verify(self) -> Verification:
        """Walk the whole chain and every seal; report the first break, if any."""
        head = self.store.transact(lambda tx: tx.audit_head(), write=False)
        last = head.seq if head else 0
        count, prev, broken = 0, None, None
        digests: dict[int, str] = {}
        for page in self._pages(1, last):
            broken = verify_chain(page, anchor=prev, first_seq=1)
            if broken:
                break
            count += len(page)
            prev = page[-1]
            digests.update((e.seq, e.digest) for e in page)
        if broken is None and count != last:
            broken = Break(count + 1, f"entry {count + 1} is missing")
        seals = self.store.transact(lambda tx: tx.seals(1, 2**62), write=False)
        public = self.signing_key.public_key()
        bad = [
            s.seq
            for s in seals
            if not seal_is_valid(s, public) or digests.get(s.seq, s.digest) != s.digest
        ]
        beyond = [s.seq for s in seals if s.seq > last and s.seq not in bad]
        if broken is None and beyond:
            broken = Break(
                last + 1,
                f"entries {last + 1} to {max(beyond)} are missing: they were sealed, then removed",
            )
        return Verification(count, len(seals), broken, bad)

    def export(self, start: float, end: float, reader: str | None = None) -> dict[str, Any]:
        """An evidence bundle for the entries written in ``[start, end)``, as ``reader`` may see
        it: payloads not meant for that party are withheld (their digests keep the proof whole);
        ``reader`` None (the service's administrators) sees everything.

        The range is extended back to the latest seal before it (or the genesis) so the bundle
        starts from a signed anchor, and the service seals its end if no seal covers it yet.
        """
        if end <= start:
            raise InvalidInput("The end of an export must come after its start.")

        def read(tx: Tx) -> tuple[int, int, list[Seal]]:
            first = tx.audit_seq_at(start) + 1
            last = tx.audit_seq_at(end)
            return first, last, tx.seals(1, max(first - 1, 0))

        first, last, earlier = self.store.transact(read, write=False)
        if last < first:  # nothing was written in the range: nothing to prove
            return make_bundle(None, [], [], public_pem(self.signing_key))
        anchor_seq = earlier[-1].seq if earlier else 0
        if last >= first and not self.store.transact(lambda tx: tx.seals(last, last), write=False):
            self._seal_at(last)
        entries = [e for page in self._pages(anchor_seq + 1, last) for e in page]
        anchor = None
        if anchor_seq:
            anchor = self.store.transact(
                lambda tx: tx.audit_entries(anchor_seq, anchor_seq), write=False
            )[0]
        seals = self.store.transact(lambda tx: tx.seals(anchor_seq, 10**18), write=False)
        shown = [e if e.visible_to(reader) else e.redacted() for e in entries]
        if anchor is not None and not anchor.visible_to(reader):
            anchor = anchor.redacted()
        return make_bundle(anchor, shown, seals, public_pem(self.signing_key))

    def _seal_at(self, seq: int) -> None:
        now = self.clock()

        def do(tx: Tx) -> None:
            (entry,) = tx.audit_entries(seq, seq)
            tx.put_seal(seal(entry, now, self.signing_key))

        self.store.transact(do)
