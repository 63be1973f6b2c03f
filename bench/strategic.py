"""Strategic deconfliction at scale: load, query, file (alone, concurrently, over HTTP).

    python bench/strategic.py                 # N = 1,000,000 stored operations
    python bench/strategic.py --quick         # N = 50,000, under a minute
    python bench/strategic.py --http          # also drive the HTTP API (2 worker processes)

A synthetic world of N operations (one volume each) is generated once per (N, seed) and cached
as a SQLite file under bench/results/ (``--rebuild`` makes it again). Every run copies it to a
scratch file before writing, so the cache stays pristine. See docs/benchmarks.md for what each
number means and the targets it is held to.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import json
import math
import multiprocessing as mp
import os
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS,
    Report,
    fmt_ms,
    fmt_rate,
    fmt_s,
    now,
    summary_ms,
)

from deconfliction.core import rules
from deconfliction.core.errors import MissingKey, Unavailable, VersionMismatch
from deconfliction.core.model import Operation, OperationDetails, OperationState, Party
from deconfliction.geo import Circle, GeometryError, Polygon, Volume
from deconfliction.services import audit
from deconfliction.services.strategic import Filing, Strategic
from deconfliction.stores.sqlite import SqliteStore

GENERATOR_VERSION = 1
"""Bump when the world's distribution changes, so cached databases are rebuilt."""

LAT = (35.0, 60.0)
LON = (-10.0, 30.0)
DAYS = 30
PARTIES = 1_000
PRIORITIES = 10  # stored priorities are 0..9; bench filings use FILING_PRIORITY
FILING_PRIORITY = PRIORITIES
ALT_CEILING_M = 3_000.0
CHUNK = 5_000

QUERY_RADIUS_M = 10_000.0
QUERY_BAND_M = 150.0
QUERY_WINDOW_S = 3_600.0

HOT_LAT, HOT_LON = 48.0, 11.0  # somewhere in the middle of the region
HOT_SLOT_S = 60.0
HOT_WINDOW_S = 600.0  # each hot filing overlaps its 9 neighbours on either side in time


# --------------------------------------------------------------------------------------------
# The synthetic world
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    n: int
    seed: int
    t0: float
    """Start of the 30-day window (UTC seconds), an hour after the world was built."""

    @property
    def t1(self) -> float:
        return self.t0 + DAYS * 86_400.0


def party_ids(seed: int, count: int = PARTIES) -> list[str]:
    rng = np.random.default_rng([seed, 0xBA57])
    return [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(count)]


def polygon_vertices(
    rng: np.random.Generator, lat: float, lon: float, radius_m: float, n: int
) -> list[tuple[float, float]]:
    """A star-shaped ring (hence simple) of ``n`` vertices at 60-100% of ``radius_m``."""
    ang = (np.arange(n) + rng.uniform(0.15, 0.85, n)) * (2 * math.pi / n)
    r = radius_m * rng.uniform(0.6, 1.0, n)
    dlat = r * np.cos(ang) / 111_320.0
    dlon = r * np.sin(ang) / (111_320.0 * math.cos(math.radians(lat)))
    return list(zip((lat + dlat).tolist(), (lon + dlon).tolist(), strict=True))


def _footprint(rng: np.random.Generator, lat: float, lon: float, polygon: bool):
    if polygon:  # 1-50 km across
        radius = float(rng.uniform(500.0, 25_000.0))
        for _ in range(10):
            try:
                return Polygon.create(
                    polygon_vertices(rng, lat, lon, radius, int(rng.integers(4, 11)))
                )
            except GeometryError:  # pragma: no cover - star-shaped rings are simple
                continue
        raise RuntimeError("could not make a valid polygon")
    return Circle.create(lat, lon, float(rng.uniform(500.0, 25_000.0)))


def generate_chunk(task: tuple[World, int, int]) -> list[Operation]:
    """Operations ``[first, first + count)`` of the world; deterministic for (seed, first)."""
    world, first, count = task
    rng = np.random.default_rng([world.seed, first])
    owners = party_ids(world.seed)
    lat = rng.uniform(*LAT, count)
    lon = rng.uniform(*LON, count)
    is_polygon = rng.random(count) < 0.5
    thickness = rng.uniform(30.0, 500.0, count)
    lower = rng.uniform(0.0, ALT_CEILING_M - thickness)
    duration = rng.uniform(600.0, 4 * 3_600.0, count)
    start = world.t0 + rng.uniform(0.0, DAYS * 86_400.0 - duration)
    priority = rng.integers(0, PRIORITIES, count)
    owner = rng.integers(0, PARTIES, count)
    activated = rng.random(count) < 0.2
    ids = rng.bytes(16 * count)
    versions = rng.bytes(12 * count)
    created = world.t0 - 3_600.0
    out = []
    for i in range(count):
        fp = _footprint(rng, float(lat[i]), float(lon[i]), bool(is_polygon[i]))
        volume = Volume.create(
            fp,
            float(lower[i]),
            float(lower[i] + thickness[i]),
            float(start[i]),
            float(start[i] + duration[i]),
        )
        out.append(
            Operation(
                id=str(uuid.UUID(bytes=ids[16 * i : 16 * i + 16], version=4)),
                owner=owners[owner[i]],
                state=OperationState.ACTIVATED if activated[i] else OperationState.ACCEPTED,
                priority=int(priority[i]),
                volumes=(volume,),
                version=versions[12 * i : 12 * i + 12].hex(),
                revision=1,
                created_at=created,
                updated_at=created,
                details=OperationDetails(),
            )
        )
    return out


def build_world(
    world: World, path: Path, workers: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Generate the operations in worker processes, then time ``SqliteStore.bulk_load``."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    tasks = [(world, first, min(CHUNK, world.n - first)) for first in range(0, world.n, CHUNK)]
    log(f"generating {world.n:,} operations in {workers} processes ...")
    t = now()
    ops: list[Operation] = []
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            for chunk in pool.imap(generate_chunk, tasks):
                ops.extend(chunk)
    else:
        for task in tasks:
            ops.extend(generate_chunk(task))
    gen_s = now() - t
    polygons = sum(isinstance(op.volumes[0].footprint, Polygon) for op in ops)
    log(f"  generated in {fmt_s(gen_s)} ({polygons:,} polygons); bulk loading ...")

    store = SqliteStore(path)
    parties = party_ids(world.seed)

    def add(tx: Any) -> None:
        for k, pid in enumerate(parties):
            tx.add_party(Party(pid, f"party-{k:04d}", world.t0 - 86_400.0))

    store.transact(add)
    gc.collect()
    gc.disable()  # a million fresh objects would otherwise trigger full collections mid-load
    try:
        t = now()
        loaded = store.bulk_load(ops)
        load_s = now() - t
    finally:
        gc.enable()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    store.close()
    size = path.stat().st_size
    log(
        f"  bulk_load: {loaded:,} operations in {fmt_s(load_s)} ({loaded / load_s:,.0f}/s), "
        f"{size / 2**20:,.0f} MiB"
    )
    del ops
    gc.collect()
    return {
        "generator_version": GENERATOR_VERSION,
        "n": world.n,
        "seed": world.seed,
        "t0": world.t0,
        "polygons": polygons,
        "generate_s": gen_s,
        "generate_workers": workers,
        "bulk_load_s": load_s,
        "bulk_load_rate_per_s": loaded / load_s,
        "db_bytes": size,
        "built_at": time.time(),
    }


def open_world(
    args: argparse.Namespace, log: Callable[[str], None]
) -> tuple[World, Path, dict[str, Any], bool]:
    """The cached world for (N, seed), built if missing, stale or asked for."""
    path = Path(args.db) if args.db else RESULTS / f"strategic-n{args.n}-s{args.seed}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_path = Path(f"{path}.json")
    meta: dict[str, Any] | None = None
    if meta_path.exists() and path.exists() and not args.rebuild:
        meta = json.loads(meta_path.read_text())
        reason = None
        if meta.get("generator_version") != GENERATOR_VERSION:
            reason = "generator changed"
        elif (meta["n"], meta["seed"]) != (args.n, args.seed):
            reason = "different N or seed"
        elif time.time() > meta["t0"] + (DAYS - 5) * 86_400.0:
            reason = "its 30 days are nearly over (filings must lie in the future)"
        if reason:
            log(f"cached world {path.name} not used: {reason}")
            meta = None
    if meta is not None:
        return World(meta["n"], meta["seed"], meta["t0"]), path, meta, True
    t0 = float(int(time.time()) // 3_600 * 3_600 + 3_600)
    world = World(args.n, args.seed, t0)
    meta = build_world(world, path, args.workers, log)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return world, path, meta, False


def scratch_copy(path: Path) -> Path:
    work = path.with_name("strategic-scratch.db")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(path, work)
    return work


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------


def query_volume(rng: np.random.Generator, t_lo: float, t_hi: float) -> Volume:
    lat, lon = rng.uniform(*LAT), rng.uniform(*LON)
    lower = rng.uniform(0.0, ALT_CEILING_M - QUERY_BAND_M)
    start = rng.uniform(t_lo, t_hi - QUERY_WINDOW_S)
    return Volume.create(
        Circle.create(lat, lon, QUERY_RADIUS_M),
        lower,
        lower + QUERY_BAND_M,
        start,
        start + QUERY_WINDOW_S,
    )


RTREE_SQL = (
    "SELECT op_rowid FROM operation_index WHERE lon1 >= ? AND lon0 <= ? AND lat1 >= ? "
    "AND lat0 <= ? AND alt1 >= ? AND alt0 <= ? AND t1 >= ? AND t0 <= ?"
)


def bench_queries(
    store: SqliteStore, world: World, count: int, seed: int, report: Report, profile: Path | None
) -> None:
    rng = np.random.default_rng([seed, 0x9E7])
    queries = [[query_volume(rng, world.t0, world.t1)] for _ in range(count)]
    warm = [[query_volume(rng, world.t0, world.t1)] for _ in range(max(200, count // 10))]
    # Exactly the boxes the store searches with (float32, rounded outward, epoch-relative).
    boxes = [store._ops.boxes(q) for q in queries]
    raw = sqlite3.connect(store.path, isolation_level=None)
    raw.execute("PRAGMA journal_mode = WAL")

    def full(q: list[Volume]) -> tuple[int, int]:
        def look(tx: Any) -> tuple[int, int]:
            candidates = tx.operation_candidates(q)
            return len(candidates), len(rules.find_conflicts(q, candidates))

        return store.transact(look, write=False)

    for q in warm:  # the OS page cache, sqlite's statement cache, numpy's first calls
        full(q)
        for b in store._ops.boxes(q):
            raw.execute(RTREE_SQL, b).fetchall()

    raw_s, raw_hits = [], []
    for bs in boxes:
        t = now()
        hits = 0
        for b in bs:
            hits += len(raw.execute(RTREE_SQL, b).fetchall())
        raw_s.append(now() - t)
        raw_hits.append(hits)

    full_s, cands, found = [], [], []
    for q in queries:
        t = now()
        c, f = full(q)
        full_s.append(now() - t)
        cands.append(c)
        found.append(f)

    # Where the time goes, in a separate pass (the split itself costs a little).
    stage = {"boxes": [], "rtree": [], "load": [], "exact": [], "tx": []}
    for q in queries:

        def split(tx: Any, q: list[Volume] = q) -> None:
            t = now()
            bs = store._ops.boxes(q)
            t1 = now()
            rowids: set[int] = set()
            for b in bs:
                rowids.update(r[0] for r in tx.db.execute(RTREE_SQL, b))
            t2 = now()
            ops = tx.operation_candidates(q) if rowids else []
            t3 = now()
            rules.find_conflicts(q, ops)
            t4 = now()
            stage["boxes"].append(t1 - t)
            stage["rtree"].append(t2 - t1)
            # operation_candidates repeats boxes + R*Tree: charge only the rest to loading.
            stage["load"].append(max(0.0, (t3 - t2) - ((t2 - t) if rowids else 0.0)))
            stage["exact"].append(t4 - t3)

        t = now()
        store.transact(split, write=False)
        stage["tx"].append(now() - t)
    stage_mean = {k: float(np.mean(v)) * 1e3 for k, v in stage.items()}
    stage_mean["transaction"] = stage_mean["tx"] - sum(
        stage_mean[k] for k in ("boxes", "rtree", "load", "exact")
    )
    del stage_mean["tx"]

    if profile is not None:
        prof = cProfile.Profile()
        prof.enable()
        for q in queries:
            full(q)
        prof.disable()
        prof.dump_stats(profile / "query.prof")

    raw.close()
    r, f = summary_ms(raw_s), summary_ms(full_s)
    cands_a, found_a = np.asarray(cands), np.asarray(found)
    with_cands = cands_a > 0
    report.data["query"] = {
        "count": count,
        "volume": {"radius_m": QUERY_RADIUS_M, "band_m": QUERY_BAND_M, "window_s": QUERY_WINDOW_S},
        "raw_rtree": r,
        "full": f,
        "overhead_median_ms": f["median_ms"] - r["median_ms"],
        "candidates_mean": float(cands_a.mean()),
        "conflicts_mean": float(found_a.mean()),
        "raw_index_hits_mean": float(np.mean(raw_hits)),
        "share_with_candidates": float(with_cands.mean()),
        "candidates_max": int(cands_a.max()),
        "full_median_ms_with_candidates": float(np.median(np.asarray(full_s)[with_cands]) * 1e3)
        if with_cands.any()
        else None,
        "stage_mean_ms": stage_mean,
    }
    sec = "2 query"
    report.add(sec, "raw R*Tree SELECT (floor), median", fmt_ms(r["median_ms"]), "0.06 ms (ARCH)")
    report.add(sec, "raw R*Tree SELECT, p99", fmt_ms(r["p99_ms"]))
    report.add(
        sec,
        "index + exact check, median",
        fmt_ms(f["median_ms"]),
        "≤ 0.2 ms",
        f["median_ms"] <= 0.2,
        f"{count:,} queries; 10 km / 150 m / 1 h",
    )
    report.add(sec, "index + exact check, p99", fmt_ms(f["p99_ms"]), "≤ 1 ms", f["p99_ms"] <= 1.0)
    report.add(
        sec,
        "overhead over floor (median)",
        fmt_ms(f["median_ms"] - r["median_ms"]),
        note=f"×{f['median_ms'] / max(r['median_ms'], 1e-9):.1f} the raw SELECT",
    )
    report.add(
        sec,
        "candidates / true conflicts (mean)",
        f"{cands_a.mean():.2f} / {found_a.mean():.2f}",
        note=f"{with_cands.mean():.0%} of queries had a candidate; max {cands_a.max()}",
    )
    report.add(
        sec,
        "mean split: boxes / rtree / load / exact / tx",
        " / ".join(
            f"{stage_mean[k]:.3f}" for k in ("boxes", "rtree", "load", "exact", "transaction")
        ),
        note="ms",
    )


# --------------------------------------------------------------------------------------------
# Filing
# --------------------------------------------------------------------------------------------


def bare_connection(path: str, synchronous: str) -> sqlite3.Connection:
    """A connection with the store's pragmas, for the bare single-row commit."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(f"PRAGMA synchronous = {synchronous}")
    db.execute("CREATE TABLE IF NOT EXISTS bench_scratch (id INTEGER PRIMARY KEY, x REAL)")
    return db


def bare_commits(db: sqlite3.Connection, count: int) -> float:
    t = now()
    for i in range(count):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO bench_scratch (x) VALUES (?)", (float(i),))
        db.execute("COMMIT")
    return now() - t


def filing_window(world: World) -> tuple[float, float]:
    """Where filings go in time: inside the world, never in the past."""
    lo = max(world.t0, time.time() + 600.0)
    return lo, world.t1


def ensure_party(svc: Strategic, name: str) -> str:
    try:
        return svc.find_party(name).id
    except Exception:
        return svc.add_party(name).id


def bench_single_filing(
    path: Path,
    world: World,
    count: int,
    seed: int,
    synchronous: str,
    report: Report,
    profile: Path | None,
) -> dict[str, Any]:
    """One client filing spread-out operations, alternating with bare commits on the same file."""
    store = SqliteStore(path, synchronous=synchronous)
    svc = Strategic(store)
    party = ensure_party(svc, "bench-solo")
    bare = bare_connection(str(path), synchronous)
    rng = np.random.default_rng([seed, 0xF11E, synchronous == "FULL"])
    lo, hi = filing_window(world)
    rounds = 4
    per_round = max(1, count // rounds)
    vols = [[query_volume(rng, lo, hi)] for _ in range(2 * rounds * per_round)]
    # Key computed outside the timed section (the client looked before), for half the filings.
    pre = vols[: rounds * per_round]
    keys = [[f.operation.version for f in svc.conflicts_for(party, v)] for v in pre]
    looked = vols[rounds * per_round :]

    bare_commits(bare, 200)  # warm
    audit_s = [0.0]  # time inside audit.append during the key-known filings (issue #4: ≤ 10 %)
    append = audit.append

    def timed_append(*a: Any, **k: Any) -> Any:
        t = now()
        try:
            return append(*a, **k)
        finally:
            audit_s[0] += now() - t

    bare_s = filed_s = looked_s = 0.0
    lat_filed, lat_looked = [], []
    refused = 0
    n_bare = 0
    for r in range(rounds):
        n = max(per_round, 500)
        bare_s += bare_commits(bare, n)
        n_bare += n
        for v, key in zip(
            pre[r * per_round : (r + 1) * per_round],
            keys[r * per_round : (r + 1) * per_round],
            strict=True,
        ):
            audit.append = timed_append
            t = now()
            try:
                svc.file_operation(party, Filing(v, priority=FILING_PRIORITY, key=key))
            except MissingKey:
                refused += 1
            lat_filed.append(now() - t)
            audit.append = append
        for v in looked[r * per_round : (r + 1) * per_round]:
            t = now()
            key = [f.operation.version for f in svc.conflicts_for(party, v)]
            svc.file_operation(party, Filing(v, priority=FILING_PRIORITY, key=key))
            lat_looked.append(now() - t)
    filed_s, looked_s = sum(lat_filed), sum(lat_looked)

    if profile is not None:
        prof = cProfile.Profile()
        extra = [[query_volume(rng, lo, hi)] for _ in range(per_round)]
        extra_keys = [[f.operation.version for f in svc.conflicts_for(party, v)] for v in extra]
        prof.enable()
        for v, key in zip(extra, extra_keys, strict=True):
            svc.file_operation(party, Filing(v, priority=FILING_PRIORITY, key=key))
        prof.disable()
        prof.dump_stats(profile / f"filing-{synchronous.lower()}.prof")

    bare.close()
    store.close()
    bare_rate = n_bare / bare_s
    filed_rate = len(lat_filed) / filed_s
    looked_rate = len(lat_looked) / looked_s
    return {
        "synchronous": synchronous,
        "bare_commit_rate_per_s": bare_rate,
        "bare_commit_ms": 1e3 / bare_rate,
        "filing_rate_per_s": filed_rate,
        "filing_ratio": filed_rate / bare_rate,
        "filing_latency": summary_ms(lat_filed),
        "look_and_file_rate_per_s": looked_rate,
        "look_and_file_ratio": looked_rate / bare_rate,
        "look_and_file_latency": summary_ms(lat_looked),
        "audit_ms_per_filing": 1e3 * audit_s[0] / len(lat_filed),
        "audit_share": audit_s[0] / filed_s,
        "filings": len(lat_filed) + len(lat_looked),
        "refused_missing_key": refused,
    }


def report_single(results: list[dict[str, Any]], report: Report) -> None:
    sec = "3 filing, 1 client"
    for res in results:
        sync = res["synchronous"]
        target = "≥ 0.4" if sync == "FULL" else ""
        report.add(
            sec,
            f"bare commit rate (synchronous={sync})",
            fmt_rate(res["bare_commit_rate_per_s"]),
            note=f"{res['bare_commit_ms']:.3f} ms per BEGIN IMMEDIATE/INSERT/COMMIT",
        )
        report.add(
            sec,
            f"file_operation rate, key known ({sync})",
            fmt_rate(res["filing_rate_per_s"]),
            note=f"median {fmt_ms(res['filing_latency']['median_ms'])}, "
            f"p99 {fmt_ms(res['filing_latency']['p99_ms'])}",
        )
        report.add(
            sec,
            f"  ratio to bare commit ({sync})",
            f"{res['filing_ratio']:.2f}",
            target,
            res["filing_ratio"] >= 0.4 if sync == "FULL" else None,
            "conflicts_for ran before, untimed",
        )
        report.add(
            sec,
            f"  audit append share ({sync})",
            f"{100 * res['audit_share']:.1f} %",
            "≤ 10 %",
            res["audit_share"] <= 0.10,
            f"{fmt_ms(res['audit_ms_per_filing'])} per filing in audit.append (head, hash, insert)",
        )
        report.add(
            sec,
            f"conflicts_for + file_operation ({sync})",
            fmt_rate(res["look_and_file_rate_per_s"]),
            note=f"ratio {res['look_and_file_ratio']:.2f}; look timed too",
        )


def hot_footprints(rng: np.random.Generator, count: int = 64) -> list[Any]:
    """Footprints around the hot spot: half 3 km circles, half 3 km hexagons, jittered."""
    out = []
    for k in range(count):
        lat = HOT_LAT + rng.uniform(-0.005, 0.005)
        lon = HOT_LON + rng.uniform(-0.007, 0.007)
        if k % 2:
            out.append(Polygon.create(polygon_vertices(rng, lat, lon, 3_000.0, 6)))
        else:
            out.append(Circle.create(lat, lon, 3_000.0))
    return out


def spread_footprints(rng: np.random.Generator, count: int = 4_096) -> list[Any]:
    return [
        Circle.create(rng.uniform(*LAT), rng.uniform(*LON), QUERY_RADIUS_M) for _ in range(count)
    ]


@dataclass
class LoadResult:
    successes: int
    elapsed_s: float
    latencies_s: list[float]
    retries: int
    busy: int
    errors: int
    conflicts_seen: list[int]


def run_threads(
    svc: Strategic,
    parties: list[str],
    make: Callable[[int], list[Volume]],
    duration_s: float,
    threads: int,
) -> LoadResult:
    """``threads`` clients filing for ``duration_s``; each looks, files with what it saw as the
    key, and on MissingKey adds the versions the refusal lists (on VersionMismatch it looks
    again) and files again. Latency runs from the look to the acknowledged filing."""
    counter = itertools.count()
    stop = threading.Event()
    lock = threading.Lock()
    lat: list[float] = []
    seen: list[int] = []
    totals = {"retries": 0, "busy": 0, "errors": 0}

    def client(party: str) -> None:
        mine_lat, mine_seen, retries, busy, errors = [], [], 0, 0, 0
        while not stop.is_set():
            vols = make(next(counter))
            t = now()
            key = [f.operation.version for f in svc.conflicts_for(party, vols)]
            for _attempt in range(100):
                try:
                    filed = svc.file_operation(
                        party, Filing(vols, priority=FILING_PRIORITY, key=key)
                    )
                except MissingKey as exc:  # the refusal lists what we missed: now we have seen it
                    key += [f.operation.version for f in exc.details["missing"]]
                    retries += 1
                    continue
                except VersionMismatch:
                    key = [f.operation.version for f in svc.conflicts_for(party, vols)]
                    retries += 1
                    continue
                except Unavailable:
                    busy += 1
                    continue
                except Exception:
                    errors += 1
                    break
                mine_lat.append(now() - t)
                mine_seen.append(len(filed.conflicts))
                break
            else:
                errors += 1
        with lock:
            lat.extend(mine_lat)
            seen.extend(mine_seen)
            totals["retries"] += retries
            totals["busy"] += busy
            totals["errors"] += errors

    workers = [
        threading.Thread(target=client, args=(parties[k % len(parties)],)) for k in range(threads)
    ]
    t = now()
    for w in workers:
        w.start()
    time.sleep(duration_s)
    stop.set()
    for w in workers:
        w.join()
    elapsed = now() - t
    return LoadResult(
        len(lat), elapsed, lat, totals["retries"], totals["busy"], totals["errors"], seen
    )


def bench_concurrent(
    path: Path, world: World, seed: int, threads: int, duration_s: float, report: Report
) -> None:
    store = SqliteStore(path)
    svc = Strategic(store)
    parties = [ensure_party(svc, f"bench-client-{k}") for k in range(threads)]
    rng = np.random.default_rng([seed, 0x407])
    lo, hi = filing_window(world)
    hot = hot_footprints(rng)
    hot_t0 = lo + 3_600.0
    alt = (100.0, 250.0)

    def hot_volumes(i: int) -> list[Volume]:
        start = hot_t0 + i * HOT_SLOT_S
        return [Volume.create(hot[i % len(hot)], alt[0], alt[1], start, start + HOT_WINDOW_S)]

    spread = spread_footprints(rng)
    starts = rng.uniform(lo, hi - QUERY_WINDOW_S, 1 << 16)
    lowers = rng.uniform(0.0, ALT_CEILING_M - QUERY_BAND_M, 1 << 16)

    def spread_volumes(i: int) -> list[Volume]:
        j = i % len(starts)
        return [
            Volume.create(
                spread[i % len(spread)],
                lowers[j],
                lowers[j] + QUERY_BAND_M,
                starts[j],
                starts[j] + QUERY_WINDOW_S,
            )
        ]

    sec = f"4 filing, {threads} threads"
    out = {}
    for name, make in (("spread", spread_volumes), ("hot", hot_volumes)):
        res = run_threads(svc, parties, make, duration_s, threads)
        lat = summary_ms(res.latencies_s)
        rate = res.successes / res.elapsed_s
        out[name] = {
            "threads": threads,
            "duration_s": res.elapsed_s,
            "successes": res.successes,
            "rate_per_s": rate,
            "latency": lat,
            "retries": res.retries,
            "retries_per_filing": res.retries / max(1, res.successes),
            "busy": res.busy,
            "errors": res.errors,
            "conflicts_per_filing": float(np.mean(res.conflicts_seen))
            if res.conflicts_seen
            else 0.0,
        }
        label = "hot spot" if name == "hot" else "spread out"
        report.add(
            sec,
            f"{label}: throughput",
            fmt_rate(rate),
            note=f"{res.successes:,} filings in {res.elapsed_s:.1f} s, synchronous=FULL",
        )
        report.add(
            sec,
            f"{label}: latency p50 / p95",
            f"{fmt_ms(lat['median_ms'])} / {fmt_ms(lat['p95_ms'])}",
            "p95 ≤ 50 ms" if name == "hot" else "",
            lat["p95_ms"] <= 50.0 if name == "hot" else None,
            f"p99 {fmt_ms(lat['p99_ms'])}; look→ack incl. retries",
        )
        report.add(
            sec,
            f"{label}: conflicts / retries per filing",
            f"{out[name]['conflicts_per_filing']:.1f} / {out[name]['retries_per_filing']:.2f}",
            note=f"busy {res.busy}, errors {res.errors}",
        )
    report.data["concurrent"] = out
    store.close()


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


def bench_http(
    path: Path, world: World, seed: int, args: argparse.Namespace, report: Report
) -> None:
    """TODO(http): drive ``deconfliction serve --workers 2`` once the API exists (see below)."""
    sec = "5 HTTP, 2 workers"
    try:
        import deconfliction.api.app
        import deconfliction.cli  # noqa: F401
    except ImportError as exc:
        report.add(sec, "HTTP API", "not run", note=f"API not importable yet: {exc}")
        report.data["http"] = {"skipped": str(exc)}
        return
    from http_load import run_http  # bench/http_load.py: the load generator

    run_http(path, world, seed, args, report)


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1_000_000, help="stored operations (default 1,000,000)")
    p.add_argument("--quick", action="store_true", help="N=50,000 and shorter phases (< 1 min)")
    p.add_argument("--store", choices=["sqlite"], default="sqlite")
    p.add_argument(
        "--db", help="cached world database (default bench/results/strategic-n<N>-s<seed>.db)"
    )
    p.add_argument("--rebuild", action="store_true", help="generate and load the world again")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--queries", type=int, default=None, help="random queries (default 5,000)")
    p.add_argument("--filings", type=int, default=None, help="single-client filings per mode")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--duration", type=float, default=None, help="seconds per concurrent phase")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="generator processes")
    p.add_argument("--http", action="store_true", help="also benchmark the HTTP API")
    p.add_argument("--profile", action="store_true", help="write cProfile stats to bench/results/")
    p.add_argument("--only", default="query,single,concurrent", help="sections to run")
    p.add_argument("--json", default=str(RESULTS / "strategic.json"))
    args = p.parse_args(argv)
    if args.quick:
        if args.n == 1_000_000:
            args.n = 50_000
        args.queries = args.queries or 2_000
        args.filings = args.filings or 400
        args.duration = args.duration or 3.0
    args.queries = args.queries or 5_000
    args.filings = args.filings or 2_000
    args.duration = args.duration or 15.0
    only = set(args.only.split(","))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = now()
    report = Report(
        f"Strategic benchmark: N = {args.n:,} stored operations (one volume each), "
        f"store = {args.store}"
    )
    world, cached, meta, was_cached = open_world(args, log)
    report.data["world"] = {**meta, "cached": was_cached, "path": str(cached)}
    sec = "1 load"
    report.add(
        sec,
        "bulk_load (SqliteStore.bulk_load)",
        fmt_s(meta["bulk_load_s"]),
        note=(
            "cached: built " + time.strftime("%Y-%m-%d %H:%M", time.gmtime(meta["built_at"])) + "Z"
            if was_cached
            else "built this run"
        )
        + f"; {meta['bulk_load_rate_per_s']:,.0f} ops/s",
    )
    report.add(
        sec,
        "generate operations (geo API)",
        fmt_s(meta["generate_s"]),
        note=f"{meta['generate_workers']} processes; {meta['polygons']:,} polygons, rest circles",
    )
    report.add(sec, "database size", f"{meta['db_bytes'] / 2**20:,.0f} MiB")

    prof_dir = RESULTS if args.profile else None
    load_before = os.getloadavg()[0]
    work = None
    try:
        log("copying the world to a scratch file ...")
        t = now()
        work = scratch_copy(cached)
        log(f"  {fmt_s(now() - t)}")
        if "query" in only:
            log(f"queries: {args.queries:,} ...")
            store = SqliteStore(work)
            bench_queries(store, world, args.queries, args.seed, report, prof_dir)
            store.close()
        if "single" in only:
            results = []
            for sync in ("FULL", "NORMAL"):
                log(f"single-client filing, synchronous={sync} ...")
                results.append(
                    bench_single_filing(
                        work, world, args.filings, args.seed, sync, report, prof_dir
                    )
                )
            report.data["single"] = results
            report_single(results, report)
        if "concurrent" in only:
            log(f"{args.threads} threads, spread out and hot spot, {args.duration:g} s each ...")
            bench_concurrent(work, world, args.seed, args.threads, args.duration, report)
        if args.http:
            log("HTTP ...")
            bench_http(work, world, args.seed, args, report)
    finally:
        if work is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{work}{suffix}").unlink(missing_ok=True)
    load_after = os.getloadavg()[0]
    report.data["loadavg_1min"] = {"start": load_before, "end": load_after}
    report.add(
        "machine",
        "1-min load average, start / end",
        f"{load_before:.2f} / {load_after:.2f}",
        note=f"{os.cpu_count()} cores; anything else running skews every number above",
    )
    report.data["args"] = vars(args)
    report.data["elapsed_s"] = now() - started
    report.print()
    report.write_json(Path(args.json))
    log(f"wrote {args.json} ({fmt_s(now() - started)} in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
