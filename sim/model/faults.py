"""Faults as data: the ``faults:`` list, players' reaction, health checks, and their compiled
per-deployment form (frozen, engine-independent).

A fault names what it hits by a **service or component** (crash, hang, slowdown, network),
a **database** (db_failover, slowdown) or an **external** dependency (slowdown: the name of
the demand a step uses as ``external``, e.g. ``payments``). A component resolves, in each
deployment, to the service hosting it: a crash of ``wallet`` crashes the wallet service's
replicas in microservices and the monolith's replicas in a monolith. A network fault between
two components hosted by the same service has no network to act on and does nothing in that
deployment (the run's notes say so).

Times are seconds of the simulated window. Each fault has ``at_s`` and ``duration_s`` (or
``until_s``); its **window** for the recovery metrics ends when the trigger ended: for a crash
when the replicas serve again (``duration_s`` down, then ``boot_s``), for the others at
``at_s + duration_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from sim.model import limits as L

if TYPE_CHECKING:
    from sim.model.scenario import Deployment

MAX_FAULTS = L.MAX_FAULTS
MAX_BOOT_S = L.MAX_FAULT_DELAY_S
MAX_ATTEMPTS = L.MAX_ATTEMPTS
MAX_HEALTH_THRESHOLD = L.MAX_HEALTH_THRESHOLD
DEFAULT_LOST_WAIT_S = 30.0
"""What a caller with no timeout of its own waits for a lost message's answer (s)."""
DEFAULT_PUBLISH_BACKLOG = 100_000
"""Messages publishers keep while the broker is down (the reference back office's
``transport/backlog.py`` MAX_BACKLOG); beyond it a publisher waits for the broker."""


class _Model(BaseModel):
    model_config = L.FINITE


class HealthCheck(_Model):
    """How the load balancer notices a dead replica and takes it back.

    Defaults are HAProxy's (``inter 2s``, ``fall 3``, ``rise 2``): checks every 2 s from the
    start of the run, a replica is out after 3 failed checks in a row and back in after 2
    good ones.
    """

    interval_s: float = Field(default=2.0, gt=0, le=MAX_BOOT_S)
    failure_threshold: int = Field(default=3, ge=1, le=MAX_HEALTH_THRESHOLD)
    rise: int = Field(default=2, ge=1, le=MAX_HEALTH_THRESHOLD)


class Retry(_Model):
    """Players retrying a failed or timed-out request: exponential backoff, capped, jittered.

    Attempt n (n >= 2) waits ``min(cap_ms, backoff_ms * multiplier^(n-2))``; ``full`` jitter
    draws the wait uniformly in [0, that], ``equal`` in [that/2, that], ``none`` waits it.
    """

    max_attempts: int = Field(default=3, ge=1, le=MAX_ATTEMPTS)
    backoff_ms: float = Field(default=1000.0, gt=0, le=L.MAX_DEMAND_MS)
    multiplier: float = Field(default=2.0, ge=1, le=L.MAX_BACKOFF_MULTIPLIER)
    cap_ms: float = Field(default=30_000.0, gt=0, le=L.MAX_DEMAND_MS)
    jitter: Literal["none", "full", "equal"] = "full"


class Reconnect(_Model):
    """After a fault's window, the logged-out players log in again at once: each sends
    ``operation`` at a uniform time in ``over_s``. Who: the players whose requests failed
    during the window (their sessions ended), or, with ``share``, that share of the players
    online when the window ends (drawn uniformly among the registered)."""

    operation: str = "login"
    over_s: float = Field(default=5.0, gt=0, le=MAX_BOOT_S)
    share: float | None = Field(default=None, ge=0, le=1)


class Players(_Model):
    """Players' reaction to errors and timeouts (applies to every fault)."""

    retry: Retry | None = None
    reconnect: Reconnect | None = None


class RecoverySettings(_Model):
    """How recovery is judged (``sim/analysis/recovery.py``): the rolling window of the p99,
    how long the SLOs must then hold (null: to the end of the run), and the error ratio a bin
    may have and still count as healthy."""

    window_s: float = Field(default=10.0, gt=0, le=MAX_BOOT_S)
    hold_s: float | None = Field(default=None, gt=0, le=L.MAX_DURATION_S)
    error_threshold: float = Field(default=0.01, ge=0, lt=1)


class _Fault(_Model):
    name: str | None = Field(default=None, description="label in the results (default: kind "
                             "and target)")
    at_s: float = Field(ge=0, le=L.MAX_DURATION_S, description="start, s into the window")
    duration_s: float | None = Field(default=None, gt=0, le=L.MAX_DURATION_S)
    until_s: float | None = Field(default=None, gt=0, le=L.MAX_DURATION_S)
    reconnect: Reconnect | None = Field(
        default=None, description="this fault's reconnect storm (else players.reconnect)")

    @model_validator(mode="after")
    def _window(self) -> _Fault:
        if (self.duration_s is None) == (self.until_s is None):
            raise ValueError("give exactly one of duration_s or until_s")
        if self.until_s is not None and self.until_s <= self.at_s:
            raise ValueError(f"until_s ({self.until_s:g}) must be after at_s ({self.at_s:g})")
        return self

    @property
    def down_s(self) -> float:
        """How long the trigger lasts (s)."""
        return self.duration_s if self.duration_s is not None else self.until_s - self.at_s

    @property
    def end_s(self) -> float:
        """End of the fault's window: the trigger ended (a crash: the replicas serve again)."""
        return self.at_s + self.down_s + getattr(self, "boot_s", 0.0)

    def label(self) -> str:
        return self.name or f"{self.kind} {self.target}"  # type: ignore[attr-defined]


class Crash(_Fault):
    """``replicas`` replicas (all when omitted) of a service die: in-flight and queued requests
    on them fail, the load balancer keeps sending to them (they fail at once) until the
    service's health check notices; ``duration_s`` later they restart and serve after
    ``boot_s``, ``cold_factor`` times slower for ``warmup_s``."""

    kind: Literal["crash"]
    target: str = Field(description="service or component")
    replicas: int | None = Field(default=None, ge=1, le=L.MAX_REPLICAS)
    boot_s: float = Field(default=5.0, ge=0, le=MAX_BOOT_S)
    cold_factor: float = Field(default=1.0, ge=1, le=L.MAX_MULTIPLIER)
    warmup_s: float = Field(default=0.0, ge=0, le=MAX_BOOT_S)


class Hang(_Fault):
    """``replicas`` replicas (all when omitted) stop serving without dying (a paused process):
    requests queue for their workers (up to the queue limit) and are served after; liveness
    health checks do not notice, so the load balancer keeps sending to them."""

    kind: Literal["hang"]
    target: str = Field(description="service or component")
    replicas: int | None = Field(default=None, ge=1, le=L.MAX_REPLICAS)


class DbFailover(_Fault):
    """The database's primaries are unavailable for the window (database work fails at once),
    then a replica is promoted. With ``replication: async`` (the database's field) the writes
    committed within its ``replication_lag_ms`` before the failure are lost (counted); with
    ``sync`` none are, and every write pays ``sync_round_trip_ms`` all run long."""

    kind: Literal["db_failover"]
    target: str = Field(description="database")


class Slowdown(_Fault):
    """A service (its cores), a database (primaries and read replicas) or an external
    dependency (the demand named as a step's ``external``) ``factor`` times slower."""

    kind: Literal["slowdown"]
    target: str = Field(description="service, component, database or external demand name")
    factor: float = Field(gt=1, le=L.MAX_MULTIPLIER)


class Network(_Fault):
    """Between two services (calls from ``source`` to ``target``, both ways of a call): each
    message ``latency_ms`` later, and lost with probability ``loss``. A lost message leaves
    the caller waiting ``lost_wait_s`` (no timeout of its own), then the call times out."""

    kind: Literal["network"]
    source: str = Field(description="calling service or component")
    target: str = Field(description="called service or component")
    latency_ms: float = Field(default=0.0, ge=0, le=L.MAX_DEMAND_MS)
    loss: float = Field(default=0.0, ge=0, le=1)
    lost_wait_s: float = Field(default=DEFAULT_LOST_WAIT_S, gt=0, le=MAX_BOOT_S)

    @model_validator(mode="after")
    def _something(self) -> Network:
        if self.latency_ms == 0 and self.loss == 0:
            raise ValueError("a network fault needs latency_ms > 0 or loss > 0")
        return self

    def label(self) -> str:
        return self.name or f"network {self.source}->{self.target}"


class BrokerOutage(_Fault):
    """The broker is down: publishers keep up to ``backlog`` messages (then wait for it),
    consumers get nothing; after the window the backlog is delivered and consumers catch up."""

    kind: Literal["broker_outage"]
    backlog: int = Field(default=DEFAULT_PUBLISH_BACKLOG, ge=0, le=L.MAX_PUBLISH_BACKLOG)

    @property
    def target(self) -> str:
        return "broker"


FAULT_KINDS = ("crash", "hang", "db_failover", "slowdown", "network", "broker_outage")
Fault = Annotated[Crash | Hang | DbFailover | Slowdown | Network | BrokerOutage,
                  Field(discriminator="kind")]


# --------------------------------------------------------------------------- compiled form


@dataclass(frozen=True)
class ReconnectSpec:
    operation: int
    over_s: float
    count: int = 0       # with a share: this many players (else those whose requests failed)
    space: int = 1       # players drawn as stride * uniform(0, space): the run's partition
    stride: int = 1


@dataclass(frozen=True)
class RetrySpec:
    max_attempts: int
    backoff_s: float
    multiplier: float
    cap_s: float
    jitter: str


@dataclass(frozen=True)
class FaultSpec:
    """One fault resolved against one deployment (indices into the topology)."""

    name: str
    kind: str
    target: str
    start_s: float
    down_s: float                     # how long the trigger lasts
    end_s: float                      # end of the window (crash: serving again)
    service: int | None = None        # crash, hang, slowdown of a service, network target
    replicas: tuple[int, ...] = ()    # crash, hang
    source: int | None = None         # network caller
    database: int | None = None       # db_failover, slowdown of a database
    external: str | None = None       # slowdown of an external
    factor: float = 1.0
    latency_s: float = 0.0
    loss: float = 0.0
    lost_wait_s: float = DEFAULT_LOST_WAIT_S
    boot_s: float = 0.0
    cold_factor: float = 1.0
    warmup_s: float = 0.0
    backlog: int = 0
    reconnect: ReconnectSpec | None = None
    inert: str | None = None          # why it does nothing in this deployment


def _service(dep: Deployment, name: str) -> int | None:
    for i, s in enumerate(dep.services):
        if s.name == name or name in s.components:
            return i
    return None


def _database(dep: Deployment, name: str) -> int | None:
    for i, d in enumerate(dep.databases):
        if d.name == name:
            return i
    return None


def fault_problems(faults: list[Any], deployments: list[Deployment], operations: Iterable[str],
                   externals: set[str], players: Players | None) -> list[str]:
    """What a scenario's faults name that a deployment lacks (field paths, reasons)."""
    ops = set(operations)
    out: list[str] = []
    if len(faults) > MAX_FAULTS:
        out.append(f"faults: at most {MAX_FAULTS} faults, got {len(faults)}")
    labels = [f.label() for f in faults]
    for lb in {x for x in labels if labels.count(x) > 1}:
        out.append(f"faults: two faults are called {lb!r}: give them distinct names")
    if players is not None and players.reconnect is not None \
            and players.reconnect.operation not in ops:
        out.append(f"players.reconnect.operation: no operation {players.reconnect.operation!r}")
    for i, f in enumerate(faults):
        where = f"faults[{i}] ({f.label()})"
        if f.reconnect is not None and f.reconnect.operation not in ops:
            out.append(f"{where}.reconnect.operation: no operation {f.reconnect.operation!r}")
        for dep in deployments:
            problem = _target_problem(f, dep, externals)
            if problem:
                out.append(f"{where}.target: {problem} in deployment {dep.name!r}")
    return out


def _target_problem(f: Any, dep: Deployment, externals: set[str]) -> str | None:
    if f.kind in ("crash", "hang"):
        s = _service(dep, f.target)
        if s is None:
            return f"no service or component {f.target!r}"
        n = dep.services[s].replicas
        if f.replicas is not None and f.replicas > n:
            return (f"{f.replicas} replicas named but service {dep.services[s].name!r} has "
                    f"{n}")
    elif f.kind == "db_failover":
        if _database(dep, f.target) is None:
            return f"no database {f.target!r}"
    elif f.kind == "slowdown":
        if _service(dep, f.target) is None and _database(dep, f.target) is None \
                and f.target not in externals:
            return f"no service, component, database or external demand {f.target!r}"
    elif f.kind == "network":
        for end in (f.source, f.target):
            if _service(dep, end) is None:
                return f"no service or component {end!r}"
    return None


def _reconnect(rc: Reconnect | None, operations: list[str], end_s: float, k: int,
               online_at: Callable[[float], float] | None, registered: int
               ) -> ReconnectSpec | None:
    if rc is None:
        return None
    op = operations.index(rc.operation)
    if rc.share is None or online_at is None:
        return ReconnectSpec(op, rc.over_s)
    return ReconnectSpec(op, rc.over_s, count=round(rc.share * online_at(end_s) / k),
                         space=max(1, -(-registered // k)), stride=k)


def compile_faults(faults: list[Any], dep: Deployment, operations: list[str],
                   players: Players | None, k: int = 1,
                   online_at: Callable[[float], float] | None = None,
                   registered: int = 1) -> tuple[FaultSpec, ...]:
    """Resolve the scenario's faults against one deployment (reduce factor ``k``;
    ``online_at(t)``: players online at window time t, for a reconnect ``share``)."""
    out = []
    default_rc = players.reconnect if players is not None else None
    for f in faults:
        common: dict[str, Any] = {
            "name": f.label(), "kind": f.kind, "target": f.target, "start_s": f.at_s,
            "down_s": f.down_s, "end_s": f.end_s,
            "reconnect": _reconnect(f.reconnect or default_rc, operations, f.end_s, k,
                                    online_at, registered),
        }
        if f.kind in ("crash", "hang"):
            s = _service(dep, f.target)
            assert s is not None
            n = dep.services[s].replicas // k
            count = n if f.replicas is None else f.replicas // k
            common.update(service=s, replicas=tuple(range(count)))
            if f.kind == "crash":
                common.update(boot_s=f.boot_s, cold_factor=f.cold_factor, warmup_s=f.warmup_s)
        elif f.kind == "db_failover":
            common.update(database=_database(dep, f.target))
        elif f.kind == "slowdown":
            s, d = _service(dep, f.target), _database(dep, f.target)
            common.update(service=s, database=d if s is None else None, factor=f.factor,
                          external=f.target if s is None and d is None else None)
        elif f.kind == "network":
            src, dst = _service(dep, f.source), _service(dep, f.target)
            common.update(source=src, service=dst, latency_s=f.latency_ms / 1000.0,
                          loss=f.loss, lost_wait_s=f.lost_wait_s, target=f"{f.source}->{f.target}")
            if src == dst:
                common["inert"] = (f"{f.source} and {f.target} run in one service "
                                   f"({dep.services[src].name}): no network between them")
        elif f.kind == "broker_outage":
            common.update(backlog=max(0, f.backlog // k))
        out.append(FaultSpec(**common))
    return tuple(out)


def compile_retry(players: Players | None) -> RetrySpec | None:
    if players is None or players.retry is None:
        return None
    r = players.retry
    return RetrySpec(r.max_attempts, r.backoff_ms / 1000.0, r.multiplier, r.cap_ms / 1000.0,
                     r.jitter)


def reduce_refusal(faults: list[Any]) -> str | None:
    """Why faults keep a scenario from being reduced (None when a partition reproduces them).

    Crashing or hanging some of a service's replicas takes away a share of its capacity the
    partition's R/k replicas can only show when k divides the count; whole services, links,
    databases, the broker and players' reactions scale with the partition.
    """
    for i, f in enumerate(faults):
        if f.kind in ("crash", "hang") and f.replicas is not None:
            return (f"faults[{i}] ({f.label()}) stops {f.replicas} replica(s) of a service, "
                    "which a partition of the replicas cannot represent in general; "
                    "simulated at full size")
    return None
