"""Compile a scenario's deployment into a topology: plain data the engines walk.

The topology is a graph of stations (service replicas with worker pools and cores, database
shards with cores, hot-account row locks, the broker) and, for each operation, the route of
calls a request makes. Nothing here runs a simulation, so other engines (a vectorised one)
can read the same data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import reduce as _fold

from sim.model import faults as F
from sim.model.distributions import Distribution, EmpiricalByRate, ExternalDistribution
from sim.model.policies import (
    PRIORITIES,
    AutoscalingSpec,
    CallPolicySpec,
    compile_autoscaling,
    compile_call_policy,
)
from sim.model.population import HOUR_S, online_count
from sim.model.scenario import Deployment, HostPauses, Scenario, Step

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
    external: ExternalDistribution | None   # empirical_by_rate: depends on the entry rate
    probability: float = 1.0             # a branch: share of requests taking the step
    read: bool = False                   # database work served by a read replica if any
    cache: int | None = None             # index into Topology.caches, looked up first
    calls: tuple[StepSpec, ...] = ()     # nested calls, holding this step's worker
    idempotent: bool = True              # a call to it may be retried
    external_name: str | None = None     # the demand named as ``external`` (faults slow it)
    player_row: str | None = None        # writes the player's row: "pessimistic"/"optimistic"

    @property
    def contended(self) -> bool:
        """The step's database work writes a row others write too (a lock or a version)."""
        return self.db is not None and (self.lock is not None or self.player_row is not None)


@dataclass(frozen=True)
class Route:
    """The calls one operation makes, starting at its entry service."""

    operation: str
    entry: int
    gateway_cpu: Distribution | None
    steps: tuple[StepSpec, ...]
    priority: int = PRIORITIES["normal"]  # 0 high (money) .. 2 low (reporting)


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
    cpu_by_rate: tuple[tuple[float, float], ...] = ()  # (requests/s into a replica, factor)
    priority_queue: bool = False
    queue_limit_by_priority: tuple[int | None, ...] = ()  # per priority; None: queue_limit
    call_policies: tuple[CallPolicySpec | None, ...] = ()  # per callee service index
    autoscaling: AutoscalingSpec | None = None
    health_interval_s: float = 2.0       # load balancer's health check (crash detection)
    health_fall: int = 3
    health_rise: int = 2

    @property
    def max_replicas(self) -> int:
        """Replicas the engine builds: the autoscaler's maximum, else ``replicas``."""
        a = self.autoscaling
        return self.replicas if a is None else max(self.replicas, a.max_replicas)


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
    optimistic: bool = False   # version-checked at commit instead of locked


@dataclass(frozen=True)
class ConflictRetrySpec:
    """Retries after a lost optimistic version check (seconds; see ``ConflictRetry``)."""

    max_attempts: int = 50
    backoff_base_s: float = 0.0005
    backoff_cap_s: float = 0.05


@dataclass(frozen=True)
class PausesSpec:
    """Stalls of a whole host (GC pauses, checkpoints), seconds (see ``HostPauses``)."""

    rates: tuple[float, ...]        # requests/s entering the deployment, increasing
    per_s: tuple[float, ...]        # pauses per second at those rates
    durations_s: tuple[tuple[float, ...], ...]  # measured durations at each rate, resampled


@dataclass(frozen=True)
class HostSpec:
    """One machine whose cores every CPU station of the deployment shares."""

    cores: int
    background_cores: float = 0.0
    client_s_per_request: float = 0.0
    slice_s: float = 0.0  # 0: smooth sharing with the background; else stalls of slices
    pauses: PausesSpec | None = None


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
    host: HostSpec | None = None
    faults: tuple[F.FaultSpec, ...] = ()
    retry: F.RetrySpec | None = None     # players' retries on errors and timeouts
    conflict_retry: ConflictRetrySpec = ConflictRetrySpec()

    @property
    def contended(self) -> bool:
        """Some step locks or version-checks a row (the contention model is needed)."""
        return any(st.contended for r in self.routes for st, _ in walk_steps(r.steps))

    @property
    def rate_dependent(self) -> bool:
        """Something reads the rate of requests entering the deployment: a step's
        ``empirical_by_rate`` wait of more than one level, or the host's pauses (the engine
        meters the entry rate only then)."""
        waits = any(isinstance(st.external, EmpiricalByRate) and len(st.external.levels) > 1
                    for r in self.routes for st, _ in walk_steps(r.steps))
        return waits or (self.host is not None and self.host.pauses is not None)


def walk_steps(steps: tuple[StepSpec, ...], p: float = 1.0
               ) -> Iterator[tuple[StepSpec, float]]:
    """Every step of a call graph, depth first, with the probability a request reaches it."""
    for st in steps:
        q = p * st.probability
        yield st, q
        yield from walk_steps(st.calls, q)


ReduceRule = Callable[[Scenario], "str | None"]
"""A reason a scenario cannot be reduced (``None`` when the rule does not object)."""


def _least_outstanding_pools(scenario: Scenario) -> str | None:
    """Least-outstanding balancing sends each request to the replica with the fewest requests
    in flight among *all* of a service's replicas: one replica's queue depends on every
    peer's, a pooling that R/k replicas fed 1/k of the load do not have (their queues would
    read high). Round robin and random balancing depend on the arrival stream only, which a
    reduced run reproduces (see :func:`reduce_stream_every`)."""
    for d in scenario.deployments:
        pooled = [s.name for s in d.services if s.replicas > 1]
        if d.load_balancing == "least_outstanding" and pooled:
            return (f"deployment {d.name!r} balances {', '.join(pooled)} by least outstanding "
                    "requests: a replica's queue depends on all its peers' queues, which a "
                    "partition of the replicas cannot reproduce; simulated at full size")
    return None


def _faults(scenario: Scenario) -> str | None:
    """Faults a partition cannot represent (``sim.model.faults.reduce_refusal``)."""
    return F.reduce_refusal(scenario.faults)


def _autoscaling(scenario: Scenario) -> str | None:
    """An autoscaler adds whole replicas from the utilisation of all of a service's
    replicas: R/k replicas would add replicas k times too coarsely (and at other times)."""
    for d in scenario.deployments:
        scaled = [s.name for s in d.services if s.autoscaling is not None]
        if scaled:
            return (f"deployment {d.name!r} autoscales {', '.join(scaled)}: the autoscaler adds "
                    "whole replicas from the utilisation of all of them, which a partition "
                    "of 1/k of the replicas cannot reproduce; simulated at full size")
    return None


def _host(scenario: Scenario) -> str | None:
    """A host's cores are shared by every process of the deployment: a partition of its
    replicas would get all of them (nor could a partition stop the whole machine for the
    host's ``pauses``: refusing every host covers them)."""
    for d in scenario.deployments:
        if d.host is not None:
            return (f"deployment {d.name!r} runs on one host whose cores all its processes "
                    "share, which a partition of its replicas cannot reproduce; simulated at "
                    "full size")
    return None


REDUCE_RULES: list[tuple[str, ReduceRule]] = [
    ("least_outstanding", _least_outstanding_pools),
    ("faults", _faults),
    ("autoscaling", _autoscaling),
    ("host", _host),
]
"""Every reason a scenario may not be reduced, as ``(name, rule)``: the one place to add a
rule for a new scenario feature whose behaviour a partition of 1/k of the system cannot
reproduce (say why in the returned reason; the run then says "Not reduced: <reason>")."""


def reduce_refusals(scenario: Scenario) -> list[str]:
    """Every rule's reason not to reduce ``scenario`` (empty: it can be; also empty when the
    scenario does not ask to be reduced)."""
    if not scenario.simulation.reduce:
        return []
    return [why for _name, rule in REDUCE_RULES if (why := rule(scenario)) is not None]


def reduce_refusal(scenario: Scenario) -> str | None:
    """Why a scenario asking to be reduced cannot be (None when it can): the reasons of
    :data:`REDUCE_RULES`, joined."""
    reasons = reduce_refusals(scenario)
    return "; ".join(reasons) if reasons else None


def _reduce_counts(scenario: Scenario) -> dict[str, int]:
    """Every count a reduced run divides: replicas, database shards, cache shards."""
    out = {}
    for d in scenario.deployments:
        out.update({f"{d.name}: service {s.name} x{s.replicas}": s.replicas for s in d.services})
        out.update({f"{d.name}: database {b.name} x{b.shards}": b.shards for b in d.databases})
        out.update({f"{d.name}: cache {c.name} x{c.shards}": c.shards for c in d.caches})
    return out


def not_reducible_because(scenario: Scenario) -> str:
    """Why the reduce factor of ``scenario`` is 1 although nothing refuses: the counts with
    no common factor (a reduced run keeps every replica and shard whole)."""
    counts = _reduce_counts(scenario)
    ones = [name for name, n in counts.items() if n == 1]
    shown = ones or list(counts)
    more = f" and {len(shown) - 4} more" if len(shown) > 4 else ""
    return ("nothing to reduce: the replica and shard counts have no common factor > 1 ("
            + ", ".join(shown[:4]) + more + ")")


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
    return max(1, _fold(math.gcd, _reduce_counts(scenario).values()))


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
            priority_queue=s.queue == "priority",
            queue_limit_by_priority=tuple(s.queue_limit_by_priority.get(p)
                                          for p in PRIORITIES),
            call_policies=tuple(
                compile_call_policy(s.call_policies.get(
                    callee.name,
                    deployment.call_policies.get(callee.name, deployment.call_policy)))
                for callee in deployment.services),
            autoscaling=compile_autoscaling(s.autoscaling),
            health_interval_s=s.health_check.interval_s,
            health_fall=s.health_check.failure_threshold,
            health_rise=s.health_check.rise,
            cpu_by_rate=tuple((p.rps, p.factor) for p in s.cpu_by_rate or ()),
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
        LockSpec(name=n, sub_accounts=h.sub_accounts,
                 optimistic=(h.concurrency or deployment.concurrency_of(h.database))
                 == "optimistic")
        for n, h in deployment.hot_accounts.items()
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
            idempotent=st.idempotent,
            external_name=st.external if isinstance(st.external, str) else None,
            player_row=deployment.concurrency_of(svc.database) if st.player_row else None,
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
                priority=PRIORITIES[op.priority],
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
        conflict_retry=ConflictRetrySpec(
            max_attempts=deployment.conflict_retry.max_attempts,
            backoff_base_s=deployment.conflict_retry.backoff_base_ms / 1000.0,
            backoff_cap_s=deployment.conflict_retry.backoff_cap_ms / 1000.0),
        host=None if deployment.host is None else HostSpec(
            deployment.host.cores, deployment.host.background_cores,
            deployment.host.client_ms_per_request / 1000.0, deployment.host.slice_ms / 1000.0,
            _pauses(deployment.host.pauses)),
    )


def _pauses(p: HostPauses | None) -> PausesSpec | None:
    if p is None:
        return None
    return PausesSpec(rates=tuple(x.rps for x in p.by_rate),
                      per_s=tuple(x.per_s for x in p.by_rate),
                      durations_s=tuple(tuple(d / 1000.0 for d in (x.durations_ms or
                                                                   p.durations_ms))
                                        for x in p.by_rate))
