"""The scenario language: pydantic models, YAML loading and ``--set`` overrides.

A scenario says who plays (population), what they do (operations and their call paths),
how the back office is deployed (one or more deployments compared on identical traffic),
what each step costs (service demands) and what is acceptable (SLOs). Loading never runs
anything: a bad file or override raises :class:`ScenarioError` naming the file, the field
path and the reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from sim.model import limits as L
from sim.model.distributions import (
    BetSize,
    Constant,
    Distribution,
    EmpiricalByRate,
    ExternalDistribution,
    increasing_rps,
)
from sim.model.faults import (
    FAULT_KINDS,
    Fault,
    HealthCheck,
    Players,
    RecoverySettings,
    fault_problems,
)
from sim.model.policies import Autoscaling, CallPolicy, Priority

PERCENTILES: dict[str, float] = {"p50": 50.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}
OPERATION_NAMES = ("login", "balance", "bet", "win", "rollback", "deposit", "withdrawal")


class ScenarioError(ValueError):
    """A scenario file or override is invalid. ``str()`` is the one message shown to users."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: {path or '<root>'}: {reason}" for path, reason in problems]
        super().__init__("\n".join(lines))


class _Model(BaseModel):
    model_config = L.FINITE


# --------------------------------------------------------------------------- population


class Spike(_Model):
    """A burst of activity: the rate of the listed operations is multiplied for a while."""

    name: str = "spike"
    start_s: float = Field(ge=0, le=L.MAX_DURATION_S,
                           description="seconds after the simulated window starts")
    duration_s: float = Field(gt=0, le=L.MAX_DURATION_S)
    multiplier: float = Field(gt=0, le=L.MAX_MULTIPLIER)
    operations: list[str] | None = Field(
        default=None, description="operations affected; all when omitted"
    )


class Session(_Model):
    """What an online player does per unit of time."""

    actions_per_minute: float = Field(default=4.0, gt=0, le=L.MAX_ACTIONS_PER_MINUTE)
    mean_session_minutes: float = Field(default=30.0, gt=0, le=L.MAX_SESSION_MINUTES)


class Whales(_Model):
    """Heavy-tailed activity: a small share of players act many times more often."""

    share: float = Field(default=0.01, ge=0, le=1)
    activity_multiplier: float = Field(default=20.0, ge=1, le=L.MAX_MULTIPLIER)


class Population(_Model):
    """Registered and online players over the day."""

    registered_players: int = Field(default=1_000_000, gt=0, le=L.MAX_PLAYERS)
    peak_online: int = Field(default=100_000, gt=0, le=L.MAX_ONLINE)
    online_curve: list[float] = Field(
        default_factory=lambda: [
            0.30, 0.22, 0.16, 0.12, 0.10, 0.10, 0.12, 0.18, 0.25, 0.32, 0.38, 0.44,
            0.50, 0.54, 0.56, 0.60, 0.66, 0.74, 0.84, 0.94, 1.00, 0.96, 0.78, 0.50,
        ],
        description="share of peak_online at each hour 0..23 (linear in between)",
        min_length=24,
        max_length=24,
    )
    spikes: list[Spike] = Field(default_factory=list)
    session: Session = Field(default_factory=Session)
    bet_size: BetSize = Field(default_factory=BetSize)
    whales: Whales = Field(default_factory=Whales)

    @field_validator("online_curve")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        if any(not (0 <= x <= 1) for x in v):
            raise ValueError("every hourly share must be between 0 and 1")
        if max(v) <= 0:
            raise ValueError("at least one hourly share must be positive")
        return v

    @model_validator(mode="after")
    def _fits(self) -> Population:
        if self.peak_online > self.registered_players:
            raise ValueError("peak_online cannot exceed registered_players")
        return self


# --------------------------------------------------------------------------- operations

DemandRef = str | ExternalDistribution
"""A step's demand: a name in ``demands`` or an inline distribution (``empirical_by_rate``
only as ``external``: checked by ``Step`` and ``Scenario``)."""
ONLY_EXTERNAL = ("empirical_by_rate is only valid as a step's external wait (its distribution "
                 "depends on the deployment's request rate)")
MAX_CALL_DEPTH = 8             # nested calls: levels below a top-level step, at most
MAX_RATE_RPS = 10_000_000.0    # explicit arrival rates (requests/s), at most
MAX_RATE_POINTS = 10_000       # points of a rate table, at most
MAX_WINDOW_S = 7 * 86_400.0    # times in a rate table (s since the window start), at most
MAX_WEIGHT = L.MAX_WEIGHT      # an operation's or a workload mix's weight, at most
MAX_USERS = 1_000_000          # closed-loop users of a workload, at most


class RatePoint(_Model):
    """One point of a time-varying rate: ``rps`` requests per second at ``t_s``.

    Between points the rate is linear; before the first and after the last it is held.
    """

    t_s: float = Field(ge=0, le=MAX_WINDOW_S, description="seconds after the window starts")
    rps: float = Field(ge=0, le=MAX_RATE_RPS)


def _check_rate_table(table: list[RatePoint] | None) -> None:
    if table is None:
        return
    ts = [p.t_s for p in table]
    if any(b <= a for a, b in pairwise(ts)):
        raise ValueError("rate_table: t_s must increase from point to point")
    if max(p.rps for p in table) <= 0:
        raise ValueError("rate_table: at least one rate must be positive")


class Step(_Model):
    """One call an operation makes: where it runs and what it costs there.

    ``cpu`` is time on the hosting service's cores; ``db`` is time on the database while a
    pooled connection is held; ``lock`` names a hot account and ``player_row`` says the
    database work writes the player's balance row: either row is locked for the database
    time, or version-checked at commit, by the deployment's ``concurrency``; ``mode:
    async`` sends the step through the broker (the caller does not wait); an ``external``
    step waits on an outside dependency (payments provider) while holding the caller's
    worker.
    """

    component: str
    mode: Literal["sync", "async"] = "sync"
    cpu: DemandRef | None = None
    db: DemandRef | None = None
    lock: str | None = None
    player_row: bool = Field(
        default=False,
        description="the database work writes the player's balance row: under pessimistic "
        "concurrency the row is locked for the database time (a player's concurrent requests "
        "queue on it), under optimistic its version is checked at commit",
    )
    external: DemandRef | None = None
    probability: float = Field(
        default=1.0, gt=0, le=1,
        description="share of requests that take this step (a branch); the others skip it",
    )
    read: bool = Field(
        default=False,
        description="the database work is a read: served by a read replica of the database "
        "when it has some (spread at random), else by the primary",
    )
    cache: str | None = Field(
        default=None,
        description="a cache of the deployment looked up first: on a hit the database work is "
        "skipped, on a miss it is done (the cost of a miss)",
    )
    calls: list[Step] = Field(
        default_factory=list,
        description="nested calls made after this step's own work, each holding this step's "
        f"worker until it returns (at most {MAX_CALL_DEPTH} levels deep)",
    )
    idempotent: bool = Field(
        default=True,
        description="a call to this step may be sent again after a failure or timeout (money "
        "commands carry their transaction id, reads change nothing); false: never retried",
    )

    @field_validator("cpu", "db")
    @classmethod
    def _not_by_rate(cls, v: DemandRef | None) -> DemandRef | None:
        if isinstance(v, EmpiricalByRate):
            raise ValueError(ONLY_EXTERNAL)
        return v

    @model_validator(mode="after")
    def _something(self) -> Step:
        if self.cpu is None and self.db is None and self.external is None and not self.calls:
            raise ValueError("a step needs at least one of cpu, db, external or calls")
        if self.lock is not None and self.db is None:
            raise ValueError("a lock is held during database time: give db as well")
        if self.player_row and self.db is None:
            raise ValueError("player_row is a database write: give db as well")
        if self.player_row and self.read:
            raise ValueError("player_row writes the player's row: a read (read: true) cannot")
        if self.read and self.db is None:
            raise ValueError("a read is database work: give db as well")
        if self.cache is not None and self.db is None:
            raise ValueError("a cache saves database work on a hit: give db (the miss) as well")
        return self

    def walk(self, path: str, depth: int = 1) -> Iterator[tuple[str, Step, int]]:
        """This step and its nested calls: (field path, step, depth), depth first."""
        yield path, self, depth
        for i, c in enumerate(self.calls):
            yield from c.walk(f"{path}.calls[{i}]", depth + 1)


class Operation(_Model):
    """An operation players cause, its share of all actions and its call path.

    ``weight`` is the operation's share of the population's actions; an operation may
    instead (or as well) arrive at an explicit rate, ``rate_rps`` or a ``rate_table``, as an
    open workload of its own.
    """

    weight: float = Field(ge=0, le=MAX_WEIGHT)
    steps: list[Step] = Field(min_length=1)
    rate_rps: float | None = Field(
        default=None, gt=0, le=MAX_RATE_RPS,
        description="arrivals per second of this operation, next to the population's",
    )
    rate_table: list[RatePoint] | None = Field(
        default=None, min_length=1, max_length=MAX_RATE_POINTS,
        description="time-varying arrivals per second (linear between points)",
    )
    priority: Priority = Field(
        default="normal",
        description="high (bets, wins) goes ahead of normal and low (reporting) in a service "
        "with queue: priority, and may use a bulkhead's reserved slots",
    )

    @model_validator(mode="after")
    def _rates(self) -> Operation:
        if self.rate_rps is not None and self.rate_table is not None:
            raise ValueError("give rate_rps or rate_table, not both")
        _check_rate_table(self.rate_table)
        return self

    def steps_walk(self, name: str) -> Iterator[tuple[str, Step, int]]:
        """Every step of the call graph with its field path and depth."""
        for i, st in enumerate(self.steps):
            yield from st.walk(f"operations.{name}.steps[{i}]")


# --------------------------------------------------------------------------- deployment


class RateFactor(_Model):
    """One point of a load-dependent CPU demand: at ``rps`` requests per second into a
    replica, its CPU demands are multiplied by ``factor`` (batching, group commit)."""

    rps: float = Field(ge=0, le=MAX_RATE_RPS)
    factor: float = Field(ge=1 / L.MAX_SPEED_FACTOR, le=L.MAX_SPEED_FACTOR)


class PauseRate(_Model):
    """Host pauses per second while the deployment receives ``rps`` requests per second."""

    rps: float = Field(gt=0, le=L.MAX_RATE_RPS)
    per_s: float = Field(ge=0, le=L.MAX_PAUSES_PER_S)
    durations_ms: list[Annotated[float, Field(gt=0, le=L.MAX_PAUSE_MS)]] | None = Field(
        default=None, min_length=1, max_length=L.MAX_PAUSE_SAMPLES,
        description="pauses measured at this rate (default: the host's durations_ms)")


class HostPauses(_Model):
    """Stalls of the whole host: Poisson pauses whose rate ``by_rate`` interpolates linearly
    in the requests per second entering the deployment (held beyond the points), each lasting
    a duration drawn from the durations measured at a point (a point's own ``durations_ms``,
    else the host's): between two points, from the upper one with probability the position
    of the rate between them (a mixture), so a rare long stall seen at one load is not spread
    over every load; pauses never overlap."""

    by_rate: list[PauseRate] = Field(min_length=1, max_length=L.MAX_RATE_LEVELS)
    durations_ms: list[Annotated[float, Field(gt=0, le=L.MAX_PAUSE_MS)]] = Field(
        min_length=1, max_length=L.MAX_PAUSE_SAMPLES)

    @field_validator("by_rate")
    @classmethod
    def _increasing(cls, v: list[PauseRate]) -> list[PauseRate]:
        return increasing_rps(v, "by_rate")


class Host(_Model):
    """The machine every process of a deployment runs on: its CPU stations (each service
    replica's cores, each database shard's, caches') draw from ``cores`` shared cores, by
    processor sharing, beside ``background_cores`` busy with other work and the load
    generator's ``client_ms_per_request`` of CPU for each request it sends."""

    cores: int = Field(ge=1, le=L.MAX_HOST_CORES)
    background_cores: float = Field(
        default=0.0, ge=0, le=L.MAX_HOST_CORES,
        description="cores wanted on average by processes outside the deployment (their "
        "threads running or ready to run: the load they add to the run queue)")
    client_ms_per_request: float = Field(
        default=0.0, ge=0, le=L.MAX_DEMAND_MS,
        description="CPU of the load generator on the same host per request it sends")
    slice_ms: float = Field(
        default=0.0, ge=0, le=L.MAX_SLICE_MS,
        description="0: the background slows the deployment's jobs smoothly (processor "
        "sharing); > 0: the deployment loses the cores to the background in whole scheduler "
        "slices: runs of mean slice_ms alternate with stalls sized so that the share of time "
        "is processor sharing's (the 5-10 ms stalls that lift p99 on a busy machine)")
    pauses: HostPauses | None = Field(
        default=None,
        description="stalls of the whole machine (GC pauses, checkpoints): every CPU station "
        "stops for a measured duration, at a rate that depends on the deployment's load")


class Service(_Model):
    """A deployable unit hosting one or more components."""

    name: str
    components: list[str] = Field(min_length=1)
    replicas: int = Field(default=1, ge=1, le=L.MAX_REPLICAS)
    cores: int = Field(default=2, ge=1, le=L.MAX_CORES)
    workers: int = Field(default=16, ge=1, le=L.MAX_WORKERS)
    db_pool: int = Field(default=0, ge=0, le=L.MAX_CONNECTIONS,
                         description="database connections per replica")
    database: str | None = None
    queue_limit: int | None = Field(
        default=None, ge=0, le=L.MAX_QUEUE_LIMIT,
        description="requests waiting for a worker beyond which new ones get 503",
    )
    db_pool_timeout_ms: float | None = Field(default=None, gt=0, le=L.MAX_DEMAND_MS)
    cpu_by_rate: list[RateFactor] | None = Field(
        default=None, min_length=1, max_length=L.MAX_FACTOR_POINTS,
        description="load-dependent CPU demand: multiplier of every CPU demand on a replica "
        "against the requests per second entering it (linear between points, held beyond)")

    @model_validator(mode="after")
    def _increasing(self) -> Service:
        if self.cpu_by_rate is not None and any(
                b.rps <= a.rps for a, b in pairwise(self.cpu_by_rate)):
            raise ValueError("cpu_by_rate: rps must increase from point to point")
        return self
    health_check: HealthCheck = Field(
        default_factory=HealthCheck,
        description="how the load balancer notices a crashed replica (used by faults)",
    )
    queue: Literal["fifo", "priority"] = Field(
        default="fifo",
        description="order of requests waiting for a worker: arrival, or by the operation's "
        "priority (high, normal, low), arrival within a priority",
    )
    queue_limit_by_priority: dict[Priority, Annotated[int, Field(ge=0, le=L.MAX_QUEUE_LIMIT)]] = \
        Field(default_factory=dict,
              description="a request of this priority is shed (503) when this many already wait; "
              "the others use queue_limit (load shedding of low priority first)")
    call_policies: dict[str, CallPolicy | None] = Field(
        default_factory=dict,
        description="callee service -> the policy of this service's calls to it (replaces the "
        "deployment's call_policy; null: no policy)",
    )
    autoscaling: Autoscaling | None = None

    @model_validator(mode="after")
    def _policies(self) -> Service:
        if self.queue_limit_by_priority and self.queue != "priority":
            raise ValueError("queue_limit_by_priority needs queue: priority")
        if self.queue_limit is not None:
            over = {p: n for p, n in self.queue_limit_by_priority.items() if n > self.queue_limit}
            if over:
                raise ValueError(f"queue_limit_by_priority {over} exceeds queue_limit "
                                 f"({self.queue_limit})")
        a = self.autoscaling
        if a is not None and not a.min_replicas <= self.replicas <= a.max_replicas:
            raise ValueError(f"replicas ({self.replicas}) must be within autoscaling "
                             f"[min_replicas, max_replicas] = [{a.min_replicas}, {a.max_replicas}]")
        return self


Concurrency = Literal["pessimistic", "optimistic"]
CONCURRENCY_DOC = (
    "pessimistic: a written row (a player's balance, a hot account) is locked for the "
    "transaction's database time; optimistic: no lock, the row's version is checked at commit "
    "and a loser aborts, backs off and retries (conflict_retry)"
)


class ConflictRetry(_Model):
    """Retries of a transaction that lost an optimistic version check.

    The defaults are the reference back office's (``SqlStorage.retrying``): at most 50
    attempts, each retry after a full-jitter backoff ``U(0, min(cap, base * 2^min(n, 7)))``
    with base 0.5 ms and cap 50 ms; the last loser gives up and the request fails.
    """

    max_attempts: int = Field(default=50, ge=1, le=L.MAX_CONFLICT_ATTEMPTS,
                              description="attempts per transaction, the first included")
    backoff_base_ms: float = Field(default=0.5, ge=0, le=L.MAX_BACKOFF_MS)
    backoff_cap_ms: float = Field(default=50.0, ge=0, le=L.MAX_BACKOFF_MS)


class Database(_Model):
    """A database server (or cluster of identical shards partitioned by player)."""

    name: str
    concurrency: Concurrency | None = Field(
        default=None, description="this database's concurrency control (default: the "
        f"deployment's); {CONCURRENCY_DOC}",
    )
    cores: int = Field(default=8, ge=1, le=L.MAX_CORES)
    max_connections: int = Field(default=200, ge=1, le=L.MAX_CONNECTIONS)
    shards: int = Field(default=1, ge=1, le=L.MAX_SHARDS)
    read_replicas: int = Field(
        default=0, ge=0, le=64,
        description="read replicas per shard (each with the primary's cores); steps with "
        "read: true are spread over them at random, writes go to the primary",
    )
    replication_lag_ms: float = Field(
        default=0.0, ge=0, le=3_600_000,
        description="asynchronous replication lag: a read from a replica may miss the writes "
        "of this many last milliseconds (stated in the results); a db_failover loses the "
        "writes committed within it",
    )
    replication: Literal["async", "sync"] = Field(
        default="async",
        description="sync: every write waits for a replica's acknowledgement "
        "(sync_round_trip_ms) and a failover loses nothing; async: no wait, a failover loses "
        "the writes of the last replication_lag_ms",
    )
    sync_round_trip_ms: float = Field(default=1.0, ge=0, le=L.MAX_DEMAND_MS)


class Cache(_Model):
    """A cache server (Redis, memcached): looked up before a step's database work."""

    name: str
    hit_ratio: float = Field(ge=0, le=1, description="share of lookups that hit")
    lookup: Distribution = Field(
        description="time of one lookup on the cache's cores, network round trip included"
    )
    cores: int = Field(default=1, ge=1, le=1024)
    shards: int = Field(default=1, ge=1, le=1024, description="partitioned by player")


class HotAccount(_Model):
    """A shared account (house, jackpot) written by many requests: one row or N sub-accounts."""

    sub_accounts: int = Field(default=1, ge=1, le=L.MAX_SUB_ACCOUNTS)
    database: str | None = Field(
        default=None, description="database holding the account (its concurrency applies)")
    concurrency: Concurrency | None = Field(
        default=None, description="this account's concurrency control (default: its "
        "database's, else the deployment's); the reference back office's optimistic mode "
        "version-checks the player row only and increments hot accounts in place (a row lock "
        "until commit): model it with optimistic on the deployment and pessimistic here",
    )


class Broker(_Model):
    """Message broker between services (Redis Streams, NATS JetStream)."""

    publish: Distribution = Field(default_factory=lambda: Constant(value_ms=0.3))


class Deployment(_Model):
    """One way of deploying the back office."""

    name: str
    kind: Literal["monolith", "microservices", "hybrid"]
    entry: str | None = Field(
        default=None, description="service receiving client requests (gateway); default: "
        "the service hosting each operation's first component"
    )
    load_balancing: Literal["round_robin", "least_outstanding", "random"] = "round_robin"
    network_hop: Distribution = Field(
        default_factory=lambda: Constant(value_ms=0.5),
        description="one-way network latency of a call between services",
    )
    rpc_cpu: Distribution = Field(
        default_factory=lambda: Constant(value_ms=0.1),
        description="CPU spent by the caller and by the callee on each call between services "
        "(serialisation, HTTP handling) and by the publisher on each broker message",
    )
    concurrency: Concurrency = Field(
        default="pessimistic",
        description=f"concurrency control of every database write (the reference back "
        f"office's default, pessimistic); {CONCURRENCY_DOC}",
    )
    conflict_retry: ConflictRetry = Field(default_factory=ConflictRetry)
    services: list[Service] = Field(min_length=1)
    databases: list[Database] = Field(default_factory=list)
    hot_accounts: dict[str, HotAccount] = Field(default_factory=dict)
    broker: Broker = Field(default_factory=Broker)
    caches: list[Cache] = Field(default_factory=list)
    call_policy: CallPolicy | None = Field(
        default_factory=CallPolicy,
        description="policy of every synchronous call between services (timeout, retries, "
        "breaker, bulkhead); default: the reference back office's "
        "(reference_impl/transport/resilience.py); null: none",
    )
    host: Host | None = Field(
        default=None, description="one machine whose cores every CPU station shares")
    call_policies: dict[str, CallPolicy | None] = Field(
        default_factory=dict,
        description="callee service -> the policy of every call to it (replaces call_policy "
        "for that callee; a caller's own services[].call_policies entry wins; null: none)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Deployment:
        names = [s.name for s in self.services]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"service names must be unique, repeated: {sorted(dup)}")
        hosted = [c for s in self.services for c in s.components]
        dupc = {c for c in hosted if hosted.count(c) > 1}
        if dupc:
            raise ValueError(f"a component lives in one service only, repeated: {sorted(dupc)}")
        dbs = {d.name for d in self.databases}
        for i, s in enumerate(self.services):
            if s.db_pool > 0 and s.database is None:
                raise ValueError(f"services[{i}] ({s.name}) has a db_pool but no database")
            if s.database is not None and s.database not in dbs:
                raise ValueError(
                    f"services[{i}] ({s.name}) uses database {s.database!r}, "
                    f"not among databases {sorted(dbs)}"
                )
        unknown = sorted(set(self.call_policies) - set(names))
        if unknown:
            raise ValueError(f"call_policies: no service {unknown} (services: {names})")
        for i, s in enumerate(self.services):
            unknown = sorted(set(s.call_policies) - set(names))
            if unknown:
                raise ValueError(f"services[{i}] ({s.name}).call_policies: no service "
                                 f"{unknown} (services: {names})")
        cnames = [c.name for c in self.caches]
        if len(set(cnames)) != len(cnames):
            raise ValueError(f"cache names must be unique, got {cnames}")
        for hname, acct in self.hot_accounts.items():
            if acct.database is not None and acct.database not in dbs:
                raise ValueError(f"hot_accounts.{hname}: database {acct.database!r} is not "
                                 f"among databases {sorted(dbs)}")
        if self.entry is not None and self.entry not in names:
            raise ValueError(f"entry {self.entry!r} is not a service: {names}")
        for i, d in enumerate(self.databases):
            pools = sum(s.db_pool * s.replicas for s in self.services if s.database == d.name)
            if pools > d.max_connections * d.shards:
                raise ValueError(
                    f"databases[{i}] ({d.name}): services open {pools} connections, more than "
                    f"max_connections x shards = {d.max_connections * d.shards}"
                )
        return self

    def concurrency_of(self, database: str | None) -> str:
        """The concurrency control of writes to ``database`` (the deployment's if unset)."""
        for d in self.databases:
            if d.name == database and d.concurrency is not None:
                return d.concurrency
        return self.concurrency

    def service_of(self, component: str) -> Service | None:
        """The service hosting ``component``, if any."""
        for s in self.services:
            if component in s.components:
                return s
        return None


# --------------------------------------------------------------------------- run settings


class ClosedLoop(_Model):
    """A fixed number of users, each thinking then sending one request, like locust users."""

    users: int = Field(ge=1, le=L.MAX_USERS)
    think_time: Distribution = Field(default_factory=lambda: Constant(value_ms=0.0))


class Workload(_Model):
    """A workload next to the population: open at an explicit rate, or closed users.

    Open: ``rate_rps`` or a ``rate_table`` (requests per second, the whole system's), each
    arrival's operation drawn by the weights of ``operations`` and its player uniformly among
    the registered players. Closed: ``users`` each thinking ``think_time``, then sending one
    request and waiting for its answer (back-office batch jobs, reporting). Workloads run in
    the same run as the population (open or ``simulation.closed``).
    """

    name: str
    operations: dict[str, Annotated[float, Field(ge=0, le=MAX_WEIGHT)]] = Field(
        min_length=1, description="operation -> weight in this workload's mix"
    )
    rate_rps: float | None = Field(default=None, gt=0, le=MAX_RATE_RPS)
    rate_table: list[RatePoint] | None = Field(
        default=None, min_length=1, max_length=MAX_RATE_POINTS
    )
    users: int | None = Field(default=None, ge=1, le=MAX_USERS)
    think_time: Distribution = Field(default_factory=lambda: Constant(value_ms=0.0))

    @model_validator(mode="after")
    def _kind(self) -> Workload:
        given = [f for f in ("rate_rps", "rate_table", "users") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("a workload gives exactly one of rate_rps, rate_table (open) or "
                             f"users (closed); got {given or 'none'}")
        if sum(self.operations.values()) <= 0:
            raise ValueError("operations: at least one weight must be positive")
        _check_rate_table(self.rate_table)
        return self

    @property
    def is_open(self) -> bool:
        return self.users is None


class Simulation(_Model):
    """Which window of the day to simulate and how to analyse the output."""

    start_hour: float = Field(default=20.0, ge=0, lt=24)
    duration_s: float = Field(default=120.0, gt=0, le=L.MAX_DURATION_S)
    replications: int = Field(default=3, ge=2, le=L.MAX_REPLICATIONS)
    max_replications: int = Field(default=20, ge=2, le=L.MAX_REPLICATIONS)
    precision: float | None = Field(
        default=None, gt=0, lt=1,
        description="target relative 95% CI half-width of each operation's p99",
    )
    warmup: Literal["auto"] | float = Field(
        default="auto", description="'auto' (MSER-5 on the output) or seconds to discard"
    )
    seed: int = Field(default=1, ge=0, le=L.MAX_SEED)
    reduce: bool = Field(default=False, description="simulate one representative partition")
    timeseries_bin_s: float = Field(default=1.0, ge=L.MIN_BIN_S, le=L.MAX_DURATION_S)
    closed: ClosedLoop | None = Field(
        default=None, description="closed-loop users instead of the open population arrivals"
    )

    @field_validator("warmup")
    @classmethod
    def _warmup(cls, v: Any) -> Any:
        if isinstance(v, float | int) and (v < 0 or not math.isfinite(v)):
            raise ValueError("warmup seconds must be a finite number >= 0")
        return v

    @model_validator(mode="after")
    def _within_run(self) -> Simulation:
        if isinstance(self.warmup, float | int) and self.warmup >= self.duration_s:
            raise ValueError(f"warmup ({self.warmup:g} s) must be shorter than duration_s "
                             f"({self.duration_s:g} s)")
        if self.timeseries_bin_s > self.duration_s:
            raise ValueError(f"timeseries_bin_s ({self.timeseries_bin_s:g} s) must not exceed "
                             f"duration_s ({self.duration_s:g} s)")
        if self.duration_s / self.timeseries_bin_s > L.MAX_BINS:
            raise ValueError(f"duration_s / timeseries_bin_s gives more than {L.MAX_BINS} "
                             f"time-series bins: use larger bins")
        return self


class OperationSLO(_Model):
    """Latency targets in milliseconds for one operation (any of p50, p95, p99, p99.9)."""

    model_config = L.FINITE | ConfigDict(populate_by_name=True)

    p50: float | None = Field(default=None, gt=0, le=L.MAX_DEMAND_MS)
    p95: float | None = Field(default=None, gt=0, le=L.MAX_DEMAND_MS)
    p99: float | None = Field(default=None, gt=0, le=L.MAX_DEMAND_MS)
    p99_9: float | None = Field(default=None, gt=0, le=L.MAX_DEMAND_MS, alias="p99.9")

    def targets(self) -> dict[str, float]:
        """Percentile label -> target ms, for the targets given."""
        out = {"p50": self.p50, "p95": self.p95, "p99": self.p99, "p99.9": self.p99_9}
        return {k: v for k, v in out.items() if v is not None}


class SLOs(_Model):
    latency_ms: dict[str, OperationSLO] = Field(default_factory=dict)
    error_budget: float = Field(default=0.001, ge=0, le=1)


# --------------------------------------------------------------------------- scenario

MAX_VARIANTS = 16  # named variants of the deployments in one scenario, at most


class Variant(_Model):
    """A named change to deployments, compared with them in the same run (same arrivals,
    same demands): e.g. the same deployments without a timeout. Each deployment listed in
    ``deployments`` (all when omitted) gets a copy named ``DEPLOYMENT+VARIANT`` with the
    ``set`` assignments applied, in ``--set`` syntax relative to the deployment
    (``call_policy.timeout_ms=null``, ``services.gateway.workers=32``)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    set: list[str] = Field(min_length=1, max_length=64)
    deployments: list[str] | None = None


def _expand_variants(data: Any) -> Any:
    """Append every variant's copies to ``deployments`` (before validation)."""
    if not isinstance(data, dict) or not data.get("variants"):
        return data
    variants, deployments = data["variants"], data.get("deployments")
    if not isinstance(variants, list) or not isinstance(deployments, list):
        return data  # the fields' own validation names the problem
    if len(variants) > MAX_VARIANTS:
        raise ValueError(f"variants: at most {MAX_VARIANTS}, got {len(variants)}")
    base = [d for d in deployments if isinstance(d, dict)]
    names = [d.get("name") for d in base]
    added = []
    for vi, raw_v in enumerate(variants):
        try:
            v = Variant.model_validate(raw_v)
        except ValidationError as err:
            where, why = _problems(err)[0]
            raise ValueError(f"variants[{vi}].{where}: {why}") from None
        for dn in v.deployments or []:
            if dn not in names:
                raise ValueError(f"variants[{vi}] ({v.name}).deployments: no deployment "
                                 f"{dn!r} (have {names})")
        for d in base:
            if v.deployments is not None and d.get("name") not in v.deployments:
                continue
            copy = yaml.safe_load(yaml.safe_dump(d))  # a deep copy of plain data
            copy["name"] = f"{d.get('name')}+{v.name}"
            for assignment in v.set:
                try:
                    apply_override(copy, assignment)
                except ScenarioError as err:
                    where, why = err.problems[0]
                    raise ValueError(f"variants[{vi}] ({v.name}).set {assignment!r}: "
                                     f"{where}: {why}") from None
            added.append(copy)
    return data | {"deployments": [*deployments, *added]}


class Scenario(_Model):
    """A whole scenario file."""

    name: str
    description: str = ""
    simulation: Simulation = Field(default_factory=Simulation)
    population: Population = Field(default_factory=Population)
    demands: dict[str, ExternalDistribution] = Field(default_factory=dict)
    operations: dict[str, Operation] = Field(min_length=1)
    deployments: list[Deployment] = Field(min_length=1)
    workloads: list[Workload] = Field(
        default_factory=list, description="open or closed workloads next to the population"
    )
    slos: SLOs = Field(default_factory=SLOs)
    faults: list[Fault] = Field(
        default_factory=list, description="faults injected during the run (sim/model/faults.py)"
    )
    players: Players | None = Field(
        default=None, description="players' reaction to errors: retries, reconnect storms"
    )
    recovery: RecoverySettings = Field(
        default_factory=RecoverySettings, description="how recovery from faults is judged"
    )
    variants: list[Variant] = Field(
        default_factory=list, max_length=MAX_VARIANTS,
        description="named changes to the deployments, simulated next to them "
        "(DEPLOYMENT+VARIANT)")

    @model_validator(mode="before")
    @classmethod
    def _variants(cls, data: Any) -> Any:
        return _expand_variants(data)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        problems: list[str] = []
        externals = {st.external for op in self.operations.values()
                     for _w, st, _d in op.steps_walk("") if isinstance(st.external, str)}
        problems += fault_problems(self.faults, self.deployments, self.operations, externals,
                                   self.players)
        for i, f in enumerate(self.faults):
            if f.at_s >= self.simulation.duration_s:
                problems.append(f"faults[{i}] ({f.label()}).at_s: {f.at_s:g} s is not within "
                                f"the run (duration_s {self.simulation.duration_s:g})")
        for op_name, op in self.operations.items():
            for where, st, depth in op.steps_walk(op_name):
                if depth > MAX_CALL_DEPTH + 1:
                    problems.append(f"{where}: calls nested deeper than {MAX_CALL_DEPTH} levels")
                for fld in ("cpu", "db", "external"):
                    ref = getattr(st, fld)
                    if isinstance(ref, str) and ref not in self.demands:
                        problems.append(
                            f"{where}.{fld}: unknown demand {ref!r} "
                            f"(known: {sorted(self.demands)})"
                        )
                    elif fld != "external" and isinstance(ref, str) and \
                            isinstance(self.demands[ref], EmpiricalByRate):
                        problems.append(f"{where}.{fld}: demand {ref!r}: {ONLY_EXTERNAL}")
        if isinstance(self.demands.get("gateway"), EmpiricalByRate):
            problems.append(f"demands.gateway: the gateway's CPU: {ONLY_EXTERNAL}")
        if sum(op.weight for op in self.operations.values()) <= 0 and not self.workloads \
                and not any(op.rate_rps or op.rate_table for op in self.operations.values()):
            problems.append("operations: at least one operation needs a positive weight "
                            "(or an explicit rate, or a workload)")
        if self.simulation.closed is not None and \
                sum(op.weight for op in self.operations.values()) <= 0:
            problems.append("simulation.closed: closed users draw their operations by the "
                            "operations' weights: at least one weight must be positive")
        wnames = [w.name for w in self.workloads]
        if len(set(wnames)) != len(wnames):
            problems.append(f"workloads: names must be unique, got {wnames}")
        for wi, wl in enumerate(self.workloads):
            for o in wl.operations:
                if o not in self.operations:
                    problems.append(f"workloads[{wi}] ({wl.name}).operations: no operation {o!r}")
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            problems.append(f"deployments: names must be unique, got {names}")
        for di, dep in enumerate(self.deployments):
            caches = {c.name for c in dep.caches}
            for op_name, op in self.operations.items():
                for where, st, _depth in op.steps_walk(op_name):
                    svc = dep.service_of(st.component)
                    if svc is None:
                        problems.append(
                            f"deployments[{di}] ({dep.name}): no service hosts component "
                            f"{st.component!r} used by {where}"
                        )
                    elif st.db is not None and svc.db_pool == 0:
                        problems.append(
                            f"deployments[{di}] ({dep.name}): service {svc.name!r} runs database "
                            f"work of {where} but has db_pool 0"
                        )
                    if st.lock is not None and st.lock not in dep.hot_accounts:
                        problems.append(
                            f"deployments[{di}] ({dep.name}): hot account {st.lock!r} used by "
                            f"{where} is not in hot_accounts"
                        )
                    if st.cache is not None and st.cache not in caches:
                        problems.append(
                            f"deployments[{di}] ({dep.name}): cache {st.cache!r} used by "
                            f"{where} is not in caches {sorted(caches)}"
                        )
        for op_name in self.slos.latency_ms:
            if op_name not in self.operations:
                problems.append(f"slos.latency_ms.{op_name}: no such operation")
        for sp_i, sp in enumerate(self.population.spikes):
            for o in sp.operations or []:
                if o not in self.operations:
                    problems.append(f"population.spikes[{sp_i}].operations: no operation {o!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def open_workloads(self) -> list[Workload]:
        """Every explicit-rate workload: the ``workloads`` that are open, then one per
        operation stating ``rate_rps`` or ``rate_table`` (named after the operation)."""
        out = [w for w in self.workloads if w.is_open]
        for name, op in self.operations.items():
            if op.rate_rps is not None or op.rate_table is not None:
                out.append(Workload(name=f"{name} (rate)", operations={name: 1.0},
                                    rate_rps=op.rate_rps, rate_table=op.rate_table))
        return out

    def demand(self, ref: DemandRef | None) -> ExternalDistribution | None:
        """Resolve a step's demand (a name in ``demands`` or an inline distribution)."""
        if ref is None or not isinstance(ref, str):
            return ref
        return self.demands[ref]

    def deployment(self, name: str) -> Deployment:
        """The deployment called ``name``."""
        for d in self.deployments:
            if d.name == name:
                return d
        raise KeyError(name)


# --------------------------------------------------------------------------- loading


_TYPE_TAGS = ("float", "int", "str", "bool")  # union members pydantic names in error paths


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("constant", "exponential", "lognormal", "gamma", "empirical",
                      "empirical_by_rate", *FAULT_KINDS):
            continue  # discriminator tag inserted by pydantic, not a user-visible field
        elif str(part).startswith(("function-", "union[", "literal[")) or part in _TYPE_TAGS:
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        out.append((_loc(e["loc"]), msg))
    return out


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``path.to.field=value`` override to the raw scenario mapping in place.

    List items are addressed by index (``deployments.0``) or by their ``name``
    (``deployments.monolith.services.app.replicas=4``). The value is parsed as YAML.
    """
    if "=" not in assignment:
        raise ScenarioError("--set", [(assignment, "expected path.to.field=value")])
    path, _, value = assignment.partition("=")
    parts = [p for p in path.strip().split(".") if p]
    if not parts:
        raise ScenarioError("--set", [(assignment, "empty field path")])
    node: Any = raw
    walked: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            idx = None
            if part.lstrip("-").isdigit():
                idx = int(part)
                if not -len(node) <= idx < len(node):
                    where = ".".join([*walked, part])
                    raise ScenarioError(
                        "--set", [(where, f"index out of range (0..{len(node) - 1})")]
                    )
            else:
                for j, item in enumerate(node):
                    if isinstance(item, dict) and item.get("name") == part:
                        idx = j
                        break
                if idx is None:
                    names = [it.get("name") for it in node if isinstance(it, dict)]
                    where = ".".join([*walked, part])
                    raise ScenarioError(
                        "--set", [(where, f"no list item named {part!r} (have {names})")]
                    )
            if last:
                node[idx] = _parse_value(value)
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = _parse_value(value)
            else:
                if part not in node or node[part] is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ScenarioError(
                "--set", [(".".join(walked), f"is a value, cannot descend into {part!r}")]
            )
        walked.append(part)


def parse_scenario(
    raw: Any, source: str = "<scenario>", overrides: list[str] | None = None
) -> Scenario:
    """Validate a raw mapping (plus overrides) into a :class:`Scenario`."""
    if not isinstance(raw, dict):
        raise ScenarioError(
            source, [("", "the file must hold a mapping (key: value) at top level")]
        )
    for ov in overrides or []:
        try:
            apply_override(raw, ov)
        except ScenarioError as err:  # name the file the override applies to
            raise ScenarioError(f"{source} (--set {ov})", err.problems) from None
    try:
        return Scenario.model_validate(raw)
    except ValidationError as err:
        src = source if not overrides else f"{source} (with --set {' '.join(overrides)})"
        raise ScenarioError(src, _problems(err)) from None


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read and validate a scenario YAML file, applying ``--set`` overrides first."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ScenarioError(str(p), [("", f"cannot read file: {exc.strerror or exc}")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = f"not valid YAML: {getattr(exc, 'problem', exc)}"
        raise ScenarioError(str(p), [(where, reason)]) from None
    return parse_scenario(raw, str(p), overrides)


MIN_MACHINE_FACTOR, MAX_MACHINE_FACTOR = 0.25, 4.0
"""The range of :func:`on_slower_machine`'s factor: a machine four times faster or slower."""
_TIMED_STEP_FIELDS = ("cpu", "db", "external")
_TIMED_DEPLOYMENT_FIELDS = ("network_hop", "rpc_cpu")


def on_slower_machine(scenario: Scenario, factor: float) -> Scenario:
    """``scenario`` on a machine ``factor`` times slower (below 1: faster): every time the
    back office spends working or waiting on its own machine is multiplied by ``factor``:
    named and inline demands (CPU, database, external waits, by rate too), the network hop
    and RPC CPU between services, broker publishes, cache lookups and the host's pauses.
    What is policy or elsewhere stays: timeouts, back-off, think times, replication lag and
    the database's synchronous round trip. ``testbed validate`` uses it with the back
    office's CPU per request at a reference rate before a level over the calibration's (the
    machine's drift between the two). Raises ValueError for a factor outside
    [:data:`MIN_MACHINE_FACTOR`, :data:`MAX_MACHINE_FACTOR`] or not finite."""
    if not (math.isfinite(factor) and MIN_MACHINE_FACTOR <= factor <= MAX_MACHINE_FACTOR):
        raise ValueError(f"factor: {factor!r} is not a finite number in "
                         f"[{MIN_MACHINE_FACTOR}, {MAX_MACHINE_FACTOR}]")
    raw = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    if factor == 1.0:
        return parse_scenario(raw, scenario.name)
    adapter = TypeAdapter(ExternalDistribution)

    def scaled(dist: Any) -> Any:
        if not isinstance(dist, dict):  # a demand's name: scaled in demands
            return dist
        return adapter.validate_python(dist).scaled(factor).model_dump(mode="json")

    def steps(items: list[dict[str, Any]]) -> None:
        for step in items:
            for key in _TIMED_STEP_FIELDS:
                if key in step:
                    step[key] = scaled(step[key])
            steps(step.get("calls", []))

    def pauses(durations: list[float]) -> list[float]:
        return [min(L.MAX_PAUSE_MS, d * factor) for d in durations]

    raw["demands"] = {k: scaled(v) for k, v in raw.get("demands", {}).items()}
    for op in raw["operations"].values():
        steps(op["steps"])
    for dep in raw["deployments"]:
        for key in _TIMED_DEPLOYMENT_FIELDS:
            if key in dep:
                dep[key] = scaled(dep[key])
        if "broker" in dep and "publish" in dep["broker"]:
            dep["broker"]["publish"] = scaled(dep["broker"]["publish"])
        for cache in dep.get("caches", []):
            if "lookup" in cache:
                cache["lookup"] = scaled(cache["lookup"])
        host_pauses = (dep.get("host") or {}).get("pauses")
        if host_pauses:
            host_pauses["durations_ms"] = pauses(host_pauses["durations_ms"])
            for point in host_pauses["by_rate"]:
                if point.get("durations_ms"):
                    point["durations_ms"] = pauses(point["durations_ms"])
    return parse_scenario(raw, f"{scenario.name} on a machine {factor:.3g} times as slow")
