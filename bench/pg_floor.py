"""What one filing costs PostgreSQL itself, beside the bare INSERT of issue #5's ratio.

``bench/strategic.py --store postgres`` measures the single-client filing rate as a ratio to the
bare one-row INSERT commit rate of the same server (target >= 0.4). This asks how high that
ratio could go at all: it files spread-out operations in the world's schema, alternating with
bare INSERTs, and reads the server's *own* time for every statement of every filing from its
statement log (``log_min_duration_statement = 0``, set on this script's connections only). The
server time of a filing (its statements and its COMMIT, which flushes the filing's WAL) is what
remains when the client and the network cost nothing, so

    ceiling = bare INSERT wall time / filing server time

bounds the ratio from above, on this server, for this design (serializable transaction, b-tree
cell index, audit entry and events in the same transaction). It also prints the WAL each filing
writes (``pg_stat_wal``) and the filings per second one server could commit back to back, which
bounds every hot spot, where writers take turns.

Needs the world's schema (``python bench/strategic.py --store postgres`` loads it), a superuser
(``log_min_duration_statement`` is superuser-only) and read access to the server's log (Debian's
default path for PostgreSQL 15; ``--log``). It resets the schema to the world as loaded first, as
strategic.py does. Not a test: it asserts nothing.

    python bench/pg_floor.py [--filings 400] [--log /var/log/postgresql/postgresql-15-main.log]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import strategic as S
from common import RESULTS, Report, fmt_ms, fmt_rate, now

from deconfliction.services.strategic import Filing, Strategic

DEFAULT_LOG = "/var/log/postgresql/postgresql-15-main.log"
_LINE = re.compile(
    r"\[(\d+)\].*?duration: ([\d.]+) ms\s+(parse|bind|execute|statement)[^:]*:\s*(.*)"
)


def _statement_kind(sql: str) -> str:
    """A short name for a statement of a filing."""
    first = sql.split(maxsplit=1)[0].upper() if sql.strip() else ""
    if first in ("COMMIT", "BEGIN", "LOCK"):
        return first
    if "audit_log" in sql and "INSERT INTO operation_cells" in sql:
        return "write: cells, audit entry"
    if sql.startswith("WITH gone") or "INSERT INTO operations" in sql:
        return "write: operation row"
    if sql.startswith("SELECT l.party_id"):
        return "read ahead (liveness, audit tip, subscriptions)"
    if "FROM operations" in sql and sql.startswith("SELECT"):
        return "search (cell index)"
    return (sql[:40] + "...") if len(sql) > 40 else sql


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-url", default=S.PG_URL)
    p.add_argument("--n", type=int, default=1_000_000, help="the world's size (default 1,000,000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--filings", type=int, default=400)
    p.add_argument("--log", default=DEFAULT_LOG, help=f"the server's log (default {DEFAULT_LOG})")
    p.add_argument("--json", default=str(RESULTS / "pg_floor.json"))
    args = p.parse_args(argv)

    import psycopg
    from psycopg.conninfo import make_conninfo

    from deconfliction.stores.postgres import PostgresStore

    log_path = Path(args.log)
    if not os.access(log_path, os.R_OK):
        print(f"cannot read the server's log {log_path}: pass --log", file=sys.stderr)
        return 2
    schema = S.pg_schema(S.World(args.n, args.seed, 0.0))
    try:
        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT value FROM {schema}.bench_meta WHERE key = 'world'"
            ).fetchone()
            world_meta = json.loads(row[0])
            S.pg_reset(conn, schema, world_meta["max_seq"])
    except psycopg.Error as exc:
        print(
            f"no loaded world in schema {schema} ({str(exc).strip().splitlines()[0]}): "
            f"run python bench/strategic.py --store postgres --n {args.n} first",
            file=sys.stderr,
        )
        return 2
    world = S.World(args.n, args.seed, world_meta["t0"])
    logged = make_conninfo(
        args.pg_url, options=f"-csearch_path={schema} -clog_min_duration_statement=0"
    )
    store = PostgresStore(logged, pool_size=1, apply_migrations=False)
    bare = psycopg.connect(logged, autocommit=True)
    monitor = psycopg.connect(args.pg_url, autocommit=True)
    report = Report(f"PostgreSQL: what one filing costs the server (schema {schema})")
    try:
        svc = Strategic(store)
        party = S.ensure_party(svc, "bench-solo")
        lo, hi = S.filing_window(world)
        rng = np.random.default_rng([args.seed, 0xF100])
        rounds, per = 4, max(1, args.filings // 4)
        vols = [[S.query_volume(rng, lo, hi)] for _ in range(rounds * per + 20)]
        keys = [[f.operation.version for f in svc.conflicts_for(party, v)] for v in vols]
        for v, k in zip(vols[:20], keys[:20], strict=True):  # warm: connection, plans
            svc.file_operation(party, Filing(v, priority=S.FILING_PRIORITY, key=k))
        for i in range(100):
            bare.execute("INSERT INTO bench_scratch (x) VALUES (%s)", (float(i),))
        filer_pid = store.transact(lambda tx: tx.conn.info.backend_pid, write=False)

        start = log_path.stat().st_size
        bare_s: list[float] = []
        filed_s: list[float] = []
        filing_wal = [0.0, 0.0, 0.0]
        for r in range(rounds):
            for i in range(max(per, 200)):
                t = now()
                bare.execute("INSERT INTO bench_scratch (x) VALUES (%s)", (float(i),))
                bare_s.append(now() - t)
            w0 = monitor.execute(
                "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
            ).fetchone()
            for v, k in zip(vols[20 + r * per :][:per], keys[20 + r * per :][:per], strict=True):
                t = now()
                svc.file_operation(party, Filing(v, priority=S.FILING_PRIORITY, key=k))
                filed_s.append(now() - t)
            w1 = monitor.execute(
                "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
            ).fetchone()
            for j in range(3):
                filing_wal[j] += float(w1[j]) - float(w0[j])
        time.sleep(0.5)  # the server's log is written by its logging collector or stderr
        with open(log_path, encoding="utf-8", errors="replace") as f:
            f.seek(start)
            text = f.read()
    finally:
        bare.close()
        monitor.close()
        store.close()

    n = len(filed_s)
    by_kind: dict[str, float] = collections.defaultdict(float)
    found = 0
    for line in text.splitlines():
        m = _LINE.search(line)
        if m is None or int(m[1]) != filer_pid:
            continue
        found += 1
        by_kind[_statement_kind(m[4])] += float(m[2])
    if not found:
        print(
            f"no statement durations of backend {filer_pid} in {log_path}: does "
            "log_line_prefix hold [%p]?",
            file=sys.stderr,
        )
        return 2
    server_ms = sum(by_kind.values()) / n
    bare_ms = 1e3 * float(np.median(bare_s))
    filed_ms = 1e3 * float(np.median(filed_s))
    sec = "1 one filing"
    report.add(
        sec, "bare INSERT commit, wall (median)", fmt_ms(bare_ms), note="autocommit, one row"
    )
    report.add(sec, "filing, wall (median)", fmt_ms(filed_ms), note=f"{n} spread-out filings")
    report.add(
        sec, "  ratio, measured", f"{bare_ms / filed_ms:.2f}", "≥ 0.4", bare_ms / filed_ms >= 0.4
    )
    report.add(
        sec,
        "filing, server time (mean)",
        fmt_ms(server_ms),
        note="parse + bind + execute of its statements, COMMIT (WAL flush) included",
    )
    report.add(
        sec,
        "  ratio ceiling: bare wall / filing server time",
        f"{bare_ms / server_ms:.2f}",
        "≥ 0.4",
        bare_ms / server_ms >= 0.4,
        "the ratio if client and network took no time at all",
    )
    report.add(
        sec,
        "  filings one after another, at most",
        fmt_rate(1e3 / server_ms),
        note="server time alone, as writers taking turns in a hot spot are",
    )
    report.add(
        sec,
        "WAL per filing",
        f"{filing_wal[2] / n / 1024:.1f} KiB",
        note=f"{filing_wal[0] / n:.0f} records, {filing_wal[1] / n:.1f} full-page images",
    )
    sec = "2 server time per filing"
    for kind, total in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        if total / n >= 0.005:
            report.add(sec, kind, fmt_ms(total / n), note=f"{100 * total / n / server_ms:.0f} %")
    report.data.update(
        {
            "schema": schema,
            "filings": n,
            "bare_insert_wall_ms": bare_ms,
            "filing_wall_ms": filed_ms,
            "filing_server_ms": server_ms,
            "ratio_measured": bare_ms / filed_ms,
            "ratio_ceiling": bare_ms / server_ms,
            "wal_per_filing": {
                "records": filing_wal[0] / n,
                "fpi": filing_wal[1] / n,
                "bytes": filing_wal[2] / n,
            },
            "server_ms_per_filing_by_statement": {k: v / n for k, v in by_kind.items()},
        }
    )
    report.publish(Path(args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
