#!/usr/bin/env python
"""Storm: several service processes on one PostgreSQL database, many clients, a hot spot, faults.

The proof asked for in issue #5. The driver

1. creates a fresh database (a unique name, dropped afterwards unless ``--keep``), a signing key
   every process shares, parties with webhooks pointing at a receiver it runs (an asyncio HTTP
   server that checks each signature and records every (party, event id) it is handed), and
   subscriptions over the hot spot for some of them;
2. starts N ``deconfliction serve`` processes (each in its own process group, ``--workers 1``);
3. runs C concurrent clients over HTTP for D seconds, spread across the processes. Each client
   looks (``POST /v1/operations/conflicts``), files with the versions it saw as its key (about one
   first attempt in ten deliberately stale or partial), adds what a ``409 missing_key`` lists and
   files again, and now and then updates or ends one of its own operations. On 503 it expects a
   ``Retry-After`` header and waits that long; a connection refused or broken by a killed process
   sends it to another process. It records every status and every acknowledged write;
4. injects the faults asked for: ``--kill-after S`` kills -9 one process (``--restart-killed``
   starts it again), ``--restart-pg-after S`` restarts PostgreSQL once (``--pg-down S2``
   keeps it stopped S2 seconds first);
5. waits (bounded) for webhook delivery to drain, then checks, from the database (Store API) and
   what the clients and the receiver recorded:

   (i)   the key invariant: for every two live operations of different parties that conflict,
         the later write's record holds the earlier one's version in its key and the conflict in
         its conflicts; and, replaying the whole history from the audit log (commit order), every
         write's key held the version of every operation it truly conflicted with at that time,
         its recorded conflicts are exactly those, and every update replaced the current version;
   (ii)  every write a client saw acknowledged is stored; each operation is as its owner last saw
         it unless the owner's later write had an unknown outcome (a 503 or a lost connection);
         every stored operation no client saw acknowledged is explained by such a write;
   (iii) every event stored for a party (all have webhooks) reached the receiver at least once,
         with a valid signature, the same content under the same id, and no id the database
         lacks (duplicates are counted: allowed, same id); every conflict and subscription a write
         touched produced its event;
   (iv)  the audit chain and its seals verify with the shared key;
   (v)   no client saw a 5xx other than 503 with Retry-After, nor any status a route should not
         answer, nor a success for a write that is not stored.

It prints a summary table and exits 1 on any violation (2 when the storm could not run).

    .venv/bin/python scripts/storm.py --processes 2 --clients 32 --duration 20 \\
        --kill-after 8 --restart-pg-after 12
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

from deconfliction.config import Settings  # noqa: E402
from deconfliction.core import rules  # noqa: E402
from deconfliction.core.errors import Unavailable  # noqa: E402
from deconfliction.core.model import OperationState  # noqa: E402
from deconfliction.formats import format_time, parse_volumes  # noqa: E402
from deconfliction.security import load_or_create_signing_key  # noqa: E402
from deconfliction.services.audit import AuditLog  # noqa: E402
from deconfliction.services.delivery import SIGNATURE_HEADER, verify_signature  # noqa: E402
from deconfliction.services.views import event_view  # noqa: E402

DEFAULT_ADMIN_URL = os.environ.get(
    "DECONFLICTION_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"
)
HOT_LAT, HOT_LON = 46.0, 7.0
NEEDS_KEY = {OperationState.ACCEPTED.value, OperationState.ACTIVATED.value}
EXPECTED: dict[str, set[int]] = {
    "look": {200, 503},
    "file": {201, 409, 503},
    "update": {200, 409, 503},
    "end": {200, 409, 503},
    "get": {200, 503},
}
"""Every status each kind of request may answer in a storm; anything else is a violation."""


# Configuration -----------------------------------------------------------------------------------


@dataclass
class StormConfig:
    processes: int = 2
    clients: int = 32
    parties: int = 16
    subscribers: int = 4
    """How many of the parties also subscribe to the whole hot spot."""
    duration_s: float = 20.0
    kill_after_s: float | None = None
    restart_killed_after_s: float | None = None
    """Seconds after the kill to start the killed process again (None: leave it dead)."""
    restart_pg_after_s: float | None = None
    pg_down_s: float = 0.0
    """With 0, PostgreSQL is restarted in one step; else stopped, left down this long, started."""
    pg_ctl: list[str] | None = None
    """The command that controls the server, without its action (stop, start, restart)."""
    stale_fraction: float = 0.1
    max_live_per_client: int = 2
    update_fraction: float = 0.25
    drain_timeout_s: float = 90.0
    request_timeout_s: float = 30.0
    admin_url: str = DEFAULT_ADMIN_URL
    keep: bool = False
    seed: int = 1
    workdir: Path | None = None
    quiet: bool = False


def default_pg_ctl() -> list[str] | None:
    """``pg_ctlcluster`` for the one local cluster, when this machine has one and we are root."""
    conf = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") is None or not conf.is_dir() or os.geteuid() != 0:
        return None
    versions = sorted(p.name for p in conf.iterdir() if (p / "main").is_dir())
    if len(versions) != 1:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main"]


# The database --------------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def create_database(admin_url: str) -> tuple[str, str]:
    import psycopg

    name = f"storm_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return name, with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    for attempt in range(10):  # right after a restart the server may still be starting
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            return
        except psycopg.OperationalError:
            if attempt == 9:
                raise
            time.sleep(1.0)


def wait_for_database(url: str, timeout_s: float = 60.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


# The hot spot --------------------------------------------------------------------------------------


def hot_spot_volume(rng: random.Random, base: float) -> dict[str, Any]:
    """A 1-1.5 km circle within 1.5 km of one point, in one of three overlapping hours: almost
    every two of them conflict."""
    bearing, distance = rng.uniform(0, 2 * math.pi), rng.uniform(0, 1_500.0)
    lat = HOT_LAT + distance * math.cos(bearing) / 111_195.0
    lon = HOT_LON + distance * math.sin(bearing) / (111_195.0 * math.cos(math.radians(HOT_LAT)))
    start = base + rng.choice([0.0, 1_200.0, 2_400.0])
    lower = rng.choice([0.0, 60.0])
    return {
        "footprint": {
            "circle": {"center": {"lat": lat, "lon": lon}, "radius_m": rng.uniform(1e3, 1.5e3)}
        },
        "altitude_lower_m": lower,
        "altitude_upper_m": lower + 120.0,
        "start": format_time(start),
        "end": format_time(start + 3_600.0),
    }


def hot_spot_area(base: float) -> list[dict[str, Any]]:
    return [
        {
            "footprint": {"circle": {"center": {"lat": HOT_LAT, "lon": HOT_LON}, "radius_m": 5e3}},
            "altitude_lower_m": 0.0,
            "altitude_upper_m": 1_000.0,
            "start": format_time(base - 600.0),
            "end": format_time(base + 3 * 3_600.0),
        }
    ]


# The webhook receiver ------------------------------------------------------------------------------


def _digest(view: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(view, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Receiver:
    """An asyncio HTTP server in its own thread: one URL per party, every delivery recorded.

    It answers 204 to a delivery with a valid signature and 401 otherwise (the service retries),
    so a bad signature shows up both here and as an undelivered event.
    """

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.lock = threading.Lock()
        self.received: dict[str, dict[int, str]] = defaultdict(dict)
        """party -> event id -> digest of the event as delivered (first time)."""
        self.deliveries = 0
        self.events_delivered = 0
        self.duplicates = 0
        self.changed_duplicates: list[str] = []
        self.bad_signatures = 0
        self.bad_requests: list[str] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="storm-receiver", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.port

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def url(self, party: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{party}"

    def max_ids(self) -> dict[str, int]:
        with self.lock:
            return {p: max(ids, default=0) for p, ids in self.received.items()}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                try:
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                except (asyncio.IncompleteReadError, ConnectionError):
                    # The sender went away mid-request (the storm kills a service process with
                    # SIGKILL): nothing was delivered, and another process delivers it again.
                    return
                status = self._accept(method, path, headers, body)
                writer.write(
                    f"HTTP/1.1 {status} {'No Content' if status == 204 else 'Refused'}\r\n"
                    "Content-Length: 0\r\n\r\n".encode()
                )
                await writer.drain()
        except Exception as exc:  # a malformed request: record it, drop the connection
            with self.lock:
                self.bad_requests.append(f"{type(exc).__name__}: {exc}")
        finally:
            writer.close()

    def _accept(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        party = path.rsplit("/", 1)[-1]
        secret = self.secrets.get(party)
        signature = headers.get(SIGNATURE_HEADER.lower(), "")
        with self.lock:
            if method != "POST" or not path.startswith("/hook/") or secret is None:
                self.bad_requests.append(f"{method} {path}")
                return 404
            if not verify_signature(secret, signature, body, time.time()):
                self.bad_signatures += 1
                return 401
            data = orjson.loads(body)
            if data.get("party_id") != party:
                self.bad_requests.append(f"delivery for {data.get('party_id')} at {path}")
                return 400
            self.deliveries += 1
            seen = self.received[party]
            for event in data["events"]:
                digest = _digest(event)
                self.events_delivered += 1
                if event["id"] in seen:
                    self.duplicates += 1
                    if seen[event["id"]] != digest:
                        self.changed_duplicates.append(f"{party}:{event['id']}")
                else:
                    seen[event["id"]] = digest
            return 204


# Service processes ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("deconfliction")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "deconfliction.cli"]


class Service:
    """``deconfliction serve`` in its own process group (so kill -9 takes all of it)."""

    def __init__(self, index: int, url: str, key: Path, workdir: Path) -> None:
        self.index = index
        self.url = url
        self.key = key
        self.port = _free_port()
        self.log = workdir / f"serve-{index}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {
            **os.environ,
            "DECONFLICTION_DB": self.url,
            "DECONFLICTION_SIGNING_KEY": str(self.key),
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [*_cli(), "serve", "--db", self.url, "--port", str(self.port), "--workers", "1"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.key.parent,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def start_until_ready(self, timeout_s: float = 90.0) -> None:
        """Start, and start again while it exits at once, as a supervisor would: a process that
        cannot reach the database at start (restarting, or out of shared memory) exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.start()
            try:
                self.wait_ready(max(1.0, deadline - time.monotonic()))
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"service {self.index} exited: see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"service {self.index} did not answer within {timeout_s:.0f} s")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9 the whole process group: no shutdown, no lease released, nothing flushed."""
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log_problems(self) -> dict[str, int]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return {
            "tracebacks": text.count("Traceback"),
            "unexpected errors": text.count("unexpected error"),
            "duty failures": text.count("background duty"),
        }


# HTTP clients --------------------------------------------------------------------------------------


class NotSent(Exception):
    """The connection could not be made: the request never reached a service."""


class Lost(Exception):
    """The request went out but no whole answer came back: its outcome is unknown."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


class Http:
    """One keep-alive HTTP/1.1 connection to one service process; one request at a time."""

    def __init__(self, port: int, timeout_s: float) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used_at = 0.0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, token: str, body: bytes | None) -> Answer:
        # An idle keep-alive connection may be closed by the server (uvicorn: after 5 s), which
        # would look like a lost request: open a fresh one instead.
        if self.writer is not None and time.monotonic() - self.used_at > 3.0:
            await self.close()
        if self.writer is None:
            try:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 5.0
                )
            except (OSError, TimeoutError) as exc:
                raise NotSent(f"{type(exc).__name__}: {exc}") from exc
        assert self.reader is not None and self.writer is not None
        payload = body or b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        try:
            self.writer.write(head + payload)
            answer = await asyncio.wait_for(self._read(), self.timeout_s)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            await self.close()
            raise Lost(f"{type(exc).__name__}: {exc}") from exc
        self.used_at = time.monotonic()
        if answer.headers.get("connection", "").lower() == "close":
            await self.close()
        return answer

    async def _read(self) -> Answer:
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await self.reader.readexactly(length) if length else b""
        return Answer(status, headers, body)


@dataclass
class OwnOp:
    id: str
    version: str
    state: str
    acked: list[str] = field(default_factory=list)
    unknown_since_ack: bool = False
    """A write of this operation after its last acknowledged one had an unknown outcome."""


@dataclass
class Ledger:
    """Everything the clients saw."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    per_process: Counter[int] = field(default_factory=Counter)
    acked: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(kind, party, operation id, version) of every acknowledged write."""
    ops: dict[str, OwnOp] = field(default_factory=dict)
    unknown_files: Counter[str] = field(default_factory=Counter)
    """Per party: filings whose outcome is unknown (they may have created an operation)."""
    unknown_writes: Counter[str] = field(default_factory=Counter)
    not_sent: int = 0
    lost: int = 0
    lost_writes: int = 0
    retry_after_503: int = 0
    unavailable: Counter[str] = field(default_factory=Counter)
    """Why the service answered 503 (its message, without the details of each case)."""
    stale_first: int = 0
    missing_listed: int = 0
    stale_refused: int = 0
    gave_up: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    first_503_at: float | None = None
    last_ack_at: float | None = None
    last_503_at: float | None = None
    timeline: Counter[int] = field(default_factory=Counter)
    """Acknowledged writes per second of the storm."""


def _reason(answer: Answer) -> str:
    """A 503's message, cut short (the database's own words can be long)."""
    try:
        message = str(answer.json().get("message", "?"))
    except (orjson.JSONDecodeError, AttributeError):
        message = answer.body[:80].decode(errors="replace")
    return message if len(message) <= 100 else message[:97] + "..."


class Cluster:
    """Which service processes a client may use right now."""

    def __init__(self, services: list[Service]) -> None:
        self.services = services
        self.down_until: dict[int, float] = {}

    def pick(self, turn: int) -> Service | None:
        now = time.monotonic()
        n = len(self.services)
        for k in range(n):
            service = self.services[(turn + k) % n]
            if self.down_until.get(service.index, 0.0) <= now:
                return service
        return None

    def mark_down(self, service: Service, seconds: float = 1.0) -> None:
        self.down_until[service.index] = time.monotonic() + seconds


class Client:
    """One party's client: look, file with a key, sometimes update or end its own."""

    def __init__(
        self,
        number: int,
        party: str,
        token: str,
        cluster: Cluster,
        ledger: Ledger,
        cfg: StormConfig,
        base: float,
        t0: float,
    ) -> None:
        self.number = number
        self.party = party
        self.token = token
        self.cluster = cluster
        self.ledger = ledger
        self.cfg = cfg
        self.base = base
        self.t0 = t0
        self.rng = random.Random(cfg.seed * 1_000 + number)
        self.turn = number
        self.conns: dict[int, Http] = {}
        self.mine: list[str] = []
        self.stop_at = math.inf

    async def close(self) -> None:
        for conn in self.conns.values():
            await conn.close()

    async def call(self, kind: str, method: str, path: str, body: Any = None) -> Answer | None:
        """One request, sent again after a 503 (waiting Retry-After) or to another process
        when the connection fails. None when a write's outcome became unknown (the caller
        decides) or the storm is over."""
        data = orjson.dumps(body) if body is not None else None
        write = kind in ("file", "update", "end")
        for _ in range(200):
            service = self.cluster.pick(self.turn)
            self.turn += 1
            if service is None:
                await asyncio.sleep(0.2)
                continue
            conn = self.conns.get(service.index)
            if conn is None or conn.port != service.port:
                conn = self.conns[service.index] = Http(service.port, self.cfg.request_timeout_s)
            started = time.monotonic()
            try:
                answer = await conn.request(method, path, self.token, data)
            except NotSent:
                self.ledger.not_sent += 1
                self.cluster.mark_down(service)
                continue
            except Lost:
                self.ledger.lost += 1
                self.cluster.mark_down(service)
                if write:
                    self.ledger.lost_writes += 1
                    return None
                continue
            self.ledger.latencies.append(time.monotonic() - started)
            self.ledger.per_process[service.index] += 1
            self.ledger.statuses[(kind, answer.status)] += 1
            if answer.status not in EXPECTED[kind]:
                self.ledger.violations.append(
                    f"{kind} {method} {path} via service {service.index}: unexpected "
                    f"{answer.status} {answer.body[:300]!r}"
                )
            if answer.status >= 400:
                code = (answer.json() or {}).get("code", "?") if answer.body else "?"
                self.ledger.codes[(kind, f"{answer.status} {code}")] += 1
            if answer.status == 503:
                now = time.monotonic() - self.t0
                self.ledger.first_503_at = self.ledger.first_503_at or now
                self.ledger.last_503_at = now
                retry_after = answer.headers.get("retry-after", "")
                if not retry_after.isdigit():
                    self.ledger.violations.append(
                        f"{kind} via service {service.index}: 503 without a Retry-After header"
                    )
                    retry_after = "1"
                self.ledger.retry_after_503 += 1
                self.ledger.unavailable[_reason(answer)] += 1
                await asyncio.sleep(int(retry_after) * self.rng.uniform(1.0, 1.5))
                if write:
                    return None
                continue
            return answer
        return None

    async def look(self, volumes: list[dict[str, Any]]) -> list[str] | None:
        answer = await self.call("look", "POST", "/v1/operations/conflicts", {"volumes": volumes})
        if answer is None or answer.status != 200:
            return None
        return [c["version"] for c in answer.json()["conflicts"]]

    def _stale(self, key: list[str]) -> list[str]:
        """A key that misses one version: dropped, or replaced by an out-of-date one."""
        key = list(key)
        i = self.rng.randrange(len(key))
        if self.rng.random() < 0.5:
            del key[i]
        else:
            key[i] = "stale-" + key[i][::-1]
        return key

    async def write(self, op: OwnOp | None) -> None:
        """File a new operation (op is None) or update ``op``, presenting a key."""
        kind = "file" if op is None else "update"
        volumes = [hot_spot_volume(self.rng, self.base) for _ in range(self.rng.choice([1, 1, 2]))]
        key = await self.look(volumes)
        if key is None:
            return
        stale = bool(key) and self.rng.random() < self.cfg.stale_fraction
        if stale:
            key = self._stale(key)
            self.ledger.stale_first += 1
        for attempt in range(40):
            if time.monotonic() > self.stop_at + 1.0:
                return
            if op is None:
                body: dict[str, Any] = {"volumes": volumes, "state": "Accepted", "key": key}
                answer = await self.call("file", "POST", "/v1/operations", body)
            else:
                state = "Activated" if self.rng.random() < 0.3 else op.state
                body = {"version": op.version, "volumes": volumes, "state": state, "key": key}
                answer = await self.call("update", "PUT", f"/v1/operations/{op.id}", body)
            if answer is None:  # outcome unknown: the write may have been stored
                if op is None:
                    self.ledger.unknown_files[self.party] += 1
                    return
                op.unknown_since_ack = True
                self.ledger.unknown_writes[self.party] += 1
                await self.refresh(op)
                return
            data = answer.json()
            if answer.status in (200, 201):
                self._acked(kind, data["operation"])
                return
            code = data.get("code")
            if code == "missing_key":
                if stale and attempt == 0:
                    self.ledger.stale_refused += 1
                seen = [m["version"] for m in data["details"]["missing"]]
                wrong = sorted(set(seen) & set(key))
                if wrong:
                    self.ledger.violations.append(
                        f"{kind} refused for missing {wrong}, which its key held"
                    )
                self.ledger.missing_listed += len(seen)
                key = sorted(set(key) | set(seen))
                continue
            if code == "version_mismatch" and op is not None:
                await self.refresh(op)
                return
            self.ledger.gave_up[f"{kind} {code}"] += 1
            return
        self.ledger.gave_up[f"{kind}: 40 attempts"] += 1

    def _acked(self, kind: str, view: dict[str, Any]) -> None:
        op_id, version, state = view["id"], view["version"], view["state"]
        self.ledger.acked.append((kind, self.party, op_id, version))
        self.ledger.last_ack_at = time.monotonic() - self.t0
        self.ledger.timeline[int(self.ledger.last_ack_at)] += 1
        own = self.ledger.ops.get(op_id)
        if own is None:
            own = self.ledger.ops[op_id] = OwnOp(op_id, version, state)
            self.mine.append(op_id)
        own.version, own.state = version, state
        own.acked.append(version)
        own.unknown_since_ack = False
        if state == OperationState.ENDED.value and op_id in self.mine:
            self.mine.remove(op_id)

    async def refresh(self, op: OwnOp) -> None:
        """Read the operation back after a write whose outcome is unknown or refused for an
        out-of-date version: the service says which version is current."""
        answer = await self.call("get", "GET", f"/v1/operations/{op.id}")
        if answer is None or answer.status != 200:
            return
        view = answer.json()
        op.version, op.state = view["version"], view["state"]
        if op.state == OperationState.ENDED.value and op.id in self.mine:
            self.mine.remove(op.id)

    async def end(self, op: OwnOp) -> None:
        answer = await self.call("end", "DELETE", f"/v1/operations/{op.id}?version={op.version}")
        if answer is None:
            op.unknown_since_ack = True
            self.ledger.unknown_writes[self.party] += 1
            await self.refresh(op)
            return
        if answer.status == 200:
            self._acked("end", answer.json())
        elif (answer.json() or {}).get("code") == "version_mismatch":
            await self.refresh(op)

    async def run(self, stop_at: float) -> None:
        self.stop_at = stop_at
        while time.monotonic() < stop_at:
            live = [self.ledger.ops[i] for i in self.mine]
            if len(live) >= self.cfg.max_live_per_client:
                await self.end(live[0])
            elif live and self.rng.random() < self.cfg.update_fraction:
                await self.write(self.rng.choice(live))
            else:
                await self.write(None)


# The storm -----------------------------------------------------------------------------------------


@dataclass
class Faults:
    killed: int | None = None
    killed_at: float | None = None
    restarted_killed_at: float | None = None
    pg_restart_at: float | None = None
    pg_back_at: float | None = None
    """When the start (or restart) command returned: the server accepts connections again."""
    pg_restart_error: str | None = None


@dataclass
class Storm:
    cfg: StormConfig
    url: str
    key_path: Path
    receiver: Receiver
    services: list[Service]
    parties: list[tuple[str, str]]
    """(party id, token)"""
    secrets: dict[str, str]
    ledger: Ledger = field(default_factory=Ledger)
    faults: Faults = field(default_factory=Faults)
    storm_s: float = 0.0
    drain_s: float = 0.0
    drained: bool = False


class PatientStore:
    """A store whose transactions wait out ``Unavailable`` for a while.

    The driver's own setup and reads must not fail because the server is restarting or, shared
    with other work, briefly short of the memory serializable transactions need (``out of
    shared memory``): the services answer those moments with 503, the driver waits them out.
    A write retried after an unknown outcome may be applied twice; setup copes with that.
    """

    def __init__(self, url: str, patience_s: float = 60.0, pool_size: int = 2) -> None:
        from deconfliction.stores.postgres import PostgresStore

        self.patience_s = patience_s
        self.store = self._patiently(lambda: PostgresStore(url, pool_size=pool_size))

    def _patiently(self, fn: Any) -> Any:
        deadline = time.monotonic() + self.patience_s
        while True:
            try:
                return fn()
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def transact(self, fn: Any, *, write: bool = True, priority: int = 0) -> Any:
        return self._patiently(lambda: self.store.transact(fn, write=write, priority=priority))

    def close(self) -> None:
        self.store.close()


def setup(cfg: StormConfig, url: str, workdir: Path, receiver: Receiver) -> Storm:
    """Parties, tokens, webhooks and subscriptions, written directly through the services."""
    from deconfliction.core.errors import InvalidInput
    from deconfliction.security import TokenAuthority
    from deconfliction.services.hotline import Hotline
    from deconfliction.services.strategic import Strategic

    key_path = workdir / "signing-key.pem"
    settings = Settings(db=url, signing_key=str(key_path))
    tokens = TokenAuthority(
        load_or_create_signing_key(key_path),
        [],
        audience=settings.audience,
        issuer=settings.issuer,
    )
    store = PatientStore(url)
    strategic = Strategic(store, settings.policy())  # type: ignore[arg-type]
    hotline = Hotline(store, settings.hotline_policy())  # type: ignore[arg-type]
    try:
        parties: list[tuple[str, str]] = []
        secrets: dict[str, str] = {}
        area = parse_volumes(hot_spot_area(_base_time()))
        for i in range(cfg.parties):
            name = f"storm-{i:02d}"
            try:
                party = strategic.add_party(name)
            except InvalidInput as exc:  # added by an attempt whose answer was lost
                if exc.code != "party_exists":
                    raise
                party = strategic.find_party(name)
            token = tokens.issue(party.id, lifetime_s=86_400)
            webhook = hotline.configure(party.id, webhook_url=receiver.url(party.id))
            assert webhook.webhook_secret is not None
            secrets[party.id] = webhook.webhook_secret
            if i < cfg.subscribers:
                strategic.subscribe(party.id, area)
            parties.append((party.id, token))
    finally:
        store.close()
    receiver.secrets.update(secrets)
    services = [Service(i, url, key_path, workdir) for i in range(cfg.processes)]
    return Storm(cfg, url, key_path, receiver, services, parties, secrets)


def _base_time() -> float:
    """Operations start about two hours ahead, on a whole minute (no late notices)."""
    return math.ceil(time.time() / 60.0) * 60.0 + 7_200.0


async def _faults(storm: Storm, t0: float) -> None:
    """The kill (and the killed process's restart) and the PostgreSQL restart, each on its own
    clock: a slow restart of one does not delay the other."""
    cfg = storm.cfg
    plans = []
    if cfg.kill_after_s is not None:
        plans.append(_kill(storm, t0))
    if cfg.restart_pg_after_s is not None:
        plans.append(_restart_pg(storm, t0, cfg.restart_pg_after_s))
    await asyncio.gather(*plans)


async def _at(t0: float, seconds: float) -> float:
    await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))
    return time.monotonic() - t0


async def _kill(storm: Storm, t0: float) -> None:
    cfg, faults, victim = storm.cfg, storm.faults, storm.services[0]
    assert cfg.kill_after_s is not None
    now = await _at(t0, cfg.kill_after_s)
    victim.kill()
    faults.killed, faults.killed_at = victim.index, now
    _say(cfg, f"  {now:5.1f} s  kill -9 service {victim.index} (port {victim.port})")
    if cfg.restart_killed_after_s is None:
        return
    await _at(t0, now + cfg.restart_killed_after_s)
    try:
        await asyncio.to_thread(victim.start_until_ready, 60.0)
    except RuntimeError:
        return
    faults.restarted_killed_at = time.monotonic() - t0
    _say(cfg, f"  {faults.restarted_killed_at:5.1f} s  service {victim.index} is back")


async def _restart_pg(storm: Storm, t0: float, after_s: float) -> None:
    cfg, faults = storm.cfg, storm.faults
    faults.pg_restart_at = await _at(t0, after_s)
    ctl = cfg.pg_ctl or default_pg_ctl()
    if ctl is None:
        faults.pg_restart_error = "no way to restart PostgreSQL here (see --pg-ctl)"
        return
    how = f"down for {cfg.pg_down_s:g} s" if cfg.pg_down_s > 0 else "restart"
    _say(cfg, f"  {faults.pg_restart_at:5.1f} s  PostgreSQL {how}: {' '.join(ctl)}")
    # In a thread: once stopped, the server is started again whatever happens to the storm.
    faults.pg_restart_error = await asyncio.to_thread(pg_restart, ctl, cfg.pg_down_s)
    faults.pg_back_at = time.monotonic() - t0
    _say(cfg, f"  {faults.pg_back_at:5.1f} s  PostgreSQL is back")


def pg_restart(ctl: list[str], down_s: float) -> str | None:
    """Restart the server (stop, wait ``down_s``, start); None, or what went wrong."""

    def run(action: str) -> str | None:
        done = subprocess.run([*ctl, action], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return f"{action}: exit {done.returncode}: {(done.stdout + done.stderr)[-300:]}"
        return None

    if down_s <= 0:
        return run("restart")
    try:
        stopped = run("stop")
        time.sleep(down_s)
    finally:
        started = run("start")
    return stopped or started


async def _run_clients(storm: Storm) -> None:
    cfg = storm.cfg
    cluster = Cluster(storm.services)
    base = _base_time()
    t0 = time.monotonic()
    stop_at = t0 + cfg.duration_s
    clients = [
        Client(k, *storm.parties[k % len(storm.parties)], cluster, storm.ledger, cfg, base, t0)
        for k in range(cfg.clients)
    ]
    faults = asyncio.create_task(_faults(storm, t0))
    try:
        await asyncio.gather(*(c.run(stop_at) for c in clients))
    finally:
        storm.storm_s = time.monotonic() - t0
        for c in clients:
            await c.close()
    await faults  # a fault planned after the end still happens (the checks must hold)


def drain(storm: Storm) -> None:
    """Wait until every party's newest stored event reached the receiver (bounded)."""
    started = time.monotonic()
    deadline = started + storm.cfg.drain_timeout_s
    store = PatientStore(storm.url, pool_size=1)
    try:
        ids = [p for p, _ in storm.parties]
        while True:
            try:
                latest = store.transact(lambda tx: tx.latest_event_ids(ids), write=False)
            except Exception:
                latest = None
            if latest is not None:
                got = storm.receiver.max_ids()
                if all(got.get(p, 0) >= n for p, n in latest.items()):
                    storm.drained = True
                    break
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
    finally:
        store.close()
        storm.drain_s = time.monotonic() - started


# The checker ---------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)
    note: str = ""

    def fail(self, message: str) -> None:
        self.violations.append(message)


@dataclass
class Report:
    checks: list[Check]
    facts: dict[str, Any]
    text: str = ""

    @property
    def violations(self) -> list[str]:
        return [f"{c.name}: {v}" for c in self.checks for v in c.violations]

    @property
    def ok(self) -> bool:
        return not self.violations


def _all_events(store: Any, party: str) -> list[Any]:
    out: list[Any] = []
    after = 0
    while True:
        page = store.transact(lambda tx, a=after: tx.events_after(party, a, 5_000), write=False)
        out.extend(page)
        if len(page) < 5_000:
            return out
        after = page[-1].id


def _audit_entries(store: Any) -> list[Any]:
    head = store.transact(lambda tx: tx.audit_head(), write=False)
    last = head.seq if head else 0
    out: list[Any] = []
    seq = 1
    while seq <= last:
        page = store.transact(
            lambda tx, a=seq: tx.audit_entries(a, min(a + 4_999, last)), write=False
        )
        if not page:
            break
        out.extend(page)
        seq = page[-1].seq + 1
    return out


def check(storm: Storm) -> Report:
    """Read the database through the Store API and prove (i)-(v) (see the module docstring)."""
    wait_for_database(storm.url)
    store = PatientStore(storm.url)
    try:
        return _check(storm, store)
    finally:
        store.close()


def _check(storm: Storm, store: Any) -> Report:
    ledger = storm.ledger
    party_ids = [p for p, _ in storm.parties]
    records = store.transact(lambda tx: tx.write_records(), write=False)
    ops = store.transact(
        lambda tx: [
            op for p in party_ids for op in tx.list_operations(p, include_ended=True, limit=10**9)
        ],
        write=False,
    )
    subs = store.transact(
        lambda tx: [s for p in party_ids for s in tx.list_subscriptions(p)], write=False
    )
    events = {p: _all_events(store, p) for p in party_ids}
    entries = _audit_entries(store)
    seq_of = {(r.operation_id, r.version): i for i, r in enumerate(records)}
    live = [op for op in ops if op.live]
    facts: dict[str, Any] = {
        "operations stored": len(ops),
        "operations live at the end": len(live),
        "write records": len(records),
        "filings and updates stored": sum(1 for r in records if r.state.value in NEEDS_KEY),
        "writes that conflicted": sum(1 for r in records if r.conflicts),
        "audit entries": len(entries),
        "events stored": sum(len(v) for v in events.values()),
    }

    # (i) the key invariant on the stored state: every two live conflicting operations.
    key_live = Check("(i) key invariant, live pairs")
    for a in range(len(live)):
        x = live[a]
        for y in live[a + 1 :]:
            if x.owner == y.owner or not rules.any_overlap(x.volumes, y.volumes):
                continue
            key_live.checked += 1
            if (x.id, x.version) not in seq_of or (y.id, y.version) not in seq_of:
                key_live.fail(f"{x.id}/{y.id}: a current version has no write record")
                continue
            earlier, later = sorted((x, y), key=lambda op: seq_of[(op.id, op.version)])
            record = records[seq_of[(later.id, later.version)]]
            if record.state.value not in NEEDS_KEY:
                continue
            if earlier.version not in record.key:
                key_live.fail(
                    f"{later.id} v{later.version} conflicts with {earlier.id} v{earlier.version} "
                    "but its key lacks that version"
                )
            if (earlier.id, earlier.version) not in record.conflicts:
                key_live.fail(f"{later.id} v{later.version}: conflict {earlier.id} not recorded")
    key_live.note = f"{key_live.checked} conflicting live pairs"

    # (i) again, over the whole history in commit order (the audit chain).
    history, expected_events = _replay(entries, subs)
    facts["writes replayed"] = history.checked

    # (ii) acknowledged writes are stored; each operation is as its owner last saw it.
    stored = Check("(ii) acknowledged writes stored")
    audited = {
        (e.payload["operation"]["id"], e.payload["operation"]["version"])
        for e in entries
        if e.action.startswith("operation.")
    }
    by_id = {op.id: op for op in ops}
    for kind, party, op_id, version in ledger.acked:
        stored.checked += 1
        if (op_id, version) not in seq_of:
            stored.fail(f"{kind} of {op_id} v{version} was acknowledged but is not stored")
        elif records[seq_of[(op_id, version)]].owner != party:
            stored.fail(f"{kind} of {op_id} v{version}: stored under another owner")
        if (op_id, version) not in audited:
            stored.fail(f"{kind} of {op_id} v{version} was acknowledged but is not in the audit")
    explained = 0
    for op_id, own in ledger.ops.items():
        current = by_id.get(op_id)
        if current is None:
            stored.fail(f"{op_id} was acknowledged but is not stored")
        elif current.version != own.acked[-1]:
            if own.unknown_since_ack:
                explained += 1
            else:
                stored.fail(
                    f"{op_id} is at v{current.version}, but its owner's last acknowledged "
                    f"write was v{own.acked[-1]} and none of its later writes was unknown"
                )
    unacked = Counter(op.owner for op in ops if op.id not in ledger.ops)
    for party, n in unacked.items():
        if n > ledger.unknown_files[party]:
            stored.fail(
                f"party {party} owns {n} operations no client saw filed, but only "
                f"{ledger.unknown_files[party]} filings had an unknown outcome"
            )
    stored.note = (
        f"{len(ledger.acked)} writes; {sum(unacked.values())} operations from filings of unknown "
        f"outcome; {explained} operations moved on by a write of unknown outcome"
    )

    # (iii) every stored event was delivered; nothing delivered that is not stored.
    delivered = Check("(iii) events delivered")
    receiver = storm.receiver
    with receiver.lock:
        received = {p: dict(ids) for p, ids in receiver.received.items()}
    kinds: Counter[str] = Counter()
    have = set()
    for party, found in events.items():
        got = received.get(party, {})
        stored_ids = {e.id for e in found}
        for e in found:
            kinds[e.kind] += 1
            have.add((party, e.kind, _event_version(e.payload)))
            delivered.checked += 1
            digest = got.get(e.id)
            if digest is None:
                delivered.fail(f"event {party}:{e.id} ({e.kind}) was never delivered")
            elif digest != _digest(event_view(e)):
                delivered.fail(f"event {party}:{e.id} was delivered with other content")
        for extra in sorted(set(got) - stored_ids):
            delivered.fail(f"event {party}:{extra} was delivered but is not stored")
    for party in set(received) - set(events):
        delivered.fail(f"deliveries for unknown party {party}")
    missing_causes = [x for x in expected_events if x not in have]
    for party, kind, version in missing_causes[:20]:
        delivered.fail(f"no {kind} event for {party} about version {version}")
    if len(missing_causes) > 20:
        delivered.fail(f"... and {len(missing_causes) - 20} more events missing for their causes")
    if receiver.bad_signatures:
        delivered.fail(f"{receiver.bad_signatures} deliveries with a bad signature")
    for bad in receiver.bad_requests[:10]:
        delivered.fail(f"bad request at the receiver: {bad}")
    for dup in receiver.changed_duplicates[:10]:
        delivered.fail(f"event {dup} was delivered twice with different content")
    if not storm.drained:
        delivered.fail(f"delivery did not drain within {storm.cfg.drain_timeout_s:.0f} s")
    delivered.note = (
        f"{delivered.checked} events, {receiver.deliveries} deliveries, "
        f"{receiver.duplicates} duplicates (same id), {len(expected_events)} causes checked"
    )
    facts["events by kind"] = dict(sorted(kinds.items()))

    # (iv) the audit chain verifies with the shared key.
    audit = Check("(iv) audit chain verifies")
    key = load_or_create_signing_key(storm.key_path)
    result = AuditLog(store, key, time.time).verify()
    audit.checked = result.entries
    if not result.intact:
        audit.fail(f"broken: {result.broken}, bad seals {result.bad_seals}")
    audit.note = f"{result.entries} entries, {result.seals} seals"

    # (v) what the clients saw.
    clients = Check("(v) clients saw only clear answers")
    clients.checked = sum(ledger.statuses.values())
    for v in ledger.violations:
        clients.fail(v)
    clients.note = (
        f"{clients.checked} answers, {ledger.retry_after_503} x 503 with Retry-After, "
        f"{ledger.lost} lost / {ledger.not_sent} refused connections"
    )
    # The faults asked for happened.
    faults = Check("faults injected")
    cfg, f = storm.cfg, storm.faults
    if cfg.kill_after_s is not None:
        faults.checked += 1
        if f.killed_at is None:
            faults.fail("no service was killed")
    if cfg.restart_killed_after_s is not None:
        faults.checked += 1
        if f.restarted_killed_at is None:
            faults.fail("the killed service was not started again")
    if cfg.restart_pg_after_s is not None:
        faults.checked += 1
        if f.pg_restart_error is not None or f.pg_back_at is None:
            faults.fail(f"PostgreSQL was not restarted: {f.pg_restart_error}")
    faults.note = "kill -9 and restarts done as asked"
    checks = [key_live, history, stored, delivered, audit, clients, faults]
    return Report(checks, facts)


def _event_version(payload: dict[str, Any]) -> str | None:
    op = payload.get("operation")
    return op.get("version") if isinstance(op, dict) else None


def _replay(entries: Iterable[Any], subs: list[Any]) -> tuple[Check, list[tuple[str, str, str]]]:
    """Replay every operation write in audit (commit) order against the operations live then.

    Returns the check and the events those writes must have caused: (party, kind, version) for
    each conflicting owner ("conflict") and each subscriber whose area the write touched
    ("operation")."""
    history = Check("(i) key invariant, whole history")
    live: dict[str, tuple[str, str, list[Any]]] = {}
    known: set[str] = set()
    expected: list[tuple[str, str, str]] = []
    parsed: dict[str, list[Any]] = {}
    for e in entries:
        if not e.action.startswith("operation."):
            continue
        view, payload = e.payload["operation"], e.payload
        op_id, owner, version, state = view["id"], view["owner"], view["version"], view["state"]
        volumes = parsed.setdefault(version, parse_volumes(view["volumes"]))
        history.checked += 1
        if e.action == "operation.file":
            if op_id in known:
                history.fail(f"{op_id} filed twice (audit seq {e.seq})")
        else:
            current = live.get(op_id)
            if current is None or current[1] != payload["previous_version"]:
                history.fail(
                    f"{e.action} of {op_id} (seq {e.seq}) replaced v{payload['previous_version']}"
                    f" but the current version was {current[1] if current else 'none'}"
                )
        old = live.get(op_id)
        touched = list(volumes) + (list(old[2]) if old else [])
        if state != OperationState.ENDED.value:
            truth = {
                (other, theirs[1])
                for other, theirs in live.items()
                if theirs[0] != owner and rules.any_overlap(volumes, theirs[2])
            }
            recorded = {tuple(c) for c in payload["conflicts"]}
            if state in NEEDS_KEY:
                key = set(payload["key"])
                for other, theirs_version in sorted(truth):
                    if theirs_version not in key:
                        history.fail(
                            f"{e.action} of {op_id} v{version} (seq {e.seq}) conflicted with "
                            f"{other} v{theirs_version} without it in its key"
                        )
            if recorded != truth:
                history.fail(
                    f"{e.action} of {op_id} v{version} (seq {e.seq}) recorded conflicts "
                    f"{sorted(recorded)} but conflicted with {sorted(truth)}"
                )
            for other_owner in sorted({live[o][0] for o, _ in truth}):
                expected.append((other_owner, "conflict", version))
            live[op_id] = (owner, version, volumes)
        else:
            live.pop(op_id, None)
        known.add(op_id)
        for sub in subs:
            if sub.owner != owner and rules.any_overlap(touched, sub.volumes):
                expected.append((sub.owner, "operation", version))
    history.note = f"{history.checked} writes replayed in commit order"
    return history, expected


# Report --------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(storm: Storm, report: Report) -> str:
    cfg, ledger, faults = storm.cfg, storm.ledger, storm.faults
    lines = [
        f"storm: {cfg.processes} processes, {cfg.clients} clients, {cfg.parties} parties "
        f"({cfg.subscribers} subscribed), {storm.storm_s:.1f} s; drain {storm.drain_s:.1f} s",
    ]
    fault_bits = []
    if faults.killed is not None:
        fault_bits.append(f"kill -9 service {faults.killed} at {faults.killed_at:.1f} s")
    if faults.restarted_killed_at is not None:
        starts = storm.services[faults.killed or 0].starts - 1
        fault_bits.append(
            f"restarted it at {faults.restarted_killed_at:.1f} s"
            + (f" ({starts} starts)" if starts > 1 else "")
        )
    if faults.pg_restart_at is not None:
        down = f", down for {cfg.pg_down_s:g} s" if cfg.pg_down_s > 0 else ""
        back = f", back at {faults.pg_back_at:.1f} s" if faults.pg_back_at else ""
        err = f" FAILED: {faults.pg_restart_error}" if faults.pg_restart_error else ""
        fault_bits.append(f"PostgreSQL restart at {faults.pg_restart_at:.1f} s{down}{back}{err}")
    lines.append("faults: " + ("; ".join(fault_bits) or "none"))
    if ledger.first_503_at is not None:
        lines.append(f"503s seen from {ledger.first_503_at:.1f} s to {ledger.last_503_at:.1f} s")
    lines.append("")
    lines.append(f"{'request':<8} {'answers':>8}  statuses")
    for kind in EXPECTED:
        counts = {s: n for (k, s), n in ledger.statuses.items() if k == kind}
        detail = ", ".join(
            f"{n} x {s}" for s, n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))
        )
        lines.append(f"{kind:<8} {sum(counts.values()):>8}  {detail}")
    codes = ", ".join(f"{k} {c}: {n}" for (k, c), n in sorted(ledger.codes.items()))
    lines.append(f"refusals: {codes or 'none'}")
    acked = Counter(k for k, *_ in ledger.acked)
    lines.append(
        f"acknowledged: {acked['file']} filings, {acked['update']} updates, {acked['end']} ends "
        f"({sum(acked.values()) / max(storm.storm_s, 1e-9):.1f} writes/s); "
        f"stale first keys {ledger.stale_first}, refused {ledger.stale_refused}; "
        f"{ledger.missing_listed} versions listed missing"
    )
    lines.append(
        f"unknown outcomes: {sum(ledger.unknown_files.values())} filings, "
        f"{sum(ledger.unknown_writes.values())} updates/ends "
        f"({ledger.lost_writes} lost connections, the rest 503)"
    )
    for reason, n in ledger.unavailable.most_common(6):
        lines.append(f"  503 x {n}: {reason}")
    if ledger.gave_up:
        lines.append("gave up: " + ", ".join(f"{k}: {n}" for k, n in ledger.gave_up.items()))
    per = ", ".join(f"service {i}: {n}" for i, n in sorted(ledger.per_process.items()))
    lines.append(f"answers per process: {per}")
    lines.append(
        f"latency: median {_pct(ledger.latencies, 0.5) * 1e3:.0f} ms, "
        f"p99 {_pct(ledger.latencies, 0.99) * 1e3:.0f} ms"
    )
    timeline = " ".join(str(ledger.timeline.get(s, 0)) for s in range(math.ceil(storm.storm_s)))
    lines.append(f"acknowledged writes per second: {timeline}")
    for i, service in enumerate(storm.services):
        problems = ", ".join(f"{k} {v}" for k, v in service.log_problems().items())
        lines.append(f"service {i} log: {problems}")
    lines.append("")
    for name, value in report.facts.items():
        lines.append(f"{name:<28} {value}")
    lines.append("")
    lines.append(f"{'check':<36} {'checked':>8} {'violations':>10}  note")
    for c in report.checks:
        lines.append(f"{c.name:<36} {c.checked:>8} {len(c.violations):>10}  {c.note}")
    if report.violations:
        lines.append("")
        lines.append(f"VIOLATIONS ({len(report.violations)}):")
        lines.extend(f"  {v}" for v in report.violations[:40])
        if len(report.violations) > 40:
            lines.append(f"  ... and {len(report.violations) - 40} more")
    else:
        lines.append("")
        lines.append("all checks hold")
    return "\n".join(lines)


def _say(cfg: StormConfig, message: str) -> None:
    if not cfg.quiet:
        print(message, flush=True)


def run_storm(cfg: StormConfig) -> tuple[Storm, Report]:
    """Create the database, run the storm with its faults, drain, check; always clean up."""
    made_workdir = cfg.workdir is None
    workdir = cfg.workdir or Path(tempfile.mkdtemp(prefix="storm-"))
    workdir.mkdir(parents=True, exist_ok=True)
    name, url = create_database(cfg.admin_url)
    receiver = Receiver()
    receiver.start()
    storm: Storm | None = None
    try:
        _say(cfg, f"database {name}; work directory {workdir}")
        storm = setup(cfg, url, workdir, receiver)
        for service in storm.services:
            service.start()
        for service in storm.services:
            try:
                service.wait_ready()
            except RuntimeError:  # it exited: start it again until it stays up
                service.start_until_ready()
        ports = ", ".join(str(s.port) for s in storm.services)
        _say(cfg, f"{cfg.processes} services up (ports {ports}); storm for {cfg.duration_s:g} s")
        asyncio.run(_run_clients(storm))
        _say(cfg, f"storm over after {storm.storm_s:.1f} s; waiting for delivery to drain")
        drain(storm)
        for service in storm.services:
            service.stop()
        report = check(storm)
        report.text = summary(storm, report)
        (workdir / "summary.txt").write_text(report.text + "\n")
        return storm, report
    finally:
        if storm is not None:
            for service in storm.services:
                service.kill()
        receiver.stop()
        if not cfg.keep:
            drop_database(cfg.admin_url, name)
            if made_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        else:
            _say(cfg, f"kept database {name} ({url}) and {workdir}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--parties", type=int, default=16)
    p.add_argument("--subscribers", type=int, default=4)
    p.add_argument("--duration", type=float, default=20.0, help="Seconds of storm.")
    p.add_argument("--kill-after", type=float, help="kill -9 one service after S seconds.")
    p.add_argument(
        "--restart-killed",
        type=float,
        metavar="S",
        help="Start the killed service again S seconds after the kill.",
    )
    p.add_argument("--restart-pg-after", type=float, help="Restart PostgreSQL after S seconds.")
    p.add_argument(
        "--pg-down",
        type=float,
        default=0.0,
        metavar="S",
        help="Stop PostgreSQL, leave it down S seconds, start it (default: one restart).",
    )
    p.add_argument(
        "--pg-ctl",
        help="The command that controls PostgreSQL, without the action it appends (stop, start, "
        "restart); default: pg_ctlcluster --skip-systemctl-redirect VERSION main.",
    )
    p.add_argument("--stale", type=float, default=0.1, help="Share of stale first keys.")
    p.add_argument("--drain-timeout", type=float, default=90.0)
    p.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    p.add_argument("--keep", action="store_true", help="Keep the database and work directory.")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="Also write the summary and violations as JSON.")
    args = p.parse_args(argv)
    cfg = StormConfig(
        processes=args.processes,
        clients=args.clients,
        parties=args.parties,
        subscribers=args.subscribers,
        duration_s=args.duration,
        kill_after_s=args.kill_after,
        restart_killed_after_s=args.restart_killed,
        restart_pg_after_s=args.restart_pg_after,
        pg_down_s=args.pg_down,
        pg_ctl=shlex.split(args.pg_ctl) if args.pg_ctl else None,
        stale_fraction=args.stale,
        drain_timeout_s=args.drain_timeout,
        admin_url=args.admin_url,
        keep=args.keep,
        seed=args.seed,
    )
    try:
        _, report = run_storm(cfg)
    except Exception as exc:
        print(f"the storm could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print()
    print(report.text)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"summary": report.text, "violations": report.violations, "facts": report.facts},
                indent=2,
                default=str,
            )
        )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
