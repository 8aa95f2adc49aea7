"""Runs past 2^14 s of simulated time: processor sharing must not stall on clock resolution.

Past 16,384 s a float clock's resolution (an ulp of ``now``) exceeds 1e-12 s; the old
``PSCpu._fire`` kept a job whose leftover virtual work was a few ulps, scheduled a zero-length
timer at the same instant and repeated forever. These tests are guarded by a timeout so a
regression fails instead of hanging.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

from sim.engine.core import Engine
from sim.model.scenario import parse_scenario
from sim.model.topology import compile_topology
from sim.runner import run

Chunk = namedtuple("Chunk", "t op player amount")


def _ps_station(mean_ms: float) -> object:
    """One service, 1 core, many workers: an M/G/1 processor-sharing station."""
    return parse_scenario({
        "name": "mm1_ps",
        "demands": {"work": {"kind": "exponential", "mean_ms": mean_ms}},
        "operations": {"job": {"weight": 1, "steps": [{"component": "q", "cpu": "work"}]}},
        "deployments": [{"name": "ps", "kind": "monolith",
                         "services": [{"name": "q", "components": ["q"], "workers": 1000,
                                       "cores": 1}]}],
    })


@pytest.mark.timeout(60)
def test_mm1_ps_at_rho_04_runs_past_2_pow_14_seconds() -> None:
    # the reproduction: M/M/1-PS at rho 0.4, 17,000 s (hung forever before the fix)
    mean_s, rho, duration = 1.0, 0.4, 17_000.0
    rng = np.random.default_rng(7)
    t = np.cumsum(rng.exponential(mean_s / rho, int(duration * rho / mean_s * 1.2)))
    t = t[t < duration]
    chunks = [Chunk(t, np.zeros(t.size, np.int16), np.arange(t.size), np.zeros(t.size))]
    scen = _ps_station(mean_s * 1000.0)
    out = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(1),
                 bin_s=100.0).run_open(chunks, duration)
    late = out.t > 2.0**14
    assert late.sum() > 100                        # requests after 2^14 s were served
    cpu = next(s for s in out.stations if s.kind == "cpu")
    last_snapshot = len(cpu.completions) * 100.0
    finished = int((out.t + out.latency <= last_snapshot).sum())
    assert cpu.completions[-1] == finished         # the cores' count agrees with the requests
    # M/M/1-PS: mean response = S / (1 - rho) = 1.667 s (loose: one run, correlated samples)
    assert out.latency.mean() == pytest.approx(mean_s / (1 - rho), rel=0.25)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_whole_day_of_a_small_scenario_completes() -> None:
    # 86,400 s of a small closed workload on processor-sharing cores (workers > cores)
    scen = parse_scenario({
        "name": "day",
        "simulation": {"duration_s": 86_400, "replications": 2, "warmup": 0, "seed": 3,
                       "timeseries_bin_s": 900,
                       "closed": {"users": 3, "think_time": {"kind": "exponential",
                                                             "mean_ms": 20_000}}},
        "demands": {"cpu": {"kind": "exponential", "mean_ms": 300},
                    "db": {"kind": "lognormal", "median_ms": 20, "sigma": 0.5}},
        "operations": {
            "bet": {"weight": 0.7, "steps": [{"component": "w", "cpu": "cpu", "db": "db"}]},
            "balance": {"weight": 0.3, "steps": [{"component": "w", "cpu": "cpu"}]},
        },
        "deployments": [{"name": "mono", "kind": "monolith",
                         "services": [{"name": "app", "components": ["w"], "workers": 8,
                                       "cores": 1, "db_pool": 2, "database": "db"}],
                         "databases": [{"name": "db", "cores": 1}]}],
    })
    res = run(scen, jobs=1)
    s = res.summary.set_index("operation")
    # ~3 users / 20.3 s cycle ~ 0.146 req/s over the whole day
    total = s["throughput_rps"].sum()
    assert total == pytest.approx(3 / 20.3, rel=0.05)
    assert (s["error_rate"] == 0).all()
    assert res.meta["duration_s"] == 86_400
