"""Balances are a projection of the journal: rebuilt exactly, refused on a damaged journal."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import replace

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_impl.domain import Bet, Deposit, HotAccounts, MemoryLedger, Rollback, Win
from reference_impl.domain.commands import Command
from reference_impl.domain.errors import WalletError
from reference_impl.domain.rebuild import plan_rebuild
from reference_impl.storage import Storage, open_storage
from testbed.cli import cli


def _heads(ledger: MemoryLedger) -> dict[str, tuple[int, str]]:
    return {p.player_id: (p.seq, p.last_hash) for p in ledger.players.values()}


def _command(rng: random.Random, i: int, pid: str) -> Command:
    kind = rng.choice(["deposit", "bet", "bet", "win", "rollback"])
    if kind == "deposit":
        return Deposit(f"d{i}", pid, rng.randint(1, 500))
    if kind == "bet":
        return Bet(f"b{i}", pid, f"r{i % 7}", "g", rng.randint(1, 200))
    if kind == "win":
        return Win(f"w{i}", pid, f"r{rng.randrange(7)}", rng.randint(0, 300))
    return Rollback(f"x{i}", pid, f"r{rng.randrange(7)}", f"b{rng.randrange(max(i, 1))}")


def _play(ledger: MemoryLedger, rng: random.Random, n: int) -> None:
    players = list(ledger.players)
    for i in range(n):
        with contextlib.suppress(WalletError):
            ledger.apply(_command(rng, i, rng.choice(players)), i)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 80), shards=st.integers(1, 4),
       tamper=st.lists(st.tuples(st.integers(0, 50), st.integers(-1000, 1000)), max_size=6))
def test_rebuild_restores_exactly_the_projection(
    seed: int, n: int, shards: int, tamper: list[tuple[int, int]]
) -> None:
    ledger = MemoryLedger(HotAccounts(house_shards=shards))
    for pid in ("a", "b", "c"):
        ledger.create_player(pid, "EUR")
    _play(ledger, random.Random(seed), n)
    truth, heads = ledger.balances(), _heads(ledger)
    stored = dict(truth)
    accounts = sorted(stored)
    for index, delta in tamper:
        stored[accounts[index % len(accounts)]] += delta
    plan = plan_rebuild(ledger.journal, stored, heads)
    assert plan.ok
    assert plan.balances == truth and plan.heads == heads
    assert {c.account for c in plan.corrections} == {a for a in truth if stored[a] != truth[a]}
    again = plan_rebuild(ledger.journal, plan.balances, plan.heads)
    assert again.ok and again.corrections == []


def test_damaged_journal_is_refused() -> None:
    ledger = MemoryLedger()
    ledger.create_player("a", "EUR")
    ledger.apply(Deposit("d", "a", 100), 1)
    ledger.apply(Bet("b", "a", "r", "g", 40), 2)
    entries = list(ledger.journal)
    entries[0] = replace(entries[0], amount=1_000)
    plan = plan_rebuild(entries, ledger.balances(), _heads(ledger))
    assert not plan.ok and "hash chain broken" in (plan.refusal or "")
    orphan = plan_rebuild(ledger.journal, ledger.balances(), {})
    assert not orphan.ok and "no player row" in (orphan.refusal or "")


def test_stale_chain_head_is_corrected() -> None:
    ledger = MemoryLedger()
    ledger.create_player("a", "EUR")
    ledger.apply(Deposit("d", "a", 100), 1)
    plan = plan_rebuild(ledger.journal, ledger.balances(), {"a": (0, "0" * 64)})
    assert plan.ok and [c.field for c in plan.corrections] == ["head"]
    assert plan.heads["a"] == (1, ledger.journal[-1].hash)


async def _seed(storage: Storage) -> None:
    for pid in ("p1", "p2"):
        await storage.create_player(pid, "EUR", 0)
        await storage.execute(Deposit(f"d-{pid}", pid, 1_000), 1)
        await storage.execute(Bet(f"b-{pid}", pid, "r1", "g", 300), 2)
        await storage.execute(Win(f"w-{pid}", pid, "r1", 120), 3)


async def _tamper(storage: Storage, db_url: str) -> None:
    statements = (
        "UPDATE players SET balance = balance + 50 WHERE player_id = 'p1'",
        "UPDATE players SET seq = 1 WHERE player_id = 'p2'",
        "UPDATE accounts SET balance = balance - 7 WHERE account_id LIKE 'house:%'",
    )
    async with storage.transaction(write=True) as conn:  # type: ignore[attr-defined]
        for sql in statements:
            await conn.execute(sql)


def test_rebuild_on_each_database_and_the_cli(db_url: str) -> None:
    async def body() -> None:
        storage = await open_storage(db_url)
        try:
            await _seed(storage)
            before = await storage.audit()
            assert before.ok
            await _tamper(storage, db_url)
            assert not (await storage.audit()).ok
            dry = await storage.rebuild_balances(apply=False)
            assert dry.ok and len(dry.corrections) == 3
            assert not (await storage.audit()).ok  # a dry run writes nothing
        finally:
            await storage.close()

    asyncio.run(body())
    runner = CliRunner()
    verify = runner.invoke(cli, ["ledger", "verify", "--db", db_url])
    assert verify.exit_code == 1 and "VIOLATED" in verify.output
    fixed = runner.invoke(cli, ["ledger", "rebuild", "--db", db_url])
    assert fixed.exit_code == 0, fixed.output
    assert "corrected 3 value(s)" in fixed.output and "player:EUR:p1 balance" in fixed.output
    assert runner.invoke(cli, ["ledger", "verify", "--db", db_url]).exit_code == 0
    again = runner.invoke(cli, ["ledger", "rebuild", "--db", db_url, "--json"])
    assert again.exit_code == 0 and '"corrections": []' in again.output


def test_rebuild_refuses_a_tampered_journal(db_url: str) -> None:
    async def body() -> None:
        storage = await open_storage(db_url)
        try:
            await _seed(storage)
            async with storage.transaction(write=True) as conn:  # type: ignore[attr-defined]
                await conn.execute("UPDATE journal SET amount = 999 WHERE transaction_id = 'b-p1'")
            plan = await storage.rebuild_balances(apply=True)
            assert not plan.ok and "p1" in (plan.refusal or "")
            player = await storage.get_player("p1")
            assert player.balance == 820  # nothing written
        finally:
            await storage.close()

    asyncio.run(body())
    result = CliRunner().invoke(cli, ["ledger", "rebuild", "--db", db_url])
    assert result.exit_code == 1 and "refused, nothing written" in result.output


def test_bad_db_url_names_the_flag() -> None:
    result = CliRunner().invoke(cli, ["ledger", "verify", "--db", "mysql://x"])
    assert result.exit_code == 2 and "--db" in result.output
