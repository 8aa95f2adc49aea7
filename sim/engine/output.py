"""What one run produces: finished requests as compact arrays and station integrals per bin."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.engine.contention import ContentionOutput
from sim.reports.results import OUTCOMES

OK, FAILED, TIMED_OUT, SHED = (OUTCOMES.index(n) for n in ("ok", "failed", "timed_out", "shed"))
"""Outcome codes of a request (int8 in the output; ``error`` is ``outcome != OK``)."""


@dataclass
class StationSeries:
    """Cumulative station integrals sampled at each bin boundary."""

    name: str
    kind: str
    servers: int
    busy: list[float] = field(default_factory=list)
    queue: list[float] = field(default_factory=list)
    completions: list[int] = field(default_factory=list)
    wait_counts: np.ndarray | None = None  # (segments, buckets), see sim.engine.waits


@dataclass
class RunOutput:
    """Raw output of one replication of one deployment."""

    deployment: str
    duration_s: float
    bin_s: float
    t: np.ndarray          # arrival time of each finished request (s)
    op: np.ndarray         # operation index
    latency: np.ndarray    # response time (s)
    error: np.ndarray      # bool: the request was not ok (outcome != OK)
    stations: list[StationSeries]
    outcome: np.ndarray | None = None   # int8 outcome codes (OK, FAILED, TIMED_OUT, SHED)
    attempts: np.ndarray | None = None  # int8 attempts per request, when players retry
    faults: list[FaultLog] = field(default_factory=list)
    policy: dict[str, float] = field(default_factory=dict)  # sim.engine.policies counts
    scale_events: list[Any] = field(default_factory=list)   # autoscaler ScaleEvents
    contention: ContentionOutput | None = None  # when some step locks or version-checks rows
    host_pauses: tuple[int, float] | None = None  # (pauses, seconds paused): host.pauses only


@dataclass
class FaultLog:
    """What the engine knows of one fault in a run: when it was noticed, what it lost."""

    name: str
    detected_s: float | None = None     # health check took the last replica out
    lost_transactions: int = 0          # writes lost by an asynchronous failover


class Recorder:
    """Finished requests in typed arrays: 8 + 2 + 8 + 1 bytes each (+ 1 with retries)."""

    __slots__ = ("att", "err", "lat", "op", "t")

    def __init__(self) -> None:
        self.t = array("d")
        self.op = array("h")
        self.lat = array("d")
        self.err = array("b")   # outcome code (OK = 0; a bool True is FAILED)
        self.att = array("b")   # attempts, filled only when players retry

    def record(self, t0: float, op: int, latency: float, outcome: int) -> None:
        self.t.append(t0)
        self.op.append(op)
        self.lat.append(latency)
        self.err.append(outcome)

    def output(self, deployment: str, duration_s: float, bin_s: float,
               stations: list[StationSeries], faults: list[FaultLog] | None = None
               ) -> RunOutput:
        outcome = np.frombuffer(self.err, dtype=np.int8).copy()
        attempts = np.frombuffer(self.att, dtype=np.int8).copy() if len(self.att) else None
        assert attempts is None or len(attempts) == len(outcome)
        return RunOutput(
            deployment=deployment,
            duration_s=duration_s,
            bin_s=bin_s,
            t=np.frombuffer(self.t, dtype=np.float64).copy(),
            op=np.frombuffer(self.op, dtype=np.int16).copy(),
            latency=np.frombuffer(self.lat, dtype=np.float64).copy(),
            error=outcome != OK,
            stations=stations,
            outcome=outcome,
            attempts=attempts,
            faults=faults or [],
        )
