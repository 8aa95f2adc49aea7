"""Measurements of one load run: HDR histograms per operation and per second, error codes,
skipped requests and the generator's send lag, turned into the simulator's results schema.

Latencies are microseconds. A request's latency is appended to a plain array (tens of
nanoseconds) and the array is folded into the HDR histograms in bulk every
:data:`FLUSH_EVERY` values: the ``hdrhistogram`` package costs ~6.6 µs per ``record_value``
here, more than the rest of a request's client-side cost, so values are first snapped down
to a grid finer than the histograms' own buckets (identical percentiles) and counted with
numpy, then recorded once per distinct value.

Several generator processes each :meth:`Recorder.export` their histograms (HDR's compressed
encoding) and :func:`merge` adds them up: percentiles are always read from merged
histograms, never averaged.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram

from sim.model.scenario import Scenario
from sim.reports.results import Results, slo_met_flag

LOWEST_US = 1
HIGHEST_US = 120_000_000
"""Latencies above two minutes are recorded as two minutes (clamped, never dropped)."""
SIG_FIGS_TOTAL = 3
"""Whole-run histograms: 0.1% value precision."""
SIG_FIGS_PER_SECOND = 2
"""Per-second histograms (one per operation and second): 1% precision, 20 kB each."""
FLUSH_EVERY = 1 << 20
"""Raw latencies buffered before they are folded into the histograms (bounds memory: 26 bytes
a request, 27 MB at most). A fold pauses the generator's event loop about 1 µs per value:
at 65,536 it stalled the generator 50-60 ms every 33 s at 2,000 requests/s, and the requests
in flight then read as a stall of the server (`testbed calibrate` found it, at the same
second in every run). At 2^20 a measured window of minutes at thousands of requests/s never
folds before its end (:meth:`Recorder.export`)."""
_GRID_BITS = {3: 12, 2: 9}
"""Significant figures -> values are snapped to multiples of 2**(bit_length - bits): finer
than the histogram's own buckets (2048 sub-buckets at 3 figures, 256 at 2), so it holds
exactly what raw recording would, with fewer distinct values to record."""


def _hist(sig: int) -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, sig)


def _record_bulk(hist: HdrHistogram, values: np.ndarray) -> None:
    """Record every value of ``values`` (µs, int64) into ``hist``."""
    if values.size == 0:
        return
    v = np.clip(values, LOWEST_US, HIGHEST_US).astype(np.int64)
    bits = _GRID_BITS[hist.significant_figures]
    shift = np.maximum(0, np.floor(np.log2(v)).astype(np.int64) + 1 - bits)
    snapped = (v >> shift) << shift
    uniq, counts = np.unique(snapped, return_counts=True)
    for value, count in zip(uniq.tolist(), counts.tolist(), strict=True):
        hist.record_value(value, count)


@dataclass
class RequestLog:
    """Every request of a run, for analyses that need more than histograms (the fault
    drills' recovery figures: successful-only rolling p99, outcomes by arrival time):
    intended send time from the window's start (s), latency (s), operation and error code
    (None: success). 24 bytes a request: a drill of minutes at hundreds of requests/s."""

    t_s: array = field(default_factory=lambda: array("d"))
    latency_s: array = field(default_factory=lambda: array("d"))
    op: list[str] = field(default_factory=list)
    code: list[str | None] = field(default_factory=list)
    lag_s: array = field(default_factory=lambda: array("d"))
    """How late the (last) attempt left against the intended time: latency less lag is
    the time from sending to the answer (a generator's own pause is in lag, not in it)."""

    def add(self, op: str, t_s: float, latency_s: float, code: str | None,
            lag_s: float = 0.0) -> None:
        self.t_s.append(t_s)
        self.latency_s.append(latency_s)
        self.op.append(op)
        self.code.append(code)
        self.lag_s.append(lag_s)

    def successful(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Of the successful requests: intended send times, latencies from the intended
        time, times from sending to the answer (s), and operations."""
        ok = np.array([c is None for c in self.code], dtype=bool)
        t = np.frombuffer(self.t_s, dtype=float)[ok]
        lat = np.frombuffer(self.latency_s, dtype=float)[ok]
        sent_to_answer = lat - np.frombuffer(self.lag_s, dtype=float)[ok]
        return t, lat, sent_to_answer, np.array(self.op, dtype=object)[ok]

    def arrays(self) -> dict[str, np.ndarray]:
        """The log as plain arrays (``np.savez``; :meth:`from_arrays` reads them back): an
        error code of None is stored as the empty string."""
        return {"t_s": np.frombuffer(self.t_s, dtype=float).copy(),
                "latency_s": np.frombuffer(self.latency_s, dtype=float).copy(),
                "lag_s": np.frombuffer(self.lag_s, dtype=float).copy(),
                "op": np.array(self.op, dtype=str),
                "code": np.array(["" if c is None else c for c in self.code], dtype=str)}

    @classmethod
    def from_arrays(cls, a: Any) -> RequestLog:
        """A log written by :meth:`arrays` (any mapping of those names to arrays)."""
        n = len(a["t_s"])
        assert all(len(a[k]) == n for k in ("latency_s", "lag_s", "op", "code")), \
            "a request log's arrays have one entry per request"
        return cls(array("d", a["t_s"]), array("d", a["latency_s"]),
                   [str(o) for o in a["op"]], [str(c) or None for c in a["code"]],
                   array("d", a["lag_s"]))

    def sends(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Of the successful requests: when each left (intended time plus its send lag),
        the time from sending to the answer (s), and operations: what the back office saw
        (:func:`loadgen.stalls.find_stalls`), without the generator's own lateness."""
        t, lat, sent_to_answer, ops = self.successful()
        return t + (lat - sent_to_answer), sent_to_answer, ops

    def extend(self, other: RequestLog) -> RequestLog:
        """This log with ``other``'s requests appended (another generator process)."""
        self.t_s.extend(other.t_s)
        self.latency_s.extend(other.latency_s)
        self.op.extend(other.op)
        self.code.extend(other.code)
        self.lag_s.extend(other.lag_s)
        return self


@dataclass
class Recorder:
    """Everything one generator process measures. ``t0`` is the ``perf_counter`` time at
    which the measured window starts; requests are binned by their intended send second."""

    t0: float
    bin_s: float = 1.0
    _ops: array = field(default_factory=lambda: array("H"))
    _secs: array = field(default_factory=lambda: array("q"))
    _lat: array = field(default_factory=lambda: array("q"))
    _lags: array = field(default_factory=lambda: array("q"))
    _op_index: dict[str, int] = field(default_factory=dict)
    total: dict[str, HdrHistogram] = field(default_factory=dict)
    per_second: dict[tuple[int, str], HdrHistogram] = field(default_factory=dict)
    counts: Counter[tuple[int, str]] = field(default_factory=Counter)
    errors: Counter[tuple[int, str]] = field(default_factory=Counter)
    codes: dict[str, Counter[str]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    lag: HdrHistogram = field(default_factory=lambda: _hist(SIG_FIGS_PER_SECOND))
    keep_requests: bool = False  # also keep every request (see :class:`RequestLog`)
    log: RequestLog | None = None

    def record(self, op: str, intended: float, done: float, code: str | None,
               sent: float | None = None) -> None:
        """One answered (or failed) request: sent for ``intended`` (actually at ``sent``
        when given), finished at ``done`` (``perf_counter`` seconds); ``code`` is None on
        success, else the error code."""
        idx = self._op_index.get(op)
        if idx is None:
            idx = self._op_index[op] = len(self._op_index)
        sec = int((intended - self.t0) / self.bin_s)
        self._ops.append(idx)
        self._secs.append(sec)
        self._lat.append(int((done - intended) * 1e6))
        if code is not None:
            self.errors[(sec, op)] += 1
            self.codes.setdefault(op, Counter())[code] += 1
        if self.keep_requests:
            if self.log is None:
                self.log = RequestLog()
            self.log.add(op, intended - self.t0, done - intended, code,
                         0.0 if sent is None else sent - intended)
        if len(self._lat) >= FLUSH_EVERY:
            self.flush()

    def send_lag(self, lag_s: float) -> None:
        """How late a request left against its intended send time (open loop only)."""
        self._lags.append(int(lag_s * 1e6))
        if len(self._lags) >= FLUSH_EVERY:
            self.flush()

    def skip(self, op: str) -> None:
        """A request the in-flight cap did not send (counted, reported, never silent)."""
        self.skipped[op] += 1

    def flush(self) -> None:
        """Fold the buffered raw values into the histograms."""
        if self._lat:
            ops = np.frombuffer(self._ops, dtype=np.uint16)
            secs = np.frombuffer(self._secs, dtype=np.int64)
            lat = np.frombuffer(self._lat, dtype=np.int64)
            names = {i: op for op, i in self._op_index.items()}
            for i in np.unique(ops).tolist():
                op = names[i]
                mine = ops == i
                op_lat, op_secs = lat[mine], secs[mine]
                _record_bulk(self.total.setdefault(op, _hist(SIG_FIGS_TOTAL)), op_lat)
                for s in np.unique(op_secs).tolist():
                    in_s = op_lat[op_secs == s]
                    self.counts[(s, op)] += int(in_s.size)
                    _record_bulk(self.per_second.setdefault((s, op), _hist(SIG_FIGS_PER_SECOND)),
                                 in_s)
            self._ops, self._secs, self._lat = array("H"), array("q"), array("q")
        if self._lags:
            _record_bulk(self.lag, np.frombuffer(self._lags, dtype=np.int64))
            self._lags = array("q")

    def export(self) -> dict[str, Any]:
        """A picklable, compact copy (HDR encodings) for :func:`merge` in another process."""
        self.flush()
        return {
            "bin_s": self.bin_s,
            "total": {op: h.encode() for op, h in self.total.items()},
            "per_second": [(s, op, h.encode()) for (s, op), h in self.per_second.items()],
            "counts": list(self.counts.items()),
            "errors": list(self.errors.items()),
            "codes": {op: dict(c) for op, c in self.codes.items()},
            "skipped": dict(self.skipped),
            "lag": self.lag.encode(),
            "requests": self.log,
        }


def merge(parts: list[dict[str, Any]]) -> Recorder:
    """Add up the exports of several recorders (histograms added, counts summed)."""
    if not parts:
        raise ValueError("merge: nothing to merge")
    out = Recorder(t0=0.0, bin_s=parts[0]["bin_s"])
    for p in parts:
        if p["bin_s"] != out.bin_s:
            raise ValueError("merge: recorders with different bins")
        for op, enc in p["total"].items():
            out.total.setdefault(op, _hist(SIG_FIGS_TOTAL)).decode_and_add(enc)
        for s, op, enc in p["per_second"]:
            out.per_second.setdefault((s, op), _hist(SIG_FIGS_PER_SECOND)).decode_and_add(enc)
        for key, n in p["counts"]:
            out.counts[tuple(key)] += n
        for key, n in p["errors"]:
            out.errors[tuple(key)] += n
        for op, codes in p["codes"].items():
            out.codes.setdefault(op, Counter()).update(codes)
        out.skipped.update(p["skipped"])
        out.lag.decode_and_add(p["lag"])
        if p.get("requests") is not None:
            out.log = p["requests"] if out.log is None else out.log.extend(p["requests"])
    return out


def _ms(hist: HdrHistogram, pct: float) -> float:
    return hist.get_value_at_percentile(pct) / 1000.0 if hist.get_total_count() else math.nan


@dataclass
class RunInfo:
    """What the run was, for ``meta``: the scenario, the label of the system under test,
    the measured span and anything else to show (generator CPU, saturation, ...)."""

    scenario: Scenario
    architecture: str
    duration_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def to_results(rec: Recorder, info: RunInfo, stations: pd.DataFrame | None = None) -> Results:
    """The measurement in the simulator's results schema (``meta.source == "measurement"``)."""
    rec.flush()
    sc, arch = info.scenario, info.architecture
    ops = [op for op in sc.operations if op in rec.total]
    ops += sorted(op for op in rec.total if op not in ops)
    rows = []
    for op in ops:
        h = rec.total[op]
        n = h.get_total_count()
        errs = sum(rec.codes.get(op, Counter()).values())
        slo = sc.slos.latency_ms.get(op)
        target = slo.p99 if slo is not None and slo.p99 is not None else math.nan
        p99 = _ms(h, 99.0)
        rows.append({
            "architecture": arch, "operation": op, "requests": n,
            "throughput_rps": n / info.duration_s, "throughput_rps_ci": math.nan,
            "error_rate": errs / n if n else math.nan, "error_rate_ci": math.nan,
            "mean_ms": h.get_mean_value() / 1000.0 if n else math.nan, "mean_ms_ci": math.nan,
            "p50_ms": _ms(h, 50.0), "p50_ms_ci": math.nan,
            "p95_ms": _ms(h, 95.0), "p95_ms_ci": math.nan,
            "p99_ms": p99, "p99_ms_ci": math.nan,
            "p999_ms": _ms(h, 99.9), "p999_ms_ci": math.nan,
            "slo_p99_ms": target, "slo_met": slo_met_flag(p99, math.nan, target),
            "replications": 1,
        })
    ts = []
    for (s, op), h in sorted(rec.per_second.items()):
        ts.append({
            "architecture": arch, "replication": 0, "t_s": s * rec.bin_s, "operation": op,
            "requests": rec.counts[(s, op)], "errors": rec.errors[(s, op)],
            "mean_ms": h.get_mean_value() / 1000.0, "p50_ms": _ms(h, 50.0),
            "p99_ms": _ms(h, 99.0),
        })
    meta: dict[str, Any] = {
        "scenario": sc.name,
        "description": sc.description,
        "source": "measurement",
        "replications": {arch: 1},
        "reduce_factor": 1,  # the whole system was measured (read by the notebook)
        "duration_s": info.duration_s,
        "bin_s": rec.bin_s,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "windows": [],
        "slos": {op: s.targets() for op, s in sc.slos.latency_ms.items()}
        | {"error_budget": sc.slos.error_budget},
        "errors_by_code": {op: dict(c) for op, c in rec.codes.items() if c},
        "skipped_requests": dict(rec.skipped),
        **info.extra,
        "notes": list(info.notes),
    }
    return Results(meta=meta, summary=pd.DataFrame(rows),
                   stations=stations if stations is not None else pd.DataFrame(),
                   timeseries=pd.DataFrame(ts))
