"""Validation cases for contention (part of `testbed validate --analytic`).

* a hot account's single row under pessimistic locking, written by a Poisson stream with
  gamma database times and nothing else in the way, is an M/G/1 queue on its lock: the mean
  wait is Pollaczek-Khinchine's;
* one player's balance row, written at a Poisson rate with exponential database times, is an
  M/M/1 on the player's lock: mean wait rho / (mu - lam), p99 of the wait
  ln(rho / 0.01) / (mu - lam);
* optimistic writers of one row without retries, constant time T from read to commit: a
  start within T after a successful start loses, the first start after it wins, so the
  successes are a renewal process with dead time T and P(abort) = lam T / (1 + lam T).
"""

from __future__ import annotations

import math
from typing import Any

from sim.analysis.validate import Case, _base, _exp
from sim.model.scenario import parse_scenario

ROOM = {"workers": 100_000, "db_pool": 256, "database": "main", "cores": 4}
DB = {"name": "main", "cores": 256, "max_connections": 256}  # never shares its cores


def _rows(name: str, lam: float, customers: int, reps: int, seed: int, step: dict[str, Any],
          **deployment: Any) -> Any:
    """One operation at ``lam``/s of one player writing through ``step``; room for all but
    the contended row."""
    raw = _base(name, customers / lam, reps, seed)
    raw["population"] = {"registered_players": 1, "peak_online": 1}
    raw["operations"] = {"bet": {"weight": 0, "rate_rps": lam,
                                 "steps": [{"component": "wallet", **step}]}}
    raw["deployments"] = [{"name": "d", "kind": "monolith", "databases": [DB],
                           "services": [{"name": "app", "components": ["wallet"], **ROOM}]}
                          | deployment]
    return parse_scenario(raw, f"validate:{name}")


def _station(name: str, metric: str) -> Any:
    def read(res: Any) -> tuple[float, float]:
        row = res.stations.set_index("station").loc[name]
        return float(row[metric]), float(row[f"{metric}_ci"])
    return read


def _op(metric: str) -> Any:
    def read(res: Any) -> tuple[float, float]:
        row = res.summary.set_index("operation").loc["bet"]
        return float(row[metric]), float(row[f"{metric}_ci"])
    return read


def hot_row_case(rho: float, customers: int, reps: int, seed: int) -> list[Case]:
    """Pessimistic hot row: M/G/1 on the lock (gamma, cv 0.5)."""
    mean_ms, cv = 2.0, 0.5
    lam = rho / (mean_ms / 1000.0)
    scen = _rows("hot_row", lam, customers, reps, seed,
                 {"db": {"kind": "gamma", "mean_ms": mean_ms, "cv": cv}, "lock": "jackpot"},
                 hot_accounts={"jackpot": {"sub_accounts": 1}})
    es2 = (1 + cv * cv) * (mean_ms / 1000.0) ** 2
    wq = lam * es2 / (2 * (1 - rho)) * 1000.0
    return [Case(f"hot row M/G/1 rho={rho}", "lock mean wait (ms)", wq, scen,
                 _station("lock:jackpot[0]", "mean_wait_ms"))]


def player_row_case(rho: float, customers: int, reps: int, seed: int) -> list[Case]:
    """Pessimistic player row: M/M/1 on the player's lock (mean and p99 of the wait)."""
    mean_ms = 2.0
    mu = 1000.0 / mean_ms
    lam = rho * mu
    scen = _rows("player_row", lam, customers, reps, seed,
                 {"db": _exp(mean_ms), "player_row": True})
    label = f"player row M/M/1 rho={rho}"
    return [Case(label, "lock mean wait (ms)", rho / (mu - lam) * 1000.0, scen,
                 _station("rows:player", "mean_wait_ms")),
            Case(label, "lock wait p99 (ms)", math.log(rho / 0.01) / (mu - lam) * 1000.0,
                 scen, _op("lock_wait_p99_ms"))]


def optimistic_case(load: float, customers: int, reps: int, seed: int) -> list[Case]:
    """Optimistic row without retries: P(abort) = lam T / (1 + lam T)."""
    t_ms = 2.0
    lam = load / (t_ms / 1000.0)
    scen = _rows("optimistic", lam, customers, reps, seed,
                 {"db": {"kind": "constant", "value_ms": t_ms}, "player_row": True},
                 concurrency="optimistic", conflict_retry={"max_attempts": 1})
    return [Case(f"optimistic row lam*T={load}", "aborts per request", load / (1 + load),
                 scen, _op("aborts_per_request"))]


def contention_cases(scale: float, seed: int) -> list[Case]:
    """Every case of this module at ``scale`` (1.0 for `testbed validate --analytic`)."""
    cust = int(200_000 * scale)
    return [
        *hot_row_case(0.7, cust, 5, seed + 20),
        *player_row_case(0.6, cust, 10, seed + 21),
        *optimistic_case(0.6, cust, 5, seed + 22),
    ]
