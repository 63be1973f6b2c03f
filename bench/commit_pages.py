"""What a durable SQLite commit costs by the number of B-tree pages it writes: the floor under
the single-filing ratio of bench/strategic.py (a filing writes about 12 pages, the bare commit
it is compared with writes one).

Each commit inserts one small row into each of *n* tables (one leaf page each) of a WAL
database with synchronous=FULL, on the same disk as bench/results/. Sizes are measured in
alternating blocks so that disk noise hits all of them; the table shows medians.

    python bench/commit_pages.py [--commits 300] [--rounds 6] [--json PATH]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from common import ROOT, Report, now

PAGES = (1, 4, 8, 12, 16)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=300, help="commits per block")
    parser.add_argument("--rounds", type=int, default=6, help="blocks per size")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/commit_pages.json")
    args = parser.parse_args(argv)

    results = ROOT / "bench/results"
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=results) as tmp:
        db = sqlite3.connect(Path(tmp) / "pages.db", isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        for k in range(max(PAGES)):
            db.execute(f"CREATE TABLE t{k} (id INTEGER PRIMARY KEY, x BLOB)")

        def block(pages: int) -> float:
            t = now()
            for _ in range(args.commits):
                db.execute("BEGIN IMMEDIATE")
                for k in range(pages):
                    db.execute(f"INSERT INTO t{k} (x) VALUES (randomblob(100))")
                db.execute("COMMIT")
            return (now() - t) / args.commits * 1e3

        block(1)  # warm
        ms: dict[int, list[float]] = {n: [] for n in PAGES}
        for _ in range(args.rounds):
            for n in PAGES:
                ms[n].append(block(n))
        db.close()

    report = Report("Durable SQLite commit by pages written (WAL, synchronous=FULL)")
    one = statistics.median(ms[1])
    for n in PAGES:
        median = statistics.median(ms[n])
        report.add(
            "commit",
            f"{n} page{'s' if n > 1 else ''}",
            f"{median:.3f} ms",
            note=f"×{median / one:.2f} the one-page commit; a filing writes ~12",
        )
    report.data = {"commits_per_block": args.commits, "rounds": args.rounds, "ms": ms}
    report.publish(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
