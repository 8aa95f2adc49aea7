"""Offered utilisation of every station, computed from the compiled topology before a run.

For each station group (the workers, cores and connection pool of a service's replicas, a
database's shards, a hot account's row locks) the offered utilisation is

    rho = sum over operations of (arrival rate x visits x mean demand) / servers

at the scenario's peak: the largest value over the simulated window, spikes included. The
arrival rate of an operation is the population's (online players x actions per minute x the
operation's share x the spike multipliers active then), spread evenly over the replicas and
shards (every load-balancing policy does so on average). A closed loop's rate is its upper
bound ``users / (think time + the least response time)``.

Holding times of workers and connections include every service time held (CPU, external
waits, network hops, database time) but no queueing, so the figure is a lower bound of the
real occupancy: rho >= 1 means the station cannot keep up whatever the queueing. A run with
such a station is *unstable*: its queues and latencies grow with the run length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.model.distributions import Distribution
from sim.model.population import HOUR_S, online_count
from sim.model.scenario import Scenario
from sim.model.topology import Route, Topology, compile_topology

SATURATED = 1.0
"""Offered utilisation at or above which a station is saturated (its queue grows)."""


@dataclass(frozen=True)
class OfferedLoad:
    """Peak offered utilisation of one station group of one deployment."""

    deployment: str
    station: str      # e.g. "wallet[*].cpu": every replica of the group sees the same load
    kind: str         # workers, cpu, db_pool, db_cpu, lock (as in the results' stations)
    servers: int      # servers of one station of the group
    utilisation: float
    at_s: float       # window time of the peak (s)

    @property
    def saturated(self) -> bool:
        return self.utilisation >= SATURATED

    def text(self) -> str:
        """One line for users: station, offered utilisation, when."""
        return (f"{self.deployment}: {self.station} ({self.kind}, {self.servers} servers) "
                f"offered {self.utilisation:.0%} at t={self.at_s:g} s")


def _mean(d: Distribution | None) -> float:
    return d.mean_s() if d is not None else 0.0


def peak_times(scenario: Scenario) -> np.ndarray:
    """Window times where the total arrival rate can peak: the ends of the window, the hour
    boundaries (the online curve is linear between them) and the ends of every spike."""
    sim = scenario.simulation
    start = sim.start_hour * HOUR_S
    first = math.ceil(start / HOUR_S) * HOUR_S - start
    pts = [0.0, sim.duration_s, *np.arange(first, sim.duration_s, HOUR_S)[:25]]
    for sp in scenario.population.spikes:
        pts += [sp.start_s, sp.start_s + sp.duration_s]
    return np.array(sorted({p for p in pts if 0.0 <= p <= sim.duration_s}))


def op_rates(scenario: Scenario, t: np.ndarray) -> np.ndarray:
    """Open arrivals per second of each operation of the whole system at window times ``t``,
    shape ``(len(t), n_ops)``; spikes count as active at both of their ends (a supremum)."""
    pop = scenario.population
    names = list(scenario.operations)
    w = np.array([op.weight for op in scenario.operations.values()], dtype=np.float64)
    total = w.sum()
    share = w / total if total > 0 else np.zeros_like(w)  # workloads only: none
    online = np.asarray(online_count(pop, scenario.simulation.start_hour * HOUR_S + t))
    rates = (online * pop.session.actions_per_minute / 60.0)[:, None] * share[None, :]
    for sp in pop.spikes:
        active = (t >= sp.start_s) & (t <= sp.start_s + sp.duration_s)
        ops = np.array([sp.operations is None or n in sp.operations for n in names])
        rates[np.ix_(active, ops)] *= sp.multiplier
    return rates


def _route_demands(topo: Topology, route: Route) -> dict[tuple[str, int], float]:
    """Mean seconds one request of ``route`` holds each station group, without queueing.

    Keys: ``(kind, index)`` with kind workers/cpu/db_pool (index: service), db_cpu
    (index: database), lock (index: hot account).
    """
    out: dict[tuple[str, int], float] = {}

    def add(kind: str, i: int, s: float) -> None:
        out[(kind, i)] = out.get((kind, i), 0.0) + s

    rpc, hop, pub = _mean(topo.rpc_cpu), _mean(topo.network_hop), _mean(topo.publish)
    entry = route.entry
    add("cpu", entry, _mean(route.gateway_cpu))
    add("workers", entry, _mean(route.gateway_cpu))
    for step in route.steps:
        svc = topo.services[step.service]
        cpu, ext, db = _mean(step.cpu), _mean(step.external), _mean(step.db)
        work = cpu + ext + db
        if db and svc.database is not None:
            add("db_pool", step.service, db)
            add("db_cpu", svc.database, db)
            if step.lock is not None:
                add("lock", step.lock, db)
        remote = step.service != entry
        add("cpu", step.service, cpu + (rpc if remote else 0.0))
        if step.is_async:
            add("workers", step.service, work + (rpc if remote else 0.0))  # the consumer
            if remote:
                add("cpu", entry, rpc)
                add("workers", entry, rpc + pub)
            continue
        if remote:
            add("cpu", entry, rpc)
            add("workers", entry, rpc + 2 * hop + rpc + work)
            add("workers", step.service, rpc + work)
        else:
            add("workers", entry, work)
    return out


def min_response_s(topo: Topology, route: Route) -> float:
    """The least response time of ``route``: its synchronous service times, no queueing."""
    return _route_demands(topo, route).get(("workers", route.entry), 0.0)


def offered_load(scenario: Scenario) -> list[OfferedLoad]:
    """Peak offered utilisation of every station group of every deployment (full system)."""
    closed = scenario.simulation.closed
    t = peak_times(scenario)
    out: list[OfferedLoad] = []
    for dep in scenario.deployments:
        topo = compile_topology(scenario, dep, 1)
        demands = [_route_demands(topo, r) for r in topo.routes]
        if closed is not None:
            w = np.array([op.weight for op in scenario.operations.values()], dtype=np.float64)
            share = w / w.sum()
            cycle = _mean(closed.think_time) + float(share @ [
                min_response_s(topo, r) for r in topo.routes])
            rates = (closed.users / max(cycle, 1e-9) * share)[None, :]
            times = np.zeros(1)
        else:
            rates, times = op_rates(scenario, t), t
        keys = sorted({key for d in demands for key in d})
        for kind, i in keys:
            d = np.array([dm.get((kind, i), 0.0) for dm in demands])
            if kind == "db_cpu":
                db = topo.databases[i]
                name, servers, groups = f"{db.name}[*].cpu", db.cores, db.shards
            elif kind == "lock":
                lk = topo.locks[i]
                name, servers, groups = f"lock:{lk.name}[*]", 1, lk.sub_accounts
            else:
                svc = topo.services[i]
                part = {"workers": "workers", "cpu": "cpu", "db_pool": "db_pool"}[kind]
                cap = {"workers": svc.workers, "cpu": svc.cores, "db_pool": svc.db_pool}[kind]
                name, servers, groups = f"{svc.name}[*].{part}", cap, svc.replicas
            rho = rates @ d / (servers * groups)
            j = int(np.argmax(rho))
            out.append(OfferedLoad(dep.name, name, kind, servers, float(rho[j]),
                                   float(times[j])))
    return out
