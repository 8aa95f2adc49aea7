"""Closed-form and exact numerical results of queueing theory, to validate the engine against.

All rates and times are in the caller's unit (rates per second with times in seconds, or
per millisecond with milliseconds). Invalid or unstable input raises ``ValueError`` naming the
offending argument.

* M/M/1, M/M/c (Erlang B and C, stable for thousands of servers), their waiting- and
  response-time quantiles;
* M/G/1 by the Pollaczek-Khinchine formula;
* open Jackson networks of M/M/c (and infinite-server) stations;
* closed product-form networks by exact mean value analysis (single-server queues and delay
  stations, plus a load-dependent variant exact for multi-server stations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize

StationKind = Literal["queue", "delay"]


@dataclass(frozen=True)
class QueueMetrics:
    """Steady-state means of one queue.

    ``rho`` is the per-server utilisation, ``p_wait`` the probability an arrival waits,
    ``lq``/``l`` the mean number waiting/in the system, ``wq``/``w`` the mean wait/response.
    """

    rho: float
    p_wait: float
    lq: float
    l: float  # noqa: E741 - standard queueing notation
    wq: float
    w: float


@dataclass(frozen=True)
class StationMetrics:
    """One station of an open Jackson network (``servers`` is ``math.inf`` for a delay)."""

    index: int
    arrival_rate: float
    visit_ratio: float
    servers: float
    rho: float
    p_wait: float
    lq: float
    l: float  # noqa: E741 - standard queueing notation
    wq: float
    w: float


@dataclass(frozen=True)
class MVAResult:
    """Exact MVA solution of a closed network with ``n_customers`` customers.

    ``throughput`` is the system throughput X(N) (cycles per time unit), ``response_time`` the
    mean time per cycle spent at the stations (think time excluded); per-station arrays hold
    residence time (per cycle, all visits), mean queue length and utilisation (for a delay
    station: mean number present). ``throughput_by_n[n-1]`` is X(n) for n = 1..N.
    """

    n_customers: int
    throughput: float
    response_time: float
    think_time: float
    residence_times: np.ndarray
    queue_lengths: np.ndarray
    utilizations: np.ndarray
    throughput_by_n: np.ndarray


# ---------------------------------------------------------------------- validation helpers


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name}: must be positive and finite, got {value}")
    return v


def _non_negative(name: str, value: float) -> float:
    v = float(value)
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name}: must be non-negative and finite, got {value}")
    return v


def _servers(name: str, c: int) -> int:
    if isinstance(c, bool) or int(c) != c or c < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {c}")
    return int(c)


def _quantile_level(q: float) -> float:
    v = float(q)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"q: must be in [0, 1), got {q}")
    return v


def _stable(lam: float, capacity: float, what: str) -> float:
    rho = lam / capacity
    if rho >= 1.0:
        raise ValueError(f"lam: {what} is unstable, utilisation rho = {rho:.6g} >= 1")
    return rho


# ---------------------------------------------------------------------- M/M/1


def mm1(lam: float, mu: float) -> QueueMetrics:
    """M/M/1 with arrival rate ``lam`` and service rate ``mu``."""
    return mmc(lam, mu, 1)


def mm1_wait_quantile(lam: float, mu: float, q: float) -> float:
    """q-quantile of the M/M/1 waiting time: P(Wq > t) = rho exp(-(mu - lam) t)."""
    return mmc_wait_quantile(lam, mu, 1, q)


def mm1_response_quantile(lam: float, mu: float, q: float) -> float:
    """q-quantile of the M/M/1 response time, which is exponential with rate mu - lam."""
    lam = _non_negative("lam", lam)
    mu = _positive("mu", mu)
    q = _quantile_level(q)
    _stable(lam, mu, "M/M/1")
    return -math.log1p(-q) / (mu - lam)


# ---------------------------------------------------------------------- Erlang B / C, M/M/c


def erlang_b(c: int, a: float) -> float:
    """Erlang B blocking probability for ``c`` servers and offered load ``a`` (Erlangs).

    Computed with the recursion B(k) = a B(k-1) / (k + a B(k-1)), B(0) = 1, which never
    overflows and stays accurate for tens of thousands of servers.
    """
    c = _servers("c", c)
    a = _non_negative("a", a)
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(c: int, a: float) -> float:
    """Erlang C: probability that an arrival waits in M/M/c with offered load ``a`` < c.

    C = B / (1 - rho (1 - B)) with rho = a / c and B the Erlang B value.
    """
    c = _servers("c", c)
    a = _non_negative("a", a)
    rho = a / c
    if rho >= 1.0:
        raise ValueError(f"a: offered load {a} must be below the number of servers {c}")
    b = erlang_b(c, a)
    return b / (1.0 - rho * (1.0 - b))


def mmc(lam: float, mu: float, c: int) -> QueueMetrics:
    """M/M/c with arrival rate ``lam``, per-server service rate ``mu`` and ``c`` servers."""
    lam = _non_negative("lam", lam)
    mu = _positive("mu", mu)
    c = _servers("c", c)
    rho = _stable(lam, c * mu, f"M/M/{c}")
    a = lam / mu
    pw = erlang_c(c, a)
    wq = pw / (c * mu - lam)
    lq = lam * wq
    return QueueMetrics(rho=rho, p_wait=pw, lq=lq, l=lq + a, wq=wq, w=wq + 1.0 / mu)


def mmc_wait_quantile(lam: float, mu: float, c: int, q: float) -> float:
    """q-quantile of the M/M/c waiting time: P(Wq > t) = C exp(-(c mu - lam) t), 0 below 1-C."""
    lam = _non_negative("lam", lam)
    mu = _positive("mu", mu)
    c = _servers("c", c)
    q = _quantile_level(q)
    _stable(lam, c * mu, f"M/M/{c}")
    pw = erlang_c(c, lam / mu)
    if 1.0 - q >= pw:
        return 0.0
    return math.log(pw / (1.0 - q)) / (c * mu - lam)


def _mmc_response_survival(t: float, mu: float, theta: float, pw: float) -> float:
    """P(W > t) for W = Wq + S, S ~ Exp(mu), Wq = 0 w.p. 1 - pw else Exp(theta)."""
    e_mu = math.exp(-mu * t)
    # Exp(a) + Exp(b), a <= b: survival e^{-a t} (1 + a t g((b - a) t)), g(x) = (1 - e^{-x}) / x,
    # free of overflow and cancellation (also when a == b, where g = 1: Erlang-2).
    a, b = min(mu, theta), max(mu, theta)
    x = (b - a) * t
    g = 1.0 if x == 0.0 else -math.expm1(-x) / x
    hypo = math.exp(-a * t) * (1.0 + a * t * g)
    return (1.0 - pw) * e_mu + pw * hypo


def mmc_response_quantile(lam: float, mu: float, c: int, q: float) -> float:
    """q-quantile of the M/M/c response time, by root finding on its exact distribution."""
    lam = _non_negative("lam", lam)
    mu = _positive("mu", mu)
    c = _servers("c", c)
    q = _quantile_level(q)
    _stable(lam, c * mu, f"M/M/{c}")
    if q == 0.0:
        return 0.0
    pw = erlang_c(c, lam / mu)
    theta = c * mu - lam
    target = 1.0 - q

    def f(t: float) -> float:
        return _mmc_response_survival(t, mu, theta, pw) - target

    hi = 1.0 / min(mu, theta)
    while f(hi) > 0.0:
        hi *= 2.0
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-14 * hi, rtol=1e-12))


# ---------------------------------------------------------------------- M/G/1


def mg1(lam: float, mean_s: float, scv: float) -> QueueMetrics:
    """M/G/1 means by Pollaczek-Khinchine: Wq = rho (1 + scv) mean_s / (2 (1 - rho)).

    ``mean_s`` is the mean service time and ``scv`` its squared coefficient of variation
    (1 exponential, 0 deterministic).
    """
    lam = _non_negative("lam", lam)
    mean_s = _positive("mean_s", mean_s)
    scv = _non_negative("scv", scv)
    rho = _stable(lam, 1.0 / mean_s, "M/G/1")
    wq = rho * (1.0 + scv) * mean_s / (2.0 * (1.0 - rho))
    return QueueMetrics(rho=rho, p_wait=rho, lq=lam * wq, l=lam * (wq + mean_s), wq=wq,
                        w=wq + mean_s)


# ---------------------------------------------------------------------- open Jackson networks


def jackson_open(external_rates: Sequence[float] | np.ndarray,
                 routing: Sequence[Sequence[float]] | np.ndarray,
                 service_rates: Sequence[float] | np.ndarray,
                 servers: Sequence[float] | np.ndarray) -> list[StationMetrics]:
    """Solve an open Jackson network; each station is M/M/c (or a delay if servers = inf).

    ``routing[i][j]`` is the probability of going to station j after i (rows may sum to less
    than 1: the rest leaves). The traffic equations lambda = gamma + P^T lambda are solved
    exactly; ``visit_ratio`` is lambda_i over the total external rate.
    """
    gamma = np.asarray(external_rates, dtype=float)
    p = np.asarray(routing, dtype=float)
    mus = np.asarray(service_rates, dtype=float)
    cs = np.asarray(servers, dtype=float)
    k = len(gamma)
    if gamma.ndim != 1 or k == 0:
        raise ValueError("external_rates: expected a non-empty one-dimensional sequence")
    if (gamma < 0).any() or not np.isfinite(gamma).all() or gamma.sum() <= 0:
        raise ValueError("external_rates: must be non-negative, finite, with a positive total")
    if p.shape != (k, k):
        raise ValueError(f"routing: expected shape ({k}, {k}), got {p.shape}")
    if (p < 0).any() or (p.sum(axis=1) > 1.0 + 1e-12).any():
        raise ValueError("routing: probabilities must be >= 0 with each row summing to <= 1")
    if mus.shape != (k,) or not (mus > 0).all() or not np.isfinite(mus).all():
        raise ValueError(f"service_rates: expected {k} positive finite rates")
    if cs.shape != (k,):
        raise ValueError(f"servers: expected {k} entries")
    for i, c in enumerate(cs):
        if not (math.isinf(c) or (c >= 1 and c == int(c))):
            raise ValueError(f"servers[{i}]: must be an integer >= 1 or inf, got {c}")
    a_mat = np.eye(k) - p.T
    if abs(np.linalg.det(a_mat)) < 1e-12:
        raise ValueError("routing: customers never leave the network (I - P^T is singular)")
    lam = np.linalg.solve(a_mat, gamma)
    if (lam < -1e-9).any():
        raise ValueError("routing: traffic equations give negative rates")
    lam = np.maximum(lam, 0.0)
    total = float(gamma.sum())
    out = []
    for i in range(k):
        if math.isinf(cs[i]):
            w = 1.0 / mus[i]
            out.append(StationMetrics(i, float(lam[i]), float(lam[i]) / total, math.inf, 0.0,
                                      0.0, 0.0, float(lam[i]) * w, 0.0, w))
            continue
        try:
            m = mmc(lam[i], mus[i], int(cs[i]))
        except ValueError as exc:
            raise ValueError(f"service_rates[{i}]: station {i} is unstable "
                             f"(arrival rate {lam[i]:.6g}): {exc}") from None
        out.append(StationMetrics(i, float(lam[i]), float(lam[i]) / total, float(cs[i]),
                                  m.rho, m.p_wait, m.lq, m.l, m.wq, m.w))
    return out


def jackson_response_time(stations: Sequence[StationMetrics],
                          external_rates: Sequence[float] | np.ndarray) -> float:
    """Mean time an external customer spends in the network: sum of L over total gamma."""
    total = float(np.sum(np.asarray(external_rates, dtype=float)))
    if not total > 0:
        raise ValueError("external_rates: total must be positive")
    return sum(s.l for s in stations) / total


# ---------------------------------------------------------------------- closed networks (MVA)


def _kinds(station_kinds: Sequence[StationKind] | None, k: int) -> list[StationKind]:
    if station_kinds is None:
        return ["queue"] * k
    kinds = list(station_kinds)
    if len(kinds) != k:
        raise ValueError(f"station_kinds: expected {k} entries, got {len(kinds)}")
    for i, kind in enumerate(kinds):
        if kind not in ("queue", "delay"):
            raise ValueError(f"station_kinds[{i}]: must be 'queue' or 'delay', got {kind!r}")
    return kinds


def _demands(demands: Sequence[float] | np.ndarray) -> np.ndarray:
    d = np.asarray(demands, dtype=float)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("demands: expected a non-empty one-dimensional sequence")
    if (d < 0).any() or not np.isfinite(d).all():
        raise ValueError("demands: must be non-negative and finite")
    return d


def _customers(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n_customers: must be an integer >= 1, got {n}")
    return int(n)


def mva_closed(n_customers: int, demands: Sequence[float] | np.ndarray,
               think_time: float = 0.0,
               station_kinds: Sequence[StationKind] | None = None) -> MVAResult:
    """Exact mean value analysis of a single-class closed product-form network.

    ``demands[k]`` is the total service demand per cycle at station k (visits times service
    time); stations are single-server queues (FCFS exponential or processor sharing) or
    ``"delay"`` (infinite-server) stations; ``think_time`` is a delay outside the stations.
    """
    n = _customers(n_customers)
    d = _demands(demands)
    z = _non_negative("think_time", think_time)
    is_queue = np.array([kind == "queue" for kind in _kinds(station_kinds, len(d))])
    if d.sum() + z <= 0:
        raise ValueError("demands: total demand plus think_time must be positive")
    q = np.zeros(len(d))
    xs = np.empty(n)
    r = d.copy()
    x = 0.0
    for m in range(1, n + 1):
        r = np.where(is_queue, d * (1.0 + q), d)
        x = m / (z + r.sum())
        q = x * r
        xs[m - 1] = x
    return MVAResult(n_customers=n, throughput=float(x), response_time=float(r.sum()),
                     think_time=z, residence_times=r, queue_lengths=q, utilizations=x * d,
                     throughput_by_n=xs)


def mva_closed_multiserver(n_customers: int, demands: Sequence[float] | np.ndarray,
                           servers: Sequence[float] | np.ndarray,
                           think_time: float = 0.0) -> MVAResult:
    """Exact load-dependent MVA for closed networks of M/M/c stations (servers inf = delay).

    Station k with c_k servers serves at rate min(j, c_k) / D_k with j customers present.
    Keeps the marginal probabilities p_k(j | n) (Reiser and Lavenberg):
    R_k(n) = D_k sum_j j / min(j, c_k) p_k(j-1 | n-1) and
    p_k(j | n) = X(n) D_k / min(j, c_k) p_k(j-1 | n-1). Utilisation is X D_k / c_k.
    Fine for up to a few hundred customers (p_k(0 | n) is obtained by complement).
    """
    n = _customers(n_customers)
    d = _demands(demands)
    z = _non_negative("think_time", think_time)
    cs = np.asarray(servers, dtype=float)
    if cs.shape != d.shape:
        raise ValueError(f"servers: expected {len(d)} entries, got {cs.shape}")
    for i, c in enumerate(cs):
        if not (math.isinf(c) or (c >= 1 and c == int(c))):
            raise ValueError(f"servers[{i}]: must be an integer >= 1 or inf, got {c}")
    if d.sum() + z <= 0:
        raise ValueError("demands: total demand plus think_time must be positive")
    k = len(d)
    delay = np.isinf(cs)
    j = np.arange(1, n + 1, dtype=float)
    # alpha[k, j-1] = min(j, c_k): service-rate multiplier with j customers present
    alpha = np.minimum(j[None, :], np.where(delay, np.inf, cs)[:, None])
    p = np.zeros((k, n + 1))
    p[:, 0] = 1.0
    xs = np.empty(n)
    r = d.copy()
    x = 0.0
    q = np.zeros(k)
    for m in range(1, n + 1):
        weights = j[:m] / alpha[:, :m]  # j / min(j, c)
        r = np.where(delay, d, d * (weights * p[:, :m]).sum(axis=1))
        x = m / (z + r.sum())
        q = x * r
        new = np.zeros_like(p)
        new[:, 1 : m + 1] = x * d[:, None] / alpha[:, :m] * p[:, :m]
        new[:, 0] = np.maximum(1.0 - new[:, 1 : m + 1].sum(axis=1), 0.0)
        p = new
        xs[m - 1] = x
    util = np.where(delay, x * d, x * d / np.where(delay, 1.0, cs))
    return MVAResult(n_customers=n, throughput=float(x), response_time=float(r.sum()),
                     think_time=z, residence_times=r, queue_lengths=q, utilizations=util,
                     throughput_by_n=xs)


def mva_think_time_for_throughput(n_customers: int, demands: Sequence[float] | np.ndarray,
                                  throughput: float,
                                  station_kinds: Sequence[StationKind] | None = None) -> float:
    """Think time Z at which the closed network of :func:`mva_closed` reaches ``throughput``.

    X(N) falls strictly as Z grows, so Z is found by root finding. Useful to place the
    bottleneck at a chosen utilisation: ``throughput = rho / max(demands)``. Raises when the
    target is not reachable even with Z = 0.
    """
    n = _customers(n_customers)
    target = _positive("throughput", throughput)
    x0 = mva_closed(n, demands, 0.0, station_kinds).throughput
    if target >= x0:
        raise ValueError(f"throughput: {target:.6g} is not below X(N) = {x0:.6g} at zero think "
                         "time")

    def f(z: float) -> float:
        return mva_closed(n, demands, z, station_kinds).throughput - target

    hi = n / target  # X <= N / Z, so f(hi) < 0
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-12 * hi, rtol=1e-12))


@dataclass(frozen=True)
class MixedResult:
    """A mixed network of single-server processor-sharing stations: closed class throughput
    and response (think time excluded), open class response, per-station residence times."""

    closed_throughput: float
    closed_response: float
    open_response: float
    open_residence: np.ndarray
    closed_residence: np.ndarray


def mva_mixed(n_customers: int, closed_demands: Sequence[float] | np.ndarray, think_time: float,
              open_rate: float, open_demands: Sequence[float] | np.ndarray) -> MixedResult:
    """Exact MVA of a mixed product-form network (one closed and one open class) of
    single-server processor-sharing stations (Lazowska et al., *Quantitative System
    Performance*, 1984, ch. 7): the open class takes ``U_o,k = open_rate * D_o,k`` of each
    station, the closed class is solved by MVA on demands inflated by ``1 / (1 - U_o,k)``,
    and an open request's residence is ``D_o,k (1 + Q_c,k) / (1 - U_o,k)``."""
    dc = _demands(closed_demands)
    do = _demands(open_demands)
    if dc.shape != do.shape:
        raise ValueError("closed_demands and open_demands: one value per station each")
    n = _customers(n_customers)
    _non_negative("think_time", think_time)
    _non_negative("open_rate", open_rate)
    u_open = open_rate * do
    if np.any(u_open >= 1.0):
        raise ValueError(f"open_rate: open utilisation {u_open.max():.3f} >= 1 (unstable)")
    inflated = dc / (1.0 - u_open)
    closed = mva_closed(n, inflated, think_time=think_time)
    r_open = do * (1.0 + closed.queue_lengths) / (1.0 - u_open)
    return MixedResult(closed.throughput, closed.response_time, float(r_open.sum()), r_open,
                       closed.residence_times)
