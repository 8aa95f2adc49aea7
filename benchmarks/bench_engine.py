"""Engine speed and memory benchmark.

Prints, for a plain M/M/c queue, customers simulated per CPU-second by the testbed engine and
by a minimal hand-written SimPy model of the same queue, and their ratio (the framework must
stay within a factor 2 of the minimal model); then simulated requests per CPU-second and peak
memory of a whole scenario (``--scenario``, reduced by default). Ratios are compared with the
stored baseline ``benchmarks/baseline_engine.json``; ``--update-baseline`` rewrites it.

    python benchmarks/bench_engine.py                      # M/M/c + cup_final (reduced)
    python benchmarks/bench_engine.py --scenario scenarios/baseline_day.yaml --duration 30
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import simpy

BASELINE = Path(__file__).with_name("baseline_engine.json")
Chunk = namedtuple("Chunk", "t op player amount")


def minimal_simpy_mmc(lam: float, mean_s: float, c: int, n: int, seed: int) -> float:
    """A minimal SimPy M/M/c (Resource + timeout, one process per customer); CPU seconds."""
    rng = np.random.default_rng(seed)
    inter = rng.exponential(1 / lam, n).tolist()
    serv = rng.exponential(mean_s, n).tolist()
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=c)
    waits: list[float] = []

    def customer(s: float):
        t0 = env.now
        with server.request() as req:
            yield req
            yield env.timeout(s)
        waits.append(env.now - t0)

    def source():
        for a, s in zip(inter, serv, strict=True):
            yield env.timeout(a)
            env.process(customer(s))

    env.process(source())
    start = time.process_time()
    env.run()
    return time.process_time() - start


def engine_mmc(lam: float, mean_s: float, c: int, n: int, seed: int) -> float:
    """The testbed engine on the same M/M/c; CPU seconds."""
    from sim.engine.core import Engine
    from sim.model.scenario import parse_scenario
    from sim.model.topology import compile_topology

    scen = parse_scenario({
        "name": "mmc",
        "operations": {"job": {"weight": 1, "steps": [
            {"component": "q", "cpu": {"kind": "exponential", "mean_ms": mean_s * 1000}}]}},
        "deployments": [{"name": "d", "kind": "monolith", "services": [
            {"name": "q", "components": ["q"], "workers": c, "cores": c}]}],
    })
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / lam, n))
    chunk = Chunk(t, np.zeros(n, np.int16), np.zeros(n, np.int64), np.zeros(n, np.int64))
    eng = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(seed + 1),
                 bin_s=max(1.0, t[-1] / 100))
    start = time.process_time()
    eng.run_open([chunk], float(t[-1]) + 1.0)
    return time.process_time() - start


def bench_scenario(path: str, duration: float | None, reduce: bool) -> dict[str, float]:
    """Simulated requests per CPU-second and peak RSS of one replication of a scenario."""
    from sim.model.scenario import load_scenario
    from sim.model.topology import reduce_factor
    from sim.runner import replication_seeds, run_replication

    sets = [f"simulation.reduce={str(reduce).lower()}"]
    if duration:
        sets.append(f"simulation.duration_s={duration}")
    scen = load_scenario(path, sets)
    k = reduce_factor(scen)
    start = time.process_time()
    stats = run_replication(scen, k, replication_seeds(scen.simulation.seed, 1)[0], 0)
    cpu = time.process_time() - start
    simulated = sum(s.requests for s in stats)
    return {
        "requests": simulated,
        "cpu_s": cpu,
        "requests_per_cpu_s": simulated / cpu,
        "reduce_factor": k,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--servers", type=int, default=8)
    ap.add_argument("--rho", type=float, default=0.8)
    ap.add_argument("--scenario", default="scenarios/cup_final.yaml")
    ap.add_argument("--duration", type=float, default=None,
                    help="override simulation.duration_s of the scenario")
    ap.add_argument("--no-reduce", action="store_true")
    ap.add_argument("--skip-scenario", action="store_true")
    ap.add_argument("--update-baseline", action="store_true")
    ap.add_argument("--tolerance", type=float, default=0.25,
                    help="allowed relative drop of the engine/minimal ratio vs the baseline")
    args = ap.parse_args()

    c, mean_s = args.servers, 0.01
    lam = args.rho * c / mean_s
    n = args.customers
    t_min = min(minimal_simpy_mmc(lam, mean_s, c, n, 1) for _ in range(2))
    t_eng = min(engine_mmc(lam, mean_s, c, n, 1) for _ in range(2))
    ratio = t_min / t_eng
    print(f"M/M/{c} rho={args.rho} customers={n}")
    print(f"  minimal SimPy model : {n / t_min:>12,.0f} customers/CPU-s")
    print(f"  testbed engine      : {n / t_eng:>12,.0f} customers/CPU-s")
    print(f"  engine / minimal    : {ratio:>12.2f}  (goal >= 0.50)")
    figures: dict[str, float] = {"mmc_engine_over_minimal": ratio}
    if not args.skip_scenario:
        sc = bench_scenario(args.scenario, args.duration, not args.no_reduce)
        print(f"scenario {args.scenario} (one replication, all deployments, "
              f"reduce factor {sc['reduce_factor']:.0f})")
        print(f"  simulated requests  : {sc['requests']:>12,.0f}")
        print(f"  CPU seconds         : {sc['cpu_s']:>12.1f}")
        print(f"  requests / CPU-s    : {sc['requests_per_cpu_s']:>12,.0f}")
        print(f"  peak memory (RSS)   : {sc['peak_rss_mb']:>12,.0f} MB")
        figures["scenario_requests_per_cpu_s"] = sc["requests_per_cpu_s"]
    if args.update_baseline or not BASELINE.exists():
        BASELINE.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"baseline written: {BASELINE}")
        return 0
    base = json.loads(BASELINE.read_text())
    worst = 0
    for key in ("mmc_engine_over_minimal",):
        if key in base:
            rel = figures[key] / base[key]
            print(f"  {key}: {figures[key]:.2f} vs baseline {base[key]:.2f} ({rel:.0%})")
            if rel < 1 - args.tolerance:
                worst = 1
    return worst


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
