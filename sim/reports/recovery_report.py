"""The "Failure recovery" section of ``report.md``, its plot and its console lines, from the
``recovery`` table of any :class:`Results` (simulated or measured drills).

Availability (ok / all requests) sits next to the p99 of the *successful* requests in every
row, so a deployment that sheds or fails requests cannot look faster than one that serves
them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sim.reports.report import (
    _coarsen_factor,
    _colours,
    _isnan,
    finish_time_panels,
    format_ci,
    format_percent,
    markdown_table,
)
from sim.reports.results import Results

RECOVERY_PNG = "failure_recovery.png"
_FAULT_COLOUR = "tab:red"


def fault_windows(meta: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(label, start, end) of each fault stated in ``meta["fault_windows"]``."""
    out = []
    for w in meta.get("fault_windows") or []:
        try:
            out.append((str(w["name"]), float(w["start_s"]), float(w["end_s"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _seconds(r: Any, col: str) -> str:
    return format_ci(r[col], r[f"{col}_ci"], " s")


def _count(r: Any, col: str) -> str:
    return format_ci(r[col], r[f"{col}_ci"])


def recovery_markdown(res: Results) -> str:
    """Per fault: one table with the deployments side by side (rows per deployment), then the
    operations' recovery (availability next to the p99 of successful requests)."""
    rec = res.recovery
    if rec.empty:
        return "_No fault in this run._"
    parts = [
        "Times in seconds from the fault's start (detection, SLOs back: rolling p99 under "
        "the target and the error ratio within the threshold, staying so), the queue's drain "
        "from the restart. Counts over the fault and its recovery, whole system, means with "
        "95% intervals over replications; recovery times over the replications that "
        "recovered. Availability: ok / all requests; p99 of successful requests only."
    ]
    for fault, f in rec.groupby("fault", sort=False):
        first = f.iloc[0]
        parts.append(f"### {fault} ({first['kind']} of {first['target']}, "
                     f"{first['start_s']:g}-{first['end_s']:g} s)")
        rows = []
        for arch, g in f.groupby("architecture", sort=False):
            r = g.iloc[0]
            worst = g.loc[g["slo_restored_s"].fillna(math.inf).idxmax()]
            rows.append([
                arch, _seconds(r, "detect_s"),
                f"{format_ci(worst['slo_restored_s'], worst['slo_restored_s_ci'], ' s')} "
                f"({worst['operation']})",
                f"{g['recovered_share'].min():.0%}",
                _seconds(r, "drained_s"),
                format_ci(g["failed"].sum(), math.nan), format_ci(g["timed_out"].sum(), math.nan),
                format_ci(g["shed"].sum(), math.nan), _count(r, "lost_transactions"),
                f"{format_ci(r['peak_queue'], r['peak_queue_ci'])} ({r['peak_queue_station']})"
                if r["peak_queue_station"] else "n/a",
            ])
        parts.append(markdown_table(
            ["architecture", "detected after", "all SLOs back after (slowest op)",
             "recovered (share of replications)", "queue drained after restart", "failed",
             "timed out", "shed", "transactions lost", "peak queue (station)"], rows))
        op_rows = []
        for r in f.sort_values(["operation", "architecture"], kind="stable").itertuples():
            d = r._asdict()
            op_rows.append([
                r.operation, r.architecture, _seconds(d, "slo_restored_s"),
                f"{r.recovered_share:.0%}",
                format_percent(r.availability_fault, r.availability_fault_ci),
                format_percent(r.availability_recovery, r.availability_recovery_ci),
                format_percent(r.availability_after, r.availability_after_ci),
                format_ci(r.p99_ok_ms, r.p99_ok_ms_ci, " ms"),
                _count(d, "failed"), _count(d, "timed_out"), _count(d, "shed"),
                format_ci(r.retry_amplification, r.retry_amplification_ci),
            ])
        parts.append(markdown_table(
            ["operation", "architecture", "SLO back after", "recovered",
             "availability (fault)", "availability (recovery)", "availability (after)",
             "p99 of successes (fault + recovery)", "failed", "timed out", "shed",
             "attempts per request"], op_rows))
    parts.append("Totals of failed / timed out / shed in the first table add the operations' "
                 "means (no interval).")
    return "\n\n".join(parts)


def plot_recovery(res: Results, path: Path) -> Path | None:
    """Per architecture (columns): ok and failed throughput of all operations (top) and the
    rolling p99 of successful requests per operation (bottom), fault windows shaded."""
    ts = res.timeseries
    if res.recovery.empty or ts.empty:
        return None
    archs = [a for a in res.architectures if (ts["architecture"] == a).any()]
    bin_s = float(np.diff(np.unique(ts["t_s"])).min()) if ts["t_s"].nunique() > 1 else 1.0
    width = bin_s * _coarsen_factor(res, bin_s)
    colours = _colours(res.operations)
    windows = fault_windows(res.meta)
    fig = Figure(figsize=(4.6 * len(archs), 5.8), dpi=100, layout="constrained")
    axes = fig.subplots(2, len(archs), squeeze=False, sharex=True, sharey="row")
    has_rolling = "window_p99_ms" in ts.columns
    for j, arch in enumerate(archs):
        top, bottom = axes[0][j], axes[1][j]
        for ax in (top, bottom):
            for i, (name, a, b) in enumerate(windows):
                ax.axvspan(a, b, color=_FAULT_COLOUR, alpha=0.12, lw=0,
                           label=name if i == 0 or ax is top else "_nolegend_")
        d = ts[ts["architecture"] == arch]
        d = d.assign(t=np.floor(d["t_s"].to_numpy() / width) * width)
        n_rep = max(1, d["replication"].nunique())
        g = d.groupby("t")
        bad = g["errors"].sum() / (n_rep * width)
        ok = (g["requests"].sum() - g["errors"].sum()) / (n_rep * width)
        top.plot(ok.index, ok.to_numpy(), color="black", lw=1.3, label="ok")
        top.plot(bad.index, bad.to_numpy(), color="black", ls="--", lw=1.3,
                 label="not ok (failed, timed out, shed)")
        col = "window_p99_ms" if has_rolling else "p99_ms"
        for op in res.operations:
            o = d[d["operation"] == op]
            p99 = o.groupby("t")[col].mean()
            p99 = p99[p99 > 0]
            if not p99.empty:
                bottom.plot(p99.index, p99.to_numpy(), color=colours[op], lw=1, label=op)
        finish_time_panels(top, bottom, arch)
    axes[0][0].set_ylabel("requests/s (whole system)")
    window = res.recovery["window_s"].iloc[0]
    axes[1][0].set_ylabel(f"rolling p99 of successes ({window:g} s, ms)" if has_rolling
                          else "p99 of successes per bin (ms)")
    handles, labels = [], []
    for ax in (axes[0][-1], axes[1][-1]):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.savefig(path)
    return path


def recovery_console_lines(res: Results) -> list[str]:
    """A line per (fault, architecture): detection, all SLOs back, recovered share, losses."""
    rec = res.recovery
    if rec.empty:
        return []
    lines = ["failure recovery (s from the fault's start; 95% CI over replications):"]
    wf = max(len(str(x)) for x in rec["fault"]) + 2
    wa = max(len(str(x)) for x in rec["architecture"]) + 2
    for (fault, arch), g in rec.groupby(["fault", "architecture"], sort=False):
        r = g.iloc[0]
        back = g["slo_restored_s"].max()
        avail = g["availability_fault"].mean()
        lost = r["lost_transactions"]
        text = "never (in the run)" if _isnan(back) else f"{back:.1f} s"
        lines.append(
            f"  {fault:<{wf}}{arch:<{wa}}detected {r['detect_s']:.1f} s  SLOs back {text}  "
            f"recovered {g['recovered_share'].min():.0%}  availability during "
            f"{avail:.2%}  failed {g['failed'].sum():.0f}  lost tx {lost:.0f}")
    return lines

