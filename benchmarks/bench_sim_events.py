"""Deterministic simulator cost: SimPy events per request of each operation, vs a baseline.

Times of the engine move with the machine's load (``bench_engine.py``); the number of SimPy
events a request costs does not. For each deployment of ``scenarios/baseline_day.yaml`` (at
full size) and each operation, :data:`REQUESTS` requests of that operation alone are
simulated one second apart (no queueing: the count is the path's own), on fixed seeds, in a
SimPy environment that counts the events it processes; the count of a run without requests
(the station samplers) is taken off. Branches and cache hits are drawn per request from the
fixed seed, so the count is the same on every machine and every run.

``--check`` exits 1 when any count rises above ``benchmarks/baseline_sim_events.json`` (a
fall is reported, to be recorded with ``--update-baseline``); CI runs it through
``tests/benchmarks/test_sim_events.py``.

    python benchmarks/bench_sim_events.py                    # print the table
    python benchmarks/bench_sim_events.py --check            # CI: fail when a count rose
    python benchmarks/bench_sim_events.py --update-baseline  # record the current counts
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import simpy
from baseline_file import report_check, write_baseline

from sim.engine.core import Engine
from sim.engine.sampling import BatchDraws, KeyedDraws
from sim.model.population import ArrivalChunk
from sim.model.scenario import Scenario, load_scenario
from sim.model.topology import compile_topology

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "baseline_day.yaml"
BASELINE = Path(__file__).with_name("baseline_sim_events.json")
REQUESTS = 50
"""Requests of each operation per count (one second apart)."""
SEED = 20261130


class CountingEnvironment(simpy.Environment):
    """A SimPy environment counting the events it processes (one per :meth:`step`)."""

    def __init__(self) -> None:
        super().__init__()
        self.events = 0

    def step(self) -> None:
        self.events += 1
        super().step()


def _events(scenario: Scenario, deployment: int, op: int, n: int) -> int:
    """Events of a run of ``n`` requests of operation ``op``, one second apart."""
    topo = compile_topology(scenario, scenario.deployments[deployment], 1)
    env = CountingEnvironment()
    rng = np.random.default_rng(SEED)
    engine = Engine(topo, rng, 1.0, env=env,
                    draws=KeyedDraws(np.random.SeedSequence(SEED), BatchDraws(rng)))
    t = np.arange(1.0, n + 1.0)
    chunk = ArrivalChunk(t, np.full(n, op, dtype=np.int16),
                         np.arange(n, dtype=np.int64) * 7919, np.zeros(n, dtype=np.int64))
    engine.run_open([chunk], REQUESTS + 2.0)
    return env.events


def measure(scenario: Scenario | None = None) -> dict[str, int]:
    """``{"scenario/deployment/operation": events of REQUESTS requests}``."""
    scen = scenario if scenario is not None else load_scenario(SCENARIO)
    out = {}
    for di, dep in enumerate(scen.deployments):
        idle = _events(scen, di, 0, 0)
        for oi, name in enumerate(scen.operations):
            out[f"{scen.name}/{dep.name}/{name}"] = _events(scen, di, oi, REQUESTS) - idle
    return out


def compare(current: dict[str, int], baseline: dict[str, int]) -> tuple[list[str], list[str]]:
    """(rises, falls) of ``current`` against ``baseline``, one line each; a case missing
    from the baseline is a rise (it must be recorded)."""
    rises, falls = [], []
    for case, n in sorted(current.items()):
        base = baseline.get(case)
        if base is None:
            rises.append(f"{case}: not in the baseline (run --update-baseline)")
        elif n > base:
            rises.append(f"{case}: events {base} -> {n} per {REQUESTS} requests")
        elif n < base:
            falls.append(f"{case}: events {base} -> {n} per {REQUESTS} requests")
    return rises, falls


def load_baseline(path: Path = BASELINE) -> dict[str, int]:
    """The stored counts."""
    counts: dict[str, int] = json.loads(path.read_text())["events"]
    return counts


def table(counts: dict[str, int]) -> str:
    """Markdown table: events per request of each case."""
    lines = ["| scenario/deployment/operation | SimPy events per request |", "|---|---:|"]
    lines += [f"| {case} | {n / REQUESTS:.2f} |" for case, n in sorted(counts.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true",
                       help="exit 1 when a count rose above the baseline")
    group.add_argument("--update-baseline", action="store_true",
                       help=f"write the counts to {BASELINE.name}")
    args = parser.parse_args(argv)
    counts = measure()
    print(table(counts))
    if args.update_baseline:
        write_baseline(
            BASELINE,
            f"SimPy events of {REQUESTS} isolated requests per operation and deployment, "
            "from benchmarks/bench_sim_events.py; CI fails when one rises",
            "python benchmarks/bench_sim_events.py --update-baseline", "events", counts)
        return 0
    if args.check:
        return report_check(*compare(counts, load_baseline()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
