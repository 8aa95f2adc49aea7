"""Variance reduction of keyed demand streams for paired comparisons between deployments.

Simulates a scenario twice with the same seeds: demands drawn from streams keyed by the
request and shared by every deployment (the default), then from independent streams per
deployment. Prints, per pair of deployments, operation and metric, the variance of the
paired difference under each, and the reduction factor (independent / keyed variance). Both
runs share arrivals (common random numbers); only the demand streams differ.

    python benchmarks/bench_paired.py --scenario scenarios/baseline_day.yaml \\
        --duration 30 --replications 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def variance_reduction(scenario: str, duration: float, replications: int,
                       jobs: int | None) -> pd.DataFrame:
    """One row per (reference, architecture, operation, metric) with both variances."""
    from sim.model.scenario import load_scenario
    from sim.runner import run

    scen = load_scenario(scenario, [f"simulation.duration_s={duration}",
                                    f"simulation.replications={replications}"])
    frames = {}
    for paired in (True, False):
        res = run(scen, jobs=jobs, paired=paired)
        df = pd.DataFrame(res.meta["paired"])
        frames[paired] = df.set_index(["reference", "architecture", "operation", "metric"])
    keyed, indep = frames[True], frames[False]
    # the paired t half-width is t * sd / sqrt(n) with the same n and t in both runs
    out = pd.DataFrame({
        "difference_ms": keyed["difference"],
        "keyed_ci_ms": keyed["ci"],
        "independent_ci_ms": indep["ci"],
        "unpaired_ci_ms": keyed["unpaired_ci"],
    })
    out["variance_reduction"] = (out["independent_ci_ms"] / out["keyed_ci_ms"]) ** 2
    return out.reset_index()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenario", default="scenarios/baseline_day.yaml")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--replications", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args()
    table = variance_reduction(args.scenario, args.duration, args.replications, args.jobs)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(table.round(4).to_string(index=False))
    for metric in ("mean_ms", "p99_ms"):
        v = table.loc[table["metric"] == metric, "variance_reduction"].replace(np.inf, np.nan)
        print(f"{metric}: variance reduction median {v.median():.1f}x, "
              f"range {v.min():.1f}x .. {v.max():.1f}x over {v.notna().sum()} comparisons")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
