"""Bets per second of the wallet: the monolith over HTTP vs the storage adapter directly.

For each database and hot-account shard count, a closed loop of ``--connections`` clients
places bets of 10 minor units, each on a new round, on ``--players`` funded players:

- **direct**: ``Storage.execute(Bet(...))`` in this process, with a pool of ``--connections``
  (PostgreSQL) or the group-committing single writer (SQLite);
- **http**: a real ``testbed serve`` monolith process (``--workers`` uvicorn workers, 1 by
  default, httptools + uvloop, the same pool), driven by ``--connections`` raw HTTP/1.1
  keep-alive connections from this process (its CPU per request is reported).

The ratio http/direct shows what the service layer costs. With ``--auth both`` (the default)
each case also runs the HTTP loop against a server that checks credentials, every bet signed
as a game provider (HMAC-SHA256 over the body, fresh timestamp and nonce): "http+auth" and
its ratio to "http" show what signing and checking cost. Every run gets a fresh database,
funded directly through the storage adapter before the clock starts; the first
``--warmup`` seconds of each run are not counted. Ratios are compared with
``benchmarks/baseline_wallet.json``; ``--check`` exits 1 when one drops by more than
``--tolerance`` (30%), ``--update-baseline`` rewrites the file.

    python benchmarks/bench_wallet.py                 # full: ~3 min
    python benchmarks/bench_wallet.py --quick --check # CI: ~1 min
    python benchmarks/bench_wallet.py --quick --jackpot-bp 100  # jackpot night: pool writes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
import psutil

from reference_impl.domain import Bet, Deposit, HotAccounts
from reference_impl.http.auth import Credentials, Signer
from reference_impl.storage import Storage, StorageSettings, open_storage

BASELINE = Path(__file__).with_name("baseline_wallet.json")
PG_ADMIN = os.environ.get("TESTBED_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
BET_AMOUNT = 10
Worker = Callable[[int, float, float, list[float]], Awaitable[None]]


@dataclass
class Run:
    """One measured closed loop."""

    bets: int
    seconds: float
    p50_ms: float
    p99_ms: float
    client_cpu: float  # cores used by this process (clients; plus the storage when direct)
    server_cpu: float = 0.0  # cores used by the server process (http only)

    @property
    def rate(self) -> float:
        """Bets per second."""
        return self.bets / self.seconds

    def cpu_us(self, cores: float) -> float:
        """CPU microseconds per bet of a process that used ``cores`` on average."""
        return cores / self.rate * 1e6


@dataclass
class Case:
    """Direct and HTTP runs of one database, shard count and connection count."""

    backend: str
    shards: int
    connections: int
    direct: Run
    http: Run
    workers: int = 1
    jackpot_bp: int = 0
    http_auth: Run | None = None  # the same HTTP loop, signed, against a server checking it

    @property
    def key(self) -> str:
        """Name of the case in the baseline file."""
        key = f"{self.backend}/shards={self.shards}/conn={self.connections}"
        if self.workers != 1:
            key += f"/workers={self.workers}"
        return key if not self.jackpot_bp else f"{key}/jackpot_bp={self.jackpot_bp}"

    @property
    def ratio(self) -> float:
        """Service (HTTP) throughput over direct throughput."""
        return self.http.rate / self.direct.rate

    @property
    def checked_ratio(self) -> float:
        """The ratio compared with the baseline: signed when measured (how it is served)."""
        return self.auth_ratio if self.auth_ratio is not None else self.ratio

    @property
    def auth_ratio(self) -> float | None:
        """Signed HTTP throughput over direct throughput (None if not measured)."""
        return None if self.http_auth is None else self.http_auth.rate / self.direct.rate


# --------------------------------------------------------------------------- databases


async def _pg_admin(sql: str, admin: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(backend: str, admin: str) -> AsyncIterator[str]:
    """A new empty database URL of ``backend``, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench_wallet_") as tmp:
            yield f"sqlite:///{Path(tmp) / 'wallet.db'}"
        return
    name = f"bench_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f"CREATE DATABASE {name}", admin)
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        await _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", admin)


def _settings(shards: int, connections: int) -> StorageSettings:
    return StorageSettings(hot=HotAccounts(shards, shards), pool_size=connections)


async def populate(url: str, players: int, shards: int) -> None:
    """Create ``players`` wallets p0..pN-1, each funded with 10^12 minor units."""
    storage = await open_storage(url, _settings(shards, 16))
    try:
        async def one(p: int) -> None:
            await storage.create_player(f"p{p}", "EUR", 0)
            await storage.execute(Deposit(f"d{p}", f"p{p}", 10**12), 1)

        for start in range(0, players, 64):
            await asyncio.gather(*(one(p) for p in range(start, min(players, start + 64))))
    finally:
        await storage.close()


# --------------------------------------------------------------------------- closed loop


async def closed_loop(
    worker: Worker, connections: int, warmup: float, seconds: float,
    server: _ServerTree | None = None,
) -> Run:
    """Run ``connections`` workers; count bets that start after the warm-up."""
    latencies: list[float] = []
    start = time.perf_counter()
    counted_from, deadline = start + warmup, start + warmup + seconds
    tasks = [asyncio.ensure_future(worker(i, counted_from, deadline, latencies))
             for i in range(connections)]
    await asyncio.sleep(max(0.0, counted_from - time.perf_counter()))
    cpu0 = time.process_time()
    server0 = server.cpu_seconds() if server is not None else 0.0
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - counted_from
    cpu = time.process_time() - cpu0
    server_cpu = (server.cpu_seconds() - server0) if server is not None else 0.0
    ms = np.asarray(latencies) * 1000
    return Run(len(latencies), elapsed, float(np.percentile(ms, 50)),
               float(np.percentile(ms, 99)), cpu / elapsed, server_cpu / elapsed)


class _ServerTree:
    """CPU of the server process and its worker processes."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self._seen: dict[int, psutil.Process] = {}

    def cpu_seconds(self) -> float:
        """User + system seconds so far (workers found at the first call are followed)."""
        if not self._seen:
            for proc in [self.root, *self.root.children(recursive=True)]:
                self._seen[proc.pid] = proc
        total = 0.0
        for proc in self._seen.values():
            with contextlib.suppress(psutil.Error):
                total += sum(proc.cpu_times()[:2])
        return total


def _player(n: int, players: int) -> str:
    return f"p{n % players}"


async def bench_direct(
    url: str, players: int, shards: int, connections: int, warmup: float, seconds: float,
    jackpot_bp: int = 0,
) -> Run:
    """Bets through ``Storage.execute`` in this process, without HTTP."""
    storage: Storage = await open_storage(url, _settings(shards, connections))
    ids = itertools.count()

    async def worker(i: int, counted_from: float, deadline: float, lat: list[float]) -> None:
        while (t0 := time.perf_counter()) < deadline:
            n = next(ids)
            await storage.execute(Bet(f"b{n}", _player(n, players), f"r{n}", "g", BET_AMOUNT,
                                      jackpot_bp=jackpot_bp), time.time_ns() // 1000)
            if t0 >= counted_from:
                lat.append(time.perf_counter() - t0)

    try:
        return await closed_loop(worker, connections, warmup, seconds)
    finally:
        await storage.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _http_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: bytes, path: bytes,
    body: bytes = b"", signer: Signer | None = None,
) -> tuple[bytes, bytes]:
    """One HTTP/1.1 keep-alive exchange; (status line and headers, body). With a ``signer``
    the request carries the contract's auth headers."""
    auth = b""
    if signer is not None:
        auth = "".join(f"{k}: {v}\r\n" for k, v in signer.headers(
            method.decode(), path.decode(), body).items()).encode()
    writer.write(method + b" " + path + b" HTTP/1.1\r\nHost: bench\r\n" + auth
                 + b"Content-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return head, await reader.readexactly(length)


async def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"testbed serve exited with {proc.returncode}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            head, _ = await _http_request(reader, writer, b"GET", b"/health")
            if head.startswith(b"HTTP/1.1 200"):
                return
        finally:
            writer.close()
        await asyncio.sleep(0.05)
    raise RuntimeError("testbed serve did not become healthy")


def write_credentials(folder: Path) -> Path:
    """A credentials file of fresh random secrets (a provider, an operator, a staff member)."""
    path = folder / "credentials.yaml"
    path.write_text(json.dumps({  # JSON is YAML
        "providers": [{"id": "bench", "secret": secrets.token_hex(32)}],
        "operators": [{"id": "platform", "token": secrets.token_hex(32)}],
        "staff": [{"id": "ops", "token": secrets.token_hex(32)}],
    }))
    return path


async def bench_http(
    url: str, players: int, shards: int, connections: int, warmup: float, seconds: float,
    workers: int = 1, jackpot_bp: int = 0, credentials: Path | None = None,
) -> Run:
    """Bets through a ``testbed serve`` monolith (``workers`` uvicorn processes), signed when
    the server is given ``credentials``."""
    port = _free_port()
    signer = Signer(Credentials.load(credentials)) if credentials is not None else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed", "serve", "--db", url, "--port", str(port),
         "--pool-size", str(connections), "--hot-account-shards", str(shards),
         "--workers", str(workers),
         *(["--credentials", str(credentials)] if credentials is not None else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    ids = itertools.count()

    async def worker(i: int, counted_from: float, deadline: float, lat: list[float]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (t0 := time.perf_counter()) < deadline:
                n = next(ids)
                body = orjson.dumps({"transaction_id": f"b{n}", "player_id": _player(n, players),
                                     "round_id": f"r{n}", "game_id": "g",
                                     "amount": BET_AMOUNT, "jackpot_bp": jackpot_bp})
                head, payload = await _http_request(reader, writer, b"POST", b"/wallet/bet", body,
                                                    signer)
                if t0 >= counted_from:
                    lat.append(time.perf_counter() - t0)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"bet refused: {head[:40]!r} {payload[:200]!r}")
        finally:
            writer.close()

    try:
        await _wait_healthy(port, proc)
        return await closed_loop(worker, connections, warmup, seconds, _ServerTree(proc.pid))
    except BaseException:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        sys.stderr.write(err.decode(errors="replace")[-2000:])
        raise
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=20)


async def run_case(
    backend: str, shards: int, connections: int, args: argparse.Namespace,
) -> Case:
    """Direct, HTTP (and signed HTTP), each on a fresh funded database."""
    modes = {"off": ["direct", "http"], "on": ["direct", "http+auth"],
             "both": ["direct", "http", "http+auth"]}[args.auth]
    runs: dict[str, Run] = {}
    with tempfile.TemporaryDirectory() as tmp:
        credentials = write_credentials(Path(tmp))
        for mode in modes:
            async with fresh_database(backend, args.pg_admin) as url:
                await populate(url, args.players, shards)
                if mode == "direct":
                    runs[mode] = await bench_direct(url, args.players, shards, connections,
                                                    args.warmup, args.seconds, args.jackpot_bp)
                else:
                    runs[mode] = await bench_http(
                        url, args.players, shards, connections, args.warmup, args.seconds,
                        args.workers, args.jackpot_bp,
                        credentials if mode == "http+auth" else None)
    return Case(backend, shards, connections, runs["direct"],
                runs.get("http") or runs["http+auth"], args.workers, args.jackpot_bp,
                runs.get("http+auth"))


# --------------------------------------------------------------------------- report


def table(cases: list[Case]) -> str:
    """The markdown table of the cases."""
    lines = [
        "| database | shards | conn | direct bets/s | p50 / p99 ms | http bets/s | "
        "p50 / p99 ms | http/direct | CPU us/bet: direct, server, client |",
        "|---|---:|---:|---:|---|---:|---|---:|---|",
    ]
    for c in cases:
        d, h = c.direct, c.http
        lines.append(
            f"| {c.backend} | {c.shards} | {c.connections} | {d.rate:,.0f} | "
            f"{d.p50_ms:.2f} / {d.p99_ms:.1f} | {h.rate:,.0f} | {h.p50_ms:.2f} / "
            f"{h.p99_ms:.1f} | **{c.ratio:.2f}** | {d.cpu_us(d.client_cpu):.0f}, "
            f"{h.cpu_us(h.server_cpu):.0f}, {h.cpu_us(h.client_cpu):.0f} |"
        )
    if any(c.http_auth is not None for c in cases):
        lines += ["", "| database | shards | http bets/s | http+auth bets/s | auth/http | "
                  "http+auth/direct | server CPU us/bet: http, http+auth |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for c in cases:
            a = c.http_auth
            if a is None:
                continue
            lines.append(
                f"| {c.backend} | {c.shards} | {c.http.rate:,.0f} | {a.rate:,.0f} | "
                f"**{a.rate / c.http.rate:.2f}** | {c.auth_ratio:.2f} | "
                f"{c.http.cpu_us(c.http.server_cpu):.0f}, {a.cpu_us(a.server_cpu):.0f} |")
    return "\n".join(lines)


def compare(cases: list[Case], baseline: dict[str, Any], tolerance: float) -> list[str]:
    """Print each ratio against the baseline; return the cases that regressed."""
    ratios: dict[str, float] = baseline.get("ratios", {})
    informational = set(baseline.get("informational", []))
    regressed = []
    for c in cases:
        base = ratios.get(c.key)
        if base is None:
            print(f"{c.key}: ratio {c.checked_ratio:.2f} (no baseline)")
            continue
        change = c.checked_ratio / base - 1
        flag = ""
        if change < -tolerance and c.key in informational:
            flag = "  (below, informational only)"
        elif change < -tolerance:
            flag = "  REGRESSION"
            regressed.append(c.key)
        print(f"{c.key}: ratio {c.checked_ratio:.2f} vs baseline {base:.2f} "
              f"({change:+.0%}){flag}")
    return regressed


def _run(coro: Coroutine[Any, Any, Case]) -> Case:
    """Run on uvloop when installed (the server uses it too)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a project dependency
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--quick`` sets short runs and fewer cases)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--shards", default=None,
                        help="comma-separated house/jackpot shard counts [1,8,32; quick: 1,32]")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--jackpot-bp", type=int, default=0,
                        help="share of every stake paid into the jackpot pool, basis points "
                             "(a jackpot night: every bet also writes the pool) [0]")
    parser.add_argument("--players", type=int, default=None, help="[10000; quick: 2000]")
    parser.add_argument("--seconds", type=float, default=None, help="[10; quick: 4]")
    parser.add_argument("--warmup", type=float, default=None, help="[2; quick: 1]")
    parser.add_argument("--auth", choices=["off", "on", "both"], default="both",
                        help="HTTP runs without credentials (off), with every bet signed "
                             "against a server checking it (on; its ratio is the one compared), "
                             "or both, reporting what auth costs [both]")
    parser.add_argument("--quick", action="store_true", help="~5 s per run, for CI")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a ratio dropped more than --tolerance")
    parser.add_argument("--tolerance", type=float, default=0.30)
    parser.add_argument("--update-baseline", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--pg-admin", default=PG_ADMIN)
    args = parser.parse_args(argv)
    quick = args.quick
    args.shards = args.shards or ("1,32" if quick else "1,8,32")
    args.players = args.players or (2_000 if quick else 10_000)
    args.seconds = args.seconds or (4.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure every case, print the table and the baseline comparison."""
    args = parse_args(argv)
    load = os.getloadavg()
    print(f"# bench_wallet: {args.seconds:g} s per run after {args.warmup:g} s warm-up, "
          f"{args.connections} connections, {args.players} players, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average before {load[0]:.1f}")
    cases = []
    for backend in args.backends.split(","):
        for shards in (int(s) for s in args.shards.split(",")):
            case = _run(run_case(backend, shards, args.connections, args))
            cases.append(case)
            signed = "" if case.http_auth is None else \
                f", http+auth {case.http_auth.rate:,.0f}/s (ratio {case.auth_ratio:.2f})"
            print(f"{case.key}: direct {case.direct.rate:,.0f}/s, http {case.http.rate:,.0f}/s, "
                  f"ratio {case.ratio:.2f}{signed}", flush=True)
    print(f"load average after {os.getloadavg()[0]:.1f}\n")
    print(table(cases) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(
            [{**asdict(c), "ratio": c.ratio, "auth_ratio": c.auth_ratio, "key": c.key}
             for c in cases], indent=2))
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    regressed = compare(cases, baseline, args.tolerance)
    if args.update_baseline:
        ratios = {**baseline.get("ratios", {}), **{c.key: round(c.checked_ratio, 3) for c in cases}}
        BASELINE.write_text(json.dumps({
            **baseline,
            "about": baseline.get("about", "http/direct bets-per-second ratios of "
                                  "benchmarks/bench_wallet.py"),
            "command": "python benchmarks/bench_wallet.py --update-baseline",
            "ratios": dict(sorted(ratios.items())),
        }, indent=2) + "\n")
        print(f"baseline written to {BASELINE}")
    if args.check and regressed:
        print(f"ratio regression beyond {args.tolerance:.0%}: {', '.join(regressed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
