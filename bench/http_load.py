"""HTTP section of bench/strategic.py: ``deconfliction serve --workers 2`` under a lean load.

The load generator is one asyncio loop speaking HTTP/1.1 over keep-alive connections with
pre-encoded request heads (no HTTP library in the hot path), so that as much of the two cores as
possible goes to the server. It still shares those cores: the numbers are a floor for the server.

Two client flows, both presenting keys:
- spread out: file with the versions already known (none at first); on 409 ``missing_key`` add
  the versions the refusal lists (the client has now seen those operations) and file again.
- hot spot: look first (POST /v1/operations/conflicts), file with those versions; on 409
  ``missing_key`` add the listed versions and file again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from common import ROOT, Report, fmt_ms, fmt_rate, now, summary_ms

from deconfliction.formats import format_time

HTTP_WORKERS = 2
HOT_RUNS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("deconfliction")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "deconfliction.cli"]


class Connection:
    """One keep-alive HTTP/1.1 connection; requests go one at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def request(self, method: str, path: str, token: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = 0
        for line in raw.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


def volume_json(
    lat: float,
    lon: float,
    radius_m: float,
    lower: float,
    upper: float,
    start: float,
    end: float,
    polygon: list[tuple[float, float]] | None = None,
) -> bytes:
    if polygon is not None:
        footprint: dict[str, Any] = {
            "polygon": {"vertices": [{"lat": float(a), "lon": float(b)} for a, b in polygon]}
        }
    else:
        footprint = {
            "circle": {
                "center": {"lat": float(lat), "lon": float(lon)},
                "radius_m": float(radius_m),
            }
        }
    return orjson.dumps(
        {
            "footprint": footprint,
            "altitude_lower_m": float(lower),
            "altitude_upper_m": float(upper),
            "start": format_time(start),
            "end": format_time(end),
        }
    )


def filing_body(volume: bytes, key: list[str], priority: int) -> bytes:
    return (
        b'{"volumes":['
        + volume
        + b'],"state":"Accepted","priority":'
        + str(priority).encode()
        + b',"key":'
        + orjson.dumps(key)
        + b"}"
    )


class Server:
    """``deconfliction serve`` in its own process group, stopped on exit."""

    def __init__(self, db: Path, workers: int) -> None:
        self.db, self.workers = db, workers
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = db.with_name("strategic-serve.log")

    def __enter__(self) -> Server:
        env = {**os.environ, "DECONFLICTION_DB": str(self.db)}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    *_cli(),
                    "serve",
                    "--db",
                    str(self.db),
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("the server did not answer /v1/health within 60 s")
        # Every worker must be up before timing: give the second one a moment to import.
        time.sleep(2.0)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def make_parties(db: Path, port: int, count: int) -> list[str]:
    """One party through the CLI (admin, prints its token), the rest through POST /v1/parties."""
    stamp = int(time.time())
    out = subprocess.run(
        [*_cli(), "party", "add", f"bench-http-admin-{stamp}", "--db", str(db), "--admin"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    admin = [line.strip() for line in out.splitlines() if line.strip()][-1]
    tokens = [admin]

    async def add() -> None:
        conn = Connection("127.0.0.1", port)
        for k in range(1, count):
            status, body = await conn.request(
                "POST", "/v1/parties", admin, orjson.dumps({"name": f"bench-http-{stamp}-{k}"})
            )
            if status != 201:
                raise RuntimeError(f"POST /v1/parties: {status} {body[:300]!r}")
            tokens.append(orjson.loads(body)["token"])
        await conn.close()

    asyncio.run(add())
    return tokens


def missing_versions(payload: bytes) -> list[str] | None:
    """The versions a 409 ``missing_key`` lists, or None if it is another refusal."""
    data = orjson.loads(payload)
    if data.get("code") != "missing_key":
        return None
    missing = (data.get("details") or {}).get("missing") or []
    return [m["version"] for m in missing]


def drive(
    port: int,
    tokens: list[str],
    connections: int,
    duration_s: float,
    volume: Callable[[int], bytes],
    look_first: bool,
    priority: int,
) -> dict[str, Any]:
    counter = iter(range(1 << 40))
    latencies: list[float] = []
    per_connection = [0] * connections
    stats = {"requests": 0, "retries": 0, "busy": 0, "errors": 0, "conflicts": 0}
    first_error: list[str] = []
    stop_at = 0.0

    async def client(k: int) -> None:
        conn = Connection("127.0.0.1", port)
        await conn.open()
        token = tokens[k % len(tokens)]
        while now() < stop_at:
            vol = volume(next(counter))
            t = now()
            key: list[str] = []
            if look_first:
                status, payload = await conn.request(
                    "POST", "/v1/operations/conflicts", token, b'{"volumes":[' + vol + b"]}"
                )
                stats["requests"] += 1
                if status == 200:
                    key = [c["version"] for c in orjson.loads(payload)["conflicts"]]
            for _attempt in range(50):
                status, payload = await conn.request(
                    "POST", "/v1/operations", token, filing_body(vol, key, priority)
                )
                stats["requests"] += 1
                if status == 201:
                    latencies.append(now() - t)
                    per_connection[k] += 1
                    stats["conflicts"] += len(orjson.loads(payload)["conflicts"])
                    break
                if status == 409:
                    more = missing_versions(payload)
                    if more is not None:
                        key.extend(more)
                        stats["retries"] += 1
                        continue
                if status == 503:
                    stats["busy"] += 1
                    await asyncio.sleep(0.001)
                    continue
                stats["errors"] += 1
                if not first_error:
                    first_error.append(f"{status} {payload[:300]!r}")
                break
        await conn.close()

    async def main() -> float:
        nonlocal stop_at
        stop_at = now() + duration_s
        t = now()
        await asyncio.gather(*(client(k) for k in range(connections)))
        return now() - t

    elapsed = asyncio.run(main())
    n = len(latencies)
    return {
        "connections": connections,
        "duration_s": elapsed,
        "successes": n,
        "rate_per_s": n / elapsed,
        "requests_per_s": stats["requests"] / elapsed,
        "latency": summary_ms(latencies),
        "retries_per_filing": stats["retries"] / max(1, n),
        "conflicts_per_filing": stats["conflicts"] / max(1, n),
        "busy": stats["busy"],
        "errors": stats["errors"],
        "first_error": first_error[0] if first_error else None,
        "look_first": look_first,
        "per_connection": sorted(per_connection, reverse=True),
    }


def _report(
    report: Report, sec: str, name: str, label: str, res: dict[str, Any], more: str = ""
) -> None:
    lat = res["latency"]
    target = {"spread": "≥ 1,000/s", "hot": "≥ 300/s"}.get(name, "")
    floor = {"spread": 1_000.0, "hot": 300.0}.get(name)
    report.add(
        sec,
        f"{label}: throughput",
        fmt_rate(res["rate_per_s"]),
        target,
        res["rate_per_s"] >= floor if floor else None,
        f"{more}{res['connections']} keep-alive connections, {res['requests_per_s']:,.0f} req/s",
    )
    per = res["per_connection"]
    report.add(
        sec,
        f"{label}: latency p50 / p95",
        f"{fmt_ms(lat.get('median_ms', float('nan')))} / {fmt_ms(lat.get('p95_ms', float('nan')))}",
        note=f"conflicts {res['conflicts_per_filing']:.1f}, retries "
        f"{res['retries_per_filing']:.2f} per filing; busy {res['busy']}, "
        f"errors {res['errors']}; filings per connection {min(per):,}–{max(per):,}",
    )


def run_http(path: Path, world: Any, seed: int, args: Any, report: Report) -> None:
    import strategic as S  # the parent module: world constants and footprints

    sec = f"5 HTTP, {HTTP_WORKERS} workers"
    rng = np.random.default_rng([seed, 0x477])
    lo, hi = S.filing_window(world)

    # Spread out: 10 km circles, 150 m bands, 1 h windows anywhere (the query shape).
    def spread_bodies(count: int) -> list[bytes]:
        return [
            volume_json(
                rng.uniform(*S.LAT),
                rng.uniform(*S.LON),
                S.QUERY_RADIUS_M,
                lower,
                lower + S.QUERY_BAND_M,
                start,
                start + S.QUERY_WINDOW_S,
            )
            for lower, start in zip(
                rng.uniform(0, S.ALT_CEILING_M - S.QUERY_BAND_M, count),
                rng.uniform(lo, hi - S.QUERY_WINDOW_S, count),
                strict=True,
            )
        ]

    # Fresh volumes for every phase, so no phase conflicts with an earlier one's filings.
    per_run = int(args.duration * 3_000) + 1_000
    spread_a, spread_b, spread_w = (
        spread_bodies(per_run),
        spread_bodies(per_run),
        spread_bodies(4_000),
    )

    # Hot spot: the same shapes and sliding windows as the in-process hot spot, elsewhere in time
    # and in a place of its own for each run (half a degree apart), so no run meets another.
    def hot_place(run: int) -> list[tuple[float, float, list[tuple[float, float]] | None]]:
        shapes = []
        for k in range(64):
            lat = S.HOT_LAT + 1.0 + 0.5 * run + rng.uniform(-0.005, 0.005)
            lon = S.HOT_LON + 1.0 + rng.uniform(-0.007, 0.007)
            shapes.append(
                (lat, lon, S.polygon_vertices(rng, lat, lon, 3_000.0, 6) if k % 2 else None)
            )
        return shapes

    hot_places = [hot_place(run) for run in range(HOT_RUNS)]
    # A different place and days from the in-process hot spot, so the two never meet.
    hot_t0 = lo + 8 * 86_400.0

    def hot(run: int) -> Callable[[int], bytes]:
        shapes = hot_places[run]

        def volume(i: int) -> bytes:
            lat, lon, poly = shapes[i % len(shapes)]
            start = hot_t0 + i * S.HOT_SLOT_S
            return volume_json(lat, lon, 3_000.0, 100.0, 250.0, start, start + S.HOT_WINDOW_S, poly)

        return volume

    out: dict[str, Any] = {"workers": HTTP_WORKERS}
    with Server(path, HTTP_WORKERS) as server:
        tokens = make_parties(path, server.port, args.threads)
        warm = drive(
            server.port,
            tokens,
            8,
            1.0,
            lambda i: spread_w[i % len(spread_w)],
            False,
            S.FILING_PRIORITY,
        )
        out["warmup"] = warm
        runs = (
            ("spread", "spread out", 32, lambda i: spread_a[i % per_run], False),
            ("spread_look", "spread out, look first", 32, lambda i: spread_b[i % per_run], True),
        )
        for name, label, conns, make, look in runs:
            res = drive(server.port, tokens, conns, args.duration, make, look, S.FILING_PRIORITY)
            out[name] = res
            _report(report, sec, name, label, res)
        # The hot spot's rate depends on how the workers happened to accept the connections (see
        # docs/benchmarks.md), so it runs HOT_RUNS times on fresh connections: the median counts.
        hot_runs = [
            drive(
                server.port,
                tokens,
                args.threads,
                args.duration,
                hot(run),
                True,
                S.FILING_PRIORITY,
            )
            for run in range(HOT_RUNS)
        ]
        rates = [r["rate_per_s"] for r in hot_runs]
        middle = sorted(hot_runs, key=lambda r: r["rate_per_s"])[len(hot_runs) // 2]
        out["hot"] = {**middle, "runs": hot_runs, "rates_per_s": rates}
        _report(
            report,
            sec,
            "hot",
            f"hot spot, look first (median of {HOT_RUNS})",
            middle,
            f"runs {', '.join(f'{r:,.0f}' for r in rates)}/s; ",
        )
    report.data["http"] = out
