"""Fraud windows and analytics totals survive a restart: rebuilt from the database on start
(issue 12, "State that survives"); refused deposits are kept and replayed like the others."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from reference_impl.domain import Deposit
from reference_impl.domain.errors import WalletError
from reference_impl.rules import LimitsRequest
from reference_impl.services.backoffice import BackOffice, BackOfficeConfig, build_backoffice

US = 1_000_000
MIN = 60 * US
T0 = 1_800_000_000 * US


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


async def _office(db_url: str, clock: Clock) -> BackOffice:
    office = await build_backoffice(BackOfficeConfig(db=db_url), clock=clock)
    for _ in range(500):  # the rebuild runs in the background
        if not (await office.analytics.summary())["partial"]:
            return office
        await asyncio.sleep(0.01)
    raise AssertionError("analytics never finished its rebuild")


async def _rules(office: BackOffice, player: str) -> list[str]:
    await office.bus.drain()  # type: ignore[union-attr]
    return [a["rule_id"] for a in (await office.fraud.alerts(player))["alerts"]]


async def _deposit(office: BackOffice, clock: Clock, tid: str, player: str, amount: int,
                   minutes: int, instrument: str = "card-1") -> None:
    clock.now = T0 + minutes * MIN
    with contextlib.suppress(WalletError):
        await office.wallet.execute(Deposit(tid, player, amount, instrument=instrument))


def test_a_restart_in_the_middle_of_a_velocity_window_still_fires(db_url: str) -> None:
    clock = Clock()

    async def body() -> None:
        first = await _office(db_url, clock)
        await first.players.create("p", "EUR")
        await first.players.create("q", "EUR")
        await first.players.set_limits("q", LimitsRequest(deposit={"24h": 100}))
        for i in range(3):  # deposits at minutes 0, 1, 2: no alert yet
            await _deposit(first, clock, f"d{i}", "p", 100, i)
        for i in range(2):  # refused deposits (limit) at minutes 0, 1
            await _deposit(first, clock, f"x{i}", "q", 500, i)
        assert "velocity-deposit-count-v1" not in await _rules(first, "p")
        # The fourth deposit commits but its event dies with the process:
        first.wallet.bus = None  # type: ignore[attr-defined]
        await _deposit(first, clock, "d3", "p", 100, 3)
        await first.stop()

        second = await _office(db_url, clock)  # the restart: fresh memory, same database
        try:
            await _deposit(second, clock, "d4", "p", 100, 4)
            rules = await _rules(second, "p")
            assert rules.count("velocity-deposit-count-v1") == 1, rules
            await _deposit(second, clock, "x2", "q", 500, 5)
            assert "velocity-declined-v1" in await _rules(second, "q")
            summary = await second.analytics.summary()
            assert summary["partial"] is False
            assert summary["events"] == {"deposit": 5, "deposit_declined": 3}
            assert summary["amounts"]["deposit"] == 500
        finally:
            await second.stop()

        third = await _office(db_url, clock)  # once more: nothing is counted twice
        try:
            rules = await _rules(third, "p")
            assert rules.count("velocity-deposit-count-v1") == 1, rules
            assert (await third.analytics.summary())["events"] == {
                "deposit": 5, "deposit_declined": 3}
        finally:
            await third.stop()

    asyncio.run(body())


def test_analytics_says_partial_while_it_rebuilds(db_url: str) -> None:
    clock = Clock()

    async def body() -> None:
        first = await _office(db_url, clock)
        await first.players.create("p", "EUR")
        for i in range(3):
            await _deposit(first, clock, f"d{i}", "p", 100, i)
        await first.stop()
        gate = asyncio.Event()
        second = await build_backoffice(BackOfficeConfig(db=db_url), clock=clock)
        try:
            storage = second.storage
            assert storage is not None
            real = storage.committed_since

            async def slow(*args: object, **kwargs: object) -> object:
                await gate.wait()
                return await real(*args, **kwargs)  # type: ignore[arg-type]

            storage.committed_since = slow  # type: ignore[method-assign]
            await second.analytics.stop()
            second.analytics._ready.clear()  # type: ignore[attr-defined]
            second.analytics.counts.clear()  # type: ignore[attr-defined]
            await second.analytics.start()  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)
            assert (await second.analytics.summary())["partial"] is True
            gate.set()
            for _ in range(200):
                summary = await second.analytics.summary()
                if not summary["partial"]:
                    break
                await asyncio.sleep(0.01)
            assert summary == {**summary, "partial": False, "events": {"deposit": 3}}
        finally:
            gate.set()
            await second.stop()

    asyncio.run(body())


@pytest.mark.parametrize("kind", ["deposit_declined"])
def test_refused_deposits_are_in_the_recoverable_stream(db_url: str, kind: str) -> None:
    clock = Clock()

    async def body() -> None:
        office = await _office(db_url, clock)
        try:
            await office.players.create("q", "EUR")
            await office.players.set_limits("q", LimitsRequest(deposit={"24h": 100}))
            await _deposit(office, clock, "x0", "q", 500, 0)
            await _deposit(office, clock, "x0", "q", 500, 1)  # the same refusal, retried
            assert office.storage is not None
            rows = await office.storage.committed_since(T0 - MIN)
            assert [(r.kind, r.transaction_id, r.amount, r.ts_us) for r in rows] == [
                (kind, "x0", 500, T0)]
        finally:
            await office.stop()

    asyncio.run(body())


@pytest.mark.parametrize("follow", [True, False], ids=["follow-database", "own-bus-only"])
def test_two_workers_fire_the_alerts_of_one(db_url: str, follow: bool) -> None:
    """Two processes of one monolith (two back offices on one database), deposits split
    between them: following the database, each sees all five and the velocity rule fires
    once; on its own bus only (the old wiring), neither sees enough to fire."""
    clock = Clock()

    async def body() -> None:
        config = BackOfficeConfig(db=db_url, follow_database=follow)
        a = await build_backoffice(config, clock=clock)
        b = await build_backoffice(config, clock=clock)
        try:
            await a.players.create("p", "EUR")
            for i in range(5):
                await _deposit(a if i % 2 else b, clock, f"d{i}", "p", 100, i)

            async def settled() -> bool:
                counts = [(await o.analytics.summary())["events"].get("deposit", 0)
                          for o in (a, b)]
                return counts == [5, 5]

            async def fired() -> list[str]:
                return [x["rule_id"] for x in (await a.fraud.alerts("p"))["alerts"]]

            for _ in range(100 if follow else 10):
                if await settled() and "velocity-deposit-count-v1" in await fired():
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.6)  # two more tail passes: nothing fires twice
            alerts = await fired()
            if follow:
                assert await settled()
                assert alerts.count("velocity-deposit-count-v1") == 1, alerts
            else:
                assert not await settled()
                assert "velocity-deposit-count-v1" not in alerts
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(body())
