"""The Store protocol: everything the services need from persistence, and nothing more.

A service runs its whole check-and-write inside one call of :meth:`Store.transact`; the store makes
that serializable and retries it on serialization failures, so ``fn`` must have no effect outside
the transaction it is given. Spatial lookups are conservative (an index may return extra
candidates, never miss one); the exact check is the core's job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from deconfliction.core.model import Event, Operation, Party, Subscription, WriteRecord
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

    def operation_candidates(
        self, volumes: Sequence[Volume], *, exclude_owner: str | None = None
    ) -> list[Operation]:
        """Live operations whose index entries touch any of ``volumes`` (a superset of conflicts)."""

    def list_operations(
        self, owner: str, *, include_ended: bool = False, limit: int = 1000
    ) -> list[Operation]: ...

    # Subscriptions
    def get_subscription(self, subscription_id: str) -> Subscription | None: ...
    def put_subscription(self, subscription: Subscription) -> None: ...
    def delete_subscription(self, subscription_id: str) -> None: ...
    def subscription_candidates(self, volumes: Sequence[Volume]) -> list[Subscription]: ...
    def list_subscriptions(self, owner: str) -> list[Subscription]: ...
    def bump_subscription(self, subscription_id: str) -> int:
        """Increment and return the subscription's notification index."""

    # Events and the write record
    def add_event(self, party_id: str, kind: str, time: float, payload: dict[str, Any]) -> int: ...
    def events_after(self, party_id: str, after: int, limit: int) -> list[Event]: ...
    def record_write(self, record: WriteRecord) -> None: ...
    def write_records(self) -> list[WriteRecord]: ...


class Store(Protocol):
    def transact(self, fn: Callable[[Tx], T], *, write: bool = True) -> T:
        """Run ``fn`` in one serializable transaction, retrying it on serialization failures."""

    def bulk_load(self, operations: Iterable[Operation]) -> int:
        """Load already-decided operations without checks (seeding, benchmarks); returns count."""

    def close(self) -> None: ...
