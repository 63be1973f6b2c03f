"""What a durable SQLite commit costs when the WAL file keeps growing, against one that reuses it:
why the checkpointer must get its RESTART through under sustained writes (docs/writes.md,
"Checkpoints").

Each commit inserts eight 3 KB rows (about 8 pages, a filing's worth) into a WAL database with
synchronous=FULL, on the same disk as bench/results/. "growing": nothing checkpoints, the WAL
file grows at every commit. "reused": a RESTART checkpoint every 200 commits, so commits
overwrite the start of an existing file. Blocks alternate so that disk noise hits both.

    python bench/wal_growth.py [--commits 1500] [--rounds 4] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from common import RESULTS, Report, now


def _block(directory: Path, commits: int, reuse: bool) -> list[float]:
    """Milliseconds per commit, for ``commits`` commits into a fresh database."""
    path = directory / "wal.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA wal_autocheckpoint = 0")
        db.execute("CREATE TABLE t (x BLOB)")
        row = os.urandom(3_000)
        times = []
        for k in range(commits):
            if reuse and k % 200 == 0:
                db.execute("PRAGMA wal_checkpoint(RESTART)")
            t = now()
            db.execute("BEGIN IMMEDIATE")
            for _ in range(8):
                db.execute("INSERT INTO t VALUES (?)", (row,))
            db.execute("COMMIT")
            times.append((now() - t) * 1e3)
        return times
    finally:
        db.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1_500, help="commits per block")
    parser.add_argument("--rounds", type=int, default=4, help="blocks per mode")
    parser.add_argument("--json", type=Path, default=RESULTS / "wal_growth.json")
    args = parser.parse_args(argv)

    RESULTS.mkdir(parents=True, exist_ok=True)
    medians: dict[str, list[float]] = {"growing": [], "reused": []}
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        for _ in range(args.rounds):
            for mode in medians:
                times = _block(Path(tmp), args.commits, reuse=mode == "reused")
                medians[mode].append(statistics.median(times))

    report = Report("Durable SQLite commit (8 pages), WAL file growing or reused")
    reused = statistics.median(medians["reused"])
    for mode, values in medians.items():
        median = statistics.median(values)
        report.add(
            "commit",
            f"WAL {mode}",
            f"{median:.3f} ms",
            note=f"×{median / reused:.2f} the reused WAL; block medians "
            + ", ".join(f"{v:.3f}" for v in values),
        )
    report.data = {"commits_per_block": args.commits, "rounds": args.rounds, "median_ms": medians}
    report.publish(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
