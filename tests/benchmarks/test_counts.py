"""CI guard on the deterministic cost counts (benchmarks/bench_counts.py): SQL statements,
PostgreSQL round trips and broker messages per money operation never rise unnoticed."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from reference_impl.storage import sqlite as sqlite_adapter
from reference_impl.storage.postgres import PostgresStorage
from tests.benchmarks.loading import load_bench


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    yield from load_bench("bench_counts")


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_no_count_rose_above_the_baseline(bench: ModuleType, db: str) -> None:
    current = bench.measure((db,), repeat=2)
    baseline = bench.load_baseline()
    rises, _ = bench.compare(current, baseline)
    assert not rises, rises
    assert set(current) == {k for k in baseline if k.startswith(db + "/")}


def test_one_more_statement_on_the_sqlite_bet_path_fails_the_check(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = sqlite_adapter.fast_bet

    def fast_bet_plus_one(db: Any, *args: Any) -> Any:
        db.execute("SELECT 1")
        return original(db, *args)

    monkeypatch.setattr(sqlite_adapter, "fast_bet", fast_bet_plus_one)
    current = bench.measure(("sqlite",), ("pessimistic",), repeat=1)
    baseline = bench.load_baseline()
    rises, _ = bench.compare(current, baseline)
    was = baseline["sqlite/pessimistic/bet"]["statements"]
    assert f"sqlite/pessimistic/bet: statements {was} -> {was + 1}" in rises, rises
    assert bench.main(["--db", "sqlite", "--repeat", "1", "--check"]) == 1


@pytest.mark.postgres
def test_one_more_statement_on_the_postgres_bet_path_fails_the_check(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = PostgresStorage._fast_call

    async def fast_call_plus_one(self: PostgresStorage, function: str, *args: Any) -> Any:
        if function == "wallet_bet":
            async with self.transaction(write=False) as conn:
                await conn.fetchrow("SELECT 1")
        return await original(self, function, *args)

    monkeypatch.setattr(PostgresStorage, "_fast_call", fast_call_plus_one)
    current = bench.measure(("postgres",), ("pessimistic",), repeat=1)
    rises, _ = bench.compare(current, bench.load_baseline())
    assert any(r.startswith("postgres/pessimistic/bet: statements") for r in rises), rises
    assert any(r.startswith("postgres/pessimistic/bet: round_trips") for r in rises), rises
