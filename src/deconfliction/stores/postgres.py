"""PostgreSQL store: the server store, in SQL that CockroachDB and YugabyteDB also accept.

No PostGIS, GiST, extensions, stored functions, advisory locks or LISTEN/NOTIFY: plain tables,
b-tree indexes, ``INSERT ... ON CONFLICT``, ``unnest`` and ``COPY``. Every transaction runs at
SERIALIZABLE and is retried, with jittered exponential backoff, on serialization failures and
deadlocks; a lost or unreachable server, or retries used up, raise
:class:`~deconfliction.core.errors.Unavailable` (the API answers 503 with Retry-After).

Spatial index: a b-tree cell table
---------------------------------

``operation_cells`` (and ``subscription_cells``) hold one row per (volume, S2 cell)::

    PRIMARY KEY (cell, span, t_start, t_end, alt_lo, alt_hi, op_id, ord)

(``t_end`` and the altitudes are in the key so that every filter is checked in the index, before
any row is fetched: a range probe reads many index entries and keeps few.)

* ``cell`` is an S2 cell id, its 64 bits read as a signed BIGINT (two's complement). Within one
  cube face the signed order equals the unsigned one, and a cell's descendants (``range_min`` ..
  ``range_max``) never leave its face, so a cell's descendants are one contiguous BIGINT range.
* A volume is covered by an S2 cap around ``footprint.center`` with angular radius
  ``footprint.cap_radius`` plus :data:`MARGIN_RAD` (the cap already surely holds the footprint on
  the same unit sphere the exact tests use). The coverer works at one fixed level, and S2 keeps
  every cell that may touch the cap, so the cells together always contain the footprint.
* The level is :data:`FINE_LEVEL` (10: cells of about 10 km) unless that would take more than
  :data:`MAX_CELLS` cells; then the next coarser of :data:`LEVELS` (8, 6, 4, 2) that fits is used,
  down to level 2 (a 40-degree cap, the largest footprint, needs about 20 cells there).
* ``span`` is the volume's duration class (:data:`SPANS`: up to 1 h, 6 h, 1 d, 7 d, 60 d, longer).
  A volume of class *k* that reaches a query window ``[qs, qe]`` has ``t_start`` in
  ``[qs - SPANS[k], qe]``, so each (cell, span) probe is one bounded b-tree range: this is the
  "bound on the longest volume", per class so that one long volume does not widen every probe.

A query volume is covered the same way (with the smaller budget :data:`QUERY_MAX_CELLS`). Two S2
cells intersect only if one contains the other, so a query cell ``Q`` at level ``q`` meets every
stored cell ``S`` that touches it through one of two probes, and nothing is missed:

* ``S`` at a level >= ``q`` lies inside ``Q``: ``cell BETWEEN Q.range_min AND Q.range_max``; when
  ``q`` is the fine level this is ``cell = Q`` (nothing is stored finer), probed per span class
  with the time bound above;
* ``S`` at a coarser stored level contains ``Q``: ``cell = Q.parent(level)`` for each stored level
  coarser than ``q`` (exact ids, per span class).

Rows then pass the exact time and altitude comparisons (touching counts: the index hands over
edges for the exact check), and the operations are read by id. Times and altitudes are float64,
exact, so unlike SQLite's float32 R*Tree nothing needs rounding outward.

Events
------

An event's id must grow per party in *commit* order: a reader paging with ``after=N`` must never
miss an event that commits later with a smaller id. A SEQUENCE (or CockroachDB's
``unique_rowid()``) hands out numbers at insert time, not commit time: a transaction holding 10 can
commit after another holding 11 was read, and 10 is lost to that reader. So each party has a row
in ``event_counters`` that the adding transaction increments (``INSERT ... ON CONFLICT DO UPDATE``)
in the same transaction as the event: two transactions adding events for one party conflict on that
row, one waits or retries, and the later commit always gets the larger id. Within one transaction
ids also increase across parties (each new id is above every id the transaction handed out
before), as the store contract asks; ids are unique per party, not globally.

Round trips
-----------

A transaction waits for the server only where it needs an answer (a read): statements without
one are queued and sent with the next read or the COMMIT, in one pipeline, and BEGIN and the
writers' table lock go out with the first read. A new filing takes two round trips, however
many parties it conflicts with; one more if it touches other parties' subscriptions (their new
notification indexes come back), and one more if operations new since the filer's look must be
read (see :class:`PostgresTx`). Array parameters (probes, cell rows) are packed by numpy
into PostgreSQL's binary array form.

Migrations
----------

Versioned, in code (:data:`MIGRATIONS`), applied at start by every process (``db upgrade`` in the
CLI does only that). Each migration runs in its own transaction that *first* inserts its row in
``schema_migrations``: a second process starting at the same moment blocks on that primary key and,
when the first commits, fails with a unique violation, rolls back and finds the version applied.
The statements are idempotent as well (``IF NOT EXISTS``), so a migration is safe to re-run on
databases that apply DDL outside the transaction (CockroachDB's schema changes are asynchronous).
Concurrent ``CREATE TABLE IF NOT EXISTS`` of ``schema_migrations`` itself can also fail with a
unique violation in PostgreSQL; it is retried the same way.

The write records (``Tx.write_records``) are the audit log's operation entries, in the chain's
order, which is commit order. (The ``operation_writes`` table of migration 1 is no longer
written.)
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import psycopg
import s2geometry as s2
from psycopg import errors as pg_errors
from psycopg.adapt import Dumper
from psycopg.pq import Format, TransactionStatus
from psycopg_pool import ConnectionPool, NullConnectionPool

from deconfliction.core.audit import AuditEntry, AuditTip
from deconfliction.core.errors import InvalidInput, Unavailable
from deconfliction.core.hotline import SILENT
from deconfliction.core.model import (
    Event,
    Liveness,
    NewEvent,
    Operation,
    OperationDetails,
    OperationState,
    Party,
    Subscription,
    TacticalLease,
    TrackReport,
)
from deconfliction.geo import Footprint, Volume
from deconfliction.stores.codec import decode_volumes, encode_volumes
from deconfliction.stores.shared import (
    _AUDIT_INSERT,
    _LIVENESS,
    RecentOperations,
    SharedTx,
    _audit_row,
    _track_row,
    event_json,
)
from deconfliction.stores.turns import Turns

T = TypeVar("T")

_Statement = tuple[str, Any]
"""An SQL statement and its parameters (None: none)."""


_ADD_EVENTS: Final = (
    "WITH batch AS (SELECT * FROM unnest(%(ord)s::BIGINT[], %(party)b::TEXT[], %(kind)b::TEXT[], "
    "%(time)s::DOUBLE PRECISION[], %(payload)b::TEXT[]) AS b (ord, party_id, kind, time, payload)), "
    "base AS (SELECT GREATEST(%(floor)s::BIGINT, COALESCE(MAX(last_id), 0)) AS top "
    "FROM event_counters WHERE party_id = ANY(%(touched)b::TEXT[])), "
    "numbered AS (SELECT b.party_id, base.top + b.ord AS id, b.kind, b.time, b.payload "
    "FROM batch AS b, base), "
    "counted AS (INSERT INTO event_counters (party_id, last_id) "
    "SELECT party_id, MAX(id) FROM numbered GROUP BY party_id "
    "ON CONFLICT (party_id) DO UPDATE SET last_id = excluded.last_id) "
    "INSERT INTO events (party_id, id, kind, time, payload) "
    "SELECT party_id, id, kind, time, payload FROM numbered"
)
"""Several events in one statement (:meth:`PostgresTx.add_events`). The text arrays go in binary:
in text form psycopg escapes every quote of every JSON payload, a millisecond for nine events."""


@dataclass
class _Combined:
    """Data-modifying statements sent as one: all but the last become CTEs of the last.

    A CTE that modifies data runs once and to completion whether it is read or not, but all the
    parts see one snapshot and none sees another's changes: so only statements on distinct
    tables that read no table another part writes may be combined (see :meth:`join`).
    """

    parts: list[tuple[str, str, Sequence[Any]]]
    """(CTE name, SQL, parameters) of each part; the last one is the main statement."""
    tables: set[str]
    """Every table a part reads or writes."""

    def join(self, name: str, sql: str, params: Sequence[Any], tables: set[str]) -> bool:
        """Add a statement that only writes ``tables`` from its own parameters, if they are
        none of this statement's tables."""
        if tables & self.tables:
            return False
        self.parts.insert(-1, (name, sql, params))
        self.tables |= tables
        return True

    def statement(self) -> _Statement:
        *ctes, (_, sql, params) = self.parts
        if not ctes:
            return sql, params
        return (
            "WITH " + ", ".join(f"{name} AS ({cte})" for name, cte, _ in ctes) + " " + sql,
            [*(p for _, _, cte_params in ctes for p in cte_params), *params],
        )


# The cell index ----------------------------------------------------------------------------------

FINE_LEVEL: Final = 10
"""S2 level of ordinary coverings: cells about 10 km across (81 km² on average)."""
LEVELS: Final = (10, 8, 6, 4, 2)
"""Levels a covering may use, finest first. Queries look up ancestors at each coarser one."""
MAX_CELLS: Final = 256
"""Most cells stored for one volume before a coarser level is used."""
QUERY_MAX_CELLS: Final = 64
"""Most cells a query volume is looked up by; coarser query cells become range probes."""
MARGIN_RAD: Final = 2e-7
"""Angular margin added to every cap (about 1.3 m): far above floating-point noise."""
SPANS: Final = (3_600.0, 21_600.0, 86_400.0, 7 * 86_400.0, 60 * 86_400.0, math.inf)
"""Duration classes, seconds: a volume belongs to the first class at least as long as it."""
SPAN_SLACK_S: Final = 1.0
"""Widens each class's bound on ``t_start`` against rounding of ``end - start``."""
_MIN_WIDTH: Final = 2 * math.sqrt(2) / 3
"""S2's minimum cell width at level 0 (radians) for its quadratic projection; halves per level."""

_local = threading.local()


def _coverer(level: int) -> Any:
    """A region coverer per thread and level (GetCovering keeps working state in the object)."""
    coverers: dict[int, Any] | None = getattr(_local, "coverers", None)
    if coverers is None:
        coverers = _local.coverers = {}
    coverer = coverers.get(level)
    if coverer is None:
        coverer = s2.S2RegionCoverer()
        coverer.set_fixed_level(level)
        coverer.set_max_cells(1 << 30)  # a fixed level wins over max_cells anyway
        coverers[level] = coverer
    return coverer


def _signed(cell_id: int) -> int:
    return cell_id - (1 << 64) if cell_id >= 1 << 63 else cell_id


def cover(footprint: Footprint, budget: int = MAX_CELLS) -> tuple[int, list[Any]]:
    """``(level, cells)``: S2 cells of one level of :data:`LEVELS` that contain ``footprint``.

    The finest level whose covering has at most ``budget`` cells, else the coarsest level.
    """
    radius = float(footprint.cap_radius) + MARGIN_RAD
    x, y, z = (float(c) for c in footprint.center)
    cap = s2.S2Cap(s2.S2Point_FromRaw(x, y, z).Normalize(), s2.S1Angle.Radians(radius))
    coarsest = LEVELS[-1]
    for level in LEVELS:
        if level != coarsest:
            # An upper estimate (a square of cells around the cap) skips levels that are surely
            # too fine without paying for their (possibly huge) coverings.
            width = _MIN_WIDTH / (1 << level)
            if (2.0 * radius / width + 2.0) ** 2 > 3 * budget:
                continue
        cells = _coverer(level).GetCovering(cap)
        if len(cells) <= budget or level == coarsest:
            return level, list(cells)
    raise AssertionError("unreachable")  # pragma: no cover


def span_class(start: float, end: float) -> int:
    duration = end - start
    for k, limit in enumerate(SPANS):
        if duration <= limit:
            return k
    return len(SPANS) - 1


def stored_cells(volume: Volume) -> tuple[int, list[int]]:
    """The level and signed cell ids a stored volume is indexed under."""
    level, cells = cover(volume.footprint, MAX_CELLS)
    return level, [_signed(c.id()) for c in cells]


def query_probes(
    volume: Volume, budget: int = QUERY_MAX_CELLS
) -> tuple[dict[int, int], list[tuple[int, int]]]:
    """``({exact id: its level}, [(lo, hi), ...] ranges)`` that find every stored cell touching
    ``volume``."""
    level, cells = cover(volume.footprint, budget)
    exact: dict[int, int] = {}
    ranges: list[tuple[int, int]] = []
    coarser = [(lv, 1 << (2 * (30 - lv))) for lv in LEVELS if lv < level]
    for cell in cells:
        raw = cell.id()
        if level == FINE_LEVEL:
            exact[_signed(raw)] = FINE_LEVEL
        else:
            ranges.append((_signed(cell.range_min().id()), _signed(cell.range_max().id())))
        for lv, lsb in coarser:
            # An S2 id's lowest set bit marks its level: the ancestor keeps the bits above.
            exact[_signed((raw & -lsb) | lsb)] = lv
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:  # neighbours along the Hilbert curve make one range
        if merged and lo == merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return exact, merged


# Array parameters ------------------------------------------------------------------------------


class _PackedArray(bytes):
    """A one-dimensional array already in PostgreSQL's binary form (see :func:`_pack`).

    The probes and cell rows are arrays of a few dozen to a few thousand numbers; psycopg's
    generic list dumper packs them one element at a time in Python, which was most of a filing's
    client time. numpy packs them at once, into the very same bytes.
    """

    element_oid: int = 0
    dtype: np.dtype[Any] = np.dtype(np.int8)


class _Int2Array(_PackedArray):
    pass


class _Int4Array(_PackedArray):
    pass


class _Int8Array(_PackedArray):
    pass


class _Float8Array(_PackedArray):
    pass


class _PackedDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


for _cls, _name, _code in (
    (_Int2Array, "int2", ">i2"),
    (_Int4Array, "int4", ">i4"),
    (_Int8Array, "int8", ">i8"),
    (_Float8Array, "float8", ">f8"),
):
    _info = psycopg.postgres.types[_name]
    _cls.element_oid = _info.oid
    _cls.dtype = np.dtype([("size", ">i4"), ("value", _code)])
    # Only these private classes: every other type keeps psycopg's own dumpers.
    psycopg.adapters.register_dumper(
        _cls, type(f"{_cls.__name__}Dumper", (_PackedDumper,), {"oid": _info.array_oid})
    )

_ARRAY_HEADER: Final = struct.Struct(">iiIii")
"""Dimensions (1), has-nulls flag (0), element type; then the one dimension's length and lower
bound (1)."""
_EMPTY_ARRAY_HEADER: Final = struct.Struct(">iiI")


def _pack(cls: type[_PackedArray], values: Sequence[Any]) -> _PackedArray:
    """``values`` as an array parameter of ``cls``'s element type (``%b``), exact."""
    if not values:
        return cls(_EMPTY_ARRAY_HEADER.pack(0, 0, cls.element_oid))
    items = np.empty(len(values), cls.dtype)
    items["size"] = cls.dtype["value"].itemsize
    items["value"] = values
    return cls(_ARRAY_HEADER.pack(1, 0, cls.element_oid, len(values), 1) + items.tobytes())


_ROW_ARRAYS: Final = (_Int8Array, _Int2Array, _Float8Array, _Int4Array) + (_Float8Array,) * 3
"""The element types of a cell row's columns (cell, span, t_start, ord, t_end, alt_lo, alt_hi)."""
_PROBE_ARRAYS: Final = {
    **dict.fromkeys(("e_cell", "r_lo", "r_hi"), _Int8Array),
    **dict.fromkeys(("e_level", "e_span"), _Int2Array),
    **dict.fromkeys(
        ("e_from", "e_to", "e_start", "e_lo", "e_hi", "r_to", "r_start", "r_alo", "r_ahi"),
        _Float8Array,
    ),
}


@dataclass(frozen=True)
class _Kind:
    """The shared shape of operations and subscriptions: a table, its cell table, its key."""

    table: str
    cells: str
    key: str

    def cell_rows(self, volumes: Sequence[Volume]) -> tuple[list[Any], ...]:
        rows, _ = self.cell_rows_and_usage(volumes)
        return rows

    def cell_rows_and_usage(
        self, volumes: Sequence[Volume]
    ) -> tuple[tuple[list[Any], ...], set[tuple[int, int]]]:
        """The cell rows of ``volumes`` and the (level, span) classes they use."""
        cell, span, t0, ord_, t1, lo, hi = [], [], [], [], [], [], []
        usage: set[tuple[int, int]] = set()
        for i, v in enumerate(volumes):
            k = span_class(v.start, v.end)
            level, cells = stored_cells(v)
            usage.add((level, k))
            for c in cells:
                cell.append(c)
                span.append(k)
                t0.append(v.start)
                ord_.append(i)
                t1.append(v.end)
                lo.append(v.altitude_lower_m)
                hi.append(v.altitude_upper_m)
        return (cell, span, t0, ord_, t1, lo, hi), usage

    def index(self, key: str, volumes: Sequence[Volume]) -> _Combined | None:
        """The statement that indexes ``volumes`` under ``key`` (None: no cells)."""
        rows, usage = self.cell_rows_and_usage(volumes)
        if not rows[0]:
            return None
        levels, spans = zip(*sorted(usage), strict=True)
        return _Combined(
            [
                (
                    "used",
                    "INSERT INTO cell_usage (kind, level, span) SELECT %s, u.level, u.span "
                    "FROM unnest(%b::int2[], %b::int2[]) AS u(level, span) ON CONFLICT DO NOTHING",
                    (self.cells, _pack(_Int2Array, levels), _pack(_Int2Array, spans)),
                ),
                (
                    "",
                    f"INSERT INTO {self.cells} (cell, span, t_start, {self.key}, ord, t_end, "
                    "alt_lo, alt_hi) SELECT q.cell, q.span, q.t_start, %s, q.ord, q.t_end, "
                    "q.alt_lo, q.alt_hi FROM unnest(%b::int8[], %b::int2[], %b::float8[], "
                    "%b::int4[], %b::float8[], %b::float8[], %b::float8[]) "
                    "AS q(cell, span, t_start, ord, t_end, alt_lo, alt_hi)",
                    (key, *(_pack(c, column) for c, column in zip(_ROW_ARRAYS, rows, strict=True))),
                ),
            ],
            {"cell_usage", self.cells},
        )

    def unindex(self, key: str) -> _Statement:
        return f"DELETE FROM {self.cells} WHERE {self.key} = %s", (key,)

    def candidates_sql(self, with_ranges: bool) -> str:
        """Keys of records with a cell row touching the probes (see the module docstring).

        Each probe is a LATERAL subquery behind ``OFFSET 0`` (a fence every engine accepts), so
        it stays a bounded index scan per probe: for range probes a planner that misjudged the
        ranges would otherwise happily hash-join the whole cell table.
        """
        sql = (
            f"SELECT x.{self.key} FROM unnest(%(e_cell)b::int8[], %(e_level)b::int2[], "
            "%(e_span)b::int2[], %(e_from)b::float8[], %(e_to)b::float8[], "
            "%(e_start)b::float8[], %(e_lo)b::float8[], %(e_hi)b::float8[]) "
            "AS q(cell, level, span, t_from, t_to, q_start, q_lo, q_hi) "
            # Only probe the (level, span) classes some stored volume uses: in a typical world
            # that is one or two of thirty, and each skipped class is a b-tree descent saved.
            f"JOIN cell_usage u ON u.kind = '{self.cells}' AND u.level = q.level "
            "AND u.span = q.span "
            f"CROSS JOIN LATERAL (SELECT c.{self.key} FROM {self.cells} c "
            "WHERE c.cell = q.cell AND c.span = q.span "
            "AND c.t_start >= q.t_from AND c.t_start <= q.t_to AND c.t_end >= q.q_start "
            "AND c.alt_lo <= q.q_hi AND c.alt_hi >= q.q_lo OFFSET 0) AS x"
        )
        if with_ranges:
            sql += (
                f" UNION ALL SELECT y.{self.key} FROM unnest(%(r_lo)b::int8[], "
                "%(r_hi)b::int8[], %(r_to)b::float8[], %(r_start)b::float8[], "
                "%(r_alo)b::float8[], %(r_ahi)b::float8[]) "
                "AS r(lo, hi, t_to, q_start, q_lo, q_hi) "
                f"CROSS JOIN LATERAL (SELECT c.{self.key} FROM {self.cells} c "
                "WHERE c.cell >= r.lo AND c.cell <= r.hi AND c.t_start <= r.t_to "
                "AND c.t_end >= r.q_start AND c.alt_lo <= r.q_hi AND c.alt_hi >= r.q_lo "
                "OFFSET 0) AS y"
            )
        return sql

    @staticmethod
    def probe_params(volumes: Sequence[Volume], budget: int) -> tuple[dict[str, Any], bool]:
        p: dict[str, list[Any]] = {
            name: []
            for name in (
                *("e_cell", "e_level", "e_span", "e_from", "e_to", "e_start", "e_lo", "e_hi"),
                *("r_lo", "r_hi", "r_to", "r_start", "r_alo", "r_ahi"),
            )
        }
        for v in volumes:
            exact, ranges = query_probes(v, budget)
            n = len(exact)
            p["e_cell"] += [c for c in exact for _ in SPANS]
            p["e_level"] += [lv for lv in exact.values() for _ in SPANS]
            p["e_span"] += list(range(len(SPANS))) * n
            p["e_from"] += [v.start - limit - SPAN_SLACK_S for limit in SPANS] * n
            count = n * len(SPANS)
            p["e_to"] += [v.end] * count
            p["e_start"] += [v.start] * count
            p["e_lo"] += [v.altitude_lower_m] * count
            p["e_hi"] += [v.altitude_upper_m] * count
            for lo, hi in ranges:
                p["r_lo"].append(lo)
                p["r_hi"].append(hi)
                p["r_to"].append(v.end)
                p["r_start"].append(v.start)
                p["r_alo"].append(v.altitude_lower_m)
                p["r_ahi"].append(v.altitude_upper_m)
        with_ranges = bool(p["r_lo"])
        # Only what the statement names: without ranges, the r_ arrays are not in it.
        return {
            k: _pack(_PROBE_ARRAYS[k], v) for k, v in p.items() if with_ranges or k[0] == "e"
        }, with_ranges


_OPS = _Kind("operations", "operation_cells", "op_id")
_SUBS = _Kind("subscriptions", "subscription_cells", "sub_id")

# Schema ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_CELL_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    cell BIGINT NOT NULL,
    span SMALLINT NOT NULL,
    t_start DOUBLE PRECISION NOT NULL,
    {key} TEXT NOT NULL,
    ord INT NOT NULL,
    t_end DOUBLE PRECISION NOT NULL,
    alt_lo DOUBLE PRECISION NOT NULL,
    alt_hi DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (cell, span, t_start, t_end, alt_lo, alt_hi, {key}, ord)
)"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "parties, operations, subscriptions, cell indexes, events, write record",
        (
            """CREATE TABLE IF NOT EXISTS parties (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS operations (
                id TEXT PRIMARY KEY,
                seq BIGSERIAL NOT NULL,
                owner TEXT NOT NULL,
                state TEXT NOT NULL,
                priority INT NOT NULL,
                version TEXT NOT NULL,
                revision INT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                details TEXT NOT NULL,
                volumes BYTEA NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS operations_owner ON operations (owner, seq)",
            _CELL_TABLE.format(table="operation_cells", key="op_id"),
            "CREATE INDEX IF NOT EXISTS operation_cells_op ON operation_cells (op_id)",
            """CREATE TABLE IF NOT EXISTS subscriptions (
                id TEXT PRIMARY KEY,
                seq BIGSERIAL NOT NULL,
                owner TEXT NOT NULL,
                version TEXT NOT NULL,
                notification_index BIGINT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                volumes BYTEA NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS subscriptions_owner ON subscriptions (owner, seq)",
            _CELL_TABLE.format(table="subscription_cells", key="sub_id"),
            "CREATE INDEX IF NOT EXISTS subscription_cells_sub ON subscription_cells (sub_id)",
            """CREATE TABLE IF NOT EXISTS event_counters (
                party_id TEXT PRIMARY KEY,
                last_id BIGINT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS events (
                party_id TEXT NOT NULL,
                id BIGINT NOT NULL,
                kind TEXT NOT NULL,
                time DOUBLE PRECISION NOT NULL,
                payload TEXT NOT NULL,
                PRIMARY KEY (party_id, id)
            )""",
            """CREATE TABLE IF NOT EXISTS operation_writes (
                seq BIGSERIAL PRIMARY KEY,
                operation_id TEXT NOT NULL,
                version TEXT NOT NULL,
                owner TEXT NOT NULL,
                state TEXT NOT NULL,
                time DOUBLE PRECISION NOT NULL,
                key TEXT NOT NULL,
                conflicts TEXT NOT NULL
            )""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        2,
        "hotline, liveness, notices, audit log, webhook delivery",
        (
            """CREATE TABLE IF NOT EXISTS party_settings (
                party_id TEXT PRIMARY KEY,
                webhook_url TEXT,
                webhook_secret TEXT,
                escalation_parties TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS lead_times (
                party_a TEXT NOT NULL,
                party_b TEXT NOT NULL,
                min_lead_s DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (party_a, party_b)
            )""",
            """CREATE TABLE IF NOT EXISTS liveness (
                party_id TEXT PRIMARY KEY,
                last_heartbeat DOUBLE PRECISION,
                availability TEXT NOT NULL,
                changed_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS messages (
                id TEXT PRIMARY KEY,
                sender TEXT NOT NULL,
                recipients TEXT NOT NULL,
                kind TEXT NOT NULL,
                urgency INT NOT NULL,
                text TEXT NOT NULL,
                sent_at DOUBLE PRECISION NOT NULL,
                ack_deadline DOUBLE PRECISION,
                operation_id TEXT,
                alert_id TEXT,
                reply_to TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS messages_sent ON messages (sent_at)",
            """CREATE TABLE IF NOT EXISTS receipts (
                message_id TEXT NOT NULL,
                party_id TEXT NOT NULL,
                acked_at DOUBLE PRECISION,
                level INT NOT NULL,
                next_at DOUBLE PRECISION,
                PRIMARY KEY (message_id, party_id)
            )""",
            "CREATE INDEX IF NOT EXISTS receipts_due ON receipts (next_at)",
            "CREATE INDEX IF NOT EXISTS receipts_party ON receipts (party_id, acked_at)",
            """CREATE TABLE IF NOT EXISTS notices (
                operation_id TEXT NOT NULL,
                party_id TEXT NOT NULL,
                owner TEXT NOT NULL,
                told_at DOUBLE PRECISION NOT NULL,
                active_at DOUBLE PRECISION NOT NULL,
                required_s DOUBLE PRECISION NOT NULL,
                late BOOLEAN NOT NULL,
                PRIMARY KEY (operation_id, party_id)
            )""",
            "CREATE INDEX IF NOT EXISTS notices_told ON notices (told_at)",
            """CREATE TABLE IF NOT EXISTS audit_log (
                seq BIGINT PRIMARY KEY,
                time DOUBLE PRECISION NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                subject TEXT NOT NULL,
                payload TEXT NOT NULL,
                prev TEXT NOT NULL,
                digest TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS audit_time ON audit_log (time)",
            """CREATE TABLE IF NOT EXISTS audit_seals (
                seq BIGINT PRIMARY KEY,
                digest TEXT NOT NULL,
                time DOUBLE PRECISION NOT NULL,
                signature TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS webhook_cursors (
                party_id TEXT PRIMARY KEY,
                delivered BIGINT NOT NULL,
                attempts INT NOT NULL,
                next_attempt_at DOUBLE PRECISION NOT NULL,
                lease_owner TEXT,
                lease_until DOUBLE PRECISION NOT NULL,
                last_error TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS events_time ON events (time)",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        3,
        "tactical: track reports (numbered in commit order) and the cycle lease",
        (
            """CREATE TABLE IF NOT EXISTS track_reports (
                seq BIGINT PRIMARY KEY,
                received_at DOUBLE PRECISION NOT NULL,
                party_id TEXT NOT NULL,
                aircraft_id TEXT NOT NULL,
                time DOUBLE PRECISION NOT NULL,
                lat DOUBLE PRECISION NOT NULL,
                lon DOUBLE PRECISION NOT NULL,
                alt DOUBLE PRECISION NOT NULL,
                gs DOUBLE PRECISION NOT NULL,
                trk DOUBLE PRECISION NOT NULL,
                vs DOUBLE PRECISION NOT NULL,
                operation_id TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS track_reports_received ON track_reports (received_at)",
            """CREATE TABLE IF NOT EXISTS track_counter (
                id INT PRIMARY KEY,
                last_seq BIGINT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS tactical_lease (
                id INT PRIMARY KEY,
                owner TEXT NOT NULL,
                until DOUBLE PRECISION NOT NULL,
                since DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        4,
        "cell usage: which (level, duration class) pairs each cell table holds",
        (
            """CREATE TABLE IF NOT EXISTS cell_usage (
                kind TEXT NOT NULL,
                level SMALLINT NOT NULL,
                span SMALLINT NOT NULL,
                PRIMARY KEY (kind, level, span)
            )""",
            # A database indexed before this table existed may hold any class: mark them all.
            "INSERT INTO cell_usage (kind, level, span) SELECT k.kind, l.level, s.span "
            "FROM (VALUES ('operation_cells'), ('subscription_cells')) AS k(kind) "
            "CROSS JOIN (VALUES (10), (8), (6), (4), (2)) AS l(level) "
            "CROSS JOIN (VALUES (0), (1), (2), (3), (4), (5)) AS s(span) "
            "WHERE EXISTS (SELECT 1 FROM operation_cells) "
            "OR EXISTS (SELECT 1 FROM subscription_cells) ON CONFLICT DO NOTHING",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        5,
        "liveness by availability: a write reads the parties that cannot be reached",
        # Only those rows, not every party's (heartbeats rewrite them all the time): with the
        # index a write's read ahead (see _ahead_sql) touches the silent parties' rows alone.
        ("CREATE INDEX IF NOT EXISTS liveness_availability ON liveness (availability)",),
    ),
)

LATEST: Final = MIGRATIONS[-1].version

_SCHEMA_MIGRATIONS = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INT PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)"""

_RACING = (
    pg_errors.UniqueViolation,
    pg_errors.DuplicateTable,
    pg_errors.DuplicateObject,
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
)
"""What a migration sees when another process applies the same one at the same moment."""


def migrate(conninfo: str, *, timeout_s: float = 5.0, attempts: int = 20) -> int:
    """Apply every pending migration; returns the schema version. Safe to run concurrently."""
    for attempt in range(attempts):
        try:
            with psycopg.connect(
                conninfo, autocommit=True, connect_timeout=_connect_timeout(timeout_s)
            ) as conn:
                return _migrate(conn)
        except _RACING:
            time.sleep(random.uniform(0.0, min(0.5, 0.01 * 2**attempt)))
        except psycopg.OperationalError as exc:
            raise Unavailable(f"The database cannot be reached: {_reason(exc)}") from exc
    raise Unavailable("The database schema could not be brought up to date; retry shortly.")


def _migrate(conn: psycopg.Connection[Any]) -> int:
    conn.execute(_SCHEMA_MIGRATIONS)
    applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    for m in MIGRATIONS:
        if m.version in applied:
            continue
        conn.execute("BEGIN")
        try:
            # The guard first: a concurrent runner of the same migration waits here, then fails
            # with a unique violation and finds the version applied on its next try.
            conn.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) "
                "VALUES (%s, %s, %s)",
                (m.version, m.description, time.time()),
            )
            for statement in m.statements:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            _rollback_quietly(conn)
            raise
    return _schema_version(conn)


def _schema_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


# Transactions ------------------------------------------------------------------------------------

_OP_COLUMNS = (
    "id, owner, state, priority, version, revision, created_at, updated_at, details, volumes"
)
_SUB_COLUMNS = "id, owner, version, notification_index, created_at, updated_at, volumes"


def _operation(r: Sequence[Any]) -> Operation:
    return Operation(
        id=r[0],
        owner=r[1],
        state=OperationState(r[2]),
        priority=r[3],
        volumes=decode_volumes(r[9]),
        version=r[4],
        revision=r[5],
        created_at=r[6],
        updated_at=r[7],
        details=OperationDetails.from_json(json.loads(r[8])),
    )


def _subscription(r: Sequence[Any]) -> Subscription:
    return Subscription(r[0], r[1], decode_volumes(r[6]), r[2], r[3], r[4], r[5])


def _operation_row(op: Operation) -> tuple[Any, ...]:
    return (
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


_WRITE_VERBS: Final = ("INSERT", "UPDATE", "DELETE")


def _columns(prefix: str, columns: str) -> str:
    return ", ".join(f"{prefix}.{c}" for c in columns.split(", "))


def _ahead_sql(with_ranges: bool) -> str:
    """A write's reads ahead in one statement: the subscriptions whose cells touch the probes,
    one row each in ``seq`` order, every row also holding the party's liveness, the audit log's
    tip (what the write's entry chains onto), the parties that cannot be reached and the
    lead-time agreements, those two as JSON arrays (NULLs where there is none; one row of them
    alone when no subscription is touched)."""
    silent = ", ".join(f"'{a.value}'" for a in SILENT)
    return (
        f"SELECT {_columns('l', _LIVENESS)}, h.seq, h.time, h.digest, "
        f"(SELECT json_agg(json_build_array({_LIVENESS})) FROM liveness "
        f"WHERE availability IN ({silent})), "
        "(SELECT json_agg(json_build_array(party_a, party_b, min_lead_s)) FROM lead_times), "
        f"{_columns('s', _SUB_COLUMNS)} "
        "FROM (SELECT 1) AS one LEFT JOIN liveness l ON l.party_id = %(party)s "
        "LEFT JOIN (SELECT seq, time, digest FROM audit_log ORDER BY seq DESC LIMIT 1) h ON true "
        f"LEFT JOIN (SELECT seq, {_SUB_COLUMNS} FROM subscriptions "
        f"WHERE id IN ({_SUBS.candidates_sql(with_ranges)})) s ON true ORDER BY s.seq"
    )


_UNKNOWN: Final[Any] = object()
"""Not read ahead (unlike None: read, and nothing there)."""
_SUBSCRIPTION_TABLES: Final = re.compile(r"\bsubscription")
_LIVENESS_TABLE: Final = re.compile(r"\bliveness\b")
_AUDIT_TABLE: Final = re.compile(r"\baudit_log\b")
_LEAD_TIMES_TABLE: Final = re.compile(r"\blead_times\b")


class PostgresTx(SharedTx):
    """A transaction on one connection; see :class:`deconfliction.stores.base.Tx`.

    A small write costs little work on either side: what it mostly costs is round trips and,
    per statement, a fixed toll on the client (psycopg) and the server. So the transaction sends
    as few of both as it can:

    * Statements whose result nobody waits for (the BEGIN, the table lock, every INSERT, UPDATE
      and DELETE that returns nothing) are queued and go out with the next read, in one
      pipeline, or with the COMMIT. A queued statement that fails raises at that read or at the
      COMMIT, which then never runs: the transaction is rolled back as if it had failed at once.
    * Writes on distinct tables become one statement where they follow each other (an
      operation's row, its index rows, then the audit entry that records it: see
      :class:`_Combined`).
    * A write transaction's first search of operations (:meth:`operation_candidates` or
      :meth:`candidate_versions`) also reads, in the same round trip and one more statement,
      what a write of those volumes reads next: the subscriptions they touch, the searching
      party's liveness, the audit log's tip, the parties that cannot be reached and the
      lead-time agreements. One SERIALIZABLE transaction reads one snapshot (plus its own writes), so
      these answers stay right until the transaction itself writes the table, which forgets
      them.
    * A write's events are one statement (:meth:`add_events`) that needs no answer.

    So a filing that conflicts with nothing costs two round trips and seven statements: BEGIN,
    lock, search and the reads ahead; the operation, its index rows with its audit entry, and
    the COMMIT (it was ten of each). One in conflict with others adds its notices and its
    events, two statements in the same second round trip, whatever their number.

    ``conn`` hands out the connection for statements of one's own: what is queued is sent first,
    and the reads ahead are not used again in this transaction.

    A read transaction may be tried *alone* (``alone=True``): its one statement goes out with no
    BEGIN and no COMMIT, one round trip instead of two. One statement reads one snapshot, and
    the writers commit one after another (the table lock), so what it sees is the state after
    some writer, as in a transaction of its own (on CockroachDB, which has no such lock, every
    statement is a serializable transaction anyway). A second statement (or a write, or the
    connection asked for after a statement) raises :class:`_NeedsTransaction`: the store then
    runs the function again in a transaction, and remembers to do so from the start next time.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        query_cells: int = QUERY_MAX_CELLS,
        recent: RecentOperations | None = None,
        *,
        begin: Sequence[str] = (),
        write: bool = False,
        alone: bool = False,
    ) -> None:
        self._conn = conn
        self._begin = begin
        self._alone = alone and not write
        self._sent_alone = False
        self._query_cells = query_cells
        self._recent = recent if recent is not None else RecentOperations()
        self._last_event_id = 0
        """The last id :meth:`add_event` handed out in this transaction."""
        self._event_parties: set[str] = set()
        """Parties :meth:`add_events` added events for in this transaction."""
        self._queued: list[_Statement | _Combined] = (
            [] if self._alone else [(sql, None) for sql in begin]
        )
        self.answered = not begin
        """Whether the server has answered in this transaction (so its BEGIN went through)."""
        self._write = write
        self._look_ahead = write
        self._subscriptions_ahead: tuple[Sequence[Volume], list[Subscription]] | None = None
        self._liveness_ahead: dict[str, Liveness | None] = {}
        self._silent_ahead: dict[str, Liveness] | None = None
        self._leads_ahead: dict[frozenset[str], float] | None = None
        self._tip_ahead: AuditTip | None = _UNKNOWN

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._alone:
            if self._sent_alone or self._queued:
                raise _NeedsTransaction
            self._alone = False  # nothing went out yet: begin here after all
            self._queued = [(sql, None) for sql in self._begin]
        self._send()
        self._look_ahead = False
        self._forget(subscriptions=True, liveness=True, audit=True, leads=True)
        return self._conn

    # Sending
    def _queue(self, sql: str, params: Any = None) -> None:
        self._queued.append((sql, params))

    def _send(self, *reads: _Statement) -> list[psycopg.Cursor[Any]]:
        """Send what is queued, then ``reads``, in one round trip; the reads' cursors."""
        if self._alone:
            if not reads:
                if self._queued:
                    raise _NeedsTransaction
                return []
            sql = reads[0][0]
            if self._queued or self._sent_alone or len(reads) > 1 or not _is_select(sql):
                # Only a plain SELECT may go alone: a write must meet the READ ONLY transaction.
                raise _NeedsTransaction
            self._sent_alone = True
            cursor = self._conn.execute(*reads[0])
            self.answered = True
            return [cursor]
        statements = [
            *(q.statement() if isinstance(q, _Combined) else q for q in self._queued),
            *reads,
        ]
        self._queued.clear()
        if not statements:
            return []
        conn = self._conn
        if len(statements) == 1:
            cursors = [conn.execute(*statements[0])]
        else:
            cursors = _pipelined(conn, statements, len(reads))
        self.answered = True
        return cursors[len(cursors) - len(reads) :]

    def _read(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        return self._send((sql, params))[0]

    def commit(self) -> None:
        if self._alone:
            if self._queued:  # a write in a read transaction: let the transaction refuse it
                raise _NeedsTransaction
            return
        if self._write and not self.answered:
            # A write's COMMIT goes out only on a connection that has answered: if it dies
            # before, the transaction surely did not commit and may run again (see _run).
            self._send()
        self._send(("COMMIT", None))

    def _forget(
        self, *, subscriptions: bool, liveness: bool, audit: bool, leads: bool = False
    ) -> None:
        if subscriptions:
            self._subscriptions_ahead = None
        if liveness:
            self._liveness_ahead.clear()
            self._silent_ahead = None
        if leads:
            self._leads_ahead = None
        if audit:
            self._tip_ahead = _UNKNOWN

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        sql = _placeholders(sql)
        if sql.startswith(_WRITE_VERBS) or sql.startswith("WITH"):
            # Any write (a CTE may hide one) forgets what was read ahead from its tables.
            self._forget(
                subscriptions=_SUBSCRIPTION_TABLES.search(sql) is not None,
                liveness=_LIVENESS_TABLE.search(sql) is not None,
                audit=_AUDIT_TABLE.search(sql) is not None,
                leads=_LEAD_TIMES_TABLE.search(sql) is not None,
            )
            if sql.startswith(_WRITE_VERBS) and "RETURNING" not in sql:
                self._queue(sql, params)
                return None
        return self._read(sql, params)

    # Parties
    def add_party(self, party: Party) -> None:
        self._queue(
            "INSERT INTO parties (id, name, created_at) VALUES (%s, %s, %s)",
            (party.id, party.name, party.created_at),
        )

    def get_party(self, party_id: str) -> Party | None:
        row = self._read(
            "SELECT id, name, created_at FROM parties WHERE id = %s", (party_id,)
        ).fetchone()
        return Party(*row) if row else None

    def list_parties(self) -> list[Party]:
        # Sorted here, by code point like SQLite's BINARY collation, whatever the database's.
        rows = self._read("SELECT id, name, created_at FROM parties").fetchall()
        return sorted((Party(*r) for r in rows), key=lambda p: p.name)

    # Operations
    def get_operation(self, operation_id: str) -> Operation | None:
        row = self._read(
            f"SELECT {_OP_COLUMNS} FROM operations WHERE id = %s", (operation_id,)
        ).fetchone()
        return _operation(row) if row else None

    def _operations_by_id(self, ids: Sequence[str]) -> list[Operation]:
        rows = self._read(f"SELECT {_OP_COLUMNS} FROM operations WHERE id = ANY(%s)", (ids,))
        found = [_operation(row) for row in rows.fetchall()]
        for op in found:
            self._recent.put(op)
        return found

    def put_operation(self, operation: Operation) -> None:
        self._recent.put(operation)
        # Its index rows dropped and the operation upserted (created_at stays the first
        # write's), then the live volumes indexed: two statements, and no answer is needed, so
        # both wait for the next round trip.
        self._queued.append(
            _Combined(
                [
                    ("gone", "DELETE FROM operation_cells WHERE op_id = %s", (operation.id,)),
                    (
                        "",
                        f"INSERT INTO operations ({_OP_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, "
                        "%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, "
                        "state = excluded.state, priority = excluded.priority, "
                        "version = excluded.version, revision = excluded.revision, "
                        "updated_at = excluded.updated_at, details = excluded.details, "
                        "volumes = excluded.volumes",
                        _operation_row(operation),
                    ),
                ],
                {"operations", "operation_cells"},
            )
        )
        if operation.live and (index := _OPS.index(operation.id, operation.volumes)):
            self._queued.append(index)

    def operation_candidates(
        self, volumes: Sequence[Volume], *, exclude_owner: str | None = None
    ) -> list[Operation]:
        if not volumes:
            return []
        params, with_ranges = _OPS.probe_params(volumes, self._query_cells)
        rows = self._search(
            f"SELECT {_OP_COLUMNS} FROM operations WHERE id IN ({_OPS.candidates_sql(with_ranges)})"
            " AND owner <> %(exclude)s AND state <> 'Ended' ORDER BY seq",
            {**params, "exclude": exclude_owner or ""},
            volumes,
            exclude_owner,
            (params, with_ranges),
        )
        recent = self._recent
        out = []
        for r in rows:
            op = recent.get(r[0], r[4])
            if op is None:
                op = _operation(r)
                recent.put(op)
            out.append(op)
        return out

    def candidate_versions(
        self, volumes: Sequence[Volume], *, exclude_owner: str | None = None
    ) -> frozenset[tuple[str, str]]:
        if not volumes:
            return frozenset()
        params, with_ranges = _OPS.probe_params(volumes, self._query_cells)
        rows = self._search(
            f"SELECT id, version FROM operations WHERE id IN ({_OPS.candidates_sql(with_ranges)})"
            " AND owner <> %(exclude)s AND state <> 'Ended'",
            {**params, "exclude": exclude_owner or ""},
            volumes,
            exclude_owner,
            (params, with_ranges),
        )
        return frozenset((r[0], r[1]) for r in rows)

    def _search(
        self,
        sql: str,
        params: Any,
        volumes: Sequence[Volume],
        owner: str | None,
        probes: tuple[dict[str, Any], bool],
    ) -> list[Any]:
        """Rows of a search of operations; a write's first one also reads ahead (see above).

        ``probes`` are the search's probe parameters: the subscriptions' cells are probed alike.
        """
        if not self._look_ahead:
            return self._read(sql, params).fetchall()
        self._look_ahead = False
        found, ahead = self._send(
            (sql, params), (_ahead_sql(probes[1]), {**probes[0], "party": owner or ""})
        )
        rows = ahead.fetchall()
        first = rows[0]
        if owner is not None:
            self._liveness_ahead[owner] = Liveness(*first[:4]) if first[0] is not None else None
        self._tip_ahead = AuditTip(*first[4:7]) if first[4] is not None else None
        self._silent_ahead = {row[0]: Liveness(*row) for row in first[7] or ()}
        self._leads_ahead = {frozenset((a, b)): float(s) for a, b, s in first[8] or ()}
        subscriptions = [_subscription(r[9:]) for r in rows if r[9] is not None]
        self._subscriptions_ahead = (tuple(volumes), subscriptions)
        return found.fetchall()

    def list_operations(
        self, owner: str, *, include_ended: bool = False, limit: int = 1000
    ) -> list[Operation]:
        state = "" if include_ended else " AND state <> 'Ended'"
        rows = self._read(
            f"SELECT {_OP_COLUMNS} FROM operations WHERE owner = %s{state} ORDER BY seq LIMIT %s",
            (owner, limit),
        ).fetchall()
        return [_operation(r) for r in rows]

    # Subscriptions
    def get_subscription(self, subscription_id: str) -> Subscription | None:
        row = self._read(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE id = %s", (subscription_id,)
        ).fetchone()
        return _subscription(row) if row else None

    def put_subscription(self, subscription: Subscription) -> None:
        s = subscription
        self._forget(subscriptions=True, liveness=False, audit=False)
        self._queue(
            f"INSERT INTO subscriptions ({_SUB_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
            "notification_index = excluded.notification_index, "
            "updated_at = excluded.updated_at, volumes = excluded.volumes",
            (
                s.id,
                s.owner,
                s.version,
                s.notification_index,
                s.created_at,
                s.updated_at,
                encode_volumes(s.volumes),
            ),
        )
        self._queue(*_SUBS.unindex(s.id))
        if index := _SUBS.index(s.id, s.volumes):
            self._queued.append(index)

    def delete_subscription(self, subscription_id: str) -> None:
        self._forget(subscriptions=True, liveness=False, audit=False)
        self._queue("DELETE FROM subscriptions WHERE id = %s", (subscription_id,))
        self._queue(*_SUBS.unindex(subscription_id))

    def subscription_candidates(self, volumes: Sequence[Volume]) -> list[Subscription]:
        if not volumes:
            return []
        ahead = self._subscriptions_ahead
        if ahead is not None and _same(ahead[0], volumes):
            return list(ahead[1])
        rows = self._read(*self._subscriptions_sql(volumes)).fetchall()
        return [_subscription(r) for r in rows]

    def _subscriptions_sql(self, volumes: Sequence[Volume]) -> _Statement:
        params, with_ranges = _SUBS.probe_params(volumes, self._query_cells)
        return (
            f"SELECT {_SUB_COLUMNS} FROM subscriptions "
            f"WHERE id IN ({_SUBS.candidates_sql(with_ranges)}) ORDER BY seq",
            params,
        )

    def list_subscriptions(self, owner: str) -> list[Subscription]:
        rows = self._read(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE owner = %s ORDER BY seq", (owner,)
        ).fetchall()
        return [_subscription(r) for r in rows]

    # Liveness, lead times and the audit tip: answered from the reads ahead where they hold
    def get_liveness(self, party_id: str) -> Liveness | None:
        if party_id in self._liveness_ahead:
            return self._liveness_ahead[party_id]
        return super().get_liveness(party_id)

    def silent_among(self, party_ids: Sequence[str]) -> dict[str, Liveness]:
        if self._silent_ahead is None:
            return super().silent_among(party_ids)
        return {p: self._silent_ahead[p] for p in party_ids if p in self._silent_ahead}

    def lead_times(self) -> dict[frozenset[str], float]:
        if self._leads_ahead is None:
            return super().lead_times()
        return dict(self._leads_ahead)

    def audit_tip(self) -> AuditTip | None:
        if self._tip_ahead is not _UNKNOWN:
            return self._tip_ahead
        return super().audit_tip()

    def audit_append(self, entry: AuditEntry) -> None:
        params = _audit_row(entry)
        last = self._queued[-1] if self._queued else None
        # Usually right after the write it records: one statement for both.
        if isinstance(last, _Combined) and last.join(
            "audit", _placeholders(_AUDIT_INSERT), params, {"audit_log"}
        ):
            self._forget(subscriptions=False, liveness=False, audit=True)
        else:
            self._x(_AUDIT_INSERT, params)

    # Events and the write record
    def add_event(self, party_id: str, kind: str, time: float, payload: dict[str, Any]) -> int:
        floor: Any = self._last_event_id + 1
        if self._event_parties:  # after add_events: above the ids the server gave (one read)
            floor = self._read(
                "SELECT GREATEST(%s, COALESCE(MAX(last_id), 0) + 1) FROM event_counters "
                "WHERE party_id = ANY(%s)",
                (floor, sorted(self._event_parties)),
            ).fetchone()[0]
        row = self._read(
            "WITH counter AS (INSERT INTO event_counters (party_id, last_id) VALUES (%(party)s, "
            "%(floor)s) ON CONFLICT (party_id) DO UPDATE SET last_id = "
            "GREATEST(event_counters.last_id + 1, excluded.last_id) RETURNING last_id) "
            "INSERT INTO events (party_id, id, kind, time, payload) "
            "SELECT %(party)s, last_id, %(kind)s, %(time)s, %(payload)s FROM counter RETURNING id",
            {
                "party": party_id,
                "floor": floor,
                "kind": kind,
                "time": time,
                "payload": event_json(payload),
            },
        ).fetchone()
        assert row is not None
        self._last_event_id = int(row[0])
        return self._last_event_id

    def add_events(self, events: Sequence[NewEvent]) -> None:
        """One statement, queued (no answer is needed): the events are numbered from just above
        the highest counter among their parties and those this transaction gave events before
        (and above the last id :meth:`add_event` handed out), and each party's counter moves to
        its last event's id. So ids still grow per party in commit order and across parties
        within the transaction, with gaps where a party's counter jumps."""
        if not events:
            return
        self._event_parties.update(e.party_id for e in events)
        self._queue(
            _ADD_EVENTS,
            {
                "ord": list(range(1, len(events) + 1)),
                "party": [e.party_id for e in events],
                "kind": [e.kind for e in events],
                "time": [e.time for e in events],
                "payload": [event_json(e.payload) for e in events],
                "floor": self._last_event_id,
                "touched": sorted(self._event_parties),
            },
        )

    def events_after(self, party_id: str, after: int, limit: int) -> list[Event]:
        rows = self._read(
            "SELECT id, party_id, kind, time, payload FROM events WHERE party_id = %s AND id > %s "
            "ORDER BY id LIMIT %s",
            (party_id, after, limit),
        )
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def add_track_reports(self, reports: Sequence[TrackReport]) -> None:
        """Numbered from one counter row: the batch that commits later always gets the larger
        numbers (a writer that takes the counter holds it until it commits), so the cycle's
        cursor never skips a report. A sequence would number at insert time instead."""
        if not reports:
            return
        row = self._read(
            "INSERT INTO track_counter (id, last_seq) VALUES (1, %s) ON CONFLICT (id) DO UPDATE "
            "SET last_seq = track_counter.last_seq + %s RETURNING last_seq",
            (len(reports), len(reports)),
        ).fetchone()
        assert row is not None
        first = int(row[0]) - len(reports) + 1
        for i, r in enumerate(reports):
            self._queue(
                "INSERT INTO track_reports (seq, received_at, party_id, aircraft_id, time, lat, "
                "lon, alt, gs, trk, vs, operation_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (first + i, *_track_row(r)),
            )

    def track_reports_after(self, after: int, limit: int) -> list[TrackReport]:
        rows = self._read(
            "SELECT party_id, aircraft_id, time, lat, lon, alt, gs, trk, vs, operation_id, "
            "received_at, seq FROM track_reports WHERE seq > %s ORDER BY seq LIMIT %s",
            (after, limit),
        )
        return [TrackReport(*r) for r in rows]

    def prune_track_reports(self, received_before: float) -> int:
        cur = self._read("DELETE FROM track_reports WHERE received_at < %s", (received_before,))
        return int(cur.rowcount)

    def get_tactical_lease(self) -> TacticalLease | None:
        row = self._read("SELECT owner, until, since FROM tactical_lease WHERE id = 1")
        found = row.fetchone()
        return TacticalLease(*found) if found else None

    def put_tactical_lease(self, lease: TacticalLease) -> None:
        self._queue(
            "INSERT INTO tactical_lease (id, owner, until, since) VALUES (1, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, until = excluded.until, "
            "since = excluded.since",
            (lease.owner, lease.until, lease.since),
        )

    def latest_event_ids(self, party_ids: Sequence[str]) -> dict[str, int]:
        if not party_ids:
            return {}
        rows = self._read(
            "SELECT party_id, max(id) FROM events WHERE party_id = ANY(%s) GROUP BY party_id",
            (list(party_ids),),
        )
        return {p: int(i) for p, i in rows}

    def latest_event_id(self, party_id: str) -> int:
        row = self._read(
            "SELECT coalesce(max(id), 0) FROM events WHERE party_id = %s", (party_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def events_between(self, start: float, end: float, kinds: Sequence[str]) -> list[Event]:
        # Ids are per party, so across parties the order is by time (then party, then id).
        rows = self._read(
            "SELECT id, party_id, kind, time, payload FROM events WHERE time >= %s AND time < %s "
            "AND kind = ANY(%s) ORDER BY time, party_id, id",
            (start, end, list(kinds)),
        )
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]


@functools.lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    """The shared statements' ``?`` as psycopg's ``%s`` (they hold no other ``?`` or ``%``)."""
    return sql.replace("?", "%s")


def _same(a: Sequence[Volume], b: Sequence[Volume]) -> bool:
    """The same volumes, object for object (what a caller passes on, not what compares equal)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _pipelined(
    conn: psycopg.Connection[Any], statements: Sequence[_Statement], reads: int
) -> list[psycopg.Cursor[Any]]:
    """Run ``statements`` in one pipeline (one round trip); raises the first one's error.

    The last ``reads`` get a cursor each; the others, whose results are not read, share one.

    psycopg may find a failure while statements are still being queued; the rest of the
    pipeline is then skipped by the server, and leaving the block syncs it and would report
    those skips ("pipeline aborted") instead: the statement that failed is the news.
    """
    failed: psycopg.Error | None = None
    cursors = []
    shared = conn.cursor()
    first_read = len(statements) - reads
    try:
        with conn.pipeline():
            for i, (sql, params) in enumerate(statements):
                cursor = conn.cursor() if i >= first_read else shared
                try:
                    cursors.append(cursor.execute(sql, params))
                except psycopg.Error as exc:  # this one or an earlier one failed
                    failed = exc
                    break
    except psycopg.Error as exc:
        raise (failed or _first_error(exc)) from None
    if failed is not None:
        raise failed
    return cursors


def _first_error(exc: BaseException) -> BaseException:
    """The error behind a pipeline's "aborted": the statement that failed, not one skipped."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, psycopg.Error) and not isinstance(seen, pg_errors.PipelineAborted):
            return seen
        seen = seen.__context__
    return exc


# The store ---------------------------------------------------------------------------------------

_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
"""Retried: the transaction lost a race and had no effect. Not 40003 (CockroachDB's ambiguous
commit), which may have committed: that one is Unavailable, and the client decides."""


_UNIQUE_RETRIES: Final = 2


def _is_select(sql: Any) -> bool:
    return isinstance(sql, str) and sql.lstrip()[:7].upper() == "SELECT "


class _NeedsTransaction(BaseException):
    """A read tried alone issued more than one statement: run it again in a transaction.

    A BaseException, like GeneratorExit: a function that catches ``Exception`` around its reads
    must not swallow it and go on with half an answer."""


class _StaleConnection(Exception):
    """A pooled connection that died while idle: nothing took effect on it, so take another."""


class PostgresStore:
    """The server store. Thread-safe: transactions take connections from a pool.

    ``conninfo`` is a ``postgresql://`` URL (or libpq key=value string). ``pool_size=0`` opens a
    connection per transaction (no idle connections kept: tests that make many stores).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        pool_size: int = 10,
        max_attempts: int = 10,
        timeout_s: float = 5.0,
        query_cells: int = QUERY_MAX_CELLS,
        apply_migrations: bool = True,
        queue_writers: bool | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.query_cells = query_cells
        if apply_migrations:
            migrate(conninfo, timeout_s=timeout_s)
        kwargs = {"autocommit": True, "connect_timeout": _connect_timeout(timeout_s)}
        self._pool: ConnectionPool[Any]
        if pool_size <= 0:
            self._pool = NullConnectionPool(
                conninfo, kwargs=kwargs, timeout=timeout_s, num_workers=1, open=True
            )
        else:
            self._pool = ConnectionPool(
                conninfo,
                kwargs=kwargs,
                min_size=min(2, pool_size),
                max_size=pool_size,
                timeout=timeout_s,
                num_workers=2,
                open=True,
            )
        if queue_writers is None:
            queue_writers = "cockroach" not in conninfo.lower() and "26257" not in conninfo
        self._turns = Turns()
        self._recent = RecentOperations()
        self._in_transaction: set[Any] = set()
        """Code of read functions that issued more than one statement: they begin a transaction
        at once (the others are tried alone: see PostgresTx)."""
        self.queue_writers = queue_writers
        """Make write transactions queue on a table lock before their snapshot (PostgreSQL).

        Every write appends to the one audit chain, so any two concurrent writers conflict; left
        to SERIALIZABLE they would mostly fail and retry (8 failures per filing measured at
        2 x 16 clients). Queued first, each sees the one before it and none fails. Reads are not
        blocked. CockroachDB has no LOCK TABLE and orders its serializable writers itself: pass
        ``queue_writers=False`` there (the default guesses from a URL naming cockroach or its
        port 26257).
        """

    @property
    def schema_version(self) -> int:
        return self.transact(lambda tx: _schema_version(tx.conn), write=False)

    def transact(
        self,
        fn: Callable[[PostgresTx], T],
        *,
        write: bool = True,
        priority: int = 0,
        touches: Sequence[Volume] = (),
    ) -> T:
        if write and self.queue_writers:
            # This process's writers line up here (refused parties first), so only the head
            # of the line waits on the table lock, holding a connection.
            with self._turns.turn(priority):
                return self._transact(fn, write=True)
        return self._transact(fn, write=write)

    def _transact(self, fn: Callable[[PostgresTx], T], *, write: bool) -> T:
        begin = "BEGIN ISOLATION LEVEL SERIALIZABLE" + ("" if write else " READ ONLY")
        code = getattr(fn, "__code__", None)
        alone = not write and code is not None and code not in self._in_transaction
        unique_violations = 0
        for attempt in range(self.max_attempts):
            try:
                with self._pool.connection() as conn:
                    return self._run(conn, begin, fn, alone=alone)
            except _NeedsTransaction:
                self._in_transaction.add(code)
                alone = False
                continue
            except _RETRYABLE:
                pass
            except pg_errors.UniqueViolation:
                # Two writers that both saw a key free (the next audit seq, a new id) can meet
                # here rather than at a serialization failure. Run again once or twice: a race
                # resolves, a real duplicate repeats and is raised as it is.
                unique_violations += 1
                if unique_violations > _UNIQUE_RETRIES:
                    raise
            except _StaleConnection:
                continue
            except pg_errors.DataError as exc:
                # Text PostgreSQL cannot hold (a NUL character) or a value out of its range:
                # the client's data, so a clear refusal, not a server error.
                raise InvalidInput(
                    f"The request holds a value the database cannot store: {_reason(exc)}",
                    code="invalid_input",
                ) from exc
            except psycopg.OperationalError as exc:
                raise Unavailable(f"The database is unavailable: {_reason(exc)}") from exc
            time.sleep(random.uniform(0.0, min(0.25, 0.002 * 2**attempt)))
        raise Unavailable("The database is busy; retry shortly.")

    def _run(
        self,
        conn: psycopg.Connection[Any],
        begin: str,
        fn: Callable[[PostgresTx], T],
        *,
        alone: bool = False,
    ) -> T:
        write = "READ ONLY" not in begin
        statements = [begin]
        if write and self.queue_writers:
            # Taken before the first query, so the snapshot comes after the wait.
            statements.append("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
        # Both go out with the transaction's first read (see PostgresTx).
        tx = PostgresTx(
            conn, self.query_cells, self._recent, begin=statements, write=write, alone=alone
        )
        try:
            result = fn(tx)
            tx.commit()
            return result
        except psycopg.OperationalError as exc:
            if conn.broken and not tx.answered:
                # Died before its first answer, so before any COMMIT: a pooled connection that
                # died while idle. Nothing took effect; run again on another.
                raise _StaleConnection from exc
            _rollback_quietly(conn)
            raise
        except BaseException:
            _rollback_quietly(conn)
            raise

    def bulk_load(self, operations: Iterable[Operation], *, batch: int = 20_000) -> int:
        """Insert operations directly with COPY (no checks, no events): seeding and benchmarks."""
        count = 0
        for chunk in _chunks(operations, batch):
            self.transact(lambda tx, chunk=chunk: _copy(tx.conn, chunk))
            count += len(chunk)
        return count

    def close(self) -> None:
        self._pool.close()


def _copy(conn: psycopg.Connection[Any], operations: list[Operation]) -> None:
    with conn.cursor() as cur:
        with cur.copy(f"COPY operations ({_OP_COLUMNS}) FROM STDIN") as copy:
            for op in operations:
                copy.write_row(_operation_row(op))
        with cur.copy(
            "COPY operation_cells (cell, span, t_start, op_id, ord, t_end, alt_lo, alt_hi) "
            "FROM STDIN"
        ) as copy:
            usage: set[tuple[int, int]] = set()
            for op in operations:
                if not op.live:
                    continue
                (cell, span, t0, ord_, t1, lo, hi), used = _OPS.cell_rows_and_usage(op.volumes)
                usage |= used
                for i in range(len(cell)):
                    copy.write_row((cell[i], span[i], t0[i], op.id, ord_[i], t1[i], lo[i], hi[i]))
        if usage:
            levels, spans = zip(*sorted(usage), strict=True)
            cur.execute(
                "INSERT INTO cell_usage (kind, level, span) SELECT 'operation_cells', u.level, "
                "u.span FROM unnest(%b::int2[], %b::int2[]) AS u(level, span) "
                "ON CONFLICT DO NOTHING",
                (list(levels), list(spans)),
            )


def _chunks(items: Iterable[Operation], size: int) -> Iterator[list[Operation]]:
    chunk: list[Operation] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _rollback_quietly(conn: psycopg.Connection[Any]) -> None:
    if conn.broken or conn.info.transaction_status not in (
        TransactionStatus.INTRANS,
        TransactionStatus.INERROR,
    ):
        return
    with contextlib.suppress(psycopg.Error):
        conn.execute("ROLLBACK")


def _connect_timeout(timeout_s: float) -> int:
    return max(2, math.ceil(timeout_s))  # libpq's smallest meaningful value


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
