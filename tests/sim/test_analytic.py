"""Queueing formulas checked against textbook values and brute-force Markov chain solutions."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse, stats
from scipy.sparse import linalg as splinalg

from sim.analysis import analytic

# ---------------------------------------------------------------------- brute-force solvers


def _birth_death_mmc(lam: float, mu: float, c: int, tail: float = 1e-20) -> dict[str, float]:
    """Stationary M/M/c by the birth-death product formula, truncated where negligible."""
    probs = [1.0]
    n = 0
    while True:
        n += 1
        probs.append(probs[-1] * lam / (mu * min(n, c)))
        if n > c and probs[-1] < tail * sum(probs):
            break
    pi = np.array(probs) / sum(probs)
    ns = np.arange(len(pi))
    return {"p_wait": float(pi[c:].sum()), "l": float((ns * pi).sum()),
            "lq": float((np.maximum(ns - c, 0) * pi).sum())}


def _stationary(rows: list[int], cols: list[int], rates: list[float], n: int) -> np.ndarray:
    """Stationary vector of the CTMC with off-diagonal generator entries (row, col, rate)."""
    q = sparse.coo_matrix((rates, (rows, cols)), shape=(n, n)).tocsr()
    q = q - sparse.diags(np.asarray(q.sum(axis=1)).ravel())
    a = q.T.tolil()
    a[0, :] = np.ones(n)
    b = np.zeros(n)
    b[0] = 1.0
    return splinalg.spsolve(a.tocsc(), b)


def _open_network_ctmc(gamma: list[float], routing: np.ndarray, mus: list[float],
                       cs: list[int], cap: int) -> np.ndarray:
    """Mean number at each station of an open Markovian network, state space truncated."""
    k = len(gamma)
    states = list(itertools.product(range(cap + 1), repeat=k))
    index = {s: i for i, s in enumerate(states)}
    rows: list[int] = []
    cols: list[int] = []
    rates: list[float] = []

    def add(src: tuple[int, ...], dst: list[int], rate: float) -> None:
        if rate > 0 and all(0 <= v <= cap for v in dst):
            rows.append(index[src])
            cols.append(index[tuple(dst)])
            rates.append(rate)

    for s in states:
        for i in range(k):
            add(s, [v + (j == i) for j, v in enumerate(s)], gamma[i])
            if s[i] == 0:
                continue
            out = mus[i] * min(s[i], cs[i])
            leave = 1.0 - routing[i].sum()
            add(s, [v - (j == i) for j, v in enumerate(s)], out * leave)
            for dst in range(k):
                if dst == i:
                    continue  # self-loop: state unchanged
                add(s, [v - (j == i) + (j == dst) for j, v in enumerate(s)],
                    out * routing[i, dst])
    pi = _stationary(rows, cols, rates, len(states))
    arr = np.array(states, dtype=float)
    return pi @ arr


def _closed_cycle_ctmc(n: int, service_times: list[float], servers: list[float]) -> dict:
    """Closed cyclic network (0 -> 1 -> ... -> 0) solved as a CTMC; inf servers = delay."""
    k = len(service_times)
    states = [s for s in itertools.product(range(n + 1), repeat=k) if sum(s) == n]
    index = {s: i for i, s in enumerate(states)}
    rows: list[int] = []
    cols: list[int] = []
    rates: list[float] = []
    for s in states:
        for i in range(k):
            if s[i] == 0:
                continue
            dst = list(s)
            dst[i] -= 1
            dst[(i + 1) % k] += 1
            rows.append(index[s])
            cols.append(index[tuple(dst)])
            rates.append(min(s[i], servers[i]) / service_times[i])
    pi = _stationary(rows, cols, rates, len(states))
    arr = np.array(states, dtype=float)
    last = k - 1
    x = sum(p * min(s[last], servers[last]) / service_times[last]
            for p, s in zip(pi, states, strict=True))
    return {"x": float(x), "q": pi @ arr}


# ---------------------------------------------------------------------- M/M/1 and M/M/c


def test_mm1_textbook_values() -> None:
    m = analytic.mm1(0.8, 1.0)
    assert m.rho == pytest.approx(0.8)
    assert m.w == pytest.approx(5.0)
    assert m.wq == pytest.approx(4.0)
    assert m.l == pytest.approx(4.0)
    assert m.lq == pytest.approx(3.2)
    assert m.p_wait == pytest.approx(0.8)


def test_mm1_quantiles() -> None:
    # response is Exp(mu - lam): median = ln 2 / 0.2
    assert analytic.mm1_response_quantile(0.8, 1.0, 0.5) == pytest.approx(math.log(2) / 0.2)
    # P(Wq > t) = 0.8 exp(-0.2 t); below q = 0.2 the wait is zero
    assert analytic.mm1_wait_quantile(0.8, 1.0, 0.1) == 0.0
    t = analytic.mm1_wait_quantile(0.8, 1.0, 0.99)
    assert 0.8 * math.exp(-0.2 * t) == pytest.approx(0.01)


def test_erlang_c_textbook() -> None:
    assert analytic.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert analytic.erlang_b(1, 2.0) == pytest.approx(2 / 3)
    assert analytic.erlang_c(1, 0.7) == pytest.approx(0.7)


@pytest.mark.parametrize("c", [1, 2, 3, 5, 8, 16, 40])
@pytest.mark.parametrize("rho", [0.1, 0.5, 0.8, 0.95])
def test_mmc_matches_birth_death(c: int, rho: float) -> None:
    mu = 2.0
    lam = rho * c * mu
    m = analytic.mmc(lam, mu, c)
    bd = _birth_death_mmc(lam, mu, c)
    assert m.p_wait == pytest.approx(bd["p_wait"], rel=1e-9)
    assert m.l == pytest.approx(bd["l"], rel=1e-8)
    assert m.lq == pytest.approx(bd["lq"], rel=1e-8, abs=1e-12)


def test_erlang_b_matches_direct_sum() -> None:
    for c in range(1, 30):
        for a in (0.3, 2.0, 7.5, 25.0):
            direct = (a**c / math.factorial(c)) / sum(a**k / math.factorial(k)
                                                      for k in range(c + 1))
            assert analytic.erlang_b(c, a) == pytest.approx(direct, rel=1e-10)


@pytest.mark.parametrize("c,a", [(10_000, 9_900.0), (10_000, 9_990.0), (5_000, 4_000.0)])
def test_erlang_stable_for_many_servers(c: int, a: float) -> None:
    # independent log-space evaluation: B = Poisson pmf(c; a) / Poisson cdf(c; a)
    b_ref = math.exp(stats.poisson.logpmf(c, a) - stats.poisson.logcdf(c, a))
    assert analytic.erlang_b(c, a) == pytest.approx(b_ref, rel=1e-8)
    rho = a / c
    assert analytic.erlang_c(c, a) == pytest.approx(b_ref / (1 - rho * (1 - b_ref)), rel=1e-8)
    assert 0.0 < analytic.erlang_c(c, a) < 1.0


def test_mmc_with_one_server_is_mm1() -> None:
    for lam in (0.1, 0.5, 0.9, 0.99):
        assert analytic.mmc(lam, 1.0, 1) == analytic.mm1(lam, 1.0)
        for q in (0.5, 0.9, 0.999):
            assert analytic.mmc_response_quantile(lam, 1.0, 1, q) == pytest.approx(
                analytic.mm1_response_quantile(lam, 1.0, q), rel=1e-9)


def test_mmc_response_quantile_matches_monte_carlo() -> None:
    lam, mu, c = 7.0, 1.0, 8
    pw = analytic.erlang_c(c, lam / mu)
    rng = np.random.default_rng(11)
    n = 400_000
    waits = np.where(rng.random(n) < pw, rng.exponential(1 / (c * mu - lam), n), 0.0)
    resp = waits + rng.exponential(1 / mu, n)
    for q in (0.5, 0.9, 0.99):
        assert analytic.mmc_response_quantile(lam, mu, c, q) == pytest.approx(
            np.quantile(resp, q), rel=0.02)
        assert analytic.mmc_wait_quantile(lam, mu, c, q) == pytest.approx(
            np.quantile(waits, q), rel=0.03, abs=1e-3)


def test_mmc_response_quantile_when_rates_coincide() -> None:
    # c mu - lam == mu: the hypoexponential degenerates to Erlang-2; must stay continuous
    t_eq = analytic.mmc_response_quantile(1.0, 1.0, 2, 0.99)
    t_near = analytic.mmc_response_quantile(1.0 + 1e-7, 1.0, 2, 0.99)
    assert t_eq == pytest.approx(t_near, rel=1e-5)


def test_mg1_reduces_to_mm1_and_md1() -> None:
    mm1 = analytic.mm1(0.6, 1.0)
    mg1_exp = analytic.mg1(0.6, 1.0, 1.0)
    assert mg1_exp.wq == pytest.approx(mm1.wq)
    assert mg1_exp.l == pytest.approx(mm1.l)
    assert analytic.mg1(0.6, 1.0, 0.0).wq == pytest.approx(mm1.wq / 2)


@pytest.mark.parametrize("call,arg", [
    (lambda: analytic.mm1(1.0, 1.0), "lam"),
    (lambda: analytic.mmc(4.5, 1.0, 4), "lam"),
    (lambda: analytic.mmc(1.0, 0.0, 4), "mu"),
    (lambda: analytic.mmc(1.0, 1.0, 0), "c"),
    (lambda: analytic.erlang_c(3, 3.0), "a"),
    (lambda: analytic.mmc_wait_quantile(0.5, 1.0, 1, 1.0), "q"),
    (lambda: analytic.mg1(2.0, 0.5, 1.0), "lam"),
    (lambda: analytic.mg1(0.5, 1.0, -1.0), "scv"),
    (lambda: analytic.mva_closed(0, [1.0]), "n_customers"),
    (lambda: analytic.mva_closed(2, [1.0, -1.0]), "demands"),
    (lambda: analytic.mva_closed(2, [1.0], station_kinds=["fifo"]), "station_kinds[0]"),
])
def test_invalid_input_names_the_argument(call, arg: str) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(arg)}:"):
        call()


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 60), mu=st.floats(0.1, 100.0), r1=st.floats(0.01, 0.98),
       dr=st.floats(0.001, 0.5))
def test_mmc_monotone_and_little(c: int, mu: float, r1: float, dr: float) -> None:
    r2 = min(r1 + dr, 0.995)
    lo = analytic.mmc(r1 * c * mu, mu, c)
    hi = analytic.mmc(r2 * c * mu, mu, c)
    assert hi.w >= lo.w
    assert hi.wq >= lo.wq
    assert hi.p_wait >= lo.p_wait
    lam = r1 * c * mu
    assert lo.l == pytest.approx(lam * lo.w, rel=1e-9)
    assert lo.lq == pytest.approx(lam * lo.wq, rel=1e-9, abs=1e-300)


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 200), rho=st.floats(0.05, 0.99), q=st.floats(0.01, 0.9999))
def test_mmc_quantiles_invert_their_distribution(c: int, rho: float, q: float) -> None:
    mu = 1.0
    lam = rho * c
    pw = analytic.erlang_c(c, lam / mu)
    t = analytic.mmc_wait_quantile(lam, mu, c, q)
    if t > 0:
        assert pw * math.exp(-(c * mu - lam) * t) == pytest.approx(1 - q, rel=1e-9)
    else:
        assert 1 - q >= pw
    tr = analytic.mmc_response_quantile(lam, mu, c, q)
    assert tr >= t
    assert analytic._mmc_response_survival(tr, mu, c * mu - lam, pw) == pytest.approx(
        1 - q, rel=1e-7)


# ---------------------------------------------------------------------- Jackson networks


def test_jackson_tandem_is_sum_of_mm1() -> None:
    lam = 3.0
    mus = [5.0, 4.0, 3.5]
    routing = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=float)
    stations = analytic.jackson_open([lam, 0, 0], routing, mus, [1, 1, 1])
    for s, mu in zip(stations, mus, strict=True):
        assert s.arrival_rate == pytest.approx(lam)
        assert s.w == pytest.approx(analytic.mm1(lam, mu).w)
    total = analytic.jackson_response_time(stations, [lam, 0, 0])
    assert total == pytest.approx(sum(analytic.mm1(lam, mu).w for mu in mus))


def test_jackson_traffic_equations_match_series_expansion() -> None:
    gamma = np.array([1.0, 0.5, 0.2])
    routing = np.array([[0.0, 0.6, 0.3], [0.2, 0.0, 0.5], [0.4, 0.1, 0.0]])
    stations = analytic.jackson_open(gamma, routing, [10.0, 10.0, 10.0], [1, 1, 1])
    # lambda = sum_k (P^T)^k gamma, summed until it converges
    lam = np.zeros(3)
    term = gamma.copy()
    for _ in range(2000):
        lam += term
        term = routing.T @ term
    assert [s.arrival_rate for s in stations] == pytest.approx(lam.tolist(), rel=1e-10)
    assert [s.visit_ratio for s in stations] == pytest.approx((lam / gamma.sum()).tolist())


def test_jackson_with_feedback_matches_ctmc() -> None:
    gamma = [0.6, 0.3, 0.0]
    routing = np.array([[0.0, 0.5, 0.3], [0.2, 0.0, 0.6], [0.25, 0.0, 0.0]])
    mus = [4.0, 2.5, 3.0]
    cs = [1, 2, 1]
    stations = analytic.jackson_open(gamma, routing, mus, cs)
    assert max(s.rho for s in stations) < 0.3  # keeps the truncation error negligible
    brute = _open_network_ctmc(gamma, routing, mus, cs, cap=14)
    assert [s.l for s in stations] == pytest.approx(brute.tolist(), rel=1e-5)


def test_jackson_delay_station_and_errors() -> None:
    routing = np.array([[0.0, 1.0], [0.0, 0.0]])
    stations = analytic.jackson_open([2.0, 0.0], routing, [4.0, 0.5], [1, math.inf])
    assert stations[1].l == pytest.approx(4.0)  # lam / mu at an infinite-server station
    assert stations[1].w == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"^service_rates\[1\]"):
        analytic.jackson_open([2.0, 0.0], routing, [4.0, 1.5], [1, 1])
    with pytest.raises(ValueError, match=r"^routing"):
        analytic.jackson_open([1.0, 0.0], [[0.0, 1.0], [1.0, 0.0]], [4.0, 4.0], [1, 1])
    with pytest.raises(ValueError, match=r"^routing"):
        analytic.jackson_open([1.0, 0.0], [[0.0, 0.7], [0.6, 0.6]], [4.0, 4.0], [1, 1])


# ---------------------------------------------------------------------- closed networks


def test_mva_single_customer_is_sum_of_demands() -> None:
    d = [0.01, 0.006, 0.004]
    res = analytic.mva_closed(1, d, think_time=0.5)
    assert res.response_time == pytest.approx(sum(d))
    assert res.throughput == pytest.approx(1 / (0.5 + sum(d)))


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_mva_matches_ctmc(n: int) -> None:
    z, d = 1.5, [0.7, 1.1]
    res = analytic.mva_closed(n, d, think_time=z)
    brute = _closed_cycle_ctmc(n, [z, *d], [math.inf, 1, 1])
    assert res.throughput == pytest.approx(brute["x"], rel=1e-9)
    assert res.queue_lengths.tolist() == pytest.approx(brute["q"][1:].tolist(), rel=1e-9)
    assert res.response_time == pytest.approx(n / brute["x"] - z, rel=1e-9)


def test_mva_delay_station_kind_equals_think_time() -> None:
    a = analytic.mva_closed(5, [0.2, 0.3], think_time=1.0)
    b = analytic.mva_closed(5, [0.2, 0.3, 1.0], station_kinds=["queue", "queue", "delay"])
    assert a.throughput == pytest.approx(b.throughput)
    assert b.response_time == pytest.approx(a.response_time + 1.0)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_mva_multiserver_matches_ctmc(n: int) -> None:
    z, d, cs = 2.0, [0.9, 1.6, 0.5], [1, 2, 3]
    res = analytic.mva_closed_multiserver(n, d, cs, think_time=z)
    brute = _closed_cycle_ctmc(n, [z, *d], [math.inf, *cs])
    assert res.throughput == pytest.approx(brute["x"], rel=1e-8)
    assert res.queue_lengths.tolist() == pytest.approx(brute["q"][1:].tolist(), rel=1e-8)


def test_mva_multiserver_with_single_servers_equals_mva() -> None:
    d = [0.3, 0.5, 0.2]
    a = analytic.mva_closed(25, d, think_time=0.4)
    b = analytic.mva_closed_multiserver(25, d, [1, 1, 1], think_time=0.4)
    assert b.throughput == pytest.approx(a.throughput, rel=1e-9)
    assert b.residence_times.tolist() == pytest.approx(a.residence_times.tolist(), rel=1e-9)


@pytest.mark.parametrize("n,rho", [(5, 0.5), (20, 0.8), (40, 0.95)])
def test_mva_think_time_places_the_bottleneck(n: int, rho: float) -> None:
    d = [0.010, 0.006, 0.004]
    z = analytic.mva_think_time_for_throughput(n, d, rho / max(d))
    res = analytic.mva_closed(n, d, think_time=z)
    assert res.utilizations[0] == pytest.approx(rho, rel=1e-9)
    with pytest.raises(ValueError, match=r"^throughput"):
        analytic.mva_think_time_for_throughput(n, d, 1.01 / max(d))


@settings(max_examples=40, deadline=None)
@given(d=st.lists(st.floats(0.001, 10.0), min_size=1, max_size=5),
       z=st.floats(0.0, 20.0), n=st.integers(1, 60))
def test_mva_bounds_and_little(d: list[float], z: float, n: int) -> None:
    res = analytic.mva_closed(n, d, think_time=z)
    x = res.throughput_by_n
    assert np.all(np.diff(x) >= -1e-12 * x[-1])  # throughput never falls with more users
    assert res.throughput <= min(n / (sum(d) + z), 1 / max(d)) * (1 + 1e-9)
    assert res.utilizations.max() <= 1 + 1e-9
    # Little's law on the whole cycle
    assert res.throughput * (res.response_time + z) == pytest.approx(n, rel=1e-9)
    assert res.queue_lengths.sum() == pytest.approx(res.throughput * res.response_time, rel=1e-9)

