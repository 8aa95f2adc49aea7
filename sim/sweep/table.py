"""The tidy sweep table: one row per (point, deployment, operation, metric), with intervals.

Columns: ``point``, one column per varied dimension (named by its paths), ``architecture``,
``operation`` (``*`` for a deployment-wide row), ``metric``, ``value``, ``ci`` (95% half-width,
NaN when unknown), ``lower``, ``upper``, ``target`` (the SLO, NaN if none), ``verdict`` (met /
missed / uncertain / no data; empty without a target), ``station`` (for the busiest-station
row), ``cores`` and ``connections`` (the deployment's cost at that point) and ``replications``.

Per operation: throughput_rps, error_rate, mean_ms, p50_ms, p95_ms, p99_ms, p999_ms, and when
some step locks or version-checks rows the contention metrics (lock_wait_p50_ms,
lock_wait_p99_ms, aborts_per_request, retries_per_request, gave_up_per_request,
lost_ms_per_request). Per
deployment (operation ``*``): ``busiest_utilisation`` (the station with the highest utilisation)
and ``throughput_rps`` (all operations).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from sim.model.cost import deployment_cost
from sim.model.scenario import Scenario
from sim.reports.results import CONTENTION_COLUMNS, Results, verdict
from sim.sweep.grid import Dimension, Point

OP_METRICS = ("throughput_rps", "error_rate", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "p999_ms")
ALL_OPERATIONS = "*"
BUSIEST = "busiest_utilisation"
TABLE_FILE = "sweep.parquet"
META_FILE = "sweep.json"
BASE_COLUMNS = ("point", "architecture", "operation", "metric", "value", "ci", "lower", "upper",
                "target", "verdict", "station", "cores", "connections", "replications")


def _row(values: dict[str, Any], arch: str, op: str, metric: str, value: float, ci: float,
         target: float = math.nan, station: str = "") -> dict[str, Any]:
    h = 0.0 if math.isnan(ci) else ci
    return values | {"architecture": arch, "operation": op, "metric": metric, "value": value,
                     "ci": ci, "lower": value - h, "upper": value + h, "target": target,
                     "verdict": "" if math.isnan(target) else verdict(value, ci, target),
                     "station": station}


def point_rows(point: Point, scenario: Scenario, res: Results) -> list[dict[str, Any]]:
    """The table rows of one simulated point."""
    base = {"point": point.index, **point.values}
    targets = res.slo_targets()
    rows = []
    cost = {d.name: deployment_cost(d) for d in scenario.deployments}
    for arch in res.architectures:
        extra = {"cores": cost[arch].cores, "connections": cost[arch].connections,
                 "replications": int(res.meta["replications"][arch])}
        summ = res.summary[res.summary["architecture"] == arch]
        metrics = (*OP_METRICS, *[m for m in CONTENTION_COLUMNS
                                  if not m.endswith("_ci") and m in summ.columns])
        for r in summ.itertuples(index=False):
            for m in metrics:
                rows.append(_row(base, arch, r.operation, m, float(getattr(r, m)),
                                 float(getattr(r, f"{m}_ci")),
                                 targets.get(r.operation, {}).get(m, math.nan)) | extra)
        ci_sq = float((summ["throughput_rps_ci"].fillna(0.0) ** 2).sum())
        rows.append(_row(base, arch, ALL_OPERATIONS, "throughput_rps",
                         float(summ["throughput_rps"].sum()), math.sqrt(ci_sq)) | extra)
        st = res.stations[(res.stations["architecture"] == arch)
                          & res.stations["utilisation"].notna()]
        if len(st):
            top = st.loc[st["utilisation"].idxmax()]
            rows.append(_row(base, arch, ALL_OPERATIONS, BUSIEST, float(top["utilisation"]),
                             float(top["utilisation_ci"]), station=str(top["station"])) | extra)
    return rows


def build_table(dims: list[Dimension], points: list[Point], scenarios: list[Scenario],
                results: list[Results]) -> pd.DataFrame:
    """The whole sweep as one tidy DataFrame (column order: BASE_COLUMNS with the dimensions
    after ``point``)."""
    rows = [r for pt, sc, res in zip(points, scenarios, results, strict=True)
            for r in point_rows(pt, sc, res)]
    cols = ["point", *[d.name for d in dims], *BASE_COLUMNS[1:]]
    return pd.DataFrame(rows, columns=cols)


def save_sweep(table: pd.DataFrame, meta: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``sweep.parquet`` (the table) and ``sweep.json`` (what was swept, the answer)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / TABLE_FILE, index=False)
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return out


def load_sweep(path: str | Path) -> pd.DataFrame:
    """The table a ``testbed sweep --out DIR`` wrote; ``.attrs["meta"]`` holds sweep.json."""
    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    table_path = folder / TABLE_FILE
    if not table_path.is_file():
        raise FileNotFoundError(f"no {TABLE_FILE} in {folder} (written by `testbed sweep --out`)")
    df = pd.read_parquet(table_path)
    meta_path = folder / META_FILE
    df.attrs["meta"] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return df
