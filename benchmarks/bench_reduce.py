"""Reduced vs full runs of a scenario, per load-balancing policy (``--reduce`` fidelity).

For each policy every deployment is made to balance that way, the scenario is simulated
reduced (at its own factor) and at full size on the same seeds, and each operation's p50 and
p99 per deployment are compared: they agree when their 95% intervals overlap; a difference
is *confirmed* when Welch's test rejects after Holm's correction over all the comparisons
(exit 1 if any is). A policy that cannot be reduced (least outstanding) prints the refusal.

    python benchmarks/bench_reduce.py scenarios/baseline_day.yaml --duration 30 -r 4
    python benchmarks/bench_reduce.py scenarios/baseline_day.yaml --policy round_robin \\
        -a microservices --legacy-poisson        # the old thinned-Poisson feed, for contrast
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

import sim.runner
from sim.analysis.reduce_check import POLICIES, compare
from sim.model.scenario import load_scenario


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", type=Path)
    ap.add_argument("--policy", choices=POLICIES, action="append",
                    help="policies to check (repeatable; default: all)")
    ap.add_argument("--duration", type=float, default=None, help="simulated seconds")
    ap.add_argument("--reduced-duration", type=float, default=None,
                    help="simulated seconds of the reduced run (default: --duration); it "
                         "sees 1/k of the requests, so rare operations need a longer window")
    ap.add_argument("-r", "--replications", type=int, default=None)
    ap.add_argument("-a", "--architecture", action="append", help="only these deployments")
    ap.add_argument("-j", "--jobs", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                    help="scenario override, as testbed's --set (e.g. to start a spike at 0)")
    ap.add_argument("--legacy-poisson", action="store_true",
                    help="feed reduced round-robin runs a thinned Poisson stream (old behaviour)")
    args = ap.parse_args()
    if args.legacy_poisson:
        sim.runner.reduce_stream_every = lambda _lb, _k: 1
    scen = load_scenario(args.scenario, args.set)
    overrides = {}
    if args.duration is not None:
        overrides["duration_s"] = args.duration
    if args.replications is not None:
        overrides["replications"] = args.replications
    pd.set_option("display.width", 200)
    worst = 0
    for policy in args.policy or POLICIES:
        started = time.process_time()
        df = compare(scen, policy, jobs=args.jobs, deployments=args.architecture,
                     reduced_duration_s=args.reduced_duration, **overrides)
        cpu = time.process_time() - started
        print(f"\n## {scen.name}: {policy} (reduce factor {df.attrs.get('reduce_factor')}, "
              f"{cpu:.0f} CPU-s in this process)")
        if df.empty:
            print(f"refused: {df.attrs.get('refusal')}")
            continue
        shown = df.assign(rel_diff=(df["rel_diff"] * 100).round(1))
        print(shown.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
        bad = int((~df["agree"]).sum())
        real = int(df["confirmed"].sum())
        worst = max(worst, real)
        print(f"{len(df) - bad} of {len(df)} comparisons agree (95% intervals overlap); "
              f"{real} differences confirmed by Welch + Holm at 5% family-wise")
    return 1 if worst else 0


if __name__ == "__main__":
    raise SystemExit(main())
