"""Output analysis for simulation runs: warm-up truncation, confidence intervals, stopping rules.

Conventions used throughout the simulator:

* **Independent replications.** Every reported number is estimated once per replication
  (each replication runs on its own random stream), and the confidence interval is the Student
  t interval over those per-replication estimates, with n - 1 degrees of freedom.
* **Percentiles.** A latency percentile is computed *within* one replication from all of its
  (post-warm-up) samples with :func:`percentile`; the interval then comes from the
  per-replication percentile estimates. Percentiles are never averaged inside a replication
  and histograms are not merged across replications: the replication estimates are i.i.d.,
  which is what the t interval needs, and each is a consistent estimator of the true quantile.
* **Warm-up.** The initial transient is cut with MSER-5 (White, 1997; White, Cobb and Spratt,
  2000), see :func:`mser5`; :func:`mser5_time` applies it to a stream of observations stamped
  with completion times and returns the cut as a time.
* **Sequential precision.** :func:`replications_needed` and :class:`SequentialStopper` implement
  the classic rule n* = n (h / h*)^2 for reaching a relative half-width target (Law and Kelton).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

BATCH = 5
PERCENTILE_METHOD = "linear"


def _as_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a one-dimensional sequence, got shape {arr.shape}")
    return arr


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must be in (0, 1), got {level}")


def mser5(series: Sequence[float] | np.ndarray) -> int:
    """Warm-up cut by MSER-5; returns the number of ORIGINAL observations to discard.

    The series is grouped into consecutive batches of 5 and replaced by the batch means
    Z_1..Z_m (a trailing partial batch is ignored). For each truncation d (in batches) the
    marginal standard error is ``MSER(d) = sum_{i>d} (Z_i - mean(Z_{d+1..m}))^2 / (m - d)^2``;
    the d minimising it over the first half of the series (d <= m / 2, and at least two batches
    are always kept) is chosen, the earliest one on ties. The result is ``5 * d``. Series of
    fewer than two batches are not truncated. NaN entries are not allowed (drop or fill them first).
    """
    x = _as_1d(series, "series")
    if np.isnan(x).any():
        raise ValueError("series: contains NaN")
    m = len(x) // BATCH
    if m < 2:
        return 0
    z = x[: m * BATCH].reshape(m, BATCH).mean(axis=1)
    z = z - z.mean()  # centre to limit cancellation in the sum-of-squares identity
    s1 = np.cumsum(z[::-1])[::-1]  # s1[d] = sum of z[d:]
    s2 = np.cumsum((z * z)[::-1])[::-1]
    d_max = min(m // 2, m - 2)
    d = np.arange(d_max + 1)
    k = (m - d).astype(float)
    sse = np.maximum(s2[: d_max + 1] - s1[: d_max + 1] ** 2 / k, 0.0)
    mser = sse / (k * k)
    return int(np.argmin(mser)) * BATCH


def mser5_time(times: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray,
               bin_s: float) -> float:
    """MSER-5 cut time (seconds) for observations ``values`` stamped with ``times``.

    Observations are averaged into bins of ``bin_s`` seconds starting at time 0 (for example
    response times by completion time); empty bins are skipped; MSER-5 runs on the series of
    bin means and the start time of the first retained bin is returned (0.0 for no cut).
    """
    if not bin_s > 0:
        raise ValueError(f"bin_s: must be positive, got {bin_s}")
    t = _as_1d(times, "times")
    v = _as_1d(values, "values")
    if len(t) != len(v):
        raise ValueError(f"values: length {len(v)} differs from times length {len(t)}")
    if len(t) == 0:
        return 0.0
    if (t < 0).any():
        raise ValueError("times: must be non-negative")
    idx = np.floor(t / bin_s).astype(np.int64)
    counts = np.bincount(idx)
    sums = np.bincount(idx, weights=v)
    occupied = np.flatnonzero(counts)
    means = sums[occupied] / counts[occupied]
    cut = mser5(means)
    if cut == 0:
        return 0.0
    return float(occupied[cut] * bin_s)


def confidence_interval(values: Sequence[float] | np.ndarray,
                        level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student t interval over independent replications.

    The half-width is ``t_{(1+level)/2, n-1} * s / sqrt(n)``; it is NaN for a single value.
    """
    _check_level(level)
    x = _as_1d(values, "values")
    n = len(x)
    if n == 0:
        raise ValueError("values: need at least one replication")
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan
    sd = float(x.std(ddof=1))
    t = float(stats.t.ppf(0.5 + level / 2.0, n - 1))
    return mean, t * sd / math.sqrt(n)


def relative_half_width(values: Sequence[float] | np.ndarray, level: float = 0.95) -> float:
    """Half-width of the confidence interval divided by the absolute mean (inf at mean 0)."""
    mean, hw = confidence_interval(values, level)
    if math.isnan(hw):
        return math.nan
    if mean == 0.0:
        return 0.0 if hw == 0.0 else math.inf
    return hw / abs(mean)


def replications_needed(values: Sequence[float] | np.ndarray, precision: float,
                        level: float = 0.95) -> int:
    """Total replications estimated to reach a relative half-width of ``precision``.

    Uses the classic n* = ceil(n (h / h*)^2) with h the current relative half-width. Returns
    n when the target is already met, and at least n + 1 otherwise (also when the current
    half-width cannot be estimated, i.e. fewer than two values or a zero mean).
    """
    if not precision > 0:
        raise ValueError(f"precision: must be positive, got {precision}")
    n = len(_as_1d(values, "values"))
    if n < 2:
        return n + 1
    h = relative_half_width(values, level)
    if math.isnan(h) or math.isinf(h):
        return n + 1
    if h <= precision:
        return n
    return max(n + 1, math.ceil(n * (h / precision) ** 2))


def percentile(samples: Sequence[float] | np.ndarray,
               q: float | Sequence[float]) -> float | np.ndarray:
    """Percentile(s) ``q`` (in percent, 0..100) of one replication's samples.

    Uses numpy's ``linear`` method (Hyndman and Fan type 7: linear interpolation between the
    order statistics at rank ``(n - 1) q / 100``). Returns NaN (or NaNs) for no samples.
    """
    x = _as_1d(samples, "samples")
    qs = np.asarray(q, dtype=float)
    if ((qs < 0) | (qs > 100)).any():
        raise ValueError(f"q: percentiles must be within 0..100, got {q}")
    if len(x) == 0:
        return math.nan if qs.ndim == 0 else np.full(qs.shape, math.nan)
    res = np.percentile(x, qs, method=PERCENTILE_METHOD)
    return float(res) if qs.ndim == 0 else res


@dataclass(frozen=True)
class StopDecision:
    """Outcome of one check of :class:`SequentialStopper`."""

    done: bool
    replications: int
    additional: int
    capped: bool
    relative_half_widths: dict[str, float] = field(default_factory=dict)
    worst_metric: str | None = None


@dataclass(frozen=True)
class SequentialStopper:
    """Decides whether independent replications reached a relative precision on every metric.

    ``precision`` is the target relative half-width (0.05 for 5%), ``max_replications`` the
    cap. Metrics whose estimates are all NaN are ignored; NaN entries are dropped.
    """

    precision: float
    max_replications: int
    level: float = 0.95
    min_replications: int = 2

    def __post_init__(self) -> None:
        if not self.precision > 0:
            raise ValueError(f"precision: must be positive, got {self.precision}")
        if self.min_replications < 2:
            raise ValueError(f"min_replications: must be at least 2, got {self.min_replications}")
        if self.max_replications < self.min_replications:
            raise ValueError(
                f"max_replications: must be >= min_replications ({self.min_replications}), "
                f"got {self.max_replications}")
        _check_level(self.level)

    def decide(self, estimates: Mapping[str, Sequence[float]]) -> StopDecision:
        """Check per-replication ``estimates`` (metric name -> one value per replication)."""
        lengths = {len(v) for v in estimates.values()}
        if len(lengths) > 1:
            raise ValueError(f"estimates: metrics have different replication counts {lengths}")
        n = lengths.pop() if lengths else 0
        widths: dict[str, float] = {}
        needed = max(n, self.min_replications)
        for name, vals in estimates.items():
            arr = _as_1d(vals, f"estimates[{name!r}]")
            arr = arr[~np.isnan(arr)]
            if len(arr) == 0:
                continue
            widths[name] = relative_half_width(arr) if len(arr) > 1 else math.nan
            if len(arr) >= 2:
                needed = max(needed, replications_needed(arr, self.precision, self.level)
                             + (n - len(arr)))
            else:
                needed = max(needed, n + 1)
        worst = max(widths, key=lambda k: _nan_high(widths[k])) if widths else None
        met = n >= self.min_replications and needed <= n
        capped = not met and n >= self.max_replications
        additional = 0 if met or capped else min(needed, self.max_replications) - n
        return StopDecision(done=met or capped, replications=n, additional=additional,
                            capped=capped, relative_half_widths=widths, worst_metric=worst)


def _nan_high(x: float) -> float:
    return math.inf if math.isnan(x) else x
