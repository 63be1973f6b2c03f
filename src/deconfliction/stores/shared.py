"""What the two SQL stores share: the tables outside the spatial index, in one dialect.

SQLite and PostgreSQL (and the engines it stands for) accept the same statements for these:
plain inserts with ON CONFLICT upserts, RETURNING, ORDER BY and LIMIT. Statements are written
with ``?`` placeholders; each store's ``_x`` runs one on its own connection (PostgreSQL's turns
them into ``%s``). The spatial index, events and operations, where the stores differ, stay in
each store.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import orjson

from deconfliction.core.audit import OPERATION_WRITES, AuditEntry, AuditTip, Seal
from deconfliction.core.hotline import SILENT
from deconfliction.core.model import (
    Liveness,
    Message,
    Notice,
    Operation,
    OperationState,
    PartySettings,
    Receipt,
    TrackReport,
    WebhookCursor,
    WriteRecord,
)


class RecentOperations:
    """Operations read or written lately, by (id, version): a version names one immutable state
    of an operation, so a row whose version is known here needs neither its volumes read nor
    its geometry decoded again. In a busy area every search reads the same few operations.
    (A version written by a transaction that then rolled back is never asked for: versions are
    random and never reused.)"""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._ops: dict[tuple[str, str], Operation] = {}
        self._lock = threading.Lock()

    def get(self, op_id: str, version: str) -> Operation | None:
        return self._ops.get((op_id, version))

    def split(self, versions: Iterable[tuple[str, str]]) -> tuple[list[Operation], list[str]]:
        """The operations known here at those versions, and the ids of the others."""
        known, unknown = [], []
        for op_id, version in versions:
            op = self._ops.get((op_id, version))
            if op is None:
                unknown.append(op_id)
            else:
                known.append(op)
        return known, unknown

    def put(self, op: Operation) -> None:
        with self._lock:
            self._ops[(op.id, op.version)] = op
            if len(self._ops) > self.capacity:  # forget the oldest read
                del self._ops[next(iter(self._ops))]


class SharedTx:
    """Mixin for a store's transaction: needs ``_x(sql, params=()) -> cursor``, ``_recent`` and
    ``_operations_by_id``."""

    _recent: RecentOperations

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _operations_by_id(self, ids: Sequence[str]) -> list[Operation]:
        """The stored operations with these ids (at most ``ROWS_PER_INSERT`` of them)."""
        raise NotImplementedError

    def operations_at(self, versions: Iterable[tuple[str, str]]) -> list[Operation]:
        asked = dict(versions)
        known, wanted = self._recent.split(asked.items())
        for _, chunk in in_lists(wanted):
            known += [op for op in self._operations_by_id(chunk) if op.version == asked[op.id]]
        return sorted(known, key=lambda op: op.id)

    def bump_subscriptions(self, subscription_ids: Sequence[str]) -> dict[str, int]:
        indexes: dict[str, int] = {}
        for marks, chunk in in_lists(subscription_ids):
            rows = self._x(
                "UPDATE subscriptions SET notification_index = notification_index + 1 "
                f"WHERE id IN ({marks}) RETURNING id, notification_index",
                chunk,
            ).fetchall()
            indexes.update((row[0], int(row[1])) for row in rows)
        return indexes

    def write_records(self) -> list[WriteRecord]:
        """Every write of an operation, in commit order, read from the audit log: what it
        presented as its key and what it conflicted with (the audit entry is the record)."""
        marks = ", ".join("?" * len(OPERATION_WRITES))
        rows = self._x(
            f"SELECT subject, actor, time, payload FROM audit_log WHERE action IN ({marks}) "
            "ORDER BY seq",
            OPERATION_WRITES,
        )
        records = []
        for subject, actor, time, payload in rows:
            data = json.loads(payload)
            records.append(
                WriteRecord(
                    subject,
                    data["operation"]["version"],
                    actor,
                    OperationState(data["operation"]["state"]),
                    time,
                    tuple(data["key"]),
                    tuple((c[0], c[1]) for c in data["conflicts"]),
                )
            )
        return records

    # Party settings and lead-time agreements
    def get_settings(self, party_id: str) -> PartySettings:
        row = self._x(
            "SELECT webhook_url, webhook_secret, escalation_parties FROM party_settings "
            "WHERE party_id = ?",
            (party_id,),
        ).fetchone()
        if row is None:
            return PartySettings(party_id)
        return PartySettings(party_id, row[0], row[1], tuple(json.loads(row[2])))

    def put_settings(self, settings: PartySettings) -> None:
        self._x(
            "INSERT INTO party_settings (party_id, webhook_url, webhook_secret, "
            "escalation_parties) VALUES (?, ?, ?, ?) ON CONFLICT (party_id) DO UPDATE SET "
            "webhook_url = excluded.webhook_url, webhook_secret = excluded.webhook_secret, "
            "escalation_parties = excluded.escalation_parties",
            (
                settings.party_id,
                settings.webhook_url,
                settings.webhook_secret,
                json.dumps(list(settings.escalation_parties)),
            ),
        )

    def lead_times(self) -> dict[frozenset[str], float]:
        rows = self._x("SELECT party_a, party_b, min_lead_s FROM lead_times")
        return {frozenset((a, b)): s for a, b, s in rows}

    def put_lead_time(self, party_a: str, party_b: str, min_lead_s: float) -> None:
        a, b = sorted((party_a, party_b))
        self._x(
            "INSERT INTO lead_times (party_a, party_b, min_lead_s) VALUES (?, ?, ?) "
            "ON CONFLICT (party_a, party_b) DO UPDATE SET min_lead_s = excluded.min_lead_s",
            (a, b, min_lead_s),
        )

    # Liveness
    def get_liveness(self, party_id: str) -> Liveness | None:
        row = self._x(
            f"SELECT {_LIVENESS} FROM liveness WHERE party_id = ?", (party_id,)
        ).fetchone()
        return Liveness(*row) if row else None

    def silent_among(self, party_ids: Sequence[str]) -> dict[str, Liveness]:
        silent = [a.value for a in SILENT]
        found: dict[str, Liveness] = {}
        for marks, chunk in in_lists(party_ids):
            rows = self._x(
                f"SELECT {_LIVENESS} FROM liveness WHERE availability IN "
                f"({', '.join('?' * len(silent))}) AND party_id IN ({marks})",
                [*silent, *chunk],
            )
            found.update((row[0], Liveness(*row)) for row in rows)
        return found

    def put_liveness(self, liveness: Liveness) -> None:
        x = liveness
        self._x(
            f"INSERT INTO liveness ({_LIVENESS}) VALUES (?, ?, ?, ?) ON CONFLICT (party_id) "
            "DO UPDATE SET last_heartbeat = excluded.last_heartbeat, "
            "availability = excluded.availability, changed_at = excluded.changed_at",
            (x.party_id, x.last_heartbeat, x.availability, x.changed_at),
        )

    def list_liveness(self) -> list[Liveness]:
        return [Liveness(*r) for r in self._x(f"SELECT {_LIVENESS} FROM liveness")]

    # Messages and receipts
    def put_message(self, message: Message) -> None:
        m = message
        self._x(
            f"INSERT INTO messages ({_MESSAGE}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.id,
                m.sender,
                json.dumps(list(m.recipients)),
                m.kind,
                m.urgency,
                m.text,
                m.sent_at,
                m.ack_deadline,
                m.operation_id,
                m.alert_id,
                m.reply_to,
            ),
        )

    def get_message(self, message_id: str) -> Message | None:
        row = self._x(f"SELECT {_MESSAGE} FROM messages WHERE id = ?", (message_id,)).fetchone()
        return _message(row) if row else None

    def messages_between(self, start: float, end: float) -> list[Message]:
        rows = self._x(
            f"SELECT {_MESSAGE} FROM messages WHERE sent_at >= ? AND sent_at < ? ORDER BY sent_at",
            (start, end),
        )
        return [_message(r) for r in rows]

    def put_receipt(self, receipt: Receipt) -> None:
        r = receipt
        self._x(
            f"INSERT INTO receipts ({_RECEIPT}) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (message_id, party_id) DO UPDATE SET acked_at = excluded.acked_at, "
            "level = excluded.level, next_at = excluded.next_at",
            (r.message_id, r.party_id, r.acked_at, r.level, r.next_at),
        )

    def get_receipt(self, message_id: str, party_id: str) -> Receipt | None:
        row = self._x(
            f"SELECT {_RECEIPT} FROM receipts WHERE message_id = ? AND party_id = ?",
            (message_id, party_id),
        ).fetchone()
        return Receipt(*row) if row else None

    def receipts(self, message_id: str) -> list[Receipt]:
        rows = self._x(
            f"SELECT {_RECEIPT} FROM receipts WHERE message_id = ?", (message_id,)
        ).fetchall()
        return sorted((Receipt(*r) for r in rows), key=lambda r: r.party_id)

    def due_receipts(self, now: float, limit: int) -> list[Receipt]:
        rows = self._x(
            f"SELECT {_RECEIPT} FROM receipts WHERE next_at IS NOT NULL AND next_at <= ? "
            "ORDER BY next_at LIMIT ?",
            (now, limit),
        )
        return [Receipt(*r) for r in rows]

    def overdue_counts(self, now: float) -> dict[str, int]:
        rows = self._x(
            "SELECT r.party_id, count(*) FROM receipts r JOIN messages m ON m.id = r.message_id "
            "WHERE r.acked_at IS NULL AND m.ack_deadline IS NOT NULL AND m.ack_deadline < ? "
            "GROUP BY r.party_id",
            (now,),
        )
        return {p: int(n) for p, n in rows}

    def receipts_between(self, start: float, end: float) -> list[tuple[Message, Receipt]]:
        columns = (
            ", ".join(f"m.{c}" for c in _MESSAGE.split(", "))
            + ", "
            + ", ".join(f"r.{c}" for c in _RECEIPT.split(", "))
        )
        rows = self._x(
            f"SELECT {columns} FROM messages m JOIN receipts r ON r.message_id = m.id "
            "WHERE m.sent_at >= ? AND m.sent_at < ? ORDER BY m.sent_at",
            (start, end),
        )
        return [(_message(r[:11]), Receipt(*r[11:])) for r in rows]

    # Notices
    def notices_of(self, operation_id: str) -> dict[str, Notice]:
        rows = self._x(f"SELECT {_NOTICE} FROM notices WHERE operation_id = ?", (operation_id,))
        return {row[2]: _notice(row) for row in rows}

    def put_notices(self, notices: Sequence[Notice]) -> None:
        # An upsert may not meet a row twice: a pair given twice is merged as two puts would
        # leave it (the first's told fields, the last's activation and lateness).
        pairs: dict[tuple[str, str], Notice] = {}
        for n in notices:
            first = pairs.get((n.operation_id, n.party_id))
            pairs[n.operation_id, n.party_id] = (
                n if first is None else replace(first, active_at=n.active_at, late=n.late)
            )
        self._insert_rows(
            f"INSERT INTO notices ({_NOTICE})",
            [
                (n.operation_id, n.owner, n.party_id, n.told_at, n.active_at, n.required_s, n.late)
                for n in pairs.values()
            ],
            " ON CONFLICT (operation_id, party_id) DO UPDATE SET "
            "active_at = excluded.active_at, late = excluded.late",
        )

    # Statements over many rows
    def _insert_rows(self, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
        """``head VALUES (...), (...) tail``: one statement per ``ROWS_PER_INSERT`` rows."""
        for start in range(0, len(rows), ROWS_PER_INSERT):
            chunk = rows[start : start + ROWS_PER_INSERT]
            marks = "(" + ", ".join("?" * len(chunk[0])) + ")"
            self._x(
                f"{head} VALUES {', '.join([marks] * len(chunk))}{tail}",
                [value for row in chunk for value in row],
            )

    def notices_between(self, start: float, end: float) -> list[Notice]:
        rows = self._x(
            f"SELECT {_NOTICE} FROM notices WHERE told_at >= ? AND told_at < ? ORDER BY told_at",
            (start, end),
        )
        return [_notice(r) for r in rows]

    # Audit log
    def audit_head(self) -> AuditEntry | None:
        row = self._x(f"SELECT {_AUDIT} FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        return _audit(row) if row else None

    def audit_tip(self) -> AuditTip | None:
        row = self._x("SELECT seq, time, digest FROM audit_log ORDER BY seq DESC LIMIT 1")
        tip = row.fetchone()
        return AuditTip(*tip) if tip else None

    def audit_append(self, entry: AuditEntry) -> None:
        self._x(_AUDIT_INSERT, _audit_row(entry))

    def audit_entries(self, first_seq: int, last_seq: int) -> list[AuditEntry]:
        rows = self._x(
            f"SELECT {_AUDIT} FROM audit_log WHERE seq >= ? AND seq <= ? ORDER BY seq",
            (first_seq, last_seq),
        )
        return [_audit(r) for r in rows]

    def audit_seq_at(self, time: float) -> int:
        """The last sequence number written before ``time`` (0 if none)."""
        row = self._x(
            "SELECT coalesce(max(seq), 0) FROM audit_log WHERE time < ?", (time,)
        ).fetchone()
        return int(row[0]) if row else 0

    def put_seal(self, seal: Seal) -> None:
        self._x(
            "INSERT INTO audit_seals (seq, digest, time, signature) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (seq) DO NOTHING",
            (seal.seq, seal.digest, seal.time, seal.signature),
        )

    def seals(self, first_seq: int, last_seq: int) -> list[Seal]:
        rows = self._x(
            "SELECT seq, digest, time, signature FROM audit_seals WHERE seq >= ? AND seq <= ? "
            "ORDER BY seq",
            (first_seq, last_seq),
        )
        return [Seal(*r) for r in rows]

    # Webhook delivery
    def get_webhook_cursor(self, party_id: str) -> WebhookCursor | None:
        row = self._x(
            f"SELECT {_CURSOR} FROM webhook_cursors WHERE party_id = ?", (party_id,)
        ).fetchone()
        return WebhookCursor(*row) if row else None

    def put_webhook_cursor(self, cursor: WebhookCursor) -> None:
        c = cursor
        self._x(
            f"INSERT INTO webhook_cursors ({_CURSOR}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (party_id) DO UPDATE SET delivered = excluded.delivered, "
            "attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, "
            "lease_owner = excluded.lease_owner, lease_until = excluded.lease_until, "
            "last_error = excluded.last_error",
            (
                c.party_id,
                c.delivered,
                c.attempts,
                c.next_attempt_at,
                c.lease_owner,
                c.lease_until,
                c.last_error,
            ),
        )

    def webhook_backlog(self) -> list[tuple[PartySettings, WebhookCursor | None, int]]:
        rows = self._x(
            "SELECT s.party_id, s.webhook_url, s.webhook_secret, s.escalation_parties, "
            "c.party_id, c.delivered, c.attempts, c.next_attempt_at, c.lease_owner, "
            "c.lease_until, c.last_error, "
            "(SELECT coalesce(max(e.id), 0) FROM events e WHERE e.party_id = s.party_id) "
            "FROM party_settings s LEFT JOIN webhook_cursors c ON c.party_id = s.party_id "
            "WHERE s.webhook_url IS NOT NULL"
        )
        return [
            (
                PartySettings(r[0], r[1], r[2], tuple(json.loads(r[3]))),
                WebhookCursor(*r[4:11]) if r[4] is not None else None,
                int(r[11]),
            )
            for r in rows
        ]


ROWS_PER_INSERT = 100
"""Rows per multi-row INSERT, and values per ``IN`` list: statements stay small, and their
parameters far below SQLite's limit (32,766; 999 before 3.32)."""


def in_lists(values: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
    """The distinct values, sorted, in chunks of ``ROWS_PER_INSERT``: each with its ``?`` marks."""
    distinct = sorted(set(values))
    for start in range(0, len(distinct), ROWS_PER_INSERT):
        chunk = distinct[start : start + ROWS_PER_INSERT]
        yield ", ".join("?" * len(chunk)), chunk


_LIVENESS = "party_id, last_heartbeat, availability, changed_at"
_MESSAGE = (
    "id, sender, recipients, kind, urgency, text, sent_at, ack_deadline, operation_id, alert_id, "
    "reply_to"
)
_RECEIPT = "message_id, party_id, acked_at, level, next_at"
_NOTICE = "operation_id, owner, party_id, told_at, active_at, required_s, late"
_AUDIT = "seq, time, actor, action, subject, payload, prev, digest"
_CURSOR = "party_id, delivered, attempts, next_attempt_at, lease_owner, lease_until, last_error"


def _message(r: Sequence[Any]) -> Message:
    return Message(
        r[0], r[1], tuple(json.loads(r[2])), r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]
    )


def _notice(r: Sequence[Any]) -> Notice:
    return Notice(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]))


def _track_row(r: TrackReport) -> tuple[Any, ...]:
    """A track report as the columns both stores insert, from ``received_at`` on."""
    return (
        r.received_at,
        r.party_id,
        r.aircraft_id,
        r.time,
        r.lat,
        r.lon,
        r.alt,
        r.gs,
        r.trk,
        r.vs,
        r.operation_id,
    )


_AUDIT_INSERT = f"INSERT INTO audit_log ({_AUDIT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def _audit(r: Sequence[Any]) -> AuditEntry:
    return AuditEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])


def event_json(payload: dict[str, Any]) -> str:
    """An event's payload as stored: JSON for other parties' clients, made by orjson (the
    payloads of a hot-spot filing's conflict events were a sixth of its write's time through
    the json module). A number without a JSON form (NaN, infinity) is written as null, which a
    client can parse, where the json module wrote a bare NaN, which no JSON parser accepts; what
    orjson refuses (integers past 64 bits) goes through the json module."""
    try:
        return orjson.dumps(payload).decode()
    except TypeError:
        return json.dumps(_finite(payload), separators=(",", ":"))


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity as None, as orjson writes them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _audit_row(e: AuditEntry) -> tuple[Any, ...]:
    """The inverse of ``_audit``: an entry as the row of ``_AUDIT``. The payload is stored as
    the canonical JSON the entry was chained with, when the entry still has it."""
    if e.payload_json is not None:
        payload = e.payload_json.decode()
    else:
        payload = json.dumps(e.payload, separators=(",", ":"))
    return (e.seq, e.time, e.actor, e.action, e.subject, payload, e.prev, e.digest)
