"""Does a reduced run (``--reduce``) tell what the full system does? Run both and compare.

For each load-balancing policy asked for, the scenario is simulated twice on the same seeds,
reduced (its own factor, see :func:`sim.model.topology.reduce_factor`) and at full size, and
each operation's p50 and p99 of each deployment are compared. The two *agree* when their
95% confidence intervals overlap (``|full - reduced| <= hw_full + hw_reduced``); with dozens
of comparisons per scenario a per-comparison test at 95% would fail some by chance alone.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from sim.model.scenario import Scenario, parse_scenario
from sim.model.topology import compile_topology, reduce_factor, reduce_refusal
from sim.runner import run

METRICS = ("p50_ms", "p99_ms")
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


EXACT_SHARE = 0.5
"""Round robin: a route is reproduced (nearly) exactly when every service on it is visited by
at least this share of all requests; services fewer requests visit see a smoother stream in
the full system than in the partition (the documented approximation)."""


def route_shares(scenario: Scenario) -> dict[tuple[str, str], float]:
    """(deployment, operation) -> the smallest share of all requests that visit (synchronously
    or through the broker) a service the operation's response waits on (1.0: every request
    enters every service it waits on)."""
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
            deployments: list[str] | None = None, **simulation: Any) -> pd.DataFrame:
    """Reduced vs full p50/p99 per deployment and operation under ``policy``.

    ``simulation`` overrides fields of the scenario's ``simulation`` (duration_s,
    replications, seed...). When the reduced scenario refuses to reduce, the frame is empty
    and ``frame.attrs["refusal"]`` says why.
    """
    reduced = with_policy(scenario, policy, True, simulation)
    k = reduce_factor(reduced)
    frame = pd.DataFrame()
    frame.attrs["reduce_factor"] = k
    refusal = reduce_refusal(reduced)
    if refusal is not None or k <= 1:
        frame.attrs["refusal"] = refusal or "nothing to reduce (reduce factor 1)"
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
            rows.append({"policy": policy, "architecture": key[0], "operation": key[1],
                         "metric": m, "full": fv, "full_ci": fh, "reduced": rv,
                         "reduced_ci": rh, "rel_diff": diff / fv if fv else math.nan,
                         "agree": agree, "route_share": round(shares[key], 4)})
    out = pd.DataFrame(rows)
    out.attrs["reduce_factor"] = k
    return out
