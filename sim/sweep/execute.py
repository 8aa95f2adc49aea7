"""Running a sweep's replications on dask.distributed and collecting them as data.

Every (point, replications) bundle is one Dask task: it simulates those replications of every
deployment of the point and returns their per-replication estimates (``RepStats``) to the
client, never a file on a worker's disk. Seeds are ``SeedSequence`` children by key
(``sim.runner.replication_seeds``), so any cluster, any number of workers and any task order
give the same numbers. Dask costs a few milliseconds per task: replications are bundled until a
task is expected to take ``MIN_TASK_S`` or more.

The cluster is a ``LocalCluster`` of processes, one single-threaded worker per core, unless a
scheduler address is given (``--scheduler tcp://host:8786`` or ``DASK_SCHEDULER_ADDRESS``):
then the client connects to that cluster and adding workers there adds speed here.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from sim.model.population import online_count
from sim.model.scenario import Scenario
from sim.model.topology import reduce_factor
from sim.reports.results import Results
from sim.runner import RepStats, aggregate, replication_seeds, run_replication

#: A task should run at least this long (Dask's overhead is ~7 ms per task).
MIN_TASK_S = 1.0
#: Conservative engine speed used to size tasks, simulated requests per second of one core
#: (benchmarks/baseline_engine.json measures ~17k on the reduced cup final).
ENGINE_REQUESTS_PER_S = 15_000.0
#: Environment variable naming an existing scheduler (Dask's own convention).
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: Seconds to wait for an existing scheduler before giving up with a clear error.
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Bundle:
    """Replications of one point simulated by one task."""

    point: int
    replications: tuple[int, ...]


def scheduler_address(explicit: str | None) -> str | None:
    """The scheduler to use: ``explicit``, else ``DASK_SCHEDULER_ADDRESS``, else None (local)."""
    return explicit or os.environ.get(SCHEDULER_ENV) or None


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[object]:
    """A ``distributed.Client``: on the given scheduler, or on a LocalCluster of ``workers``
    processes (default: one per core) that is shut down on exit."""
    from dask.distributed import Client, LocalCluster

    address = scheduler_address(scheduler)
    if address:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as err:
            raise ConnectionError(f"cannot reach the Dask scheduler at {address}: {err}") from err
        with client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client


def expected_requests(scenario: Scenario, k: int) -> float:
    """Requests one replication of every deployment is expected to simulate (for sizing)."""
    sim = scenario.simulation
    n_dep = len(scenario.deployments)
    if sim.closed is not None:
        think = max(sim.closed.think_time.mean_s(), 0.005)
        return sim.closed.users * sim.duration_s / think * n_dep
    pop = scenario.population
    t = np.linspace(0.0, sim.duration_s, 65)
    online = np.asarray(online_count(pop, sim.start_hour * 3600.0 + t), dtype=float)
    spike = max([sp.multiplier for sp in pop.spikes], default=1.0)
    per_s = float(online.mean()) * pop.session.actions_per_minute / 60.0 / k
    return per_s * max(spike, 1.0) * sim.duration_s * n_dep


def plan_bundles(scenarios: list[Scenario], replications: int) -> list[Bundle]:
    """Bundle each point's replications into tasks of about ``MIN_TASK_S`` or more."""
    out = []
    for i, scen in enumerate(scenarios):
        est_s = expected_requests(scen, reduce_factor(scen)) / ENGINE_REQUESTS_PER_S
        per_task = max(1, min(replications, math.ceil(MIN_TASK_S / max(est_s, 1e-9))))
        reps = list(range(replications))
        out += [Bundle(i, tuple(reps[j:j + per_task])) for j in range(0, replications, per_task)]
    return out


def simulate_bundle(scenario: Scenario, replications: tuple[int, ...],
                    paired: bool = True) -> list[RepStats]:
    """The task: simulate ``replications`` of every deployment of ``scenario``."""
    k = reduce_factor(scenario)
    seeds = replication_seeds(scenario.simulation.seed, max(replications) + 1)
    out: list[RepStats] = []
    for i in replications:
        out.extend(run_replication(scenario, k, seeds[i], i, paired=paired))
    return out


def run_points(client: object, scenarios: list[Scenario], replications: int,
               on_point: Callable[[int], None] | None = None,
               paired: bool = True) -> list[Results]:
    """Simulate every point on the cluster; ``on_point(i)`` is called as point i completes."""
    from dask.distributed import as_completed

    bundles = plan_bundles(scenarios, replications)
    remaining = [0] * len(scenarios)
    for b in bundles:
        remaining[b.point] += 1
    submit = client.submit  # type: ignore[attr-defined]
    futures = {
        # pure=False: identical arguments must still run (Dask would deduplicate them)
        submit(simulate_bundle, scenarios[b.point], b.replications, paired, pure=False): b
        for b in bundles
    }
    reps: list[list[RepStats]] = [[] for _ in scenarios]
    try:
        for fut in as_completed(futures):
            b = futures[fut]
            reps[b.point].extend(fut.result())
            remaining[b.point] -= 1
            if remaining[b.point] == 0 and on_point is not None:
                on_point(b.point)
    finally:
        for fut in futures:
            fut.cancel()
    out = []
    for scen, rs in zip(scenarios, reps, strict=True):
        assert len(rs) == replications * len(scen.deployments), "a replication is missing"
        rs.sort(key=lambda r: (r.replication, r.deployment))
        out.append(aggregate(scen, rs, reduce_factor(scen), sum(r.wall_s for r in rs)))
    return out
