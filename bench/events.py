"""Event delivery: from a change's commit to the event at an SSE client and at a webhook receiver.

    python bench/events.py                 # 100 parties; 100/s then 500/s for 20 s; 1 and 2 workers
    python bench/events.py --quick         # 5 s phases at 50/s and 200/s, 1 worker

The real service (``deconfliction serve``) runs as a subprocess in its own process group on a
scratch SQLite file. Every party has one long-lived SSE stream (``GET /v1/events/stream``) and a
webhook pointing at a small HTTP/1.1 receiver in this process (stdlib asyncio streams). The
change is a hotline message (``POST /v1/messages``) from a random party to one random other
party: exactly one event, for the recipient, per acknowledged message. Messages are sent
open-loop at a fixed rate over keep-alive connections. When the top rate is out of reach (the
service and this bench share the machine's cores), a further phase runs at 80 % of the rate
achieved, so the table also shows latency at a rate the service sustains.

Latency is commit -> arrival, the issue's measure: the arrival time (this machine's clock,
taken as the bytes are read) minus when the commit happened, which a process of the bench's own
finds out by reading the service's SQLite file for new event ids every 2 ms: an event first seen
by one read was committed after the read before it began, and that start is its commit time
here (so the figure errs by at most one poll, upwards). Two bounds are recorded beside it:
arrival minus the event's ``time`` field, which the service stamps at the *start* of the change,
before its transaction waits for the write lock (an overestimate), and arrival minus the moment
the sender got its 201, which comes after the commit (an underestimate).

At the end every party's SSE and webhook ids are compared with its feed (``GET /v1/events``):
none missing, none repeated, in order. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, Report, fmt_ms, fmt_rate, summary_ms
from http_load import Connection, Server, _cli

from deconfliction.services.delivery import verify_signature

HOST = "127.0.0.1"
TARGET_P99_MS = 100.0


def wall() -> float:
    """The one clock both sides share: the service stamps events with time.time() too."""
    return time.time()


def event_time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# --------------------------------------------------------------------------------------------
# Commit watcher
# --------------------------------------------------------------------------------------------

WATCH_EVERY_S = 0.002


def watch_commits(db: str, every_s: float, ready: Any, stop: Any, out: str) -> None:
    """A process of its own: when each event id became visible in the service's SQLite file
    (a read-only connection asks for new ids every ``every_s``). An event first seen by the read
    that began at ``t`` was committed before ``t`` and after the last read that did not see it
    began, at ``t0``; its time here is ``t0``, so arrival minus it is commit -> arrival plus at
    most one poll (never less than the truth). Events already there at the first read are left
    out: when they were committed is not known."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    query = "SELECT id FROM events WHERE id > ? ORDER BY id"
    previous = wall()
    last = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    seen: list[tuple[int, float]] = []
    gaps: list[float] = []
    ready.set()
    while not stop.is_set():
        time.sleep(every_s)
        began = wall()
        try:
            rows = conn.execute(query, (last,)).fetchall()
        except sqlite3.OperationalError:  # busy for a moment: the next read counts from before
            continue
        seen.extend((row[0], previous) for row in rows)
        if rows:
            last = rows[-1][0]
        gaps.append(began - previous)
        previous = began
    conn.close()
    Path(out).write_bytes(orjson.dumps({"seen": seen, "gaps": gaps}))


class CommitWatcher:
    """Runs :func:`watch_commits` beside the service; ``seen`` maps event id -> time."""

    def __init__(self, db: Path, out: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.out = out
        self.ready = ctx.Event()
        self.stop = ctx.Event()
        self.proc = ctx.Process(
            target=watch_commits,
            args=(str(db), WATCH_EVERY_S, self.ready, self.stop, str(out)),
            daemon=True,
        )
        self.seen: dict[int, float] = {}
        self.gaps: list[float] = []

    def start(self) -> None:
        """Start watching; returns once the first read is done."""
        self.proc.start()
        if not self.ready.wait(60):
            raise RuntimeError("the commit watcher did not start")

    def finish(self) -> None:
        self.stop.set()
        self.proc.join(30)
        data = orjson.loads(self.out.read_bytes())
        self.seen = {int(i): t for i, t in data["seen"]}
        self.gaps = data["gaps"]


# --------------------------------------------------------------------------------------------
# Webhook receiver
# --------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server (keep-alive) that answers 200 at once and keeps what came.

    Parsing, signature checks and bookkeeping wait until the run is over, so the event loop
    that timestamps arrivals stays free.
    """

    deliveries: list[tuple[float, str, bytes]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, signature = 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"x-deconfliction-signature":
                        signature = value.strip().decode()
                body = await reader.readexactly(length) if length else b""
                self.deliveries.append((wall(), signature, body))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)


# --------------------------------------------------------------------------------------------
# SSE client
# --------------------------------------------------------------------------------------------


@dataclass
class Stream:
    """One long-lived ``GET /v1/events/stream``; keeps (arrival, raw SSE block) pairs."""

    party: int
    token: str
    port: int
    blocks: list[tuple[float, bytes]] = field(default_factory=list)
    messages: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None

    async def run(self) -> None:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(HOST, self.port, limit=1 << 22)
            writer.write(
                f"GET /v1/events/stream?after=0 HTTP/1.1\r\nHost: {HOST}\r\n"
                f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
            chunked = b"transfer-encoding: chunked" in head.lower()
            self.ready.set()
            pending = b""
            while True:
                if chunked:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        return
                    data = (await reader.readexactly(size + 2))[:-2]
                else:
                    data = await reader.read(1 << 16)
                    if not data:
                        return
                t = wall()
                pending += data
                while b"\n\n" in pending:
                    block, pending = pending.split(b"\n\n", 1)
                    self.blocks.append((t, block))
                    if b"\nevent: message\n" in block:
                        self.messages += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # recorded and shown: a stream that dies is a finding
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready.set()
        finally:
            if writer is not None:
                writer.close()

    def events(self) -> list[tuple[float, int, str, dict[str, Any]]]:
        """(arrival, id, kind, data) of every event block (comments and retry lines skipped)."""
        out = []
        for t, block in self.blocks:
            fields: dict[str, bytes] = {}
            for line in block.split(b"\n"):
                name, _, value = line.partition(b": ")
                fields[name.decode()] = value
            if "id" in fields and "data" in fields:
                out.append(
                    (
                        t,
                        int(fields["id"]),
                        fields.get("event", b"").decode(),
                        orjson.loads(fields["data"]),
                    )
                )
        return out


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------


@dataclass
class Party:
    id: str
    token: str
    secret: str = ""


async def register(db: Path, port: int, count: int, hook_port: int) -> list[Party]:
    """One admin party from the CLI (before the service started), the rest over HTTP; then a
    webhook for each pointing at the receiver."""
    conn = Connection(HOST, port)
    admin_token = (db.parent / "admin.token").read_text().strip()
    status, body = await conn.request("GET", "/v1/me", admin_token, b"")
    if status != 200:
        raise RuntimeError(f"GET /v1/me: {status} {body[:200]!r}")
    parties = [Party(orjson.loads(body)["id"], admin_token)]
    for k in range(1, count):
        status, body = await conn.request(
            "POST", "/v1/parties", admin_token, orjson.dumps({"name": f"bench-events-{k}"})
        )
        if status != 201:
            raise RuntimeError(f"POST /v1/parties: {status} {body[:300]!r}")
        data = orjson.loads(body)
        parties.append(Party(data["party"]["id"], data["token"]))
    for k, p in enumerate(parties):
        status, body = await conn.request(
            "PUT",
            "/v1/settings",
            p.token,
            orjson.dumps({"webhook_url": f"http://{HOST}:{hook_port}/hook/{k}"}),
        )
        if status != 200:
            raise RuntimeError(f"PUT /v1/settings: {status} {body[:300]!r}")
        p.secret = orjson.loads(body)["webhook_secret"]
    await conn.close()
    return parties


async def feed_ids(port: int, parties: list[Party]) -> dict[str, list[int]]:
    """Every party's whole feed from ``GET /v1/events`` (the reference for completeness)."""
    conn = Connection(HOST, port)
    out: dict[str, list[int]] = {}
    for p in parties:
        ids: list[int] = []
        after = 0
        while True:
            status, body = await conn.request(
                "GET", f"/v1/events?after={after}&limit=1000", p.token, b""
            )
            if status != 200:
                raise RuntimeError(f"GET /v1/events: {status} {body[:200]!r}")
            data = orjson.loads(body)
            ids.extend(e["id"] for e in data["events"])
            if len(data["events"]) < 1000:
                break
            after = data["next_after"]
        out[p.id] = ids
    await conn.close()
    return out


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


@dataclass
class Sent:
    phase: str
    due: float
    sent: float
    answered: float
    status: int
    payload: bytes


async def generate(
    port: int,
    parties: list[Party],
    rate: float,
    duration: float,
    connections: int,
    phase: str,
    rng: random.Random,
) -> list[Sent]:
    """Open loop: message i is due at start + i / rate, whatever became of the ones before."""
    n = max(1, int(rate * duration))
    pairs = []
    for _ in range(n):
        a, b = rng.sample(range(len(parties)), 2)
        pairs.append((a, b))
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    out: list[Sent] = []

    async def worker() -> None:
        conn = Connection(HOST, port)
        await conn.open()
        while (item := await queue.get()) is not None:
            i, due = item
            a, b = pairs[i]
            body = b'{"to":["' + parties[b].id.encode() + b'"],"text":"bench ' + str(i).encode()
            body += b'"}'
            t = wall()
            try:
                status, payload = await conn.request("POST", "/v1/messages", parties[a].token, body)
            except (OSError, asyncio.IncompleteReadError) as exc:
                status, payload = 0, repr(exc).encode()
                await conn.close()
                conn = Connection(HOST, port)
            out.append(Sent(phase, due, t, wall(), status, payload))
        await conn.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    loop = asyncio.get_running_loop()
    start_mono = loop.time()
    start_wall = wall()
    for i in range(n):
        delay = start_mono + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, start_wall + i / rate))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return out


async def loop_lag(samples: list[float], stop: asyncio.Event, every_s: float = 0.005) -> None:
    """How late this process's event loop wakes up: it inflates every arrival time it stamps."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(every_s)
        samples.append(loop.time() - t - every_s)


def cpu_seconds(pgid: int) -> float:
    """User + system CPU of every process in the service's process group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        if int(rest[2]) == pgid:  # field 5: process group
            total += (int(rest[11]) + int(rest[12])) / tick  # utime, stime
    return total


# --------------------------------------------------------------------------------------------
# One service run
# --------------------------------------------------------------------------------------------


async def wait_drained(
    streams: list[Stream], receiver: Receiver, expected: int, timeout_s: float
) -> dict[str, Any]:
    """Wait until every acknowledged message reached both the streams and the webhooks."""
    t0 = wall()
    seen: set[int] = set()
    parsed = 0
    while True:
        for _, _, body in receiver.deliveries[parsed:]:
            for e in orjson.loads(body)["events"]:
                if e["kind"] == "message":
                    seen.add(e["id"])
        parsed = len(receiver.deliveries)
        sse = sum(s.messages for s in streams)
        if (sse >= expected and len(seen) >= expected) or wall() - t0 > timeout_s:
            return {"sse_messages": sse, "webhook_messages": len(seen), "waited_s": wall() - t0}
        await asyncio.sleep(0.1)


def ordered_unique(got: list[int], feed: list[int]) -> dict[str, int]:
    want = set(feed)
    have = set(got)
    return {
        "received": len(got),
        "duplicates": len(got) - len(have),
        "missing": len(want - have),
        "foreign": len(have - want),
        "out_of_order": sum(1 for a, b in itertools.pairwise(got) if b <= a),
    }


async def run_service(workers: int, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"events-w{workers}-", dir=args.tmp))
    db = tmp / "events.db"
    try:
        out = subprocess.run(
            [*_cli(), "party", "add", "bench-events-admin", "--admin", "--db", str(db)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (tmp / "admin.token").write_text(out.strip().splitlines()[-1])
        receiver = Receiver()
        await receiver.start()
        server = Server(db, workers)
        server.log = tmp / "serve.log"
        await asyncio.to_thread(server.__enter__)
        try:
            return await _measure(server, db, receiver, workers, args, log)
        finally:
            server.__exit__(None, None, None)
            await receiver.close()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


async def _measure(
    server: Server,
    db: Path,
    receiver: Receiver,
    workers: int,
    args: argparse.Namespace,
    log: Any,
) -> dict[str, Any]:
    port = server.port
    t = wall()
    parties = await register(db, port, args.parties, receiver.port)
    log(f"  {len(parties)} parties with webhooks in {wall() - t:.1f} s")
    streams = [Stream(k, p.token, port) for k, p in enumerate(parties)]
    tasks = [asyncio.create_task(s.run()) for s in streams]
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in streams)), 30)
    broken = [s.error for s in streams if s.error]
    if broken:
        raise RuntimeError(f"{len(broken)} streams failed: {broken[0]}")
    await asyncio.sleep(1.0)  # every stream subscribed and idle; the webhook loop idle too
    watcher = CommitWatcher(db, db.parent / "commits.json")
    await asyncio.to_thread(watcher.start)

    rng = random.Random(args.seed)
    lag: list[float] = []
    stop = asyncio.Event()
    lag_task = asyncio.create_task(loop_lag(lag, stop))
    sent: list[Sent] = []
    phases: dict[str, dict[str, Any]] = {}
    pgid = server.proc.pid if server.proc else 0
    rates = list(args.rates)
    while rates:
        rate = rates.pop(0)
        phase = f"{rate:g}/s"
        log(f"  {phase} for {args.duration:g} s ...")
        lag_from = len(lag)
        cpu0, self0, t0 = cpu_seconds(pgid), sum(os.times()[:2]), wall()
        batch = await generate(port, parties, rate, args.duration, args.connections, phase, rng)
        elapsed = wall() - t0
        cpu1, self1 = cpu_seconds(pgid), sum(os.times()[:2])
        ok = sum(1 for s in batch if s.status == 201)
        drained = await wait_drained(
            streams, receiver, sum(1 for s in sent if s.status == 201) + ok, args.drain
        )
        sent.extend(batch)
        first = min(s.sent for s in batch)
        last = max(s.answered for s in batch)
        phases[phase] = {
            "offered_per_s": rate,
            "messages": len(batch),
            "acknowledged": ok,
            "refused": len(batch) - ok,
            "first_refusal": next(
                (f"{s.status} {s.payload[:200]!r}" for s in batch if s.status != 201), None
            ),
            "achieved_per_s": ok / max(1e-9, last - first),
            "send_lag": summary_ms([max(0.0, s.sent - s.due) for s in batch]),
            "post_latency": summary_ms([s.answered - s.sent for s in batch if s.status == 201]),
            "server_cpu_cores": (cpu1 - cpu0) / elapsed,
            "bench_cpu_cores": (self1 - self0) / elapsed,
            "loop_lag": summary_ms(lag[lag_from:]),
            "drain": drained,
        }
        achieved = phases[phase]["achieved_per_s"]
        log(f"    {ok:,} acknowledged, {achieved:,.0f}/s; drained in {drained['waited_s']:.1f} s")
        if not rates and args.fallback and rate in args.rates and achieved < 0.95 * rate:
            # The top rate was out of reach: measure again just below what the service managed,
            # so the table also shows latency at a rate it sustains rather than only overload.
            below = float(max(10, int(0.8 * achieved) // 10 * 10))
            if f"{below:g}/s" not in phases:
                rates.append(below)
    stop.set()
    await lag_task
    await asyncio.sleep(0.5)  # anything still in flight (non-message events, if any)
    await asyncio.to_thread(watcher.finish)
    committed = watcher.seen
    feeds = await feed_ids(port, parties)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    # ---- afterwards: parse, match, check --------------------------------------------------
    by_message: dict[str, Sent] = {}
    for s in sent:
        if s.status == 201:
            by_message[orjson.loads(s.payload)["id"]] = s
    party_of = {p.id: k for k, p in enumerate(parties)}

    sse_lat: dict[str, list[float]] = defaultdict(list)
    sse_low: dict[str, list[float]] = defaultdict(list)
    sse_commit: dict[str, list[float]] = defaultdict(list)
    sse_ids: dict[str, list[int]] = {}
    for s in streams:
        events = s.events()
        sse_ids[parties[s.party].id] = [e[1] for e in events]
        seen: set[int] = set()
        for t, eid, kind, data in events:
            if kind != "message" or eid in seen:
                continue
            seen.add(eid)
            m = by_message.get(data["payload"]["message"]["id"])
            if m is not None:
                sse_lat[m.phase].append(t - event_time(data["time"]))
                sse_low[m.phase].append(t - m.answered)
                if eid in committed:
                    sse_commit[m.phase].append(t - committed[eid])

    hook_lat: dict[str, list[float]] = defaultdict(list)
    hook_low: dict[str, list[float]] = defaultdict(list)
    hook_commit: dict[str, list[float]] = defaultdict(list)
    hook_ids: dict[str, list[int]] = {p.id: [] for p in parties}
    hook_seen: dict[str, set[int]] = defaultdict(set)
    signatures = {"checked": 0, "valid": 0}
    batch_sizes = []
    for t, signature, body in receiver.deliveries:
        data = orjson.loads(body)
        party = parties[party_of[data["party_id"]]]
        signatures["checked"] += 1
        signatures["valid"] += verify_signature(party.secret, signature, body, now=t)
        batch_sizes.append(len(data["events"]))
        for e in data["events"]:
            hook_ids[party.id].append(e["id"])
            if e["kind"] != "message" or e["id"] in hook_seen[party.id]:
                continue
            hook_seen[party.id].add(e["id"])
            m = by_message.get(e["payload"]["message"]["id"])
            if m is not None:
                hook_lat[m.phase].append(t - event_time(e["time"]))
                hook_low[m.phase].append(t - m.answered)
                if e["id"] in committed:
                    hook_commit[m.phase].append(t - committed[e["id"]])

    def check(got: dict[str, list[int]]) -> dict[str, int]:
        total: dict[str, int] = defaultdict(int)
        for p in parties:
            for k, v in ordered_unique(got.get(p.id, []), feeds[p.id]).items():
                total[k] += v
        return dict(total)

    for phase, res in phases.items():
        res["sse"] = {
            "from_commit": summary_ms(sse_commit[phase]),
            "latency": summary_ms(sse_lat[phase]),
            "after_201": summary_ms(sse_low[phase]),
        }
        res["webhook"] = {
            "from_commit": summary_ms(hook_commit[phase]),
            "latency": summary_ms(hook_lat[phase]),
            "after_201": summary_ms(hook_low[phase]),
        }
    return {
        "workers": workers,
        "parties": len(parties),
        "phases": phases,
        "feed_events": sum(len(v) for v in feeds.values()),
        "sse_check": check(sse_ids),
        "webhook_check": check(hook_ids),
        "webhook_deliveries": len(receiver.deliveries),
        "webhook_batch": {
            "mean": float(np.mean(batch_sizes)) if batch_sizes else 0.0,
            "max": max(batch_sizes, default=0),
        },
        "signatures": signatures,
        "stream_errors": [s.error for s in streams if s.error],
        "commit_watch": {
            "events_seen": len(committed),
            "poll_gap": summary_ms(watcher.gaps),
        },
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def report_run(res: dict[str, Any], report: Report) -> None:
    w = res["workers"]
    sec = f"{w} worker{'s' if w > 1 else ''}"
    for phase, p in res["phases"].items():
        report.add(
            sec,
            f"{phase}: achieved change rate",
            fmt_rate(p["achieved_per_s"]),
            f"{p['offered_per_s']:g}/s",
            p["achieved_per_s"] >= 0.95 * p["offered_per_s"],
            f"{p['acknowledged']:,} messages, {p['refused']} refused; POST p50 "
            f"{fmt_ms(p['post_latency'].get('median_ms', float('nan')))}, p99 "
            f"{fmt_ms(p['post_latency'].get('p99_ms', float('nan')))}; CPU: service "
            f"{p['server_cpu_cores']:.2f}, bench {p['bench_cpu_cores']:.2f} cores",
        )
        gap = res["commit_watch"]["poll_gap"]
        for face, label in (("sse", "SSE"), ("webhook", "webhook")):
            got, lat, low = p[face]["from_commit"], p[face]["latency"], p[face]["after_201"]
            if not got.get("n"):
                report.add(sec, f"{phase}: {label}", "no events", ok=False)
                continue
            report.add(
                sec,
                f"{phase}: {label} from commit, p50 / p99",
                f"{fmt_ms(got['median_ms'])} / {fmt_ms(got['p99_ms'])}",
                f"p99 ≤ {TARGET_P99_MS:g} ms",
                got["p99_ms"] <= TARGET_P99_MS,
                f"n {got['n']:,}, max {fmt_ms(got['max_ms'])}; commit seen by a read every "
                f"{WATCH_EVERY_S * 1e3:g} ms, counted from the read before (gap p99 "
                f"{fmt_ms(gap.get('p99_ms', float('nan')))})",
            )
            report.add(
                sec,
                f"{phase}: {label} from the change's start / after the 201, p99",
                f"{fmt_ms(lat['p99_ms'])} / {fmt_ms(low['p99_ms'])}",
                note="bounds: the first over-, the second underestimates commit -> arrival",
            )
        report.add(
            sec,
            f"{phase}: bench loop lag p99",
            fmt_ms(p["loop_lag"].get("p99_ms", float("nan"))),
            note=f"max {fmt_ms(p['loop_lag'].get('max_ms', float('nan')))}; the receiving "
            "loop's own delay, included in the latencies above",
        )
    for face, label in (("sse_check", "SSE"), ("webhook_check", "webhook")):
        c = res[face]
        clean = not (c["missing"] or c["duplicates"] or c["foreign"] or c["out_of_order"])
        report.add(
            sec,
            f"{label} ids vs GET /v1/events",
            f"{c['received']:,} / {res['feed_events']:,}",
            "none lost or repeated",
            clean,
            f"missing {c['missing']}, duplicated {c['duplicates']}, foreign {c['foreign']}, "
            f"out of order {c['out_of_order']}",
        )
    sig = res["signatures"]
    report.add(
        sec,
        "webhook signatures valid",
        f"{sig['valid']:,} / {sig['checked']:,}",
        ok=sig["valid"] == sig["checked"],
        note=f"{res['webhook_deliveries']:,} POSTs, {res['webhook_batch']['mean']:.1f} events "
        f"each on average (max {res['webhook_batch']['max']})",
    )


async def main_async(args: argparse.Namespace, report: Report, log: Any) -> None:
    for workers in args.workers:
        log(f"deconfliction serve --workers {workers} ...")
        res = await run_service(workers, args, log)
        report.data.setdefault("runs", []).append(res)
        report_run(res, report)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="5 s phases at 50/s and 200/s, 1 worker")
    p.add_argument("--parties", type=int, default=100)
    p.add_argument("--rates", default=None, help="changes per second, one phase each (100,500)")
    p.add_argument("--duration", type=float, default=None, help="seconds per phase (20)")
    p.add_argument("--workers", default=None, help="service processes, one run each (1,2)")
    p.add_argument("--connections", type=int, default=32, help="load generator connections")
    p.add_argument(
        "--no-fallback",
        dest="fallback",
        action="store_false",
        help="do not add a phase at 80 %% of the achieved rate when the top rate is missed",
    )
    p.add_argument("--drain", type=float, default=30.0, help="max seconds to wait for stragglers")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tmp", default=str(RESULTS), help="where the scratch database goes")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--json", default=str(RESULTS / "events.json"))
    args = p.parse_args(argv)
    args.rates = [
        float(x) for x in (args.rates or ("50,200" if args.quick else "100,500")).split(",")
    ]
    args.duration = args.duration or (5.0 if args.quick else 20.0)
    args.workers = [int(x) for x in (args.workers or ("1" if args.quick else "1,2")).split(",")]
    Path(args.tmp).mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = Report(
        f"Event delivery: commit -> SSE client and webhook receiver, {args.parties} parties, "
        "hotline messages (1 event each)"
    )
    load_before = os.getloadavg()
    started = wall()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(main_async(args, report, log))
    load_after = os.getloadavg()
    report.data["loadavg"] = {"start": load_before, "end": load_after}
    report.add(
        "machine",
        "load average 1 / 5 min, start → end",
        f"{load_before[0]:.2f}/{load_before[1]:.2f} → {load_after[0]:.2f}/{load_after[1]:.2f}",
        note=f"{os.cpu_count()} cores shared by the service, this bench and anything else",
    )
    args_out = {k: v for k, v in vars(args).items()}
    report.data["args"] = args_out
    report.data["elapsed_s"] = wall() - started
    report.data["latency_note"] = (
        "from_commit: arrival - the start of the last read that did not yet see the event in "
        f"the database (a read every {WATCH_EVERY_S * 1e3:g} ms): commit->arrival plus at most "
        "one poll; "
        "latency: arrival - event time (stamped before the transaction) overestimates it; "
        "after_201: arrival - 201 received underestimates it"
    )
    report.print()
    report.write_json(Path(args.json))
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
