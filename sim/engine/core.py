"""The SimPy engine: builds a deployment's stations, starts its sources, samples the output.

The parts a reader looks for live in their own modules:

* :mod:`sim.engine.stations`: worker pools, processor-sharing cores, connection pools, row
  locks and the broker, behind one small interface, every queue bounded;
* :mod:`sim.engine.path`: the request's path (steps, calls, policies) with its draws
  prepared once per step;
* :mod:`sim.engine.sources`: open arrivals, closed-loop users, phantom writers;
* :mod:`sim.engine.sampling`: the draws (one factory, where a keyed stream plugs in);
* :mod:`sim.engine.output`: the raw output of a run;
* :mod:`sim.engine.faults`: the scenario's faults, one process each, through the path's hooks.

The engine is lean on purpose (no SimPy ``Resource`` objects, batched random draws, one
timer per processor-sharing station) so that it stays close to a minimal hand-written SimPy
model in speed (``benchmarks/bench_engine.py``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Iterable
from typing import Any

import numpy as np
import simpy

from sim.engine.contention import Contention, RowLockTable
from sim.engine.faults import start_faults
from sim.engine.host import CpuByRate, EntryMeter, Host, RateMeter
from sim.engine.output import Recorder, RunOutput, StationSeries
from sim.engine.path import RequestPath
from sim.engine.policies import Autoscaler
from sim.engine.sampling import BatchDraws, DrawFactory, Sampler
from sim.engine.sources import (
    KEY_STRIDE,
    ClosedGroup,
    SourcePlan,
    closed_user,
    open_source,
    start_phantom_writers,
)
from sim.engine.stations import (
    Backlog,
    Pool,
    PriorityPool,
    PSCpu,
    Replica,
    Shard,
    Station,
    Stations,
)
from sim.engine.waits import WaitHistogram
from sim.model.distributions import Distribution
from sim.model.topology import Topology, walk_steps

__all__ = ["Engine", "PSCpu", "Pool", "RunOutput", "Sampler", "StationSeries"]


def build_stations(env: simpy.Environment, topo: Topology,
                   rng: np.random.Generator | None = None) -> Stations:
    """Every station of a topology: replicas, database shards (primary and read replicas),
    hot-account locks, cache servers, the broker; with the topology's host, every CPU station
    shares its cores, and replicas with ``cpu_by_rate`` scale their CPU by their request rate
    (:mod:`sim.engine.host`). The entry meter (requests entering the deployment) exists only
    when something reads it (``topo.rate_dependent``)."""
    entry = EntryMeter(topo.reduce_factor) if topo.rate_dependent else None
    host = Host(topo.host, entry) if topo.host is not None else None
    if host is not None:
        host.start(env, rng if rng is not None else np.random.default_rng(0))
    entries = {r.entry for r in topo.routes}
    replicas: list[list[Replica]] = []
    for si, s in enumerate(topo.services):
        reps = []
        for r in range(s.max_replicas):  # the live ones are the first (RequestPath.live)
            tag = f"{s.name}[{r}]"
            workers = (PriorityPool(env, f"{tag}.workers", "workers", s.workers,
                                    s.queue_limit, s.queue_limit_by_priority)
                       if s.priority_queue
                       else Pool(env, f"{tag}.workers", "workers", s.workers, s.queue_limit))
            feeds_host = host is not None and si in entries
            if s.cpu_by_rate or feeds_host:
                workers.meter = RateMeter(host.meter if feeds_host and host else None)
            scale = CpuByRate(s.cpu_by_rate, workers.meter) \
                if s.cpu_by_rate and workers.meter is not None else None
            reps.append(
                Replica(
                    workers=workers,
                    cpu=PSCpu(env, f"{tag}.cpu", "cpu", s.cores, max_jobs=s.workers,
                              host=host, scale=scale),
                    db_pool=Pool(env, f"{tag}.db_pool", "db_pool", s.db_pool)
                    if s.db_pool
                    else None,
                )
            )
        replicas.append(reps)
    shards: list[list[Shard]] = []
    for di, d in enumerate(topo.databases):
        conns = sum(s.db_pool * s.max_replicas for s in topo.services if s.database == di)
        shards.append(
            [
                Shard(PSCpu(env, f"{d.name}[{i}].cpu", "db_cpu", d.cores, max_jobs=conns,
                            host=host),
                      tuple(PSCpu(env, f"{d.name}[{i}].replica{r}.cpu", "db_replica_cpu",
                                  d.cores, max_jobs=conns, host=host)
                            for r in range(d.read_replicas)))
                for i in range(d.shards)
            ]
        )
    locks = [
        [Pool(env, f"lock:{lk.name}[{i}]", "lock", 1) for i in range(lk.sub_accounts)]
        for lk in topo.locks
    ]
    workers = sum(s.workers * s.max_replicas for s in topo.services)
    caches = [
        [PSCpu(env, f"cache:{c.name}[{i}].cpu", "cache_cpu", c.cores, max_jobs=workers,
               host=host)
         for i in range(c.shards)]
        for c in topo.caches
    ]
    return Stations(replicas, shards, locks, caches, Backlog(env, "broker"), host, entry)


def build_contention(env: simpy.Environment, topo: Topology, stations: Stations,
                     pyrng: random.Random) -> Contention | None:
    """The contention model of a topology whose steps lock or version-check rows (None when
    none does: the request path then skips it entirely)."""
    if not topo.contended:
        return None
    connections = sum(s.db_pool * s.replicas for s in topo.services)
    return Contention(env, stations.locks, [lk.optimistic for lk in topo.locks],
                      topo.conflict_retry, len(topo.routes), connections, pyrng)


class Engine:
    """Simulates one deployment for one replication."""

    def __init__(self, topo: Topology, rng: np.random.Generator, bin_s: float = 1.0,
                 on_bin: Callable[[float], None] | None = None,
                 draws: DrawFactory | None = None, env: simpy.Environment | None = None):
        self.topo = topo
        self.on_bin = on_bin
        self.env = env if env is not None else simpy.Environment()
        self.rng = rng
        self.pyrng = random.Random(int(rng.integers(0, 2**63)))
        self.bin_s = bin_s
        self.draws = draws if draws is not None else BatchDraws(rng)
        host_rng = np.random.default_rng(int(rng.integers(0, 2**63))) if topo.host else None
        st = self.st = build_stations(self.env, topo, host_rng)
        self.replicas, self.shards, self.locks, self.broker = (st.replicas, st.shards, st.locks,
                                                               st.broker)
        self.recorder = Recorder()
        self.contention = build_contention(self.env, topo, st, self.pyrng)
        self.path = RequestPath(self.env, topo, st, self.draws, self.pyrng, self.recorder.record,
                                self.recorder.att.append, self.contention)
        self._series = [(st, StationSeries(st.name, st.kind, st.servers))
                        for st in self.stations()]
        self.autoscalers = [
            Autoscaler(self.env, s.name, s.autoscaling, [r.cpu for r in self.replicas[i]],
                       s.cores, s.replicas,
                       lambda n, i=i: self.path.set_live(i, n))  # type: ignore[misc]
            for i, s in enumerate(topo.services) if s.autoscaling is not None]

    def stations(self) -> Iterable[Station]:
        """Every station of the simulated topology."""
        for reps in self.replicas:
            for r in reps:
                yield r.workers
                yield r.cpu
                if r.db_pool is not None:
                    yield r.db_pool
        for shards in self.shards:
            for sh in shards:
                yield sh.cpu
                yield from sh.read_replicas
        for locks in self.locks:
            yield from locks
        if self.contention is not None and any(
                st.player_row == "pessimistic" for r in self.topo.routes
                for st, _ in walk_steps(r.steps)):
            yield self.contention.players
        for caches in self.st.caches:
            yield from caches
        yield self.broker

    def _sample_stations(self, duration: float) -> Generator:
        env = self.env
        n = int(np.ceil(duration / self.bin_s))
        on_bin = self.on_bin
        for i in range(1, n + 1):
            dt = min(i * self.bin_s, duration) - env.now
            yield env.timeout(dt)
            if on_bin is not None:
                on_bin(dt)
            for st, ser in self._series:
                b, q, c = st.snapshot()
                ser.busy.append(b)
                ser.queue.append(q)
                ser.completions.append(c)

    # ------------------------------------------------------------------ run

    def run(self, plan: SourcePlan, duration: float) -> RunOutput:
        """Simulate ``duration`` seconds of every source of ``plan`` together.

        In a reduced run (reduce factor k > 1) hot accounts are global: the other k - 1
        partitions write them too. ``plan.op_rate(t)`` (arrivals/s per operation of the
        represented partition) then drives phantom writers
        (:func:`sim.engine.sources.start_phantom_writers`).
        """
        env = self.env
        for g, group in enumerate(plan.closed):
            th = self.draws.demand(group.think, "think")
            for u in range(group.users):
                sub = np.random.default_rng(self.rng.integers(0, 2**63))
                player = None if group.players is None else int(group.players[u])
                env.process(closed_user(env, u, group.users, th, group.weights, duration, sub,
                                        self.path.walk, player, group.ops,
                                        key0=(len(plan.open) + g) * KEY_STRIDE))
        for j, chunks in enumerate(plan.open):
            env.process(open_source(env, chunks, duration, self.path.walk,
                                    key0=j * KEY_STRIDE))
        if plan.op_rate is not None and self.topo.reduce_factor > 1 and \
                self.contention is not None:
            start_phantom_writers(env, self.topo, self.contention.phantom, plan.op_rate,
                                  duration, self.rng, self.pyrng)
        for a in self.autoscalers:
            env.process(a.run(duration))
        return self._run(duration)

    def run_open(self, chunks: Iterable[Any], duration: float,
                 op_rate: Callable[[np.ndarray], np.ndarray] | None = None) -> RunOutput:
        """Simulate ``duration`` seconds of open arrivals given as chunks (t, op, player)."""
        return self.run(SourcePlan(open=[chunks], op_rate=op_rate), duration)

    def run_closed(self, users: int, think: Distribution, weights: np.ndarray,
                   duration: float) -> RunOutput:
        """Simulate ``users`` closed-loop users (think, request, repeat) for ``duration`` s."""
        return self.run(SourcePlan(closed=[ClosedGroup(users, think, weights)]), duration)

    def _run(self, duration: float) -> RunOutput:
        for st, _ in self._series:
            if isinstance(st, Pool | PSCpu):
                st.waits = WaitHistogram(duration)
        if self.contention is not None:
            self.contention.start(duration)
        self.env.process(self._sample_stations(duration))
        logs = start_faults(self.env, self.topo, self.st, self.path, duration)
        self.env.run(until=duration)
        for st, ser in self._series:
            if isinstance(st, Pool | PSCpu | RowLockTable) and st.waits is not None:
                ser.wait_counts = st.waits.counts()
        out = self.recorder.output(self.topo.deployment, duration, self.bin_s,
                                   [ser for _, ser in self._series], logs)
        out.policy = self.path.policies.counts() if self.path.policies is not None else {}
        for a in self.autoscalers:
            out.policy[f"autoscaling:{a.name}:replicas_added"] = float(a.added)
            out.policy[f"autoscaling:{a.name}:replicas_removed"] = float(a.removed)
            out.policy[f"autoscaling:{a.name}:final_replicas"] = float(a.live)
        if self.autoscalers:
            out.policy["replicas_added"] = float(sum(a.added for a in self.autoscalers))
        out.scale_events = [e for a in self.autoscalers for e in a.events]
        if self.contention is not None:
            out.contention = self.contention.output()
        host = self.st.host
        if host is not None and host.pauses is not None:  # finished pauses (a host: never reduced)
            out.host_pauses = (host.pause_count, host.paused_s)
        return out
