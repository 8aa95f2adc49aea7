"""What one run produces: finished requests as compact arrays and station integrals per bin."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

from sim.engine.contention import ContentionOutput


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
    error: np.ndarray      # bool: the request failed (rejected, pool timeout)
    stations: list[StationSeries]
    contention: ContentionOutput | None = None  # when some step locks or version-checks rows


class Recorder:
    """Finished requests in typed arrays: 8 + 2 + 8 + 1 bytes each."""

    __slots__ = ("err", "lat", "op", "t")

    def __init__(self) -> None:
        self.t = array("d")
        self.op = array("h")
        self.lat = array("d")
        self.err = array("b")

    def record(self, t0: float, op: int, latency: float, error: bool) -> None:
        self.t.append(t0)
        self.op.append(op)
        self.lat.append(latency)
        self.err.append(error)

    def output(self, deployment: str, duration_s: float, bin_s: float,
               stations: list[StationSeries]) -> RunOutput:
        return RunOutput(
            deployment=deployment,
            duration_s=duration_s,
            bin_s=bin_s,
            t=np.frombuffer(self.t, dtype=np.float64).copy(),
            op=np.frombuffer(self.op, dtype=np.int16).copy(),
            latency=np.frombuffer(self.lat, dtype=np.float64).copy(),
            error=np.frombuffer(self.err, dtype=np.int8).astype(bool),
            stations=stations,
        )
