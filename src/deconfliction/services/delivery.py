"""Webhook delivery from the event outbox: at least once, in order, signed, with backoff.

The events table is the outbox: an event is committed with its cause, and each party's webhook
has a cursor (the last event id it acknowledged with a 2xx). Any service process may deliver; a
short lease on the cursor keeps two processes from feeding the same party at once, and a process
that dies simply lets its lease run out. A receiver may see an event twice (after a crash between
its 2xx and the cursor update) but always with the same id, so it can deduplicate.

Signatures: ``X-Deconfliction-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">``
with the party's webhook secret; :func:`verify_signature` is what a receiver runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from deconfliction.core.model import PartySettings, WebhookCursor
from deconfliction.services.views import event_view
from deconfliction.stores.base import Store, Tx

SIGNATURE_HEADER = "X-Deconfliction-Signature"
Post = Callable[[str, bytes, dict[str, str]], int]
"""(url, body, headers) -> HTTP status; raises on transport errors."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, now: float, tolerance_s: float = 300.0
) -> bool:
    """A receiver's check: the signature matches and is recent (replays are refused)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def backoff_s(attempts: int, *, base: float = 0.5, cap: float = 300.0) -> float:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... up to five minutes."""
    return min(cap, base * 2 ** max(attempts - 1, 0)) * random.uniform(0.8, 1.2)


def http_post(timeout_s: float = 5.0, connections_per_host: int = 8) -> Post:
    """POST over pooled keep-alive connections (urllib3: thread-safe, and about half the CPU of
    httpx per request, measured on loopback). No retries and no redirects here: a failure or a
    3xx is the delivery's to retry with backoff."""
    import urllib3

    pool = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        retries=False,
        maxsize=connections_per_host,
    )

    def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        return pool.request("POST", url, body=body, headers=headers, redirect=False).status

    return post


@dataclass
class WebhookDelivery:
    store: Store
    post: Post
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    lease_s: float = 30.0
    batch: int = 100
    parallel: int = 8
    settle_later: bool = False
    """Record successful deliveries in the store later, in :meth:`flush` (another thread's
    duty), instead of at the end of each pass: the next pass need not wait for a write. Until
    then this process remembers how far it got for the parties whose leases it holds, so it
    sends nothing twice; if it dies first, the next owner sends those events again, same ids."""
    _pool: ThreadPoolExecutor | None = None
    _posted: dict[str, int] = field(default_factory=dict)
    """Per party whose lease this process holds: the last event id a receiver acknowledged."""
    _unsettled: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Per party: the last acknowledged event id and when, not yet written to its cursor."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def deliver_once(self) -> int:
        """One pass over every party with pending events; returns events delivered.

        Three transactions per pass, however many parties are due: claim (a write, skipped
        while every lease we need is ours and fresh), POST in parallel, settle (one write; with
        ``settle_later``, only for failures, the successes being left to :meth:`flush`).
        """
        now = self.clock()
        backlog = self.store.transact(lambda tx: tx.webhook_backlog(), write=False)
        sent = self._sent_so_far(backlog, now)
        due = [
            (settings, cursor)
            for settings, cursor, latest in backlog
            if latest > max(sent.get(settings.party_id, 0), cursor.delivered if cursor else 0)
            and (cursor is None or cursor.next_attempt_at <= now)
            and (
                cursor is None
                or cursor.lease_owner in (None, self.owner)
                or cursor.lease_until <= now
            )
        ]
        due = [(s, c) for s, c in due if s.webhook_url and s.webhook_secret]
        if not due:
            return 0
        fresh = all(
            c is not None and c.lease_owner == self.owner and c.lease_until > now + self.lease_s / 2
            for _, c in due
        )

        def claim(tx: Tx) -> list[tuple[PartySettings, list[Any]]]:
            out = []
            for settings, _ in due:
                party = settings.party_id
                cursor = tx.get_webhook_cursor(party) or WebhookCursor(party, 0, 0, 0.0, None, 0.0)
                free = cursor.lease_owner in (None, self.owner) or cursor.lease_until <= now
                if not free or cursor.next_attempt_at > now:
                    continue
                if not fresh:
                    tx.put_webhook_cursor(
                        replace(cursor, lease_owner=self.owner, lease_until=now + self.lease_s)
                    )
                after = max(cursor.delivered, sent.get(party, 0))  # ``sent``: leases we hold
                events = tx.events_after(party, after, self.batch)
                if events:
                    out.append((settings, events))
            return out

        batches = self.store.transact(claim, write=not fresh)
        if not batches:
            return 0
        if len(batches) == 1 or self.parallel <= 1:
            outcomes = [self._post(s, events) for s, events in batches]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="webhook")
            outcomes = list(self._pool.map(lambda item: self._post(*item), batches))
        done = self.clock()
        delivered = 0
        if self.settle_later:
            with self._lock:
                for (settings, events), error in zip(batches, outcomes, strict=True):
                    if error is None:
                        party = settings.party_id
                        self._posted[party] = events[-1].id
                        self._unsettled[party] = (events[-1].id, done)
                        delivered += len(events)
            failed = [(b, e) for b, e in zip(batches, outcomes, strict=True) if e is not None]
            if failed:
                # A failure is recorded now, with its backoff, and with it what was acknowledged
                # before it for that party: a later flush must not clear the backoff.
                with self._lock:
                    earlier = {
                        p: self._unsettled.pop(p)[0]
                        for (s, _), _ in failed
                        if (p := s.party_id) in self._unsettled
                    }
                try:
                    self.store.transact(lambda tx: self._settle(tx, failed, done, earlier))
                except BaseException:
                    self._keep_unsettled({p: (last, done) for p, last in earlier.items()})
                    raise
            return delivered
        return self.store.transact(
            lambda tx: self._settle(tx, list(zip(batches, outcomes, strict=True)), done)
        )

    def _sent_so_far(self, backlog: list[Any], now: float) -> dict[str, int]:
        """How far this process got, per party whose lease it still holds (its own memory
        wins over a cursor not yet settled); parties it no longer holds are forgotten."""
        with self._lock:
            for settings, cursor, _ in backlog:
                party = settings.party_id
                ours = cursor is not None and cursor.lease_owner == self.owner
                if party in self._posted and not (ours and cursor.lease_until > now):
                    del self._posted[party]
            return dict(self._posted)

    def _settle(
        self,
        tx: Tx,
        outcomes: list[tuple[tuple[PartySettings, list[Any]], str | None]],
        done: float,
        acknowledged: dict[str, int] | None = None,
    ) -> int:
        """Record each batch's outcome on its party's cursor; ``acknowledged``: per party, how
        far earlier, not yet settled batches got (``settle_later``)."""
        delivered = 0
        for (settings, events), error in outcomes:
            current = tx.get_webhook_cursor(settings.party_id)
            if current is None or current.lease_owner != self.owner:
                continue  # our lease ran out and someone else took over: they redeliver
            if acknowledged and settings.party_id in acknowledged:
                current = replace(
                    current, delivered=max(current.delivered, acknowledged[settings.party_id])
                )
            if error is None:
                tx.put_webhook_cursor(
                    self._acknowledged(current, max(current.delivered, events[-1].id), done)
                )
                delivered += len(events)
                continue
            attempts = current.attempts + 1
            tx.put_webhook_cursor(
                replace(
                    current,
                    attempts=attempts,
                    last_error=error,
                    next_attempt_at=done + backoff_s(attempts),
                )
            )
        return delivered

    def flush(self) -> int:
        """Write the deliveries ``settle_later`` left unsettled to their cursors (one write);
        returns how many parties' cursors moved. On failure they stay for the next flush."""
        with self._lock:
            unsettled, self._unsettled = self._unsettled, {}
        if not unsettled:
            return 0

        def settle(tx: Tx) -> int:
            moved = 0
            for party, (last, done) in unsettled.items():
                current = tx.get_webhook_cursor(party)
                if current is None or current.lease_owner != self.owner:
                    continue  # the lease went elsewhere: the new owner sends them again
                if last > current.delivered:
                    tx.put_webhook_cursor(self._acknowledged(current, last, done))
                    moved += 1
            return moved

        try:
            return self.store.transact(settle)
        except BaseException:
            self._keep_unsettled(unsettled)
            raise

    def _acknowledged(self, cursor: WebhookCursor, delivered: int, done: float) -> WebhookCursor:
        """``cursor`` once a receiver acknowledged events up to ``delivered`` at ``done``: no
        error, no backoff, the lease renewed."""
        return replace(
            cursor,
            delivered=delivered,
            attempts=0,
            next_attempt_at=0.0,
            last_error=None,
            lease_until=done + self.lease_s,
        )

    def _keep_unsettled(self, unsettled: dict[str, tuple[int, float]]) -> None:
        """Put back acknowledgements a failed write did not record, for the next flush."""
        with self._lock:
            for party, (last, done) in unsettled.items():
                if self._unsettled.get(party, (0, 0.0))[0] < last:
                    self._unsettled[party] = (last, done)

    def _post(self, settings: PartySettings, events: list[Any]) -> str | None:
        """POST one batch; the error, or None on a 2xx."""
        body = json.dumps(
            {"party_id": settings.party_id, "events": [event_view(e) for e in events]},
            separators=(",", ":"),
        ).encode()
        assert settings.webhook_secret is not None
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(settings.webhook_secret, int(self.clock()), body),
            "X-Deconfliction-Delivery": f"{events[0].id}-{events[-1].id}",
        }
        try:
            status = self.post(settings.webhook_url or "", body, headers)
            return None if 200 <= status < 300 else f"HTTP {status}"
        except Exception as exc:  # the receiver's failure, whatever it is, means retry later
            return f"{type(exc).__name__}: {exc}"

    def release(self) -> None:
        """Give back this process's leases (on a clean stop), so delivery goes on elsewhere at
        once instead of after the leases run out; what it delivered is settled first."""
        self.flush()

        def release(tx: Tx) -> None:
            for _, cursor, _ in tx.webhook_backlog():
                if cursor is not None and cursor.lease_owner == self.owner:
                    tx.put_webhook_cursor(replace(cursor, lease_owner=None, lease_until=0.0))

        self.store.transact(release)
        with self._lock:
            self._posted.clear()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
