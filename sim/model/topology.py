"""Compile a scenario's deployment into a topology: plain data the engines walk.

The topology is a graph of stations (service replicas with worker pools and cores, database
shards with cores, hot-account row locks, the broker) and, for each operation, the route of
calls a request makes. Nothing here runs a simulation, so other engines (a vectorised one)
can read the same data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import reduce as _fold

from sim.model import faults as F
from sim.model.distributions import Distribution
from sim.model.population import HOUR_S, online_count
from sim.model.scenario import Deployment, Scenario, Step

GATEWAY_COMPONENT = "gateway"


@dataclass(frozen=True)
class StepSpec:
    """One call of a route, resolved against a deployment."""

    component: str
    service: int
    is_async: bool
    cpu: Distribution | None
    db: Distribution | None
    lock: int | None
    external: Distribution | None
    probability: float = 1.0             # a branch: share of requests taking the step
    read: bool = False                   # database work served by a read replica if any
    cache: int | None = None             # index into Topology.caches, looked up first
    calls: tuple[StepSpec, ...] = ()     # nested calls, holding this step's worker
    external_name: str | None = None     # the demand named as ``external`` (faults slow it)


@dataclass(frozen=True)
class Route:
    """The calls one operation makes, starting at its entry service."""

    operation: str
    entry: int
    gateway_cpu: Distribution | None
    steps: tuple[StepSpec, ...]


@dataclass(frozen=True)
class ServiceSpec:
    """A service as simulated (replica count already divided by the reduce factor)."""

    name: str
    replicas: int
    full_replicas: int
    cores: int
    workers: int
    db_pool: int
    database: int | None
    queue_limit: int | None
    pool_timeout_s: float | None
    health_interval_s: float = 2.0       # load balancer's health check (crash detection)
    health_fall: int = 3
    health_rise: int = 2


@dataclass(frozen=True)
class DatabaseSpec:
    """A database as simulated: ``shards`` identical shards partitioned by player."""

    name: str
    shards: int
    full_shards: int
    cores: int
    read_replicas: int = 0
    replication_lag_s: float = 0.0
    sync_s: float = 0.0                  # synchronous replication: replica round trip per write


@dataclass(frozen=True)
class CacheSpec:
    """A cache server: ``shards`` (reduced) partitions by player, each ``cores`` cores."""

    name: str
    hit_ratio: float
    lookup: Distribution
    cores: int
    shards: int


@dataclass(frozen=True)
class LockSpec:
    """A hot account: ``sub_accounts`` row locks, one taken at random per write."""

    name: str
    sub_accounts: int


@dataclass(frozen=True)
class Topology:
    """Everything an engine needs to simulate one deployment."""

    deployment: str
    kind: str
    services: tuple[ServiceSpec, ...]
    databases: tuple[DatabaseSpec, ...]
    locks: tuple[LockSpec, ...]
    routes: tuple[Route, ...]
    network_hop: Distribution
    rpc_cpu: Distribution
    publish: Distribution
    load_balancing: str
    reduce_factor: int
    caches: tuple[CacheSpec, ...] = ()
    faults: tuple[F.FaultSpec, ...] = ()
    retry: F.RetrySpec | None = None     # players' retries on errors and timeouts


def walk_steps(steps: tuple[StepSpec, ...], p: float = 1.0
               ) -> Iterator[tuple[StepSpec, float]]:
    """Every step of a call graph, depth first, with the probability a request reaches it."""
    for st in steps:
        q = p * st.probability
        yield st, q
        yield from walk_steps(st.calls, q)


def reduce_refusal(scenario: Scenario) -> str | None:
    """Why a scenario asking to be reduced cannot be (None when it can).

    Least-outstanding balancing sends each request to the replica with the fewest requests in
    flight among *all* of a service's replicas: one replica's queue depends on every peer's,
    a pooling that R/k replicas fed 1/k of the load do not have (their queues would read
    high). Round robin and random balancing depend on the arrival stream only, which a
    reduced run reproduces (see :func:`reduce_stream_every`).
    """
    if not scenario.simulation.reduce:
        return None
    by_faults = F.reduce_refusal(scenario.faults)
    if by_faults is not None:
        return by_faults
    for d in scenario.deployments:
        pooled = [s.name for s in d.services if s.replicas > 1]
        if d.load_balancing == "least_outstanding" and pooled:
            return (f"deployment {d.name!r} balances {', '.join(pooled)} by least outstanding "
                    "requests: a replica's queue depends on all its peers' queues, which a "
                    "partition of the replicas cannot reproduce; simulated at full size")
    return None


def reduce_stream_every(load_balancing: str, k: int) -> int:
    """How a reduced run (factor k) feeds its partition: keep every n-th arrival of a k times
    denser stream (n = k) or a Poisson stream of 1/k of the players' arrivals (n = 1).

    Round robin gives each of R replicas every R-th request of the whole stream; the
    partition's R/k replicas, fed every k-th arrival and balancing round robin, get exactly
    that. Random balancing gives each replica a Poisson stream of 1/R of the load, which a
    Poisson partition of 1/k split at random over R/k replicas reproduces.
    """
    return k if k > 1 and load_balancing == "round_robin" else 1


def reduce_factor(scenario: Scenario) -> int:
    """Largest k dividing every replica and shard count of every deployment (1 if not reducing
    or if :func:`reduce_refusal` says the scenario cannot be reduced).

    Simulating 1/k of each deployment with 1/k of the players (a partition by player id) keeps
    every replica at full size, so queueing is not scaled down, and all deployments still see
    identical traffic.
    """
    if not scenario.simulation.reduce or reduce_refusal(scenario) is not None:
        return 1
    counts = [s.replicas for d in scenario.deployments for s in d.services]
    counts += [db.shards for d in scenario.deployments for db in d.databases]
    counts += [c.shards for d in scenario.deployments for c in d.caches]
    return max(1, _fold(math.gcd, counts))


def compile_topology(scenario: Scenario, deployment: Deployment, k: int = 1) -> Topology:
    """Resolve ``deployment`` of ``scenario`` into a :class:`Topology`, reduced by ``k``."""
    svc_index = {s.name: i for i, s in enumerate(deployment.services)}
    db_index = {d.name: i for i, d in enumerate(deployment.databases)}
    lock_names = list(deployment.hot_accounts)
    services = tuple(
        ServiceSpec(
            name=s.name,
            replicas=s.replicas // k,
            full_replicas=s.replicas,
            cores=s.cores,
            workers=s.workers,
            db_pool=s.db_pool,
            database=db_index[s.database] if s.database else None,
            queue_limit=s.queue_limit,
            pool_timeout_s=s.db_pool_timeout_ms / 1000.0 if s.db_pool_timeout_ms else None,
            health_interval_s=s.health_check.interval_s,
            health_fall=s.health_check.failure_threshold,
            health_rise=s.health_check.rise,
        )
        for s in deployment.services
    )
    databases = tuple(
        DatabaseSpec(name=d.name, shards=d.shards // k, full_shards=d.shards, cores=d.cores,
                     read_replicas=d.read_replicas,
                     replication_lag_s=d.replication_lag_ms / 1000.0,
                     sync_s=d.sync_round_trip_ms / 1000.0 if d.replication == "sync" else 0.0)
        for d in deployment.databases
    )
    cache_names = [c.name for c in deployment.caches]
    caches = tuple(
        CacheSpec(name=c.name, hit_ratio=c.hit_ratio, lookup=c.lookup, cores=c.cores,
                  shards=c.shards // k)
        for c in deployment.caches
    )
    locks = tuple(
        LockSpec(name=n, sub_accounts=deployment.hot_accounts[n].sub_accounts) for n in lock_names
    )
    gateway = scenario.demands.get(GATEWAY_COMPONENT)
    def step_spec(st: Step) -> StepSpec:
        svc = deployment.service_of(st.component)
        assert svc is not None  # guaranteed by Scenario validation
        return StepSpec(
            component=st.component,
            service=svc_index[svc.name],
            is_async=st.mode == "async",
            cpu=scenario.demand(st.cpu),
            db=scenario.demand(st.db),
            lock=lock_names.index(st.lock) if st.lock else None,
            external=scenario.demand(st.external),
            probability=st.probability,
            read=st.read,
            cache=cache_names.index(st.cache) if st.cache else None,
            calls=tuple(step_spec(c) for c in st.calls),
            external_name=st.external if isinstance(st.external, str) else None,
        )

    routes = []
    for op_name, op in scenario.operations.items():
        steps = [step_spec(st) for st in op.steps]
        if deployment.entry is not None:
            entry = svc_index[deployment.entry]
        else:
            first_sync = next((s for s in steps if not s.is_async), steps[0])
            entry = first_sync.service
        entry_hosts_gateway = GATEWAY_COMPONENT in deployment.services[entry].components
        routes.append(
            Route(
                operation=op_name,
                entry=entry,
                gateway_cpu=gateway if entry_hosts_gateway else None,
                steps=tuple(steps),
            )
        )
    return Topology(
        deployment=deployment.name,
        kind=deployment.kind,
        services=services,
        databases=databases,
        locks=locks,
        routes=tuple(routes),
        network_hop=deployment.network_hop,
        rpc_cpu=deployment.rpc_cpu,
        publish=deployment.broker.publish,
        load_balancing=deployment.load_balancing,
        reduce_factor=k,
        caches=caches,
        faults=F.compile_faults(
            scenario.faults, deployment, list(scenario.operations), scenario.players, k,
            online_at=lambda t: float(online_count(
                scenario.population, scenario.simulation.start_hour * HOUR_S + t)),
            registered=scenario.population.registered_players),
        retry=F.compile_retry(scenario.players),
    )
