"""Cost of the ledger audit against the journal's length, and what bets feel while it runs.

For each database and each journal size (``--sizes``, entries), a ledger is generated with
the in-memory reference ledger (``--players`` players, the same number at every size, each
with a deposit then bets) and bulk-loaded, then:

1. **full**: ``audit(full=True)``, every chain from genesis (``testbed ledger verify --full``);
   it also saves the checkpoint;
2. **incremental**: ``--new`` more bets go through the real wallet path, then ``audit()``
   (what ``GET /audit/verify`` runs): only the new entries are hashed;
3. **bets during audits**: a closed loop of single bets runs alone, then while
   incremental audits run back to back (each checking the bets placed since the previous
   one: what a monitor polling ``GET /audit/verify`` causes), then while full audits run back
   to back (the offline check); the report gives the bets' count, p50 and max latency.

Reported per audit: CPU seconds of this process (``time.process_time``: the auditor's own
work, less sensitive to the other jobs on a shared machine than wall time), wall seconds and
the peak of the resident set above its level before the audit (sampled every 5 ms).

    python benchmarks/bench_audit.py                        # both databases, 20k and 200k
    python benchmarks/bench_audit.py --db sqlite --sizes 20000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psutil
from scratch_pg import with_pg_database

from reference_impl.domain import Bet, Deposit, MemoryLedger
from reference_impl.domain.accounts import AccountRef
from reference_impl.storage import Storage, StorageSettings, open_storage

JOURNAL_COLUMNS = ("stream", "seq", "transaction_id", "kind", "debit_account",
                   "credit_account", "amount", "currency", "round_id", "ts_us", "hash")


@dataclass
class Cost:
    """One measured audit."""

    cpu_s: float
    wall_s: float
    peak_rss_mb: float
    checked: int
    entries: int


def generate(entries: int, n_players: int) -> MemoryLedger:
    """A ledger of ``entries`` journal entries over ``n_players`` players: a deposit each,
    then bets."""
    ledger = MemoryLedger()
    per_player = max(2, entries // n_players)
    now = 1
    for p in range(n_players):
        pid = f"p{p}"
        ledger.create_player(pid, "EUR")
        ledger.apply(Deposit(f"{pid}-d", pid, 10 * per_player), now)
        for i in range(per_player - 1):
            now += 1
            ledger.apply(Bet(f"{pid}-b{i}", pid, f"{pid}-r{i}", "g", 1), now)
    return ledger


async def bulk_load(storage: Storage, ledger: MemoryLedger) -> None:
    """Write the ledger's journal, players and accounts straight into the tables."""
    rows = [tuple(getattr(e, c) for c in JOURNAL_COLUMNS) for e in ledger.journal]
    players = [(p.player_id, p.currency, p.balance, p.seq, p.last_hash, 0, None, False, 0)
               for p in ledger.players.values()]
    accounts = [(a, AccountRef.parse(a).kind.value, AccountRef.parse(a).currency, b, 1)
                for a, b in ledger.system.items()]
    async with storage.transaction(write=True) as conn:  # type: ignore[attr-defined]
        await conn.executemany(
            "INSERT INTO players (player_id, currency, balance, seq, last_hash, version, "
            "limits, identity_verified, created_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            players)
        await conn.executemany(
            "INSERT INTO accounts (account_id, kind, currency, balance, version) "
            "VALUES ($1, $2, $3, $4, $5)", accounts)
        await conn.executemany(
            f"INSERT INTO journal ({', '.join(JOURNAL_COLUMNS)}) VALUES "
            f"({', '.join(f'${i + 1}' for i in range(len(JOURNAL_COLUMNS)))})", rows)


async def measured(audit: Callable[[], Awaitable[Any]]) -> Cost:
    """CPU, wall and peak RSS growth of one audit."""
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu, wall = time.process_time(), time.perf_counter()
    report = await audit()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done.set()
    sampler.join()
    assert report.ok, report.first_violation
    return Cost(cpu, wall, (peak[0] - base) / 2**20, report.counts["checked"],
                report.counts["entries"])


async def bet_latencies(storage: Storage, seconds: float, tag: str,
                        during: Callable[[], Awaitable[Any]] | None) -> list[float]:
    """Latencies (ms) of a closed loop of bets by one player, optionally while ``during``
    runs back to back."""
    stop = asyncio.Event()

    async def background() -> None:
        while not stop.is_set():
            await during()  # type: ignore[misc]

    task = asyncio.create_task(background()) if during is not None else None
    await asyncio.sleep(0)
    latencies: list[float] = []
    end, i = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        started = time.perf_counter()
        await storage.execute(Bet(f"{tag}-{i}", "p0", f"{tag}-r{i}", "g", 1), 10**12 + i)
        latencies.append((time.perf_counter() - started) * 1000)
        i += 1
    stop.set()
    if task is not None:
        await task
    return latencies


async def run_case(url: str, size: int, players: int, new: int,
                   seconds: float) -> dict[str, Any]:
    ledger = generate(size, players)
    n_players = len(ledger.players)
    storage = await open_storage(url, StorageSettings(pool_size=4))
    try:
        await bulk_load(storage, ledger)
        # Drop the generator's million objects: left alive, every full garbage collection
        # walks them (a second-long pause of this process, charged to whatever runs then).
        del ledger
        gc.collect()
        full = await measured(lambda: storage.audit(full=True))
        for i in range(new):
            await storage.execute(Bet(f"new-{i}", f"p{i % n_players}", f"nr{i}", "g",
                                      1), 10**11 + i)
        step = await measured(storage.audit)
        await storage.execute(Deposit("bench-fund", "p0", 10**12), 10**12 - 1)
        idle = await bet_latencies(storage, seconds, "idle", None)
        busy = await bet_latencies(storage, seconds, "busy", storage.audit)
        offline = await bet_latencies(storage, seconds, "full",
                                      lambda: storage.audit(full=True))
    finally:
        await storage.close()

    def p(xs: list[float], q: float) -> float:
        return statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else xs[0]

    return {"size": size, "full": full, "incremental": step,
            "bets_idle": (len(idle), p(idle, 50), max(idle)),
            "bets_during_audits": (len(busy), p(busy, 50), max(busy)),
            "bets_during_full_audits": (len(offline), p(offline, 50), max(offline))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--sizes", default="20000,200000",
                        help="journal sizes in entries, comma-separated (default 20000,200000)")
    parser.add_argument("--players", type=int, default=2000,
                        help="players of the generated ledger, at every size (default 2000)")
    parser.add_argument("--new", type=int, default=1000,
                        help="bets placed between the full and the incremental audit "
                             "(default 1000)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="length of each closed loop of bets (default 3)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be integers separated by commas, got {args.sizes!r}")
    if any(s < 2 * args.players for s in sizes) or args.players < 1 or args.new < 1:
        parser.error("--players and --new must be >= 1, each of --sizes >= 2 x --players")
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")
    dbs = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    print("| db | journal entries | audit | entries checked | CPU s | wall s | "
          "peak RSS growth MB |")
    print("|---|---:|---|---:|---:|---:|---:|")
    bets: list[str] = []
    for db in dbs:
        for size in sizes:
            def case(url: str, size: int = size) -> Awaitable[dict[str, Any]]:
                return run_case(url, size, args.players, args.new, args.seconds)

            if db == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    out = asyncio.run(case(f"sqlite:///{tmp}/wallet.db"))
            else:
                out = asyncio.run(with_pg_database("bench_audit", case))
            for name in ("full", "incremental"):
                c: Cost = out[name]
                print(f"| {db} | {c.entries:,} | {name} | {c.checked:,} | {c.cpu_s:.3f} | "
                      f"{c.wall_s:.3f} | {c.peak_rss_mb:.1f} |", flush=True)
            for name in ("bets_idle", "bets_during_audits", "bets_during_full_audits"):
                n, p50, worst = out[name]
                bets.append(f"| {db} | {size:,} | {name.replace('_', ' ')} | {n} | "
                            f"{p50:.2f} | {worst:.1f} |")
    print("\n| db | journal entries | bets | count | p50 ms | max ms |")
    print("|---|---:|---|---:|---:|---:|")
    print("\n".join(bets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
