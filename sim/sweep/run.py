"""``run_sweep``: grid -> validated point scenarios -> Dask -> tidy table and capacity answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sim.sweep.capacity import capacity_meta
from sim.sweep.execute import dask_client, run_points, scheduler_address
from sim.sweep.grid import Dimension, build_grid, point_scenarios
from sim.sweep.table import build_table, save_sweep


@dataclass
class Sweep:
    """A finished sweep: the tidy table, what was varied, and the meta written to sweep.json."""

    table: pd.DataFrame
    dims: list[Dimension]
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> Path:
        """Write sweep.parquet and sweep.json to ``out_dir``."""
        return save_sweep(self.table, self.meta, out_dir)


def run_sweep(scenario_path: str | Path, dims: list[Dimension], overrides: list[str] | None = None,
              *, replications: int | None = None, scheduler: str | None = None,
              workers: int | None = None, progress: bool = False,
              paired: bool = True, client: Any = None) -> Sweep:
    """Simulate every point of the grid of ``dims`` on Dask and return the :class:`Sweep`.

    Every point is validated first (a bad path or value raises ``ScenarioError`` and nothing
    runs). ``replications`` defaults to the scenario's; ``scheduler`` (or the environment's
    ``DASK_SCHEDULER_ADDRESS``) selects an existing cluster, else a LocalCluster of ``workers``
    processes (default: one per core) is started and stopped. An open ``distributed.Client``
    (``client``) is used as it is and left open (notebooks, tests running several sweeps).
    """
    points = build_grid(dims)
    scenarios = point_scenarios(scenario_path, list(overrides or []), points)
    n = replications or scenarios[0].simulation.replications
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(points), unit="point", desc=scenarios[0].name, dynamic_ncols=True)
    address = scheduler_address(scheduler)
    tick = (lambda _i: bar.update(1)) if bar is not None else None
    try:
        if client is not None:
            address = str(client.scheduler.address)
            results = run_points(client, scenarios, n, on_point=tick, paired=paired)
        else:
            with dask_client(address, workers) as own:
                results = run_points(own, scenarios, n, on_point=tick, paired=paired)
    finally:
        if bar is not None:
            bar.close()
    table = build_table(dims, points, scenarios, results)
    first = scenarios[0]
    meta: dict[str, Any] = {
        "scenario": first.name,
        "scenario_file": str(scenario_path),
        "overrides": list(overrides or []),
        "dimensions": [{"name": d.name, "paths": list(d.paths), "values": list(d.values),
                        "is_load": d.is_load} for d in dims],
        "points": [{"point": p.index, "values": p.values} for p in points],
        "replications": n,
        "seed": first.simulation.seed,
        "duration_s": first.simulation.duration_s,
        "reduce_factors": sorted({int(r.meta["reduce_factor"]) for r in results}),
        "paired_demands": paired,
        "cluster": address or "LocalCluster",
        "slos": {op: s.targets() for op, s in first.slos.latency_ms.items()}
        | {"error_budget": first.slos.error_budget},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    meta["capacity"] = capacity_meta(table, dims)
    return Sweep(table=table, dims=dims, meta=meta)
