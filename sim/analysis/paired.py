"""Paired comparisons between deployments simulated on common random numbers.

Replication r of every deployment sees the same arrivals and, wherever the paths agree, the
same per-request demands (``sim/engine/demands.py``). The difference ``B_r - A_r`` of an
estimate (mean or p99 latency of an operation) between deployments A and B is then one
observation per replication, and the paired Student t interval over those differences is
much narrower than what the two marginal intervals say: the noise both deployments share
cancels. The unpaired (Welch) interval on the same estimates is given beside it, to show how
much the pairing bought.

A deployment is named better only where the paired 95% interval excludes zero.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from sim.analysis.output_analysis import confidence_interval

#: Estimates compared between deployments, per operation.
PAIRED_METRICS = ("mean_ms", "p99_ms")
LEVEL = 0.95
COLUMNS = ("reference", "architecture", "operation", "metric", "difference", "ci", "lower",
           "upper", "unpaired_ci", "replications", "better")


def welch_half_width(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> float:
    """Half-width of the Welch (unpaired) interval for ``mean(b) - mean(a)``."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return math.nan
    va, vb = float(a.var(ddof=1)) / na, float(b.var(ddof=1)) / nb
    se2 = va + vb
    if se2 == 0.0:
        return 0.0
    dof = se2 ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return float(stats.t.ppf(0.5 + level / 2.0, dof)) * math.sqrt(se2)


def paired_differences(per_rep: pd.DataFrame, order: list[str] | None = None,
                       metrics: tuple[str, ...] = PAIRED_METRICS) -> pd.DataFrame:
    """Paired differences between every pair of deployments, per operation and metric.

    ``per_rep`` has one row per (architecture, replication, operation) with the metric
    columns. For each pair (A, B), A before B in ``order`` (default: order of appearance),
    ``difference`` is the mean over common replications of ``B_r - A_r`` (positive: B slower),
    ``ci`` its paired t half-width, ``unpaired_ci`` the Welch half-width on the same estimates;
    ``better`` names the faster deployment when the paired interval excludes zero, else "".
    """
    archs = order or list(dict.fromkeys(per_rep["architecture"]))
    rows = []
    for i, a in enumerate(archs):
        for b in archs[i + 1:]:
            for op in dict.fromkeys(per_rep["operation"]):
                for m in metrics:
                    rows.append(_pair(per_rep, a, b, op, m))
    return pd.DataFrame([r for r in rows if r is not None], columns=list(COLUMNS))


def _pair(per_rep: pd.DataFrame, a: str, b: str, op: str, metric: str) -> dict | None:
    sel = per_rep[per_rep["operation"] == op]
    xa = sel[sel["architecture"] == a].set_index("replication")[metric]
    xb = sel[sel["architecture"] == b].set_index("replication")[metric]
    both = pd.concat([xa.rename("a"), xb.rename("b")], axis=1, join="inner").dropna()
    if len(both) == 0:
        return None
    d = (both["b"] - both["a"]).to_numpy(dtype=float)
    diff, hw = confidence_interval(d, LEVEL)
    better = ""
    if not math.isnan(hw) and (diff - hw > 0 or diff + hw < 0):
        better = a if diff > 0 else b
    return {"reference": a, "architecture": b, "operation": op, "metric": metric,
            "difference": diff, "ci": hw, "lower": diff - hw, "upper": diff + hw,
            "unpaired_ci": welch_half_width(both["a"].to_numpy(float), both["b"].to_numpy(float)),
            "replications": len(both), "better": better}
