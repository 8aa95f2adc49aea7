"""Recovery rows of one simulated run: the engine's raw output turned into the per-bin input
of :mod:`sim.analysis.recovery`, one row per (fault, operation with a p99 target).

No SimPy: it reads a ``RunOutput``'s arrays and fault logs, the compiled faults and the
station series, so the same definitions judge simulated and measured runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sim.analysis.recovery import FaultWindow, bins_from_requests, recovery_row
from sim.model.faults import FaultSpec
from sim.model.scenario import Scenario


def fault_windows(faults: tuple[FaultSpec, ...], detected: dict[str, float | None]
                  ) -> list[FaultWindow]:
    """The metric's view of each compiled fault (inert ones left out)."""
    return [FaultWindow(f.name, f.kind, f.target, f.start_s, f.end_s, detected.get(f.name))
            for f in faults if f.inert is None]


def recovery_rows(out: Any, faults: tuple[FaultSpec, ...], scenario: Scenario, k: int,
                  station_ts: pd.DataFrame) -> tuple[list[dict[str, Any]], pd.DataFrame | None]:
    """One dict per (fault, operation with a p99 target) of one run (``out``: a RunOutput),
    and the rolling p99 per (t_s, operation) (``window_p99_ms``, for the plots).

    Counts are the whole system's (a reduced run's times ``k``).
    """
    if not faults:
        return [], None
    rs = scenario.recovery
    logs = {lg.name: lg for lg in out.faults}
    windows = fault_windows(faults, {n: lg.detected_s for n, lg in logs.items()})
    queues = station_ts[["t_s", "station", "queue"]] if len(station_ts) else None
    outcome = out.outcome if out.outcome is not None else out.error.astype(np.int8)
    rows, rolling = [], []
    for oi, op in enumerate(scenario.operations):
        slo = scenario.slos.latency_ms.get(op)
        if slo is None or slo.p99 is None:
            continue
        sel = out.op == oi
        t, lat, code = out.t[sel], out.latency[sel] * 1000.0, outcome[sel]
        att = out.attempts[sel] if out.attempts is not None else None
        bins = bins_from_requests(t, lat, code, out.duration_s, rs.window_s, out.bin_s, att)
        rolling.append(pd.DataFrame({"t_s": bins["t_s"], "operation": op,
                                     "window_p99_ms": bins["window_p99_ms"]}))
        for c in ("ok", "failed", "timed_out", "shed", *(["attempts"] if att is not None
                                                       else [])):
            bins[c] = bins[c] * k
        for w in windows:
            row = recovery_row(bins, w, slo.p99, rs.window_s, hold_s=rs.hold_s,
                               error_threshold=rs.error_threshold,
                               lost_transactions=logs[w.name].lost_transactions,
                               queues=queues, operation=op)
            end = w.end_s + (row["slo_restored_s"] if row["recovered"] else math.inf)
            ok = (code == 0) & (t >= w.start_s) & (t < end)
            row["p99_ok_ms"] = float(np.percentile(lat[ok], 99)) if ok.any() else math.nan
            rows.append(row)
    return rows, (pd.concat(rolling, ignore_index=True) if rolling else None)
