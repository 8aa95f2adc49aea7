"""Service demands keyed by the request, so the same request costs the same in every deployment.

A request's demands (the gateway's CPU, then each step's CPU, external wait and database time)
are drawn when the request starts, from one random stream per (operation, step, kind). Each
stream is consumed in arrival order of its operation, so the n-th ``bet`` of a replication gets
the n-th draw of each of the bet's streams, whatever the deployment and whatever order its
events happen in. Deployments simulated on the same arrivals (common random numbers) and the
same demand seed therefore give each request the same demands wherever their paths agree,
and a paired comparison between them sees only the difference the deployment makes.

Independent streams (the comparison baseline) are the same machinery with one seed per
deployment. Draws are batched (numpy is slow one value at a time); a request that is rejected
at the door has still consumed its draws, so the streams of later requests stay aligned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.model.distributions import Distribution
from sim.model.topology import Route

#: Requests of one operation whose demands are drawn in one numpy call per stream.
BATCH = 1024
#: Kinds of demand per step, in the order a step's tuple holds them.
STEP_KINDS = ("cpu", "external", "db")

StepDemand = tuple[float, float, float]


class RequestDemands:
    """Per-request demand draws for the routes of one deployment (see the module docstring).

    ``draw(op)`` returns ``(gateway_cpu_s, ((cpu_s, external_s, db_s), ...))`` with one tuple
    per step of the operation's route; a demand the step does not have is 0.0.
    """

    __slots__ = ("_buffers", "_dists", "_rngs")

    def __init__(self, routes: Sequence[Route], seed: np.random.SeedSequence):
        self._dists: list[list[Distribution | None]] = []
        self._rngs: list[list[np.random.Generator]] = []
        self._buffers: list[list[tuple[float, tuple[StepDemand, ...]]]] = []
        for oi, route in enumerate(routes):
            dists: list[Distribution | None] = [route.gateway_cpu]
            for st in route.steps:
                dists += [st.cpu, st.external, st.db]
            self._dists.append(dists)
            # stream (operation, slot) is a child of the seed by key, never by spawn order
            self._rngs.append([
                np.random.default_rng(np.random.SeedSequence(
                    seed.entropy, spawn_key=(*seed.spawn_key, oi, slot)))
                for slot in range(len(dists))
            ])
            self._buffers.append([])

    def _refill(self, op: int) -> None:
        cols = [
            d.sample_s(rng, BATCH).tolist() if d is not None else [0.0] * BATCH
            for d, rng in zip(self._dists[op], self._rngs[op], strict=True)
        ]
        n_steps = (len(cols) - 1) // len(STEP_KINDS)
        steps = [zip(cols[1 + 3 * j], cols[2 + 3 * j], cols[3 + 3 * j], strict=True)
                 for j in range(n_steps)]
        rows = list(zip(cols[0], zip(*steps, strict=True), strict=True)) if n_steps else [
            (g, ()) for g in cols[0]]
        rows.reverse()  # pop() from the end hands them out in draw order
        self._buffers[op] = rows

    def draw(self, op: int) -> tuple[float, tuple[StepDemand, ...]]:
        """The next request of operation ``op``: its gateway CPU and its steps' demands."""
        buf = self._buffers[op]
        if not buf:
            self._refill(op)
            buf = self._buffers[op]
        return buf.pop()


def demand_seed(seed: np.random.SeedSequence, index: int) -> np.random.SeedSequence:
    """Child ``index`` of ``seed`` by key (the same whatever was spawned from it before)."""
    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, index))
