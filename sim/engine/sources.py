"""Where requests come from: open arrivals, closed-loop users, phantom writers.

* :func:`open_source` replays a stream of arrivals given in chunks (arrays ``t``, ``op``,
  ``player``): the population's, or an explicit-rate workload's;
* :func:`closed_user` is one user of a closed loop: think, send one request, wait for its
  answer, repeat;
* :func:`start_phantom_writers`: in a reduced run, the other partitions' writers of each
  hot account (see ARCHITECTURE.md, "--reduce partitions by player id").

Sources start requests through a :data:`Walk` (the request's path as a generator) and know
nothing of stations or routes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy
from simpy.events import Event

from sim.engine.sampling import Draw, Sampler
from sim.model.distributions import Distribution
from sim.model.population import ArrivalStream
from sim.model.scenario import Scenario
from sim.model.topology import Topology, walk_steps
from sim.model.workloads import RateStream

Walk = Callable[[int, int, int], Generator[Event, Any, None]]  # (op, player, key) -> request

PHANTOM_GRID_POINTS = 257  # rate samples over the window for the phantoms' thinning
KEY_STRIDE = 1 << 40       # request keys: source j's keys start at j * KEY_STRIDE
OpRate = Callable[[np.ndarray], np.ndarray]  # window times -> arrivals/s per operation


@dataclass
class ClosedGroup:
    """Closed-loop users: ``users`` of them, thinking ``think`` between requests drawn by
    ``weights`` over operations ``ops`` (all when ``None``), as ``players`` (their user
    numbers when ``None``)."""

    users: int
    think: Distribution
    weights: np.ndarray
    ops: list[int] | None = None
    players: np.ndarray | None = None


@dataclass
class SourcePlan:
    """Every source of one run: open streams (chunk iterators), closed groups, and the
    partition's arrival rate per operation (for the phantom writers of a reduced run)."""

    open: list[Iterable[Any]] = field(default_factory=list)
    closed: list[ClosedGroup] = field(default_factory=list)
    op_rate: OpRate | None = None


def plan_sources(scenario: Scenario, k: int, arrival_seed: np.random.SeedSequence,
                 every: int = 1) -> SourcePlan:
    """The sources of one replication of ``scenario`` reduced by ``k``: the population (open,
    or ``simulation.closed``) and every workload, from generators derived from
    ``arrival_seed`` alone, so every deployment sees the same arrivals.

    The population's stream uses ``arrival_seed`` itself (as before workloads existed);
    workload ``j`` uses the child ``spawn_key + (j + 1,)``. A closed workload's users are
    divided by ``k`` in a reduced run (at least one). ``every > 1`` feeds the population as
    every ``every``-th arrival of a denser stream (reduce under round robin, see
    :func:`sim.model.topology.reduce_stream_every`); workloads' rate streams stay Poisson.
    """
    sim = scenario.simulation
    plan = SourcePlan()
    rates: list[OpRate] = []
    if sim.closed is not None:
        weights = np.array([op.weight for op in scenario.operations.values()], dtype=float)
        plan.closed.append(ClosedGroup(sim.closed.users, sim.closed.think_time, weights))
    elif sum(op.weight for op in scenario.operations.values()) > 0:
        stream = ArrivalStream(scenario, np.random.default_rng(arrival_seed), partition=(0, k))
        plan.open.append(stream.chunks(every=every))
        rates.append(stream.rate)
    names = list(scenario.operations)
    open_wl = scenario.open_workloads()
    closed_wl = [w for w in scenario.workloads if not w.is_open]
    for j, wl in enumerate([*open_wl, *closed_wl]):
        rng = np.random.default_rng(np.random.SeedSequence(
            arrival_seed.entropy, spawn_key=(*arrival_seed.spawn_key, j + 1)))
        if wl.is_open:
            rs = RateStream(scenario, wl, rng, partition=(0, k))
            plan.open.append(rs.chunks())
            rates.append(rs.rate)
            continue
        assert wl.users is not None
        users = max(1, round(wl.users / k))
        ids = max(1, scenario.population.registered_players // k)
        plan.closed.append(ClosedGroup(
            users, wl.think_time, np.array(list(wl.operations.values()), dtype=float),
            ops=[names.index(o) for o in wl.operations],
            players=k * rng.integers(0, ids, users, dtype=np.int64)))
    if rates:
        plan.op_rate = rates[0] if len(rates) == 1 else (
            lambda t: sum(r(t) for r in rates))  # type: ignore[return-value]
    return plan


def open_source(env: simpy.Environment, chunks: Iterable[Any], duration: float,
                walk: Walk, key0: int = 0) -> Generator[Event, Any, None]:
    """Start a request (a process walking its path) at each arrival of ``chunks`` before
    ``duration``.

    The key of a request is ``key0`` plus its index in the stream, the same in every
    deployment fed the same stream.
    """
    timeout = env.timeout
    proc = env.process
    key = key0
    for ch in chunks:
        ts = ch.t.tolist()
        ops = ch.op.tolist()
        players = ch.player.tolist()
        for t, o, p in zip(ts, ops, players, strict=True):
            if t >= duration:
                return
            dt = t - env.now
            if dt > 0.0:
                yield timeout(dt)
            proc(walk(o, p, key))
            key += 1


def closed_user(env: simpy.Environment, user: int, users: int, think: Draw,
                weights: np.ndarray, duration: float, rng: np.random.Generator,
                walk: Walk, player: int | None = None,
                ops: list[int] | None = None, key0: int = 0) -> Generator[Event, Any, None]:
    """One closed-loop user: think, send a request drawn by ``weights``, wait, repeat.

    ``ops`` maps the weights' positions to operation indices (all operations when omitted);
    the request's key is ``key0 + user + users * n`` for its n-th request (stable across
    deployments); ``player`` defaults to the user's number.
    """
    cum = np.cumsum(weights / weights.sum())
    n_ops = len(weights)
    draws: list[int] = []
    who = user if player is None else player
    key = key0 + user
    while True:
        z = think(key)
        if z > 0.0:
            yield env.timeout(z)
        if env.now >= duration:
            return
        if not draws:
            draws = np.searchsorted(cum, rng.random(256), side="right").tolist()
        o = min(draws.pop(), n_ops - 1)
        yield from walk(o if ops is None else ops[o], who, key)
        key += users


PhantomWrite = Callable[[int, int, float], Generator[Event, Any, None]]
"""(hot account, sub-account, database time) -> one phantom write
(``sim.engine.contention.Contention.phantom``: a lock held, or a version-checked commit)."""


def start_phantom_writers(env: simpy.Environment, topo: Topology, write: PhantomWrite,
                          op_rate: Callable[[np.ndarray], np.ndarray], duration: float,
                          rng: np.random.Generator, pyrng: random.Random) -> None:
    """Writers of the other k - 1 partitions of each hot account, for a reduced run.

    ``op_rate(t)`` is the represented partition's arrival rate per operation; each locked
    step gets a Poisson writer at k - 1 times that rate, writing a sub-account (at random)
    for a sampled database time: holding its row lock (pessimistic) or committing a version
    (optimistic, retried on a conflict), so the partition meets the whole system's
    contention either way. Players' own rows need no phantom: a player's requests all fall
    in the player's partition.
    """
    k = topo.reduce_factor
    grid = np.linspace(0.0, duration, PHANTOM_GRID_POINTS)
    rates = op_rate(grid)  # shape (len(grid), n_ops)
    for oi, route in enumerate(topo.routes):
        for step, reach in walk_steps(route.steps):
            if step.lock is None or step.db is None:
                continue
            lam = (k - 1) * reach * rates[:, oi]
            if lam.max() <= 0.0:
                continue
            seed = int(rng.integers(0, 2**63))
            sub = np.random.default_rng(seed)
            hold = Sampler(step.db, sub)
            env.process(_phantom_writer(env, step.lock, topo.locks[step.lock].sub_accounts,
                                        write, hold, grid, lam, duration, sub, pyrng))


def _phantom_writer(env: simpy.Environment, lock: int, subs: int, write: PhantomWrite,
                    hold: Draw, grid: np.ndarray, lam: np.ndarray, duration: float,
                    rng: np.random.Generator,
                    pyrng: random.Random) -> Generator[Event, Any, None]:
    """Non-homogeneous Poisson writers by thinning: each writes a sub-account for a
    database time."""
    lam_max = float(lam.max())
    t = 0.0
    while True:
        gaps = rng.exponential(1.0 / lam_max, 1024)
        keep = rng.random(1024)
        for gap, u in zip(gaps.tolist(), keep.tolist(), strict=True):
            t += gap
            if t >= duration:
                return
            if u * lam_max > float(np.interp(t, grid, lam)):
                continue  # thinning: accepted with probability rate(t) / max rate
            yield env.timeout(t - env.now)
            sub = pyrng.randrange(subs) if subs > 1 else 0
            env.process(write(lock, sub, hold(0)))
