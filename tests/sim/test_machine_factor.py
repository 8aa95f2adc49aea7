"""``on_slower_machine``: the same back office on a faster or slower machine."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.model.scenario import (
    MAX_MACHINE_FACTOR,
    MIN_MACHINE_FACTOR,
    load_scenario,
    on_slower_machine,
    parse_scenario,
)

ROOT = Path(__file__).resolve().parents[2]
CALIBRATED = ROOT / "benchmarks/validation/session13/mpg/mpg_calibrated.yaml"
BASELINE = ROOT / "scenarios/baseline_day.yaml"


def _inline(scenario_path: Path):
    """The baseline with an inline demand in a nested call, a cache and host pauses."""
    sc = load_scenario(scenario_path)
    raw = sc.model_dump(mode="json", by_alias=True, exclude_none=True)
    step = raw["operations"]["bet"]["steps"][0]
    step.setdefault("calls", []).append({"component": step["component"],
                                         "cpu": {"kind": "gamma", "mean_ms": 2.0, "cv": 0.5}})
    dep = raw["deployments"][0]
    dep["host"] = {"cores": 2, "pauses": {"by_rate": [{"rps": 10.0, "per_s": 1.0,
                                                         "durations_ms": [4.0, 8.0]}],
                                          "durations_ms": [6.0]}}
    return parse_scenario(raw, "inline")


@settings(max_examples=25, deadline=None)
@given(st.floats(MIN_MACHINE_FACTOR, MAX_MACHINE_FACTOR))
def test_every_time_of_the_back_office_scales_and_nothing_else(factor: float) -> None:
    sc = _inline(BASELINE)
    slow = on_slower_machine(sc, factor)
    for name, dist in sc.demands.items():
        assert math.isclose(slow.demands[name].mean_s(), factor * dist.mean_s(),
                            rel_tol=1e-9, abs_tol=1e-12), name
    nested = slow.operations["bet"].steps[0].calls[-1].cpu
    assert math.isclose(nested.mean_s(), factor * 0.002, rel_tol=1e-9)
    d0, s0 = sc.deployments[0], slow.deployments[0]
    assert math.isclose(s0.network_hop.mean_s(), factor * d0.network_hop.mean_s(), rel_tol=1e-9)
    assert math.isclose(s0.rpc_cpu.mean_s(), factor * d0.rpc_cpu.mean_s(), rel_tol=1e-9)
    assert math.isclose(s0.broker.publish.mean_s(), factor * d0.broker.publish.mean_s(),
                        rel_tol=1e-9)
    assert s0.host.pauses.durations_ms == pytest.approx([6.0 * factor])
    assert s0.host.pauses.by_rate[0].durations_ms == pytest.approx([4.0 * factor, 8.0 * factor])
    assert s0.host.pauses.by_rate[0].per_s == d0.host.pauses.by_rate[0].per_s
    # policy, population and the database's round trip are not the machine's speed
    assert s0.call_policy == d0.call_policy
    assert slow.population == sc.population
    assert [d.sync_round_trip_ms for d in s0.databases] == \
        [d.sync_round_trip_ms for d in d0.databases]


def test_a_calibrated_scenarios_waits_by_rate_scale_at_every_rate() -> None:
    sc = load_scenario(CALIBRATED)
    fast = on_slower_machine(sc, 0.8)
    for name, dist in sc.demands.items():
        if dist.kind != "empirical_by_rate":
            continue
        for a, b in zip(dist.levels, fast.demands[name].levels, strict=True):
            assert a.rps == b.rps
            assert b.samples_ms == pytest.approx([0.8 * x for x in a.samples_ms]), name
    assert on_slower_machine(sc, 1.0) == sc


@pytest.mark.parametrize("factor", [0.0, -1.0, 0.2, 4.5, math.nan, math.inf])
def test_a_factor_out_of_range_or_not_finite_is_refused(factor: float) -> None:
    with pytest.raises(ValueError, match="factor"):
        on_slower_machine(load_scenario(BASELINE), factor)
