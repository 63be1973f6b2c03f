"""Webhook delivery: at least once, in order, signed, retried with backoff, shared by processes."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from deconfliction.core.hotline import MessageKind
from deconfliction.services.delivery import (
    SIGNATURE_HEADER,
    WebhookDelivery,
    backoff_s,
    http_post,
    sign,
    verify_signature,
)
from deconfliction.services.hotline import Hotline
from deconfliction.services.strategic import Strategic
from deconfliction.stores.base import Store

from ..conftest import Clock


class Receiver:
    """A local webhook receiver that fails its first ``fail_first`` requests with a 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                ok = len(receiver.requests) > receiver.fail_first
                self.send_response(200 if ok else 500)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered_ids(self, only_ok: bool = True) -> list[int]:
        ids = []
        for i, (_, body) in enumerate(self.requests):
            if only_ok and i < self.fail_first:
                continue
            ids.extend(e["id"] for e in json.loads(body)["events"])
        return ids

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver(fail_first=2)
    yield r
    r.close()


@pytest.fixture
def setup(store: Store, clock: Clock):
    strategic = Strategic(store, clock=clock)
    hotline = Hotline(store, clock=clock)
    blue, red = strategic.add_party("blue").id, strategic.add_party("red").id
    return strategic, hotline, blue, red


def test_signatures_verify_and_refuse_tampering_and_replays() -> None:
    header = sign("s3cret", 1_000, b'{"a":1}')
    assert verify_signature("s3cret", header, b'{"a":1}', now=1_010)
    assert not verify_signature("s3cret", header, b'{"a":2}', now=1_010)
    assert not verify_signature("other", header, b'{"a":1}', now=1_010)
    assert not verify_signature("s3cret", header, b'{"a":1}', now=5_000)
    assert not verify_signature("s3cret", "garbage", b"", now=1_000)


def test_backoff_grows_exponentially_with_a_cap() -> None:
    assert 0.4 <= backoff_s(1) <= 0.6
    assert 3.2 <= backoff_s(4) <= 4.8
    assert backoff_s(40) <= 360


def test_a_failing_receiver_gets_every_event_in_order_after_retries(
    setup, receiver: Receiver, clock: Clock
) -> None:
    strategic, hotline, blue, red = setup
    settings = hotline.configure(red, webhook_url=receiver.url)
    for i in range(5):
        hotline.send(blue, [red], MessageKind.TEXT, f"message {i}")
    delivery = WebhookDelivery(hotline.store, http_post(), clock, parallel=1)
    assert delivery.deliver_once() == 0  # 500
    assert delivery.deliver_once() == 0  # backing off: not retried yet
    clock.advance(1)
    assert delivery.deliver_once() == 0  # second 500
    clock.advance(2)
    assert delivery.deliver_once() == 5
    expected = [e.id for e in strategic.events(red)]
    assert receiver.delivered_ids() == expected
    headers, body = receiver.requests[-1]
    assert verify_signature(settings.webhook_secret, headers[SIGNATURE_HEADER], body, clock())
    assert len(receiver.requests) == 3
    hotline.send(blue, [red], MessageKind.TEXT, "one more")
    assert delivery.deliver_once() == 1
    assert receiver.delivered_ids() == [e.id for e in strategic.events(red)]


def test_a_dead_process_lease_runs_out_and_another_process_delivers(setup, clock: Clock) -> None:
    strategic, hotline, blue, red = setup
    hotline.configure(red, webhook_url="http://127.0.0.1:9/never")
    hotline.send(blue, [red], MessageKind.TEXT, "hello")
    got: list[bytes] = []

    def crash(url: str, body: bytes, headers: dict[str, str]) -> int:
        raise SystemExit  # the process dies after the event was committed, mid-delivery

    first = WebhookDelivery(hotline.store, crash, clock, owner="a", parallel=1)
    with pytest.raises(SystemExit):
        first.deliver_once()
    second = WebhookDelivery(
        hotline.store, lambda u, b, h: got.append(b) or 200, clock, owner="b", parallel=1
    )
    assert second.deliver_once() == 0  # a's lease still holds
    clock.advance(31)
    assert second.deliver_once() == 1
    assert [e["id"] for e in json.loads(got[0])["events"]] == [e.id for e in strategic.events(red)]


def test_two_processes_deliver_each_event_with_a_stable_id(setup, clock: Clock) -> None:
    strategic, hotline, blue, red = setup
    hotline.configure(red, webhook_url="http://x/a")
    hotline.configure(blue, webhook_url="http://x/b")
    seen: dict[str, list[int]] = {"http://x/a": [], "http://x/b": []}

    def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        seen[url].extend(e["id"] for e in json.loads(body)["events"])
        return 200

    a = WebhookDelivery(hotline.store, post, clock, owner="a", parallel=1)
    b = WebhookDelivery(hotline.store, post, clock, owner="b", parallel=1)
    for i in range(20):
        hotline.send(blue, [red], MessageKind.TEXT, f"m{i}")
        hotline.send(red, [blue], MessageKind.TEXT, f"r{i}")
        (a if i % 2 else b).deliver_once()
        clock.advance(31)  # leases expire: the other process may take over any party
    a.deliver_once()
    b.deliver_once()
    assert seen["http://x/a"] == [e.id for e in strategic.events(red, limit=1000)]
    assert seen["http://x/b"] == [e.id for e in strategic.events(blue, limit=1000)]


@pytest.mark.parametrize("settle_later", [False, True])
def test_a_process_stopping_cleanly_hands_its_leases_over_at_once(
    setup, clock: Clock, settle_later: bool
) -> None:
    """With ``settle_later``, what it delivered is settled first: b sends only "two"."""
    strategic, hotline, blue, red = setup
    hotline.configure(red, webhook_url="http://x/a")
    hotline.send(blue, [red], MessageKind.TEXT, "one")
    got: list[bytes] = []
    a = WebhookDelivery(
        hotline.store,
        lambda u, b, h: got.append(b) or 200,
        clock,
        owner="a",
        parallel=1,
        settle_later=settle_later,
    )
    assert a.deliver_once() == 1
    a.release()
    hotline.send(blue, [red], MessageKind.TEXT, "two")
    b = WebhookDelivery(
        hotline.store, lambda u, b, h: got.append(b) or 200, clock, owner="b", parallel=1
    )
    assert b.deliver_once() == 1  # no 30 s wait for a's lease
    assert [e["id"] for body in got for e in json.loads(body)["events"]] == [
        e.id for e in strategic.events(red)
    ]


# Settling later: the pass does not wait for the cursor's write -----------------------------


def _ids(bodies: list[bytes]) -> list[int]:
    return [e["id"] for body in bodies for e in json.loads(body)["events"]]


def _cursor(store: Store, party: str):
    return store.transact(lambda tx: tx.get_webhook_cursor(party), write=False)


def test_a_pass_before_the_last_one_is_settled_sends_nothing_twice(setup, clock: Clock) -> None:
    strategic, hotline, blue, red = setup
    hotline.configure(red, webhook_url="http://x/a")
    got: list[bytes] = []
    a = WebhookDelivery(
        hotline.store, lambda u, b, h: got.append(b) or 200, clock, owner="a", settle_later=True
    )
    for i in range(3):
        hotline.send(blue, [red], MessageKind.TEXT, f"m{i}")
    assert a.deliver_once() == 3
    assert _cursor(hotline.store, red).delivered == 0  # not written yet
    hotline.send(blue, [red], MessageKind.TEXT, "m3")
    assert a.deliver_once() == 1  # only the new one: the process remembers how far it got
    assert a.deliver_once() == 0
    expected = [e.id for e in strategic.events(red)]
    assert _ids(got) == expected
    assert a.flush() == 1
    assert _cursor(hotline.store, red).delivered == expected[-1]
    assert a.flush() == 0


def test_failures_are_settled_at_once_even_when_successes_wait(
    setup, receiver: Receiver, clock: Clock
) -> None:
    _, hotline, blue, red = setup
    hotline.configure(red, webhook_url=receiver.url)
    hotline.send(blue, [red], MessageKind.TEXT, "hello")
    a = WebhookDelivery(hotline.store, http_post(), clock, owner="a", settle_later=True)
    assert a.deliver_once() == 0  # a 500
    cursor = _cursor(hotline.store, red)
    assert (cursor.attempts, cursor.last_error) == (1, "HTTP 500")
    assert cursor.next_attempt_at > clock()  # backing off, recorded now
    assert a.deliver_once() == 0 and len(receiver.requests) == 1


def test_events_a_dead_process_never_settled_are_sent_again_with_the_same_ids(
    setup, clock: Clock
) -> None:
    strategic, hotline, blue, red = setup
    hotline.configure(red, webhook_url="http://x/a")
    hotline.send(blue, [red], MessageKind.TEXT, "hello")
    first: list[bytes] = []
    second: list[bytes] = []
    a = WebhookDelivery(
        hotline.store, lambda u, b, h: first.append(b) or 200, clock, owner="a", settle_later=True
    )
    b = WebhookDelivery(
        hotline.store, lambda u, b, h: second.append(b) or 200, clock, owner="b", settle_later=True
    )
    assert a.deliver_once() == 1  # then the process dies before its flush
    assert b.deliver_once() == 0  # a's lease still holds
    clock.advance(31)
    assert b.deliver_once() == 1
    assert _ids(second) == _ids(first) == [e.id for e in strategic.events(red)]  # at least once
    assert a.flush() == 0  # a's late flush finds b's lease and leaves the cursor to b
    assert b.flush() == 1
    assert a.deliver_once() == 0  # nor does a send again while b holds the party


def test_a_failure_after_an_unsettled_success_keeps_its_backoff(setup, clock: Clock) -> None:
    strategic, hotline, blue, red = setup
    hotline.configure(red, webhook_url="http://x/a")
    answers = [200, 500]
    a = WebhookDelivery(
        hotline.store, lambda u, b, h: answers.pop(0), clock, owner="a", settle_later=True
    )
    hotline.send(blue, [red], MessageKind.TEXT, "one")
    assert a.deliver_once() == 1  # acknowledged, not settled yet
    hotline.send(blue, [red], MessageKind.TEXT, "two")
    assert a.deliver_once() == 0  # the receiver fails now
    a.flush()
    cursor = _cursor(hotline.store, red)
    assert cursor.delivered == strategic.events(red)[0].id  # "one" is recorded with the failure
    assert cursor.attempts == 1 and cursor.next_attempt_at > clock()  # and the backoff stays


def test_acknowledgements_a_failed_flush_could_not_record_wait_for_the_next(
    setup, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    strategic, hotline, blue, red = setup
    hotline.configure(red, webhook_url="http://x/a")
    a = WebhookDelivery(hotline.store, lambda u, b, h: 200, clock, owner="a", settle_later=True)
    hotline.send(blue, [red], MessageKind.TEXT, "one")
    assert a.deliver_once() == 1
    real = hotline.store.transact

    def down(fn, **kwargs):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(hotline.store, "transact", down)
    with pytest.raises(RuntimeError):
        a.flush()
    monkeypatch.setattr(hotline.store, "transact", real)
    assert a.flush() == 1
    assert _cursor(hotline.store, red).delivered == strategic.events(red)[0].id
