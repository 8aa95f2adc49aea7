"""The sweep report: ``sweep.md`` and one PNG per varied parameter, from a sweep's tidy table.

For each varied parameter: the p99 of every operation with a p99 SLO (dashed red line: the
target), the total throughput and the busiest station's utilisation, against the parameter,
one line per deployment with its 95% confidence band, the knee marked (see :func:`knee_index`).
Reads only the table and ``sweep.json``'s meta (capacity answer included), never the engine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from sim.reports.report import format_ci, format_number, format_percent, markdown_table

#: The knee: the last (or first) point whose p99 is within KNEE_FACTOR of the line's best
#: p99, next to a point beyond it (where latency starts to climb).
KNEE_FACTOR = 2.0
#: Most lines drawn per panel (deployments x combinations of the other parameters).
MAX_LINES = 12
UTILISATION_GUIDE = 0.8
REPORT_FILE = "sweep.md"
_DPI = 100


def knee_index(ys: list[float]) -> int | None:
    """Index of the knee of a latency curve ordered by the varied parameter, or None.

    Points with ``y <= KNEE_FACTOR * min(y)`` are flat; the knee is the first flat point
    that has a non-flat neighbour (the edge of the flat region where latency takes off).
    """
    vals = np.asarray(ys, dtype=float)
    ok = ~np.isnan(vals)
    if ok.sum() < 2:
        return None
    best = float(np.nanmin(vals))
    flat = [bool(o and v <= KNEE_FACTOR * best) for v, o in zip(vals, ok, strict=True)]
    for i, f in enumerate(flat):
        if not f:
            continue
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(flat)]
        if any(not flat[j] and ok[j] for j in neighbours):
            return i
    return None


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _lines(table: pd.DataFrame, dim: str, others: list[str]) -> list[tuple[str, pd.DataFrame]]:
    keys = ["architecture", *others]
    out = []
    for key, g in table.groupby(keys, sort=False):
        keyt = key if isinstance(key, tuple) else (key,)
        label = str(keyt[0]) + "".join(f", {n.rsplit('.', 1)[-1]}={v}"
                                       for n, v in zip(others, keyt[1:], strict=True))
        out.append((label, g))
    return out[:MAX_LINES]


def plot_dimension(table: pd.DataFrame, dim: str, others: list[str], path: Path) -> Path | None:
    """Draw p99 per SLO'd operation, throughput and busiest utilisation against ``dim``."""
    values = list(dict.fromkeys(table[dim]))
    if not _numeric(values):
        return None
    p99 = table[(table["metric"] == "p99_ms") & table["target"].notna()]
    ops = list(dict.fromkeys(p99["operation"]))
    panels = [("p99_ms", op) for op in ops] + [("throughput_rps", "*"),
                                               ("busiest_utilisation", "*")]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows), dpi=_DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (metric, op) in zip(axes, panels, strict=False):
        sel = table[(table["metric"] == metric) & (table["operation"] == op)]
        for label, g in _lines(sel, dim, others):
            g = g.sort_values(dim)
            x = g[dim].to_numpy(float)
            y = g["value"].to_numpy(float)
            line = ax.plot(x, y, marker="o", ms=3, label=label)[0]
            ax.fill_between(x, g["lower"].to_numpy(float), g["upper"].to_numpy(float),
                            color=line.get_color(), alpha=0.2, lw=0)
            k = knee_index(list(y)) if metric == "p99_ms" else None
            if k is not None:
                ax.plot([x[k]], [y[k]], marker="o", ms=11, mfc="none", mec="black", mew=1.5)
        if metric == "p99_ms":
            target = sel["target"].dropna()
            if len(target):
                ax.axhline(float(target.iloc[0]), color="red", ls="--", lw=1, label="SLO")
            ax.set_title(f"{op} p99 (ms)")
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
        elif metric == "throughput_rps":
            ax.set_title("throughput, all operations (req/s)")
        else:
            ax.axhline(UTILISATION_GUIDE, color="grey", ls=":", lw=1)
            ax.set_title("busiest station utilisation")
            ax.set_ylim(0, 1.05)
        ax.set_xlabel(dim.rsplit(".", 1)[-1] if "+" not in dim else dim)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"against {dim} (band: 95% CI; ring: knee)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path


def capacity_markdown(meta: dict[str, Any]) -> str:
    """The capacity answer: smallest configuration meeting every SLO, breaking loads."""
    cap = meta.get("capacity") or {}
    rows = [[r["architecture"], r["configuration"], format_number(r["cores"]),
             format_number(r["connections"])] for r in cap.get("smallest_meeting", [])]
    text = ("Smallest configuration in the grid meeting every SLO (whole 95% interval within "
            "each target, error budget included), by total cores (services' cores x replicas "
            "plus the databases'):\n\n"
            + markdown_table(["deployment", "configuration", "cores", "connections"], rows,
                             "llrr"))
    brk = cap.get("breaking_load") or []
    if brk:
        rows = [[r["architecture"], r["others"] or "–",
                 "holds over the whole grid" if r["breaks_at"] is None
                 else format_number(r["breaks_at"]), r["failing"] or "–"] for r in brk]
        text += (f"\n\nLoad ({brk[0]['load']}) at which each deployment first fails to meet "
                 "every SLO:\n\n" + markdown_table(["deployment", "other parameters",
                                                    "first failing load", "SLOs not met"],
                                                   rows, "llrl"))
    return text


def points_markdown(table: pd.DataFrame, dims: list[str]) -> str:
    """One row per (point, deployment): parameters, cost, p99 of each SLO'd operation, busiest
    station."""
    slo_ops = list(dict.fromkeys(table[(table["metric"] == "p99_ms")
                                       & table["target"].notna()]["operation"]))
    headers = [d.rsplit(".", 1)[-1] for d in dims] + ["deployment", "cores", "connections"]
    headers += [f"{op} p99 ms" for op in slo_ops] + ["busiest station"]
    rows = []
    for (_pt, arch), g in table.groupby(["point", "architecture"], sort=False):
        first = g.iloc[0]
        row: list[Any] = [first[d] for d in dims] + [arch, format_number(first["cores"]),
                                                     format_number(first["connections"])]
        for op in slo_ops:
            r = g[(g["operation"] == op) & (g["metric"] == "p99_ms")]
            if r.empty:
                row.append("–")
                continue
            r0 = r.iloc[0]
            mark = {"met": "", "missed": " ✗", "uncertain": " ?"}.get(r0["verdict"], "")
            row.append(format_ci(r0["value"], r0["ci"]) + mark)
        b = g[g["metric"] == "busiest_utilisation"]
        row.append(f"{b.iloc[0]['station']} {format_percent(b.iloc[0]['value'])}"
                   if len(b) else "–")
        rows.append(row)
    return markdown_table(headers, rows, "r" * len(dims) + "l" + "r" * (len(headers) - len(dims)
                                                                        - 2) + "l")


def write_sweep_report(table: pd.DataFrame, meta: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``sweep.md`` and its plots into ``out_dir``; return the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dims = [d["name"] for d in meta.get("dimensions", [])]
    images = []
    for i, dim in enumerate(dims):
        name = f"sweep_{i}.png"
        others = [d for d in dims if d != dim]
        if plot_dimension(table, dim, others, out / name) is not None:
            images.append(f"### Against {dim}\n\n![{dim}]({name})")
        else:
            images.append(f"### Against {dim}\n\n_Values are not numbers: no plot._")
    varied = "\n".join(f"- `{d['name']}`: {', '.join(map(str, d['values']))}"
                       for d in meta.get("dimensions", []))
    sections = [
        f"# Sweep: {meta.get('scenario', '')}",
        f"Varied:\n\n{varied}\n\n{meta.get('replications')} replications per point, "
        f"{format_number(meta.get('duration_s'))} s simulated each, seed {meta.get('seed')}, "
        f"run on {meta.get('cluster')}. Verdict marks: ✗ missed, ? uncertain (the interval "
        "straddles the target).",
        "## Capacity answer\n\n" + capacity_markdown(meta),
        "## Points\n\n" + points_markdown(table, dims),
        "## Plots\n\n" + "\n\n".join(images),
    ]
    path = out / REPORT_FILE
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return path
