"""Population and arrivals: online curve, pool, thinning, spikes, whales, partitions, seeds,
sessions (turnover)."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import pytest
from scipy import stats

from sim.model.population import (
    ArrivalStream,
    OnlinePool,
    max_online,
    online_count,
    sample_distinct,
)
from sim.model.scenario import Population, Scenario, parse_scenario

P_MIN = 1e-3  # fixed seeds: a correct generator passes; a few-percent bias fails

OPS = {"login": 0.1, "bet": 0.5, "win": 0.3, "deposit": 0.1}


def raw_scenario(**population: Any) -> dict[str, Any]:
    """A small scenario; ``population`` and ``simulation`` keys override the defaults."""
    sim = population.pop("simulation", {})
    pop = {
        "registered_players": 200_000,
        "peak_online": 20_000,
        "online_curve": [1.0] * 24,
        "session": {"actions_per_minute": 6},
        "whales": {"share": 0.0, "activity_multiplier": 1},
    }
    pop.update(population)
    return {
        "name": "t",
        "simulation": {"start_hour": 0.0, "duration_s": 20.0, **sim},
        "population": pop,
        "operations": {
            name: {"weight": w, "steps": [{"component": "app", "cpu": {"kind": "constant",
                                                                       "value_ms": 1}}]}
            for name, w in OPS.items()
        },
        "deployments": [{"name": "m", "kind": "monolith",
                         "services": [{"name": "app", "components": ["app"]}]}],
    }


def scenario(**population: Any) -> Scenario:
    return parse_scenario(raw_scenario(**population), "test")


def collect(stream: ArrivalStream, chunk_s: float = 1.0) -> tuple[np.ndarray, ...]:
    chunks = list(stream.chunks(chunk_s))
    return tuple(np.concatenate([getattr(c, f) for c in chunks]) for f in
                 ("t", "op", "player", "amount"))


def expected_counts(stream: ArrivalStream, edges: np.ndarray, steps: int = 200) -> np.ndarray:
    """Integral of the per-operation rate over each bin (midpoint rule)."""
    out = []
    for a, b in itertools.pairwise(edges):
        mid = a + (np.arange(steps) + 0.5) * (b - a) / steps
        out.append(stream.rate(mid).sum(axis=0) * (b - a) / steps)
    return np.array(out)


# ------------------------------------------------------------------ online curve


def test_online_count_hourly_points_interpolation_and_wrap() -> None:
    curve = [i / 23 for i in range(24)]
    pop = Population(registered_players=10_000, peak_online=1_000, online_curve=curve)
    assert online_count(pop, 5 * 3600.0) == pytest.approx(1_000 * 5 / 23)
    assert online_count(pop, 5.5 * 3600.0) == pytest.approx(1_000 * 5.5 / 23)
    # 23:30 is half way between hour 23 (share 1) and midnight (share 0)
    assert online_count(pop, 23.5 * 3600.0) == pytest.approx(500.0)
    assert online_count(pop, 86_400.0 + 3600.0) == pytest.approx(online_count(pop, 3600.0))
    arr = online_count(pop, np.array([0.0, 3600.0, 7200.0]))
    assert isinstance(arr, np.ndarray)
    np.testing.assert_allclose(arr, [0.0, 1_000 / 23, 2_000 / 23])


def test_max_online_finds_the_hour_boundary_peak() -> None:
    curve = [0.1] * 24
    curve[20] = 1.0
    pop = Population(registered_players=10_000, peak_online=1_000, online_curve=curve)
    assert max_online(pop, 19.5 * 3600, 3600.0) == pytest.approx(1_000.0)
    assert max_online(pop, 21.0 * 3600, 600.0) == pytest.approx(100.0)
    # a window wrapping past midnight over the whole next day still sees 20:00
    assert max_online(pop, 22 * 3600, 30 * 3600) == pytest.approx(1_000.0)


# ------------------------------------------------------------------ pool


@pytest.mark.parametrize(("space", "n"), [(50, 40), (1_000, 100)])
def test_sample_distinct_is_uniform_and_distinct(space: int, n: int) -> None:
    rng = np.random.default_rng(7)
    hits = np.zeros(space)
    for _ in range(400):
        x = sample_distinct(rng, space, n)
        assert x.dtype == np.int64 and np.unique(x).size == n
        assert x.min() >= 0 and x.max() < space
        hits[x] += 1
    # each value is included with probability n/space
    assert stats.chisquare(hits, np.full(space, hits.sum() / space)).pvalue > P_MIN


def test_sample_distinct_does_not_materialise_the_space() -> None:
    x = sample_distinct(np.random.default_rng(1), 10**15, 10_000)  # a permutation would OOM
    assert np.unique(x).size == 10_000 and x.max() < 10**15


def test_pool_of_a_million_is_small_and_distinct() -> None:
    pop = Population(registered_players=20_000_000, peak_online=1_000_000)
    pool = OnlinePool.build(pop, np.random.default_rng(3), 1_000_000)
    assert pool.size == 1_000_000
    assert pool.nbytes < 50 * 2**20
    assert pool.nbytes / pool.size <= 50
    assert pool.player_id.dtype == np.int64 and pool.weight.dtype == np.float32
    assert np.unique(pool.player_id).size == pool.size
    assert pool.player_id.min() >= 0 and pool.player_id.max() < 20_000_000
    whales = float(np.mean(pool.weight == pop.whales.activity_multiplier))
    assert whales == pytest.approx(pop.whales.share, abs=0.001)


def test_draw_is_weighted_and_limited_to_the_online_prefix() -> None:
    weight = np.array([1, 20, 1, 3, 1, 5, 1, 1], dtype=np.float32)
    pool = OnlinePool(np.arange(100, 108, dtype=np.int64), weight)
    rng = np.random.default_rng(11)
    ids = pool.draw(rng, 200_000, 6)
    assert ids.dtype == np.int64
    assert set(np.unique(ids)) <= set(range(100, 106))
    counts = np.bincount(ids - 100, minlength=6)[:6]
    w = weight[:6].astype(np.float64) / weight[:6].sum(dtype=np.float64)
    assert stats.chisquare(counts, w * counts.sum()).pvalue > P_MIN
    # per-draw prefix lengths: a draw with online_n = 1 always gets the first entry
    per = pool.draw(rng, 1_000, np.where(np.arange(1_000) % 2 == 0, 1, 8))
    assert np.all(per[::2] == 100)
    assert len(np.unique(per[1::2])) > 1


def test_whales_get_their_share_of_arrivals() -> None:
    # 30 s sessions over 20 s: most players online at the end started during the window
    sc = scenario(whales={"share": 0.02, "activity_multiplier": 25},
                  session={"actions_per_minute": 6, "mean_session_minutes": 0.5})
    stream = ArrivalStream(sc, np.random.default_rng(5))
    ids, weight = stream.pool.members()
    whale_ids = ids[weight > 1]
    assert whale_ids.size == pytest.approx(0.02 * ids.size, rel=0.25)
    online = stream.pool.weight[: int(stream.online_n(0.0))]  # slots keep their weight
    expected = online[online > 1].sum() / online.sum()  # ~ 0.02*25 / (0.02*25 + 0.98)
    first = stream.pool.player_id.copy()
    _, _, player, _ = collect(stream)
    # arrivals of players who came online during the window: 1 - 1.5 (1 - e^(-2/3)) = 0.27
    assert np.isin(player, first, invert=True).mean() == pytest.approx(0.27, abs=0.02)
    hits = int(np.isin(player, whale_ids).sum())
    assert stats.binomtest(hits, player.size, expected).pvalue > P_MIN
    assert 0.3 < expected < 0.4


# ------------------------------------------------------------------ arrivals


def test_stream_shapes_dtypes_order_and_amounts() -> None:
    sc = scenario(bet_size={"median": 200, "sigma": 1.5, "min": 10, "max": 5_000})
    t, op, player, amount = collect(ArrivalStream(sc, np.random.default_rng(1)), chunk_s=0.7)
    assert t.dtype == np.float64 and op.dtype == np.int16
    assert player.dtype == np.int64 and amount.dtype == np.int64
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < sc.simulation.duration_s
    assert amount.min() >= 10 and amount.max() <= 5_000
    assert 150 < np.median(amount) < 250
    assert op.min() >= 0 and op.max() < len(OPS)


def test_rates_and_operation_mix_match_the_scenario() -> None:
    sc = scenario()
    stream = ArrivalStream(sc, np.random.default_rng(2))
    per_s = 20_000 * 6 / 60
    np.testing.assert_allclose(stream.rate(3.0), per_s * np.array(list(OPS.values())))
    _, op, _, _ = collect(stream)
    total = per_s * sc.simulation.duration_s
    assert stats.poisson(total).cdf(op.size) > P_MIN / 2
    assert stats.poisson(total).sf(op.size) > P_MIN / 2
    counts = np.bincount(op, minlength=len(OPS))
    assert stats.chisquare(counts, np.array(list(OPS.values())) * op.size).pvalue > P_MIN


def test_zero_weight_operation_never_arrives() -> None:
    raw = raw_scenario()
    raw["operations"]["deposit"]["weight"] = 0.0
    stream = ArrivalStream(parse_scenario(raw, "t"), np.random.default_rng(4))
    _, op, _, _ = collect(stream)
    assert not np.any(op == list(OPS).index("deposit"))


def test_thinning_reproduces_a_time_varying_rate() -> None:
    curve = [0.2] * 24
    curve[0], curve[1] = 1.0, 0.05  # falls steeply from midnight to 01:00, up again at 23:00
    sc = scenario(online_curve=curve, peak_online=20_000,
                  session={"actions_per_minute": 3},
                  simulation={"start_hour": 23.5, "duration_s": 5_400.0})
    stream = ArrivalStream(sc, np.random.default_rng(9))
    edges = np.linspace(0, 5_400.0, 37)
    expected = expected_counts(stream, edges).sum(axis=1)
    counts = np.zeros(36)
    for ch in stream.chunks(chunk_s=13.0):  # chunks not aligned with the bins
        counts += np.histogram(ch.t, edges)[0]
    assert expected.max() / expected.min() > 5  # really time-varying
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert stats.chi2(36).sf(chi2) > P_MIN
    assert stream.pool.size == 20_000  # sized for the midnight peak


def test_spike_multiplies_only_the_listed_operations_in_its_window() -> None:
    sc = scenario(spikes=[{"name": "final", "start_s": 5.0, "duration_s": 5.0, "multiplier": 5,
                           "operations": ["bet"]}])
    stream = ArrivalStream(sc, np.random.default_rng(6))
    bet, win = list(OPS).index("bet"), list(OPS).index("win")
    before, during, after = stream.rate(2.0), stream.rate(7.0), stream.rate(12.0)
    assert during[bet] == pytest.approx(5 * before[bet])
    np.testing.assert_allclose(np.delete(during, bet), np.delete(before, bet))
    np.testing.assert_allclose(after, before)
    t, op, _, _ = collect(stream, chunk_s=0.75)
    edges = np.array([0.0, 5.0, 10.0, 20.0])
    exp = expected_counts(stream, edges)
    for o in range(len(OPS)):
        got = np.histogram(t[op == o], edges)[0]
        chi2 = float(np.sum((got - exp[:, o]) ** 2 / exp[:, o]))
        assert stats.chi2(3).sf(chi2) > P_MIN, (o, got, exp[:, o])
    in_spike = (t >= 5) & (t < 10)
    ratio = np.sum(in_spike & (op == bet)) / np.sum(~in_spike & (op == bet) & (t < 15))
    assert ratio == pytest.approx(0.5 * 5, rel=0.05)  # 5 s spiked vs 10 s plain
    ratio_win = np.sum(in_spike & (op == win)) / np.sum(~in_spike & (op == win) & (t < 15))
    assert ratio_win == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("k", [0, 3])
def test_partition_keeps_its_players_and_a_kth_of_the_rate(k: int) -> None:
    sc = scenario(whales={"share": 0.05, "activity_multiplier": 10},
                  session={"actions_per_minute": 6, "mean_session_minutes": 0.5})
    full = ArrivalStream(sc, np.random.default_rng(8))
    part = ArrivalStream(sc, np.random.default_rng(8), partition=(k, 4))
    assert np.all(part.pool.player_id % 4 == k)
    assert part.pool.size == full.pool.size // 4
    np.testing.assert_allclose(part.rate(1.0), full.rate(1.0) / 4)
    assert part.sessions_started(0.0, 20.0) == pytest.approx(full.sessions_started(0.0, 20.0) / 4)
    assert np.all(part.pool.members()[0] % 4 == k)
    _, op, player, _ = collect(part)
    assert np.all(player % 4 == k)
    assert part.pool.started == pytest.approx(part.sessions_started(0.0, 20.0), rel=0.15)
    total = full.rate(0.0).sum() / 4 * sc.simulation.duration_s
    assert abs(op.size - total) < 4 * np.sqrt(total)
    counts = np.bincount(op, minlength=len(OPS))
    assert stats.chisquare(counts, np.array(list(OPS.values())) * op.size).pvalue > P_MIN
    # each represented player keeps the activity of a player in the full run
    per_player = op.size / part.pool.size
    _, op_full, _, _ = collect(full)
    assert per_player == pytest.approx(op_full.size / full.pool.size, rel=0.03)
    ids, weight = part.pool.members()
    whale_share = np.isin(player, ids[weight > 1]).mean()
    assert whale_share == pytest.approx(0.05 * 10 / (0.05 * 10 + 0.95), abs=0.03)


def test_bad_partition_is_refused() -> None:
    with pytest.raises(ValueError, match="partition"):
        ArrivalStream(scenario(), np.random.default_rng(1), partition=(4, 4))


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    sc = scenario(whales={"share": 0.01, "activity_multiplier": 20},
                  spikes=[{"start_s": 3.0, "duration_s": 4.0, "multiplier": 3}])
    a = collect(ArrivalStream(sc, np.random.default_rng(123)))
    b = collect(ArrivalStream(copy.deepcopy(sc), np.random.default_rng(123)))
    c = collect(ArrivalStream(sc, np.random.default_rng(124)))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert a[0].size != c[0].size or not np.array_equal(a[2], c[2])


def test_million_players_stream_holds_bounded_memory() -> None:
    sc = scenario(registered_players=10_000_000, peak_online=1_000_000,
                  simulation={"duration_s": 2.0})
    stream = ArrivalStream(sc, np.random.default_rng(1))
    assert stream.pool.size == 1_000_000 and stream.nbytes < 50 * 2**20
    assert stream.nbytes / stream.pool.size <= 50
    sizes = [ch.t.size for ch in stream.chunks(chunk_s=0.5)]
    assert len(sizes) == 4
    assert sum(sizes) == pytest.approx(1_000_000 * 6 / 60 * 2, rel=0.02)


@pytest.mark.parametrize("partition", [(0, 1), (1, 3)])
def test_players_are_drawn_among_those_online_as_the_curve_falls(
        partition: tuple[int, int]) -> None:
    curve = [0.1] * 24
    curve[0] = 1.0  # 20k online at midnight, 11k at 00:30
    # sessions far longer than the window: the slots keep their first players
    sc = scenario(online_curve=curve, simulation={"start_hour": 0.0, "duration_s": 1_800.0},
                  session={"actions_per_minute": 6, "mean_session_minutes": 1e9})
    stream = ArrivalStream(sc, np.random.default_rng(12), partition=partition)
    parts = partition[1]
    assert stream.pool.size == pytest.approx(20_000 / parts, abs=1)
    assert stream.online_n(1_800.0) == pytest.approx(11_000 / parts, abs=1)
    position = np.argsort(stream.pool.player_id)
    sorted_ids = stream.pool.player_id[position]
    for ch in stream.chunks(chunk_s=60.0):
        pos = position[np.searchsorted(sorted_ids, ch.player)]
        assert np.all(pos < stream.online_n(ch.t))
    # the last chunk reaches (nearly) all players still online, not just a few
    assert pos.max() > 0.99 * stream.online_n(1_800.0)


# ------------------------------------------------------------------ sessions


def test_session_starts_swap_with_first_in_first_out_rings_by_class() -> None:
    pool = OnlinePool(np.array([0, 1, 2]), np.array([1, 5, 1], dtype=np.float32),
                      spare_id=np.array([10, 20, 11, 12]),
                      spare_weight=np.array([1, 5, 1, 1], dtype=np.float32))
    assert pool.spare_size == 4
    before = np.sort(pool.members()[0])
    # slot 1 is a whale slot: its new player comes from the whale ring
    got = pool.start_sessions(np.array([0, 0, 2, 1]))
    np.testing.assert_array_equal(got, [10, 11, 12, 20])
    np.testing.assert_array_equal(pool.player_id, [11, 20, 12])
    # the ordinary ring now holds 0, 10, 2 (in that order): four starts in slot 2 wrap it,
    # in two batches; 12 leaves first and comes back after exactly 3 starts
    got = pool.start_sessions(np.array([2, 2, 2, 2]))
    np.testing.assert_array_equal(got, [0, 10, 2, 12])
    np.testing.assert_array_equal(pool.player_id, [11, 20, 12])
    assert pool.started == 8
    ids, weight = pool.members()
    np.testing.assert_array_equal(np.sort(ids), before)  # nobody lost, nobody duplicated
    np.testing.assert_array_equal(weight[ids == 1], [5])  # the whale who left is still one
    # a class without spares restarts the same player
    lone = OnlinePool(np.array([7, 8]), np.array([3, 1], dtype=np.float32),
                      spare_id=np.array([9]), spare_weight=np.array([1], dtype=np.float32))
    np.testing.assert_array_equal(lone.start_sessions(np.array([0, 1])), [7, 9])
    assert lone.nbytes == 2 * (8 + 4 + 8) + 4  # spares stored as uint32


def test_sessions_started_integrates_turnover_and_growth() -> None:
    curve = [0.25] * 24
    curve[0], curve[1] = 0.5, 1.0  # 3000 at 00:30, 4000 at 01:00, 2500 at 01:30
    sc = scenario(online_curve=curve, peak_online=4_000, registered_players=1_000_000,
                  session={"actions_per_minute": 0.5, "mean_session_minutes": 5},
                  simulation={"start_hour": 0.5, "duration_s": 3_600.0})
    stream = ArrivalStream(sc, np.random.default_rng(21))
    # (3500 + 3250) * 1800 / 300 turnover, + 1000 growth (the fall starts nothing)
    expected = 40_500 + 1_000
    assert stream.sessions_started(0.0, 3_600.0) == pytest.approx(expected)
    assert stream.sessions_started(0.0, 1_000.0) + stream.sessions_started(1_000.0, 3_600.0) \
        == pytest.approx(expected)
    assert stream.sessions_started(5.0, 5.0) == 0.0
    half = ArrivalStream(sc, np.random.default_rng(21), partition=(1, 2))
    assert half.sessions_started(0.0, 3_600.0) == pytest.approx(expected / 2)
    assert stream.pool.spare_size >= 1.25 * expected  # the ring is not going to wrap
    for _ in stream.chunks(chunk_s=30.0):
        pass
    # ticks are Poisson (mean 40 500), the 1000 activations are certain
    assert abs(stream.pool.started - expected) < 4 * np.sqrt(40_500)
    assert len(np.unique(stream.pool.player_id)) == stream.pool.size


def test_short_sessions_turn_players_over_with_exponential_spans() -> None:
    n, mean_s, apm, window = 2_000, 60.0, 60.0, 600.0
    sc = scenario(registered_players=1_000_000, peak_online=n,
                  session={"actions_per_minute": apm, "mean_session_minutes": mean_s / 60},
                  simulation={"duration_s": window})
    stream = ArrivalStream(sc, np.random.default_rng(31))
    t, _, player, _ = collect(stream, chunk_s=1.0)
    assert t.size == pytest.approx(n * apm / 60 * window, rel=0.01)  # rate unchanged
    assert stream.online_n(300.0) == n
    # distinct players = sessions with an arrival: the n at the start plus n/60 s turnover
    r, lam = apm / 60, 1 / mean_s
    q = r / (lam + r)
    seen_initial = n * q * (1 - np.exp(-(lam + r) * window))
    seen_started = n * lam * q * (window - (1 - np.exp(-(lam + r) * window)) / (lam + r))
    expected = seen_initial + seen_started  # ~ 2000 + 20000, less the silent 1/61
    order = np.lexsort((t, player))
    p, ts = player[order], t[order]
    new = np.concatenate([[True], p[1:] != p[:-1]])
    assert abs(new.sum() - expected) < 4 * np.sqrt(expected)
    # nobody comes back after a session: every gap inside a player's arrivals is one of
    # its ~1.2M exponential inter-arrival gaps (rate 1/s), none longer than ~ln(1.2M/1e-4)
    gaps = np.diff(ts)[~new[1:]]
    assert gaps.max() < np.log(gaps.size / 1e-4) / r
    # spans of sessions whose first arrival is in [60, 300) vs the model: sessions starting
    # uniformly, Exp(60 s) long, cut at the window's end, Poisson arrivals at 1/s
    first_i = np.flatnonzero(new)
    last_i = np.concatenate([first_i[1:], [p.size]]) - 1
    pick = (ts[first_i] >= 60) & (ts[first_i] < 300) & (last_i > first_i)
    span = ts[last_i][pick] - ts[first_i][pick]
    rng = np.random.default_rng(32)
    u = rng.uniform(0, window, 60_000)
    d = np.minimum(u + rng.exponential(mean_s, u.size), window) - u
    k = rng.poisson(r * d)
    u, d, k = u[k >= 2], d[k >= 2], k[k >= 2]
    top = rng.random(k.size) ** (1 / k)  # the largest of k uniforms, then the smallest
    low = top * (1 - rng.random(k.size) ** (1 / (k - 1)))  # of the other k - 1 below it
    model_first = u + d * low
    keep = (model_first >= 60) & (model_first < 300)
    model_span = (d * (top - low))[keep]
    assert span.size > 6_000
    assert stats.ks_2samp(span, model_span).pvalue > P_MIN
    se = np.std(span) / np.sqrt(span.size)
    assert abs(np.mean(span) - np.mean(model_span)) < 4 * se  # ~ 60 s, less ~ 1 s


@pytest.mark.parametrize("partition", [(0, 1), (1, 3)])
def test_arrivals_go_to_the_player_whose_online_session_covers_them(
        partition: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    curve = [0.1] * 24
    curve[0] = 1.0  # rises from 23:45 to midnight, then falls
    sc = scenario(online_curve=curve, peak_online=4_000,
                  session={"actions_per_minute": 2, "mean_session_minutes": 2},
                  simulation={"start_hour": 23.75, "duration_s": 1_800.0})
    stream = ArrivalStream(sc, np.random.default_rng(41), partition=partition)
    # log every session start: (slot, time, player); the slots' first players start at 0
    log: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [
        (np.arange(stream.pool.size), np.zeros(stream.pool.size), stream.pool.player_id.copy())]
    times: list[np.ndarray] = []
    activations = [0]
    renewals, activate = stream._renewals, stream._activations
    start_sessions = OnlinePool.start_sessions

    def spy_renewals(b: float) -> tuple[np.ndarray, np.ndarray]:
        s, at = renewals(b)
        times.append(at)
        return s, at

    def spy_activations(a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        s, at = activate(a, b)
        times.append(at)
        activations[0] += s.size
        return s, at

    def spy_start(pool: OnlinePool, slot: np.ndarray) -> np.ndarray:
        got = start_sessions(pool, slot)
        log.append((slot.copy(), np.sort(np.concatenate(times)), got.copy()))  # time order
        times.clear()
        return got

    monkeypatch.setattr(stream, "_renewals", spy_renewals)
    monkeypatch.setattr(stream, "_activations", spy_activations)
    monkeypatch.setattr(OnlinePool, "start_sessions", spy_start)
    t, _, player, _ = collect(stream, chunk_s=7.0)
    slot, start, who = (np.concatenate(x) for x in zip(*log, strict=True))
    assert activations[0] == pytest.approx(4_000 * 0.225 / partition[1], abs=2)
    assert np.unique(who).size == who.size  # each player one session (the ring never wrapped)
    order = np.lexsort((start, slot))
    slot, start, who = slot[order], start[order], who[order]
    end = np.append(np.where(slot[1:] == slot[:-1], start[1:], np.inf), np.inf)
    by_player = np.argsort(who)
    s = by_player[np.searchsorted(who[by_player], player)]
    assert np.all(who[s] == player)
    assert np.all((start[s] <= t) & (t < end[s]))  # within the player's session
    assert np.all(slot[s] < stream.online_n(t))  # in a slot online at that time
    assert np.all(player % partition[1] == partition[0])
