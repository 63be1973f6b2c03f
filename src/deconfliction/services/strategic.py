"""Strategic use cases: parties file, update and end operations; subscriptions; queries.

Every write follows one flow, inside one serializable transaction of the store:
validate -> load (and check owner/version/transition) -> search (index, then exact check) ->
key and priority check -> write -> notify (subscriptions and affected parties, as events) ->
record what the writer saw. The faces (HTTP, CLI) call these and nothing below them.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from deconfliction.core import hotline, rules
from deconfliction.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MissingKey,
    NotFound,
    VersionMismatch,
)
from deconfliction.core.model import (
    Event,
    NewEvent,
    Notice,
    Operation,
    OperationDetails,
    OperationState,
    Party,
    Subscription,
)
from deconfliction.core.policy import Policy
from deconfliction.formats import volume_to_json
from deconfliction.geo import Volume
from deconfliction.services import audit
from deconfliction.services.line import Line
from deconfliction.services.views import found_view, operation_view
from deconfliction.stores.base import Store, Tx


def new_version() -> str:
    """An opaque token, fresh on every write (F3548 OVN)."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class Filing:
    """What a party asks for when it files or updates an operation."""

    volumes: Sequence[Volume]
    state: OperationState = OperationState.ACCEPTED
    priority: int | None = 0
    """None on an update: keep the current priority."""
    key: Sequence[str] = ()
    details: OperationDetails | None = field(default_factory=OperationDetails)
    """None on an update: keep the current details."""


@dataclass(frozen=True, slots=True)
class Filed:
    """The stored operation and the other parties' operations it conflicts with."""

    operation: Operation
    conflicts: list[rules.Found]
    late_notice_to: list[str] = field(default_factory=list)
    """Parties told later than the lead time agreed with them (flagged, not refused)."""
    unreachable: list[str] = field(default_factory=list)
    """Owners of conflicting operations who are Unresponsive or Down right now."""


@dataclass(frozen=True, slots=True)
class _Look:
    seen: frozenset[tuple[str, str]]
    """(id, version) of every candidate the index returned."""
    found: list[rules.Found]


@dataclass
class Strategic:
    store: Store
    policy: Policy = field(default_factory=Policy)
    clock: Callable[[], float] = time.time
    hotline_policy: hotline.HotlinePolicy = field(default_factory=hotline.HotlinePolicy)
    _busy: int = field(default=0, init=False, repr=False)
    """Writes of this process under way: a hint for when searching ahead pays (see _look)."""
    _busy_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _refused: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _learnt: dict[str, tuple[tuple[Any, ...], _Look]] = field(
        default_factory=dict, init=False, repr=False
    )
    """Per party refused for a stale key: what its write saw (for which volumes), so that its
    retry with the same volumes re-checks only what changed since, like after a look."""
    line: Line = field(default_factory=Line, repr=False)
    """Refused parties of one busy area hear of it one at a time (services/line.py)."""

    # Parties ---------------------------------------------------------------------------------
    def add_party(self, name: str) -> Party:
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInput("A party needs a name of 1 to 100 characters.")
        party = Party(id=str(uuid.uuid4()), name=name, created_at=self.clock())

        def add(tx: Tx) -> Party:
            if any(p.name.lower() == name.lower() for p in tx.list_parties()):
                raise InvalidInput(f"A party named {name!r} already exists.", code="party_exists")
            tx.add_party(party)
            audit.append(
                tx, party.created_at, audit.SERVICE, "party.add", party.id, {"name": party.name}
            )
            return party

        return self.store.transact(add)

    def get_party(self, party_id: str) -> Party:
        party = self.store.transact(lambda tx: tx.get_party(party_id), write=False)
        if party is None:
            raise NotFound(f"No party {party_id}.")
        return party

    def find_party(self, id_or_name: str) -> Party:
        def find(tx: Tx) -> Party | None:
            return tx.get_party(id_or_name) or next(
                (p for p in tx.list_parties() if p.name.lower() == id_or_name.lower()), None
            )

        party = self.store.transact(find, write=False)
        if party is None:
            raise NotFound(f"No party named {id_or_name!r}.")
        return party

    def list_parties(self) -> list[Party]:
        return self.store.transact(lambda tx: tx.list_parties(), write=False)

    # Operations ------------------------------------------------------------------------------
    def file_operation(self, party: str, filing: Filing, operation_id: str | None = None) -> Filed:
        """Create an operation (Accepted or Activated) after the awareness and priority checks."""
        now = self.clock()
        rules.check_limits(filing.volumes, now, self.policy.limits)
        op_id = operation_id or str(uuid.uuid4())

        def write(tx: Tx) -> Filed:
            # A fresh UUID cannot exist yet; only a caller-chosen id needs the look.
            if operation_id is not None and tx.get_operation(op_id) is not None:
                raise VersionMismatch(
                    f"Operation {op_id} already exists; update it with its version.",
                    code="already_exists",
                )
            rules.check_transition(None, filing.state)
            op = Operation(
                id=op_id,
                owner=party,
                state=filing.state,
                priority=filing.priority or 0,
                volumes=tuple(filing.volumes),
                version=new_version(),
                revision=1,
                created_at=now,
                updated_at=now,
                details=filing.details or OperationDetails(),
            )
            return self._write(tx, op, None, filing.key, now, look)

        look = self._look(party, filing.volumes)
        # A fresh id has nothing else to check first; a chosen one may already exist (409).
        stale = look if operation_id is None else None
        return self._transact_write(party, write, filing, refuse_stale=stale)

    def update_operation(
        self, party: str, operation_id: str, version: str, filing: Filing
    ) -> Filed:
        """Replace an operation's volumes, state, priority and details; ``version`` must be current."""
        now = self.clock()
        rules.check_limits(filing.volumes, now, self.policy.limits)

        def write(tx: Tx) -> Filed:
            old = self._owned(tx, party, operation_id, version)
            rules.check_transition(old.state, filing.state)
            op = replace(
                old,
                state=filing.state,
                priority=old.priority if filing.priority is None else filing.priority,
                volumes=tuple(filing.volumes),
                version=new_version(),
                revision=old.revision + 1,
                updated_at=now,
                details=old.details if filing.details is None else filing.details,
            )
            return self._write(tx, op, old, filing.key, now, look)

        look = self._look(party, filing.volumes)
        # No early refusal: whether the operation exists, is yours and is at this version is
        # decided first, inside the write, whatever the load.
        return self._transact_write(party, write, filing)

    def end_operation(self, party: str, operation_id: str, version: str) -> Operation:
        """Move an operation to Ended: kept for the record, no longer matched."""
        now = self.clock()

        def write(tx: Tx) -> Operation:
            old = self._owned(tx, party, operation_id, version)
            rules.check_transition(old.state, OperationState.ENDED)
            op = replace(
                old,
                state=OperationState.ENDED,
                version=new_version(),
                revision=old.revision + 1,
                updated_at=now,
            )
            return self._write(tx, op, old, (), now).operation

        return self.store.transact(write)

    def get_operation(self, operation_id: str) -> Operation:
        op = self.store.transact(lambda tx: tx.get_operation(operation_id), write=False)
        if op is None:
            raise NotFound(f"No operation {operation_id}.")
        return op

    def list_operations(
        self, party: str, *, include_ended: bool = False, limit: int = 1000
    ) -> list[Operation]:
        return self.store.transact(
            lambda tx: tx.list_operations(party, include_ended=include_ended, limit=limit),
            write=False,
        )

    def query_operations(self, volumes: Sequence[Volume], limit: int = 1000) -> list[Operation]:
        """Live operations (of any party) intersecting the 4D area, decided exactly; at most
        ``limit`` of them (the area's size is bounded like a filing's)."""
        rules.check_area_limits(volumes, self.policy.limits)
        candidates = self.store.transact(lambda tx: tx.operation_candidates(volumes), write=False)
        return [f.operation for f in rules.find_conflicts(volumes, candidates)][:limit]

    def conflicts_for(self, party: str, volumes: Sequence[Volume]) -> list[rules.Found]:
        """Other parties' live operations that ``volumes`` would conflict with (a dry run)."""
        candidates = self.store.transact(
            lambda tx: tx.operation_candidates(volumes, exclude_owner=party), write=False
        )
        return rules.find_conflicts(volumes, candidates)

    def _owned(self, tx: Tx, party: str, operation_id: str, version: str) -> Operation:
        op = tx.get_operation(operation_id)
        if op is None:
            raise NotFound(f"No operation {operation_id}.")
        if op.owner != party:
            raise Forbidden("Only the party that filed an operation may change it.")
        if op.version != version:
            raise VersionMismatch(
                "The operation changed since you read it: fetch it and retry with its version.",
                details={"current_version": op.version},
            )
        return op

    def _transact_write(
        self,
        party: str,
        fn: Callable[[Tx], Filed],
        filing: Filing,
        *,
        refuse_stale: _Look | None = None,
    ) -> Filed:
        """Run a filing's write; a party refused for a conflict goes first next time, and one
        refused for a stale key while another in its area has yet to come back waits in line
        (services/line.py).

        A key already stale on the snapshot of ``refuse_stale`` (a look) is refused before the
        write queues: the answer the write would give, at no cost to the others. Writers
        queue in priority order: in a hot spot every write makes the keys of the others waiting
        stale, so whoever was just refused (and has just learnt what it missed) should go next,
        or it meets yet another new conflict and is refused again, and again. Counting a
        party's consecutive refusals and passing it as the priority does that.
        """
        with self._busy_lock:
            self._busy += 1
        try:
            try:
                if refuse_stale is not None:
                    rules.check_key(filing.state, refuse_stale.found, filing.key)
                result = self.store.transact(
                    fn, priority=self._refused.get(party, 0), touches=filing.volumes
                )
            except MissingKey:
                area = [box for v in filing.volumes for box in v.index_boxes()]
                if not self.line.wait(party, area):
                    raise
                # What it was refused for is out of date after the wait: decided again, with a
                # refused party's priority (the others in line are held meanwhile).
                try:
                    result = self.store.transact(
                        fn, priority=self._refused.get(party, 0) + 1, touches=filing.volumes
                    )
                except MissingKey:
                    self.line.told(party, area)  # it holds the area from this answer on
                    raise
        except Conflict as exc:
            if not isinstance(exc, MissingKey):  # refused for a stale key, it holds the area
                self.line.back(party)
            with self._busy_lock:
                self._refused[party] = self._refused.get(party, 0) + 1
            raise
        except BaseException:
            self.line.back(party)
            raise
        finally:
            with self._busy_lock:
                self._busy -= 1
        self.line.back(party)
        with self._busy_lock:
            self._refused.pop(party, None)
            self._learnt.pop(party, None)
        return result

    def _look(self, party: str, volumes: Sequence[Volume]) -> _Look | None:
        """The exact conflict search, done on a read snapshot before the write begins.

        The write transaction then only re-reads which candidates the index returns and their
        versions: if nothing changed, this answer still holds and the expensive geometry stays
        out of the critical section; if anything changed, the write searches again. When no
        other write of this process is under way there is no critical section to shorten, and
        the search simply happens inside the write (None). Nor after a refusal: the party has
        just been told what it missed and goes first (see _transact_write), and the time spent
        looking would only let others change the area again before it gets there; what the
        refused write saw serves as the look instead, when the retry asks for the same volumes.
        """
        if party in self._refused:
            learnt = self._learnt.pop(party, None)
            return learnt[1] if learnt is not None and learnt[0] == _signature(volumes) else None
        if not self._busy:
            return None
        candidates = self.store.transact(
            lambda tx: tx.operation_candidates(volumes, exclude_owner=party), write=False
        )
        return _Look(
            frozenset((c.id, c.version) for c in candidates),
            rules.find_conflicts(volumes, candidates),
        )

    def _write(
        self,
        tx: Tx,
        op: Operation,
        old: Operation | None,
        key: Sequence[str],
        now: float,
        look: _Look | None = None,
    ) -> Filed:
        found: list[rules.Found] = []
        if op.live:
            if look is not None:
                seen, found = self._revalidate(tx, op, look)
            else:
                candidates = tx.operation_candidates(op.volumes, exclude_owner=op.owner)
                seen = frozenset((c.id, c.version) for c in candidates)
                found = rules.find_conflicts(op.volumes, candidates)
            try:
                rules.check_awareness(op.state, op.priority, found, key, self.policy)
            except MissingKey:
                with self._busy_lock:
                    self._learnt[op.owner] = (_signature(op.volumes), _Look(seen, found))
                raise
        tx.put_operation(op)
        # What every party may see of the operation: told in events, recorded in the audit log.
        reference = operation_view(op, owner_view=False)
        # An update that keeps its volumes (an activation, say) touches them once.
        moved = old is not None and _signature(old.volumes) != _signature(op.volumes)
        touched = list(op.volumes) + (list(old.volumes) if moved else [])
        # Events and notices are written together, after the audit entry (on PostgreSQL the
        # entry then joins the operation's own statement).
        events: list[NewEvent] = []
        notices: list[Notice] = []
        told = self._notify(tx, op, reference, touched, found, old, now, events, moved=moved)
        late = (
            self._give_notice(tx, op, reference, told, now, events, notices, first=old is None)
            if op.live
            else []
        )
        unreachable = self._unreachable(tx, op, reference, found, now, events)
        conflicts = tuple((f.operation.id, f.operation.version) for f in found)
        action = "file" if old is None else ("end" if not op.live else "update")
        # This entry is also the write record: the key presented and the conflicts found, which
        # the key invariant is checked against afterwards (Tx.write_records).
        audit.append(
            tx,
            now,
            op.owner,
            f"operation.{action}",
            op.id,
            {
                "operation": reference,
                "details_digest": _details_digest(op.details),
                "previous_version": old.version if old else None,
                "key": list(key),
                "conflicts": [list(c) for c in conflicts],
                "late_notice_to": late,
            },
            finite=True,  # the volumes' numbers were validated
        )
        tx.put_notices(notices)
        tx.add_events(events)
        return Filed(op, found, late, unreachable)

    @staticmethod
    def _revalidate(
        tx: Tx, op: Operation, look: _Look
    ) -> tuple[frozenset[tuple[str, str]], list[rules.Found]]:
        """The look's conflicts brought up to date inside the write: only what changed since.

        A version names one immutable set of volumes, so a candidate seen at the same version
        conflicts exactly as the look found; only candidates new since the look (or at a new
        version) need loading and the exact check, and those gone drop out.
        """
        now_seen = tx.candidate_versions(op.volumes, exclude_owner=op.owner)
        if now_seen == look.seen:
            return now_seen, look.found
        kept = [f for f in look.found if (f.operation.id, f.operation.version) in now_seen]
        fresh = tx.operations_at(now_seen - look.seen)
        return now_seen, kept + rules.find_conflicts(op.volumes, fresh)

    def _notify(
        self,
        tx: Tx,
        op: Operation,
        reference: dict[str, Any],
        touched: list[Volume],
        found: list[rules.Found],
        old: Operation | None,
        now: float,
        events: list[NewEvent],
        *,
        moved: bool,
    ) -> set[str]:
        """Events (added to ``events``) for subscribers whose areas the change touches, and for
        affected parties (``moved``: an update whose volumes changed).

        Returns the parties told, who thereby received notice of the operation.
        """
        told: set[str] = set()
        subs = [
            sub
            for sub in tx.subscription_candidates(touched)
            if sub.owner != op.owner and rules.any_overlap(touched, sub.volumes)
        ]
        indexes = tx.bump_subscriptions([sub.id for sub in subs]) if subs else {}
        for sub in subs:
            events.append(
                NewEvent(
                    sub.owner,
                    "operation",
                    now,
                    {
                        "subscription_id": sub.id,
                        "notification_index": indexes[sub.id],
                        "operation": reference,
                    },
                )
            )
            told.add(sub.owner)
        affected: dict[str, list[str]] = {}
        for f in found:
            affected.setdefault(f.operation.owner, []).append(f.operation.id)
        if old is not None and (moved or not op.live):
            # Parties whose operations conflicted with the old volumes learn the conflict is gone.
            # (A live operation in the same volumes conflicts with exactly those: ``found``.)
            for prior in tx.operation_candidates(old.volumes, exclude_owner=op.owner):
                if prior.owner not in affected and rules.any_overlap(old.volumes, prior.volumes):
                    affected.setdefault(prior.owner, [])
        for owner, theirs in affected.items():
            events.append(
                NewEvent(owner, "conflict", now, {"operation": reference, "conflicts_with": theirs})
            )
            told.add(owner)
        return told

    def _give_notice(
        self,
        tx: Tx,
        op: Operation,
        reference: dict[str, Any],
        told: set[str],
        now: float,
        events: list[NewEvent],
        notices: list[Notice],
        *,
        first: bool,
    ) -> list[str]:
        """Each party's notice of a live operation (added to ``notices``, where it is new or
        earlier); flag and push (in ``events``) the late ones.

        A notice runs from the first time a party was told to the moment the operation becomes
        active (its start, or now if it is activated earlier). A late notice is never refused.
        ``first``: the operation's first write, so no party has been told of it yet.
        """
        if not told:
            return []
        active_at = now if op.state is OperationState.ACTIVATED else op.start
        agreements = tx.lead_times()
        late: list[str] = []
        given = {} if first else tx.notices_of(op.id)
        for party in sorted(told):
            notice = given.get(party)
            required = hotline.min_lead_time(op.owner, party, agreements, self.hotline_policy)
            told_at = notice.told_at if notice else now
            active = min(active_at, notice.active_at) if notice else active_at
            check = hotline.notice_lead(told_at, active, required)
            if notice is None or active < notice.active_at:
                notices.append(
                    Notice(op.id, op.owner, party, told_at, active, required, check.late)
                )
            if check.late and not (notice and notice.late):
                late.append(party)
                payload = {
                    "operation": reference,
                    "to": party,
                    "lead_s": check.lead_s,
                    "required_s": required,
                    "urgency": hotline.Urgency.FLASH.name.lower(),
                }
                events.append(NewEvent(party, "late_notice", now, payload))
                events.append(NewEvent(op.owner, "late_notice", now, payload))
        return late

    def _unreachable(
        self,
        tx: Tx,
        op: Operation,
        reference: dict[str, Any],
        found: list[rules.Found],
        now: float,
        events: list[NewEvent],
    ) -> list[str]:
        """Parties in conflict with ``op`` who cannot be reached now; both sides are warned
        (in ``events``).

        Filing stays possible (freedom of action): the filer learns in its answer which
        counterparts are silent, and when the filer itself is silent, every party it now
        conflicts with is told that it cannot be reached.
        """
        if not found:
            return []  # nobody to warn, nor to warn about
        owners = sorted({f.operation.owner for f in found})
        silent = tx.silent_among([*owners, op.owner])
        unreachable = [p for p in owners if p in silent]
        me = silent.get(op.owner)
        if me is not None:
            for party in owners:
                events.append(
                    NewEvent(
                        party,
                        "counterpart_unreachable",
                        now,
                        {
                            "party_id": op.owner,
                            "availability": me.availability,
                            "operation": reference,
                        },
                    )
                )
        return unreachable

    # Subscriptions ---------------------------------------------------------------------------
    def subscribe(self, party: str, volumes: Sequence[Volume]) -> Subscription:
        now = self.clock()
        rules.check_limits(volumes, now, self.policy.limits)
        sub = Subscription(str(uuid.uuid4()), party, tuple(volumes), new_version(), 0, now, now)

        def write(tx: Tx) -> None:
            tx.put_subscription(sub)
            audit.append(
                tx,
                now,
                party,
                "subscription.create",
                sub.id,
                {"volumes": [volume_to_json(v) for v in volumes]},
                readers=(),
            )

        self.store.transact(write)
        return sub

    def get_subscription(self, party: str, subscription_id: str) -> Subscription:
        sub = self.store.transact(lambda tx: tx.get_subscription(subscription_id), write=False)
        if sub is None or sub.owner != party:
            raise NotFound(f"No subscription {subscription_id} of yours.")
        return sub

    def list_subscriptions(self, party: str) -> list[Subscription]:
        return self.store.transact(lambda tx: tx.list_subscriptions(party), write=False)

    def unsubscribe(self, party: str, subscription_id: str, version: str) -> Subscription:
        def delete(tx: Tx) -> Subscription:
            sub = tx.get_subscription(subscription_id)
            if sub is None or sub.owner != party:
                raise NotFound(f"No subscription {subscription_id} of yours.")
            if sub.version != version:
                raise VersionMismatch(
                    "The subscription changed since you read it.",
                    details={"current_version": sub.version},
                )
            tx.delete_subscription(subscription_id)
            audit.append(tx, self.clock(), party, "subscription.delete", sub.id, {}, readers=())
            return sub

        return self.store.transact(delete)

    # Events ----------------------------------------------------------------------------------
    def events(self, party: str, after: int = 0, limit: int = 100) -> list[Event]:
        limit = max(1, min(limit, self.policy.limits.max_page_size))
        return self.store.transact(lambda tx: tx.events_after(party, after, limit), write=False)


def _signature(volumes: Sequence[Volume]) -> tuple[Any, ...]:
    """What makes two lists of volumes the same request (footprints compare by identity)."""
    return tuple(
        (v.footprint.to_bytes(), v.altitude_lower_m, v.altitude_upper_m, v.start, v.end)
        for v in volumes
    )


def conflict_details(found: Iterable[rules.Found]) -> list[dict[str, Any]]:
    """The answer a refused filer needs: id, owner, version and the conflicting volumes."""
    return [found_view(f) for f in found]


@functools.lru_cache(maxsize=1024)
def _details_digest(details: OperationDetails) -> str:
    """The digest of an operation's private details, which its audit entry records in their
    place. Most filings carry the same few details (none at all, above all): digested once."""
    return audit.digest_of(details.to_json())
