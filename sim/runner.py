"""Replications, common random numbers, warm-up cut and confidence intervals.

One *replication* simulates every deployment of the scenario on the same arrival stream
(common random numbers) and the same per-request service demands (streams keyed by the
request, ``KeyedDraws`` in ``sim/engine/sampling.py``), and reduces the raw output to
per-replication estimates; paired differences between deployments come from those
(``sim/analysis/paired.py``).
Replications are independent (``SeedSequence.spawn``) and run in parallel processes;
confidence intervals come from the spread of the per-replication estimates (Student t).
With a precision target, replications are added until every operation's p99 is known to the
target relative half-width, or the cap is reached.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from sim.analysis.fault_runs import recovery_rows
from sim.analysis.output_analysis import confidence_interval, mser5_time, replications_needed
from sim.analysis.paired import paired_differences
from sim.analysis.recovery import aggregate_recovery, peak_queue_table
from sim.analysis.saturation import is_growing, queue_growth
from sim.engine.contention import CONTENTION_METRICS
from sim.engine.core import Engine, RunOutput
from sim.engine.sampling import BatchDraws, KeyedDraws, child_seed
from sim.engine.sources import plan_sources
from sim.engine.waits import WAIT_SEGMENTS, segment_of, wait_percentiles_ms
from sim.model.cost import deployment_cost
from sim.model.faults import compile_faults
from sim.model.load import offered_load
from sim.model.scenario import Scenario
from sim.model.topology import (
    compile_topology,
    reduce_factor,
    reduce_refusal,
    reduce_stream_every,
)
from sim.reports.results import Results

ENGINE_NAME = "simpy"
PCTS = {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0, "p999_ms": 99.9}
OP_METRICS = ("throughput_rps", "error_rate", "mean_ms", *PCTS)
Progress = Callable[[float], None]


@dataclass
class RepStats:
    """Per-replication estimates of one deployment."""

    deployment: str
    replication: int
    warmup_s: float
    ops: dict[str, dict[str, float]]
    stations: dict[str, dict[str, float]]
    station_meta: dict[str, tuple[str, int]]
    timeseries: pd.DataFrame
    station_timeseries: pd.DataFrame
    wall_s: float = 0.0
    requests: int = 0
    recovery: list[dict[str, Any]] | None = None   # per fault and operation (faults only)
    policy: dict[str, float] | None = None  # resilience-policy counts (whole run, x k)
    host_pauses: tuple[int, float] | None = None  # (pauses, seconds paused): host.pauses only


def replication_seeds(seed: int, n: int) -> list[np.random.SeedSequence]:
    """Independent seed sequences for replications 0..n-1 (stable when n grows)."""
    return np.random.SeedSequence(seed).spawn(n)


def stationary_horizon(scenario: Scenario) -> float:
    """End of the part of the window before the first spike or fault (where a warm-up may be
    sought).

    MSER-5 assumes the output settles to one steady state; a spike or a fault is a planned
    change, not a transient, so the cut is searched only before the first one starts.
    """
    starts = [sp.start_s for sp in scenario.population.spikes]
    starts += [f.at_s for f in scenario.faults]
    return min([scenario.simulation.duration_s, *starts])


def _warmup_cut(out: RunOutput, warmup: str | float, horizon: float) -> float:
    if warmup != "auto":
        return min(float(warmup), out.duration_s * 0.5)
    sel = out.t < horizon
    if sel.sum() < 50 or horizon < 10 * out.bin_s:
        return 0.0
    return float(mser5_time(out.t[sel], out.latency[sel], out.bin_s))


def summarise(out: RunOutput, scenario: Scenario, k: int, replication: int,
              warmup: str | float) -> RepStats:
    """Reduce one run's raw output to per-replication estimates after the warm-up cut."""
    ops = list(scenario.operations)
    cut = _warmup_cut(out, warmup, stationary_horizon(scenario))
    span = out.duration_s - cut
    keep = out.t >= cut
    op_stats: dict[str, dict[str, float]] = {}
    for i, name in enumerate(ops):
        sel = keep & (out.op == i)
        n = int(sel.sum())
        err = out.error[sel]
        lat = out.latency[sel][~err] * 1000.0
        row = {
            "requests": n * k,
            "throughput_rps": n * k / span if span > 0 else math.nan,
            "error_rate": float(err.mean()) if n else math.nan,
            "mean_ms": float(lat.mean()) if len(lat) else math.nan,
        }
        if len(lat):
            vals = np.percentile(lat, list(PCTS.values()))
            row.update(dict(zip(PCTS, (float(v) for v in vals), strict=True)))
        else:
            row.update(dict.fromkeys(PCTS, math.nan))
        op_stats[name] = row
    if out.contention is not None:
        first_seg = segment_of(cut, out.duration_s)
        since = out.t >= first_seg * out.duration_s / WAIT_SEGMENTS  # the counted segments
        for i, name in enumerate(ops):
            n = int((since & (out.op == i)).sum())
            op_stats[name] |= out.contention.per_operation(i, first_seg, n)

    nb = len(out.stations[0].busy) if out.stations else 0
    edges = np.minimum(np.arange(1, nb + 1) * out.bin_s, out.duration_s)
    first = int(np.searchsorted(edges, cut, side="left")) if cut > 0 else -1
    st_stats: dict[str, dict[str, float]] = {}
    st_meta: dict[str, tuple[str, int]] = {}
    st_rows = []
    for ser in out.stations:
        busy = np.asarray(ser.busy)
        queue = np.asarray(ser.queue)
        comp = np.asarray(ser.completions, dtype=np.float64)
        b0, q0, c0 = (busy[first], queue[first], comp[first]) if first >= 0 else (0.0, 0.0, 0.0)
        t0 = edges[first] if first >= 0 else 0.0
        # up to the last snapshot: the one due at exactly duration_s is not taken (the run
        # stops first), so dividing by duration_s - t0 under-stated utilisation and queue
        # length by one bin
        t_span = (edges[-1] if nb else out.duration_s) - t0
        servers = max(ser.servers, 1)
        done = comp[-1] - c0 if nb else 0.0
        widths = np.diff(np.concatenate([[0.0], edges]))
        queue_bins = np.diff(np.concatenate([[0.0], queue])) / widths
        st_stats[ser.name] = {
            "utilisation": (busy[-1] - b0) / (servers * t_span) if ser.servers else math.nan,
            "mean_queue": (queue[-1] - q0) / t_span,
            "mean_wait_ms": (queue[-1] - q0) / done * 1000.0 if done > 0 else 0.0,
            "queue_growth": queue_growth(queue_bins[first + 1:], t_span),
        }
        # wait percentiles from the run's segments after the warm-up cut (math.nan: no waits)
        w50, w99 = (wait_percentiles_ms(ser.wait_counts, segment_of(cut, out.duration_s))
                    if ser.wait_counts is not None else [math.nan, math.nan])
        st_stats[ser.name] |= {"wait_p50_ms": w50, "wait_p99_ms": w99}
        st_meta[ser.name] = (ser.kind, ser.servers)
        st_rows.append(pd.DataFrame({
            "t_s": edges - widths,
            "station": ser.name,
            "utilisation": np.diff(np.concatenate([[0.0], busy])) / (servers * widths)
            if ser.servers else np.nan,
            "queue": queue_bins,
        }))
    st_ts = pd.concat(st_rows, ignore_index=True) if st_rows else pd.DataFrame()
    return RepStats(
        deployment=out.deployment,
        replication=replication,
        warmup_s=cut,
        ops=op_stats,
        stations=st_stats,
        station_meta=st_meta,
        timeseries=_op_timeseries(out, ops, k),
        station_timeseries=st_ts,
        requests=len(out.t),
    )


def _op_timeseries(out: RunOutput, ops: list[str], k: int) -> pd.DataFrame:
    b = np.floor(out.t / out.bin_s).astype(np.int64)
    df = pd.DataFrame({"bin": b, "op": out.op, "lat": out.latency * 1000.0, "err": out.error})
    ok = df[~df["err"]]
    g = ok.groupby(["bin", "op"])["lat"]
    stats = pd.DataFrame({
        "mean_ms": g.mean(),
        "p50_ms": g.quantile(0.5),
        "p99_ms": g.quantile(0.99),
    })
    counts = df.groupby(["bin", "op"]).agg(requests=("lat", "size"), errors=("err", "sum"))
    ts = counts.join(stats).reset_index()
    ts["t_s"] = ts["bin"] * out.bin_s
    ts["operation"] = [ops[i] for i in ts["op"]]
    ts["requests"] = ts["requests"] * k
    ts["errors"] = ts["errors"] * k
    return ts[["t_s", "operation", "requests", "errors", "mean_ms", "p50_ms", "p99_ms"]]


def run_replication(scenario: Scenario, k: int, seed: np.random.SeedSequence, replication: int,
                    deployments: list[str] | None = None,
                    progress: Progress | None = None, paired: bool = True) -> list[RepStats]:
    """Simulate every deployment once on common random numbers; return their estimates.

    Arrivals are shared by every deployment; with ``paired`` (the default) so are the
    per-request service demands (streams keyed by the request, one seed for all deployments),
    otherwise each deployment draws its demands from its own seed (independent streams).
    """
    sim = scenario.simulation
    names = deployments or [d.name for d in scenario.deployments]
    n_dep = len(scenario.deployments)
    # children by key (same as seed.spawn(...) on a fresh seed, but stateless)
    arrival_seed = child_seed(seed, 0)
    service_seeds = [child_seed(seed, 1 + i) for i in range(n_dep)]
    shared_demands = child_seed(seed, 1 + n_dep)
    results = []
    for di, dep in enumerate(scenario.deployments):
        if dep.name not in names:
            continue
        topo = compile_topology(scenario, dep, k)
        dem_seed = shared_demands if paired else child_seed(service_seeds[di], 0)
        rng = np.random.default_rng(service_seeds[di])
        engine = Engine(topo, rng, sim.timeseries_bin_s, on_bin=progress,
                        draws=KeyedDraws(dem_seed, BatchDraws(rng)))
        started = time.perf_counter()
        every = reduce_stream_every(topo.load_balancing, k)
        out = engine.run(plan_sources(scenario, k, arrival_seed, every), sim.duration_s)
        if progress is not None and hasattr(progress, "flush"):
            progress.flush()
        stats = summarise(out, scenario, k, replication, sim.warmup)
        stats.recovery, rolling = recovery_rows(out, topo.faults, scenario, k,
                                                stats.station_timeseries)
        if rolling is not None:
            stats.timeseries = stats.timeseries.merge(rolling, on=["t_s", "operation"],
                                                      how="left")
        stats.policy = policy_counts(out.policy, k)
        stats.host_pauses = out.host_pauses
        stats.wall_s = time.perf_counter() - started
        results.append(stats)
    return results


# ---------------------------------------------------------------------- aggregation


def policy_counts(counts: dict[str, float], k: int) -> dict[str, float]:
    """A run's policy counts for the whole system (x k), with retry amplification (attempts
    per call sent at least once: 1 when nothing was retried) overall and per call edge."""
    out = {n: (v if n.startswith("autoscaling:") or n == "replicas_added" else v * k)
           for n, v in counts.items()}
    for n in [n for n in out if n == "calls" or n.endswith(":calls")]:
        prefix = n[: -len("calls")]
        attempts = out[f"{prefix}attempts"]
        sent = attempts - out[f"{prefix}retries"]
        out[f"{prefix}retry_amplification"] = attempts / sent if sent else math.nan
    return out


def policy_summary(reps: list[RepStats]) -> dict[str, list[float]]:
    """Policy counts of one deployment over replications: name -> [mean, 95% half-width]."""
    names = sorted({n for r in reps for n in (r.policy or {})})
    return {n: list(_ci([(r.policy or {}).get(n, math.nan) for r in reps])) for n in names}


def _ci(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    if len(vals) == 1:
        return vals[0], math.nan
    m, h = confidence_interval(np.asarray(vals))
    return float(m), float(h)


def aggregate(scenario: Scenario, reps: list[RepStats], k: int, wall_s: float) -> Results:
    """Combine per-replication estimates into the shared results schema."""
    by_dep: dict[str, list[RepStats]] = {}
    for r in reps:
        by_dep.setdefault(r.deployment, []).append(r)
    order = [d.name for d in scenario.deployments if d.name in by_dep]
    rows, st_rows, ts, sts = [], [], [], []
    for dep in order:
        rs = sorted(by_dep[dep], key=lambda r: r.replication)
        for op in scenario.operations:
            row: dict[str, Any] = {"architecture": dep, "operation": op}
            row["requests"] = float(np.mean([r.ops[op]["requests"] for r in rs]))
            for m in (*OP_METRICS, *[c for c in CONTENTION_METRICS if c in rs[0].ops[op]]):
                mean, hw = _ci([r.ops[op][m] for r in rs])
                row[m], row[f"{m}_ci"] = mean, hw
            slo = scenario.slos.latency_ms.get(op)
            target = slo.p99 if slo is not None and slo.p99 is not None else math.nan
            row["slo_p99_ms"] = target
            if math.isnan(target) or math.isnan(row["p99_ms"]):
                row["slo_met"] = pd.NA
            else:
                hw = 0.0 if math.isnan(row["p99_ms_ci"]) else row["p99_ms_ci"]
                row["slo_met"] = bool(row["p99_ms"] + hw <= target)
            row["replications"] = len(rs)
            rows.append(row)
        for name, (kind, servers) in rs[0].station_meta.items():
            st: dict[str, Any] = {"architecture": dep, "station": name, "kind": kind,
                                  "servers": servers}
            for m in ("utilisation", "mean_queue", "mean_wait_ms", "wait_p50_ms", "wait_p99_ms",
                      "queue_growth"):
                st[m], st[f"{m}_ci"] = _ci([r.stations[name][m] for r in rs])
            st["growing"] = is_growing([r.stations[name]["queue_growth"] for r in rs],
                                       [r.stations[name]["mean_queue"] for r in rs])
            st_rows.append(st)
        for r in rs:
            t = r.timeseries.copy()
            t.insert(0, "replication", r.replication)
            t.insert(0, "architecture", dep)
            ts.append(t)
            s = r.station_timeseries.copy()
            s.insert(0, "replication", r.replication)
            s.insert(0, "architecture", dep)
            sts.append(s)
    sim = scenario.simulation
    notes = []
    if k > 1:
        notes.append(
            f"Reduced run: one representative partition of 1/{k} of every deployment "
            f"(replicas and shards divided by {k}, players partitioned by id); throughput is "
            f"scaled back to the whole system, latencies are those of the partition."
        )
        notes += reduce_approximations(scenario, order, k)
    refusal = reduce_refusal(scenario)
    if refusal is not None:
        notes.append(f"Not reduced: {refusal}.")
    notes += language_notes(scenario, order)
    notes += pause_notes(by_dep, order, scenario.simulation.duration_s)
    windows = [
        {"name": sp.name, "start_s": sp.start_s, "end_s": sp.start_s + sp.duration_s}
        for sp in scenario.population.spikes
    ]
    meta: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "source": "simulation",
        "engine": ENGINE_NAME,
        "seed": sim.seed,
        "replications": {d: len(by_dep[d]) for d in order},
        "warmup_s": {d: float(np.mean([r.warmup_s for r in by_dep[d]])) for d in order},
        "reduce_factor": k,
        "duration_s": sim.duration_s,
        "start_hour": sim.start_hour,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 2),
        "simulated_requests": int(sum(r.requests for r in reps)),
        "windows": windows,
        "slos": {op: s.targets() for op, s in scenario.slos.latency_ms.items()}
        | {"error_budget": scenario.slos.error_budget},
        "notes": notes,
        "saturation": saturation(scenario, order, pd.DataFrame(st_rows)),
        "policies": {d: policy_summary(by_dep[d]) for d in order},
    }
    meta |= comparison_meta(scenario, reps, order)
    meta["faults"] = [f.model_dump(exclude_none=True) | {"label": f.label()}
                      for f in scenario.faults]
    meta["fault_windows"] = [{"name": f.label(), "start_s": f.at_s, "end_s": f.end_s}
                             for f in scenario.faults]
    rec = [{"architecture": r.deployment, "replication": r.replication, **row}
           for dep in order for r in sorted(by_dep[dep], key=lambda r: r.replication)
           for row in r.recovery or []]
    concurrency = concurrency_meta(scenario, order)
    if concurrency:
        meta["concurrency"] = concurrency
    meta["peak_queue_per_station"] = peak_queue_table(rec)
    return Results(
        meta=meta,
        summary=pd.DataFrame(rows),
        stations=pd.DataFrame(st_rows),
        timeseries=pd.concat(ts, ignore_index=True) if ts else pd.DataFrame(),
        station_timeseries=pd.concat(sts, ignore_index=True) if sts else pd.DataFrame(),
        recovery=aggregate_recovery(rec),
    )


def pause_notes(by_dep: dict[str, list[RepStats]], order: list[str],
                duration_s: float) -> list[str]:
    """One line per deployment whose host pauses (``host.pauses``): pauses and paused time
    per replication (means over replications)."""
    notes = []
    for dep in order:
        counts = [r.host_pauses for r in by_dep[dep] if r.host_pauses is not None]
        if not counts:
            continue
        n = float(np.mean([c[0] for c in counts]))
        s = float(np.mean([c[1] for c in counts]))
        notes.append(f"{dep}: host pauses: {n:.0f}, {s:.3g} s paused per replication "
                     f"({s / duration_s:.2%} of the run).")
    return notes


def per_replication_table(reps: list[RepStats]) -> pd.DataFrame:
    """One row per (architecture, replication, operation) with that replication's estimates."""
    rows = [{"architecture": r.deployment, "replication": r.replication, "operation": op} | vals
            for r in reps for op, vals in r.ops.items()]
    return pd.DataFrame(rows)


def comparison_meta(scenario: Scenario, reps: list[RepStats], order: list[str]) -> dict[str, Any]:
    """``cost`` (cores and connections per deployment) and ``paired`` (paired differences
    between deployments, records of :func:`sim.analysis.paired.paired_differences`)."""
    cost = {d.name: deployment_cost(d).as_dict() for d in scenario.deployments
            if d.name in order}
    paired = paired_differences(per_replication_table(reps), order) if len(order) > 1 else None
    records = [] if paired is None else paired.to_dict(orient="records")
    return {"cost": cost, "paired": records}


def reduce_approximations(scenario: Scenario, deployments: list[str], k: int) -> list[str]:
    """What a reduced run reproduces exactly and what it approximates, per balancing policy."""
    out = []
    policies = {d.load_balancing for d in scenario.deployments if d.name in deployments}
    if "round_robin" in policies:
        out.append(
            f"Round robin: the partition is fed every {k}-th arrival of the whole system's "
            f"stream (a renewal stream, not a thinned Poisson one), and its arrivals' "
            f"operations are scheduled so that each operation's own arrivals are every "
            f"{k}-th of its full-system stream too: a simulated replica of a service that "
            f"every request, or a single operation, visits gets every R-th of its requests, "
            f"as in the full system. Approximations: a service several but not all "
            f"operations visit gets a superposition of such streams (a little rougher), a "
            f"branch step (probability < 1) a thinned one (rougher), explicit-rate workloads "
            f"stay Poisson, and database and cache shards (chosen by player: Poisson in the "
            f"full system) get a smoother stream than in the full system.")
    if "random" in policies:
        out.append("Random balancing: the partition's players arrive as a Poisson stream of "
                   f"1/{k} of the load and each replica gets a Poisson stream of 1/R of it, "
                   "as in the full system.")
    return out


def saturation(scenario: Scenario, deployments: list[str],
               stations: pd.DataFrame) -> dict[str, Any]:
    """Saturation seen before the run (offered utilisation >= 1 at the peak, from the
    topology) and after it (stations whose queue grew through the run); ``unstable`` when
    either holds: then figures grow with the run length."""
    before = [
        {"architecture": o.deployment, "station": o.station, "kind": o.kind,
         "servers": o.servers, "offered_utilisation": round(o.utilisation, 4), "at_s": o.at_s,
         "basis": o.basis}
        for o in offered_load(scenario) if o.deployment in deployments and o.saturated
    ]
    after = []
    if not stations.empty:
        for r in stations[stations["growing"]].itertuples(index=False):
            after.append({"architecture": r.architecture, "station": r.station,
                          "kind": r.kind, "queue_growth": r.queue_growth,
                          "queue_growth_ci": r.queue_growth_ci, "mean_queue": r.mean_queue})
    return {"unstable": bool(before or after), "saturated_before_run": before,
            "growing_after_run": after}


def concurrency_meta(scenario: Scenario, deployments: list[str]) -> dict[str, str]:
    """How each deployment controls writes to contended rows (``meta["concurrency"]``; empty
    when no step of any deployment locks or version-checks a row)."""
    out = {}
    for name in deployments:
        dep = scenario.deployment(name)
        if not compile_topology(scenario, dep).contended:
            continue
        parts = [dep.concurrency]
        parts += [f"database {d.name} {d.concurrency}" for d in dep.databases
                  if d.concurrency not in (None, dep.concurrency)]
        parts += [f"hot account {h} {a.concurrency}" for h, a in dep.hot_accounts.items()
                  if a.concurrency not in (None, dep.concurrency_of(a.database))]
        r = dep.conflict_retry
        if "optimistic" in " ".join(parts):
            parts.append(f"at most {r.max_attempts} attempts, backoff {r.backoff_base_ms:g}-"
                         f"{r.backoff_cap_ms:g} ms")
        out[name] = "; ".join(parts)
    return out


def language_notes(scenario: Scenario, deployments: list[str]) -> list[str]:
    """What the results must state about read replicas (their replication lag), caches and
    the workloads that ran next to the population."""
    notes = []
    for name in deployments:
        dep = scenario.deployment(name)
        for db in dep.databases:
            if db.read_replicas:
                notes.append(
                    f"{name}: database {db.name} serves reads from {db.read_replicas} read "
                    f"replica(s) per shard with an asynchronous replication lag of "
                    f"{db.replication_lag_ms:g} ms: a read may miss the writes of the last "
                    f"{db.replication_lag_ms:g} ms (replaying writes costs the replicas "
                    f"nothing in the model)."
                )
        for c in dep.caches:
            notes.append(f"{name}: cache {c.name} hit ratio {c.hit_ratio:g} (given, not "
                         f"derived from the access pattern).")
    for name in deployments:
        topo_faults = compile_faults(scenario.faults, scenario.deployment(name),
                                     list(scenario.operations), scenario.players)
        notes += [f"{name}: fault {f.name} does nothing here: {f.inert}." for f in topo_faults
                  if f.inert is not None]
    for wl in scenario.workloads:
        what = (f"{wl.users} closed users" if wl.users is not None
                else "an explicit rate" if wl.rate_table is None else "a rate table")
        notes.append(f"workload {wl.name}: {what} next to the population, operations "
                     f"{', '.join(wl.operations)}.")
    return notes


# ---------------------------------------------------------------------- driver


def _p99_shortfall(scenario: Scenario, reps: list[RepStats], precision: float) -> int:
    """Replications still needed so that every p99 is within ``precision`` (0 if met)."""
    need = 0
    by_dep: dict[str, list[RepStats]] = {}
    for r in reps:
        by_dep.setdefault(r.deployment, []).append(r)
    for rs in by_dep.values():
        for op in scenario.operations:
            vals = np.array([r.ops[op]["p99_ms"] for r in rs], dtype=float)
            vals = vals[~np.isnan(vals)]
            if len(vals) < 2:
                continue
            n_star = replications_needed(vals, precision)
            need = max(need, n_star - len(rs))
    return need


def run(scenario: Scenario, *, replications: int | None = None, precision: float | None = None,
        jobs: int | None = None, progress: bool = False,
        deployments: list[str] | None = None, paired: bool = True) -> Results:
    """Simulate a scenario and return :class:`~sim.reports.results.Results` (pandas DataFrames).

    ``replications`` and ``precision`` default to the scenario's ``simulation`` settings;
    ``jobs`` is the number of worker processes (default: the machine's cores, 1 = in this
    process); ``progress`` shows a bar of simulated time; ``paired=False`` draws each
    deployment's service demands from its own streams (the baseline paired comparisons beat).
    """
    sim = scenario.simulation
    n0 = replications or sim.replications
    target = precision if precision is not None else sim.precision
    cap = max(sim.max_replications, n0)
    k = reduce_factor(scenario)
    seeds = replication_seeds(sim.seed, cap)
    n_dep = len(deployments) if deployments else len(scenario.deployments)
    jobs = jobs or min(os.cpu_count() or 1, n0)
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=round(n0 * n_dep * sim.duration_s), unit="sim-s",
                   desc=f"{scenario.name}", dynamic_ncols=True)
    reps: list[RepStats] = []
    try:
        done = _execute(scenario, k, seeds, range(n0), deployments, jobs, bar, paired)
        reps.extend(done)
        while target is not None and len(reps) // n_dep < cap:
            more = _p99_shortfall(scenario, reps, target)
            if more <= 0:
                break
            have = len(reps) // n_dep
            batch = range(have, min(cap, have + max(more, 1)))
            if bar is not None:
                bar.total += round(len(batch) * n_dep * sim.duration_s)
                bar.refresh()
            reps.extend(_execute(scenario, k, seeds, batch, deployments, jobs, bar,
                                  paired))
    finally:
        if bar is not None:
            bar.close()
    res = aggregate(scenario, reps, k, time.perf_counter() - started)
    if target is not None:
        res.meta["precision_target"] = target
        res.meta["precision_met"] = _p99_shortfall(scenario, reps, target) <= 0
    return res


def _execute(scenario: Scenario, k: int, seeds: list[np.random.SeedSequence], which: range,
             deployments: list[str] | None, jobs: int, bar: Any,
             paired: bool = True) -> list[RepStats]:
    if jobs <= 1 or len(which) <= 1:
        out: list[RepStats] = []
        tick = (lambda dt: bar.update(dt)) if bar is not None else None
        for i in which:
            out.extend(run_replication(scenario, k, seeds[i], i, deployments, tick, paired))
        return out
    import multiprocessing as mp

    # fork (Linux) needs no `if __name__ == "__main__"` guard in users' scripts and notebooks;
    # the children only simulate, they start no threads of their own.
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Manager() as manager:
        queue = manager.Queue() if bar is not None else None
        with ProcessPoolExecutor(max_workers=min(jobs, len(which)), mp_context=ctx) as pool:
            futures: list[Future[list[RepStats]]] = [
                pool.submit(run_replication, scenario, k, seeds[i], i, deployments,
                            _QueueTick(queue) if queue is not None else None, paired)
                for i in which
            ]
            while not all(f.done() for f in futures):
                _drain(queue, bar, wait=0.2)
            _drain(queue, bar, wait=0.0)
            out = []
            for f in futures:
                out.extend(f.result())
    return out


class _QueueTick:
    """Picklable progress callback forwarding simulated seconds to the parent process."""

    def __init__(self, queue: Any):
        self.queue = queue
        self.pending = 0.0

    def __call__(self, dt: float) -> None:
        self.pending += dt
        if self.pending >= 5.0:
            self.flush()

    def flush(self) -> None:
        """Send what has not been reported yet."""
        if self.pending > 0.0:
            self.queue.put(self.pending)
            self.pending = 0.0


def _drain(queue: Any, bar: Any, wait: float) -> None:
    if queue is None:
        time.sleep(wait)
        return
    import queue as _q

    try:
        item = queue.get(timeout=wait) if wait else queue.get_nowait()
        bar.update(item)
        while True:
            bar.update(queue.get_nowait())
    except _q.Empty:
        return
