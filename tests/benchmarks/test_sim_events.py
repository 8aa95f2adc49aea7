"""CI guard on the simulator's deterministic cost (benchmarks/bench_sim_events.py): SimPy
events per request of each operation never rise unnoticed."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from types import ModuleType
from typing import Any

import pytest

from sim.engine.path import RequestPath
from tests.benchmarks.loading import load_bench


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    yield from load_bench("bench_sim_events")


def test_no_event_count_rose_above_the_baseline(bench: ModuleType) -> None:
    current = bench.measure()
    baseline = bench.load_baseline()
    rises, _ = bench.compare(current, baseline)
    assert not rises, rises
    assert set(current) == set(baseline)
    assert current == bench.measure()  # deterministic: the same on a second run


def test_one_more_event_on_the_bet_path_fails_the_check(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = RequestPath.request
    bet = list(bench.load_scenario(bench.SCENARIO).operations).index("bet")

    def request_plus_one(self: RequestPath, op: int, player: int,
                         key: int) -> Generator[Any, Any, None]:
        if op == bet:
            yield self.env.timeout(0.0)  # one more event per bet
        yield from original(self, op, player, key)

    monkeypatch.setattr(RequestPath, "request", request_plus_one)
    rises, _ = bench.compare(bench.measure(), bench.load_baseline())
    assert len(rises) == 3, rises  # one per deployment, bets only
    base = bench.load_baseline()["baseline_day/monolith/bet"]
    n = bench.REQUESTS
    assert f"baseline_day/monolith/bet: events {base} -> {base + n} per {n} requests" in rises
    assert bench.main(["--check"]) == 1
