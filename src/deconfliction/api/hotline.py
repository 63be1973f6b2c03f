"""Hotline, liveness, settings, audit and the live event stream (Server-Sent Events)."""

import asyncio
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import Header, Query, Request
from fastapi.responses import StreamingResponse

from deconfliction.api import schemas as s
from deconfliction.api.lane import Hands, ServiceAPI
from deconfliction.core.errors import InvalidInput
from deconfliction.core.hotline import MessageKind, Urgency
from deconfliction.formats import format_time, parse_time
from deconfliction.runtime import Runtime
from deconfliction.security import ADMIN, WRITE
from deconfliction.services.hotline import ALL, message_view
from deconfliction.services.views import event_view


class EventHub:
    """Wakes the stream connections of a party when its feed grows.

    One poller per process asks the store for the latest event id of every party with an open
    stream (one cheap query every ``poll_s``), so events committed by any process — this one or
    another replica — reach the stream within a poll period.
    """

    def __init__(self, runtime: Runtime, hands: Hands, poll_s: float = 0.01) -> None:
        self.runtime = runtime
        self.hands = hands
        self.poll_s = poll_s
        self.waiters: dict[str, set[asyncio.Event]] = {}
        self.latest: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, party: str) -> asyncio.Event:
        wake = asyncio.Event()
        self.waiters.setdefault(party, set()).add(wake)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())
        return wake

    def unsubscribe(self, party: str, wake: asyncio.Event) -> None:
        waiting = self.waiters.get(party)
        if waiting is not None:
            waiting.discard(wake)
            if not waiting:
                del self.waiters[party]

    async def _poll(self) -> None:
        store = self.runtime.store
        while self.waiters:
            parties = list(self.waiters)
            try:
                latest = await self.hands.run(
                    partial(
                        store.transact, lambda tx, p=parties: tx.latest_event_ids(p), write=False
                    )
                )
            except Exception:  # the store is down for a moment: streams wait, then resume
                latest = {}
            for party, newest in latest.items():
                if newest > self.latest.get(party, 0):
                    self.latest[party] = newest
                    for wake in self.waiters.get(party, ()):
                        wake.set()
            await asyncio.sleep(self.poll_s)


def add_routes(
    app: ServiceAPI,
    runtime: Runtime,
    Reader: Any,
    Writer: Any,
    Admin: Any,
    errors: dict[int | str, dict[str, Any]],
) -> None:
    hotline = runtime.hotline
    hub = EventHub(runtime, app.lane.hands)

    @app.get(
        "/v1/events/stream", tags=["events"], responses=errors, response_class=StreamingResponse
    )
    async def stream(
        request: Request,
        who: Reader,
        after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Your event feed as Server-Sent Events: `id` is the event id, `event` its kind.

        Reconnect with the `Last-Event-ID` header (or `after`) to resume with nothing lost or
        repeated. A comment line is sent every 15 s to keep idle connections open.
        """
        cursor = after or 0
        if last_event_id:
            if not last_event_id.isdigit():
                raise InvalidInput("Last-Event-ID must be an event id.", code="invalid_event_id")
            cursor = int(last_event_id)
        party = who.party_id
        strategic = runtime.strategic

        async def events() -> AsyncIterator[bytes]:
            nonlocal cursor
            wake = hub.subscribe(party)
            try:
                yield b"retry: 1000\n\n"
                while True:
                    wake.clear()
                    batch = await hub.hands.run(partial(strategic.events, party, cursor, 500))
                    for event in batch:
                        data = json.dumps(event_view(event), separators=(",", ":"))
                        yield f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode()
                        cursor = event.id
                    if len(batch) == 500:
                        continue
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=15.0)
                    except TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield b": keep-alive\n\n"
            finally:
                hub.unsubscribe(party, wake)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post(
        "/v1/messages",
        status_code=201,
        response_model=s.MessageOut,
        responses=errors,
        tags=["hotline"],
    )
    def send(body: s.MessageIn, who: Writer) -> dict[str, Any]:
        """Send a hotline message; with `ack_by`, unacknowledged copies escalate after it."""
        deadline = parse_time(body.ack_by, "ack_by") if body.ack_by else None
        message = hotline.send(
            who.party_id,
            [ALL] if body.to == "all" else body.to,
            MessageKind(body.kind),
            body.text,
            urgency=Urgency.parse(body.urgency),
            ack_deadline=deadline,
            operation_id=body.operation_id,
            alert_id=body.alert_id,
            reply_to=body.reply_to,
        )
        return message_view(message)

    app.express(send, WRITE)

    @app.get(
        "/v1/messages/{message_id}", response_model=s.MessageOut, responses=errors, tags=["hotline"]
    )
    def get_message(message_id: str, who: Reader) -> dict[str, Any]:
        """A message you sent (with every receipt) or received (with yours)."""
        message, receipts = hotline.get(who.party_id, message_id)
        return message_view(message, receipts)

    @app.post(
        "/v1/messages/{message_id}/ack",
        response_model=s.ReceiptOut,
        responses=errors,
        tags=["hotline"],
    )
    def acknowledge(message_id: str, who: Writer) -> dict[str, Any]:
        receipt = hotline.acknowledge(who.party_id, message_id)
        return {
            "party_id": receipt.party_id,
            "acked_at": format_time(receipt.acked_at or 0),
            "escalation_level": receipt.level,
            "overdue": False,
        }

    @app.post("/v1/heartbeat", response_model=s.LivenessOut, responses=errors, tags=["liveness"])
    def heartbeat(who: Reader) -> dict[str, Any]:
        """Tell the service (and so the other parties) that you are there."""
        return _liveness(hotline.heartbeat(who.party_id))

    @app.get("/v1/liveness", response_model=s.LivenessListOut, responses=errors, tags=["liveness"])
    def liveness(who: Reader) -> dict[str, Any]:
        """Every party's availability: Normal, Unresponsive, Down, or Unknown (never heard)."""
        return {"parties": [_liveness(x) for x in hotline.liveness()]}

    @app.get("/v1/settings", response_model=s.SettingsOut, responses=errors, tags=["parties"])
    def get_settings(who: Reader) -> dict[str, Any]:
        return _settings(hotline.settings(who.party_id))

    @app.put("/v1/settings", response_model=s.SettingsOut, responses=errors, tags=["parties"])
    def put_settings(body: s.SettingsIn, who: Writer) -> dict[str, Any]:
        """Your webhook (events are POSTed there, signed) and your escalation list."""
        return _settings(
            hotline.configure(
                who.party_id,
                webhook_url=body.webhook_url,
                escalation_parties=body.escalation_parties,
                new_secret=body.rotate_secret,
            )
        )

    @app.put("/v1/agreements/lead-time", status_code=204, responses=errors, tags=["parties"])
    def agree_lead_time(body: s.LeadTimeIn, who: Admin) -> None:
        """(admin) The minimum notice lead time two parties agreed."""
        hotline.agree_lead_time(who.party_id, body.party_a, body.party_b, body.minutes)

    @app.get("/v1/audit/export", tags=["audit"], responses=errors)
    def audit_export(
        who: Reader,
        start: Annotated[str, Query(alias="from", description="UTC, ISO 8601.")],
        end: Annotated[str, Query(alias="to", description="UTC, ISO 8601.")],
    ) -> dict[str, Any]:
        """An evidence bundle for [from, to): entries, the sealed anchor before them, seals
        and the service's public key — verifiable offline with `deconfliction audit verify`.

        Every entry is there, but a payload not meant for you (another party's messages,
        subscriptions, settings or alerts) comes as its digest only: the chain still proves."""
        reader = None if ADMIN in who.scopes else who.party_id
        return runtime.audit.export(parse_time(start, "from"), parse_time(end, "to"), reader)

    @app.get("/v1/audit/verify", tags=["audit"], responses=errors)
    def audit_verify(who: Admin) -> dict[str, Any]:
        """(admin) Walk the whole chain and every seal."""
        result = runtime.audit.verify()
        return {
            "intact": result.intact,
            "entries": result.entries,
            "seals": result.seals,
            "first_break": {"seq": result.broken.seq, "reason": result.broken.reason}
            if result.broken
            else None,
            "bad_seals": result.bad_seals,
        }


def _liveness(x: Any) -> dict[str, Any]:
    return {
        "party_id": x.party_id,
        "availability": x.availability,
        "last_heartbeat": format_time(x.last_heartbeat) if x.last_heartbeat else None,
        "changed_at": format_time(x.changed_at),
    }


def _settings(x: Any) -> dict[str, Any]:
    return {
        "webhook_url": x.webhook_url,
        "webhook_secret": x.webhook_secret,
        "escalation_parties": list(x.escalation_parties),
    }
