"""Report sections comparing deployments: what each costs next to its latency, and the paired
differences between them (``meta["cost"]`` and ``meta["paired"]`` of a simulated run)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from sim.reports.report import format_ci, format_number, markdown_table
from sim.reports.results import Results


def cost_markdown(res: Results) -> str:
    """Cores and connections per deployment beside the p99 of each operation with an SLO."""
    cost: dict[str, dict[str, Any]] = res.meta.get("cost") or {}
    if not cost:
        return "_No cost data (measured results, or an older run)._"
    targets = res.slo_targets()
    ops = [op for op in res.operations if "p99_ms" in targets.get(op, {})] or res.operations
    summ = res.summary.set_index(["architecture", "operation"])
    rows = []
    for arch in res.architectures:
        c = cost.get(arch, {})
        row: list[Any] = [arch, format_number(c.get("cores")), format_number(c.get("connections"))]
        for op in ops:
            r = summ.loc[(arch, op)] if (arch, op) in summ.index else None
            row.append("–" if r is None else format_ci(r["p99_ms"], r["p99_ms_ci"]))
        rows.append(row)
    headers = ["deployment", "cores", "connections", *[f"{op} p99 ms" for op in ops]]
    return ("Cores: services' cores x replicas plus the databases' cores x shards; connections: "
            "database connections the services' pools open.\n\n"
            + markdown_table(headers, rows, "l" + "r" * (len(headers) - 1)))


def paired_markdown(res: Results) -> str:
    """Paired differences per operation (mean and p99), with the verdict where decided."""
    paired = pd.DataFrame(res.meta.get("paired") or [])
    if paired.empty:
        return "_One deployment only: nothing to pair._"
    rows = []
    for r in paired.itertuples(index=False):
        verdict = f"**{r.better}** better" if r.better else "not decided (contains 0)"
        rows.append([f"{r.architecture} − {r.reference}", r.operation, r.metric[:-3],
                     format_ci(r.difference, r.ci, " ms"), format_number(r.unpaired_ci, " ms"),
                     verdict])
    return ("Every deployment sees the same arrivals and, where the paths agree, the same "
            "per-request demands, so each replication gives one paired difference (B − A; "
            "positive: B slower). 95% paired t interval over replications; the unpaired "
            "(Welch) half-width on the same estimates shows what pairing saves. A deployment "
            "is named better only where the paired interval excludes zero.\n\n"
            + markdown_table(["B − A", "operation", "metric", "difference", "unpaired ±",
                              "verdict"], rows, "llrrrl"))
