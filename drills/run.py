"""One drill from start to report: the environment up, the players set up, the open-loop
window with the faults injected at their times, the ledger checked, the results written in
the simulator's schema (``summary.json`` with ``source: measurement``, the ``recovery``
table), ``report.md`` and the timeline with the fault windows shaded."""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drills.checks import LedgerCheck, check_ledger
from drills.environment import EnvConfig, Environment
from drills.faults import Fault
from drills.inject import Event, Injector
from drills.measure import per_operation, recovery_table, success_p99_ms
from drills.procs import DrillError
from drills.sampler import PolicySampler
from drills.traffic import Acks, acking_source
from loadgen.openloop import Hooks, OpenLoopConfig, run_open_loop
from loadgen.record import RunInfo, merge, to_results
from loadgen.signing import load_credentials
from sim.analysis.recovery import FaultWindow
from sim.model.scenario import Scenario
from sim.reports.results import Results

HEALTH_WAIT_S = 60.0
"""After the window: how long the back office may take to be healthy before the checks."""


@dataclass(frozen=True)
class DrillConfig:
    """Everything ``testbed drill`` needs."""

    scenario: Scenario
    topology: str
    db: str
    broker: str
    replication: str
    faults: tuple[Fault, ...]
    rate: float
    duration_s: float
    players: int
    timeout_s: float
    window_s: float
    seed: int = 1
    rpc_policy: Path | None = None
    slo_operation: str = "bet"
    slo_p99_ms: float | None = None  # instead of the scenario's p99 of slo_operation
    staff_share: float = 0.0  # of arrivals: staff reading fraud alerts
    hold_s: float | None = None  # how long p99 must stay under target (None: to the end)
    replica_lag_ms: float = 0.0  # the replica's WAL stream delayed this much

    @property
    def architecture(self) -> str:
        return f"{self.topology}/{self.db}"


@dataclass
class Drill:
    """What a drill produced."""

    results: Results
    requests: pd.DataFrame  # every request: t_s, latency_ms, operation, code
    ledger: LedgerCheck
    events: list[Event]
    errors: list[str]


def scenario_slo(cfg: DrillConfig) -> float:
    """The scenario's p99 target of the drill's SLO operation (ms)."""
    slo = cfg.scenario.slos.latency_ms.get(cfg.slo_operation)
    if slo is None or slo.p99 is None or not math.isfinite(slo.p99):
        raise DrillError(f"the scenario has no p99 SLO for {cfg.slo_operation!r}: give "
                         "--slo-p99-ms")
    return float(slo.p99)


def fault_windows(faults: tuple[Fault, ...], events: list[Event]) -> list[FaultWindow]:
    """Each fault's window as it happened: from its start action to its end action (or to
    the moment the back office answered again after an instant fault)."""
    out = []
    for f in faults:
        mine = [e for e in events if e.fault == f.text]
        start = next((e.t_s for e in mine if e.action == "start"), None)
        if start is None:
            continue
        end = next((e.t_s for e in mine if e.action in ("end", "ready")), start)
        out.append(FaultWindow(name=f.text, kind=f.kind,
                               target=f.service or ("database" if "db" in f.kind else
                                                    "broker"),
                               start_s=start, end_s=max(start, end)))
    return out


def run_drill(cfg: DrillConfig, logs: Path | None = None) -> Drill:
    """Run the drill; the environment is gone when this returns (or raises)."""
    env_cfg = EnvConfig(cfg.topology, cfg.db, cfg.broker, cfg.replication, cfg.faults,
                        cfg.rpc_policy, cfg.replica_lag_ms)
    with Environment(env_cfg, keep=logs) as env:
        assert env.office is not None
        acks = Acks()
        injector = Injector(env, list(cfg.faults))
        sampler = PolicySampler(env.office.url, env.creds.staff_token, 0.0)

        def window_starts() -> None:
            injector.start()
            sampler.t0 = time.perf_counter()
            if cfg.topology != "monolith":
                sampler.start()
        ocfg = OpenLoopConfig(env.office.url, cfg.rate, cfg.duration_s, cfg.players, cfg.seed,
                              f"drill-{secrets.token_hex(3)}-", credentials=load_credentials(
                                  env.creds.path), keep_requests=True)
        try:
            # the injector's thread lives until the checks are done: a server it restarted
            # (database, broker) dies with the thread that started it (PR_SET_PDEATHSIG)
            try:
                parts = run_open_loop(cfg.scenario, ocfg, 1, Hooks(window_starts, sampler.stop),
                                      source=acking_source(acks, cfg.staff_share))
            finally:
                sampler.stop()
            try:
                env.office.wait_healthy(HEALTH_WAIT_S)
            except DrillError as exc:
                injector.errors.append(f"after the window: {exc}")
            ledger = check_ledger(env, acks)
            ledger.lost_acked_at_s = sorted(round(acks.seen[tx][1] - injector.t0, 3)
                                            for tx in ledger.lost)
            restarts = len(env.office.restarts)
            workdir = str(env.root)  # removed when the environment closes
        finally:
            injector.stop()
    part = parts[0]
    rec = merge([part["recorder"]])
    assert rec.log is not None
    windows = fault_windows(cfg.faults, injector.events)
    slo_p99 = cfg.slo_p99_ms if cfg.slo_p99_ms is not None else scenario_slo(cfg)
    first = min((w.start_s for w in windows), default=cfg.duration_s)
    baseline = success_p99_ms(rec.log, 0.0, first, cfg.timeout_s)
    targets = {op: float(t.p99) for op, t in cfg.scenario.slos.latency_ms.items()
               if t.p99 is not None}
    recovery = recovery_table(rec.log, windows, cfg.architecture, cfg.duration_s,
                              cfg.timeout_s, cfg.window_s, slo_p99, len(ledger.lost),
                              targets, cfg.hold_s)
    extra: dict[str, Any] = {
        "target": "drill", "mode": "open", "target_rate_rps": cfg.rate,
        "achieved_rate_rps": part["sent"] / cfg.duration_s, "players": cfg.players,
        "drill": {
            "topology": cfg.topology, "db": cfg.db, "broker": cfg.broker,
            "replication": cfg.replication if any(f.kind == "db-failover"
                                                  for f in cfg.faults) else None,
            "replica_lag_ms": cfg.replica_lag_ms,
            "faults": [f.text for f in cfg.faults], "timeout_s": cfg.timeout_s,
            "window_s": cfg.window_s, "hold_s": cfg.hold_s,
            "slo_operation": cfg.slo_operation,
            "slo_p99_ms": slo_p99, "staff_share": cfg.staff_share, "baseline_p99_ms": baseline,
            "events": [e.__dict__ for e in injector.events], "errors": injector.errors,
            "monolith_restarts_by_drill": restarts, "workdir": workdir,
            "ledger": ledger.to_json(),
            "rpc_policy_per_second": sampler.increments(),
            "per_operation": per_operation(rec.log, windows, cfg.duration_s,
                                           cfg.timeout_s).to_dict("records"),
        },
        "generator": {"cpu_s": round(part["cpu_s"], 3),
                      "max_cpu_share_of_a_core": round(part["cpu_s"] / part["wall_s"], 3)},
    }
    notes = [f"Timed out: answered after {cfg.timeout_s:g} s or never."]
    if baseline > slo_p99:
        notes.append(f"Before the first fault the p99 of successful requests was "
                     f"{baseline:.0f} ms, already above the {slo_p99:g} ms SLO the recovery is "
                     "measured against: 'p99 back under SLO' cannot happen (lower the rate, "
                     "or give --slo-p99-ms).")
    info = RunInfo(cfg.scenario, cfg.architecture, cfg.duration_s, extra, notes)
    results = to_results(rec, info)
    results.meta["windows"] = [{"name": w.name, "start_s": w.start_s, "end_s": w.end_s}
                               for w in windows]
    results = replace(results, recovery=recovery)  # checked and cast by the schema
    log = pd.DataFrame({"t_s": np.frombuffer(rec.log.t_s, dtype=float),
                        "latency_ms": np.frombuffer(rec.log.latency_s, dtype=float) * 1000,
                        "operation": rec.log.op, "code": rec.log.code})
    return Drill(results, log, ledger, injector.events, injector.errors)
