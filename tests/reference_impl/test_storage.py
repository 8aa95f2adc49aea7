"""The same storage suite on SQLite and PostgreSQL, checked against the in-memory ledger."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_impl.domain import (
    Bet,
    Deposit,
    ErrorCode,
    HotAccounts,
    MemoryLedger,
    Rollback,
    WalletError,
    Win,
    Withdrawal,
)
from reference_impl.domain.commands import Command
from reference_impl.rules import Usage
from reference_impl.rules.decision import Decision, Outcome
from reference_impl.storage import Storage, StorageSettings, open_storage
from reference_impl.storage.sql_storage import SqlStorage
from reference_impl.storage.sqlite import SqliteStorage
from tests.reference_impl.conftest import _admin, _pg_url

Body = Callable[[Storage], Awaitable[None]]


def run(url: str, body: Body, settings: StorageSettings | None = None) -> None:
    async def main() -> None:
        storage = await open_storage(url, settings)
        try:
            await body(storage)
        finally:
            await storage.close()

    asyncio.run(main())


def _random_ops(rng: random.Random, n: int) -> list[Command]:
    players = ["p0", "p1", "p2"]
    ids = [f"t{i}" for i in range(n // 2)]
    ops: list[Command] = []
    for _ in range(n):
        pid, tid = rng.choice(players), rng.choice(ids)
        rnd = f"r{rng.randrange(6)}"
        kind = rng.choice(["deposit", "withdrawal", "bet", "bet", "bet", "win", "rollback"])
        if kind == "deposit":
            ops.append(Deposit(tid, pid, rng.randint(1, 500)))
        elif kind == "withdrawal":
            ops.append(Withdrawal(tid, pid, rng.randint(1, 300)))
        elif kind == "bet":
            ops.append(Bet(tid, pid, rnd, "g1", rng.randint(1, 200),
                           jackpot_bp=rng.choice([0, 0, 0, 250, 10_000])))
        elif kind == "win":
            ops.append(Win(tid, pid, rnd, rng.randint(0, 300)))
        else:
            ref = rng.choice([i for i in ids if i != tid])
            ops.append(Rollback(tid, pid, rnd, ref))
    return ops


@pytest.mark.parametrize(("concurrency", "shards"), [("pessimistic", 1), ("optimistic", 3)])
def test_storage_matches_the_in_memory_ledger(db_url: str, concurrency: str, shards: int) -> None:
    hot = HotAccounts(house_shards=shards)
    settings = StorageSettings(concurrency=concurrency, hot=hot)  # type: ignore[arg-type]
    model = MemoryLedger(hot)
    ops = _random_ops(random.Random(7), 160)

    async def body(storage: Storage) -> None:
        for pid in ("p0", "p1", "p2"):
            model.create_player(pid, "EUR")
            await storage.create_player(pid, "EUR", 0)
        for now, cmd in enumerate(ops, start=1):
            try:
                expected: object = model.apply(cmd, now)
            except WalletError as err:
                expected = err.code
            try:
                got: object = await storage.execute(cmd, now)
            except WalletError as err:
                got = err.code
            assert got == expected, cmd
        for pid in ("p0", "p1", "p2"):
            entries = await storage.transactions(pid, 1_000)
            assert entries[::-1] == [e for e in model.journal if e.stream == pid]
            assert (await storage.get_player(pid)).balance == model.players[pid].balance
        report = await storage.audit()
        assert report.ok, report.first_violation
        assert report.counts["entries"] == len(model.journal)

    run(db_url, body, settings)


def test_errors_change_nothing_and_players_are_unique(db_url: str) -> None:
    async def body(storage: Storage) -> None:
        first = await storage.create_player("a", "EUR", 0)
        with pytest.raises(WalletError) as err:
            await storage.create_player("a", "USD", 0)
        assert err.value.code is ErrorCode.PLAYER_EXISTS
        await storage.execute(Deposit("d", "a", 100), 1)
        assert await storage.create_player("a", "EUR", 5) == first  # a retry: first answer
        for cmd, code in [
            (Bet("b", "a", "r", "g", 101), ErrorCode.INSUFFICIENT_FUNDS),
            (Bet("b", "a", "r", "g", 5, currency="USD"), ErrorCode.CURRENCY_MISMATCH),
            (Deposit("d", "a", 99), ErrorCode.TRANSACTION_CONFLICT),
            (Bet("b", "zz", "r", "g", 5), ErrorCode.UNKNOWN_PLAYER),
            (Win("w", "a", "r", 5), ErrorCode.BET_NOT_FOUND),
        ]:
            with pytest.raises(WalletError) as err:
                await storage.execute(cmd, 2)
            assert err.value.code is code
        assert (await storage.get_player("a")).balance == 100
        assert len(await storage.transactions("a", 10)) == 1
        assert (await storage.audit()).ok

    run(db_url, body)


@pytest.mark.parametrize("concurrency", ["pessimistic", "optimistic"])
def test_a_rollback_naming_another_round_is_refused(db_url: str, concurrency: str) -> None:
    """Issue 12: the refund needs the bet's own round (every path: there is no rollback fast
    path, the planner decides on both databases)."""
    async def body(storage: Storage) -> None:
        await storage.create_player("a", "EUR", 0)
        await storage.execute(Deposit("d", "a", 100), 1)
        await storage.execute(Bet("b", "a", "r1", "g", 30), 2)
        with pytest.raises(WalletError) as err:
            await storage.execute(Rollback("rb", "a", "r2", "b"), 3)
        assert err.value.code is ErrorCode.BET_NOT_FOUND
        assert (await storage.get_player("a")).balance == 70
        assert (await storage.execute(Rollback("rb", "a", "r1", "b"), 4)).balance == 100

    run(db_url, body, StorageSettings(concurrency=concurrency))  # type: ignore[arg-type]


@pytest.mark.parametrize("concurrency", ["pessimistic", "optimistic"])
def test_concurrent_duplicates_collapse_and_drains_stop_at_zero(
    db_url: str, concurrency: str
) -> None:
    settings = StorageSettings(concurrency=concurrency, pool_size=8)  # type: ignore[arg-type]

    async def body(storage: Storage) -> None:
        await storage.create_player("a", "EUR", 0)
        await storage.execute(Deposit("d", "a", 1_000), 1)
        same = await asyncio.gather(
            *(storage.execute(Bet("dup", "a", "r", "g", 100), 2) for _ in range(12))
        )
        assert {r.balance for r in same} == {900}
        drains = await asyncio.gather(
            *(storage.execute(Bet(f"b{i}", "a", "r", "g", 100), 3) for i in range(20)),
            return_exceptions=True,
        )
        ok = [r for r in drains if not isinstance(r, BaseException)]
        refused = [r for r in drains if isinstance(r, WalletError)]
        assert len(ok) == 9 and len(refused) == 11
        assert all(r.code is ErrorCode.INSUFFICIENT_FUNDS for r in refused)
        assert (await storage.get_player("a")).balance == 0
        report = await storage.audit()
        assert report.ok and report.counts["entries"] == 11

    run(db_url, body, settings)


class _RecordingGate:
    """A gate that blocks bets above 50 and remembers the usage it was given."""

    def __init__(self) -> None:
        self.usages: list[Usage | None] = []

    def skip(self, kind: str, limits_json: str | None) -> bool:
        return limits_json is None

    def needs_usage(self, kind: str, limits_json: str | None) -> bool:
        return True

    def verdict(
        self, kind: str, limits_json: str | None, usage: Usage | None, amount: int,
        now_us: int,
    ) -> Decision:
        self.usages.append(usage)
        if kind == "bet" and amount > 50:
            return Decision(Outcome.BLOCK, "LIMIT_EXCEEDED", "too much", "test")
        outcome = Outcome.REVIEW if kind == "withdrawal" else Outcome.APPROVE
        return Decision(outcome, None, "", "test")


def test_gate_sees_exact_usage_and_blocks_before_money_moves(db_url: str) -> None:
    day, us = 86_400, 1_000_000
    gate = _RecordingGate()

    async def body(storage: Storage) -> None:
        await storage.create_player("a", "EUR", 0)
        await storage.update_limits("a", lambda old: '{"any": 1}')
        t0 = 40 * day * us
        await storage.execute(Deposit("d-old", "a", 1_000), t0 - 10 * day * us, gate)  # 7d..30d
        await storage.execute(Deposit("d1", "a", 300), t0 - 2 * day * us, gate)
        await storage.execute(Bet("b1", "a", "r1", "g", 40), t0 - 2 * day * us, gate)
        wd = await storage.execute(Withdrawal("w1", "a", 10), t0 - day * us - 5, gate)
        assert wd.status == "review"  # a held withdrawal is not "paid"
        await storage.execute(Bet("b2", "a", "r2", "g", 30), t0 - 3600 * us, gate)
        await storage.execute(Rollback("rb2", "a", "r2", "b2"), t0 - 3500 * us, gate)
        await storage.execute(Bet("b3", "a", "r3", "g", 20), t0 - 60 * us, gate)
        await storage.execute(Win("w3", "a", "r3", 45), t0 - 30 * us, gate)
        with pytest.raises(WalletError) as err:
            await storage.execute(Bet("big", "a", "r4", "g", 51), t0, gate)
        assert err.value.code is ErrorCode.LIMIT_EXCEEDED
        usage = gate.usages[-1]
        assert usage is not None
        assert usage.deposits == {"24h": 0, "7d": 300, "30d": 1_300}
        assert usage.stakes == {"24h": 20, "7d": 60, "30d": 60}
        assert usage.wins == {"24h": 45, "7d": 45, "30d": 45}
        assert usage.deposits_since_last_withdrawal == 1_300
        assert usage.stakes_since_last_withdrawal == 60
        assert usage.cash_movements_24h == 0
        assert (await storage.get_player("a")).balance == 1_300 - 40 - 10 - 20 + 45

    run(db_url, body)


def test_transactions_paging_limits_and_alerts(db_url: str) -> None:
    async def body(storage: Storage) -> None:
        await storage.create_player("a", "EUR", 0)
        for i in range(5):
            await storage.execute(Deposit(f"d{i}", "a", 10 + i), i + 1)
        page1 = await storage.transactions("a", 2)
        page2 = await storage.transactions("a", 2, before_seq=page1[-1].seq)
        assert [e.seq for e in page1 + page2] == [5, 4, 3, 2]
        with pytest.raises(WalletError):
            await storage.transactions("nobody", 2)
        assert await storage.update_limits("a", lambda old: (old or "") + "x") == "x"
        assert (await storage.get_player("a")).limits_json == "x"
        alert = {"player_id": "a", "rule_id": "r-v1", "reason_code": "RC", "severity": "low",
                 "outcome": "review", "ts": 1.5, "evidence": {"n": 5}, "rules_version": "1"}
        await storage.add_alerts([alert, {**alert, "player_id": "b"}])
        listed = await storage.list_alerts("a", 10)
        assert len(listed) == 1 and listed[0]["evidence"] == {"n": 5}
        assert len(await storage.list_alerts(None, 10)) == 2

    run(db_url, body)


# --------------------------------------------------------------------------- fast paths
# The one-round-trip PostgreSQL functions (wallet_bet, wallet_win) and the SQLite short
# paths inside a group commit must give exactly what the Python planner gives.

FAST_PLAYERS = ("f0", "f1", "f2", "f3", "f4", "f5")


def _fast_ops(rng: random.Random, n: int) -> list[Command]:
    """Mostly fresh bets and wins of their rounds, with the unusual cases mixed in."""
    ops: list[Command] = []
    rounds: dict[str, list[str]] = {p: [] for p in FAST_PLAYERS}
    used: list[str] = []
    for i in range(n):
        pid = rng.choice(FAST_PLAYERS)
        roll = rng.random()
        if ops and roll < 0.04:  # a provider retry: the same body again
            ops.append(rng.choice(ops))
            used.append(ops[-1].transaction_id)
            continue
        tid = rng.choice(used) if used and roll < 0.08 else f"x{i}"
        used.append(tid)
        if roll < 0.45 or not rounds[pid]:
            new_round = not rounds[pid] or rng.random() < 0.8
            rnd = f"{pid}r{i}" if new_round else rng.choice(rounds[pid])
            rounds[pid].append(rnd)
            currency = "USD" if rng.random() < 0.03 else rng.choice([None, "EUR"])
            ops.append(Bet(tid, pid, rnd, "g", rng.choice([1, 5, 20, 70, 400]), currency,
                           jackpot_bp=rng.choice([0, 0, 0, 1, 300, 10_000])))
        elif roll < 0.85:
            rnd = rng.choice(rounds[pid]) if rng.random() < 0.9 else "nowhere"
            currency = "USD" if rng.random() < 0.03 else rng.choice([None, "EUR"])
            ops.append(Win(tid, pid, rnd, rng.choice([0, 0, 3, 15, 60, 250]), currency))
        elif roll < 0.93:
            target = rng.choice(used[:-1]) if len(used) > 1 else "none"
            if target == tid:
                target = f"unknown{i}"
            ops.append(Rollback(tid, pid, rng.choice(rounds[pid]), target))
        else:
            ops.append(Deposit(tid, pid, rng.randint(50, 500)))
    return ops


async def _apply_both(
    storage: Storage, model: MemoryLedger, cmd: Command, now: int,
) -> tuple[object, object]:
    try:
        expected: object = model.apply(cmd, now)
    except WalletError as err:
        expected = err.code
    try:
        got: object = await storage.execute(cmd, now)
    except WalletError as err:
        got = err.code
    return got, expected


async def _same_state(storage: Storage, model: MemoryLedger) -> None:
    """Journal, balances, house sub-accounts and bet states equal the model's."""
    assert isinstance(storage, SqlStorage)
    for pid in FAST_PLAYERS:
        entries = await storage.transactions(pid, 10_000)
        assert entries[::-1] == [e for e in model.journal if e.stream == pid]
        assert (await storage.get_player(pid)).balance == model.players[pid].balance
    async with storage.transaction(write=False) as conn:
        accounts = {r["account_id"]: r["balance"]
                    for r in await conn.fetch("SELECT account_id, balance FROM accounts")}
        states = {r["transaction_id"]: r["state"]
                  for r in await conn.fetch("SELECT transaction_id, state FROM txs")}
    assert {k: v for k, v in accounts.items() if v} == {
        k: v for k, v in model.system.items() if v}
    assert states == {k: (None if r.state is None else r.state.value)
                      for k, r in model.records.items()}
    report = await storage.audit()
    assert report.ok, report.first_violation


@pytest.mark.parametrize("shards", [1, 4])
def test_fast_bets_and_wins_match_the_python_planner(db_url: str, shards: int) -> None:
    hot = HotAccounts(house_shards=shards, jackpot_shards=max(1, shards - 1))
    model = MemoryLedger(hot)
    ops = _fast_ops(random.Random(11 + shards), 400)

    async def body(storage: Storage) -> None:
        for pid in FAST_PLAYERS:
            model.create_player(pid, "EUR")
            await storage.create_player(pid, "EUR", 0)
            for cmd in (Deposit(f"seed-{pid}", pid, 600),):
                got, expected = await _apply_both(storage, model, cmd, 1)
                assert got == expected
        for now, cmd in enumerate(ops, start=2):
            got, expected = await _apply_both(storage, model, cmd, now)
            assert got == expected, cmd
        await _same_state(storage, model)
        tx = storage.metrics.tx_seconds
        assert tx.count("bet", "fast") > 50 and tx.count("win", "fast") > 30
        assert tx.count("bet", "general") > 0 and tx.count("win", "general") > 0

    run(db_url, body, StorageSettings(hot=hot))


def _fresh_db(backend: str, tmp: Path, n: int) -> tuple[str, Callable[[], None]]:
    """A new database per hypothesis example: its URL and how to drop it."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / f'h{n}-{uuid.uuid4().hex[:8]}.db'}", lambda: None
    name = f"testbed_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f"CREATE DATABASE {name}"))
    drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    return _pg_url(name), lambda: asyncio.run(_admin(drop))


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), shards=st.sampled_from([1, 3]))
def test_each_fast_path_produces_exactly_what_the_planner_produces(
    backend: str, tmp_path: Path, seed: int, shards: int,
) -> None:
    """The invariant of ARCHITECTURE.md: the one-call bets and wins (plpgsql, SQLite short
    paths) write the journal, balances, sub-accounts and bet states the planner plans."""
    hot = HotAccounts(house_shards=shards, jackpot_shards=shards)
    model = MemoryLedger(hot)
    ops = _fast_ops(random.Random(seed), 60)
    url, drop = _fresh_db(backend, tmp_path, seed)

    async def body(storage: Storage) -> None:
        for pid in FAST_PLAYERS:
            model.create_player(pid, "EUR")
            await storage.create_player(pid, "EUR", 0)
            got, expected = await _apply_both(storage, model, Deposit(f"s-{pid}", pid, 600), 1)
            assert got == expected
        for now, cmd in enumerate(ops, start=2):
            got, expected = await _apply_both(storage, model, cmd, now)
            assert got == expected, cmd
        await _same_state(storage, model)

    try:
        run(url, body, StorageSettings(hot=hot))
    finally:
        drop()


def test_concurrent_commands_commit_together_and_fail_alone(db_url: str) -> None:
    """Groups of concurrent commands (one per player, so their order cannot matter), each
    group mixing successes and refusals: SQLite commits a group in one transaction with a
    savepoint per command, PostgreSQL runs them on parallel connections."""
    model = MemoryLedger()
    rng = random.Random(5)
    ops = _fast_ops(rng, 900)
    per_player: dict[str, list[Command]] = {p: [] for p in FAST_PLAYERS}
    for i, cmd in enumerate(ops):
        if cmd.transaction_id != f"x{i}":
            continue  # ids shared between players would make the group order matter
        per_player[cmd.player_id].append(cmd)
    groups = [
        [per_player[p][i] for p in FAST_PLAYERS if i < len(per_player[p])]
        for i in range(max(len(v) for v in per_player.values()))
    ]

    async def body(storage: Storage) -> None:
        for pid in FAST_PLAYERS:
            model.create_player(pid, "EUR")
            await storage.create_player(pid, "EUR", 0)
            model.apply(Deposit(f"seed-{pid}", pid, 600), 1)
            await storage.execute(Deposit(f"seed-{pid}", pid, 600), 1)
        refused = 0
        for now, group in enumerate(groups, start=2):
            got = await asyncio.gather(*(storage.execute(c, now) for c in group),
                                       return_exceptions=True)
            for cmd, answer in zip(group, got, strict=True):
                try:
                    expected: object = model.apply(cmd, now)
                except WalletError as err:
                    expected = err.code
                if isinstance(answer, WalletError):
                    answer, refused = answer.code, refused + 1
                assert answer == expected, cmd
        assert refused > 10
        await _same_state(storage, model)

    run(db_url, body, StorageSettings(pool_size=8))


def test_sqlite_group_commit_and_background_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "wallet.db"

    async def body(storage: Storage) -> None:
        assert isinstance(storage, SqliteStorage) and storage.checkpointer is not None
        await storage.create_player("a", "EUR", 0)
        await storage.execute(Deposit("d", "a", 10**6), 1)
        before = storage.group_commits
        answers = await asyncio.gather(
            *(storage.execute(Bet(f"b{i}", "a", f"r{i}", "g", 10), 2) for i in range(64))
        )
        assert sorted(a.balance for a in answers) == list(range(10**6 - 640, 10**6, 10))
        assert 1 <= storage.group_commits - before < 8  # 64 bets, a few transactions
        for i in range(150):
            await storage.execute(Bet(f"s{i}", "a", f"s{i}", "g", 1), 3)
        writer = storage._db
        assert writer is not None
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        probe = sqlite3.connect(path)
        try:
            for _ in range(100):  # the thread checkpoints within its interval
                if storage.checkpointer.passes:
                    break
                await asyncio.sleep(0.05)
            assert storage.checkpointer.passes >= 1
            storage.checkpointer.checkpoint(probe, restart=True)
            await storage.execute(Bet("last", "a", "last", "g", 1), 4)
            _, frames, _ = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            assert 0 < frames < 20  # the log restarted from its beginning
        finally:
            probe.close()
        checkpointer = storage.checkpointer
        await storage.close()
        assert storage.checkpointer is None and not checkpointer._thread.is_alive()
        assert len(await _reopen_entries(path)) == 1 + 64 + 150 + 1

    run(f"sqlite:///{path}", body)


def test_sqlite_writers_wait_for_a_restart_checkpoint_off_the_event_loop(tmp_path: Path) -> None:
    """A RESTART checkpoint blocks every writer; the event loop must not sleep in SQLite's
    busy handler meanwhile (it answered nobody for 5-90 ms, 3.3 times a second at 2,500
    requests/s): reads are answered, money commands queue and commit once it ends."""
    path = tmp_path / "wallet.db"
    hold_s = 0.3

    async def body(storage: Storage) -> None:
        assert isinstance(storage, SqliteStorage) and storage.checkpointer is not None
        await storage.create_player("a", "EUR", 0)
        await storage.execute(Deposit("d", "a", 10**6), 1)
        holding, held = asyncio.Event(), threading.Event()
        loop = asyncio.get_running_loop()

        def restart_in_progress() -> None:  # what the checkpointer's RESTART does
            probe = sqlite3.connect(path, isolation_level=None)
            try:
                with storage.checkpointer.gate:
                    probe.execute("BEGIN IMMEDIATE")  # SQLite's write lock, as a RESTART
                    loop.call_soon_threadsafe(holding.set)
                    time.sleep(hold_s)
                    probe.execute("COMMIT")
            finally:
                probe.close()
                held.set()

        thread = threading.Thread(target=restart_in_progress)
        thread.start()
        await asyncio.wait_for(holding.wait(), 10)
        started = time.perf_counter()
        bets = [asyncio.ensure_future(storage.execute(Bet(f"b{i}", "a", f"r{i}", "g", 10), 2))
                for i in range(20)]
        gaps, reads, last = [], 0, time.perf_counter()
        while not held.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            if not all(b.done() for b in bets):
                await storage.get_player("a")
                reads += 1
        answers = await asyncio.gather(*bets)
        thread.join()
        assert time.perf_counter() - started >= hold_s * 0.5  # the bets did wait for it
        assert max(gaps) < 0.1, f"the event loop stalled {max(gaps) * 1000:.0f} ms"
        assert reads >= 10  # reads answered while the writers waited
        assert sorted(a.balance for a in answers) == list(range(10**6 - 200, 10**6, 10))

    run(f"sqlite:///{path}", body)


def test_sqlite_checkpointer_restarts_the_log_only_past_its_bound(tmp_path: Path) -> None:
    """PASSIVE every pass; the RESTART, which blocks writers, only once the log holds
    ``restart_frames`` frames (or when asked)."""
    path = tmp_path / "wallet.db"

    async def body(storage: Storage) -> None:
        assert isinstance(storage, SqliteStorage) and storage.checkpointer is not None
        ckpt = storage.checkpointer
        await storage.create_player("a", "EUR", 0)
        await storage.execute(Deposit("d", "a", 10**6), 1)
        probe = sqlite3.connect(path, isolation_level=None)
        try:
            for bound, expect in ((10**6, 0), (0, 1)):
                ckpt.restart_frames = bound
                before = ckpt.restarts
                for i in range(20):
                    await storage.execute(Bet(f"x{bound}-{i}", "a", f"x{bound}-{i}", "g", 1), 3)
                ckpt.checkpoint(probe)
                assert ckpt.restarts - before == expect, bound
            before = ckpt.restarts
            ckpt.restart_frames = 10**6
            await storage.execute(Bet("forced", "a", "forced", "g", 1), 4)
            ckpt.checkpoint(probe, restart=True)
            assert ckpt.restarts == before + 1
        finally:
            probe.close()

    run(f"sqlite:///{path}", body)


async def _reopen_entries(path: Path) -> list[object]:
    storage = await open_storage(f"sqlite:///{path}")
    try:
        assert (await storage.audit()).ok
        return list(await storage.transactions("a", 1_000))
    finally:
        await storage.close()
