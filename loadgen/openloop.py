"""Open-loop load: a Poisson arrival stream sent at its intended times whatever the server
does, latency measured from the intended send time (no coordinated omission).

Before the window each generator opens a fixed pool of keep-alive connections
(:func:`warm_connections`), as real callers keep theirs; a request finding them all busy
waits for one (its latency still from its intended time). One generator process runs one
asyncio loop (uvloop): a scheduler wakes when the next
arrival is due (at most once per millisecond, the loop's timer resolution), sends every
arrival that is due (each on an idle keep-alive connection or
a new one), and records the send lag (actual minus intended). The answer's callback records
the latency from the intended time. When ``max_in_flight`` requests are outstanding an
arrival is *skipped*: counted per operation and reported, never sent late. Several
processes (``processes``) split the rate (a superposition of Poisson streams is Poisson),
each with its own players; their histograms are merged (see :mod:`loadgen.record`).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvloop

from loadgen.behaviour import MAX_ATTEMPTS, RETRY_STATUSES, Players, Request, error_code
from loadgen.client import CONNECTION_ERROR, Pool
from loadgen.limits import DEFAULT_MAX_IN_FLIGHT, MAX_PROCESSES
from loadgen.record import Recorder
from loadgen.signing import Credentials, Signer
from sim.model.scenario import Scenario

SETUP_CONCURRENCY = 16
"""Players created and funded in parallel before the measured window."""
DRAIN_S = 10.0
"""After the last arrival, answers are awaited this long; the rest fail as NO_RESPONSE."""
NO_RESPONSE = "NO_RESPONSE"
TICK_S = 0.001
"""Shortest sleep of the scheduler (the event loop's timer resolution)."""
START_BARRIER_S = 120.0
"""Generator processes wait at most this long for each other's set-up."""
WARM_S = 0.05
"""Keep-alive connections of a generator: enough for this many seconds of arrivals, opened
before the window (:meth:`Pool.warm`) and never more (``Pool.max_connections``): a request
finding all busy waits for the next one freed, its latency still counted from its intended
time, rather than open a connection whose first answer a busy server delays by seconds."""
MIN_WARM = 32


def warm_connections(rate: float, max_in_flight: int) -> int:
    """Keep-alive connections a generator opens before its window and keeps."""
    return min(max_in_flight, max(MIN_WARM, math.ceil(rate * WARM_S)))


@dataclass(frozen=True)
class Hooks:
    """Called when the measured window starts and when its last arrival is due (the
    caller's CPU accounting of the server)."""

    on_start: Callable[[], object]
    on_stop: Callable[[], object]


Source = Callable[[Scenario, "OpenLoopConfig", int], Any]
"""Makes the request source of generator process ``index``: an object with ``next()``,
``answered(request, status)``, ``setup_requests()`` and ``abandoned_rounds``, as
:class:`loadgen.behaviour.Players` (the default) or :class:`loadgen.behaviour.HealthChecks`."""


class LoadError(RuntimeError):
    """The run cannot go on (set-up refused, target unreachable); the message says why."""


@dataclass(frozen=True)
class OpenLoopConfig:
    target: str
    rate: float
    duration_s: float
    players: int
    seed: int
    prefix: str
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    credentials: Credentials | None = None
    keep_requests: bool = False  # every request in the export (``recorder["requests"]``)
    lead_in_s: float = 0.0
    """Seconds of the same arrival stream, to the same players, sent before the measured
    window and not measured: the window starts on a back office already at the rate (not
    just after the players' set-up burst)."""

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.rate < float("inf")):
            raise ValueError(f"rate: must be a positive finite number, got {self.rate}")
        if not (self.duration_s > 0 and self.duration_s < float("inf")):
            raise ValueError(f"duration: must be positive and finite, got {self.duration_s}")
        if not (0 <= self.lead_in_s < float("inf")):
            raise ValueError(f"lead-in: must be zero or positive and finite, got "
                             f"{self.lead_in_s}")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight: must be at least 1")


async def setup_players(pool: Pool, players: Players) -> None:
    """Create and fund the pool's players (not measured); LoadError on a refusal."""
    chains = players.setup_requests()
    it = iter(chains)

    async def worker() -> None:
        for chain in it:
            for req in chain:
                status, body, err = await pool.request(req.method, req.path, req.body)
                if err is not None or not 200 <= status < 300:
                    raise LoadError(
                        f"set-up: {req.method} {req.path} answered "
                        f"{err or status} {error_code(status, body) or ''} "
                        f"{body[:200].decode(errors='replace')}".rstrip())

    await asyncio.gather(*(worker() for _ in range(min(SETUP_CONCURRENCY, len(chains)))))


def scenario_players(scenario: Scenario, cfg: OpenLoopConfig, index: int) -> Players:
    """The default request source: the scenario's players (own ids per process)."""
    return Players(scenario, cfg.players, f"{cfg.prefix}g{index}-", cfg.seed + index)


async def _run(scenario: Scenario, cfg: OpenLoopConfig, index: int,
               ready: Any = None, hooks: Hooks | None = None,
               source: Source = scenario_players) -> dict[str, Any]:
    pool = Pool(cfg.target, Signer(cfg.credentials),
                max_connections=warm_connections(cfg.rate, cfg.max_in_flight))
    players = source(scenario, cfg, index)
    try:
        await setup_players(pool, players)
        await pool.warm(pool.max_connections or 1)
    except OSError as exc:
        raise LoadError(f"cannot reach {cfg.target}: {exc}") from None
    if ready is not None:  # other generator processes: start together
        await asyncio.get_running_loop().run_in_executor(None, ready.wait, START_BARRIER_S)
    pc = time.perf_counter
    rng = random.Random(cfg.seed * 1_000_003 + index)
    expo, rate = rng.expovariate, cfg.rate
    cap = cfg.max_in_flight
    in_flight = 0
    draining_over = False
    t_lead = pc()
    t0 = t_lead + cfg.lead_in_s
    rec = Recorder(t0, keep_requests=cfg.keep_requests)
    cpu0 = time.process_time()
    end = t0 + cfg.duration_s
    sent = 0
    sending = True
    drained = asyncio.Event()

    def dispatch(req: Request, intended: float, attempt: int, measured: bool) -> None:
        nonlocal in_flight
        in_flight += 1

        def done(status: int, body: bytes, err: str | None) -> None:
            nonlocal in_flight
            in_flight -= 1
            if (not draining_over and attempt < MAX_ATTEMPTS
                    and (err == CONNECTION_ERROR or status in RETRY_STATUSES)):
                dispatch(req, intended, attempt + 1, measured)  # same body: same transaction id
                return
            players.answered(req, status)
            if measured:
                code = NO_RESPONSE if draining_over else err or error_code(status, body)
                rec.record(req.operation, intended, pc(), code, sent)
            if in_flight == 0 and not sending:
                drained.set()

        sent = pc()
        pool.send(req.method, req.path, req.body, done)

    async def send_until(stop: float, measured: bool) -> int:
        """Send the arrivals due before ``stop``; returns how many were sent."""
        nonlocal next_t
        n = 0
        while next_t < stop:
            now = pc()
            if next_t > now:
                # uvloop's timers have millisecond resolution: a shorter sleep returns at
                # once and spins. Wake at most once per TICK_S and send every arrival then
                # due (its lag is recorded; its latency still counts from the intended time).
                await asyncio.sleep(max(next_t - now, TICK_S))
                now = pc()
            while next_t <= now and next_t < stop:
                req = players.next()
                if measured:
                    rec.send_lag(now - next_t)
                if in_flight >= cap:
                    if measured:
                        rec.skip(req.operation)
                else:
                    dispatch(req, next_t, 1, measured)
                    n += 1
                next_t += expo(rate)
        return n

    next_t = t_lead + expo(rate)
    if cfg.lead_in_s > 0:
        await send_until(t0, measured=False)
        cpu0 = time.process_time()
    if hooks is not None:
        hooks.on_start()
    sent = await send_until(end, measured=True)
    sending = False
    send_window_s = pc() - t0
    if hooks is not None:
        hooks.on_stop()
    if in_flight:
        try:
            await asyncio.wait_for(drained.wait(), DRAIN_S)
        except TimeoutError:
            draining_over = True
            pool.abort()
            await asyncio.sleep(0.1)  # let connection_lost callbacks record the rest
    pool.close()
    cpu_s = time.process_time() - cpu0
    wall_s = pc() - t0
    return {
        "recorder": rec.export(),
        "cpu_s": cpu_s, "wall_s": wall_s, "send_window_s": send_window_s, "sent": sent,
        "abandoned_rounds": players.abandoned_rounds, "pid": os.getpid(),
    }


def _child(scenario: Scenario, cfg: OpenLoopConfig, index: int, ready: Any,
           out: Any, source: Source) -> None:
    try:
        out.put((index, uvloop.run(_run(scenario, cfg, index, ready, source=source))))
    except BaseException as exc:  # reported to the parent, which raises it
        ready.abort()
        out.put((index, LoadError(f"generator process {index}: {exc}")))


def run_open_loop(scenario: Scenario, cfg: OpenLoopConfig, processes: int = 1,
                  hooks: Hooks | None = None, source: Source = scenario_players
                  ) -> list[dict[str, Any]]:
    """Run the open-loop generator in ``processes`` processes (rate split evenly); returns
    each process's export and CPU figures. ``hooks`` run in this process; ``source`` must
    be picklable (a module-level function) when ``processes`` > 1."""
    if not 1 <= processes <= MAX_PROCESSES:
        raise ValueError(f"processes: must be between 1 and {MAX_PROCESSES}")
    if processes == 1:
        return [uvloop.run(_run(scenario, cfg, 0, hooks=hooks, source=source))]
    share = OpenLoopConfig(cfg.target, cfg.rate / processes, cfg.duration_s,
                           max(1, cfg.players // processes), cfg.seed, cfg.prefix,
                           max(1, cfg.max_in_flight // processes), cfg.credentials,
                           cfg.keep_requests, cfg.lead_in_s)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(processes + 1)  # the generators and this process
    out = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(scenario, share, i, ready, out, source), daemon=True)
             for i in range(processes)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    timeout = START_BARRIER_S + cfg.duration_s + DRAIN_S + 60
    try:
        try:
            ready.wait(START_BARRIER_S)
        except threading.BrokenBarrierError:
            pass  # a generator failed its set-up: its error is in the queue
        else:
            if hooks is not None:
                time.sleep(cfg.lead_in_s)
                hooks.on_start()
                time.sleep(cfg.duration_s)
                hooks.on_stop()
        for _ in procs:
            i, res = out.get(timeout=timeout)
            results[i] = res
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    errors = [r for r in results.values() if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    return [results[i] for i in sorted(results)]
