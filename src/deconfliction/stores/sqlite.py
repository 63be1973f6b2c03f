"""SQLite store: the embedded default. One file, WAL, a 4D R*Tree index per kind of record.

Writes take the database lock up front (``BEGIN IMMEDIATE``), so every write transaction is
serializable by construction; readers never block in WAL mode. Commits are durable
(``synchronous=FULL``) unless configured otherwise: an acknowledged filing survives power loss.

The R*Tree keeps 32-bit floats; we round every box outward to float32 ourselves and express time
in seconds since a per-database epoch, so the index stays conservative and precise to well under a
second for years.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import random
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from deconfliction.core.errors import Unavailable
from deconfliction.core.model import (
    Event,
    NewEvent,
    Operation,
    OperationDetails,
    OperationState,
    Party,
    Subscription,
    TacticalLease,
    TrackReport,
)
from deconfliction.geo import Volume
from deconfliction.geo.volume import boxes_meet
from deconfliction.stores.codec import (
    decode_volumes,
    encode_stored,
    encode_volumes,
    is_encoded,
)
from deconfliction.stores.shared import (
    RecentOperations,
    SharedTx,
    _track_row,
    event_json,
)
from deconfliction.stores.turns import Turns

log = logging.getLogger("deconfliction.sqlite")

T = TypeVar("T")

_MIGRATIONS: list[str] = [
    # 1: parties, operations, subscriptions, events, write record
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE parties (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
    CREATE TABLE operations (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        version TEXT NOT NULL,
        revision INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        details TEXT NOT NULL
    );
    CREATE INDEX operations_owner ON operations (owner, state);
    CREATE TABLE operation_volumes (
        op_rowid INTEGER NOT NULL,
        ord INTEGER NOT NULL,
        footprint BLOB NOT NULL,
        alt_lo REAL NOT NULL, alt_hi REAL NOT NULL,
        t_start REAL NOT NULL, t_end REAL NOT NULL,
        PRIMARY KEY (op_rowid, ord)
    ) WITHOUT ROWID;
    CREATE VIRTUAL TABLE operation_index USING rtree(
        id, lon0, lon1, lat0, lat1, alt0, alt1, t0, t1, +op_rowid INTEGER
    );
    CREATE TABLE operation_index_rows (op_rowid INTEGER NOT NULL, index_id INTEGER NOT NULL,
        PRIMARY KEY (op_rowid, index_id)) WITHOUT ROWID;
    CREATE TABLE subscriptions (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        version TEXT NOT NULL,
        notification_index INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX subscriptions_owner ON subscriptions (owner);
    CREATE TABLE subscription_volumes (
        op_rowid INTEGER NOT NULL,
        ord INTEGER NOT NULL,
        footprint BLOB NOT NULL,
        alt_lo REAL NOT NULL, alt_hi REAL NOT NULL,
        t_start REAL NOT NULL, t_end REAL NOT NULL,
        PRIMARY KEY (op_rowid, ord)
    ) WITHOUT ROWID;
    CREATE VIRTUAL TABLE subscription_index USING rtree(
        id, lon0, lon1, lat0, lat1, alt0, alt1, t0, t1, +op_rowid INTEGER
    );
    CREATE TABLE subscription_index_rows (op_rowid INTEGER NOT NULL, index_id INTEGER NOT NULL,
        PRIMARY KEY (op_rowid, index_id)) WITHOUT ROWID;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        party_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        time REAL NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE INDEX events_party ON events (party_id, id);
    -- No longer written: write records are read from the audit log (migration 2).
    CREATE TABLE operation_writes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        operation_id TEXT NOT NULL,
        version TEXT NOT NULL,
        owner TEXT NOT NULL,
        state TEXT NOT NULL,
        time REAL NOT NULL,
        key TEXT NOT NULL,
        conflicts TEXT NOT NULL
    );
    """,
    # 2: hotline, liveness, notices, audit log, webhook delivery
    """
    CREATE TABLE party_settings (
        party_id TEXT PRIMARY KEY,
        webhook_url TEXT,
        webhook_secret TEXT,
        escalation_parties TEXT NOT NULL
    );
    CREATE TABLE lead_times (
        party_a TEXT NOT NULL, party_b TEXT NOT NULL, min_lead_s REAL NOT NULL,
        PRIMARY KEY (party_a, party_b)
    );
    CREATE TABLE liveness (
        party_id TEXT PRIMARY KEY,
        last_heartbeat REAL,
        availability TEXT NOT NULL,
        changed_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        kind TEXT NOT NULL,
        urgency INTEGER NOT NULL,
        text TEXT NOT NULL,
        sent_at REAL NOT NULL,
        ack_deadline REAL,
        operation_id TEXT,
        alert_id TEXT,
        reply_to TEXT
    );
    CREATE INDEX messages_sent ON messages (sent_at);
    CREATE TABLE receipts (
        message_id TEXT NOT NULL,
        party_id TEXT NOT NULL,
        acked_at REAL,
        level INTEGER NOT NULL,
        next_at REAL,
        PRIMARY KEY (message_id, party_id)
    );
    CREATE INDEX receipts_due ON receipts (next_at);
    CREATE INDEX receipts_party ON receipts (party_id, acked_at);
    CREATE TABLE notices (
        operation_id TEXT NOT NULL,
        party_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        told_at REAL NOT NULL,
        active_at REAL NOT NULL,
        required_s REAL NOT NULL,
        late INTEGER NOT NULL,
        PRIMARY KEY (operation_id, party_id)
    );
    CREATE INDEX notices_told ON notices (told_at);
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        payload TEXT NOT NULL,
        prev TEXT NOT NULL,
        digest TEXT NOT NULL
    );
    CREATE INDEX audit_time ON audit_log (time);
    CREATE TABLE audit_seals (
        seq INTEGER PRIMARY KEY,
        digest TEXT NOT NULL,
        time REAL NOT NULL,
        signature TEXT NOT NULL
    );
    CREATE TABLE webhook_cursors (
        party_id TEXT PRIMARY KEY,
        delivered INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL,
        lease_owner TEXT,
        lease_until REAL NOT NULL,
        last_error TEXT
    );
    CREATE INDEX events_time ON events (time);
    """,
    # 3: tactical: track reports (append-only, pruned) and the lease of the cycle owner
    """
    CREATE TABLE track_reports (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        received_at REAL NOT NULL,
        party_id TEXT NOT NULL,
        aircraft_id TEXT NOT NULL,
        time REAL NOT NULL,
        lat REAL NOT NULL, lon REAL NOT NULL, alt REAL NOT NULL,
        gs REAL NOT NULL, trk REAL NOT NULL, vs REAL NOT NULL,
        operation_id TEXT
    );
    CREATE INDEX track_reports_received ON track_reports (received_at);
    CREATE TABLE tactical_lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        owner TEXT NOT NULL,
        until REAL NOT NULL,
        since REAL NOT NULL
    );
    """,
    # 4: fewer pages per write (12 -> 9 for a filing; every page is a WAL frame to sync):
    # (X'560100000000' is stores.codec's empty list of volumes)
    # volumes live in their record's row (stores.codec, as on PostgreSQL), an index entry is found
    # again by searching the index with its record's volumes instead of through a table of
    # index ids, and the audit log is searched by time through its seq (times never decrease).
    """
    ALTER TABLE operations ADD COLUMN volumes BLOB NOT NULL DEFAULT X'560100000000';
    UPDATE operations SET volumes = coalesce((SELECT pack_volumes(ord, footprint, alt_lo,
        alt_hi, t_start, t_end) FROM operation_volumes WHERE op_rowid = operations.rowid), X'560100000000');
    DROP TABLE operation_volumes;
    DROP TABLE operation_index_rows;
    ALTER TABLE subscriptions ADD COLUMN volumes BLOB NOT NULL DEFAULT X'560100000000';
    UPDATE subscriptions SET volumes = coalesce((SELECT pack_volumes(ord, footprint, alt_lo,
        alt_hi, t_start, t_end) FROM subscription_volumes WHERE op_rowid = subscriptions.rowid),
        X'560100000000');
    DROP TABLE subscription_volumes;
    DROP TABLE subscription_index_rows;
    DROP INDEX audit_time;
    """,
    # 5: the indexes rebuilt in INDEX_UNITS (see there), in which the R*Tree splits every axis
    # (its numbers as they were then: a migration, once released, never changes).
    "".join(
        f"""
    CREATE VIRTUAL TABLE {index}_5 USING rtree(
        id, lon0, lon1, lat0, lat1, alt0, alt1, t0, t1, +op_rowid INTEGER
    );
    INSERT INTO {index}_5 SELECT id, lon0 * 128, lon1 * 128, lat0 * 128, lat1 * 128,
        alt0 / 8, alt1 / 8, t0 / 64, t1 / 64, op_rowid FROM {index} ORDER BY id;
    DROP TABLE {index};
    ALTER TABLE {index}_5 RENAME TO {index};
    """
        for index in ("operation_index", "subscription_index")
    ),
    # 6: volumes still in the form migration 4 and the code of its day wrote (a volume's head
    # and footprint, one after another, with no head for the list: see _recode_volumes) are
    # rewritten in stores.codec's, which the store has read since; files of schema 4 and 5
    # made before the change could not be read.
    """
    UPDATE operations SET volumes = recode_volumes(volumes) WHERE NOT volumes_encoded(volumes);
    UPDATE subscriptions SET volumes = recode_volumes(volumes)
        WHERE NOT volumes_encoded(volumes);
    """,
]

INDEX_UNITS = (1 / 128, 1 / 128, 8.0, 64.0)
"""What one unit of the R*Tree's coordinates is (schema 5 on): 1/128 degree of longitude and of
latitude (about 0.87 km), 8 m of altitude and 64 s of time since the store's epoch.

SQLite's R*Tree chooses the axis of each split by the sum of its nodes' margins (the sum of
their extents), which is not the same in degrees, metres and seconds: in those raw units (schema
1 to 4) a volume's hours of time (10^4 s) dwarfed its tenths of a degree, nearly every split cut
time, and the leaves stretched over the continent, so a 10 km / 1 h search visited dozens of
them. In these units a typical volume is about as large along every axis. Measured on the
benchmark's million volumes, built alike: the raw R*Tree search went from 0.120 to 0.023 ms
(median). Powers of two, so that scaling is exact and the boxes, rounded outward to float32,
still contain their volumes."""


_OP_COLUMNS = (
    "rowid, id, owner, state, priority, version, revision, created_at, updated_at, details, volumes"
)
_SUB_COLUMNS = "rowid, id, owner, version, notification_index, created_at, updated_at, volumes"


_SCHEMA_4_VOLUME = struct.Struct("<4dI")
"""A volume as schema 4 first kept it: altitude band, time window, its footprint's length."""


def _recode_volumes(blob: bytes) -> bytes:
    """SQL ``recode_volumes(blob)``: volumes packed as schema 4 first kept them, in
    ``stores.codec``'s form (migration 6)."""
    volumes, offset = [], 0
    while offset < len(blob):
        lo, hi, t0, t1, n = _SCHEMA_4_VOLUME.unpack_from(blob, offset)
        offset += _SCHEMA_4_VOLUME.size
        volumes.append((lo, hi, t0, t1, bytes(blob[offset : offset + n])))
        offset += n
    return encode_stored(volumes)


class _PackVolumes:
    """SQL aggregate ``pack_volumes(ord, footprint, alt_lo, alt_hi, t_start, t_end)``: the
    volume rows of schema 3 as the one blob schema 4 keeps (``stores.codec``, migration 4)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, bytes, float, float, float, float]] = []

    def step(self, ord_: int, footprint: bytes, lo: float, hi: float, t0: float, t1: float) -> None:
        self.rows.append((ord_, footprint, lo, hi, t0, t1))

    def finalize(self) -> bytes:
        rows = sorted(self.rows, key=lambda r: r[0])
        return encode_stored([(lo, hi, t0, t1, bytes(fp)) for _, fp, lo, hi, t0, t1 in rows])


class _Spatial:
    """The shared shape of operations and subscriptions: rows with their volumes, a 4D index."""

    def __init__(
        self, table: str, epoch: float, units: tuple[float, float, float, float] = INDEX_UNITS
    ) -> None:
        self.table = table
        self.index = f"{table[:-1]}_index"
        self.epoch = epoch
        self.scale = tuple(1.0 / u for u in units)
        self.meets = (
            "lon1 >= ? AND lon0 <= ? AND lat1 >= ? AND lat0 <= ? "
            "AND alt1 >= ? AND alt0 <= ? AND t1 >= ? AND t0 <= ?"
        )
        """The index entries whose boxes meet the box given as the eight parameters."""
        self._search = f"SELECT op_rowid FROM {self.index} WHERE {self.meets}"
        self._entries = f"SELECT id FROM {self.index} WHERE {self.meets} AND op_rowid = ?"

    def boxes(self, volumes: Sequence[Volume]) -> list[tuple[float, ...]]:
        """The index boxes of ``volumes`` in the index's units.

        The R*Tree keeps float32 and rounds each stored box outward (lower bounds down, upper
        bounds up), so a stored box still contains its volume; a search compares the stored
        bounds with its own in double precision, so a search box needs no rounding."""
        x, y, z, t = self.scale
        e = self.epoch
        return [
            (lon0 * x, lon1 * x, lat0 * y, lat1 * y, alt0 * z, alt1 * z, (t0 - e) * t, (t1 - e) * t)
            for v in volumes
            for lon0, lon1, lat0, lat1, alt0, alt1, t0, t1 in v.index_boxes()
        ]

    def index_volumes(self, db: sqlite3.Connection, rowid: int, volumes: Sequence[Volume]) -> None:
        db.executemany(
            f"INSERT INTO {self.index} VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*box, rowid) for box in self.boxes(volumes)],
        )

    def unindex(self, db: sqlite3.Connection, rowid: int, volumes: Sequence[Volume]) -> None:
        """Remove the record's index entries, found by searching with its volumes: each entry
        is a box that contains one of them, so it meets that volume's box as computed now."""
        ids = {
            r[0] for box in self.boxes(volumes) for r in db.execute(self._entries, (*box, rowid))
        }
        if ids:
            db.executemany(f"DELETE FROM {self.index} WHERE id = ?", [(i,) for i in ids])

    def rewrite(
        self,
        db: sqlite3.Connection,
        rowid: int,
        old: bytes | None,
        new: Sequence[Volume],
        new_packed: bytes,
        indexed: bool,
        was_indexed: bool,
    ) -> None:
        """Bring the index up to date for a record whose packed volumes were ``old`` (None: a
        new record) and now are ``new``; unchanged volumes keep their entries."""
        if old is not None and was_indexed:
            if indexed and old == new_packed:
                return
            self.unindex(db, rowid, decode_volumes(old))
        if indexed:
            self.index_volumes(db, rowid, new)

    def candidates(self, db: sqlite3.Connection, volumes: Sequence[Volume]) -> set[int]:
        found: set[int] = set()
        for box in self.boxes(volumes):
            found.update(r[0] for r in db.execute(self._search, box))
        return found


class SqliteTx(SharedTx):
    """A transaction on one connection; see :class:`deconfliction.stores.base.Tx`."""

    def _x(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def __init__(
        self, db: sqlite3.Connection, ops: _Spatial, subs: _Spatial, recent: RecentOperations
    ) -> None:
        self.db = db
        self._ops = ops
        self._subs = subs
        self._recent = recent

    # Parties
    def add_party(self, party: Party) -> None:
        self.db.execute(
            "INSERT INTO parties VALUES (?, ?, ?)", (party.id, party.name, party.created_at)
        )

    def get_party(self, party_id: str) -> Party | None:
        row = self.db.execute("SELECT * FROM parties WHERE id = ?", (party_id,)).fetchone()
        return Party(*row) if row else None

    def list_parties(self) -> list[Party]:
        return [Party(*r) for r in self.db.execute("SELECT * FROM parties ORDER BY name")]

    # Operations
    def _operations(self, where: str, params: tuple[Any, ...]) -> list[Operation]:
        rows = self.db.execute(f"SELECT {_OP_COLUMNS} FROM operations WHERE {where}", params)
        rows = rows.fetchall()
        if not rows:
            return []
        recent = self._recent
        out = []
        for r in rows:
            op = recent.get(r[1], r[5])
            if op is None:
                op = Operation(
                    id=r[1],
                    owner=r[2],
                    state=OperationState(r[3]),
                    priority=r[4],
                    volumes=decode_volumes(r[10]),
                    version=r[5],
                    revision=r[6],
                    created_at=r[7],
                    updated_at=r[8],
                    details=OperationDetails.from_json(json.loads(r[9])),
                )
                recent.put(op)
            out.append(op)
        return out

    def get_operation(self, operation_id: str) -> Operation | None:
        found = self._operations("id = ?", (operation_id,))
        return found[0] if found else None

    def _operations_by_id(self, ids: Sequence[str]) -> list[Operation]:
        return self._operations(f"id IN ({', '.join('?' * len(ids))})", tuple(ids))

    def put_operation(self, operation: Operation) -> None:
        op = operation
        self._recent.put(op)
        packed = encode_volumes(op.volumes)
        row = (
            op.id,
            op.owner,
            op.state.value,
            op.priority,
            op.version,
            op.revision,
            op.created_at,
            op.updated_at,
            json.dumps(op.details.to_json()),
            packed,
        )
        inserted = self.db.execute(
            "INSERT INTO operations (id, owner, state, priority, version, revision, created_at, "
            "updated_at, details, volumes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING RETURNING rowid",
            row,
        ).fetchone()
        if inserted is not None:  # a new operation: nothing old to remove
            if op.live:
                self._ops.index_volumes(self.db, inserted[0], op.volumes)
            return
        rowid, state, old = self.db.execute(
            "SELECT rowid, state, volumes FROM operations WHERE id = ?", (op.id,)
        ).fetchone()
        self.db.execute(
            "UPDATE operations SET owner = ?, state = ?, priority = ?, version = ?, "
            "revision = ?, updated_at = ?, details = ?, volumes = ? WHERE rowid = ?",
            (*row[1:6], *row[7:], rowid),
        )
        self._ops.rewrite(
            self.db, rowid, old, op.volumes, packed, op.live, state != OperationState.ENDED.value
        )

    def operation_candidates(
        self, volumes: Sequence[Volume], *, exclude_owner: str | None = None
    ) -> list[Operation]:
        rowids = self._ops.candidates(self.db, volumes)
        if not rowids:
            return []
        marks = ",".join("?" * len(rowids))
        return self._operations(
            f"rowid IN ({marks}) AND owner != ? AND state != 'Ended'",
            (*rowids, exclude_owner or ""),
        )

    def candidate_versions(
        self, volumes: Sequence[Volume], *, exclude_owner: str | None = None
    ) -> frozenset[tuple[str, str]]:
        # The index joined to the rows: one SQLite call per box, where the search and the read of
        # the rows took one per box and one more. (Each call lets go of the GIL and waits to get
        # it back; in a hot spot a refused write's turn took 0.8 ms of wall time for 0.25 ms of
        # CPU.)
        ops = self._ops
        sql = (
            f"SELECT o.id, o.version FROM {ops.index} JOIN operations AS o "
            f"ON o.rowid = op_rowid WHERE {ops.meets} AND o.owner != ? AND o.state != 'Ended'"
        )
        owner = exclude_owner or ""
        found: set[tuple[str, str]] = set()
        for box in ops.boxes(volumes):
            found.update(self.db.execute(sql, (*box, owner)))
        return frozenset(found)

    def list_operations(
        self, owner: str, *, include_ended: bool = False, limit: int = 1000
    ) -> list[Operation]:
        state = "" if include_ended else " AND state != 'Ended'"
        return self._operations(f"owner = ?{state} ORDER BY rowid LIMIT ?", (owner, limit))

    # Subscriptions
    def _subscriptions(self, where: str, params: tuple[Any, ...]) -> list[Subscription]:
        rows = self.db.execute(f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE {where}", params)
        return [
            Subscription(r[1], r[2], decode_volumes(r[7]), r[3], r[4], r[5], r[6]) for r in rows
        ]

    def get_subscription(self, subscription_id: str) -> Subscription | None:
        found = self._subscriptions("id = ?", (subscription_id,))
        return found[0] if found else None

    def put_subscription(self, subscription: Subscription) -> None:
        s = subscription
        packed = encode_volumes(s.volumes)
        before = self.db.execute(
            "SELECT volumes FROM subscriptions WHERE id = ?", (s.id,)
        ).fetchone()
        rowid = self.db.execute(
            "INSERT INTO subscriptions (id, owner, version, notification_index, created_at, "
            "updated_at, volumes) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
            "notification_index = excluded.notification_index, "
            "updated_at = excluded.updated_at, volumes = excluded.volumes RETURNING rowid",
            (s.id, s.owner, s.version, s.notification_index, s.created_at, s.updated_at, packed),
        ).fetchone()[0]
        old = before[0] if before else None
        self._subs.rewrite(self.db, rowid, old, s.volumes, packed, True, True)

    def delete_subscription(self, subscription_id: str) -> None:
        row = self.db.execute(
            "DELETE FROM subscriptions WHERE id = ? RETURNING rowid, volumes", (subscription_id,)
        ).fetchone()
        if row:
            self._subs.unindex(self.db, row[0], decode_volumes(row[1]))

    def subscription_candidates(self, volumes: Sequence[Volume]) -> list[Subscription]:
        rowids = self._subs.candidates(self.db, volumes)
        if not rowids:
            return []
        return self._subscriptions(f"rowid IN ({','.join('?' * len(rowids))})", tuple(rowids))

    def list_subscriptions(self, owner: str) -> list[Subscription]:
        return self._subscriptions("owner = ? ORDER BY rowid", (owner,))

    # Events and the write record
    def add_event(self, party_id: str, kind: str, time: float, payload: dict[str, Any]) -> int:
        cur = self.db.execute(
            "INSERT INTO events (party_id, kind, time, payload) VALUES (?, ?, ?, ?)",
            (party_id, kind, time, event_json(payload)),
        )
        return int(cur.lastrowid or 0)

    def add_events(self, events: Sequence[NewEvent]) -> None:
        self._insert_rows(
            "INSERT INTO events (party_id, kind, time, payload)",
            [(e.party_id, e.kind, e.time, event_json(e.payload)) for e in events],
        )

    def events_after(self, party_id: str, after: int, limit: int) -> list[Event]:
        rows = self.db.execute(
            "SELECT id, party_id, kind, time, payload FROM events WHERE party_id = ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (party_id, after, limit),
        )
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def latest_event_ids(self, party_ids: Sequence[str]) -> dict[str, int]:
        if not party_ids:
            return {}
        marks = ",".join("?" * len(party_ids))
        rows = self.db.execute(
            f"SELECT party_id, max(id) FROM events WHERE party_id IN ({marks}) GROUP BY party_id",
            tuple(party_ids),
        )
        return {p: int(i) for p, i in rows}

    def audit_seq_at(self, time: float) -> int:
        """The last sequence number written before ``time`` (0 if none), by a binary search
        over seq: the log's times never decrease along it (services.audit.append), so no index
        on time is kept for this (it was a page more to write on every write; migration 4)."""
        db = self.db
        first, last = db.execute("SELECT min(seq), max(seq) FROM audit_log").fetchone()
        if first is None:
            return 0
        found, lo, hi = 0, first, last
        while lo <= hi:
            mid = (lo + hi) // 2
            seq, at = db.execute(
                "SELECT seq, time FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)
            ).fetchone()
            if at < time:
                found, lo = seq, seq + 1
            else:
                hi = mid - 1
        return found

    def latest_event_id(self, party_id: str) -> int:
        row = self.db.execute(
            "SELECT coalesce(max(id), 0) FROM events WHERE party_id = ?", (party_id,)
        ).fetchone()
        return int(row[0])

    def events_between(self, start: float, end: float, kinds: Sequence[str]) -> list[Event]:
        marks = ",".join("?" * len(kinds))
        rows = self.db.execute(
            "SELECT id, party_id, kind, time, payload FROM events WHERE time >= ? AND time < ? "
            f"AND kind IN ({marks}) ORDER BY id",
            (start, end, *kinds),
        )
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    # Tactical: track reports and the cycle lease
    def add_track_reports(self, reports: Sequence[TrackReport]) -> None:
        self.db.executemany(
            "INSERT INTO track_reports (received_at, party_id, aircraft_id, time, lat, lon, alt, "
            "gs, trk, vs, operation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_track_row(r) for r in reports],
        )

    def track_reports_after(self, after: int, limit: int) -> list[TrackReport]:
        rows = self.db.execute(
            "SELECT party_id, aircraft_id, time, lat, lon, alt, gs, trk, vs, operation_id, "
            "received_at, seq FROM track_reports WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [TrackReport(*r) for r in rows]

    def prune_track_reports(self, received_before: float) -> int:
        cur = self.db.execute("DELETE FROM track_reports WHERE received_at < ?", (received_before,))
        return int(cur.rowcount)

    def get_tactical_lease(self) -> TacticalLease | None:
        row = self.db.execute("SELECT owner, until, since FROM tactical_lease").fetchone()
        return TacticalLease(*row) if row else None

    def put_tactical_lease(self, lease: TacticalLease) -> None:
        self.db.execute(
            "INSERT INTO tactical_lease VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "owner = excluded.owner, until = excluded.until, since = excluded.since",
            (lease.owner, lease.until, lease.since),
        )


WAL_RESTART_FRAMES = 4_096
"""WAL frames (pages: 16 MiB at 4 KiB) past which the checkpointer restarts the WAL."""
RESTART_WAIT_MS = 10
"""How long a RESTART, holding the writers' queue, waits for readers of older snapshots."""
WAL_KEEP_BYTES = 64 << 20
"""The WAL file is cut back to this size when it restarts (``journal_size_limit``): a burst
that grew it does not leave it large for good."""


class SqliteStore:
    """The embedded store. Thread-safe: each thread gets its own connection."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 10_000,
        mmap_bytes: int = 1 << 30,
        max_attempts: int = 8,
        group_commit: bool = True,
        checkpoint_every_s: float = 1.0,
    ) -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.mmap_bytes = mmap_bytes
        self.max_attempts = max_attempts
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock_fds: list[int] = []
        self._lock = threading.Lock()
        self.group_commit = group_commit
        self.max_batch = 64
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._in_flight = 0
        """Writes under way or waiting (group commit): the first of a quiet moment goes alone."""
        self._turns = Turns()
        self.checkpoint_every_s = checkpoint_every_s
        """How often the checkpointer copies committed pages into the database file (0: SQLite
        does it itself, inside the commit that crosses 1,000 pages of WAL)."""
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()
        self._dirty = False
        self._migrate()
        db = self._connection()
        self.epoch = float(db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
        self._ops = _Spatial("operations", self.epoch)
        self._subs = _Spatial("subscriptions", self.epoch)
        self._recent = RecentOperations()

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {self.synchronous}")
            # Reads through a memory map: a third off every R*Tree lookup. (Writes still go
            # through SQLite's own I/O, so a failing disk can stop the process, not corrupt data.)
            db.execute(f"PRAGMA mmap_size = {int(self.mmap_bytes)}")
            if self.checkpoint_every_s > 0:
                db.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's work
            db.execute(f"PRAGMA journal_size_limit = {WAL_KEEP_BYTES}")
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def _migrate(self) -> None:
        db = self._connection()
        db.create_aggregate("pack_volumes", 6, _PackVolumes)  # migration 4
        db.create_function("volumes_encoded", 1, is_encoded, deterministic=True)  # migration 6
        db.create_function("recode_volumes", 1, _recode_volumes, deterministic=True)
        db.execute("BEGIN IMMEDIATE")
        try:
            current = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[current:], start=current + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                if number == 1:
                    # Hour-aligned so index times stay small and exact in float32 for years.
                    epoch = float(int(time.time()) // 3600 * 3600)
                    db.execute("INSERT INTO meta VALUES ('epoch', ?)", (repr(epoch),))
                db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        return int(self._connection().execute("PRAGMA user_version").fetchone()[0])

    def transact(
        self,
        fn: Callable[[SqliteTx], T],
        *,
        write: bool = True,
        priority: int = 0,
        touches: Sequence[Volume] = (),
    ) -> T:
        if not write:
            return self._transact(fn, write=False)
        if threading.current_thread() is self._writer:
            raise RuntimeError("A write transaction cannot start another one.")
        self._note_write()
        if not self.group_commit:
            return self._transact_alone(fn, priority)
        with self._lock:
            alone = self._in_flight == 0  # nobody to share a commit with: no hand-over
            self._in_flight += 1
        try:
            if alone:
                return self._transact_alone(fn, priority)
            job = _Job(fn, priority, self._ops.boxes(touches))
            self._start_writer()
            self._jobs.put(job)
            job.done.wait()
            if job.error is not None:
                raise job.error
            return job.result  # type: ignore[no-any-return]
        finally:
            with self._lock:
                self._in_flight -= 1

    def _transact_alone(self, fn: Callable[[SqliteTx], T], priority: int) -> T:
        with self._turns.turn(priority):
            fd = self._writer_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                return self._transact(fn, write=True)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _start_writer(self) -> None:
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop, name="sqlite-writer", daemon=True
                    )
                    self._writer.start()

    def _note_write(self) -> None:
        """A write is about to commit: the checkpointer runs, and has work at its next round.
        (Marked before the commit: the checkpointer may come early, never late.)"""
        self._dirty = True
        if self._checkpointer is None and self.checkpoint_every_s > 0:
            with self._lock:
                if self._checkpointer is None:
                    self._checkpointer = threading.Thread(
                        target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True
                    )
                    self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """Copies committed pages from the WAL into the database file, off every writer's path.

        Left to SQLite, the commit that crosses 1,000 pages of WAL does the copy itself, inside
        the writer's turn: on the million-operation world that was 1 commit in 75 taking
        15-45 ms, and a third of the mean commit time (docs/benchmarks.md). Here a thread of its
        own does it every ``checkpoint_every_s`` after a write, in SQLite's C code, without the
        GIL. PASSIVE never waits for, nor blocks, readers and writers; should the WAL still grow
        past ``WAL_RESTART_FRAMES`` (writes that never leave it fully copied at a writer's
        start), a RESTART, taken in the writers' queue, makes the next writer begin it again
        from the top.
        """
        while not self._closing.wait(self.checkpoint_every_s):
            if not self._dirty:
                continue
            self._dirty = False
            try:
                self.checkpoint()
            except sqlite3.Error as exc:  # busy or failing: the next round tries again
                log.warning("WAL checkpoint failed: %s", exc)
                self._dirty = True

    def checkpoint(self) -> tuple[int, int]:
        """One checkpoint (PASSIVE, then RESTART if the WAL has grown long): the WAL's frames
        and how many of them are in the database file now."""
        db = self._connection()
        _, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames >= WAL_RESTART_FRAMES:
            # Under sustained writes SQLite's own write lock is nearly always held: a RESTART
            # that only tried then would fail round after round while the WAL grew, and every
            # commit appending to a growing file costs a sync of its size too. So the RESTART
            # takes the writers' queue first (writers of every process wait there meanwhile),
            # then waits at most RESTART_WAIT_MS for readers of older snapshots. What is left
            # to copy is what came after the PASSIVE above. Still busy (a long reader), it does
            # what PASSIVE does, and the next round tries again.
            fd = self._writer_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                db.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
                try:
                    _, frames, copied = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                finally:
                    db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return frames, copied

    def _write_loop(self) -> None:
        """Group commit: writes waiting at one moment share one transaction and one sync.

        Each write runs in its own savepoint, one after another, so each sees the ones before it
        exactly as if they had committed one by one (serializable), and a refused write (a
        missing key, a stale version) rolls back alone. Every caller is answered only after the
        shared COMMIT is durable.
        """
        fd = self._writer_fd()
        deferred: list[_Job] = []
        stopping = False
        while deferred or not stopping:
            arrived: list[_Job | None] = [] if deferred else [self._jobs.get()]
            while not stopping and (not arrived or arrived[-1] is not None):
                try:
                    arrived.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            stopping = stopping or None in arrived
            batch, deferred = self._choose_batch(deferred, [j for j in arrived if j is not None])
            if not batch:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._run_batch(batch)
            except BaseException as exc:  # never leave a caller waiting without an answer
                _fail(batch, exc)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                for done in batch:
                    done.done.set()

    def _choose_batch(
        self, deferred: list[_Job], arrived: list[_Job]
    ) -> tuple[list[_Job], list[_Job]]:
        """The writes to commit together now, and those that wait for the next commit.

        Writes into one area would refuse each other in lockstep (each one's key lacks the
        versions the others are writing), so a batch takes only writes whose areas are apart;
        the rest go first next time. The party refused most often lately (the priority hint)
        goes first; among equals, those deferred before, then the new arrivals shuffled (in
        arrival order whoever finishes its search first would always win).
        """
        random.shuffle(arrived)
        jobs = sorted(deferred + arrived, key=lambda j: -j.priority)
        batch: list[_Job] = []
        taken: list[tuple[float, ...]] = []
        deferred: list[_Job] = []
        for job in jobs:
            if len(batch) < self.max_batch and not any(
                boxes_meet(a, b) for a in job.boxes for b in taken
            ):
                batch.append(job)
                taken.extend(job.boxes)
            else:
                deferred.append(job)
        return batch, deferred

    def _run_batch(self, batch: list[_Job]) -> None:
        if len(batch) == 1:
            # Alone in its transaction, a write needs no savepoint: a refusal rolls it all back.
            # Three SQLite calls fewer (see SqliteTx.candidate_versions on why calls count).
            job = batch[0]
            try:
                job.result = self._transact(job.fn, write=True)
            except Exception as exc:
                job.error = exc
            return
        db = self._connection()
        for attempt in range(self.max_attempts):
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    _fail(batch, exc)
                    return
                time.sleep(min(0.2, 0.005 * 2**attempt) * random.random())
                continue
            try:
                for job in batch:
                    db.execute("SAVEPOINT job")
                    try:
                        job.result, job.error = (
                            job.fn(SqliteTx(db, self._ops, self._subs, self._recent)),
                            None,
                        )
                        db.execute("RELEASE job")
                    except sqlite3.OperationalError as exc:
                        if _is_busy(exc):
                            raise
                        job.result, job.error = None, exc
                        db.execute("ROLLBACK TO job")
                        db.execute("RELEASE job")
                    except Exception as exc:
                        job.result, job.error = None, exc
                        db.execute("ROLLBACK TO job")
                        db.execute("RELEASE job")
                db.execute("COMMIT")
                return
            except sqlite3.OperationalError as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if not _is_busy(exc):
                    _fail(batch, exc)
                    return
            except BaseException as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                _fail(batch, exc)
                return
        _fail(batch, Unavailable("The database is busy; retry shortly."))

    def _writer_fd(self) -> int:
        """This thread's handle on ``<db>.lock``, the writers' queue across processes.

        SQLite makes a writer that finds the database locked sleep and poll (up to 100 ms at a
        time), which turns every busy moment into tail latency. Writers instead wait on an
        exclusive ``flock``, which the kernel hands over the moment it is released, and which a
        process that dies (even by kill -9) releases with it. SQLite's own lock still guards
        the data; this one only orders the queue.
        """
        fd: int | None = getattr(self._local, "lock_fd", None)
        if fd is None:
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._local.lock_fd = fd
            with self._lock:
                self._lock_fds.append(fd)
        return fd

    def _transact(self, fn: Callable[[SqliteTx], T], *, write: bool) -> T:
        db = self._connection()
        for attempt in range(self.max_attempts):
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                time.sleep(min(0.2, 0.005 * 2**attempt) * random.random())
                continue
            try:
                result = fn(SqliteTx(db, self._ops, self._subs, self._recent))
                db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if not _is_busy(exc):
                    raise
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        raise Unavailable("The database is busy; retry shortly.")

    def bulk_load(self, operations: Iterable[Operation], *, batch: int = 20_000) -> int:
        """Insert operations directly (no checks, no events): for seeding and benchmarks."""
        db = self._connection()
        count = 0
        pending: list[Operation] = []

        def flush() -> None:
            self._note_write()  # or the WAL would hold the whole load until the close
            db.execute("BEGIN IMMEDIATE")
            try:
                next_rowid = db.execute(
                    "SELECT coalesce(max(rowid), 0) + 1 FROM operations"
                ).fetchone()[0]
                op_rows, idx_rows = [], []
                for i, op in enumerate(pending):
                    rowid = next_rowid + i
                    op_rows.append(
                        (
                            rowid,
                            op.id,
                            op.owner,
                            op.state.value,
                            op.priority,
                            op.version,
                            op.revision,
                            op.created_at,
                            op.updated_at,
                            json.dumps(op.details.to_json()),
                            encode_volumes(op.volumes),
                        )
                    )
                    if op.live:
                        idx_rows.extend((*box, rowid) for box in self._ops.boxes(op.volumes))
                db.executemany(
                    f"INSERT INTO operations ({_OP_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    op_rows,
                )
                first = db.execute(
                    "SELECT coalesce(max(id), 0) + 1 FROM operation_index"
                ).fetchone()[0]
                db.executemany(
                    "INSERT INTO operation_index VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(first + k, *row) for k, row in enumerate(idx_rows)],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        for op in operations:
            pending.append(op)
            if len(pending) >= batch:
                flush()
                count += len(pending)
                pending = []
        if pending:
            flush()
            count += len(pending)
        return count

    def close(self) -> None:
        if self._writer is not None:
            self._jobs.put(None)
            self._writer.join(timeout=10)
            self._writer = None
        if self._checkpointer is not None:
            self._closing.set()
            self._checkpointer.join(timeout=10)
            self._checkpointer = None
            self._closing = threading.Event()
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
            for fd in self._lock_fds:
                os.close(fd)
            self._lock_fds.clear()
        self._local = threading.local()


class _Job:
    """One write waiting for the writer thread, and its outcome."""

    __slots__ = ("boxes", "done", "error", "fn", "priority", "result")

    def __init__(
        self,
        fn: Callable[[SqliteTx], Any],
        priority: int = 0,
        boxes: Sequence[tuple[float, ...]] = (),
    ) -> None:
        self.fn = fn
        self.priority = priority
        self.boxes = boxes
        """Index boxes of the area the write touches (none: it meets no other write)."""
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


def _fail(batch: list[_Job], exc: BaseException) -> None:
    for job in batch:
        job.result, job.error = None, exc


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text
