"""Idempotency under concurrency: identical requests sent at once all get the first answer.

Every money operation, both databases, both concurrency modes. The PostgreSQL optimistic
case used to answer ``BET_ALREADY_SETTLED`` to some replays of a win (issue 12, bug 3): the
general script read the player row, then the transaction id, then the round's bets, each
statement on its own READ COMMITTED snapshot; a twin committing between those reads left a
view where the id was new but its round already settled.
"""

from __future__ import annotations

import asyncio

import pytest

from reference_impl.domain import Bet, Deposit, OpResult, Rollback, Win, Withdrawal
from reference_impl.domain.commands import Command
from reference_impl.storage import Storage, StorageSettings, open_storage

REPLAYS = 20  # identical requests in flight at once (the tester's figure)
ROUNDS = 6  # independent trials per operation: the race showed in ~5% of replays


def _setup_and_twins(kind: str, i: int) -> tuple[list[Command], Command]:
    """Commands to run first, then the one replayed ``REPLAYS`` times at once."""
    pid = f"p{i}"
    seed: list[Command] = [Deposit(f"seed{i}", pid, 10_000), Bet(f"bet{i}", pid, f"r{i}", "g", 100)]
    twin: Command
    if kind == "bet":
        twin = Bet(f"twin{i}", pid, f"r{i}", "g", 50)
    elif kind == "win":
        twin = Win(f"twin{i}", pid, f"r{i}", 300)
    elif kind == "rollback":
        twin = Rollback(f"twin{i}", pid, f"r{i}", f"bet{i}")
    elif kind == "deposit":
        twin = Deposit(f"twin{i}", pid, 700)
    else:
        twin = Withdrawal(f"twin{i}", pid, 700)
    return seed, twin


def _answer(result: OpResult | BaseException) -> tuple[object, ...]:
    if isinstance(result, BaseException):
        return ("error", type(result).__name__, str(result))
    return ("ok", result.transaction_id, result.status, result.balance, result.currency)


@pytest.mark.parametrize("kind", ["bet", "win", "rollback", "deposit", "withdrawal"])
@pytest.mark.parametrize("concurrency", ["pessimistic", "optimistic"])
def test_concurrent_replays_all_get_the_first_answer(
    db_url: str, concurrency: str, kind: str
) -> None:
    settings = StorageSettings(concurrency=concurrency, pool_size=REPLAYS)  # type: ignore[arg-type]

    async def main() -> None:
        storage: Storage = await open_storage(db_url, settings)
        try:
            for i in range(ROUNDS):
                seed, twin = _setup_and_twins(kind, i)
                await storage.create_player(f"p{i}", "EUR", 0)
                for now, cmd in enumerate(seed, start=1):
                    await storage.execute(cmd, now)
                got = await asyncio.gather(
                    *(storage.execute(twin, 10) for _ in range(REPLAYS)),
                    return_exceptions=True,
                )
                answers = {_answer(r) for r in got}
                assert len(answers) == 1, (kind, i, answers)
                (only,) = answers
                assert only[0] == "ok", only
                after = await storage.execute(twin, 11)
                assert after.replayed and _answer(after) == only
                entries = await storage.transactions(f"p{i}", 50)
                assert sum(e.transaction_id == twin.transaction_id for e in entries) >= 1
            report = await storage.audit()
            assert report.ok, report.first_violation
        finally:
            await storage.close()

    asyncio.run(main())
