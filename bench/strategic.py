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
    rebuild = args.rebuild and args.store != "postgres"
    if meta_path.exists() and path.exists() and not rebuild:
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


def scratch_copy(path: Path, name: str = "strategic-scratch.db") -> Path:
    work = path.with_name(name)
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
    bare = bare_connection(str(path), synchronous)
    try:
        res = single_filing_rounds(
            svc,
            lambda n: bare_commits(bare, n),
            world,
            count,
            np.random.default_rng([seed, 0xF11E, synchronous == "FULL"]),
            profile / f"filing-{synchronous.lower()}.prof" if profile is not None else None,
        )
    finally:
        bare.close()
        store.close()
    return {"synchronous": synchronous, **res}


def single_filing_rounds(
    svc: Strategic,
    bare: Callable[[int], float],
    world: World,
    count: int,
    rng: np.random.Generator,
    profile: Path | None,
) -> dict[str, Any]:
    """Filings by one client in 4 rounds, each after a block of ``bare(n)`` commits (which
    returns the seconds they took), so that disk noise hits both. Any store."""
    party = ensure_party(svc, "bench-solo")
    lo, hi = filing_window(world)
    rounds = 4
    per_round = max(1, count // rounds)
    vols = [[query_volume(rng, lo, hi)] for _ in range(2 * rounds * per_round)]
    # Key computed outside the timed section (the client looked before), for half the filings.
    pre = vols[: rounds * per_round]
    keys = [[f.operation.version for f in svc.conflicts_for(party, v)] for v in pre]
    looked = vols[rounds * per_round :]

    bare(200)  # warm
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
        bare_s += bare(n)
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
        prof.dump_stats(profile)

    bare_rate = n_bare / bare_s
    filed_rate = len(lat_filed) / filed_s
    looked_rate = len(lat_looked) / looked_s
    return {
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
            key = None
            while key is None and not stop.is_set():
                try:
                    key = [f.operation.version for f in svc.conflicts_for(party, vols)]
                except Unavailable:  # a server store out of retries: look again
                    busy += 1
            if key is None:
                break
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
                    retries += 1
                    try:
                        key = [f.operation.version for f in svc.conflicts_for(party, vols)]
                    except Unavailable:
                        busy += 1
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


def filing_makers(
    seed: int, world: World, lo: float | None = None
) -> dict[str, Callable[[int], list[Volume]]]:
    """The spread-out and hot-spot filing generators of the concurrent section. ``lo``: the
    start of the filing window (pass the same one to every process that shares the hot spot)."""
    rng = np.random.default_rng([seed, 0x407])
    lo_now, hi = filing_window(world)
    lo = lo_now if lo is None else lo
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

    return {"spread": spread_volumes, "hot": hot_volumes}


def bench_concurrent(
    path: Path, world: World, seed: int, threads: int, duration_s: float, report: Report
) -> None:
    store = SqliteStore(path)
    svc = Strategic(store)
    parties = [ensure_party(svc, f"bench-client-{k}") for k in range(threads)]
    makers = filing_makers(seed, world)
    spread_volumes, hot_volumes = makers["spread"], makers["hot"]

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
        add_concurrent_rows(
            report, sec, name, out[name], hot_p95_ms=50.0,
            throughput_note=f"{res.successes:,} filings in {res.elapsed_s:.1f} s, "
            "synchronous=FULL",
            retries_note=f"busy {res.busy}, errors {res.errors}",
        )  # fmt: skip
    report.data["concurrent"] = out
    store.close()


def add_concurrent_rows(
    report: Report,
    sec: str,
    name: str,
    result: dict[str, Any],
    *,
    hot_p95_ms: float,
    throughput_note: str,
    retries_note: str,
) -> None:
    """The three rows of one concurrent phase (spread out or hot spot), for either store."""
    label = "hot spot" if name == "hot" else "spread out"
    lat = result["latency"]
    hot = name == "hot"
    report.add(sec, f"{label}: throughput", fmt_rate(result["rate_per_s"]), note=throughput_note)
    report.add(
        sec,
        f"{label}: latency p50 / p95",
        f"{fmt_ms(lat['median_ms'])} / {fmt_ms(lat['p95_ms'])}",
        f"p95 ≤ {hot_p95_ms:g} ms" if hot else "",
        lat["p95_ms"] <= hot_p95_ms if hot else None,
        f"p99 {fmt_ms(lat['p99_ms'])}; look→ack incl. retries",
    )
    report.add(
        sec,
        f"{label}: conflicts / retries per filing",
        f"{result['conflicts_per_filing']:.1f} / {result['retries_per_filing']:.2f}",
        note=retries_note,
    )


# --------------------------------------------------------------------------------------------
# PostgreSQL (--store postgres): the same world, read back from the cached SQLite file
# --------------------------------------------------------------------------------------------

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_THREADS = 16
PG_PROCESSES = 2
_PG_CELLS_PK = "(cell, span, t_start, t_end, alt_lo, alt_hi, op_id, ord)"


def pg_schema(world: World) -> str:
    return f"bench_n{world.n}_s{world.seed}"


def pg_conninfo(url: str, schema: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, options=f"-csearch_path={schema}")


def pg_counting_store(conninfo: str, **kwargs: Any) -> Any:
    """A PostgresStore that counts the serialization failures (and deadlocks, and unique
    violations) its transactions hit; ``transact`` retries them out of sight."""
    from psycopg import errors as pg_errors

    from deconfliction.stores.postgres import PostgresStore

    class CountingStore(PostgresStore):
        def __init__(self) -> None:
            super().__init__(conninfo, **kwargs)
            self.lost = {"serialization": 0, "deadlock": 0, "unique": 0}
            self._count_lock = threading.Lock()

        def _run(self, conn: Any, begin: str, fn: Callable[[Any], Any], **kw: Any) -> Any:
            try:
                return super()._run(conn, begin, fn, **kw)
            except pg_errors.SerializationFailure:
                self._count("serialization")
                raise
            except pg_errors.DeadlockDetected:
                self._count("deadlock")
                raise
            except pg_errors.UniqueViolation:
                self._count("unique")
                raise

        def _count(self, what: str) -> None:
            with self._count_lock:
                self.lost[what] += 1

    return CountingStore()


def _pg_load_part(task: tuple[str, str, int, int, int]) -> tuple[int, float]:
    """Worker: operations with SQLite rowid in ``(first, last]`` from the scratch copy, COPYed
    with ``PostgresStore.bulk_load``."""
    from deconfliction.stores.postgres import PostgresStore

    sqlite_path, conninfo, first, last, batch = task
    gc.disable()
    src = SqliteStore(Path(sqlite_path))
    dst = PostgresStore(conninfo, pool_size=1, apply_migrations=False)

    def read() -> Any:
        after = first
        while after < last:
            chunk = src.transact(
                lambda tx, a=after: tx._operations(
                    "rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?", (a, last, batch)
                ),
                write=False,
            )
            if not chunk:
                return
            yield from chunk
            after = src.transact(
                lambda tx, op=chunk[-1]: tx.db.execute(
                    "SELECT rowid FROM operations WHERE id = ?", (op.id,)
                ).fetchone()[0],
                write=False,
            )

    t = now()
    loaded = 0
    try:
        chunk: list[Operation] = []
        for op in itertools.chain(read(), [None]):
            if op is not None:
                chunk.append(op)
                if len(chunk) < batch:
                    continue
            if not chunk:
                break
            # One transaction per chunk, so a chunk that failed left nothing behind: retry it
            # (a server restarted by another test, shared memory for predicate locks used up).
            for attempt in range(20):
                try:
                    loaded += dst.bulk_load(chunk, batch=batch)
                    break
                except Unavailable:
                    if attempt == 19:
                        raise
                    time.sleep(min(5.0, 0.2 * 2**attempt))
            chunk = []
    finally:
        dst.close()
        src.close()
    return loaded, now() - t


def pg_open_world(
    args: argparse.Namespace,
    world: World,
    meta: dict[str, Any],
    sqlite_path: Path,
    log: Callable[[str], None],
) -> tuple[str, dict[str, Any], bool]:
    """The world's PostgreSQL schema, loaded from the SQLite copy unless a matching one exists.

    Returns ``(conninfo, pg meta, was cached)``. A cached schema is reset to the world as loaded
    (operations filed by earlier runs removed) before it is used.
    """
    import psycopg

    from deconfliction.stores.postgres import migrate

    schema = pg_schema(world)
    conninfo = pg_conninfo(args.pg_url, schema)
    want = {
        "generator_version": GENERATOR_VERSION,
        "n": world.n,
        "seed": world.seed,
        "t0": world.t0,
        "sqlite_built_at": meta["built_at"],
    }
    with psycopg.connect(args.pg_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name = 'bench_meta'",
            (schema,),
        ).fetchone()
        found: dict[str, Any] | None = None
        if exists and not args.rebuild:
            row = conn.execute(f"SELECT value FROM {schema}.bench_meta WHERE key = 'world'")
            got = row.fetchone()
            found = json.loads(got[0]) if got else None
            reason = None
            if found is None:
                reason = "no meta marker"
            elif any(found.get(k) != v for k, v in want.items()):
                reason = "built from a different world"
            else:
                loaded = conn.execute(
                    f"SELECT count(*) FROM {schema}.operations WHERE seq <= %s",
                    (found["max_seq"],),
                ).fetchone()[0]
                if loaded != world.n:
                    reason = f"{loaded:,} operations, not {world.n:,}"
            if reason:
                log(f"PostgreSQL schema {schema} not used: {reason}")
                found = None
        if found is not None:
            pg_reset(conn, schema, found["max_seq"])
            return conninfo, found, True
        log(f"loading the world into PostgreSQL schema {schema} ...")
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    migrate(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # COPY into a bare heap, then build the b-trees by sorting: the same indexes the
        # migrations made, with the same names, built once rather than row by row.
        conn.execute("ALTER TABLE operation_cells DROP CONSTRAINT operation_cells_pkey")
        conn.execute("DROP INDEX operation_cells_op")
        conn.execute(
            "CREATE TABLE bench_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); "
            "CREATE TABLE bench_scratch (id BIGSERIAL PRIMARY KEY, x DOUBLE PRECISION)"
        )
        src = SqliteStore(sqlite_path)
        parties = src.transact(lambda tx: tx.list_parties(), write=False)
        rowids = src.transact(
            lambda tx: tx.db.execute(
                "SELECT min(rowid) - 1, max(rowid) FROM operations"
            ).fetchone(),
            write=False,
        )
        src.close()
        with conn.cursor() as cur, cur.copy("COPY parties (id, name, created_at) FROM STDIN") as cp:
            for party in parties:
                cp.write_row((party.id, party.name, party.created_at))
    workers = max(1, args.workers)
    first, last = int(rowids[0]), int(rowids[1])
    step = math.ceil((last - first) / workers)
    tasks = [
        (str(sqlite_path), conninfo, a, min(last, a + step), 10_000)
        for a in range(first, last, step)
    ]
    t = now()
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_pg_load_part, tasks)
    else:
        parts = [_pg_load_part(task) for task in tasks]
    copy_s = now() - t
    loaded = sum(p[0] for p in parts)
    log(f"  COPY: {loaded:,} operations in {fmt_s(copy_s)} ({workers} processes); indexing ...")

    def step(*statements: str) -> float:
        """Run DDL on a fresh connection, again if the server went away meanwhile (each
        statement is its own transaction: one that was cut off left nothing behind)."""
        for attempt in range(10):
            try:
                with psycopg.connect(conninfo, autocommit=True) as c:
                    c.execute("SET maintenance_work_mem = '512MB'")
                    t = now()
                    for sql in statements:
                        c.execute(sql)
                    return now() - t
            except psycopg.OperationalError as exc:
                if attempt == 9:
                    raise
                log(f"  {exc.__class__.__name__}: {_first_line(exc)}; again ...")
                time.sleep(5.0)
        raise AssertionError("unreachable")

    index_s = step(
        "ALTER TABLE operation_cells DROP CONSTRAINT IF EXISTS operation_cells_pkey",
        f"ALTER TABLE operation_cells ADD PRIMARY KEY {_PG_CELLS_PK}",
    )
    index_s += step(
        "DROP INDEX IF EXISTS operation_cells_op",
        "CREATE INDEX operation_cells_op ON operation_cells (op_id)",
    )
    log(f"  indexes in {fmt_s(index_s)}; VACUUM ANALYZE ...")
    vacuum_s = step("VACUUM ANALYZE")
    stats: dict[str, Any] = {
        "schema": schema,
        "parties": len(parties),
        "load_workers": workers,
        "copy_s": copy_s,
        "copy_s_per_worker": [p[1] for p in parts],
        "index_s": index_s,
        "vacuum_analyze_s": vacuum_s,
        "load_s": copy_s + index_s + vacuum_s,
    }
    found = pg_finish_load(conninfo, want, stats, log)
    count, cells = found["operations"], found["cell_rows"]
    log(
        f"  loaded {count:,} operations ({cells:,} cell rows) in {fmt_s(found['load_s'])}: "
        f"COPY {fmt_s(copy_s)}, indexes {fmt_s(index_s)}, VACUUM ANALYZE {fmt_s(vacuum_s)}"
    )
    return conninfo, found, False


def pg_finish_load(
    conninfo: str, want: dict[str, Any], stats: dict[str, Any], log: Callable[[str], None]
) -> dict[str, Any]:
    """Count what was loaded and write the meta marker that makes the schema reusable."""
    import psycopg

    for attempt in range(10):
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                max_seq, count = conn.execute(
                    "SELECT max(seq), count(*) FROM operations"
                ).fetchone()
                cells = conn.execute("SELECT count(*) FROM operation_cells").fetchone()[0]
                sizes = dict(
                    conn.execute(
                        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = current_schema() "
                        "AND c.relname IN ('operations', 'operation_cells')"
                    ).fetchall()
                )
                found = {
                    **want,
                    **stats,
                    "max_seq": int(max_seq),
                    "operations": int(count),
                    "cell_rows": int(cells),
                    "bytes": {k: int(v) for k, v in sizes.items()},
                    "built_at": time.time(),
                }
                conn.execute(
                    "INSERT INTO bench_meta VALUES ('world', %s) ON CONFLICT (key) "
                    "DO UPDATE SET value = excluded.value",
                    (json.dumps(found, indent=2),),
                )
                return found
        except psycopg.OperationalError as exc:
            if attempt == 9:
                raise
            log(f"  {exc.__class__.__name__}: {_first_line(exc)}; again ...")
            time.sleep(5.0)
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def pg_reset(conn: Any, schema: str, max_seq: int) -> None:
    """Back to the world as loaded: drop what benchmark runs filed (parties stay)."""
    conn.execute(
        f"DELETE FROM {schema}.operation_cells WHERE op_id IN "
        f"(SELECT id FROM {schema}.operations WHERE seq > %s)",
        (max_seq,),
    )
    conn.execute(f"DELETE FROM {schema}.operations WHERE seq > %s", (max_seq,))
    for table in (
        "events",
        "event_counters",
        "operation_writes",
        "audit_log",
        "audit_seals",
        "notices",
        "bench_scratch",
    ):
        conn.execute(f"TRUNCATE {schema}.{table}")


def pg_explain(conn: Any, sql: str, params: dict[str, Any], text: bool = False) -> Any:
    if text:
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
        return "\n".join(r[0] for r in rows)
    row = conn.execute(
        "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, FORMAT JSON) " + sql, params
    ).fetchone()
    plan = row[0][0] if isinstance(row[0], list) else json.loads(row[0])[0]
    return plan["Planning Time"], plan["Execution Time"]


def pg_bench_queries(
    store: Any,
    sqlite_store: SqliteStore,
    conninfo: str,
    world: World,
    count: int,
    seed: int,
    report: Report,
    log: Callable[[str], None],
) -> None:
    """The SQLite query section's queries against PostgreSQL, with the answers compared."""
    import psycopg

    from deconfliction.stores import postgres as pgs

    rng = np.random.default_rng([seed, 0x9E7])  # the same queries as bench_queries
    queries = [[query_volume(rng, world.t0, world.t1)] for _ in range(count)]
    warm = [[query_volume(rng, world.t0, world.t1)] for _ in range(max(200, count // 10))]
    op_sql = {
        w: f"SELECT {pgs._OP_COLUMNS} FROM operations WHERE id IN ({pgs._OPS.candidates_sql(w)})"
        " AND owner <> %(exclude)s AND state <> 'Ended' ORDER BY seq"
        for w in (False, True)
    }
    probes = []
    for q in queries:
        params, with_ranges = pgs._OPS.probe_params(q, store.query_cells)
        probes.append(({**params, "exclude": ""}, with_ranges))
    raw = psycopg.connect(conninfo, autocommit=True)

    def full(q: list[Volume]) -> tuple[int, list[str]]:
        def look(tx: Any) -> tuple[int, list[str]]:
            candidates = tx.operation_candidates(q)
            return len(candidates), [f.operation.id for f in rules.find_conflicts(q, candidates)]

        return store.transact(look, write=False)

    def raw_ids(params: dict[str, Any], with_ranges: bool) -> int:
        sql = pgs._OPS.candidates_sql(with_ranges)
        return len(raw.execute(sql, params).fetchall())

    for q in warm:
        full(q)
        p, w = pgs._OPS.probe_params(q, store.query_cells)
        raw_ids(p, w)

    # The floor: the cell-probe SELECT alone (ids only), probes pre-computed, autocommit.
    raw_s, raw_hits = [], []
    for params, w in probes:
        t = now()
        raw_hits.append(raw_ids(params, w))
        raw_s.append(now() - t)
    # The same SELECT inside the store's read transaction (BEGIN SERIALIZABLE READ ONLY .. COMMIT).
    raw_tx_s = []
    for params, w in probes:
        t = now()
        store.transact(
            lambda tx, p=params, w=w: tx.conn.execute(pgs._OPS.candidates_sql(w), p).fetchall(),
            write=False,
        )
        raw_tx_s.append(now() - t)

    full_s, cands, found_ids = [], [], []
    for q in queries:
        t = now()
        c, ids = full(q)
        full_s.append(now() - t)
        cands.append(c)
        found_ids.append(ids)

    # The same queries on the SQLite store: the exact answers must be the same sets.
    mismatches, sqlite_cands = 0, []
    examples = []
    for i, q in enumerate(queries):

        def look_sqlite(tx: Any, q: list[Volume] = q) -> tuple[int, list[str]]:
            candidates = tx.operation_candidates(q)
            return len(candidates), [f.operation.id for f in rules.find_conflicts(q, candidates)]

        c, ids = sqlite_store.transact(look_sqlite, write=False)
        sqlite_cands.append(c)
        if set(ids) != set(found_ids[i]):
            mismatches += 1
            if len(examples) < 5:
                examples.append(
                    {"query": i, "sqlite": sorted(ids), "postgres": sorted(found_ids[i])}
                )

    # Where the time goes: a separate pass split into stages.
    stage: dict[str, list[float]] = {k: [] for k in ("probes", "sql", "decode", "exact", "tx")}
    for q in queries:

        def split(tx: Any, q: list[Volume] = q) -> None:
            t = now()
            params, w = pgs._OPS.probe_params(q, store.query_cells)
            t1 = now()
            # As operation_candidates sends it: one SELECT goes alone (no BEGIN, no COMMIT).
            rows = tx._read(op_sql[w], {**params, "exclude": ""}).fetchall()
            t2 = now()
            ops = [pgs._operation(r) for r in rows]
            t3 = now()
            rules.find_conflicts(q, ops)
            t4 = now()
            stage["probes"].append(t1 - t)
            stage["sql"].append(t2 - t1)
            stage["decode"].append(t3 - t2)
            stage["exact"].append(t4 - t3)

        t = now()
        store.transact(split, write=False)
        stage["tx"].append(now() - t)
    stage_mean = {k: float(np.mean(v)) * 1e3 for k, v in stage.items()}
    stage_mean["transaction"] = stage_mean["tx"] - sum(
        stage_mean[k] for k in ("probes", "sql", "decode", "exact")
    )
    del stage_mean["tx"]

    # Server side: planning and execution time as the server reports them (EXPLAIN ANALYZE
    # with TIMING OFF, so per-node clocks do not inflate it), on a sample of the queries.
    sample = range(0, count, max(1, count // 500))
    plan_ms, exec_ms = [], []
    for i in sample:
        params, w = probes[i]
        pl, ex = pg_explain(raw, op_sql[w], params)
        plan_ms.append(pl)
        exec_ms.append(ex)
    cands_a = np.asarray(cands)
    # A typical query for the plan shown: the median candidate count among those with some.
    typical = int(np.argsort(cands_a)[len(cands_a) // 2])
    with_some = np.flatnonzero(cands_a > 0)
    if with_some.size:
        typical = int(with_some[np.argsort(cands_a[with_some])[with_some.size // 2]])
    params, w = probes[typical]
    plan_text = pg_explain(raw, op_sql[w], params, text=True)
    log(f"EXPLAIN ANALYZE of query {typical} ({cands[typical]} candidates):\n{plan_text}")
    raw.close()

    r, rt, f = summary_ms(raw_s), summary_ms(raw_tx_s), summary_ms(full_s)
    found_a = np.asarray([len(x) for x in found_ids])
    with_cands = cands_a > 0
    report.data["query"] = {
        "count": count,
        "volume": {"radius_m": QUERY_RADIUS_M, "band_m": QUERY_BAND_M, "window_s": QUERY_WINDOW_S},
        "raw_cells": r,
        "raw_cells_in_tx": rt,
        "full": f,
        "overhead_median_ms": f["median_ms"] - r["median_ms"],
        "candidates_mean": float(cands_a.mean()),
        "sqlite_candidates_mean": float(np.mean(sqlite_cands)),
        "conflicts_mean": float(found_a.mean()),
        "raw_index_hits_mean": float(np.mean(raw_hits)),
        "share_with_candidates": float(with_cands.mean()),
        "candidates_max": int(cands_a.max()),
        "mismatches": mismatches,
        "mismatch_examples": examples,
        "stage_mean_ms": stage_mean,
        "server_sample": len(plan_ms),
        "server_planning_ms": {
            "median": float(np.median(plan_ms)),
            "mean": float(np.mean(plan_ms)),
        },
        "server_execution_ms": {
            "median": float(np.median(exec_ms)),
            "p99": float(np.percentile(exec_ms, 99)),
            "mean": float(np.mean(exec_ms)),
        },
        "explain_query": typical,
        "explain_candidates": cands[typical],
        "explain": plan_text,
    }
    sec = "2 query"
    report.add(
        sec,
        "raw cell-probe SELECT (floor), median",
        fmt_ms(r["median_ms"]),
        "0.25 ms (ARCH)",
        note=f"p99 {fmt_ms(r['p99_ms'])}; ids only, probes pre-computed, autocommit",
    )
    report.add(
        sec,
        "  same, in a read transaction, median",
        fmt_ms(rt["median_ms"]),
        note=f"p99 {fmt_ms(rt['p99_ms'])}; BEGIN SERIALIZABLE READ ONLY / SELECT / COMMIT",
    )
    report.add(
        sec,
        "index + exact check, median",
        fmt_ms(f["median_ms"]),
        "≤ 1 ms",
        f["median_ms"] <= 1.0,
        f"{count:,} queries; 10 km / 150 m / 1 h",
    )
    report.add(sec, "index + exact check, p99", fmt_ms(f["p99_ms"]), "≤ 3 ms", f["p99_ms"] <= 3.0)
    report.add(
        sec,
        "candidates / true conflicts (mean)",
        f"{cands_a.mean():.3f} / {found_a.mean():.3f}",
        note=f"SQLite's R*Tree: {np.mean(sqlite_cands):.3f} candidates; "
        f"{100 * with_cands.mean():.1f} % of queries have any",
    )
    report.add(
        sec,
        "conflict sets differing from SQLite's",
        f"{mismatches}",
        "0",
        mismatches == 0,
        f"exact answers compared on all {count:,} queries",
    )
    report.add(
        sec,
        "mean split: probes / sql / decode / exact / tx",
        " / ".join(
            f"{stage_mean[k]:.3f}" for k in ("probes", "sql", "decode", "exact", "transaction")
        ),
        note="ms; probes = S2 covering in Python, sql = one round trip incl. fetch",
    )
    report.add(
        sec,
        "server: planning / execution, median",
        f"{np.median(plan_ms):.3f} / {np.median(exec_ms):.3f} ms",
        note=f"EXPLAIN ANALYZE (TIMING OFF) of {len(plan_ms)} of the queries",
    )


def pg_bench_single(
    store: Any, conninfo: str, world: World, count: int, seed: int
) -> dict[str, Any]:
    """One client filing, alternating with bare one-row autocommit INSERTs on the same server."""
    import psycopg

    bare = psycopg.connect(conninfo, autocommit=True)
    bare_tx = psycopg.connect(conninfo, autocommit=True)

    def bare_commits_pg(n: int) -> float:
        t = now()
        for i in range(n):
            bare.execute("INSERT INTO bench_scratch (x) VALUES (%s)", (float(i),))
        return now() - t

    # For reference: the store's transaction shape around the same insert.
    def bare_tx_commits(n: int) -> float:
        t = now()
        for i in range(n):
            bare_tx.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            bare_tx.execute("INSERT INTO bench_scratch (x) VALUES (%s)", (float(i),))
            bare_tx.execute("COMMIT")
        return now() - t

    try:
        bare_tx_commits(100)
        tx_rate = 1_000 / bare_tx_commits(1_000)
        svc = Strategic(store)
        res = single_filing_rounds(
            svc,
            bare_commits_pg,
            world,
            count,
            np.random.default_rng([seed, 0xF11E, True]),
            None,
        )
    finally:
        bare.close()
        bare_tx.close()
    return {"synchronous_commit": "on", "bare_tx_commit_rate_per_s": tx_rate, **res}


def _pg_hot_process(
    conninfo: str,
    world: World,
    seed: int,
    lo: float,
    proc: int,
    procs: int,
    parties: list[str],
    threads: int,
    duration_s: float,
    name: str,
    start: Any,
    out: Any,
) -> None:
    store = pg_counting_store(conninfo, pool_size=threads, apply_migrations=False)
    svc = Strategic(store)
    make = filing_makers(seed, world, lo)[name]

    # Interleave the processes' filings on one slot sequence: process p takes slots p, p+P, ...
    def mine(i: int) -> list[Volume]:
        return make(i * procs + proc)

    start.wait()
    try:
        res = run_threads(svc, parties, mine, duration_s, threads)
        out.put(
            {
                "proc": proc,
                "successes": res.successes,
                "elapsed_s": res.elapsed_s,
                "latencies_s": res.latencies_s,
                "retries": res.retries,
                "busy": res.busy,
                "errors": res.errors,
                "conflicts_seen": res.conflicts_seen,
                "lost": store.lost,
            }
        )
    finally:
        store.close()


def pg_bench_concurrent(
    conninfo: str,
    world: World,
    seed: int,
    procs: int,
    threads: int,
    duration_s: float,
    report: Report,
    log: Callable[[str], None],
) -> None:
    from deconfliction.stores.postgres import PostgresStore

    setup = PostgresStore(conninfo, pool_size=1, apply_migrations=False)
    svc = Strategic(setup)
    parties = [ensure_party(svc, f"bench-pg-client-{k}") for k in range(procs * threads)]
    setup.close()
    lo, _ = filing_window(world)
    ctx = mp.get_context("fork")
    sec = f"4 filing, {procs} processes × {threads} threads"
    out: dict[str, Any] = {}
    for name in ("spread", "hot"):
        log(f"  {name}: {procs} processes × {threads} threads, {duration_s:g} s ...")
        start = ctx.Barrier(procs)
        queue = ctx.Queue()
        workers = [
            ctx.Process(
                target=_pg_hot_process,
                args=(
                    conninfo,
                    world,
                    seed,
                    lo,
                    p,
                    procs,
                    parties[p * threads : (p + 1) * threads],
                    threads,
                    duration_s,
                    name,
                    start,
                    queue,
                ),
            )
            for p in range(procs)
        ]
        for w in workers:
            w.start()
        parts = [queue.get(timeout=duration_s + 300) for _ in workers]
        for w in workers:
            w.join()
        lat = summary_ms([x for p in parts for x in p["latencies_s"]])
        successes = sum(p["successes"] for p in parts)
        elapsed = max(p["elapsed_s"] for p in parts)
        rate = successes / elapsed
        seen = [x for p in parts for x in p["conflicts_seen"]]
        lost = {k: sum(p["lost"][k] for p in parts) for k in parts[0]["lost"]}
        retries = sum(p["retries"] for p in parts)
        busy = sum(p["busy"] for p in parts)
        errors = sum(p["errors"] for p in parts)
        out[name] = {
            "processes": procs,
            "threads": threads,
            "duration_s": elapsed,
            "successes": successes,
            "rate_per_s": rate,
            "latency": lat,
            "retries": retries,
            "retries_per_filing": retries / max(1, successes),
            "busy": busy,
            "errors": errors,
            "store_retries": lost,
            "store_retries_per_filing": sum(lost.values()) / max(1, successes),
            "conflicts_per_filing": float(np.mean(seen)) if seen else 0.0,
            "per_process": [
                {k: v for k, v in p.items() if k not in ("latencies_s", "conflicts_seen")}
                for p in parts
            ],
        }
        add_concurrent_rows(
            report, sec, name, out[name], hot_p95_ms=100.0,
            throughput_note=f"{successes:,} filings in {elapsed:.1f} s",
            retries_note=f"serialization failures {lost['serialization']} "
            f"({out[name]['store_retries_per_filing']:.2f}/filing), deadlocks "
            f"{lost['deadlock']}, unique {lost['unique']}; busy {busy}, errors {errors}",
        )  # fmt: skip
    report.data["concurrent"] = out


def sqlite_reference(path: Path, n: int) -> tuple[dict[str, Any], str]:
    """The SQLite figures to print beside PostgreSQL's: the last ``strategic.json``."""
    if not path.exists():
        return {}, "no SQLite run recorded"
    record = json.loads(path.read_text())
    res = record.get("results", {})
    got_n = res.get("world", {}).get("n")
    where = f"{path.name} of {record.get('environment', {}).get('time_utc', '?')}"
    if got_n != n:
        where += f", N = {got_n:,}" if isinstance(got_n, int) else ""
    return res, where


def run_postgres(
    args: argparse.Namespace,
    world: World,
    meta: dict[str, Any],
    work: Path,
    only: set[str],
    log: Callable[[str], None],
) -> None:
    import psycopg

    started = now()
    report = Report(
        f"Strategic benchmark: N = {world.n:,} stored operations (one volume each), "
        "store = postgres"
    )
    load_before = os.getloadavg()[0]
    conninfo, pg_meta, was_cached = pg_open_world(args, world, meta, work, log)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', "
                "'synchronous_commit', 'fsync', 'wal_sync_method', 'max_connections', "
                "'default_transaction_isolation')"
            ).fetchall()
        )
    report.data["world"] = {**pg_meta, "cached": was_cached, "sqlite": str(work.name)}
    report.data["server"] = {"version": server, "settings": settings}
    sec = "1 load"
    built = (
        "cached: loaded " + time.strftime("%Y-%m-%d %H:%M", time.gmtime(pg_meta["built_at"])) + "Z"
        if was_cached
        else "loaded this run"
    )
    report.add(
        sec,
        "COPY + index + VACUUM ANALYZE",
        fmt_s(pg_meta["load_s"]),
        note=f"{built}; COPY {fmt_s(pg_meta['copy_s'])} ({pg_meta['load_workers']} processes "
        f"reading the SQLite file, PostgresStore.bulk_load), indexes "
        f"{fmt_s(pg_meta['index_s'])}, VACUUM ANALYZE {fmt_s(pg_meta['vacuum_analyze_s'])}",
    )
    report.add(
        sec,
        "operations / cell rows",
        f"{pg_meta['operations']:,} / {pg_meta['cell_rows']:,}",
        note=f"schema {pg_meta['schema']}; "
        + ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in sorted(pg_meta["bytes"].items())),
    )
    store = pg_counting_store(conninfo, pool_size=4, apply_migrations=False)
    try:
        if "query" in only:
            log(f"PostgreSQL queries: {args.queries:,} ...")
            sqlite_store = SqliteStore(work)
            try:
                pg_bench_queries(
                    store, sqlite_store, conninfo, world, args.queries, args.seed, report, log
                )
            finally:
                sqlite_store.close()
        if "single" in only:
            log("PostgreSQL single-client filing ...")
            res = pg_bench_single(store, conninfo, world, args.filings, args.seed)
            res["store_retries"] = dict(store.lost)
            report.data["single"] = res
            sec = "3 filing, 1 client"
            report.add(
                sec,
                "bare INSERT commit rate (autocommit)",
                fmt_rate(res["bare_commit_rate_per_s"]),
                note=f"{res['bare_commit_ms']:.3f} ms per one-row INSERT, synchronous_commit=on",
            )
            report.add(
                sec,
                "  BEGIN SERIALIZABLE / INSERT / COMMIT",
                fmt_rate(res["bare_tx_commit_rate_per_s"]),
                note="the store's transaction shape, for reference",
            )
            report.add(
                sec,
                "file_operation rate, key known",
                fmt_rate(res["filing_rate_per_s"]),
                note=f"median {fmt_ms(res['filing_latency']['median_ms'])}, "
                f"p99 {fmt_ms(res['filing_latency']['p99_ms'])}",
            )
            report.add(
                sec,
                "  ratio to bare INSERT commit",
                f"{res['filing_ratio']:.2f}",
                "≥ 0.4",
                res["filing_ratio"] >= 0.4,
                "conflicts_for ran before, untimed",
            )
            report.add(
                sec,
                "  audit append share",
                f"{100 * res['audit_share']:.1f} %",
                "≤ 10 %",
                res["audit_share"] <= 0.10,
                f"{fmt_ms(res['audit_ms_per_filing'])} per filing",
            )
            report.add(
                sec,
                "conflicts_for + file_operation",
                fmt_rate(res["look_and_file_rate_per_s"]),
                note=f"ratio {res['look_and_file_ratio']:.2f}; look timed too",
            )
    finally:
        store.close()
    if "concurrent" in only:
        log("PostgreSQL concurrent filing ...")
        pg_bench_concurrent(
            conninfo, world, args.seed, PG_PROCESSES, PG_THREADS, args.duration, report, log
        )
    with psycopg.connect(args.pg_url, autocommit=True) as conn:
        pg_reset(conn, pg_meta["schema"], pg_meta["max_seq"])

    # Beside SQLite's figures.
    ref, where = sqlite_reference(Path(args.json), world.n)
    d = report.data
    sec = f"6 beside SQLite ({where})"

    def get(rec: dict[str, Any], *path: Any) -> Any:
        for p in path:
            if not (
                (isinstance(rec, dict) and p in rec)
                or (isinstance(rec, list) and isinstance(p, int) and p < len(rec))
            ):
                return None
            rec = rec[p]
        return rec

    def both(
        metric: str, pg_val: Any, sq_val: Any, fmt: Callable[[Any], str], note: str = ""
    ) -> None:
        report.add(
            sec,
            metric,
            fmt(pg_val) if pg_val is not None else "not run",
            note=("SQLite " + (fmt(sq_val) if sq_val is not None else "not recorded")) + note,
        )

    sq_full = (
        next((r for r in ref.get("single", []) if r.get("synchronous") == "FULL"), None)
        if ref
        else None
    )
    both(
        "query median",
        get(d, "query", "full", "median_ms"),
        get(ref, "query", "full", "median_ms"),
        fmt_ms,
    )
    both(
        "query p99", get(d, "query", "full", "p99_ms"), get(ref, "query", "full", "p99_ms"), fmt_ms
    )
    both(
        "single filing ratio",
        get(d, "single", "filing_ratio"),
        get(sq_full, "filing_ratio"),
        lambda x: f"{x:.2f}",
        " (synchronous=FULL)",
    )
    both(
        "single filing rate",
        get(d, "single", "filing_rate_per_s"),
        get(sq_full, "filing_rate_per_s"),
        fmt_rate,
    )
    for name, label in (("hot", "hot spot"), ("spread", "spread out")):
        sq_threads = get(ref, "concurrent", name, "threads")
        both(
            f"{label} throughput",
            get(d, "concurrent", name, "rate_per_s"),
            get(ref, "concurrent", name, "rate_per_s"),
            fmt_rate,
            f" ({sq_threads} threads, 1 process)" if sq_threads else "",
        )
        both(
            f"{label} p95",
            get(d, "concurrent", name, "latency", "p95_ms"),
            get(ref, "concurrent", name, "latency", "p95_ms"),
            fmt_ms,
        )
    report.data["sqlite_reference"] = {"source": where}

    finish(
        report,
        args,
        Path(args.pg_json),
        started,
        load_before,
        f"{os.cpu_count()} cores shared by the client and the server; PostgreSQL {server}",
        log,
    )


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


def bench_http(
    path: Path, world: World, seed: int, args: argparse.Namespace, report: Report
) -> None:
    """Section 5: ``deconfliction serve --workers 2`` on loopback (bench/http_load.py)."""
    from http_load import run_http

    run_http(path, world, seed, args, report)


# --------------------------------------------------------------------------------------------


def finish(
    report: Report,
    args: argparse.Namespace,
    path: Path,
    started: float,
    load_before: float,
    machine_note: str,
    log: Callable[[str], None],
) -> None:
    """The machine's row (load average before and after), the run's record, table and JSON."""
    load_after = os.getloadavg()[0]
    report.data["loadavg_1min"] = {"start": load_before, "end": load_after}
    report.add(
        "machine",
        "1-min load average, start / end",
        f"{load_before:.2f} / {load_after:.2f}",
        note=machine_note,
    )
    report.data["args"] = vars(args)
    report.data["elapsed_s"] = now() - started
    report.print()
    report.write_json(path)
    log(f"wrote {path} ({fmt_s(now() - started)} in all)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1_000_000, help="stored operations (default 1,000,000)")
    p.add_argument("--quick", action="store_true", help="N=50,000 and shorter phases (< 1 min)")
    p.add_argument(
        "--store",
        choices=["sqlite", "postgres", "both"],
        default="sqlite",
        help="postgres: load the same world into PostgreSQL and print its figures beside the "
        "last SQLite run's; both: run SQLite, then PostgreSQL",
    )
    p.add_argument("--pg-url", default=PG_URL, help=f"PostgreSQL server (default {PG_URL})")
    p.add_argument(
        "--pg-json", default=str(RESULTS / "strategic-postgres.json"), help="PostgreSQL results"
    )
    p.add_argument(
        "--db", help="cached world database (default bench/results/strategic-n<N>-s<seed>.db)"
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="generate and load the world again (with --store postgres: only reload PostgreSQL)",
    )
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
        f"Strategic benchmark: N = {args.n:,} stored operations (one volume each), store = sqlite"
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

    if args.store in ("sqlite", "both"):
        run_sqlite(args, world, cached, only, report, started, log)
    if args.store in ("postgres", "both"):
        work = None
        try:
            log("copying the world to a scratch file (the source for PostgreSQL) ...")
            work = scratch_copy(cached, "strategic-scratch-pg.db")
            run_postgres(args, world, meta, work, only, log)
        finally:
            if work is not None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{work}{suffix}").unlink(missing_ok=True)
    log(f"done in {fmt_s(now() - started)}")
    return 0


def run_sqlite(
    args: argparse.Namespace,
    world: World,
    cached: Path,
    only: set[str],
    report: Report,
    started: float,
    log: Callable[[str], None],
) -> None:
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
    finish(
        report,
        args,
        Path(args.json),
        started,
        load_before,
        f"{os.cpu_count()} cores; anything else running skews every number above",
        log,
    )


if __name__ == "__main__":
    raise SystemExit(main())
