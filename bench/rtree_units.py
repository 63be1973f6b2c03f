"""How the units of the SQLite R*Tree's axes shape its searches: the same boxes, three systems.

SQLite's R*Tree chooses the axis of each split by the sum of its nodes' margins, which depends on
the units. This builds R*Trees from the very boxes of the benchmark's world (read from its cached
file, bench/strategic.py), inserted in the same order, in

- degrees, metres and seconds since the store's epoch (schemas 1 to 4),
- each axis scaled so that the world spans 100 units along it,
- ``stores.sqlite.INDEX_UNITS`` (schema 5 on: 1/128 degree, 8 m, 64 s),

and times the bench's query shape (10 km circle, 150 m band, 1 h window; bench/strategic.py's
generator and seed) against each, in alternating rounds. Only the R*Tree search is timed.

    python bench/rtree_units.py [--db bench/results/strategic-n1000000-s7.db] [--queries 3000]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import strategic as S
from common import ROOT, Report, fmt_s, now

from deconfliction.stores.sqlite import INDEX_UNITS

RESULTS = ROOT / "bench/results"
SEARCH = (
    "SELECT op_rowid FROM rt WHERE lon1 >= ? AND lon0 <= ? AND lat1 >= ? AND lat0 <= ? "
    "AND alt1 >= ? AND alt0 <= ? AND t1 >= ? AND t0 <= ?"
)


def read_boxes(path: Path) -> tuple[np.ndarray, float, int]:
    """The world's index entries (id, then 8 bounds in degrees, metres and seconds since the
    epoch), its epoch, and its schema."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    schema = db.execute("PRAGMA user_version").fetchone()[0]
    epoch = float(db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
    rows = np.array(
        db.execute(
            "SELECT id, lon0, lon1, lat0, lat1, alt0, alt1, t0, t1, op_rowid FROM operation_index "
            "ORDER BY id"
        ).fetchall(),
        dtype=np.float64,
    )
    db.close()
    if schema >= 5:  # stored in INDEX_UNITS: powers of two, so this is exact
        rows[:, 1:9] *= np.repeat(INDEX_UNITS, 2)
    return rows, epoch, schema


def build(rows: np.ndarray, scale: np.ndarray, folder: Path, name: str) -> tuple[Path, float]:
    path = folder / f"{name}.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    db.execute(
        "CREATE VIRTUAL TABLE rt USING rtree(id, lon0, lon1, lat0, lat1, alt0, alt1, t0, t1, "
        "+op_rowid INTEGER)"
    )
    t = now()
    db.execute("BEGIN")
    scaled = rows[:, 1:9] * np.repeat(scale, 2)
    db.executemany(
        "INSERT INTO rt VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ((int(r[0]), *map(float, box), int(r[9])) for r, box in zip(rows, scaled, strict=True)),
    )
    db.execute("COMMIT")
    db.close()
    return path, now() - t


@dataclass
class System:
    name: str
    scale: np.ndarray
    """Index units per degree of longitude and latitude, metre, second."""
    build_s: float = 0.0
    found_per_query: float = 0.0
    samples_ms: list[float] = field(default_factory=list)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=RESULTS / "strategic-n1000000-s7.db")
    parser.add_argument("--queries", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=RESULTS / "rtree_units.json")
    args = parser.parse_args(argv)
    if not args.db.exists():
        sys.exit(f"{args.db} not found: run bench/strategic.py first (it builds the world)")

    rows, epoch, schema = read_boxes(args.db)
    lo, hi = rows[:, 1:9:2].min(axis=0), rows[:, 2:9:2].max(axis=0)
    systems = [
        System("degrees, metres, seconds", np.ones(4)),
        System("each axis 100 units across the world", 100.0 / (hi - lo)),
        System("INDEX_UNITS (1/128 degree, 8 m, 64 s)", 1.0 / np.array(INDEX_UNITS)),
    ]
    rng = np.random.default_rng([args.seed, 0x51])
    t_lo, t_hi = epoch + S.QUERY_WINDOW_S, epoch + S.DAYS * 86_400.0 - S.QUERY_WINDOW_S
    since_epoch = np.array([0, 0, 0, 0, 0, 0, epoch, epoch])
    queries = [
        np.array(box) - since_epoch
        for _ in range(args.queries)
        for box in S.query_volume(rng, t_lo, t_hi).index_boxes()
    ]

    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        trees = []
        for k, system in enumerate(systems):
            path, system.build_s = build(rows, system.scale, Path(tmp), f"units{k}")
            db = sqlite3.connect(path)
            db.execute(f"PRAGMA mmap_size = {1 << 30}")
            boxes = [tuple(map(float, q * np.repeat(system.scale, 2))) for q in queries]
            for box in boxes[:300]:
                db.execute(SEARCH, box).fetchall()  # warm
            trees.append((system, db, boxes))
            print(f"built {system.name} in {fmt_s(system.build_s)}", file=sys.stderr)
        for _ in range(args.rounds):  # alternating, so that noise hits every system alike
            for system, db, boxes in trees:
                found = 0
                for box in boxes:
                    t = now()
                    found += len(db.execute(SEARCH, box).fetchall())
                    system.samples_ms.append((now() - t) * 1e3)
                system.found_per_query = found / len(boxes)
        for _, db, _ in trees:
            db.close()

    report = Report(f"R*Tree search by units: {len(rows):,} boxes of {args.db.name}")
    summary = []
    for system in systems:
        median = statistics.median(system.samples_ms)
        p99 = float(np.percentile(system.samples_ms, 99))
        report.add(
            "raw search",
            system.name,
            f"{median:.3f} ms",
            note=f"p99 {p99:.3f} ms; built in {fmt_s(system.build_s)}; "
            f"{system.found_per_query:.2f} found per search",
        )
        summary.append(
            {
                "name": system.name,
                "scale": system.scale.tolist(),
                "build_s": system.build_s,
                "median_ms": median,
                "p99_ms": p99,
                "found_per_query": system.found_per_query,
            }
        )
    report.data = {
        "db": str(args.db),
        "schema": schema,
        "epoch": epoch,
        "boxes": len(rows),
        "queries": len(queries),
        "rounds": args.rounds,
        "systems": summary,
    }
    report.publish(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
