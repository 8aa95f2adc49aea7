"""Keyed demands and paired comparisons: the same request costs the same in every deployment,
and a deployment made slower by a known amount is caught by a narrow paired interval."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.analysis.paired import paired_differences, welch_half_width
from sim.cli import _cost_and_paired_text
from sim.engine.path import prepare_routes
from sim.engine.sampling import BATCH, BatchDraws, KeyedDraws
from sim.engine.sources import KEY_STRIDE
from sim.model.cost import deployment_cost
from sim.model.scenario import parse_scenario
from sim.model.topology import compile_topology
from sim.reports.report import write_report
from sim.reports.results import load_results
from sim.runner import run

HOP_MS = 1.0  # mean one-way hop of the slow deployment: two hops per request, 2 ms known


def _pair_scenario(seed: int = 5, reps: int = 6) -> object:
    big = {"cores": 64, "workers": 64}
    return parse_scenario({
        "name": "paired",
        "simulation": {"duration_s": 20, "replications": reps, "warmup": 0, "seed": seed},
        "population": {"registered_players": 50_000, "peak_online": 3_000,
                       "online_curve": [1.0] * 24, "session": {"actions_per_minute": 6}},
        "demands": {"cpu": {"kind": "lognormal", "median_ms": 5, "sigma": 1.0},
                    "db": {"kind": "exponential", "mean_ms": 0.5}},
        "operations": {
            "bet": {"weight": 0.7, "steps": [{"component": "wallet", "cpu": "cpu"}]},
            "balance": {"weight": 0.3, "steps": [{"component": "wallet", "cpu": "cpu"}]},
        },
        "deployments": [
            {"name": "fast", "kind": "monolith",
             "services": [{"name": "app", "components": ["wallet"]} | big]},
            # the same wallet behind a gateway: + two exponential hops (2 ms on average)
            {"name": "slow", "kind": "microservices", "entry": "gw",
             "network_hop": {"kind": "exponential", "mean_ms": HOP_MS},
             "rpc_cpu": {"kind": "constant", "value_ms": 0},
             "services": [{"name": "gw", "components": ["gw"]} | big,
                          {"name": "wallet", "components": ["wallet"]} | big]},
        ],
    })


def _routes(scen, dep: int, seed: int, rng_seed: int = 0):
    topo = compile_topology(scen, scen.deployments[dep])
    fallback = BatchDraws(np.random.default_rng(rng_seed))
    return prepare_routes(topo, KeyedDraws(np.random.SeedSequence(seed), fallback))


def test_same_request_same_demands_in_every_deployment() -> None:
    scen = _pair_scenario()
    # different engine generators: only the keyed seed is shared
    a, b = _routes(scen, 0, 42, rng_seed=1), _routes(scen, 1, 42, rng_seed=2)
    keys = [*range(BATCH + 10), KEY_STRIDE + 3]  # across windows, and a second source's key
    for op in (0, 1):
        draws_a = [a[op].steps[0].cpu(k) for k in keys]
        assert draws_a == [b[op].steps[0].cpu(k) for k in keys]
        assert len(set(draws_a)) == len(draws_a)  # fresh values, windows refill
    # two operations' sites are different streams
    assert a[0].steps[0].cpu(0) != a[1].steps[0].cpu(0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 40 * BATCH), min_size=1, max_size=300))
def test_a_request_s_demand_does_not_depend_on_the_order_of_draws(keys: list[int]) -> None:
    """The value for a key is the same whatever keys were drawn before (windows evicted and
    redrawn included)."""
    scen = _pair_scenario()
    mixed = _routes(scen, 0, 7)[0].steps[0].cpu
    for k in keys:
        assert mixed(k) == _routes(scen, 0, 7)[0].steps[0].cpu(k)


def test_independent_seeds_give_different_demands() -> None:
    scen = _pair_scenario()
    assert _routes(scen, 0, 1)[0].steps[0].cpu(0) != _routes(scen, 0, 2)[0].steps[0].cpu(0)


def test_paired_interval_catches_a_known_slowdown_and_is_much_narrower(tmp_path: Path) -> None:
    keyed = run(_pair_scenario(), jobs=1)
    pairs = pd.DataFrame(keyed.meta["paired"])
    row = pairs[(pairs["operation"] == "bet") & (pairs["metric"] == "mean_ms")].iloc[0]
    assert (row["reference"], row["architecture"]) == ("fast", "slow")
    # the slow deployment adds two hops: 2 ms on average, inside the paired 95% interval
    assert row["lower"] <= 2 * HOP_MS <= row["upper"], row.to_dict()
    assert row["ci"] * 3 <= row["unpaired_ci"], row.to_dict()
    assert row["better"] == "fast"
    # with independent demand streams the pairing buys little: keyed streams are what matter
    indep = pd.DataFrame(run(_pair_scenario(), jobs=1, paired=False).meta["paired"])
    irow = indep[(indep["operation"] == "bet") & (indep["metric"] == "mean_ms")].iloc[0]
    assert row["ci"] * 3 <= irow["ci"], (row["ci"], irow["ci"])
    # the console, summary.json and report.md say it, with each deployment's cost
    text = _cost_and_paired_text(keyed)
    assert re.search(r"fast\s+64\s+0\s+[\d.]+ ms", text)
    assert re.search(r"slow\s+128\s+0\s+[\d.]+ ms", text)
    assert re.search(r"bet\s+mean\s+slow - fast\s+\+(1\.9|2\.0)\d+ ±0\.\d+ ms .*better: fast", text)
    keyed.save(tmp_path)
    assert load_results(tmp_path).meta["paired"][0]["better"] in ("fast", "")
    report = write_report(keyed, tmp_path).read_text()
    assert "## Cost next to latency" in report and "**fast** better" in report


def test_paired_differences_on_known_numbers() -> None:
    per_rep = pd.DataFrame({
        "architecture": ["a"] * 3 + ["b"] * 3,
        "replication": [0, 1, 2] * 2,
        "operation": ["bet"] * 6,
        "mean_ms": [10.0, 20.0, 30.0, 11.0, 21.0, 31.5],
        "p99_ms": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    })
    out = paired_differences(per_rep).set_index("metric")
    assert out.loc["mean_ms", "difference"] == pytest.approx(7 / 6)
    assert 0 < out.loc["mean_ms", "ci"] < out.loc["mean_ms", "unpaired_ci"]
    # differences 1, 1, 1.5: 7/6 +- t(0.975, 2) * 0.2887 / sqrt(3), which excludes zero
    assert out.loc["mean_ms", "ci"] == pytest.approx(4.3027 * 0.288675 / math.sqrt(3), rel=1e-3)
    assert out.loc["mean_ms", "better"] == "a"
    assert out.loc["p99_ms", "difference"] == 0.0 and out.loc["p99_ms", "better"] == ""
    assert math.isnan(welch_half_width(np.array([1.0]), np.array([2.0, 3.0])))


def test_cost_counts_every_replica_and_shard() -> None:
    scen = parse_scenario({
        "name": "cost",
        "operations": {"bet": {"weight": 1, "steps": [{"component": "w", "cpu": {
            "kind": "constant", "value_ms": 1}}]}},
        "deployments": [{"name": "d", "kind": "monolith", "services": [
            {"name": "w", "components": ["w"], "replicas": 3, "cores": 4, "db_pool": 5,
             "database": "db"}],
            "databases": [{"name": "db", "cores": 8, "shards": 2}]}],
    })
    cost = deployment_cost(scen.deployments[0])
    assert (cost.cores, cost.service_cores, cost.database_cores, cost.connections) == (
        28, 12, 16, 15)


def test_keyed_draws_align_requests_through_branches_and_nested_calls() -> None:
    """With hops and RPC costing nothing and no queueing, a request's latency is the sum of
    its own draws: keyed draws give it the same in a monolith and in microservices, even
    though a branch and a nested call make paths differ in length between requests."""
    from sim.engine.core import Engine
    from sim.model.population import ArrivalChunk

    exp = {"kind": "exponential", "mean_ms": 2}
    zero = {"kind": "constant", "value_ms": 0}
    big = {"cores": 1024, "workers": 4096}
    scen = parse_scenario({
        "name": "keys",
        "demands": {"e": exp},
        "operations": {"job": {"weight": 1, "steps": [
            {"component": "a", "cpu": "e", "probability": 0.5},
            {"component": "a", "cpu": "e", "calls": [
                {"component": "b", "external": "e", "probability": 0.3,
                 "calls": [{"component": "c", "cpu": "e"}]}]},
            {"component": "c", "cpu": "e"}]}},
        "deployments": [
            {"name": "mono", "kind": "monolith",
             "services": [{"name": "app", "components": ["a", "b", "c"]} | big]},
            {"name": "micro", "kind": "microservices", "network_hop": zero, "rpc_cpu": zero,
             "services": [{"name": n, "components": [n]} | big for n in "abc"]},
        ],
    })
    n = 3000
    t = np.sort(np.random.default_rng(3).uniform(0, 5, n))  # ~600/s: no queueing at 1024 cores
    chunks = [ArrivalChunk(t, np.zeros(n, np.int16), np.arange(n), np.zeros(n, np.int64))]
    lat = {}
    for i, dep in enumerate(scen.deployments):
        rng = np.random.default_rng(10 + i)  # each deployment's own engine generator
        eng = Engine(compile_topology(scen, dep), rng,
                     draws=KeyedDraws(np.random.SeedSequence(99), BatchDraws(rng)))
        out = eng.run_open(chunks, 10.0)
        order = np.argsort(out.t, kind="stable")
        lat[dep.name] = out.latency[order]
    assert len(lat["mono"]) == n
    np.testing.assert_allclose(lat["mono"], lat["micro"], rtol=1e-9, atol=1e-12)
    assert len(np.unique(np.round(lat["mono"], 9))) > n // 2  # the draws do vary
