"""Stateless replicas: two service processes on one database, and one of them dies.

Every process serves every party, and the periodic duties (webhook delivery, escalation clocks)
run in all of them, guarded by leases and conditional transactions. So when the process that
holds the parties' webhook leases is killed with SIGKILL, the other one takes over once the
leases run out: a message whose acknowledgement deadline passes after the death still escalates
(``message.overdue``) and reaches both parties' webhooks, every stored event is delivered, an
event delivered twice keeps its id and content, and an escalation that came due while both
processes ran was written once, not once per process.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from deconfliction.config import Settings
from deconfliction.formats import format_time
from deconfliction.security import TokenAuthority, load_or_create_signing_key
from deconfliction.services.delivery import WebhookDelivery
from deconfliction.services.hotline import Hotline
from deconfliction.services.strategic import Strategic

pytestmark = [pytest.mark.postgres, pytest.mark.storm, pytest.mark.slow]

LEASE_S = WebhookDelivery.lease_s
DEADLINE_S = 12.0
"""Just above the shortest acknowledgement deadline the hotline accepts (10 s)."""


class World:
    """A fresh database, a shared signing key, a webhook receiver and two (not yet started)
    service processes; parties Blue and Red with webhooks."""

    def __init__(self, storm: ModuleType, admin_url: str, workdir: Path) -> None:
        self.storm = storm
        self.admin_url = admin_url
        self.name, self.url = storm.create_database(admin_url)
        self.receiver = storm.Receiver()
        self.receiver.start()
        key = workdir / "signing-key.pem"
        settings = Settings(db=self.url, signing_key=str(key))
        tokens = TokenAuthority(
            load_or_create_signing_key(key), [], audience=settings.audience, issuer=settings.issuer
        )
        # Waits out a server briefly short of memory for serializable transactions (shared
        # with other work): the test is about the services, not about that.
        self.store = storm.PatientStore(self.url)
        strategic, hotline = Strategic(self.store), Hotline(self.store)
        self.parties: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        for name in ("Blue", "Red"):
            party = strategic.add_party(name)
            webhook = hotline.configure(party.id, webhook_url=self.receiver.url(party.id))
            self.receiver.secrets[party.id] = webhook.webhook_secret
            self.parties[name] = party.id
            self.tokens[name] = tokens.issue(party.id, lifetime_s=3_600)
        self.services = [storm.Service(i, self.url, key, workdir) for i in range(2)]

    def close(self) -> None:
        for service in self.services:
            service.kill()
        self.store.close()
        self.receiver.stop()
        self.storm.drop_database(self.admin_url, self.name)

    def call(self, service: int, who: str, method: str, path: str, body: Any = None) -> Any:
        port = self.services[service].port
        answer = httpx.request(
            method,
            f"http://127.0.0.1:{port}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=30,
        )
        assert answer.status_code < 300, (service, path, answer.status_code, answer.text)
        return answer.json()

    def send(self, service: int, sender: str, to: str, deadline_s: float | None = None) -> str:
        body: dict[str, Any] = {"to": [self.parties[to]], "text": f"{sender} to {to}"}
        if deadline_s is not None:
            body["ack_by"] = format_time(time.time() + deadline_s)
        return str(self.call(service, sender, "POST", "/v1/messages", body)["id"])

    def stored_events(self) -> dict[str, list[Any]]:
        return {
            name: self.store.transact(lambda tx, p=p: tx.events_after(p, 0, 10_000), write=False)
            for name, p in self.parties.items()
        }

    def lease_owners(self) -> dict[str, str | None]:
        """Who holds each party's webhook lease now (None when it has run out)."""
        now = time.time()
        cursors = {
            name: self.store.transact(lambda tx, p=p: tx.get_webhook_cursor(p), write=False)
            for name, p in self.parties.items()
        }
        return {
            name: c.lease_owner if c is not None and c.lease_until > now else None
            for name, c in cursors.items()
        }

    def delivered(self, name: str) -> set[int]:
        with self.receiver.lock:
            return set(self.receiver.received.get(self.parties[name], {}))


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


def overdue(events: list[Any], message_id: str) -> list[Any]:
    return [
        e
        for e in events
        if e.kind == "message.overdue" and e.payload["message"]["id"] == message_id
    ]


@pytest.fixture
def world(storm: ModuleType, postgres_url: str) -> Iterator[World]:
    with tempfile.TemporaryDirectory(prefix="replicas-") as workdir:
        w = World(storm, postgres_url, Path(workdir))
        try:
            yield w
        finally:
            w.close()


def test_the_other_process_delivers_and_escalates_after_the_lease_holder_dies(
    world: World,
) -> None:
    holder, other = world.services
    # The first process alone: it takes both parties' webhook leases with their first events.
    holder.start_until_ready()
    first = world.send(0, "Blue", "Red", DEADLINE_S)
    world.send(0, "Red", "Blue")
    wait_until(lambda: world.delivered("Blue") and world.delivered("Red"), 30, "first deliveries")
    leases = world.lease_owners()
    assert None not in leases.values() and len(set(leases.values())) == 1, leases

    # The second process joins and serves every party too.
    other.start_until_ready()
    for service in (0, 1):
        for name, party in world.parties.items():
            assert world.call(service, name, "GET", "/v1/me")["id"] == party

    # The first message's deadline passes while both processes run: escalated once, not twice.
    wait_until(
        lambda: overdue(world.stored_events()["Red"], first), DEADLINE_S + 10, "first escalation"
    )
    time.sleep(2.0)  # both escalation clocks have ticked since
    events = world.stored_events()
    for name in ("Blue", "Red"):
        levels = Counter(e.payload["escalation_level"] for e in overdue(events[name], first))
        assert levels == {1: 1}, (name, levels)

    # A second message, sent through the second process; then the lease holder dies.
    second = world.send(1, "Blue", "Red", DEADLINE_S)
    assert world.lease_owners() == leases, "the first process should still hold the leases"
    holder.kill()
    killed_at = time.monotonic()

    # Its deadline passes with only the second process alive: it escalates, and the overdue
    # events reach both parties once the dead process's leases have run out.
    def arrived() -> bool:
        events = world.stored_events()
        return all(
            (found := overdue(events[name], second))
            and {e.id for e in found} <= world.delivered(name)
            for name in ("Blue", "Red")
        )

    wait_until(arrived, DEADLINE_S + LEASE_S + 30, "overdue delivered after the kill")
    print(f"overdue delivered {time.monotonic() - killed_at:.1f} s after the kill")
    taken_over = world.lease_owners()
    assert not set(taken_over.values()) & set(leases.values()), "the dead process's leases"

    # Everything stored was delivered, nothing else, each id with one content.
    events = world.stored_events()
    for name, found in events.items():
        assert {e.id for e in found} == world.delivered(name), name
    assert world.receiver.changed_duplicates == []
    assert world.receiver.bad_signatures == 0 and world.receiver.bad_requests == []
    for name in ("Blue", "Red"):
        levels = Counter(e.payload["escalation_level"] for e in overdue(events[name], second))
        assert levels == {1: 1}, (name, levels)
