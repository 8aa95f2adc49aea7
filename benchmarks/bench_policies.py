"""Resilience policies, shown: the four judged cases, each with a figure and a table.

    python benchmarks/bench_policies.py                 # all cases -> benchmarks/policies/*.png
    python benchmarks/bench_policies.py --case storm    # hang, storm, payments, priorities, ...
    python benchmarks/bench_policies.py --cost          # CPU of the call policies per request

* ``hang``: the fraud service hangs; the edge calls it with timeout + breaker (only deposits
  fail), with the reference's defaults, and with no policy (the edge's workers fill, bets fail);
* ``storm``: ``scenarios/retry_storm.yaml``: a short trigger; internal retries without a
  budget keep the wallet down after it ends (metastable), a retry budget or a breaker recover;
* ``payments``: ``scenarios/slow_payments.yaml``: the payment provider 10x slower for a
  minute, with the reference's defaults, no policy, and a timeout + bulkhead on its calls;
* ``priorities``: a saturated wallet; FIFO against a priority queue shedding reporting;
* ``autoscaling``: a load step; replicas added after the provisioning delay, cooldown and
  maximum respected.

Every figure comes from ``sim.run`` (replications, 95% t-intervals); the tests in
``tests/sim/test_policies.py`` assert the same behaviour on the same files.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
CASES = HERE / "policies"
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from sim.model.scenario import Scenario, load_scenario  # noqa: E402
from sim.reports.policy_report import policies_markdown  # noqa: E402
from sim.reports.results import Results  # noqa: E402
from sim.runner import run  # noqa: E402

CASE_FILES = {
    "hang": CASES / "fraud_hang.yaml",
    "storm": ROOT / "scenarios" / "retry_storm.yaml",
    "payments": ROOT / "scenarios" / "slow_payments.yaml",
    "priorities": CASES / "priorities.yaml",
    "autoscaling": CASES / "autoscaling.yaml",
}


def windows(res: Results, width_s: float) -> pd.DataFrame:
    """Per deployment, operation and window of ``width_s``: availability (share of requests
    answered without error) and the median over replications of the successful requests'
    p99, next to each other (shedding cannot make a deployment look faster)."""
    ts = res.timeseries.copy()
    ts["window_s"] = (ts["t_s"] // width_s) * width_s
    g = ts.groupby(["architecture", "operation", "window_s"]).agg(
        requests=("requests", "sum"), errors=("errors", "sum"), p99_ms=("p99_ms", "median"))
    g["availability"] = 1.0 - g["errors"] / g["requests"]
    return g.reset_index()


def availability_after(res: Results, t_s: float, operation: str | None = None
                       ) -> dict[str, float]:
    """Share of requests answered without error after ``t_s``, per deployment."""
    ts = res.timeseries
    ts = ts[ts["t_s"] >= t_s]
    if operation is not None:
        ts = ts[ts["operation"] == operation]
    g = ts.groupby("architecture")[["requests", "errors"]].sum()
    return {a: 1.0 - r.errors / r.requests if r.requests else math.nan
            for a, r in g.iterrows()}


def run_case(name: str, overrides: list[str] | None = None,
             replications: int | None = None) -> tuple[Scenario, Results]:
    scen = load_scenario(CASE_FILES[name], overrides)
    return scen, run(scen, replications=replications, jobs=1)


def plot_windows(res: Results, title: str, path: Path, width_s: float, operation: str) -> None:
    """Per deployment, one line each: availability of all its requests per window, and the
    p99 of ``operation``'s successful requests; the spikes' and faults' windows shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = windows(res, width_s)
    scaled = any(c.get("replicas_added") for c in res.meta.get("policies", {}).values())
    fig, axes = plt.subplots(3 if scaled else 2, 1, figsize=(9, 8 if scaled else 6),
                             sharex=True)
    ax1, ax2 = axes[0], axes[1]
    for arch, g in w.groupby("architecture", sort=False):
        tot = g.groupby("window_s")[["requests", "errors"]].sum()
        ax1.plot(tot.index, 1.0 - tot["errors"] / tot["requests"], marker=".", label=arch)
        op = g[g["operation"] == operation]
        ax2.plot(op["window_s"], op["p99_ms"], marker=".", label=arch)
    for ax in axes:
        for win in [*res.meta.get("windows", []), *res.meta.get("fault_windows", [])]:
            ax.axvspan(win["start_s"], win["end_s"], color="grey", alpha=0.2)
        ax.grid(alpha=0.3)
    if scaled:  # replicas serving: CPU stations busy in the bin, median over replications
        st = res.station_timeseries
        cpu = st[st["station"].str.endswith(".cpu") & (st["utilisation"] > 0)]
        live = (cpu.groupby(["architecture", "replication", "t_s"]).size()
                .groupby(["architecture", "t_s"]).median())
        for arch, g in live.groupby(level=0):
            axes[2].step(g.index.get_level_values(1), g.values, where="post", label=arch)
        axes[2].set_ylabel("replicas serving")
        axes[2].grid(alpha=0.3)
    ax1.set_ylabel("availability (all operations)")
    ax2.set_ylabel(f"{operation}: p99 of successes (ms)")
    ax2.set_yscale("log")
    axes[-1].set_xlabel(f"simulated time (s), windows of {width_s:g} s")
    ax1.set_title(title, fontsize=10)
    ax1.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_table(res: Results) -> str:
    s = res.summary
    rows = ["| deployment | operation | error rate | p99 ms (successes) |", "|---|---|---|---|"]
    for _, r in s.iterrows():
        rows.append(f"| {r.architecture} | {r.operation} | {r.error_rate:.3f} | "
                    f"{r.p99_ms:,.1f} ± {r.p99_ms_ci if not math.isnan(r.p99_ms_ci) else 0:,.1f} |")
    return "\n".join(rows)


def policy_cost(rounds: int = 3) -> None:
    """CPU per simulated request of ``slow_payments.yaml`` without its fault, microservices with
    the reference's call policies against no policy, alternated (same arrivals, keyed demands);
    the policies never act here, so the difference is their bookkeeping."""
    import time

    import numpy as np

    from sim.engine.core import Engine
    from sim.engine.sampling import BatchDraws, KeyedDraws, child_seed
    from sim.engine.sources import plan_sources
    from sim.model.topology import compile_topology

    scen = load_scenario(CASE_FILES["payments"], ["faults=[]", "simulation.duration_s=40"])
    cost: dict[str, list[float]] = {"microservices": [], "microservices+no_policy": []}
    for _ in range(rounds):
        for dep in cost:
            ss = np.random.SeedSequence(1)
            rng = np.random.default_rng(child_seed(ss, 1))
            eng = Engine(compile_topology(scen, scen.deployment(dep)), rng, 1.0,
                         draws=KeyedDraws(child_seed(ss, 2), BatchDraws(rng)))
            start = time.process_time()
            out = eng.run(plan_sources(scen, 1, child_seed(ss, 0)), scen.simulation.duration_s)
            cost[dep].append((time.process_time() - start) / len(out.t) * 1e6)
    for dep, v in cost.items():
        print(f"{dep:26s} {min(v):6.1f} us CPU per request (min of {rounds})")
    ratio = min(cost["microservices"]) / min(cost["microservices+no_policy"])
    print(f"ratio policies / none: {ratio:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=sorted(CASE_FILES), action="append",
                    help="run only this case (repeatable); default: all")
    ap.add_argument("--cost", action="store_true",
                    help="only the CPU cost of the reference's call policies (microservices)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.cost:
        policy_cost()
        return 0
    cases = args.case or list(CASE_FILES)
    for name in cases:
        scen, res = run_case(name)
        fig = CASES / f"{name}.png"
        plot_windows(res, f"{scen.name}: {scen.description}", fig,
                     width_s=max(2.0, scen.simulation.duration_s / 30), operation="bet")
        print(f"\n## {name} ({CASE_FILES[name].relative_to(ROOT)}), figure {fig.relative_to(ROOT)}"
              f", wall {res.meta['wall_s']} s\n")
        print(summary_table(res))
        print()
        print(policies_markdown(res))
        if name == "storm":
            print("\navailability after the trigger + 60 s:",
                  {k: round(v, 4) for k, v in availability_after(res, 100.0).items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
