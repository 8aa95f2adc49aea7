"""The host model and load-dependent CPU: scenario fields, the rate meter, interpolation, and
the engine's invariants (theory cases are in tests/sim/test_validation.py)."""

from __future__ import annotations

import copy
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.engine.core import Engine
from sim.engine.host import RateMeter, interpolate
from sim.model.scenario import ScenarioError, parse_scenario
from sim.model.topology import compile_topology, reduce_factor

BASE: dict[str, Any] = {
    "name": "t",
    "population": {"registered_players": 1000, "peak_online": 1000,
                   "online_curve": [1.0] * 24, "session": {"actions_per_minute": 30},
                   "whales": {"share": 0.0}},
    "simulation": {"duration_s": 20, "replications": 2},
    "operations": {
        "a": {"weight": 1, "steps": [{"component": "a",
                                      "cpu": {"kind": "exponential", "mean_ms": 2}}]},
        "b": {"weight": 1, "steps": [{"component": "b",
                                      "cpu": {"kind": "exponential", "mean_ms": 2}}]},
    },
    "deployments": [{"name": "d", "kind": "microservices", "services": [
        {"name": "a", "components": ["a"], "cores": 1, "workers": 1000},
        {"name": "b", "components": ["b"], "cores": 1, "workers": 1000}]}],
}


def _with(**dep: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["deployments"][0] |= dep
    return raw


@pytest.mark.parametrize(("patch", "field"), [
    ({"host": {"cores": 0}}, "host.cores"),
    ({"host": {"cores": 2, "background_cores": -1}}, "host.background_cores"),
    ({"host": {"cores": 2, "background_cores": float("inf")}}, "host.background_cores"),
    ({"host": {"cores": 2, "client_ms_per_request": float("nan")}},
     "host.client_ms_per_request"),
    ({"host": {"cores": 2, "bogus": 1}}, "host.bogus"),
])
def test_bad_host_fields_name_the_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        parse_scenario(_with(**patch))


@pytest.mark.parametrize(("table", "reason"), [
    ([{"rps": 10, "factor": 1}, {"rps": 10, "factor": 0.5}], "rps must increase"),
    ([{"rps": 10, "factor": 0}], "factor"),
    ([{"rps": -1, "factor": 1}], "rps"),
    ([{"rps": 1, "factor": 1e9}], "factor"),
    ([], "cpu_by_rate"),
])
def test_bad_cpu_by_rate_is_refused(table: list[dict[str, float]], reason: str) -> None:
    raw = copy.deepcopy(BASE)
    raw["deployments"][0]["services"][0]["cpu_by_rate"] = table
    with pytest.raises(ScenarioError, match=reason):
        parse_scenario(raw)


def test_a_host_is_never_reduced() -> None:
    raw = _with(host={"cores": 2})
    raw["simulation"]["reduce"] = True
    raw["deployments"][0]["services"][0]["replicas"] = 2
    raw["deployments"][0]["services"][1]["replicas"] = 2
    assert reduce_factor(parse_scenario(raw)) == 1


@given(st.lists(st.tuples(st.floats(0, 1e6), st.floats(0.01, 100)), min_size=1, max_size=6,
                unique_by=lambda p: p[0]),
       st.floats(0, 2e6))
def test_interpolation_stays_between_neighbours_and_holds_beyond(
        pts: list[tuple[float, float]], x: float) -> None:
    pts.sort()
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    y = interpolate(xs, ys, x)
    if x <= xs[0]:
        assert y == ys[0]
    elif x >= xs[-1]:
        assert y == ys[-1]
    else:
        i = next(i for i in range(len(xs)) if xs[i] > x)
        lo, hi = sorted((ys[i - 1], ys[i]))
        assert lo - 1e-9 <= y <= hi + 1e-9
    for xi, yi in pts:
        assert interpolate(xs, ys, xi) == pytest.approx(yi)


def test_rate_meter_reads_a_poisson_rate() -> None:
    rng = np.random.default_rng(3)
    meter = RateMeter()
    t = 0.0
    reads = []
    for gap in rng.exponential(1 / 400.0, 40_000):
        t += gap
        meter.tick(t)
        if t > 5:
            reads.append(meter.rate(t))
    assert np.mean(reads) == pytest.approx(400, rel=0.03)


Chunk = namedtuple("Chunk", "t op player amount")
BIN_S = 0.005


def _busy(raw: dict[str, Any], seed: int = 1) -> tuple[float, np.ndarray]:
    """Mean latency, and each bin's CPU core-seconds of both services together."""
    scen = parse_scenario(raw)
    eng = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(seed),
                 bin_s=BIN_S)
    rng = np.random.default_rng(seed + 1000)  # arrivals: not the engine's stream
    n = 6000
    t = np.cumsum(rng.exponential(1 / 300.0, n))
    out = eng.run_open([Chunk(t, rng.integers(0, 2, n).astype(np.int16), np.arange(n),
                              np.zeros(n, np.int64))], float(np.ceil(t[-1])))
    cum = sum(np.asarray(s.busy) for s in out.stations if s.kind == "cpu")
    return float(out.latency.mean()), np.diff(np.concatenate([[0.0], cum]))


def test_a_one_core_host_never_gives_more_than_one_core_and_conserves_work() -> None:
    # two single-core services at 0.3 core each on a one-core host: in no second do they
    # use more than the host's core together, every job still gets all its CPU (0.6 core
    # in all), and sharing the core makes requests slower
    lat_alone, alone = _busy(BASE)
    lat_shared, shared = _busy(_with(host={"cores": 1}))
    assert alone.max() > 1.5 * BIN_S  # without a host the two cores overlap sometimes
    assert shared.max() <= BIN_S * (1.0 + 1e-6)
    assert shared.sum() == pytest.approx(alone.sum(), rel=0.01)
    assert alone.sum() / (len(alone) * BIN_S) == pytest.approx(0.6, rel=0.06)
    assert lat_shared > 1.2 * lat_alone


def _latencies(raw: dict[str, Any], seed: int = 2) -> tuple[np.ndarray, float]:
    scen = parse_scenario(raw)
    eng = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1000)  # arrivals: not the engine's stream
    n = 20_000
    t = np.cumsum(rng.exponential(1 / 200.0, n))
    out = eng.run_open([Chunk(t, np.zeros(n, np.int16), np.arange(n), np.zeros(n, np.int64))],
                       float(np.ceil(t[-1])))
    cpu = next(s for s in out.stations if s.kind == "cpu")
    return out.latency, cpu.busy[-1] / out.duration_s


def test_slices_keep_the_share_of_time_and_lift_the_tail() -> None:
    # one 1-core station at 0.4 core on a 1-core host with half a core of background: smooth
    # sharing (M/M/1-PS at S x 1.5, mean 7.5 ms) and 5 ms slices give the station the same
    # CPU (work is conserved), but the stalls between slices lengthen the tail
    smooth = _with(host={"cores": 1, "background_cores": 0.5})
    sliced = _with(host={"cores": 1, "background_cores": 0.5, "slice_ms": 5})
    for raw in (smooth, sliced):
        raw["deployments"][0]["services"] = raw["deployments"][0]["services"][:1]
        raw["deployments"][0]["kind"] = "monolith"
        raw["operations"] = {"a": raw["operations"]["a"]}
    lat_s, util_s = _latencies(smooth)
    lat_c, util_c = _latencies(sliced)
    assert util_s == pytest.approx(0.4, rel=0.05)
    assert util_c == pytest.approx(util_s, rel=0.02)
    assert lat_s.mean() == pytest.approx(0.0075, rel=0.1)
    assert np.percentile(lat_c, 99) > 1.2 * np.percentile(lat_s, 99)
