"""Bets per second of the wallet: the monolith over HTTP vs the storage adapter directly.

For SQLite and PostgreSQL, a closed loop of ``--concurrency`` clients places bets on
``--players`` funded players for ``--seconds``: once through the HTTP service (a real
``testbed serve`` process, raw HTTP/1.1 keep-alive clients) and once calling the storage
adapter's ``execute`` in-process. The ratio service/direct shows what the service layer
costs. Run: ``python benchmarks/bench_wallet.py [--seconds 10] [--pg-admin URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import orjson

from reference_impl.domain import Bet, Deposit
from reference_impl.storage import StorageSettings, open_storage


@dataclass
class Figures:
    """One measured case."""

    case: str
    ops: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.ops / self.seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _figures(case: str, latencies: list[float], seconds: float) -> Figures:
    arr = np.asarray(latencies) * 1000
    return Figures(case, len(latencies), seconds, float(np.percentile(arr, 50)),
                   float(np.percentile(arr, 99)))


async def _closed_loop(
    worker: object, concurrency: int, seconds: float,
) -> tuple[list[float], float]:
    """Run ``worker(i, deadline, latencies)`` coroutines; return latencies and elapsed."""
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(worker(i, deadline, latencies)  # type: ignore[operator]
                           for i in range(concurrency)))
    return latencies, time.perf_counter() - start


async def bench_direct(db: str, players: int, concurrency: int, seconds: float) -> Figures:
    """Bets through ``Storage.execute`` without HTTP."""
    storage = await open_storage(db, StorageSettings(pool_size=concurrency))
    try:
        for p in range(players):
            await storage.create_player(f"p{p}", "EUR", 0)
            await storage.execute(Deposit(f"d{p}", f"p{p}", 10**12), 1)
        ids = itertools.count()

        async def worker(i: int, deadline: float, lat: list[float]) -> None:
            while time.perf_counter() < deadline:
                n = next(ids)
                t0 = time.perf_counter()
                await storage.execute(Bet(f"b{n}", f"p{n % players}", f"r{n}", "g", 10),
                                      time.time_ns() // 1000)
                lat.append(time.perf_counter() - t0)
                if n % 64 == 0:
                    await asyncio.sleep(0)  # SQLite never yields: let the deadline be seen

        latencies, elapsed = await _closed_loop(worker, concurrency, seconds)
    finally:
        await storage.close()
    return _figures("direct", latencies, elapsed)


async def _http_conn_worker(
    port: int, players: int, ids: itertools.count[int], deadline: float, lat: list[float],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            n = next(ids)
            body = orjson.dumps({"transaction_id": f"b{n}", "player_id": f"p{n % players}",
                                 "round_id": f"r{n}", "game_id": "g", "amount": 10})
            t0 = time.perf_counter()
            writer.write(b"POST /wallet/bet HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"bet refused: {head[:40]!r} {payload[:200]!r}")
    finally:
        writer.close()


async def bench_http(db: str, players: int, concurrency: int, seconds: float) -> Figures:
    """Bets through a ``testbed serve`` monolith process."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed", "serve", "--db", db, "--port", str(port),
         "--pool-size", str(concurrency)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for _ in range(200):
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
            for p in range(players):
                await client.post("/players", json={"player_id": f"p{p}", "currency": "EUR"})
                await client.post(f"/players/p{p}/deposits",
                                  json={"transaction_id": f"d{p}", "amount": 10**12})
        ids = itertools.count()

        async def worker(i: int, deadline: float, lat: list[float]) -> None:
            await _http_conn_worker(port, players, ids, deadline, lat)

        latencies, elapsed = await _closed_loop(worker, concurrency, seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    return _figures("http", latencies, elapsed)


async def _pg_database(admin: str, create: bool, name: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        if create:
            await conn.execute(f"CREATE DATABASE {name}")
        else:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def run_backend(
    backend: str, args: argparse.Namespace,
) -> tuple[Figures, Figures]:
    """Direct and HTTP figures on fresh databases of ``backend``."""
    results = []
    for mode in ("direct", "http"):
        if backend == "sqlite":
            tmp = tempfile.mkdtemp(prefix="bench_wallet_")
            db = f"sqlite:///{Path(tmp) / 'wallet.db'}"
            name = None
        else:
            name = f"bench_{uuid.uuid4().hex[:10]}"
            await _pg_database(args.pg_admin, True, name)
            db = args.pg_admin.rsplit("/", 1)[0] + "/" + name
        try:
            bench = bench_direct if mode == "direct" else bench_http
            results.append(await bench(db, args.players, args.concurrency, args.seconds))
        finally:
            if name is not None:
                await _pg_database(args.pg_admin, False, name)
    return results[0], results[1]


def main() -> None:
    """Print bets/s, p50/p99 and the service/direct ratio per database."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--pg-admin", default=os.environ.get(
        "TESTBED_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    print(f"# bench_wallet: {args.seconds:g} s per case, {args.concurrency} clients, "
          f"{args.players} players, {os.cpu_count()} cores, {platform.python_version()}")
    print(f"{'database':<10} {'path':<7} {'bets/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for backend in args.backends.split(","):
        direct, http = asyncio.run(run_backend(backend, args))
        for f in (direct, http):
            print(f"{backend:<10} {f.case:<7} {f.rate:>9.0f} {f.p50_ms:>8.2f} {f.p99_ms:>8.2f}")
        print(f"{backend:<10} ratio service/direct = {http.rate / direct.rate:.2f}")


if __name__ == "__main__":
    main()
