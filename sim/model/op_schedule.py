"""Operations of a reduced round-robin stream: each operation's own arrivals stay smooth.

A reduced run (factor k) under round-robin balancing keeps every k-th arrival of the whole
system's stream (:meth:`sim.model.population.ArrivalStream._every_kth_chunk`): the partition's
entry replica then gets every R-th request, as a full replica does. But a service that only
some operations visit (the player service: logins, 2% of requests) gets, in the full system,
every R-th request *of those operations*, a smooth stream (gaps CV^2 = 1/R); if the operations
of the kept arrivals were drawn independently, the partition's replica of that service would
get a random thinning of the kept stream, nearly Poisson (CV^2 near 1): its queue reads high
(measured: login p50 +5.4%, p99 +20% on ``baseline_day.yaml``, ``benchmarks/RESULTS.md``).

:class:`OpScheduler` gives the kept arrivals their operations so that each operation's
arrivals are, to second order, every k-th of its own full-system Poisson stream too:
earliest-deadline-first over per-operation clocks on the index scale of the kept stream.
Operation o (share p of the arrivals) is due again ``G`` kept arrivals after its last one,
``G ~ Gamma(shape k / (1 - p), scale (1 - p) / (k p))``: mean 1/p, CV^2 (1 - p) / k. With the
kept stream's own Erlang-k gaps (k dense gaps each), o's gaps in time then have mean
``k / (p Lambda)`` and CV^2 ``(p + (1 - p)) / k = 1 / k``: every k-th of a Poisson stream of
rate ``p Lambda``, as a full-system replica sees it. The share of each operation is kept
exactly on average (each clock advances by 1/p per use) and follows the time-varying shares
(spikes) through ``shares`` at each arrival. The whole stream stays the same renewal stream:
only the operation marks change.
"""

from __future__ import annotations

import heapq

import numpy as np

FULL_SHARE = 1.0 - 1e-9
"""A share at or above this is the only operation: every kept arrival is it (CV^2 0)."""


class OpScheduler:
    """Operation marks for the kept arrivals of a reduced round-robin stream (see module)."""

    def __init__(self, n_ops: int, k: int, rng: np.random.Generator):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.n_ops = n_ops
        self.k = k
        self.rng = rng
        self._heap: list[tuple[float, int]] = []
        self._index = 0.0         # kept arrivals marked so far (the clocks' time scale)

    def _gap(self, p: float) -> float:
        """Kept arrivals until an operation of share ``p`` is due again."""
        if p >= FULL_SHARE:
            return 1.0
        shape = self.k / (1.0 - p)
        return float(self.rng.gamma(shape, 1.0 / (shape * p)))

    def assign(self, shares: np.ndarray) -> np.ndarray:
        """Operations of the next ``len(shares)`` kept arrivals; ``shares[i]`` (summing to 1)
        are the operations' shares of the arrivals at arrival i's time."""
        n = shares.shape[0]
        out = np.empty(n, dtype=np.int16)
        heap = self._heap
        for i in range(n):
            row = shares[i]
            if not heap:  # stationary start: each clock at a uniform phase of its first gap
                for o in np.flatnonzero(row > 0).tolist():
                    heap.append((self._index + self.rng.random() * self._gap(float(row[o])), o))
                heapq.heapify(heap)
            due, o = heap[0]
            p = float(row[o])
            # spike multipliers are positive: an operation with arrivals keeps a share > 0
            assert p > 0.0, f"operation {o} lost its share of the arrivals"
            out[i] = o
            heapq.heapreplace(heap, (due + self._gap(p), o))
            self._index += 1.0
        return out
