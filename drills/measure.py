"""The drill's measurement in the simulator's terms: the generator's request log as the
per-bin input of :mod:`sim.analysis.recovery` (outcomes by arrival second, p99 of the
successful requests over a trailing window) and the recovery table, one row per fault."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from drills.traffic import STAFF_OPERATION
from loadgen.openloop import NO_RESPONSE
from loadgen.record import RequestLog
from sim.analysis.recovery import FaultWindow, aggregate_recovery, bins_from_requests, recovery_row

OK, FAILED, TIMED_OUT, SHED = 0, 1, 2, 3  # indexes into sim.reports.results.OUTCOMES


def outcomes(log: RequestLog, timeout_s: float) -> np.ndarray:
    """Outcome code of each request: timed out when answered after ``timeout_s`` (the
    caller had given up) or never; failed on any other error; ok otherwise."""
    lat = np.frombuffer(log.latency_s, dtype=float)
    code = np.array([OK if c is None else FAILED for c in log.code], dtype=np.int64)
    late = (lat > timeout_s) | np.array([c == NO_RESPONSE for c in log.code], dtype=bool)
    code[late] = TIMED_OUT
    return code


def drill_bins(log: RequestLog, duration_s: float, timeout_s: float, window_s: float,
               ops: set[str] | None = None) -> pd.DataFrame:
    """Per-second bins of the requests (of ``ops`` when given)."""
    t = np.frombuffer(log.t_s, dtype=float)
    lat_ms = np.frombuffer(log.latency_s, dtype=float) * 1000.0
    code = outcomes(log, timeout_s)
    if ops is not None:
        keep = np.array([o in ops for o in log.op], dtype=bool)
        t, lat_ms, code = t[keep], lat_ms[keep], code[keep]
    return bins_from_requests(t, lat_ms, code, duration_s, window_s)


def success_p99_ms(log: RequestLog, t0: float, t1: float, timeout_s: float,
                   ops: set[str] | None = None) -> float:
    """p99 of the successful requests (of ``ops`` when given) that arrived in [t0, t1)."""
    t = np.frombuffer(log.t_s, dtype=float)
    lat_ms = np.frombuffer(log.latency_s, dtype=float) * 1000.0
    sel = (t >= t0) & (t < t1) & (outcomes(log, timeout_s) == OK)
    if ops is not None:
        sel &= np.array([o in ops for o in log.op], dtype=bool)
    return float(np.percentile(lat_ms[sel], 99.0)) if sel.any() else math.nan


def recovery_table(log: RequestLog, windows: list[FaultWindow], architecture: str,
                   duration_s: float, timeout_s: float, window_s: float, slo_p99_ms: float,
                   lost: int, op_targets: dict[str, float] | None = None,
                   hold_s: float | None = None) -> pd.DataFrame:
    """The ``recovery`` table of the drill (one replication: no confidence intervals): per
    fault, a row over all the players' requests against ``slo_p99_ms`` (operation ``all``;
    staff reads of fraud alerts left out), then a row per operation of ``op_targets``
    against its own p99 target."""
    players = {op for op in log.op if op != STAFF_OPERATION}
    groups = [("all", players, slo_p99_ms)] + [
        (op, {op}, target) for op, target in (op_targets or {}).items() if op in players]
    rows = []
    for name, ops, target in groups:
        bins = drill_bins(log, duration_s, timeout_s, window_s, ops=ops)
        for w in windows:
            row = recovery_row(bins, w, target, window_s, hold_s=hold_s,
                               lost_transactions=lost if name == "all" else 0,
                               p99_ok_ms=success_p99_ms(log, w.start_s, duration_s,
                                                        timeout_s, ops),
                               operation=name)
            rows.append({"architecture": architecture, **row})
    return aggregate_recovery(rows)


def per_operation(log: RequestLog, windows: list[FaultWindow], duration_s: float,
                  timeout_s: float) -> pd.DataFrame:
    """Requests, errors, timed out and success p99 per operation before, during and after
    the faults (the span from the first start to the last end)."""
    if not windows:
        return pd.DataFrame()
    t = np.frombuffer(log.t_s, dtype=float)
    lat_ms = np.frombuffer(log.latency_s, dtype=float) * 1000.0
    code = outcomes(log, timeout_s)
    ops = np.array(log.op)
    a, b = min(w.start_s for w in windows), max(w.end_s for w in windows)
    rows = []
    for phase, sel_t in (("before", t < a), ("fault", (t >= a) & (t < max(b, a + 1))),
                         ("after", t >= max(b, a + 1))):
        for op in sorted(set(log.op)):
            sel = sel_t & (ops == op)
            ok = sel & (code == OK)
            rows.append({
                "phase": phase, "operation": op, "requests": int(sel.sum()),
                "failed": int((sel & (code == FAILED)).sum()),
                "timed_out": int((sel & (code == TIMED_OUT)).sum()),
                "p99_ok_ms": float(np.percentile(lat_ms[ok], 99)) if ok.any() else math.nan,
            })
    return pd.DataFrame(rows)
