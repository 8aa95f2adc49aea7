"""The audit is incremental (verified checkpoints per chain, only new entries checked), runs
off the event loop, and keeps a full check."""

from __future__ import annotations

import asyncio
import threading

import pytest
from click.testing import CliRunner

from reference_impl.domain import Bet, Deposit, Win
from reference_impl.storage import Storage, open_storage, sql_storage
from testbed.cli import cli


async def _play(storage: Storage, players: list[str], tag: str, now: int) -> None:
    for pid in players:
        await storage.execute(Deposit(f"d{tag}-{pid}", pid, 1_000), now)
        await storage.execute(Bet(f"b{tag}-{pid}", pid, f"r{tag}", "g", 300), now + 1)
        await storage.execute(Win(f"w{tag}-{pid}", pid, f"r{tag}", 120), now + 2)


def test_second_audit_checks_only_new_entries_and_still_sees_stored_damage(db_url: str) -> None:
    async def body() -> None:
        storage = await open_storage(db_url)
        try:
            players = ["a", "b", "c"]
            for pid in players:
                await storage.create_player(pid, "EUR", 0)
            await _play(storage, players, "1", 10)
            first = await storage.audit()
            assert first.ok and first.counts["entries"] == 9 and first.counts["checked"] == 9
            idle = await storage.audit()
            assert idle.ok and idle.counts["entries"] == 9 and idle.counts["checked"] == 0
            await _play(storage, ["a"], "2", 20)
            step = await storage.audit()
            assert step.ok and step.counts["entries"] == 12 and step.counts["checked"] == 3
            full = await storage.audit(full=True)
            assert full.ok and full.counts["entries"] == 12 and full.counts["checked"] == 12
            assert full.totals == step.totals
            # Stored state that moved without a journal entry is found without re-reading
            # the verified journal:
            async with storage.transaction(write=True) as conn:  # type: ignore[attr-defined]
                await conn.execute("UPDATE players SET balance = balance + 5 "
                                   "WHERE player_id = 'b'")
            bad = await storage.audit()
            assert not bad.ok and "player:EUR:b" in (bad.first_violation or "")
            assert bad.counts["checked"] == 0
            async with storage.transaction(write=True) as conn:  # type: ignore[attr-defined]
                await conn.execute("UPDATE players SET balance = balance - 5 "
                                   "WHERE player_id = 'b'")
            # Damage to an entry an audit already verified is for the full check:
            async with storage.transaction(write=True) as conn:  # type: ignore[attr-defined]
                await conn.execute("UPDATE journal SET hash = 'x' WHERE stream = 'c' "
                                   "AND seq = 1")
            assert (await storage.audit()).ok
            damaged = await storage.audit(full=True)
            assert not damaged.ok and "hash chain broken" in (damaged.first_violation or "")
        finally:
            await storage.close()

    asyncio.run(body())
    result = CliRunner().invoke(cli, ["ledger", "verify", "--db", db_url, "--full"])
    assert result.exit_code == 1 and "hash chain broken" in result.output
    assert CliRunner().invoke(cli, ["ledger", "verify", "--db", db_url]).exit_code == 0


def test_a_violation_does_not_move_the_checkpoint(db_url: str) -> None:
    async def body() -> None:
        storage = await open_storage(db_url)
        try:
            await storage.create_player("a", "EUR", 0)
            await _play(storage, ["a"], "1", 10)
            assert (await storage.audit()).ok
            await _play(storage, ["a"], "2", 20)
            async with storage.transaction(write=True) as conn:  # type: ignore[attr-defined]
                await conn.execute("UPDATE journal SET amount = amount + 1 WHERE stream = 'a' "
                                   "AND seq = 5")
            for _ in range(2):  # reported again: the bad entries stay unverified
                report = await storage.audit()
                assert not report.ok and report.counts["checked"] == 3
        finally:
            await storage.close()

    asyncio.run(body())


@pytest.mark.parametrize("full", [False, True])
def test_bets_complete_while_an_audit_is_verifying(
    db_url: str, full: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The audit's verification runs in a worker thread (and SQLite reads on their own
    connection): a bet placed while it is held mid-way completes before it is released."""
    loop_thread = threading.get_ident()
    holding, release = threading.Event(), threading.Event()
    seen: list[int] = []
    verify = sql_storage.verify_increment

    def held_verify(*args: object) -> object:
        seen.append(threading.get_ident())
        holding.set()
        assert release.wait(30), "the test never released the audit"
        return verify(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(sql_storage, "verify_increment", held_verify)

    async def body() -> None:
        storage = await open_storage(db_url)
        try:
            await storage.create_player("a", "EUR", 0)
            await storage.execute(Deposit("d", "a", 1_000), 1)
            audit = asyncio.create_task(storage.audit(full=full))
            while not holding.is_set():
                await asyncio.sleep(0.005)
            result = await asyncio.wait_for(storage.execute(Bet("b", "a", "r", "g", 10), 2), 10)
            assert result.balance == 990 and not audit.done()
            release.set()
            report = await audit
            assert report.ok and seen and loop_thread not in seen
            assert (await storage.audit()).counts["checked"] == 1  # the bet came after
        finally:
            release.set()
            await storage.close()

    asyncio.run(body())
