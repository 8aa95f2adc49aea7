"""The capacity answer of a sweep, read from its tidy table.

* **Smallest configuration meeting every SLO**, per deployment: among the points where every
  SLO of the deployment is *met* (the whole 95% interval within the target, error budget
  included; see ``sim.reports.results.verdict``), the one with the fewest total cores (cores
  per replica x replicas plus the databases'), the earlier point on ties.
* **Breaking load**, per deployment, when a varied dimension is a load (a ``population.*``
  path or closed-loop users): the smallest load value at which the deployment no longer meets
  every SLO (the verdict there is ``missed``, or ``uncertain`` when the interval straddles a
  target), for each combination of the other dimensions.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sim.sweep.grid import Dimension

MET = "met"


def point_status(table: pd.DataFrame, dims: list[Dimension]) -> pd.DataFrame:
    """One row per (point, architecture): the dimensions, cores, connections, ``meets`` (every
    SLO met) and ``failing`` (the SLOs not met, as ``operation metric verdict``)."""
    names = [d.name for d in dims]
    rows = []
    for (point, arch), g in table.groupby(["point", "architecture"], sort=False):
        slo = g[g["verdict"] != ""]
        bad = slo[slo["verdict"] != MET]
        first = g.iloc[0]
        rows.append({"point": point, **{n: first[n] for n in names}, "architecture": arch,
                     "cores": int(first["cores"]), "connections": int(first["connections"]),
                     "meets": bool(len(slo)) and bad.empty,
                     "failing": "; ".join(f"{r.operation} {r.metric} {r.verdict}"
                                          for r in bad.itertuples(index=False))})
    return pd.DataFrame(rows)


def smallest_meeting(table: pd.DataFrame, dims: list[Dimension]) -> pd.DataFrame:
    """Per architecture: the point meeting every SLO with the fewest cores (or none)."""
    st = point_status(table, dims)
    rows = []
    for arch in dict.fromkeys(st["architecture"]):
        ok = st[(st["architecture"] == arch) & st["meets"]]
        if ok.empty:
            rows.append({"architecture": arch, "point": None, "cores": None, "connections": None,
                         "configuration": "none in the grid meets every SLO"})
            continue
        best = ok.sort_values(["cores", "point"], kind="stable").iloc[0]
        conf = ", ".join(f"{d.name}={best[d.name]}" for d in dims)
        rows.append({"architecture": arch, "point": int(best["point"]),
                     "cores": int(best["cores"]), "connections": int(best["connections"]),
                     "configuration": conf})
    return pd.DataFrame(rows)


def _sorted_values(dim: Dimension) -> list[Any]:
    try:
        return sorted(dim.values)
    except TypeError:
        return list(dim.values)


def breaking_loads(table: pd.DataFrame, dims: list[Dimension]) -> pd.DataFrame:
    """Per architecture (and combination of the other dimensions): the first load at which
    some SLO is not met; empty when no dimension is a load."""
    loads = [d for d in dims if d.is_load]
    cols = ["architecture", "load", "others", "breaks_at", "failing"]
    if not loads:
        return pd.DataFrame(columns=cols)
    st = point_status(table, dims)
    rows = []
    for load in loads:
        others = [d.name for d in dims if d is not load]
        groups = st.groupby(["architecture", *others], sort=False) if others else \
            st.groupby(["architecture"], sort=False)
        for key, g in groups:
            keys = key if isinstance(key, tuple) else (key,)
            arch = keys[0]
            where = ", ".join(f"{n}={v}" for n, v in zip(others, keys[1:], strict=True))
            breaks, failing = None, ""
            by_value = {v: g[g[load.name] == v] for v in _sorted_values(load)}
            for v, sel in by_value.items():
                if not sel.empty and not bool(sel["meets"].iloc[0]):
                    breaks, failing = v, str(sel["failing"].iloc[0])
                    break
            rows.append({"architecture": arch, "load": load.name, "others": where,
                         "breaks_at": breaks, "failing": failing})
    return pd.DataFrame(rows, columns=cols)


def capacity_meta(table: pd.DataFrame, dims: list[Dimension]) -> dict[str, Any]:
    """The capacity answer as plain data (for sweep.json)."""
    small = smallest_meeting(table, dims)
    brk = breaking_loads(table, dims)
    return {"smallest_meeting": small.astype(object).where(small.notna(), None)
            .to_dict(orient="records"),
            "breaking_load": brk.astype(object).where(brk.notna(), None)
            .to_dict(orient="records")}
