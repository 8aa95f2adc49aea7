"""The same storage suite on SQLite and PostgreSQL, checked against the in-memory ledger."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

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
from reference_impl.domain.planning import Verdict
from reference_impl.storage import Storage, StorageSettings, UsageTotals, open_storage

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
            ops.append(Bet(tid, pid, rnd, "g1", rng.randint(1, 200)))
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
        await storage.create_player("a", "EUR", 0)
        with pytest.raises(WalletError) as err:
            await storage.create_player("a", "USD", 0)
        assert err.value.code is ErrorCode.PLAYER_EXISTS
        await storage.execute(Deposit("d", "a", 100), 1)
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
        self.usages: list[UsageTotals | None] = []

    def skip(self, kind: str, limits_json: str | None) -> bool:
        return limits_json is None

    def needs_usage(self, kind: str, limits_json: str | None) -> bool:
        return True

    def verdict(
        self, kind: str, limits_json: str | None, usage: UsageTotals | None, amount: int,
        now_us: int,
    ) -> Verdict:
        self.usages.append(usage)
        if kind == "bet" and amount > 50:
            return Verdict("block", "LIMIT_EXCEEDED", "too much")
        return Verdict("review" if kind == "withdrawal" else "approve")


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
