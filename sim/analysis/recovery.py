"""Recovery metrics of one run around its faults, and their aggregate over replications.

Pure (numpy, pandas and the Student-t interval of ``output_analysis``; no SimPy, no engine),
so the simulator and the measured fault drills compute the same figures from the same input.

Input: one run as **bins** (a frame with :data:`BIN_COLUMNS`, one row per ``bin_s`` bin,
``t_s`` its start): the requests that *arrived* in the bin by outcome (``ok``, ``failed``,
``timed_out``, ``shed``) and ``window_p99_ms``, the p99 of the successful requests that arrived
in the trailing ``window_s`` ending at the bin's end (NaN when there were none). The producer
computes it: the simulator from its raw arrays with :func:`bins_from_requests`, a drill from
merged HDR histograms. An optional ``attempts`` column (calls made, retries included) gives the
retry amplification. Optional **queues** (``t_s``, ``station``, ``queue``: mean queue per bin)
give the peak queue per station and the drain time.

Definitions (all times in seconds; a fault's window is [start_s, end_s), ``end_s`` when the
trigger ended, e.g. the crashed replica serves again):

* a bin is **bad** when its error ratio (not ok / all) exceeds ``error_threshold`` or its
  ``window_p99_ms`` exceeds the SLO target; it **holds** when the error ratio over the
  trailing window is within ``error_threshold`` and ``window_p99_ms`` is at or under target;
* ``detect_s``: from start_s to detection: the producer's own time when it knows one
  (health check noticing, breaker opening), else the first bad bin at or after start_s
  (NaN: nothing ever looked wrong);
* ``resume_s``: from start_s to the end of the first good bin (successes, error ratio within
  ``error_threshold``) after the first bad one (0 when no bin went bad);
* ``slo_restored_s``: from start_s to the end of the first bin from which every bin holds,
  either to the end of the data (``hold_s`` None) or for ``hold_s``, and still holds at
  end_s (with ``hold_s``: a stretch that reaches end_s or starts after it); the stretch must
  last at least ``window_s`` (else it cannot be told from noise). ``recovered`` is whether
  such a bin exists: the system came back after the trigger ended. A load balancer routing
  around a crashed replica can restore the SLOs before the replica is back (< end_s - start_s);
* ``drained_s``: from end_s (the restart) to the first bin whose total queue is back to
  max(``DRAIN_FACTOR`` x the pre-fault mean, ``DRAIN_FLOOR``) (needs queues): the fluid
  model's recovery time lambda D / (mu - lambda);
* counts (``failed``, ``timed_out``, ``shed``), ``peak_queue`` and ``retry_amplification``
  (attempts per user request) over the fault and its recovery, from start_s to the later of
  end_s and the SLOs' restoration, or to the end of the data when the system did not recover;
* ``availability_*``: ok / all requests before the fault, during it, during the recovery
  and after it.

:func:`aggregate_recovery` turns per-replication rows into the ``recovery`` table of
``Results`` (:data:`sim.reports.results.RECOVERY_COLUMNS`): means with 95% Student-t
half-widths (``*_ci``) and ``recovered_share``; recovery times are averaged over the
replications that recovered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.analysis.output_analysis import confidence_interval
from sim.reports.results import (
    BIN_COLUMNS,
    OUTCOMES,
    RECOVERY_COLUMNS,
    RECOVERY_METRICS,
)

DEFAULT_ERROR_THRESHOLD = 0.01
DRAIN_FACTOR = 2.0
DRAIN_FLOOR = 1.0


@dataclass(frozen=True)
class FaultWindow:
    """One fault as the metrics see it: a label, its kind and target, and its window."""

    name: str
    kind: str
    target: str
    start_s: float
    end_s: float
    detected_s: float | None = None   # absolute time the system noticed, when known

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s)):
            raise ValueError(f"fault {self.name}: start_s and end_s must be finite")
        if self.end_s < self.start_s:
            raise ValueError(f"fault {self.name}: end_s {self.end_s} before start_s "
                             f"{self.start_s}")


def rolling_p99(t_s: np.ndarray, latency_ms: np.ndarray, ok: np.ndarray, n_bins: int,
                window_s: float, bin_s: float = 1.0) -> np.ndarray:
    """p99 (ms) of the successful requests that arrived in the trailing ``window_s`` ending at
    each bin's end, bins ``[i * bin_s, (i + 1) * bin_s)`` for i < ``n_bins``; NaN without any."""
    if window_s <= 0 or bin_s <= 0:
        raise ValueError("window_s and bin_s must be positive")
    t = np.asarray(t_s, dtype=float)[np.asarray(ok, dtype=bool)]
    lat = np.asarray(latency_ms, dtype=float)[np.asarray(ok, dtype=bool)]
    order = np.argsort(t, kind="stable")
    t, lat = t[order], lat[order]
    ends = (np.arange(n_bins) + 1) * bin_s
    hi = np.searchsorted(t, ends, side="left")
    lo = np.searchsorted(t, ends - window_s, side="left")
    out = np.full(n_bins, np.nan)
    for i in range(n_bins):
        if hi[i] > lo[i]:
            out[i] = np.percentile(lat[lo[i]:hi[i]], 99.0)
    return out


def bins_from_requests(t_s: np.ndarray, latency_ms: np.ndarray, outcome: np.ndarray,
                       duration_s: float, window_s: float, bin_s: float = 1.0,
                       attempts: np.ndarray | None = None) -> pd.DataFrame:
    """Per-bin frame (:data:`BIN_COLUMNS`, plus ``attempts`` when given) from raw requests.

    ``outcome`` holds codes, index into :data:`OUTCOMES` (0 ok, 1 failed, 2 timed out,
    3 shed); requests are binned by arrival time ``t_s``.
    """
    n_bins = max(1, math.ceil(duration_s / bin_s))
    t = np.asarray(t_s, dtype=float)
    code = np.asarray(outcome, dtype=np.int64)
    if len(code) and (code.min() < 0 or code.max() >= len(OUTCOMES)):
        raise ValueError(f"outcome codes must be 0..{len(OUTCOMES) - 1}")
    idx = np.clip((t // bin_s).astype(np.int64), 0, n_bins - 1)
    frame: dict[str, np.ndarray] = {"t_s": np.arange(n_bins) * bin_s}
    for k, name in enumerate(OUTCOMES):
        frame[name] = np.bincount(idx[code == k], minlength=n_bins)[:n_bins]
    frame["window_p99_ms"] = rolling_p99(t, latency_ms, code == 0, n_bins, window_s, bin_s)
    if attempts is not None:
        frame["attempts"] = np.bincount(idx, weights=np.asarray(attempts, dtype=float),
                                        minlength=n_bins)[:n_bins]
    return pd.DataFrame(frame)


def _check_bins(bins: pd.DataFrame) -> None:
    missing = [c for c in BIN_COLUMNS if c not in bins.columns]
    if missing:
        raise ValueError(f"bins: missing column(s) {', '.join(missing)}")
    if len(bins) == 0:
        raise ValueError("bins: no rows")
    t = bins["t_s"].to_numpy(dtype=float)
    if np.any(np.diff(t) <= 0):
        raise ValueError("bins: t_s must increase")


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _hold_start(holds: np.ndarray, start: int, end: int, need: int,
                hold_bins: int | None) -> int | None:
    """First index >= start from which ``holds`` is true to the end (at least ``need`` bins),
    or for ``hold_bins`` bins in a stretch that reaches index ``end`` or starts after it."""
    n = len(holds)
    if hold_bins is None:
        bad = np.flatnonzero(~holds[start:])
        first = start if len(bad) == 0 else start + int(bad[-1]) + 1
        return first if n - first >= need else None
    run = 0
    for i in range(start, n):
        run = run + 1 if holds[i] else 0
        if run >= hold_bins and i >= end:
            return i - run + 1
    return None


def peak_queues(queues: pd.DataFrame, t0: float, t1: float) -> dict[str, float]:
    """Largest per-bin mean queue of every station over [t0, t1)."""
    sel = queues[(queues["t_s"] >= t0) & (queues["t_s"] < t1)]
    if sel.empty:
        return {}
    return {str(k): float(v) for k, v in sel.groupby("station", sort=True)["queue"].max().items()}


def recovery_row(bins: pd.DataFrame, fault: FaultWindow, slo_p99_ms: float, window_s: float,
                 *, hold_s: float | None = None,
                 error_threshold: float = DEFAULT_ERROR_THRESHOLD,
                 lost_transactions: int = 0, replicas_added: float = 0.0,
                 queues: pd.DataFrame | None = None,
                 p99_ok_ms: float = math.nan, operation: str = "all") -> dict[str, object]:
    """Recovery figures of one fault in one run (see the module's definitions).

    ``p99_ok_ms`` is the producer's p99 of the successful requests over the fault and its
    recovery (the latency next to the availability); ``operation`` names the requests the
    bins hold (``all``, or one operation judged against its own target). Returns a dict with
    the per-run fields of :data:`RECOVERY_COLUMNS` (no ``*_ci``; ``recovered`` a bool).
    """
    _check_bins(bins)
    if not (math.isfinite(slo_p99_ms) and slo_p99_ms > 0):
        raise ValueError(f"slo_p99_ms must be a positive finite number, got {slo_p99_ms}")
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be a positive finite number, got {window_s}")
    if not 0 <= error_threshold < 1:
        raise ValueError(f"error_threshold must be in [0, 1), got {error_threshold}")
    t = bins["t_s"].to_numpy(dtype=float)
    bin_s = float(t[1] - t[0]) if len(t) > 1 else 1.0
    ok = bins["ok"].to_numpy(dtype=float)
    bad_n = sum(bins[c].to_numpy(dtype=float) for c in OUTCOMES[1:])
    total = ok + bad_n
    p99 = bins["window_p99_ms"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(total > 0, bad_n / np.maximum(total, 1), 0.0)
        w = max(1, round(window_s / bin_s))
        kernel = np.ones(w)
        win_bad = np.convolve(bad_n, kernel)[:len(t)]
        win_all = np.convolve(total, kernel)[:len(t)]
        win_err = np.where(win_all > 0, win_bad / np.maximum(win_all, 1), 0.0)
    p99_over = np.where(np.isnan(p99), total > 0, p99 > slo_p99_ms)
    bad = (err > error_threshold) | p99_over
    holds = (win_err <= error_threshold) & ~p99_over
    # the bin holding the fault's start (a drill's fault lands inside a bin, not on its edge)
    i_start = max(0, int(np.searchsorted(t, fault.start_s, side="right")) - 1)
    i_end = min(int(np.searchsorted(t, fault.end_s, side="left")), len(t) - 1)

    if fault.detected_s is not None:
        detect = float(fault.detected_s) - fault.start_s
    else:
        j = _first(bad[i_start:])
        detect = math.nan if j is None else t[i_start + j] + bin_s - fault.start_s
    good = (ok > 0) & (err <= error_threshold)
    first_bad = _first(bad[i_start:])
    if first_bad is None:
        resume = 0.0
    else:
        j = _first(good[i_start + first_bad:])
        resume = math.nan if j is None else t[i_start + first_bad + j] + bin_s - fault.start_s
    hold_bins = None if hold_s is None else max(1, round(hold_s / bin_s))
    k = _hold_start(holds, i_start, i_end, w, hold_bins)
    recovered = k is not None
    # the bin holds from its end: its trailing window ends there
    restored = math.nan if k is None else t[k] + bin_s - fault.start_s
    i_rec = len(t) if k is None else max(k + 1, i_end + 1)  # the fault's window at least
    span = slice(i_start, i_rec)

    drained = math.nan
    peak, peak_station = math.nan, ""
    peaks: dict[str, float] = {}
    if queues is not None and not queues.empty:
        total_q = queues.groupby("t_s", sort=True)["queue"].sum()
        before = total_q[total_q.index < fault.start_s]
        level = max(DRAIN_FACTOR * float(before.mean()) if len(before) else 0.0, DRAIN_FLOOR)
        after = total_q[total_q.index >= t[i_end]]
        back = after[after <= level]
        if len(back):
            drained = max(0.0, float(back.index[0]) + bin_s - fault.end_s)
        t1 = t[i_rec - 1] + bin_s
        peaks = peak_queues(queues, fault.start_s, t1)
        if peaks:
            peak_station = max(peaks, key=lambda s: peaks[s])
            peak = peaks[peak_station]

    amp = math.nan
    if "attempts" in bins.columns:
        amp = _ratio(float(bins["attempts"].to_numpy(dtype=float)[span].sum()),
                     float(total[span].sum()))

    def avail(a: int, b: int) -> float:
        return _ratio(float(ok[a:b].sum()), float(total[a:b].sum()))

    return {
        "fault": fault.name, "operation": operation, "kind": fault.kind, "target": fault.target,
        "start_s": fault.start_s, "end_s": fault.end_s, "slo_p99_ms": float(slo_p99_ms),
        "window_s": float(window_s), "recovered": recovered,
        "detect_s": detect, "resume_s": resume, "slo_restored_s": restored,
        "drained_s": drained,
        "failed": float(bins["failed"].to_numpy(dtype=float)[span].sum()),
        "timed_out": float(bins["timed_out"].to_numpy(dtype=float)[span].sum()),
        "shed": float(bins["shed"].to_numpy(dtype=float)[span].sum()),
        "lost_transactions": float(lost_transactions),
        "retry_amplification": amp, "peak_queue": peak, "peak_queue_station": peak_station,
        "peak_queues": peaks,
        "replicas_added": float(replicas_added),
        "availability_before": avail(0, i_start),
        "availability_fault": avail(i_start, i_end),
        "availability_recovery": avail(i_end, i_rec),
        "availability_after": avail(i_rec, len(t)),
        "p99_ok_ms": float(p99_ok_ms),
    }


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    x = values[np.isfinite(values)]
    if len(x) == 0:
        return math.nan, math.nan
    return confidence_interval(x)


def peak_queue_table(rows: list[Mapping[str, object]]) -> dict[str, dict[str, dict[str, float]]]:
    """architecture -> fault -> station -> peak queue, the mean over replications of the
    largest peak any operation's span saw (rows of :func:`recovery_row` with ``architecture``
    and ``replication``)."""
    best: dict[tuple[str, str, int], dict[str, float]] = {}
    for r in rows:
        key = (str(r["architecture"]), str(r["fault"]), int(r.get("replication", 0)))
        cur = best.setdefault(key, {})
        for st, v in dict(r.get("peak_queues") or {}).items():
            cur[st] = max(cur.get(st, -math.inf), float(v))
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for (arch, fault, _rep), peaks in best.items():
        for st, v in peaks.items():
            acc.setdefault(arch, {}).setdefault(fault, {}).setdefault(st, []).append(v)
    return {a: {f: {st: float(np.mean(v)) for st, v in sorted(sts.items())}
                for f, sts in fs.items()} for a, fs in acc.items()}


def aggregate_recovery(rows: pd.DataFrame | list[Mapping[str, object]]) -> pd.DataFrame:
    """The ``recovery`` table: per-replication rows (each with ``architecture`` and the fields
    of :func:`recovery_row`) -> one row per (architecture, fault, operation), means and 95%
    half-widths.

    Recovery times (``slo_restored_s``, ``drained_s``) are averaged over the replications that
    recovered; ``recovered_share`` says how many did.
    """
    df = pd.DataFrame(list(rows)) if not isinstance(rows, pd.DataFrame) else rows
    if df.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in RECOVERY_COLUMNS})
    out = []
    if "operation" not in df.columns:
        df = df.assign(operation="all")
    for (arch, name, op), g in df.groupby(["architecture", "fault", "operation"], sort=False):
        first = g.iloc[0]
        rec = g["recovered"].to_numpy(dtype=bool)
        row: dict[str, object] = {
            "architecture": arch, "fault": name, "operation": op, "kind": first["kind"],
            "target": first["target"], "start_s": float(first["start_s"]),
            "end_s": float(first["end_s"]), "slo_p99_ms": float(first["slo_p99_ms"]),
            "window_s": float(first["window_s"]), "replications": len(g),
            "recovered_share": float(rec.mean()),
        }
        for m in RECOVERY_METRICS:
            vals = g[m].to_numpy(dtype=float)
            if m in ("slo_restored_s", "drained_s"):
                vals = vals[rec]
            row[m], row[f"{m}_ci"] = _mean_ci(vals)
        stations = g["peak_queue_station"][g["peak_queue_station"] != ""]
        row["peak_queue_station"] = stations.mode().iloc[0] if len(stations) else ""
        out.append(row)
    return pd.DataFrame(out, columns=list(RECOVERY_COLUMNS))
