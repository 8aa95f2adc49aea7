"""Arrival generation speed and online-pool memory for a million online players.

Run: ``python benchmarks/bench_arrivals.py`` (defaults: 1,000,000 online of 10,000,000
registered, 4 actions a minute, 30-minute sessions, 60 simulated seconds; ``--spike`` adds a
5x bet spike over the middle third, which takes the per-operation thinning path;
``--session-minutes`` shortens the sessions to stress the turnover). Or pass
``--scenario FILE`` to time a shipped scenario's own population over its window.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Any

import numpy as np

from sim.model.population import ArrivalStream
from sim.model.scenario import Scenario, load_scenario, parse_scenario

OPS = {"login": 0.02, "balance": 0.2, "bet": 0.4, "win": 0.34, "rollback": 0.005,
       "deposit": 0.03, "withdrawal": 0.005}


def synthetic_scenario(online: int, registered: int, apm: float, duration_s: float,
                       spike: bool, session_minutes: float = 30.0) -> Scenario:
    """A flat-curve scenario of ``online`` players; only its population matters here."""
    step = {"component": "app", "cpu": {"kind": "constant", "value_ms": 1}}
    spikes = [{"name": "cup final", "start_s": duration_s / 3, "duration_s": duration_s / 3,
               "multiplier": 5, "operations": ["bet"]}] if spike else []
    raw: dict[str, Any] = {
        "name": "bench_arrivals",
        "simulation": {"start_hour": 20.0, "duration_s": duration_s},
        "population": {"registered_players": registered, "peak_online": online,
                       "online_curve": [1.0] * 24, "spikes": spikes,
                       "session": {"actions_per_minute": apm,
                                   "mean_session_minutes": session_minutes}},
        "operations": {name: {"weight": w, "steps": [step]} for name, w in OPS.items()},
        "deployments": [{"name": "m", "kind": "monolith",
                         "services": [{"name": "app", "components": ["app"]}]}],
    }
    return parse_scenario(raw, "bench_arrivals")


def measure(scenario: Scenario, seed: int, chunk_s: float, parts: int) -> dict[str, float]:
    """Build the stream and drain it, timing both and tracing peak numpy memory.

    Memory per online player counts the slots, the spare players' rings and the session
    clocks (``ArrivalStream.nbytes``).
    """
    tracemalloc.start()
    t0 = time.perf_counter()
    stream = ArrivalStream(scenario, np.random.default_rng(seed), partition=(0, parts))
    t1 = time.perf_counter()
    arrivals = 0
    for ch in stream.chunks(chunk_s):
        arrivals += ch.t.size
    t2 = time.perf_counter()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "pool players": stream.pool.size,
        "spare players": stream.pool.spare_size,
        "pool MB": stream.nbytes / 2**20,
        "pool bytes / online player": stream.nbytes / stream.pool.size,
        "pool build s": t1 - t0,
        "sessions started": stream.pool.started,
        "sessions expected": stream.sessions_started(0.0, stream.duration_s),
        "arrivals": arrivals,
        "arrivals / simulated s": arrivals / scenario.simulation.duration_s,
        "generation s": t2 - t1,
        "arrivals generated / s": arrivals / (t2 - t1),
        "peak traced MB": peak / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--online", type=int, default=1_000_000, help="players online")
    ap.add_argument("--registered", type=int, default=10_000_000, help="registered players")
    ap.add_argument("--apm", type=float, default=4.0, help="actions per player per minute")
    ap.add_argument("--duration", type=float, default=60.0, help="simulated seconds")
    ap.add_argument("--session-minutes", type=float, default=30.0, help="mean session length")
    ap.add_argument("--chunk", type=float, default=1.0, help="chunk length in seconds")
    ap.add_argument("--spike", action="store_true", help="add a 5x bet spike mid-window")
    ap.add_argument("--partition", type=int, default=1, help="K of a reduced run (0, K)")
    ap.add_argument("--scenario", help="time this scenario's population instead")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.scenario:
        scenario = load_scenario(args.scenario)
    else:
        scenario = synthetic_scenario(args.online, args.registered, args.apm, args.duration,
                                      args.spike, args.session_minutes)
    figures = measure(scenario, args.seed, args.chunk, args.partition)
    print(f"arrivals benchmark: {scenario.name}, partition 1/{args.partition}, "
          f"chunk {args.chunk:g} s")
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        text = f"{value:,.0f}" if value >= 100 else f"{value:,.3f}"
        print(f"  {key:<{width}}  {text:>14}")


if __name__ == "__main__":
    main()
