"""Benchmark the tactical detector against BlueSky's state-based detectors (not a test).

    .venv/bin/python bench/tactical.py            # full run, a few minutes
    .venv/bin/python bench/tactical.py --quick    # small sizes, seconds

Synthetic sky: aircraft uniform over a 1,000 km square around 52N 5E, 10,000-40,000 ft, any
heading, 200-500 kt, 20% climbing or descending at 500-2,000 ft/min. For each size: median
seconds per detection pass over several repeats, and peak memory of one pass measured with
``tracemalloc`` (Python and numpy allocations; not the interpreter's baseline, not memory a C
extension takes with plain ``malloc``), for our detector, BlueSky's numpy ``StateBased`` and
its C++ ``CStateBased``, whether the conflict sets are identical, and the ratios.

Then 100,000 aircraft at the same density spread over ten such squares on different
continents (one across the antimeridian, one near the pole), and a replay of the recorded Paris
ADS-B sample through track table + detector + alerts as a multiple of real time.

BlueSky (``pip install -e '.[bench]'``) is called headless: ``StateBased.detect`` does not use
``self``, so it is called unbound on a plain object carrying the traffic arrays, and the C++
``cstatebased.detect`` takes the same arguments. Results go to ``bench/results/tactical.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from deconfliction.tactical import adsb
from deconfliction.tactical.cycle import DetectionSettings, TacticalCycle
from deconfliction.tactical.detector import (
    DEFAULT_HPZ_M,
    DEFAULT_LOOKAHEAD_S,
    DEFAULT_RPZ_M,
    detect,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "tactical.json"
SAMPLE = ROOT.parent / "shared" / "data" / "adsb" / "paris-2021-10-07.csv.gz"
R = 6371000.0
FT, KT, FPM = 0.3048, 1852.0 / 3600.0, 0.3048 / 60.0

# Ten 1,000 km squares of 10,000 aircraft each for the 100,000 run: busy regions, plus one
# across the antimeridian and one near the pole to keep the awkward paths honest.
REGIONS = [
    (52.0, 5.0),  # north-west Europe
    (45.0, 12.0),  # Alps / northern Italy
    (40.5, -74.0),  # US north-east
    (33.9, -118.4),  # southern California
    (35.7, 139.7),  # Tokyo
    (22.3, 114.2),  # Pearl River delta
    (25.2, 55.3),  # Gulf
    (-23.5, -46.6),  # Sao Paulo
    (-17.0, 180.0),  # across the antimeridian (Fiji)
    (78.0, 15.0),  # high Arctic (Svalbard)
]


def sky(
    n: int, rng: np.random.Generator, lat0: float = 52.0, lon0: float = 5.0, side_km: float = 1000.0
) -> dict[str, np.ndarray]:
    """The benchmark sky: ``n`` aircraft uniform over a ``side_km`` square centred on lat0/lon0."""
    half = side_km * 500.0
    north = rng.uniform(-half, half, n)
    east = rng.uniform(-half, half, n)
    lat = lat0 + np.degrees(north / R)
    lon = (lon0 + np.degrees(east / (R * np.cos(np.radians(lat)))) + 180.0) % 360.0 - 180.0
    climbing = rng.random(n) < 0.2
    vs = np.where(climbing, rng.choice([-1.0, 1.0], n) * rng.uniform(500.0, 2000.0, n) * FPM, 0.0)
    return {
        "lat": lat,
        "lon": lon,
        "alt": rng.uniform(10000.0, 40000.0, n) * FT,
        "gs": rng.uniform(200.0, 500.0, n) * KT,
        "trk": rng.uniform(0.0, 360.0, n),
        "vs": vs,
        "party": np.zeros(n, dtype=np.int64),
    }


def ours(s: dict[str, np.ndarray]) -> set[tuple[int, int]]:
    found = detect(
        s["lat"], s["lon"], s["alt"], s["gs"], s["trk"], s["vs"], s["party"], same_party=True
    )
    return found.pairs()


def _traffic(
    s: dict[str, np.ndarray],
) -> tuple[SimpleNamespace, np.ndarray, np.ndarray, np.ndarray]:
    n = s["lat"].size
    traffic = SimpleNamespace(
        ntraf=n, id=list(range(n)), **{k: s[k] for k in ("lat", "lon", "alt", "gs", "trk", "vs")}
    )
    return (
        traffic,
        np.full(n, DEFAULT_RPZ_M),
        np.full(n, DEFAULT_HPZ_M),
        np.full(n, DEFAULT_LOOKAHEAD_S),
    )


def _unordered(confpairs: list[Any], lospairs: list[Any]) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in [*confpairs, *lospairs]}


def load_bluesky() -> tuple[Callable[..., Any] | None, Callable[..., Any] | None, str]:
    """BlueSky's numpy and C++ detect functions, or ``None`` with the reason."""
    notes = []
    numpy_detect = cpp_detect = None
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from bluesky.traffic.asas import statebased

            numpy_detect = statebased.StateBased.detect
        except Exception as error:
            notes.append(f"BlueSky StateBased unavailable: {error!r}")
        try:
            from bluesky.traffic.asas import cstatebased

            cpp_detect = cstatebased.detect
        except Exception as error:
            notes.append(f"BlueSky C++ CStateBased could not be imported: {error!r}")
    return numpy_detect, cpp_detect, "; ".join(notes)


def bluesky_numpy(
    detect_fn: Callable[..., Any],
) -> Callable[[dict[str, np.ndarray]], set[tuple[int, int]]]:
    def run(s: dict[str, np.ndarray]) -> set[tuple[int, int]]:
        traffic, rpz, hpz, look = _traffic(s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = detect_fn(None, traffic, traffic, rpz, hpz, look)
        return _unordered(out[0], out[1])

    return run


def bluesky_cpp(
    detect_fn: Callable[..., Any],
) -> Callable[[dict[str, np.ndarray]], set[tuple[int, int]]]:
    def run(s: dict[str, np.ndarray]) -> set[tuple[int, int]]:
        traffic, rpz, hpz, look = _traffic(s)
        out = detect_fn(traffic, traffic, rpz, hpz, look)
        return _unordered(out[0], out[1])

    return run


def measure(
    fn: Callable[[dict[str, np.ndarray]], Any],
    s: dict[str, np.ndarray],
    repeats: int,
    paired: Callable[[dict[str, np.ndarray]], Any] | None = None,
) -> dict[str, Any]:
    """Median wall seconds over ``repeats`` passes (after a warm-up), then one traced pass for memory.

    With ``paired``, each pass of ``fn`` is followed by a pass of ``paired`` and the median of
    those is returned too: on a shared machine the load changes over a long run, and a ratio
    taken from interleaved passes compares like with like.
    """
    result = fn(s)
    times, paired_times = [], []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn(s)
        times.append(time.perf_counter() - start)
        if paired is not None:
            start = time.perf_counter()
            paired(s)
            paired_times.append(time.perf_counter() - start)
    gc.collect()
    tracemalloc.start()
    fn(s)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out = {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeats": repeats,
        "peak_mib": peak / 2**20,
        "result": result,
    }
    if paired_times:
        out["paired_ours_median_s"] = statistics.median(paired_times)
    return out


def run_sizes(
    sizes: list[int], numpy_max: int, repeats: int, numpy_detect: Any, cpp_detect: Any
) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        s = sky(n, np.random.default_rng(n))
        row: dict[str, Any] = {"aircraft": n}
        mine = measure(ours, s, repeats)
        row["ours"] = {k: v for k, v in mine.items() if k != "result"}
        row["conflicts"] = len(mine["result"])
        for name, maker, limit, reps in (
            ("bluesky_cpp", bluesky_cpp, math.inf, max(3, repeats // 3)),
            ("bluesky_numpy", bluesky_numpy, numpy_max, 3 if n <= 2000 else 1),
        ):
            fn = numpy_detect if name == "bluesky_numpy" else cpp_detect
            if fn is None or n > limit:
                row[name] = None
                continue
            theirs = measure(maker(fn), s, reps, paired=ours)
            row[name] = {k: v for k, v in theirs.items() if k != "result"}
            row[name]["identical"] = theirs["result"] == mine["result"]
            row[name]["only_theirs"] = len(theirs["result"] - mine["result"])
            row[name]["only_ours"] = len(mine["result"] - theirs["result"])
            row[name]["speedup"] = theirs["median_s"] / theirs["paired_ours_median_s"]
        rows.append(row)
        print(f"  {n:>6} aircraft: ours {mine['median_s'] * 1e3:8.2f} ms", file=sys.stderr)
    return rows


def run_100k(per_region: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(100_000)
    parts = [sky(per_region, rng, lat0, lon0) for lat0, lon0 in REGIONS]
    s = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    mine = measure(ours, s, repeats)
    return {
        "aircraft": int(s["lat"].size),
        "regions": len(REGIONS),
        "density_per_1000_km2": per_region / 1000.0,
        "conflicts": len(mine["result"]),
        **{k: v for k, v in mine.items() if k != "result"},
    }


def run_replay(limit_rows: int | None) -> dict[str, Any]:
    if not SAMPLE.exists():
        return {"skipped": f"{SAMPLE} not found"}
    rule = adsb.PartyRule({"AFR": "blue", "EZY": "red"})
    start = time.perf_counter()
    batches = list(adsb.read_batches(SAMPLE, limit_rows=limit_rows, hold_s=10.0))
    read_s = time.perf_counter() - start
    prepared = [(b.reports(rule.assign(b.callsign), b.complete()), b.time) for b in batches]
    cycle = TacticalCycle(settings=DetectionSettings(same_party=True), drop_invalid=True)
    changes = refused = conflicts = 0
    start = time.perf_counter()
    for reports, now in prepared:
        result = cycle.step(reports, now)
        changes += len(result.changes)
        refused += result.refused
        conflicts += len(result.conflicts)
    cycle_s = time.perf_counter() - start
    simulated = batches[-1].time - batches[0].time + 1.0
    return {
        "rows": sum(len(b) for b in batches),
        "cycles": len(batches),
        "simulated_s": simulated,
        "read_s": read_s,
        "cycle_s": cycle_s,
        "cycle_ms": cycle_s / len(batches) * 1e3,
        "x_real_time_cycles": simulated / cycle_s,
        "x_real_time_with_reading": simulated / (cycle_s + read_s),
        "alert_changes": changes,
        "conflict_cycles": conflicts,
        "refused_reports": refused,
        "ingest": {
            "accepted": cycle.table.totals.accepted,
            "stale": cycle.table.totals.stale,
            "duplicate": cycle.table.totals.duplicate,
        },
    }


def _fmt_ms(entry: dict[str, Any] | None) -> str:
    return "—" if entry is None else f"{entry['median_s'] * 1e3:,.1f}"


def _fmt_mem(entry: dict[str, Any] | None) -> str:
    return "—" if entry is None else f"{entry['peak_mib']:,.1f}"


def report(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    table = Table(
        title="Tactical detection pass (median ms; peak MiB via tracemalloc; × = speed-up over interleaved passes)"
    )
    for column in (
        "aircraft",
        "conflicts",
        "ours ms",
        "ours MiB",
        "C++ ms",
        "C++ MiB",
        "×C++",
        "same as C++",
        "numpy ms",
        "numpy MiB",
        "×numpy",
        "same as numpy",
    ):
        table.add_column(column, justify="right")
    for row in out["sizes"]:
        cpp, npy = row["bluesky_cpp"], row["bluesky_numpy"]
        table.add_row(
            f"{row['aircraft']:,}",
            f"{row['conflicts']:,}",
            _fmt_ms(row["ours"]),
            _fmt_mem(row["ours"]),
            _fmt_ms(cpp),
            _fmt_mem(cpp),
            "—" if cpp is None else f"{cpp['speedup']:,.0f}×",
            "—"
            if cpp is None
            else ("yes" if cpp["identical"] else f"NO (+{cpp['only_theirs']}/-{cpp['only_ours']})"),
            _fmt_ms(npy),
            _fmt_mem(npy),
            "—" if npy is None else f"{npy['speedup']:,.0f}×",
            "—"
            if npy is None
            else ("yes" if npy["identical"] else f"NO (+{npy['only_theirs']}/-{npy['only_ours']})"),
        )
    console.print(table)
    if out.get("bluesky_note"):
        console.print(f"[yellow]{out['bluesky_note']}[/yellow]")
    big = out.get("large")
    if big:
        console.print(
            f"{big['aircraft']:,} aircraft over {big['regions']} regions ({big['density_per_1000_km2']:.0f} per 1,000 km²): "
            f"{big['median_s']:.3f} s median, {big['peak_mib']:,.0f} MiB peak, {big['conflicts']:,} conflicts "
            f"(targets ≤ 1 s, ≤ 1 GiB: {'met' if big['median_s'] <= 1 and big['peak_mib'] <= 1024 else 'NOT met'})"
        )
    replay = out.get("replay")
    if replay and "skipped" not in replay:
        console.print(
            f"Replay of {replay['rows']:,} ADS-B reports ({replay['simulated_s'] / 3600:.2f} h, {replay['cycles']:,} one-second cycles): "
            f"{replay['cycle_ms']:.2f} ms per cycle, {replay['x_real_time_cycles']:,.0f}× real time for table+detector+alerts, "
            f"{replay['x_real_time_with_reading']:,.0f}× including CSV parsing; {replay['alert_changes']:,} alert changes."
        )
    targets = out.get("targets", {})
    for name, verdict in targets.items():
        console.print(f"target {name}: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes only, seconds not minutes"
    )
    parser.add_argument(
        "--numpy-max", type=int, default=5000, help="largest size for BlueSky's numpy detector"
    )
    args = parser.parse_args()

    numpy_detect, cpp_detect, note = load_bluesky()
    if args.quick:
        sizes, numpy_max, repeats, per_region, replay_rows = (
            [500, 1000, 2000],
            1000,
            5,
            2000,
            20_000,
        )
    else:
        sizes, numpy_max, repeats, per_region, replay_rows = (
            [1000, 2000, 5000, 10000],
            args.numpy_max,
            21,
            10_000,
            None,
        )
    print("detection passes...", file=sys.stderr)
    out: dict[str, Any] = {
        "machine": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "memory_method": "tracemalloc peak during one pass (Python + numpy allocations)",
        "quick": args.quick,
        "bluesky_note": note,
        "sizes": run_sizes(sizes, numpy_max, repeats, numpy_detect, cpp_detect),
    }
    print(f"{per_region * len(REGIONS):,} aircraft...", file=sys.stderr)
    out["large"] = run_100k(per_region, 3 if args.quick else 5)
    print("replay...", file=sys.stderr)
    out["replay"] = run_replay(replay_rows)

    at_10k = next((row for row in out["sizes"] if row["aircraft"] == 10000), None)
    if at_10k is not None:
        ms = at_10k["ours"]["median_s"] * 1e3
        out["targets"] = {"10k ≤ 50 ms": f"{ms:.1f} ms: {'met' if ms <= 50 else 'NOT met'}"}
        cpp = at_10k["bluesky_cpp"]
        out["targets"]["≥ 50× BlueSky C++ at 10k"] = (
            "C++ detector unavailable"
            if cpp is None
            else f"{cpp['speedup']:.0f}×: {'met' if cpp['speedup'] >= 50 else 'NOT met'}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, default=float))
    report(out)
    print(f"wrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
