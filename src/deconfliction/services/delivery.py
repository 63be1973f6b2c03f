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


def httpx_post(timeout_s: float = 5.0) -> Post:
    import httpx

    client = httpx.Client(timeout=timeout_s)

    def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        return client.post(url, content=body, headers=headers).status_code

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
    _pool: ThreadPoolExecutor | None = None

    def deliver_once(self) -> int:
        """One pass over every party with pending events; returns events delivered."""
        now = self.clock()
        backlog = self.store.transact(lambda tx: tx.webhook_backlog(), write=False)
        due = [
            (settings, cursor)
            for settings, cursor, latest in backlog
            if latest > (cursor.delivered if cursor else 0)
            and (cursor is None or cursor.next_attempt_at <= now)
            and (
                cursor is None
                or cursor.lease_owner in (None, self.owner)
                or cursor.lease_until <= now
            )
        ]
        if not due:
            return 0
        if len(due) == 1 or self.parallel <= 1:
            return sum(self._deliver(s) for s, _ in due)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="webhook")
        return sum(self._pool.map(lambda item: self._deliver(item[0]), due))

    def _deliver(self, settings: PartySettings) -> int:
        party = settings.party_id
        now = self.clock()

        def claim(tx: Tx) -> list[Any] | None:
            cursor = tx.get_webhook_cursor(party) or WebhookCursor(party, 0, 0, 0.0, None, 0.0)
            free = cursor.lease_owner in (None, self.owner) or cursor.lease_until <= now
            if not free or cursor.next_attempt_at > now:
                return None
            claimed = replace(cursor, lease_owner=self.owner, lease_until=now + self.lease_s)
            tx.put_webhook_cursor(claimed)
            return tx.events_after(party, cursor.delivered, self.batch)

        events = self.store.transact(claim)
        if not events or not settings.webhook_url or not settings.webhook_secret:
            return 0
        body = json.dumps(
            {"party_id": party, "events": [event_view(e) for e in events]}, separators=(",", ":")
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(settings.webhook_secret, int(self.clock()), body),
            "X-Deconfliction-Delivery": f"{events[0].id}-{events[-1].id}",
        }
        try:
            status = self.post(settings.webhook_url, body, headers)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except Exception as exc:  # the receiver's failure, whatever it is, means retry later
            error = f"{type(exc).__name__}: {exc}"
        done = self.clock()

        def settle(tx: Tx) -> int:
            current = tx.get_webhook_cursor(party)
            if current is None or current.lease_owner != self.owner:
                return 0  # our lease ran out and someone else took over: they will redeliver
            if error is None:
                tx.put_webhook_cursor(
                    replace(
                        current,
                        delivered=events[-1].id,
                        attempts=0,
                        next_attempt_at=0.0,
                        last_error=None,
                    )
                )
                return len(events)
            attempts = current.attempts + 1
            tx.put_webhook_cursor(
                replace(
                    current,
                    attempts=attempts,
                    last_error=error,
                    next_attempt_at=done + backoff_s(attempts),
                )
            )
            return 0

        return self.store.transact(settle)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
