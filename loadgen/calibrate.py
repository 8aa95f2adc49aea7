"""``testbed calibrate``: measure what each operation costs each process of a running back
office, at several load levels, and write a scenario whose demands are those measurements.

For each operation and each rate of ``rates``, an open loop of that operation alone runs for
``seconds``; the CPU seconds each server process spent (psutil, over the measured window) are
divided by the requests answered. Wins and rollbacks need an open round: their runs
alternate a bet and the operation, and the bet's CPU, measured at the same rate, is taken
out. The latency distribution of the lowest rate gives each demand's shape (coefficient of
variation); its mean is the measured CPU per request: a gamma distribution by moments.

What a request waits off the server's CPU at the lowest rate (its mean latency there minus
the CPU it cost: loopback TCP, the client, event-loop turns, fsync, and on a shared machine
the other processes' CPU) becomes an ``external`` step of the operation (a wait that holds a
worker, not a core): measured, not guessed, and it does not grow with load.

Demands are not constant (batching and group commit amortise work as load grows): every
level is written in the scenario's header, and the demand used is the one measured at
``use_level`` (by default the middle rate). The scenario language has no load-dependent
demand yet, nor a host model of shared cores: the calibrated deployment gives each Python
process one core (the GIL) and says in its comments that the processes, the database and
the generator share this machine's cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from loadgen.behaviour import Players, Request
from loadgen.openloop import Hooks, OpenLoopConfig, run_open_loop
from loadgen.probe import CpuWatch, database_processes
from loadgen.record import merge
from loadgen.run import Plan, server_watch
from sim.model.scenario import Scenario, parse_scenario

DEFAULT_RATES = (20.0, 60.0, 150.0)
"""Requests per second of each calibration level (light load first)."""
MIN_SHARE = 0.02
"""A process whose CPU per request is below this share of the operation's total is left
out of its call path (noise of idle processes)."""
SETTLED = ("win", "rollback")
TOPOLOGIES = ("monolith", "microservices", "hybrid")
COMPONENTS = ("player", "wallet", "fraud", "analytics")
ASYNC_COMPONENTS = frozenset({"fraud", "analytics"})
DATABASE = "database"
"""Role of the PostgreSQL backends: their CPU per request becomes the ``db`` demand of the
operation's player or wallet step (time holding a pooled connection)."""
MIN_OFF_CPU_MS = 0.01
"""Off-CPU time per request below this is left out of the call path."""
DB_POOL = 16
"""Connections per process in the calibrated deployment (`testbed serve --pool-size`)."""
"""Fed by the broker's events in microservices and hybrid (never on the request path)."""


class OneOperation:
    """A request source of one operation (a bet before each win or rollback)."""

    def __init__(self, players: Players, op: str) -> None:
        self.players, self.op = players, op
        self.abandoned_rounds = 0

    def setup_requests(self) -> list[list[Request]]:
        return self.players.setup_requests()

    def next(self) -> Request:
        if self.op in SETTLED and not self.players.open_rounds:
            return self.players.request("bet")
        return self.players.request(self.op)

    def answered(self, req: Request, status: int) -> None:
        self.players.answered(req, status)


@dataclass
class Level:
    """One operation at one rate: requests answered, CPU ms per request by process."""

    op: str
    rate: float
    requests: dict[str, int]
    cpu_ms: dict[str, float]
    latency_mean_ms: float
    latency_cv: float
    p99_ms: float
    errors: int


@dataclass
class Calibration:
    topology: str
    target: str
    levels: list[Level] = field(default_factory=list)


def measure(plan: Plan, op: str, rate: float, bet_cpu: dict[str, float] | None,
            database: str | None = None) -> Level:
    """One calibration run: ``op`` alone at ``rate`` for the plan's duration; with
    ``database`` (a PostgreSQL database name) its backends' CPU is the role ``database``."""
    watch = server_watch(plan)
    if watch is None:
        raise RuntimeError(f"calibrate needs the back office on this machine: no process "
                           f"listens on {plan.target}")
    if database is not None:
        backends = database_processes(database)
        if not backends:
            raise RuntimeError(f"no PostgreSQL backend serves database {database!r} here")
        watch.processes += backends
        watch.names.update({b.pid: DATABASE for b in backends})
    cfg = OpenLoopConfig(plan.target, rate, plan.duration_s, plan.players, plan.seed,
                         f"{plan.prefix}{op}{int(rate)}-", credentials=plan.credentials)

    def source(sc: Scenario, c: OpenLoopConfig, i: int) -> OneOperation:
        return OneOperation(Players(sc, c.players, f"{c.prefix}g{i}-", c.seed), op)

    part = run_open_loop(plan.scenario, cfg, 1, Hooks(watch.start, watch.stop), source)[0]
    rec = merge([part["recorder"]])
    counts = {o: h.get_total_count() for o, h in rec.total.items()}
    n_op = counts.get(op, 0)
    if n_op == 0:
        raise RuntimeError(f"calibrating {op} at {rate}/s: no request answered")
    cpu = _attributed(watch, counts, op, bet_cpu)
    h = rec.total[op]
    mean = h.get_mean_value()
    return Level(op, rate, counts, cpu, mean / 1000, h.get_stddev() / mean if mean else 0.0,
                 h.get_value_at_percentile(99) / 1000, sum(sum(c.values())
                                                           for c in rec.codes.values()))


def _attributed(watch: CpuWatch, counts: dict[str, int], op: str,
                bet_cpu: dict[str, float] | None) -> dict[str, float]:
    """CPU ms per ``op`` request by process (a bet's share taken out of mixed runs)."""
    out = {}
    n_op, n_bet = counts.get(op, 0), counts.get("bet", 0) if op != "bet" else 0
    for name, used in watch.used.items():
        total_ms = used * 1000
        if n_bet and bet_cpu is not None:
            total_ms -= n_bet * bet_cpu.get(_role(name), 0.0)
        out[_role(name)] = out.get(_role(name), 0.0) + max(total_ms, 0.0) / n_op
    return out


def _role(label: str) -> str:
    """``wallet:1234`` -> ``wallet`` (a process's role without its pid)."""
    return label.rsplit(":", 1)[0]


def calibrate(plan: Plan, topology: str, rates: tuple[float, ...],
              progress: Callable[[str], None] = lambda s: None,
              database: str | None = None) -> Calibration:
    """Measure every operation of the plan's scenario at every rate."""
    ops = [o for o, spec in plan.scenario.operations.items() if spec.weight > 0]
    ops.sort(key=lambda o: o != "bet")  # the bet first: wins and rollbacks subtract it
    cal = Calibration(topology, plan.target)
    for rate in rates:
        bet: dict[str, float] | None = None
        for op in ops:
            lv = measure(plan, op, rate, bet, database)
            if op == "bet":
                bet = lv.cpu_ms
            cal.levels.append(lv)
            progress(f"{op:<11} {rate:7.1f}/s  cpu ms/request "
                     + ", ".join(f"{k} {v:.3f}" for k, v in lv.cpu_ms.items())
                     + f"  latency mean {lv.latency_mean_ms:.2f} ms p99 {lv.p99_ms:.2f} ms")
    return cal


def _component(role: str, topology: str, op: str) -> str:
    if role in COMPONENTS:
        return role
    if topology == "microservices" and role == "public":
        return "gateway"
    return "player" if op == "login" else "wallet"


def calibrated_scenario(base: Scenario, cal: Calibration, use_rate: float, command: str
                        ) -> tuple[dict[str, Any], str]:
    """(raw scenario mapping, header comment) for the measurements at ``use_rate``."""
    raw = base.model_dump(mode="json", by_alias=True, exclude_none=True)
    lowest = min(lv.rate for lv in cal.levels)
    shape_cv = {lv.op: lv.latency_cv for lv in cal.levels if lv.rate == lowest}
    off_cpu = {lv.op: max(0.0, lv.latency_mean_ms - sum(lv.cpu_ms.values()))
               for lv in cal.levels if lv.rate == lowest}
    demands: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    roles: set[str] = set()
    for lv in (lv for lv in cal.levels if lv.rate == use_rate):
        total = sum(lv.cpu_ms.values())
        steps = []
        cv = min(max(shape_cv.get(lv.op, 1.0), 0.05), 5.0)
        for role, ms in sorted(lv.cpu_ms.items()):
            if total <= 0 or ms < MIN_SHARE * total or role == DATABASE:
                continue
            name = f"{lv.op}_{role}_cpu"
            demands[name] = {"kind": "gamma", "mean_ms": round(ms, 4), "cv": round(cv, 3)}
            comp = _component(role, cal.topology, lv.op)
            step: dict[str, Any] = {"component": comp, "cpu": name}
            if cal.topology != "monolith" and comp in ASYNC_COMPONENTS:
                step["mode"] = "async"
            steps.append(step)
            roles.add(role)
        if not steps:
            raise RuntimeError(f"{lv.op}: no process spent measurable CPU on it")
        db_ms = lv.cpu_ms.get(DATABASE, 0.0)
        if db_ms > 0:
            owner = "player" if lv.op == "login" else "wallet"
            step = next((s for s in steps if s["component"] == owner), steps[0])
            demands[f"{lv.op}_db"] = {"kind": "gamma", "mean_ms": round(db_ms, 4),
                                      "cv": round(cv, 3)}
            step["db"] = f"{lv.op}_db"
        if off_cpu.get(lv.op, 0.0) >= MIN_OFF_CPU_MS:
            owner = "player" if lv.op == "login" else "wallet"
            demands[f"{lv.op}_off_cpu"] = {"kind": "gamma",
                                           "mean_ms": round(off_cpu[lv.op], 4),
                                           "cv": round(cv, 3)}
            steps.insert(0, {"component": owner, "external": f"{lv.op}_off_cpu"})
        steps.sort(key=lambda s: (s.get("mode") == "async", s["component"] != "gateway"))
        operations[lv.op] = {"weight": base.operations[lv.op].weight, "steps": steps}
    raw["name"] = f"{base.name}_calibrated_{cal.topology}"
    raw["description"] = (f"{base.description} Demands measured by testbed calibrate against "
                          f"the {cal.topology} reference back office.").strip()
    raw["demands"] = demands
    raw["operations"] = operations
    raw["deployments"] = [_deployment(cal.topology, roles, operations)]
    raw["simulation"]["reduce"] = False
    raw["population"]["spikes"] = []
    for name in list(raw["slos"]["latency_ms"]):
        if name not in operations:
            del raw["slos"]["latency_ms"][name]
    header = _header(cal, use_rate, command)
    return raw, header


def _deployment(topology: str, roles: set[str], operations: dict[str, Any]) -> dict[str, Any]:
    used = sorted({s["component"] for op in operations.values() for s in op["steps"]})
    with_db = {s["component"] for op in operations.values() for s in op["steps"] if "db" in s}
    databases = [{"name": "main", "cores": os.cpu_count() or 1, "max_connections": 200}] \
        if with_db else []

    def service(name: str, comps: list[str]) -> dict[str, Any]:
        svc: dict[str, Any] = {"name": name, "components": comps, "replicas": 1, "cores": 1,
                               "workers": 256}
        if with_db & set(comps):
            svc |= {"db_pool": DB_POOL, "database": "main"}
        return svc

    if topology == "monolith":
        comps = sorted(set(used) | {"player", "wallet"})
        return {"name": "monolith", "kind": "monolith", "services": [service("app", comps)],
                "databases": databases}
    dep: dict[str, Any] = {"name": topology, "kind": topology,
                           "services": [service(c, [c]) for c in used],
                           "databases": databases,
                           "network_hop": {"kind": "constant", "value_ms": 0.05},
                           "rpc_cpu": {"kind": "constant", "value_ms": 0.0}}
    if "gateway" in used:
        dep["entry"] = "gateway"
    return dep


def _header(cal: Calibration, use_rate: float, command: str) -> str:
    lines = [
        f"Calibrated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by:",
        f"  {command}",
        f"against the {cal.topology} back office at {cal.target} (pid-level CPU, psutil;",
        "process CPU times tick at 10 ms, so a figure is within 10 ms / requests of a level).",
        f"Demands below: CPU ms per request measured at {use_rate:g} requests/s (gamma, cv from",
        "the latency spread at the lowest rate); *_off_cpu: mean latency minus CPU at the",
        "lowest rate, an external wait. Every level measured (ms CPU per request):",
    ]
    for lv in cal.levels:
        cpu = ", ".join(f"{k} {v:.3f}" for k, v in sorted(lv.cpu_ms.items()))
        lines.append(f"  {lv.op:<10} {lv.rate:7.1f}/s: {cpu}; latency mean "
                     f"{lv.latency_mean_ms:.2f} p99 {lv.p99_ms:.2f} ms; errors {lv.errors}")
    lines += [
        "Not modelled yet (the scenario language lacks the concept): demand that falls with",
        "load (use the level nearest the operating point), and a host whose cores are shared",
        f"by every server process, the database and the load generator ({os.cpu_count()} here);",
        "each Python process is given one core (the GIL). SQLite time is in-process CPU.",
    ]
    return "\n".join("# " + ln for ln in lines) + "\n"


def write_scenario(raw: dict[str, Any], header: str, path: Path) -> Scenario:
    """Validate and write the calibrated scenario (header comments first)."""
    sc = parse_scenario(raw, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False, width=100))
    return sc

