"""Does a reduced run (``--reduce``) tell what the full system does? Run both and compare.

For each load-balancing policy asked for, the scenario is simulated twice on the same seeds,
reduced (its own factor, see :func:`sim.model.topology.reduce_factor`) and at full size, and
each operation's p50 and p99 of each deployment are compared. The two *agree* when their
95% confidence intervals overlap (``|full - reduced| <= hw_full + hw_reduced``); with dozens
of comparisons per scenario a per-comparison test at 95% would fail some by chance alone.
Each row also carries Welch's t-test p-value (from the two intervals and their replication
counts) and ``confirmed``: the difference survives Holm's correction at a 5% family-wise
level over the frame's comparisons. A row that disagrees by the overlap rule but is not
confirmed is what chance gives among many comparisons; a confirmed one is a real bias.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from scipy import stats

from sim.model.scenario import Scenario, parse_scenario
from sim.model.topology import (
    compile_topology,
    not_reducible_because,
    reduce_factor,
    reduce_refusal,
)
from sim.runner import run

METRICS = ("p50_ms", "p99_ms")
FAMILY_ALPHA = 0.05
"""Family-wise error level of ``confirmed`` (Holm over a frame's comparisons)."""
POLICIES = ("round_robin", "random", "least_outstanding")


def with_policy(scenario: Scenario, policy: str, reduce: bool,
                overrides: dict[str, Any] | None = None) -> Scenario:
    """``scenario`` with every deployment balancing by ``policy`` and ``reduce`` set."""
    raw = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    for d in raw["deployments"]:
        d["load_balancing"] = policy
    raw["simulation"]["reduce"] = reduce
    for key, value in (overrides or {}).items():
        raw["simulation"][key] = value
    return parse_scenario(raw, f"{scenario.name} ({policy}, reduce={reduce})")


def route_shares(scenario: Scenario) -> dict[tuple[str, str], float]:
    """(deployment, operation) -> the smallest share of all requests that visit (synchronously
    or through the broker) a service the operation's response waits on (1.0: every request
    enters every service it waits on). Shown beside each comparison: under round robin a
    service only some operations visit is where a reduced run approximates (see
    :mod:`sim.model.op_schedule`)."""
    w = {name: op.weight for name, op in scenario.operations.items()}
    total = sum(w.values())
    out = {}
    for dep in scenario.deployments:
        topo = compile_topology(scenario, dep, 1)
        visits = [{r.entry, *(st.service for st in r.steps)} for r in topo.routes]
        share = {s: sum(w[r.operation] for r, svcs in zip(topo.routes, visits, strict=True)
                        if s in svcs) / total for s in range(len(topo.services))}
        for r in topo.routes:  # the response waits on the entry and the synchronous calls
            waited = {r.entry, *(st.service for st in r.steps if not st.is_async)}
            out[(dep.name, r.operation)] = min(share[s] for s in waited)
    return out


def compare(scenario: Scenario, policy: str, jobs: int | None = None,
            deployments: list[str] | None = None, reduced_duration_s: float | None = None,
            **simulation: Any) -> pd.DataFrame:
    """Reduced vs full p50/p99 per deployment and operation under ``policy``.

    ``simulation`` overrides fields of the scenario's ``simulation`` (duration_s,
    replications, seed...). ``reduced_duration_s`` runs the reduced scenario longer: it
    sees 1/k of the requests per second, so a window short enough for the full run holds
    too few of the rare operations' requests for their percentiles (valid when the load is
    stationary over both windows). When the reduced scenario refuses to reduce, the frame
    is empty and ``frame.attrs["refusal"]`` says why.
    """
    longer = {} if reduced_duration_s is None else {"duration_s": reduced_duration_s}
    reduced = with_policy(scenario, policy, True, simulation | longer)
    k = reduce_factor(reduced)
    frame = pd.DataFrame()
    frame.attrs["reduce_factor"] = k
    refusal = reduce_refusal(reduced)
    if refusal is not None or k <= 1:
        frame.attrs["refusal"] = refusal or not_reducible_because(reduced)
        return frame
    full = run(with_policy(scenario, policy, False, simulation), jobs=jobs,
               deployments=deployments).summary
    red = run(reduced, jobs=jobs, deployments=deployments).summary
    f = full.set_index(["architecture", "operation"])
    r = red.set_index(["architecture", "operation"])
    shares = route_shares(scenario)
    rows = []
    for key in f.index:
        for m in METRICS:
            fv, fh = f.loc[key, m], f.loc[key, f"{m}_ci"]
            rv, rh = r.loc[key, m], r.loc[key, f"{m}_ci"]
            diff = rv - fv
            agree = bool(abs(diff) <= fh + rh) if not math.isnan(diff) else False
            p = welch_p(fv, fh, int(f.loc[key, "replications"]),
                        rv, rh, int(r.loc[key, "replications"]))
            rows.append({"policy": policy, "architecture": key[0], "operation": key[1],
                         "metric": m, "full": fv, "full_ci": fh, "reduced": rv,
                         "reduced_ci": rh, "rel_diff": diff / fv if fv else math.nan,
                         "agree": agree, "p_value": p, "route_share": round(shares[key], 4)})
    out = pd.DataFrame(rows)
    out["confirmed"] = holm_reject(out["p_value"].to_numpy())
    out.attrs["reduce_factor"] = k
    return out


def welch_p(m1: float, hw1: float, n1: int, m2: float, hw2: float, n2: int) -> float:
    """Two-sided p-value of Welch's t-test for equal means, from two 95% Student intervals
    (half-widths ``hw``) over ``n`` replications each (NaN if either is undefined)."""
    if n1 < 2 or n2 < 2 or any(math.isnan(x) for x in (m1, hw1, m2, hw2)):
        return math.nan
    v1 = (hw1 / float(stats.t.ppf(0.975, n1 - 1))) ** 2  # squared standard errors
    v2 = (hw2 / float(stats.t.ppf(0.975, n2 - 1))) ** 2
    if v1 + v2 == 0.0:
        return 1.0 if m1 == m2 else 0.0
    t = abs(m1 - m2) / math.sqrt(v1 + v2)
    dof = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    return float(2.0 * stats.t.sf(t, dof))


def holm_reject(p: Any, alpha: float = FAMILY_ALPHA) -> list[bool]:
    """Holm's step-down test: which of the p-values reject at family-wise level ``alpha``
    (NaN p-values never reject and do not count)."""
    vals = [(float(x), i) for i, x in enumerate(p) if not math.isnan(float(x))]
    vals.sort()
    out = [False] * len(p)
    m = len(vals)
    for j, (pv, i) in enumerate(vals):
        if pv > alpha / (m - j):
            break
        out[i] = True
    return out
