"""``empirical_by_rate`` external waits: validation, quantile interpolation by hand, one
level = plain ``empirical`` in a full run, and a run at a constant rate between two levels."""

from __future__ import annotations

import copy
import re
from collections import namedtuple
from typing import Any

import numpy as np
import pytest

from sim.engine.core import Engine
from sim.engine.host import EntryMeter
from sim.engine.sampling import RateWait
from sim.model.distributions import EmpiricalByRate, empirical_quantile
from sim.model.scenario import ScenarioError, parse_scenario
from sim.model.topology import compile_topology
from sim.runner import run

TWO_LEVELS: dict[str, Any] = {"kind": "empirical_by_rate", "levels": [
    {"rps": 100, "samples_ms": [4.0, 1.0, 3.0, 2.0]},   # unsorted on purpose
    {"rps": 500, "samples_ms": [5.0, 6.0, 7.0, 8.0]}]}

BASE: dict[str, Any] = {
    "name": "t",
    "population": {"registered_players": 1000, "peak_online": 1000,
                   "online_curve": [1.0] * 24, "session": {"actions_per_minute": 30},
                   "whales": {"share": 0.0}},
    "simulation": {"duration_s": 20, "replications": 2, "seed": 5},
    "demands": {"pay": TWO_LEVELS},
    "operations": {"a": {"weight": 1, "steps": [
        {"component": "a", "cpu": {"kind": "constant", "value_ms": 0.1}, "external": "pay"}]}},
    "deployments": [{"name": "d", "kind": "monolith", "services": [
        {"name": "a", "components": ["a"], "cores": 4, "workers": 10_000}]}],
}


def _raw(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        *head, last = path.split("__")
        node = raw
        for part in head:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return raw


# ------------------------------------------------------------------ validation


def _levels(*levels: tuple[float, list[float]]) -> dict[str, Any]:
    return {"kind": "empirical_by_rate",
            "levels": [{"rps": r, "samples_ms": s} for r, s in levels]}


@pytest.mark.parametrize(("demand", "field", "reason"), [
    (_levels((500, [1.0]), (100, [1.0])), "demands.pay.levels", "rps must increase strictly"),
    (_levels((100, [1.0]), (100, [1.0])), "demands.pay.levels", "rps must increase strictly"),
    (_levels((0, [1.0])), r"demands.pay.levels\[0\].rps", "greater than 0"),
    (_levels((float("nan"), [1.0])), r"demands.pay.levels\[0\].rps", "finite"),
    (_levels((float("inf"), [1.0])), r"demands.pay.levels\[0\].rps", "finite"),
    (_levels((100, [1.0, -0.5])), r"demands.pay.levels\[0\].samples_ms", "finite number in"),
    (_levels((100, [1.0, float("nan")])), r"demands.pay.levels\[0\].samples_ms", "finite"),
    (_levels((100, [1.0]), (200, [])), r"demands.pay.levels\[1\].samples_ms", "at least 1"),
    (_levels(), "demands.pay.levels", "at least 1"),
    (_levels(*[(i + 1.0, [1.0]) for i in range(33)]), "demands.pay.levels", "at most 32"),
])
def test_bad_levels_name_the_field(demand: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(_raw(demands__pay=demand))
    assert any(re.match(field, p) and reason in why
               for p, why in err.value.problems), err.value.problems


@pytest.mark.parametrize(("changes", "field"), [
    ({"operations__a__steps__0__cpu": "pay"}, r"operations\.a\.steps\[0\]\.cpu"),
    ({"operations__a__steps__0__cpu": TWO_LEVELS}, r"operations\.a\.steps\[0\]\.cpu"),
    ({"operations__a__steps__0__db": TWO_LEVELS}, r"operations\.a\.steps\[0\]\.db"),
    ({"demands__gateway": TWO_LEVELS}, r"demands\.gateway"),
])
def test_a_rate_dependent_demand_is_refused_outside_external(changes: dict[str, Any],
                                                             field: str) -> None:
    with pytest.raises(ScenarioError, match=field) as err:
        parse_scenario(_raw(**changes))
    assert "only valid as a step's external wait" in str(err.value)


def test_a_rate_dependent_network_hop_is_refused_naming_the_field() -> None:
    raw = _raw()
    raw["deployments"][0]["network_hop"] = TWO_LEVELS
    with pytest.raises(ScenarioError, match=r"deployments\[0\]\.network_hop"):
        parse_scenario(raw)


def test_a_valid_rate_dependent_external_loads_and_means_its_first_level() -> None:
    scen = parse_scenario(_raw())
    dist = scen.demands["pay"]
    assert isinstance(dist, EmpiricalByRate)
    assert dist.mean_s() == pytest.approx(0.0025)  # the lowest-rate level: (1+2+3+4)/4 ms


# ------------------------------------------------------------------ quantiles by hand


@pytest.mark.parametrize(("rps", "ms"), [
    (100.0, 3.0),    # at the first level: its sample of rank floor(0.6 x 4) = 2 -> 3 ms
    (500.0, 7.0),    # at the second level: 7 ms
    (300.0, 5.0),    # half way: 3 + (7 - 3) / 2
    (200.0, 4.0),    # a quarter of the way
    (20.0, 3.0),     # below the first level: held
    (9000.0, 7.0),   # above the last: held
])
def test_quantile_interpolates_in_the_rate(rps: float, ms: float) -> None:
    dist = EmpiricalByRate.model_validate(TWO_LEVELS)
    assert dist.quantile_s(0.6, rps) == pytest.approx(ms / 1000.0)
    wait = RateWait(dist, lambda _key: 0.6, lambda: rps)  # the engine's draw, fixed u
    assert wait(17) == pytest.approx(ms / 1000.0)


def test_quantile_convention_is_the_empirical_inverse_cdf() -> None:
    # each of n samples has probability 1/n: u in [i/n, (i+1)/n) gives the i-th smallest
    xs = [0.004, 0.001, 0.003, 0.002]
    asc = sorted(xs)
    for u, want in [(0.0, 0.001), (0.2499, 0.001), (0.25, 0.002), (0.74, 0.003), (0.9999, 0.004)]:
        assert empirical_quantile(asc, u) == want
    rng = np.random.default_rng(1)
    u = rng.random(40_000)
    drawn = np.array([empirical_quantile(asc, x) for x in u])
    for x in xs:
        assert np.mean(drawn == x) == pytest.approx(0.25, abs=0.01)


def test_entry_meter_scales_a_reduced_run_to_full_size() -> None:
    full, reduced = EntryMeter(), EntryMeter(4)
    for i in range(2000):
        full.tick(i / 400.0)
        reduced.tick(i / 400.0)
    assert reduced.full_rate(5.0) == pytest.approx(4 * full.full_rate(5.0))


# ------------------------------------------------------------------ runs


def test_one_level_is_exactly_the_plain_empirical_in_a_full_run() -> None:
    samples = [0.5, 2.0, 3.5, 9.0, 30.0]
    plain = _raw(demands__pay={"kind": "empirical", "samples_ms": samples})
    one = _raw(demands__pay={"kind": "empirical_by_rate",
                             "levels": [{"rps": 100, "samples_ms": samples}]})
    for raw in (plain, one):  # two steps naming the same demand share its draws
        raw["operations"]["a"]["steps"].append(copy.deepcopy(raw["operations"]["a"]["steps"][0]))
        raw["simulation"]["duration_s"] = 10
    a, b = run(parse_scenario(plain), jobs=1), run(parse_scenario(one), jobs=1)
    cols = ["throughput_rps", "mean_ms", "p50_ms", "p99_ms"]
    assert a.summary[cols].equals(b.summary[cols])
    assert a.summary["mean_ms"].iloc[0] > 1.5 * (sum(samples) / len(samples))  # two waits paid


Chunk = namedtuple("Chunk", "t op player amount")


def _mean_response(raw: dict[str, Any], rps: float, k: int = 1, seed: int = 3,
                   duration: float = 60.0, settle: float = 5.0) -> float:
    """Mean response (s) of Poisson arrivals at ``rps`` after ``settle`` s (the meter's
    warm-up), simulated on the deployment reduced by ``k``."""
    scen = parse_scenario(raw)
    eng = Engine(compile_topology(scen, scen.deployments[0], k), np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1000)
    n = int(rps * duration)
    t = np.cumsum(rng.exponential(1 / rps, n))
    out = eng.run_open([Chunk(t, np.zeros(n, np.int16), np.arange(n), np.zeros(n, np.int64))],
                       float(np.ceil(t[-1])) + 1.0)
    return float(out.latency[out.t > settle].mean())


# level means 10 ms at 100 rps and 30 ms at 500 rps: at 300 rps the interpolated wait's mean
# is 20 ms (quantile interpolation is linear in u per level, so means interpolate too)
SPREAD = {"kind": "empirical_by_rate", "levels": [
    {"rps": 100, "samples_ms": [5.0, 10.0, 15.0]},
    {"rps": 500, "samples_ms": [15.0, 30.0, 45.0]}]}


def test_a_constant_rate_between_levels_gives_the_interpolated_wait() -> None:
    # light load, 10,000 workers: an infinite server, the wait dominates (CPU 0.1 ms)
    mean = _mean_response(_raw(demands__pay=SPREAD), 300.0)
    # the meter reads 300/s +- ~6 % (Poisson over its 1 s window); the wait is linear in the
    # rate between the levels, so the mean is 20.1 ms up to the sampling error (~0.5 %)
    assert mean == pytest.approx(0.0201, rel=0.03)
    low = _mean_response(_raw(demands__pay=SPREAD), 50.0, duration=200.0)
    assert low == pytest.approx(0.0101, rel=0.03)  # below the first level: held at 10 ms


def test_a_reduced_run_looks_the_wait_up_at_the_full_size_rate() -> None:
    raw = _raw(demands__pay=SPREAD)
    raw["deployments"][0]["services"][0]["replicas"] = 2
    # half of a 300/s deployment: 150/s simulated, read as 300/s
    assert _mean_response(raw, 150.0, k=2, duration=120.0) == pytest.approx(0.0201, rel=0.03)
