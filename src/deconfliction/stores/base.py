"""The Store protocol: everything the services need from persistence, and nothing more.

A service runs its whole check-and-write inside one call of :meth:`Store.transact`; the store makes
that serializable and retries it on serialization failures, so ``fn`` must have no effect outside
the transaction it is given. Spatial lookups are conservative (an index may return extra
candidates, never miss one); the exact check is the core's job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from deconfliction.core.audit import AuditEntry, AuditTip, Seal
from deconfliction.core.model import (
    Event,
    Liveness,
    Message,
    NewEvent,
    Notice,
    Operation,
    Party,
    PartySettings,
    Receipt,
    Subscription,
    TacticalLease,
    TrackReport,
    WebhookCursor,
    WriteRecord,
)
from deconfliction.geo import Volume

T = TypeVar("T")


class Tx(Protocol):
    """One serializable transaction."""

    # Parties
    def add_party(self, party: Party) -> None: ...
    def get_party(self, party_id: str) -> Party | None: ...
    def list_parties(self) -> list[Party]: ...

    # Operations
    def get_operation(self, operation_id: str) -> Operation | None: ...
    def put_operation(self, operation: Operation) -> None:
        """Insert or replace; an Ended operation is kept but leaves the spatial index."""

    def operations_at(self, versions: Iterable[tuple[str, str]]) -> list[Operation]:
        """The operations at these (id, version), which this transaction has just seen (in a
        search), in id order; one found at another version is left out. A version names one
        immutable state of an operation, so a store may answer from what it has read or
        written before without asking again."""

    def operation_candidates(
        self, volumes: Sequence[Volume], *, exclude_owner: str | None = None
    ) -> list[Operation]:
        """Live operations whose index entries touch any of ``volumes`` (a superset of conflicts)."""

    def candidate_versions(
        self, volumes: Sequence[Volume], *, exclude_owner: str | None = None
    ) -> frozenset[tuple[str, str]]:
        """(id, version) of exactly the operations ``operation_candidates`` would return."""

    def list_operations(
        self, owner: str, *, include_ended: bool = False, limit: int = 1000
    ) -> list[Operation]: ...

    # Subscriptions
    def get_subscription(self, subscription_id: str) -> Subscription | None: ...
    def put_subscription(self, subscription: Subscription) -> None: ...
    def delete_subscription(self, subscription_id: str) -> None: ...
    def subscription_candidates(self, volumes: Sequence[Volume]) -> list[Subscription]: ...
    def list_subscriptions(self, owner: str) -> list[Subscription]: ...
    def bump_subscriptions(self, subscription_ids: Sequence[str]) -> dict[str, int]:
        """Increment each subscription's notification index, in one statement: the new
        indexes by id."""

    # Events and the write record
    def add_event(self, party_id: str, kind: str, time: float, payload: dict[str, Any]) -> int: ...
    def add_events(self, events: Sequence[NewEvent]) -> None:
        """Add several events in one statement, ids given in the order listed (as if each were
        added by :meth:`add_event`, whose ids are not returned here)."""

    def events_after(self, party_id: str, after: int, limit: int) -> list[Event]: ...
    def write_records(self) -> list[WriteRecord]:
        """Every write of an operation in commit order, derived from the audit log."""

    def latest_event_id(self, party_id: str) -> int: ...
    def events_between(self, start: float, end: float, kinds: Sequence[str]) -> list[Event]: ...

    # Party settings, lead-time agreements and liveness
    def get_settings(self, party_id: str) -> PartySettings: ...
    def put_settings(self, settings: PartySettings) -> None: ...
    def lead_times(self) -> dict[frozenset[str], float]: ...
    def put_lead_time(self, party_a: str, party_b: str, min_lead_s: float) -> None: ...
    def get_liveness(self, party_id: str) -> Liveness | None: ...
    def silent_among(self, party_ids: Sequence[str]) -> dict[str, Liveness]:
        """The liveness of each of ``party_ids`` that cannot be reached now (Unresponsive or
        Down: ``core.hotline.SILENT``), in one read."""

    def put_liveness(self, liveness: Liveness) -> None: ...
    def list_liveness(self) -> list[Liveness]: ...

    # Hotline messages and their receipts
    def put_message(self, message: Message) -> None: ...
    def get_message(self, message_id: str) -> Message | None: ...
    def messages_between(self, start: float, end: float) -> list[Message]: ...
    def put_receipt(self, receipt: Receipt) -> None: ...
    def get_receipt(self, message_id: str, party_id: str) -> Receipt | None: ...
    def receipts(self, message_id: str) -> list[Receipt]: ...
    def due_receipts(self, now: float, limit: int) -> list[Receipt]:
        """Unacknowledged receipts whose escalation falls due at or before ``now``."""

    def overdue_counts(self, now: float) -> dict[str, int]: ...
    def receipts_between(self, start: float, end: float) -> list[tuple[Message, Receipt]]: ...

    # Notices
    def notices_of(self, operation_id: str) -> dict[str, Notice]:
        """Every party's notice of the operation, by party."""

    def put_notices(self, notices: Sequence[Notice]) -> None:
        """Insert each notice, or move an existing one's activation and lateness (never when
        it was told), in one statement; one given twice ends as two puts in a row would leave
        it."""

    def notices_between(self, start: float, end: float) -> list[Notice]: ...

    # Audit log: appended in the transaction of the change it records
    def audit_head(self) -> AuditEntry | None: ...
    def audit_tip(self) -> AuditTip | None:
        """The last entry's seq, time and digest: what the next one chains onto (its payload
        is neither read nor decoded)."""

    def audit_append(self, entry: AuditEntry) -> None: ...
    def audit_entries(self, first_seq: int, last_seq: int) -> list[AuditEntry]: ...
    def audit_seq_at(self, time: float) -> int: ...
    def put_seal(self, seal: Seal) -> None: ...
    def seals(self, first_seq: int, last_seq: int) -> list[Seal]: ...

    # Webhook delivery
    def get_webhook_cursor(self, party_id: str) -> WebhookCursor | None: ...
    def put_webhook_cursor(self, cursor: WebhookCursor) -> None: ...
    def webhook_backlog(self) -> list[tuple[PartySettings, WebhookCursor | None, int]]:
        """Every party with a webhook: its settings, its cursor and its latest event id."""

    def latest_event_ids(self, party_ids: Sequence[str]) -> dict[str, int]: ...

    # Tactical: track reports (append-only, pruned) and the lease of the cycle owner
    def add_track_reports(self, reports: Sequence[TrackReport]) -> None:
        """Append reports; the store numbers them (``seq``) in commit order, never reusing one."""

    def track_reports_after(self, after: int, limit: int) -> list[TrackReport]:
        """Reports with ``seq > after`` in ``seq`` order, ``seq`` filled in. A report committed
        after this read must get a larger ``seq`` than any returned (a cursor never skips)."""

    def prune_track_reports(self, received_before: float) -> int:
        """Delete reports received before the time; returns how many."""

    def get_tactical_lease(self) -> TacticalLease | None: ...
    def put_tactical_lease(self, lease: TacticalLease) -> None:
        """Insert or replace the single lease row."""


class Store(Protocol):
    def transact(
        self,
        fn: Callable[[Tx], T],
        *,
        write: bool = True,
        priority: int = 0,
        touches: Sequence[Volume] = (),
    ) -> T:
        """Run ``fn`` in one serializable transaction, retrying it on serialization failures.

        Two scheduling hints, never needed for correctness: ``priority`` (among writes waiting
        together, higher goes first) and ``touches``, the volumes the write is about (a store
        that commits several writes together keeps writes into one area apart).
        """

    def bulk_load(self, operations: Iterable[Operation]) -> int:
        """Load already-decided operations without checks (seeding, benchmarks); returns count."""

    def close(self) -> None: ...
