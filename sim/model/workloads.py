"""Arrivals at explicit rates: open workloads next to the population.

An open workload (``workloads:`` with ``rate_rps`` or ``rate_table``, or an operation with
its own rate) is a Poisson stream of the whole system's rate, constant or following its rate
table (linear between points, held before the first and after the last), generated chunk by
chunk by thinning. Each arrival's operation is drawn by the workload's weights and its player
uniformly among the registered players of the represented partition (``id % K == k``), which
gets 1/K of the rate.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sim.model.population import ArrivalChunk
from sim.model.scenario import Scenario, Workload

CHUNK_S = 10.0  # seconds of arrivals generated per numpy call


class RateStream:
    """One open workload's arrivals over the simulated window."""

    def __init__(self, scenario: Scenario, workload: Workload, rng: np.random.Generator,
                 partition: tuple[int, int] = (0, 1)):
        assert workload.is_open, "a closed workload has no rate"
        k, parts = partition
        self.rng = rng
        self.partition = (k, parts)
        self.duration_s = float(scenario.simulation.duration_s)
        names = list(scenario.operations)
        self.n_ops = len(names)
        self.ops = np.array([names.index(o) for o in workload.operations], dtype=np.int16)
        w = np.array(list(workload.operations.values()), dtype=np.float64)
        self.share = w / w.sum()
        self._cum = np.cumsum(self.share)
        if workload.rate_table is not None:
            self._ts = np.array([p.t_s for p in workload.rate_table], dtype=np.float64)
            self._rs = np.array([p.rps for p in workload.rate_table], dtype=np.float64)
        else:
            assert workload.rate_rps is not None
            self._ts = np.array([0.0])
            self._rs = np.array([workload.rate_rps])
        self._rs = self._rs / parts
        registered = scenario.population.registered_players
        self._ids = max(1, (registered - k + parts - 1) // parts)  # ids k, k+K, ... < registered

    def total_rate(self, t: float | np.ndarray) -> np.ndarray:
        """Arrivals per second (of the partition) at window time ``t``."""
        return np.interp(np.asarray(t, dtype=np.float64), self._ts, self._rs)

    def rate(self, t: float | np.ndarray) -> np.ndarray:
        """Arrivals per second of each operation, shape ``t.shape + (n_ops,)``."""
        out = np.zeros((*np.shape(t), self.n_ops))
        out[..., self.ops] += self.total_rate(t)[..., None] * self.share
        return out

    def chunks(self, chunk_s: float = CHUNK_S) -> Iterator[ArrivalChunk]:
        """Arrivals in time order, ``chunk_s`` seconds at a time, until the window ends."""
        rng = self.rng
        k, parts = self.partition
        t0 = 0.0
        while t0 < self.duration_s:
            t1 = min(t0 + chunk_s, self.duration_s)
            grid = np.concatenate([[t0, t1], self._ts[(self._ts > t0) & (self._ts < t1)]])
            lam_max = float(self.total_rate(grid).max())  # piecewise linear: max at a knot
            n = int(rng.poisson(lam_max * (t1 - t0))) if lam_max > 0 else 0
            t = np.sort(rng.uniform(t0, t1, n))
            keep = rng.random(n) * lam_max < self.total_rate(t)
            t = t[keep]
            m = len(t)
            op = self.ops[np.minimum(np.searchsorted(self._cum, rng.random(m), side="right"),
                                     len(self.ops) - 1)]
            player = k + parts * rng.integers(0, self._ids, m, dtype=np.int64)
            yield ArrivalChunk(t, op.astype(np.int16), player, np.zeros(m, dtype=np.int64))
            t0 = t1
