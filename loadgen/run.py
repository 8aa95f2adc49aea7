"""One load run from plan to results: server CPU watch, generator, merge, saturation check,
results in the simulator's schema and the report."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loadgen.openloop import Hooks, OpenLoopConfig, run_open_loop
from loadgen.probe import (
    LOCAL_HOSTS,
    SHARED_PREFIX,
    CpuWatch,
    database_processes,
    names_from_health,
    saturation,
    server_processes,
)
from loadgen.record import Recorder, RunInfo, merge, to_results
from loadgen.signing import Credentials
from sim.model.scenario import Scenario
from sim.reports.report import write_report
from sim.reports.results import Results


@dataclass(frozen=True)
class Plan:
    """What every load run needs, whatever the mode."""

    scenario: Scenario
    target: str
    host: str
    port: int
    duration_s: float
    players: int
    seed: int
    credentials: Credentials | None
    architecture: str
    prefix: str
    database: str | None = None
    """PostgreSQL database the back office uses on this machine: its backends are watched
    with the back office's processes (labelled :data:`loadgen.probe.SHARED_PREFIX`), so
    their CPU is not read as the rest of the machine's."""
    database_url: str | None = None
    """The same database as a ``postgresql://`` URL (``--database URL``): before each
    measured level a checkpoint is asked of it (:func:`loadgen.validate.rest`)."""


def server_watch(plan: Plan) -> CpuWatch | None:
    """CPU accounting of the back office's processes, when they run on this machine."""
    if plan.host not in LOCAL_HOSTS:
        return None
    procs = server_processes(plan.port)
    if not procs:
        return None
    try:
        names = names_from_health(httpx.get(f"{plan.target}/health", timeout=5).json())
    except (httpx.HTTPError, ValueError):
        names = {}
    if plan.database is not None:
        backends = database_processes(plan.database)
        if not backends:
            raise RuntimeError(f"no PostgreSQL backend serves database {plan.database!r} "
                               "on this machine")
        procs += backends
        names.update({b.pid: SHARED_PREFIX for b in backends})
    return CpuWatch(procs, names)


def _server_meta(watch: CpuWatch | None, requests: int) -> tuple[dict[str, Any], list[str]]:
    if watch is None:
        return {}, ["The server's CPU was not measured (not a local `testbed serve`)."]
    total = sum(v for v in watch.used.values() if not math.isnan(v))
    return {"server_cpu_s": {k: round(v, 3) for k, v in watch.used.items()},
            "server_cpu_ms_per_request": 1000 * total / requests if requests else math.nan}, []


def _lag_ms(rec: Recorder, pct: float) -> float:
    h = rec.lag
    return h.get_value_at_percentile(pct) / 1000 if h.get_total_count() else math.nan


def finish(plan: Plan, rec: Recorder, watch: CpuWatch | None, mode: dict[str, Any],
           generator: dict[str, Any], lag_p99_ms: float | None) -> Results:
    """Results of a finished run, with the generator's saturation verdict."""
    requests = sum(h.get_total_count() for h in rec.total.values())
    cpu_share = generator.pop("cpu_share", [])
    reasons = saturation(cpu_share, lag_p99_ms)
    server, notes = _server_meta(watch, requests)
    if reasons:
        notes.insert(0, "GENERATOR SATURATED: " + "; ".join(reasons) + ". The figures are "
                     "partly the load generator's limit, not the server's: add --processes "
                     "or --workers, or lower the load.")
    skipped = sum(rec.skipped.values())
    if skipped:
        notes.append(f"{skipped} arrivals were skipped by the in-flight cap (not sent; "
                     "see skipped_requests).")
    extra = {"target": plan.target, **mode,
             "achieved_rate_rps": requests / plan.duration_s,
             "players": plan.players, "generator": generator,
             "generator_saturated": bool(reasons), **server}
    info = RunInfo(plan.scenario, plan.architecture, plan.duration_s, extra, notes)
    stations = watch.stations(plan.architecture, plan.duration_s) if watch else None
    return to_results(rec, info, stations)


def open_loop(plan: Plan, rate: float, max_in_flight: int, processes: int,
              lead_in_s: float = 0.0) -> Results:
    """Poisson arrivals at ``rate``/s for the plan's duration, after ``lead_in_s`` of them
    not measured."""
    cfg = OpenLoopConfig(plan.target, rate, plan.duration_s, plan.players, plan.seed,
                         plan.prefix, max_in_flight, plan.credentials, lead_in_s=lead_in_s)
    watch = server_watch(plan)
    hooks = Hooks(watch.start, watch.stop) if watch else None
    parts = run_open_loop(plan.scenario, cfg, processes, hooks)
    rec = merge([p["recorder"] for p in parts])
    cpu_s = sum(p["cpu_s"] for p in parts)
    generator = {
        "processes": processes,
        "cpu_s": round(cpu_s, 3),
        "cpu_share": [p["cpu_s"] / p["wall_s"] for p in parts],
        "max_cpu_share_of_a_core": round(max(p["cpu_s"] / p["wall_s"] for p in parts), 3),
        "requests_per_cpu_s": round(sum(p["sent"] for p in parts) / cpu_s, 1) if cpu_s else None,
        "send_lag_p50_ms": _lag_ms(rec, 50), "send_lag_p99_ms": _lag_ms(rec, 99),
        "send_lag_max_ms": rec.lag.get_max_value() / 1000,
        "abandoned_rounds": sum(p["abandoned_rounds"] for p in parts),
    }
    mode = {"mode": "open", "target_rate_rps": rate, "max_in_flight": max_in_flight}
    return finish(plan, rec, watch, mode, generator, _lag_ms(rec, 99))


def closed_loop(plan: Plan, users: int, workers: int, shape: bool,
                spawn_rate: float | None) -> Results:
    """Locust users (FastHttpUser), in this process or a master and ``workers`` workers."""
    from loadgen.locust_run import ClosedConfig, run_locust

    cfg = ClosedConfig(users=users, workers=workers, shape=shape,
                       spawn_rate=spawn_rate or float(users))
    watch = server_watch(plan)
    out = run_locust(plan, cfg, watch)
    mode = {"mode": "closed", "users": users, "locust_workers": workers, "shape": shape}
    return finish(plan, out.recorder, watch, mode, out.generator, None)


def save(results: Results, out_dir: Path) -> Path:
    """Write the results and the report; the report's path."""
    results.save(out_dir)
    title = f"Measured run: {results.meta.get('scenario')} against {results.meta.get('target')}"
    if results.meta.get("generator_saturated"):
        title += " (GENERATOR SATURATED)"
    return write_report(results, out_dir, title=title)


def describe(results: Results) -> str:
    """A few lines for the terminal."""
    m = results.meta
    lines = [f"{m.get('mode')} loop: {m['achieved_rate_rps']:.1f} requests/s achieved"
             + (f" (target {m['target_rate_rps']:g}/s)" if m.get("target_rate_rps") else "")]
    for r in results.summary.itertuples():
        lines.append(f"  {r.operation:<11} {r.requests:>8} req  p50 {r.p50_ms:8.2f} ms  "
                     f"p99 {r.p99_ms:8.2f} ms  errors {r.error_rate:.2%}")
    for note in m.get("notes", []):
        lines.append(f"  NOTE: {note}")
    return "\n".join(lines)
