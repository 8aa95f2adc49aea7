"""Offered utilisation of every station, computed from the compiled topology before a run.

For each station group (the workers, cores and connection pool of a service's replicas, a
database's shards and their read replicas, a cache's shards, a hot account's row locks) the
offered utilisation is

    rho = sum over operations of (arrival rate x mean seconds held per request) / servers

at the scenario's peak: the largest value over the simulated window, spikes and rate tables
included. What a request holds is walked through the whole call graph
(:func:`route_demands`): nested calls (each holding its caller's worker, and every caller's up
the chain), branches (weighted by the probability a request reaches the step), caches (the
lookup on the cache's cores; the database work only on a miss, ``1 - hit_ratio``), read
replicas (a read step's database time spread over the shard's read replicas, writes and
reads of a database without replicas on the primary), async steps (the consumer's worker).

Arrival rates, per operation:

* the population's: online players x actions per minute x the operation's share of the
  weights (none when every weight is 0) x the spike multipliers active then;
* open workloads and operations with their own rate (``rate_rps``, or a ``rate_table`` at
  its peak, the table being linear between points);
* closed users (``simulation.closed`` and closed workloads): the upper bound of their
  throughput, ``users / (mean think time + the least response time of their mix)`` (the
  asymptotic bound of operational analysis, not MVA: it is reached when no station queues,
  so it over-states a closed loop's load, never under-states it; a closed loop's queues are
  bounded by its users and never grow without end, but a station offered rho >= 1 by this
  bound is the loop's bottleneck). A cycle of zero seconds gives an infinite rate.

Every rate is spread evenly over the replicas and shards (every load-balancing policy does
so on average). Holding times of workers and connections include every service time held
(CPU, external waits, network hops, database time, nested calls) but no queueing, so the
figure is a lower bound of the real occupancy: rho >= 1 means the station cannot keep up
whatever the queueing. A run with such a station is *unstable*: its queues and latencies
grow with the run length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.model.distributions import Distribution
from sim.model.population import HOUR_S, online_count
from sim.model.scenario import Scenario, Workload
from sim.model.topology import Route, StepSpec, Topology, compile_topology

SATURATED = 1.0
"""Offered utilisation at or above which a station is saturated (its queue grows)."""
OPEN = "open"
CLOSED_BOUND = "closed bound N/(Z+R0)"


@dataclass(frozen=True)
class OfferedLoad:
    """Peak offered utilisation of one station group of one deployment."""

    deployment: str
    station: str      # e.g. "wallet[*].cpu": every replica of the group sees the same load
    kind: str         # workers, cpu, db_pool, db_cpu, db_replica_cpu, cache_cpu, lock
    servers: int      # servers of one station of the group
    utilisation: float
    at_s: float       # window time of the peak (s)
    basis: str = OPEN  # OPEN, or CLOSED_BOUND when closed users add to it

    @property
    def saturated(self) -> bool:
        return self.utilisation >= SATURATED

    def text(self) -> str:
        """One line for users: station, offered utilisation, when."""
        how = "" if self.basis == OPEN else f" ({self.basis})"
        return (f"{self.deployment}: {self.station} ({self.kind}, {self.servers} servers) "
                f"offered {self.utilisation:.0%} at t={self.at_s:g} s{how}")


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
    for wl in scenario.open_workloads():  # rate tables are linear between their points
        pts += [p.t_s for p in wl.rate_table or []]
    return np.array(sorted({p for p in pts if 0.0 <= p <= sim.duration_s}))


def _shares(weights: list[float]) -> np.ndarray:
    """Weights as shares of their sum (all zero when the sum is 0: no arrivals)."""
    w = np.array(weights, dtype=np.float64)
    total = w.sum()
    return w / total if total > 0 else np.zeros_like(w)


def op_rates(scenario: Scenario, t: np.ndarray) -> np.ndarray:
    """Open arrivals per second of each operation of the whole system at window times ``t``,
    shape ``(len(t), n_ops)``: the population's (unless ``simulation.closed`` replaces it)
    plus every open workload's; spikes count as active at both of their ends (a supremum)."""
    pop = scenario.population
    names = list(scenario.operations)
    rates = np.zeros((len(t), len(names)))
    if scenario.simulation.closed is None:
        share = _shares([op.weight for op in scenario.operations.values()])
        online = np.asarray(online_count(pop, scenario.simulation.start_hour * HOUR_S + t))
        rates += (online * pop.session.actions_per_minute / 60.0)[:, None] * share[None, :]
        for sp in pop.spikes:
            active = (t >= sp.start_s) & (t <= sp.start_s + sp.duration_s)
            ops = np.array([sp.operations is None or n in sp.operations for n in names])
            rates[np.ix_(active, ops)] *= sp.multiplier
    for wl in scenario.open_workloads():
        rates += _workload_rate(wl, t)[:, None] * _workload_share(wl, names)[None, :]
    return rates


def _workload_rate(wl: Workload, t: np.ndarray) -> np.ndarray:
    """An open workload's arrivals per second (whole system) at window times ``t``."""
    if wl.rate_table is not None:
        return np.interp(t, [p.t_s for p in wl.rate_table], [p.rps for p in wl.rate_table])
    assert wl.rate_rps is not None
    return np.full(len(t), wl.rate_rps)


def _workload_share(wl: Workload, names: list[str]) -> np.ndarray:
    """A workload's mix as shares over all the scenario's operations."""
    share = _shares(list(wl.operations.values()))
    out = np.zeros(len(names))
    for o, sh in zip(wl.operations, share, strict=True):
        out[names.index(o)] += sh
    return out


def _closed_groups(scenario: Scenario) -> list[tuple[int, Distribution, np.ndarray]]:
    """Every closed loop as (users, think time, mix over all operations)."""
    names = list(scenario.operations)
    out = []
    closed = scenario.simulation.closed
    if closed is not None:
        out.append((closed.users, closed.think_time,
                    _shares([op.weight for op in scenario.operations.values()])))
    for wl in scenario.workloads:
        if not wl.is_open:
            assert wl.users is not None
            out.append((wl.users, wl.think_time, _workload_share(wl, names)))
    return out


Demands = dict[tuple[str, int], float]
"""(station kind, index) -> mean seconds held per request. Kinds: workers, cpu, db_pool
(index: service), db_cpu, db_replica_cpu (index: database), cache_cpu (index: cache), lock
(index: hot account)."""


class _Walk:
    """Accumulates what one request of a route holds, walking its call graph."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self.out: Demands = {}
        self.rpc = _mean(topo.rpc_cpu)
        self.hop = _mean(topo.network_hop)
        self.pub = _mean(topo.publish)

    def add(self, kind: str, i: int, s: float) -> None:
        if s:
            self.out[(kind, i)] = self.out.get((kind, i), 0.0) + s

    def steps(self, steps: tuple[StepSpec, ...], here: int, reach: float) -> float:
        """Take ``steps`` from a worker of service ``here`` (reached by a share ``reach`` of
        the requests); return the mean seconds that worker is held, per request."""
        held = 0.0
        for st in steps:
            p = reach * st.probability
            remote = st.service != here
            rpc = self.rpc if remote else 0.0
            if st.is_async:  # publish (remote: the caller's RPC CPU and the broker's time)
                self.add("cpu", here, p * rpc)
                held += p * (rpc + (self.pub if remote else 0.0))
                self.add("cpu", st.service, p * rpc)  # the consumer's worker
                self.add("workers", st.service, p * rpc + self.work(st, p))
            elif not remote:
                held += self.work(st, p)
            else:  # a call: caller's RPC CPU, hop, the callee's worker, hop back
                self.add("cpu", here, p * rpc)
                self.add("cpu", st.service, p * rpc)
                callee = p * rpc + self.work(st, p)
                self.add("workers", st.service, callee)
                held += p * (rpc + 2.0 * self.hop) + callee
        return held

    def work(self, st: StepSpec, p: float) -> float:
        """A step's own work (CPU, external wait, cache and database) and its nested calls,
        reached by a share ``p`` of the requests: mean seconds its worker is held."""
        topo = self.topo
        cpu = _mean(st.cpu)
        self.add("cpu", st.service, p * cpu)
        held = p * (cpu + _mean(st.external))
        db = _mean(st.db)
        if st.db is not None:
            miss = 1.0
            if st.cache is not None:
                cache = topo.caches[st.cache]
                lookup = _mean(cache.lookup)
                self.add("cache_cpu", st.cache, p * lookup)
                held += p * lookup
                miss = 1.0 - cache.hit_ratio
            d = p * miss * db
            svc = topo.services[st.service]
            assert svc.database is not None  # scenario validation: database work needs a pool
            self.add("db_pool", st.service, d)
            replicas = topo.databases[svc.database].read_replicas
            self.add("db_replica_cpu" if st.read and replicas else "db_cpu", svc.database, d)
            if st.lock is not None:
                self.add("lock", st.lock, d)
            held += d
        return held + self.steps(st.calls, st.service, p)


def route_walk(topo: Topology, route: Route) -> tuple[Demands, float]:
    """Mean seconds one request of ``route`` holds each station group, without queueing,
    through its whole call graph (see the module docstring), and its least response time
    (what the entry worker holds for it: async consumers excluded)."""
    walk = _Walk(topo)
    gw = _mean(route.gateway_cpu)
    walk.add("cpu", route.entry, gw)
    response = gw + walk.steps(route.steps, route.entry, 1.0)
    walk.add("workers", route.entry, response)
    return walk.out, response


def route_demands(topo: Topology, route: Route) -> Demands:
    """The first half of :func:`route_walk`."""
    return route_walk(topo, route)[0]


def min_response_s(topo: Topology, route: Route) -> float:
    """The least response time of ``route``: its synchronous service times, no queueing."""
    return route_walk(topo, route)[1]


def _station(topo: Topology, kind: str, i: int) -> tuple[str, int, int]:
    """Name, servers of one station and stations of the group of ``(kind, i)``."""
    if kind in ("db_cpu", "db_replica_cpu"):
        db = topo.databases[i]
        if kind == "db_cpu":
            return f"{db.name}[*].cpu", db.cores, db.shards
        return f"{db.name}[*].replica[*].cpu", db.cores, db.shards * db.read_replicas
    if kind == "cache_cpu":
        c = topo.caches[i]
        return f"cache:{c.name}[*].cpu", c.cores, c.shards
    if kind == "lock":
        lk = topo.locks[i]
        return f"lock:{lk.name}[*]", 1, lk.sub_accounts
    svc = topo.services[i]
    cap = {"workers": svc.workers, "cpu": svc.cores, "db_pool": svc.db_pool}[kind]
    return f"{svc.name}[*].{kind}", cap, svc.replicas


def offered_load(scenario: Scenario) -> list[OfferedLoad]:
    """Peak offered utilisation of every station group of every deployment (full system)."""
    t = peak_times(scenario)
    open_rates = op_rates(scenario, t)
    groups = _closed_groups(scenario)
    basis = CLOSED_BOUND if groups else OPEN
    out: list[OfferedLoad] = []
    for dep in scenario.deployments:
        topo = compile_topology(scenario, dep, 1)
        walks = [route_walk(topo, r) for r in topo.routes]
        demands = [dm for dm, _ in walks]
        r0 = np.array([resp for _, resp in walks])
        rates = open_rates.copy()
        for users, think, mix in groups:
            cycle = _mean(think) + float(mix @ r0)
            rates += (users / cycle if cycle > 0 else math.inf) * mix[None, :]
        keys = sorted({key for d in demands for key in d})
        for kind, i in keys:
            d = np.array([dm.get((kind, i), 0.0) for dm in demands])
            name, servers, stations = _station(topo, kind, i)
            with np.errstate(invalid="ignore"):  # an infinite rate x no demand: no load
                load = np.where(d > 0, rates * d, 0.0).sum(axis=1)
            rho = load / (servers * stations)
            j = int(np.argmax(rho))
            out.append(OfferedLoad(dep.name, name, kind, servers, float(rho[j]),
                                   float(t[j]), basis))
    return out
