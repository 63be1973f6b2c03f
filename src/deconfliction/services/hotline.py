"""Hotline use cases: messages with acknowledgement and escalation, heartbeats and liveness.

Each call is one serializable transaction that writes the state change, the events for every
party concerned and the audit entry together. The periodic duties (``escalate_due``,
``check_liveness``) are idempotent: several service processes may run them at once and a party
still sees every escalation exactly once, because each step is a conditional change of a row.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from deconfliction.core import hotline as rules
from deconfliction.core.errors import InvalidInput, NotFound
from deconfliction.core.hotline import Availability, HotlinePolicy, MessageKind, Urgency
from deconfliction.core.model import Liveness, Message, NewEvent, PartySettings, Receipt
from deconfliction.formats import format_time
from deconfliction.services import audit
from deconfliction.stores.base import Store, Tx

ALL = "all"
"""Recipient shorthand: every other registered party."""


def message_view(message: Message, receipts: Sequence[Receipt] = ()) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": message.id,
        "sender": message.sender,
        "recipients": list(message.recipients),
        "kind": message.kind,
        "urgency": Urgency(message.urgency).name.lower(),
        "text": message.text,
        "sent_at": format_time(message.sent_at),
        "ack_deadline": format_time(message.ack_deadline) if message.ack_deadline else None,
        "operation_id": message.operation_id,
        "alert_id": message.alert_id,
        "reply_to": message.reply_to,
    }
    if receipts:
        view["receipts"] = [
            {
                "party_id": r.party_id,
                "acked_at": format_time(r.acked_at) if r.acked_at else None,
                "escalation_level": r.level,
                "overdue": _escalated(message, r),
            }
            for r in receipts
        ]
    return view


def _escalated(message: Message, receipt: Receipt) -> bool:
    """Unacknowledged past its deadline: escalation has started for this recipient."""
    return receipt.acked_at is None and message.ack_deadline is not None and receipt.level > 0


@dataclass
class Hotline:
    store: Store
    policy: HotlinePolicy = field(default_factory=HotlinePolicy)
    clock: Callable[[], float] = time.time

    # Messages ----------------------------------------------------------------------------------
    def send(
        self,
        sender: str,
        recipients: Sequence[str],
        kind: MessageKind,
        text: str,
        *,
        urgency: Urgency = Urgency.ROUTINE,
        ack_deadline: float | None = None,
        operation_id: str | None = None,
        alert_id: str | None = None,
        reply_to: str | None = None,
    ) -> Message:
        """Send a message; with a deadline, each recipient must acknowledge it by then."""
        now = self.clock()

        def write(tx: Tx) -> Message:
            if list(recipients) == [ALL]:
                wanted = sorted({p.id for p in tx.list_parties()} - {sender})
                unknown = []
            else:  # look up only the recipients: loading every party costs O(parties) per send
                wanted = sorted(set(recipients))
                unknown = [r for r in wanted if tx.get_party(r) is None]
            if unknown:
                raise InvalidInput(
                    f"Unknown recipient(s): {', '.join(unknown)}.",
                    code="unknown_recipient",
                    details={"unknown": unknown},
                )
            if sender in wanted:
                raise InvalidInput(
                    "A party cannot send a message to itself.", code="invalid_recipient"
                )
            rules.check_message(kind, text, wanted, ack_deadline, now, self.policy)
            if operation_id is not None and tx.get_operation(operation_id) is None:
                raise NotFound(f"No operation {operation_id}.")
            if reply_to is not None:
                original = tx.get_message(reply_to)
                if original is None or (
                    sender not in original.recipients and sender != original.sender
                ):
                    raise NotFound(f"No message {reply_to} of yours to reply to.")
            message = Message(
                str(uuid.uuid4()),
                sender,
                tuple(wanted),
                kind.value,
                int(urgency),
                text,
                now,
                ack_deadline,
                operation_id,
                alert_id,
                reply_to,
            )
            tx.put_message(message)
            view = message_view(message)
            for party in wanted:
                tx.put_receipt(Receipt(message.id, party, None, 0, ack_deadline))
            tx.add_events([NewEvent(party, "message", now, {"message": view}) for party in wanted])
            audit.append(
                tx,
                now,
                sender,
                "message.send",
                message.id,
                {
                    "message": {k: v for k, v in view.items() if k != "text"},
                    "text_digest": audit.digest_of(text),
                },
                readers=wanted,
            )
            return message

        return self.store.transact(write)

    def acknowledge(self, party: str, message_id: str) -> Receipt:
        now = self.clock()

        def write(tx: Tx) -> Receipt:
            message = tx.get_message(message_id)
            receipt = tx.get_receipt(message_id, party)
            if message is None or receipt is None:
                raise NotFound(f"No message {message_id} addressed to you.")
            if receipt.acked_at is not None:
                return receipt  # acknowledging twice is harmless
            acked = replace(receipt, acked_at=now, next_at=None)
            tx.put_receipt(acked)
            late = message.ack_deadline is not None and now > message.ack_deadline
            tx.add_event(
                message.sender,
                "message.ack",
                now,
                {
                    "message_id": message_id,
                    "party_id": party,
                    "late": late,
                    "after_s": now - message.sent_at,
                },
            )
            audit.append(
                tx,
                now,
                party,
                "message.ack",
                message_id,
                {"late": late},
                readers=[message.sender],
            )
            return acked

        return self.store.transact(write)

    def get(self, party: str, message_id: str) -> tuple[Message, list[Receipt]]:
        def read(tx: Tx) -> tuple[Message | None, list[Receipt]]:
            return tx.get_message(message_id), tx.receipts(message_id)

        message, receipts = self.store.transact(read, write=False)
        if message is None or (party != message.sender and party not in message.recipients):
            raise NotFound(f"No message {message_id} of yours.")
        if party != message.sender:
            receipts = [r for r in receipts if r.party_id == party]
        return message, receipts

    def escalate_due(self, limit: int = 100) -> int:
        """Escalate every unacknowledged message whose deadline (or last repeat) has passed."""
        now = self.clock()

        def write(tx: Tx) -> int:
            done = 0
            for receipt in tx.due_receipts(now, limit):
                message = tx.get_message(receipt.message_id)
                if message is None or message.ack_deadline is None:
                    continue
                step = rules.next_escalation(
                    Urgency(message.urgency), message.ack_deadline, receipt.level, now, self.policy
                )
                if step is None:
                    tx.put_receipt(replace(receipt, next_at=None))
                    continue
                tx.put_receipt(replace(receipt, level=step.level, next_at=step.next_at))
                payload = {
                    "message": message_view(message),
                    "party_id": receipt.party_id,
                    "escalation_level": step.level,
                    "urgency": step.urgency.name.lower(),
                    "overdue_s": now - message.ack_deadline,
                }
                events = [
                    NewEvent(receipt.party_id, "message.overdue", now, payload),
                    NewEvent(message.sender, "message.overdue", now, payload),
                ]
                if step.copy_to_escalation_list:
                    # The escalation list learns that a message is overdue, not what it says:
                    # the sender never addressed them.
                    notice = {
                        **payload,
                        "message": {k: v for k, v in payload["message"].items() if k != "text"},
                    }
                    events += [
                        NewEvent(other, "message.escalated", now, notice)
                        for other in tx.get_settings(receipt.party_id).escalation_parties
                        if other not in (receipt.party_id, message.sender)
                    ]
                tx.add_events(events)
                audit.append(
                    tx,
                    now,
                    audit.SERVICE,
                    "message.escalate",
                    message.id,
                    {
                        "party_id": receipt.party_id,
                        "level": step.level,
                        "urgency": step.urgency.name.lower(),
                    },
                    readers=[receipt.party_id, message.sender],
                )
                done += 1
            return done

        return self.store.transact(write)

    # Liveness ----------------------------------------------------------------------------------
    def heartbeat(self, party: str) -> Liveness:
        now = self.clock()

        def write(tx: Tx) -> Liveness:
            current = tx.get_liveness(party)
            beat = Liveness(
                party,
                now,
                current.availability if current else Availability.UNKNOWN.value,
                current.changed_at if current else now,
            )
            tx.put_liveness(beat)
            return self._settle(tx, beat, tx.overdue_counts(now).get(party, 0), now)

        return self.store.transact(write)

    def check_liveness(self) -> list[Liveness]:
        """Re-derive every party's availability; tell the others about each change."""
        now = self.clock()

        def write(tx: Tx) -> list[Liveness]:
            overdue = tx.overdue_counts(now)
            known = {x.party_id: x for x in tx.list_liveness()}
            changed = []
            for party in tx.list_parties():
                current = known.get(party.id) or Liveness(
                    party.id, None, Availability.UNKNOWN.value, now
                )
                settled = self._settle(tx, current, overdue.get(party.id, 0), now)
                if settled.availability != current.availability:
                    changed.append(settled)
            return changed

        return self.store.transact(write)

    def _settle(self, tx: Tx, current: Liveness, overdue: int, now: float) -> Liveness:
        state = rules.availability(current.last_heartbeat, overdue, now, self.policy).value
        if state == current.availability and tx.get_liveness(current.party_id) is not None:
            return current
        settled = replace(
            current,
            availability=state,
            changed_at=now if state != current.availability else current.changed_at,
        )
        tx.put_liveness(settled)
        if state != current.availability:
            payload = {
                "party_id": current.party_id,
                "availability": state,
                "previous": current.availability,
                "overdue_acknowledgements": overdue,
            }
            tx.add_events(
                [
                    NewEvent(party.id, "availability", now, payload)
                    for party in tx.list_parties()
                    if party.id != current.party_id
                ]
            )
            audit.append(tx, now, audit.SERVICE, "party.availability", current.party_id, payload)
        return settled

    def liveness(self) -> list[Liveness]:
        return self.store.transact(lambda tx: tx.list_liveness(), write=False)

    # Settings and agreements -------------------------------------------------------------------
    def configure(
        self,
        party: str,
        *,
        webhook_url: str | None = None,
        escalation_parties: Sequence[str] | None = None,
        new_secret: bool = False,
    ) -> PartySettings:
        """Set a party's webhook and escalation list; a new webhook gets a new signing secret."""
        now = self.clock()
        if (
            webhook_url is not None
            and webhook_url
            and not webhook_url.startswith(("http://", "https://"))
        ):
            raise InvalidInput(
                "A webhook URL must start with http:// or https://.", code="invalid_webhook"
            )

        def write(tx: Tx) -> PartySettings:
            current = tx.get_settings(party)
            parties = {p.id for p in tx.list_parties()}
            if escalation_parties is not None:
                unknown = [p for p in escalation_parties if p not in parties]
                if unknown:
                    raise InvalidInput(
                        f"Unknown party id(s): {', '.join(unknown)}.", code="unknown_party"
                    )
            url = current.webhook_url if webhook_url is None else (webhook_url or None)
            secret = current.webhook_secret
            if url and (secret is None or new_secret or url != current.webhook_url):
                secret = secrets.token_urlsafe(32)
            updated = PartySettings(
                party,
                url,
                secret if url else None,
                tuple(escalation_parties)
                if escalation_parties is not None
                else current.escalation_parties,
            )
            tx.put_settings(updated)
            audit.append(
                tx,
                now,
                party,
                "party.settings",
                party,
                {"webhook_url": url, "escalation_parties": list(updated.escalation_parties)},
                readers=(),
            )
            return updated

        return self.store.transact(write)

    def settings(self, party: str) -> PartySettings:
        return self.store.transact(lambda tx: tx.get_settings(party), write=False)

    def agree_lead_time(self, actor: str, party_a: str, party_b: str, minutes: float) -> None:
        """Record the minimum notice lead time two parties agreed (an admin act)."""
        now = self.clock()
        if not 0 <= minutes <= 7 * 24 * 60:
            raise InvalidInput(
                "A lead time must be between 0 and 7 days.", code="invalid_lead_time"
            )
        if party_a == party_b:
            raise InvalidInput(
                "A lead-time agreement is between two parties.", code="invalid_lead_time"
            )

        def write(tx: Tx) -> None:
            for p in (party_a, party_b):
                if tx.get_party(p) is None:
                    raise NotFound(f"No party {p}.")
            tx.put_lead_time(party_a, party_b, minutes * 60.0)
            audit.append(
                tx,
                now,
                actor,
                "agreement.lead_time",
                f"{party_a}|{party_b}",
                {"minutes": minutes},
                readers=[party_a, party_b],
            )

        self.store.transact(write)
