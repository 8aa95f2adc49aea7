"""Contention both ways: per-player row locks, hot accounts, optimistic version checks.

Theory first (a single hot row under pessimistic locking is an M/G/1 on the lock; optimistic
transactions without retries abort with probability lam*T/(1+lam*T)), then the lock table's
bound (hypothesis), reduce, the results schema, and the judged comparison on
``scenarios/jackpot_night.yaml``.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.analysis.output_analysis import confidence_interval
from sim.engine.contention import CONTENTION_METRICS, RowLockTable, VersionTable
from sim.model.scenario import ScenarioError, load_scenario, parse_scenario
from sim.reports.contention import contention_lines, contention_markdown, has_contention
from sim.reports.report import write_report
from sim.reports.results import CONTENTION_COLUMNS, Results
from sim.runner import run

ROOT = Path(__file__).resolve().parents[2]


def _scenario(step: dict[str, Any], *, rate: float, duration: float = 200.0,
              players: int = 1, concurrency: str = "pessimistic", hot: dict | None = None,
              retry: dict | None = None, reps: int = 3, seed: int = 5,
              bin_s: float = 10.0) -> Any:
    """One operation at ``rate``/s (Poisson, players uniform among ``players``) running one
    database step on a deployment with room for everything but the contended row."""
    dep: dict[str, Any] = {
        "name": "d", "kind": "monolith", "concurrency": concurrency,
        "services": [{"name": "app", "components": ["wallet"], "workers": 10_000,
                      "db_pool": 256, "database": "main", "cores": 4}],
        "databases": [{"name": "main", "cores": 256, "max_connections": 256}],
        "hot_accounts": hot or {},
    }
    if retry is not None:
        dep["conflict_retry"] = retry
    return parse_scenario({
        "name": "rows",
        "simulation": {"duration_s": duration, "replications": reps, "warmup": 0,
                       "seed": seed, "timeseries_bin_s": bin_s},
        "population": {"registered_players": players, "peak_online": players},
        "operations": {"bet": {"weight": 0, "rate_rps": rate, "steps": [step]}},
        "deployments": [dep],
    })


def _row(res: Results, op: str = "bet") -> Any:
    return res.summary.set_index("operation").loc[op]


def _station(res: Results, name: str) -> Any:
    return res.stations.set_index("station").loc[name]


# ---------------------------------------------------------------------- theory


@pytest.mark.heavy
def test_one_hot_row_under_pessimistic_locking_is_an_mm1_on_the_lock() -> None:
    lam, mean = 300.0, 0.002                       # rho = 0.6
    res = run(_scenario({"component": "wallet", "db": {"kind": "exponential", "mean_ms": 2},
                         "lock": "jackpot"}, rate=lam, hot={"jackpot": {"sub_accounts": 1}}),
              jobs=1)
    rho, gap = lam * mean, 1 / mean - lam
    lock = _station(res, "lock:jackpot[0]")
    wq_ms = rho / gap * 1000.0                     # 3.0 ms
    p99_ms = math.log(rho / 0.01) / gap * 1000.0   # P(W > t) = rho exp(-(mu - lam) t)
    print(f"\nhot row M/M/1: mean wait {lock.mean_wait_ms:.3f} ± {lock.mean_wait_ms_ci:.3f} ms "
          f"(theory {wq_ms:.3f}); lock wait p99 {_row(res).lock_wait_p99_ms:.2f} ms "
          f"(theory {p99_ms:.2f})")
    assert lock.mean_wait_ms == pytest.approx(wq_ms, rel=0.08)
    assert _row(res).lock_wait_p99_ms == pytest.approx(p99_ms, rel=0.08)
    assert lock.utilisation == pytest.approx(rho, rel=0.03)
    assert _row(res).aborts_per_request == 0.0


@pytest.mark.heavy
def test_one_players_row_is_an_mg1_pollaczek_khinchine() -> None:
    lam, mean, cv = 300.0, 0.002, 0.5              # gamma service, rho = 0.6
    res = run(_scenario({"component": "wallet", "player_row": True,
                         "db": {"kind": "gamma", "mean_ms": 2, "cv": cv}}, rate=lam), jobs=1)
    rho = lam * mean
    es2 = (1 + cv * cv) * mean * mean
    wq_ms = lam * es2 / (2 * (1 - rho)) * 1000.0   # 1.875 ms
    rows = _station(res, "rows:player")
    print(f"\nplayer row M/G/1: mean wait {rows.mean_wait_ms:.3f} ± {rows.mean_wait_ms_ci:.3f} "
          f"ms (Pollaczek-Khinchine {wq_ms:.3f})")
    assert rows.kind == "row_lock"
    assert rows.mean_wait_ms == pytest.approx(wq_ms, rel=0.08)
    assert _row(res).lock_wait_p50_ms < wq_ms < _row(res).lock_wait_p99_ms


@pytest.mark.parametrize("where", ["player_row", "hot_account"])
def test_optimistic_without_retries_aborts_as_the_dead_time_formula(where: str) -> None:
    """Poisson starts at lam, each reading the row and committing T later. A start within T
    after a successful start loses (that one commits inside its window); the first start
    after it wins: successes are a renewal process with dead time T, at lam/(1 + lam T),
    so P(abort) = lam T / (1 + lam T)."""
    lam, t = 300.0, 0.002
    step: dict[str, Any] = {"component": "wallet", "db": {"kind": "constant", "value_ms": 2}}
    hot = None
    if where == "player_row":
        step["player_row"] = True
    else:
        step["lock"], hot = "jackpot", {"jackpot": {"sub_accounts": 1}}
    res = run(_scenario(step, rate=lam, duration=100.0, concurrency="optimistic", hot=hot,
                        retry={"max_attempts": 1}), jobs=1)
    row = _row(res)
    theory = lam * t / (1 + lam * t)               # 0.375
    print(f"\noptimistic {where}: aborts/request {row.aborts_per_request:.4f} ± "
          f"{row.aborts_per_request_ci:.4f} (theory {theory:.4f})")
    assert row.aborts_per_request == pytest.approx(theory, abs=0.01)
    assert row.gave_up_per_request == pytest.approx(row.aborts_per_request)
    assert row.error_rate == pytest.approx(theory, abs=0.01)
    assert row.retries_per_request == 0.0
    assert math.isnan(row.lock_wait_p99_ms)        # nobody waits on a lock
    assert row.lost_ms_per_request == pytest.approx(theory * 2.0, rel=0.03)


def _hand_written_optimistic(lam: float, t: float, cap: float, attempts: int, horizon: float,
                             seed: int) -> float:
    """A minimal SimPy model of optimistic writers of one row with retries: Poisson starts,
    read, work t, commit if nobody committed since, else wait U(0, cap) and retry (at most
    ``attempts``). Returns aborts per request."""
    rng = random.Random(seed)
    env = simpy.Environment()
    state = {"version": 0, "aborts": 0, "requests": 0}

    def tx() -> Any:
        state["requests"] += 1
        for _ in range(attempts):
            seen = state["version"]
            yield env.timeout(t)
            if state["version"] == seen:
                state["version"] += 1
                return
            state["aborts"] += 1
            yield env.timeout(cap * rng.random())

    def source() -> Any:
        while True:
            yield env.timeout(rng.expovariate(lam))
            env.process(tx())

    env.process(source())
    env.run(until=horizon)
    return state["aborts"] / state["requests"]


@pytest.mark.heavy
def test_optimistic_retries_match_a_hand_written_simpy_model() -> None:
    lam, t, cap = 250.0, 0.002, 0.004
    # base = cap: the backoff is U(0, cap) on every retry, as in the hand-written model
    res = run(_scenario({"component": "wallet", "db": {"kind": "constant", "value_ms": 2},
                         "player_row": True}, rate=lam, duration=100.0,
                        concurrency="optimistic",
                        retry={"max_attempts": 50, "backoff_base_ms": 4, "backoff_cap_ms": 4}),
              jobs=1)
    hand = np.array([_hand_written_optimistic(lam, t, cap, 50, 100.0, s) for s in range(3)])
    m, h = confidence_interval(hand)
    row = _row(res)
    print(f"\noptimistic with retries: engine {row.aborts_per_request:.4f} ± "
          f"{row.aborts_per_request_ci:.4f}, hand-written SimPy {m:.4f} ± {h:.4f} aborts/request")
    assert row.aborts_per_request > 0.3            # contended enough to mean something
    assert abs(row.aborts_per_request - m) <= row.aborts_per_request_ci + h + 0.01
    assert row.retries_per_request == pytest.approx(row.aborts_per_request, abs=1e-3)


# ---------------------------------------------------------------------- the tables' bounds


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0.0, 2.0), st.floats(0.01, 1.0)),
                min_size=1, max_size=60),
       st.integers(1, 8))
def test_row_lock_table_is_fifo_exclusive_and_bounded(
        jobs: list[tuple[int, float, float]], slots: int) -> None:
    """Writers (row, start, hold) behind ``slots`` connections: one holder per row at a
    time, granted in arrival order per row, the table never larger than the writers in
    flight (the bound), empty when all are done."""
    env = simpy.Environment()
    table = RowLockTable(env, "rows:player", bound=slots)
    conns = simpy.Resource(env, capacity=slots)
    holders: dict[int, int] = {}
    order: dict[int, list[int]] = {}
    granted: dict[int, list[int]] = {}

    def writer(i: int, row: int, start: float, hold: float) -> Any:
        yield env.timeout(start)
        with conns.request() as req:
            yield req
            order.setdefault(row, []).append(i)
            ev = table.acquire(row)
            if ev is not None:
                yield ev
            granted.setdefault(row, []).append(i)
            holders[row] = holders.get(row, 0) + 1
            assert holders[row] == 1
            assert len(table) <= conns.count
            yield env.timeout(hold)
            holders[row] -= 1
            table.release(row)

    for i, (row, start, hold) in enumerate(jobs):
        env.process(writer(i, row, start, hold))
    env.run()
    assert len(table) == 0 and table.held == 0 and table.waiting == 0
    assert granted == order
    assert table.completions == len(jobs)


@given(st.lists(st.tuples(st.sampled_from(["read", "commit", "forget"]), st.integers(0, 3)),
                max_size=80))
def test_version_table_keeps_rows_only_while_read(ops: list[tuple[str, int]]) -> None:
    """Against a plain model (every row's commit count kept forever): ``moved`` agrees with
    it for every open read, and the table holds exactly the rows with an open read."""
    table = VersionTable("v", bound=100)
    commits = [0] * 4
    reads: list[tuple[int, int, int]] = []          # open reads (row, token, model's count)
    for op, row in ops:
        if op == "read":
            reads.append((row, table.read(row), commits[row]))
        mine = [r for r in reads if r[0] == row]
        if op == "commit" and mine:                 # a commit happens inside a transaction
            table.commit(row)
            commits[row] += 1
        if op == "forget" and mine:
            reads.remove(mine[0])
            table.forget(row)
        assert len(table) == len({r for r, _, _ in reads})
        for r, token, seen in reads:
            assert table.moved(r, token) == (commits[r] != seen)


# ---------------------------------------------------------------------- reduce


def _players_scenario(reduce: bool, concurrency: str = "pessimistic") -> Any:
    return parse_scenario({
        "name": "players",
        "simulation": {"duration_s": 60, "replications": 3, "warmup": 0, "seed": 3,
                       "reduce": reduce, "start_hour": 12, "timeseries_bin_s": 5},
        "population": {"registered_players": 40, "peak_online": 40,
                       "online_curve": [1.0] * 24, "whales": {"share": 0.0},
                       "session": {"actions_per_minute": 600, "mean_session_minutes": 1e6}},
        "operations": {"bet": {"weight": 1, "steps": [
            {"component": "wallet", "player_row": True,
             "db": {"kind": "exponential", "mean_ms": 10}}]}},
        "deployments": [{
            "name": "d", "kind": "monolith", "load_balancing": "random",
            "concurrency": concurrency,
            "services": [{"name": "app", "components": ["wallet"], "replicas": 4,
                          "workers": 1000, "db_pool": 64, "database": "main", "cores": 4}],
            "databases": [{"name": "main", "shards": 4, "cores": 64,
                           "max_connections": 256}]}],
    })


@pytest.mark.heavy
def test_player_rows_need_no_phantoms_reduced_and_full_agree_on_lock_waits() -> None:
    """A player's requests all fall in the player's partition, so a reduced run meets the
    same per-player contention as the full one (each player: M/M/1 at rho = 0.1)."""
    full = run(_players_scenario(False), jobs=1)
    red = run(_players_scenario(True), jobs=1)
    assert red.meta["reduce_factor"] == 4 and full.meta["reduce_factor"] == 1
    a, b = _station(full, "rows:player"), _station(red, "rows:player")
    print(f"\nplayer rows, mean lock wait: full {a.mean_wait_ms:.3f} ± {a.mean_wait_ms_ci:.3f} "
          f"ms, reduced {b.mean_wait_ms:.3f} ± {b.mean_wait_ms_ci:.3f} ms (M/M/1 1.111 ms)")
    assert abs(a.mean_wait_ms - b.mean_wait_ms) <= a.mean_wait_ms_ci + b.mean_wait_ms_ci + 0.05
    assert a.mean_wait_ms == pytest.approx(0.1 / 90 * 1000, rel=0.15)
    ra, rb = _row(full), _row(red)
    assert abs(ra.lock_wait_p99_ms - rb.lock_wait_p99_ms) <= (
        ra.lock_wait_p99_ms_ci + rb.lock_wait_p99_ms_ci + 0.1 * ra.lock_wait_p99_ms)


def _hot_scenario(reduce: bool) -> Any:
    return parse_scenario({
        "name": "hot",
        "simulation": {"duration_s": 40, "replications": 3, "warmup": 0, "seed": 4,
                       "reduce": reduce, "start_hour": 12, "timeseries_bin_s": 5},
        "population": {"registered_players": 100_000, "peak_online": 4000,
                       "online_curve": [1.0] * 24,
                       "session": {"actions_per_minute": 3, "mean_session_minutes": 1e6}},
        "operations": {"bet": {"weight": 1, "steps": [
            {"component": "wallet", "lock": "jackpot",
             "db": {"kind": "constant", "value_ms": 2}}]}},
        "deployments": [{
            "name": "d", "kind": "monolith", "load_balancing": "random",
            "concurrency": "optimistic",
            "services": [{"name": "app", "components": ["wallet"], "replicas": 4,
                          "workers": 1000, "db_pool": 64, "database": "main", "cores": 4}],
            "databases": [{"name": "main", "shards": 4, "cores": 64, "max_connections": 256}],
            "hot_accounts": {"jackpot": {"sub_accounts": 1}}}],
    })


def test_optimistic_hot_account_reduced_run_meets_the_whole_systems_conflicts() -> None:
    """Phantom writers of the other partitions commit versions too (and retry when they
    lose), so the partition's transactions abort as often as the whole system's."""
    full = run(_hot_scenario(False), jobs=1)
    red = run(_hot_scenario(True), jobs=1)
    assert red.meta["reduce_factor"] == 4
    a, b = _row(full), _row(red)
    print(f"\noptimistic hot row, aborts/request: full {a.aborts_per_request:.4f} ± "
          f"{a.aborts_per_request_ci:.4f}, reduced {b.aborts_per_request:.4f} ± "
          f"{b.aborts_per_request_ci:.4f}")
    assert a.aborts_per_request > 0.1
    assert b.aborts_per_request == pytest.approx(a.aborts_per_request, rel=0.15)


# ---------------------------------------------------------------------- the language


@pytest.mark.parametrize(("patch", "field", "reason"), [
    ({"deployments.0.concurrency": "eventual"}, "deployments[0].concurrency", "pessimistic"),
    ({"deployments.0.conflict_retry": {"max_attempts": 0}},
     "deployments[0].conflict_retry.max_attempts", "greater than or equal to 1"),
    ({"deployments.0.conflict_retry": {"backoff_cap_ms": float("nan")}},
     "deployments[0].conflict_retry.backoff_cap_ms", "finite"),
    ({"deployments.0.conflict_retry": {"max_attempts": 10**9}},
     "deployments[0].conflict_retry.max_attempts", "less than or equal"),
    ({"deployments.0.databases.0.concurrency": "none"},
     "deployments[0].databases[0].concurrency", "pessimistic"),
    ({"deployments.0.hot_accounts": {"jackpot": {"database": "nowhere"}}},
     "deployments[0]", "hot_accounts.jackpot: database 'nowhere'"),
])
def test_bad_concurrency_settings_name_the_field(patch: dict[str, Any], field: str,
                                                 reason: str) -> None:
    raw = {
        "name": "bad",
        "operations": {"bet": {"weight": 1, "steps": [
            {"component": "wallet", "db": {"kind": "constant", "value_ms": 1},
             "player_row": True}]}},
        "deployments": [{"name": "d", "kind": "monolith",
                         "services": [{"name": "app", "components": ["wallet"], "db_pool": 4,
                                       "database": "main"}],
                         "databases": [{"name": "main"}]}],
    }
    for path, value in patch.items():
        node: Any = raw
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node[p]
        node[parts[-1]] = value
    with pytest.raises(ScenarioError) as err:
        parse_scenario(raw, "bad.yaml")
    text = str(err.value)
    assert text.startswith("bad.yaml: ") and field in text and reason in text


def test_player_row_needs_a_database_write() -> None:
    for step, reason in (({"component": "wallet", "cpu": {"kind": "constant", "value_ms": 1},
                           "player_row": True}, "give db"),
                         ({"component": "wallet", "db": {"kind": "constant", "value_ms": 1},
                           "player_row": True, "read": True}, "a read")):
        with pytest.raises(ScenarioError, match=reason):
            parse_scenario({"name": "x", "operations": {"bet": {"weight": 1, "steps": [step]}},
                            "deployments": [{"name": "d", "kind": "monolith", "services": [
                                {"name": "a", "components": ["wallet"], "db_pool": 1,
                                 "database": "m"}], "databases": [{"name": "m"}]}]})


def test_defaults_are_the_reference_back_offices() -> None:
    """reference_impl/storage/base.py: StorageSettings(concurrency="pessimistic",
    max_retries=50); sql_storage._backoff: U(0, min(0.05, 0.0005 * 2^min(n, 7)))."""
    sc = _scenario({"component": "wallet", "db": {"kind": "constant", "value_ms": 1}}, rate=1)
    dep = sc.deployments[0].model_copy(update={"concurrency": "pessimistic"})
    fresh = type(dep).model_validate({"name": "x", "kind": "monolith", "services": [
        {"name": "a", "components": ["wallet"]}]})
    assert fresh.concurrency == "pessimistic"
    r = fresh.conflict_retry
    assert (r.max_attempts, r.backoff_base_ms, r.backoff_cap_ms) == (50, 0.5, 50.0)


# ---------------------------------------------------------------------- results and report


def test_contention_columns_survive_save_and_load(tmp_path: Path) -> None:
    res = run(_scenario({"component": "wallet", "player_row": True,
                         "db": {"kind": "constant", "value_ms": 2}}, rate=200, duration=10,
                        reps=2, concurrency="optimistic", bin_s=1.0), jobs=1)
    assert set(CONTENTION_COLUMNS) <= set(res.summary.columns)
    assert {c for c in CONTENTION_COLUMNS if not c.endswith("_ci")} == set(CONTENTION_METRICS)
    back = Results.load(res.save(tmp_path))
    for c in CONTENTION_COLUMNS:
        assert back.summary[c].dtype == np.float64
        np.testing.assert_array_equal(back.summary[c].to_numpy(), res.summary[c].to_numpy())
    assert back.meta["concurrency"] == {"d": "optimistic; at most 50 attempts, backoff "
                                             "0.5-50 ms"}
    assert "Aborts / request" in contention_markdown(back) and has_contention(back)
    report = write_report(back, tmp_path / "report").read_text()
    assert "## Contention" in report and "Concurrency control" in report
    assert contention_lines(back)[1].startswith("d ")


def test_no_contention_no_columns() -> None:
    res = run(_scenario({"component": "wallet", "db": {"kind": "constant", "value_ms": 1}},
                        rate=50, duration=5, reps=2, bin_s=1.0), jobs=1)
    assert not set(CONTENTION_COLUMNS) & set(res.summary.columns)
    assert "concurrency" not in res.meta
    assert contention_lines(res) == []
    assert "No step locks" in contention_markdown(res)
    assert not has_contention(res)


# ---------------------------------------------------------------------- the judged comparison


def _jackpot(concurrency: str) -> Results:
    sets = ["simulation.duration_s=3", "simulation.replications=2", "simulation.warmup=0",
            "simulation.timeseries_bin_s=0.5"]
    sets += [f"deployments.{d}.concurrency={concurrency}"
             for d in ("monolith", "microservices", "hybrid")]
    return run(load_scenario(ROOT / "scenarios" / "jackpot_night.yaml", sets), jobs=1,
               deployments=["monolith", "hybrid"])


def test_optimistic_against_pessimistic_on_jackpot_night_reports_aborts_and_lock_waits() -> None:
    pess, opt = _jackpot("pessimistic"), _jackpot("optimistic")
    print()
    for name, res in (("pessimistic", pess), ("optimistic", opt)):
        print(f"--- jackpot_night, {name}")
        print("\n".join(contention_lines(res)))
    for arch in ("monolith", "hybrid"):
        p = pess.summary.set_index(["architecture", "operation"]).loc[(arch, "bet")]
        o = opt.summary.set_index(["architecture", "operation"]).loc[(arch, "bet")]
        # pessimistic: writers of the one jackpot row wait for it, nobody aborts
        assert p.lock_wait_p99_ms > 0 and p.aborts_per_request == 0
        # optimistic: no lock waits, the jackpot's writers abort and retry instead
        assert math.isnan(o.lock_wait_p99_ms) and o.aborts_per_request > 0
        assert o.retries_per_request > 0 and o.lost_ms_per_request > 0
    mono_o = opt.summary.set_index(["architecture", "operation"]).loc[("monolith", "bet")]
    hyb_o = opt.summary.set_index(["architecture", "operation"]).loc[("hybrid", "bet")]
    # one jackpot row (monolith) against 8 sub-accounts (hybrid): far more conflicts
    assert mono_o.aborts_per_request > 5 * hyb_o.aborts_per_request


def test_the_reference_optimistic_mode_checks_players_and_locks_hot_accounts() -> None:
    """Optimistic deployment, pessimistic hot account (the reference's optimistic mode: the
    player's version is checked, the jackpot incremented in place under a row lock): bets
    wait for the jackpot's lock and abort when the player's row moved.

    (Within one step the model takes locks before it reads versions, so a step holding the
    only jackpot lock never sees its player's row move: the two are separate steps here.)"""
    scen = _scenario({"component": "wallet", "player_row": True,
                      "db": {"kind": "exponential", "mean_ms": 2}}, rate=300, duration=20,
                     players=2, concurrency="optimistic", bin_s=1.0,
                     hot={"jackpot": {"sub_accounts": 1, "concurrency": "pessimistic"}})
    raw = scen.model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["operations"]["bet"]["steps"].append(
        {"component": "wallet", "lock": "jackpot", "db": {"kind": "exponential", "mean_ms": 2}})
    res = run(parse_scenario(raw), jobs=1)
    row = _row(res)
    assert row.lock_wait_p99_ms > 0 and row.aborts_per_request > 0
    assert res.meta["concurrency"]["d"].startswith("optimistic; hot account jackpot pessimistic")
    assert _station(res, "lock:jackpot[0]").utilisation > 0.3
    assert "rows:player" not in set(res.stations["station"])  # no player locks: optimistic


def test_no_contended_step_builds_no_contention_model() -> None:
    """The request path skips the model entirely (engine speed unchanged)."""
    from sim.engine.core import Engine
    from sim.model.topology import compile_topology

    plain = _scenario({"component": "wallet", "db": {"kind": "constant", "value_ms": 1}},
                      rate=1)
    locked = _scenario({"component": "wallet", "db": {"kind": "constant", "value_ms": 1},
                        "player_row": True}, rate=1)
    rng = np.random.default_rng(1)
    assert Engine(compile_topology(plain, plain.deployments[0]), rng).contention is None
    assert Engine(compile_topology(locked, locked.deployments[0]), rng).contention is not None
