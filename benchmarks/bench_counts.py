"""Deterministic cost counts per money operation, compared with a stored baseline.

Times move with the machine's load; these counts do not. For each database (SQLite, and
PostgreSQL when it answers), each concurrency mode and each money operation, the monolith's
wallet (the real storage adapter, rules gate and in-process event bus, as ``testbed serve``
wires them) executes the operation ``--repeat`` times on fresh players, one at a time, and
this script reads the storage layer's counters (``db_statements_total`` and
``db_round_trips_total``, see ``reference_impl/storage/counting.py``) and the events handed to
the bus. Each event is one broker message (one XADD on Redis, one publish on NATS) when the
services run apart, so ``messages`` is the broker messages per operation.

Every repetition must cost the same (else the script fails: a count that varies cannot guard
anything). ``--check`` exits 1 when any count rises above ``benchmarks/baseline_counts.json``
(a fall is reported, to be recorded with ``--update-baseline``).

    python benchmarks/bench_counts.py                   # print the table
    python benchmarks/bench_counts.py --check           # CI: fail when a count rose
    python benchmarks/bench_counts.py --update-baseline # record the current counts
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from baseline_file import report_check, write_baseline
from scratch_pg import with_pg_database

from reference_impl.domain import Bet, Deposit, Rollback, Win, Withdrawal
from reference_impl.domain.commands import Command
from reference_impl.metrics import Registry
from reference_impl.rules import LimitsRequest, MoneyEvent
from reference_impl.services.backoffice import BackOffice, BackOfficeConfig, build_backoffice
from reference_impl.services.events import InProcessEventBus

BASELINE = Path(__file__).with_name("baseline_counts.json")
FIELDS = ("statements", "round_trips", "messages")
DEFAULT_REPEAT = 3
LIMITS = LimitsRequest(deposit={"24h": 1_000_000})
"""Limits of the ``bet_limited`` player: any limit sends its bets through the rules."""

Counts = dict[str, dict[str, int]]
Setup = Callable[[str, int], tuple[list[Command], Command]]


def _ops() -> dict[str, Setup]:
    """Operation name -> (player, i) -> (commands run first, the command measured)."""

    def bet(p: str, i: int) -> tuple[list[Command], Command]:
        return [Deposit(f"{p}-d", p, 10_000)], Bet(f"{p}-b", p, f"{p}-r", "g", 100)

    def win(p: str, i: int) -> tuple[list[Command], Command]:
        return [Deposit(f"{p}-d", p, 10_000), Bet(f"{p}-b", p, f"{p}-r", "g", 100)], Win(
            f"{p}-w", p, f"{p}-r", 250)

    def rollback(p: str, i: int) -> tuple[list[Command], Command]:
        return [Deposit(f"{p}-d", p, 10_000), Bet(f"{p}-b", p, f"{p}-r", "g", 100)], Rollback(
            f"{p}-x", p, f"{p}-r", f"{p}-b")

    def deposit(p: str, i: int) -> tuple[list[Command], Command]:
        return [], Deposit(f"{p}-d", p, 5_000)

    def withdrawal(p: str, i: int) -> tuple[list[Command], Command]:
        return [Deposit(f"{p}-d", p, 10_000)], Withdrawal(f"{p}-o", p, 3_000)

    def replay(p: str, i: int) -> tuple[list[Command], Command]:
        first = Bet(f"{p}-b", p, f"{p}-r", "g", 100)
        return [Deposit(f"{p}-d", p, 10_000), first], first

    return {"bet": bet, "bet_limited": bet, "win": win, "rollback": rollback,
            "deposit": deposit, "withdrawal": withdrawal, "bet_replay": replay}


def _totals(metrics: Registry) -> tuple[float, float]:
    return (metrics.db_statements.total(),
            metrics.db_round_trips.total())


async def _measure(db_url: str, concurrency: str, repeat: int) -> Counts:
    metrics = Registry()
    office: BackOffice = await build_backoffice(
        BackOfficeConfig(db=db_url, concurrency=concurrency), metrics)
    bus = office.bus
    assert isinstance(bus, InProcessEventBus)
    events: list[MoneyEvent] = []

    async def seen(event: MoneyEvent) -> None:
        events.append(event)

    bus.subscribe("counter", seen)
    counts: Counts = {}
    try:
        for name, setup in _ops().items():
            per_run: list[dict[str, int]] = []
            for i in range(repeat):
                player = f"{name}-{i}"
                await office.players.create(player, "EUR")
                if name == "bet_limited":
                    await office.players.set_limits(player, LIMITS)
                before, measured = setup(player, i)
                for cmd in before:
                    await office.wallet.execute(cmd)
                await bus.drain()
                statements, trips, published = *_totals(metrics), len(events)
                await office.wallet.execute(measured)
                await bus.drain()
                after = _totals(metrics)
                per_run.append({"statements": int(after[0] - statements),
                                "round_trips": int(after[1] - trips),
                                "messages": len(events) - published})
            if any(run != per_run[0] for run in per_run):
                raise SystemExit(f"{name} on {db_url.split(':')[0]}/{concurrency}: the counts "
                                 f"vary between repetitions {per_run}; they cannot guard")
            counts[name] = per_run[0]
    finally:
        await office.stop()
    return counts


def measure(databases: tuple[str, ...] = ("sqlite", "postgres"),
            modes: tuple[str, ...] = ("pessimistic", "optimistic"),
            repeat: int = DEFAULT_REPEAT) -> Counts:
    """``{"db/mode/operation": {statements, round_trips, messages}}``."""
    table: Counts = {}
    for db in databases:
        for mode in modes:
            if db == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    got = asyncio.run(_measure(f"sqlite:///{tmp}/wallet.db", mode, repeat))
            else:
                got = asyncio.run(with_pg_database(
                    "bench_counts", lambda url, m=mode: _measure(url, m, repeat)))
            for op, row in got.items():  # type: ignore[union-attr]
                table[f"{db}/{mode}/{op}"] = row
    return table


def compare(current: Counts, baseline: Counts) -> tuple[list[str], list[str]]:
    """(rises, falls) of ``current`` against ``baseline``, one line each; a case missing
    from the baseline is a rise (it must be recorded)."""
    rises, falls = [], []
    for case, row in sorted(current.items()):
        base = baseline.get(case)
        if base is None:
            rises.append(f"{case}: not in the baseline (run --update-baseline)")
            continue
        for f in FIELDS:
            if row[f] > base[f]:
                rises.append(f"{case}: {f} {base[f]} -> {row[f]}")
            elif row[f] < base[f]:
                falls.append(f"{case}: {f} {base[f]} -> {row[f]}")
    return rises, falls


def load_baseline(path: Path = BASELINE) -> Counts:
    """The stored counts."""
    counts: Counts = json.loads(path.read_text())["counts"]
    return counts


def table(counts: Counts) -> str:
    """Markdown table of the counts."""
    lines = ["| database/mode/operation | statements | round trips | broker messages |",
             "|---|---:|---:|---:|"]
    for case, row in sorted(counts.items()):
        trips = row["round_trips"] if case.startswith("postgres") else "-"
        lines.append(f"| {case} | {row['statements']} | {trips} | {row['messages']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both",
                        help="databases to count on (default both; postgres needs "
                             "TESTBED_PG_ADMIN or a server at 127.0.0.1:5432)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"repetitions per operation, which must agree "
                             f"(default {DEFAULT_REPEAT})")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true",
                       help="exit 1 when a count rose above the baseline")
    group.add_argument("--update-baseline", action="store_true",
                       help=f"write the counts to {BASELINE.name}")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    dbs = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    counts = measure(dbs, repeat=args.repeat)
    print(table(counts))
    if args.update_baseline:
        if args.db != "both":
            parser.error("--update-baseline records both databases: drop --db")
        write_baseline(
            BASELINE,
            "SQL statements, database round trips (PostgreSQL) and broker messages per money "
            "operation, from benchmarks/bench_counts.py; CI fails when one rises",
            "python benchmarks/bench_counts.py --update-baseline", "counts", counts)
        return 0
    if args.check:
        return report_check(*compare(counts, load_baseline()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
