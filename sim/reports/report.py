"""The capacity report: ``report.md`` with tables and PNG plots, from any :class:`Results`.

Works the same on simulated and measured results (``meta["source"]``). Plots are drawn with
matplotlib's object API on the Agg canvas, so nothing is displayed and no global backend is
changed. Tables are plain GitHub markdown written here (no ``tabulate`` needed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sim.reports.results import Results

LATENCY_PNG = "latency_percentiles.png"
UTILISATION_PNG = "station_utilisation.png"
QUEUE_PNG = "queue_length.png"
TIMESERIES_PNG = "throughput_p99.png"

PERCENTILES: tuple[tuple[str, str], ...] = (
    ("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"), ("p999_ms", "p99.9"),
)
UTILISATION_GUIDE = 0.8
MAX_UTIL_BARS = 12
MAX_QUEUE_LINES = 4
TABLE_TOP_STATIONS = 10
MAX_POINTS = 400
_DPI = 100
_WINDOW_COLOURS = ("tab:orange", "tab:purple", "tab:olive", "tab:cyan")


# ---------------------------------------------------------------------- formatting


def _isnan(x: Any) -> bool:
    if x is None or x is pd.NA:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def _decimals(x: float) -> int:
    a = abs(x)
    if a == 0 or a >= 100:
        return 0
    if a >= 10:
        return 1
    if a >= 1:
        return 2
    return min(8, 2 - math.floor(math.log10(a)))


def format_number(x: Any, unit: str = "") -> str:
    """About three significant digits, thousands separated; ``–`` for a missing value."""
    if _isnan(x):
        return "–"
    v = float(x)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}{unit}"
    return f"{v:,.{_decimals(v)}f}{unit}"


def format_ci(value: Any, half_width: Any, unit: str = "") -> str:
    """``12.3 ± 0.4`` (value and 95% half-width at the same precision); the value alone
    when the half-width is unknown."""
    if _isnan(value):
        return "–"
    v = float(value)
    if _isnan(half_width) or math.isinf(v):
        return format_number(v, unit)
    h = abs(float(half_width))
    d = _decimals(v)
    if h > 0 and round(h, d) == 0:
        return f"{v:,.{d}f} ± <{10.0 ** -d:.{d}f}{unit}"
    return f"{v:,.{d}f} ± {h:,.{d}f}{unit}"


def format_percent(value: Any, half_width: Any = math.nan) -> str:
    """A fraction as a percentage with its half-width: ``83.1 ± 1.2%``."""
    scale = (lambda x: x) if _isnan(value) else (lambda x: float(x) * 100.0)
    return format_ci(scale(value), math.nan if _isnan(half_width) else scale(half_width), "%")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one of ``l``/``r``/``c`` per column
    (default: first column left, the others right)."""
    n = len(headers)
    align = align or ("l" + "r" * (n - 1))
    if len(align) != n:
        raise ValueError(f"align has {len(align)} letters for {n} columns")
    for i, row in enumerate(rows):
        if len(row) != n:
            raise ValueError(f"row {i} has {len(row)} cells for {n} columns")
    rule = {"l": ":---", "r": "---:", "c": ":---:"}

    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "| " + " | ".join(rule[a] for a in align) + " |"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------- data helpers


def busiest_stations(stations: pd.DataFrame, architecture: str, n: int) -> pd.DataFrame:
    """The ``n`` stations of one architecture with the highest utilisation (stations without
    one, such as brokers, rank by mean queue after those with one)."""
    st = stations[stations["architecture"] == architecture].copy()
    st["_has_util"] = st["utilisation"].notna()
    st = st.sort_values(["_has_util", "utilisation", "mean_queue"],
                        ascending=[False, False, False], na_position="last", kind="stable")
    return st.drop(columns="_has_util").head(n)


def _queue_stations(res: Results, arch: str) -> list[str]:
    """Busiest stations by utilisation, topped up with the longest queues (brokers, locks)."""
    chosen = list(busiest_stations(res.stations, arch, MAX_QUEUE_LINES - 1)["station"])
    st = res.stations[(res.stations["architecture"] == arch)
                      & ~res.stations["station"].isin(chosen)]
    st = st[st["mean_queue"] > 0].sort_values("mean_queue", ascending=False, kind="stable")
    chosen += list(st["station"].head(MAX_QUEUE_LINES - len(chosen)))
    return chosen


def _bin_s(res: Results) -> float:
    if not _isnan(res.meta.get("bin_s")):
        return float(res.meta["bin_s"])
    t = np.unique(np.concatenate([res.timeseries["t_s"].to_numpy(),
                                  res.station_timeseries["t_s"].to_numpy()]))
    d = np.diff(t)
    d = d[d > 0]
    return float(d.min()) if len(d) else 1.0


def _coarsen_factor(res: Results, bin_s: float) -> int:
    t = pd.concat([res.timeseries["t_s"], res.station_timeseries["t_s"]])
    if t.empty:
        return 1
    n_bins = (t.max() - t.min()) / bin_s + 1
    return max(1, math.ceil(n_bins / MAX_POINTS))


def _per_arch(meta_value: Any, arch: str) -> Any:
    return meta_value.get(arch) if isinstance(meta_value, dict) else meta_value


def _colours(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _plain_log_axis(ax: Any) -> None:
    """Log y axis ticked at 1, 2 and 5 times powers of ten, labelled as plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _shade_windows(ax: Any, res: Results, arch: str) -> None:
    warm = _per_arch(res.meta.get("warmup_s"), arch)
    if not _isnan(warm) and float(warm) > 0:
        ax.axvspan(0.0, float(warm), color="0.85", alpha=0.6, lw=0, label="warm-up (cut)")
    for i, w in enumerate(res.meta.get("windows") or []):
        try:
            start, end = float(w["start_s"]), float(w["end_s"])
        except (KeyError, TypeError, ValueError):
            continue
        ax.axvspan(start, end, color=_WINDOW_COLOURS[i % len(_WINDOW_COLOURS)], alpha=0.15,
                   lw=0, label=str(w.get("name", "window")))


# ---------------------------------------------------------------------- plots


def finish_time_panels(top: Any, bottom: Any, title: str) -> None:
    """A time-series column: rates from zero on top, a log latency axis below, grids."""
    top.set_title(title, fontsize=10)
    top.set_ylim(bottom=0)
    _plain_log_axis(bottom)
    bottom.set_xlabel("time (s)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3, which="both")


def plot_latency(res: Results, path: Path) -> Path | None:
    """Grouped bars of p50/p95/p99/p99.9 per operation and architecture, with CI error bars,
    log scale and the SLO targets drawn as red dashes."""
    ops, archs = res.operations, res.architectures
    if not ops:
        return None
    colours = _colours(archs)
    targets = res.slo_targets()
    ncols = min(3, len(ops))
    nrows = math.ceil(len(ops) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.6), dpi=_DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    width = 0.8 / max(1, len(archs))
    x = np.arange(len(PERCENTILES))
    for k, op in enumerate(ops):
        ax = axes[k // ncols][k % ncols]
        rows = res.summary[res.summary["operation"] == op].set_index("architecture")
        lows: list[float] = []
        highs: list[float] = list(targets.get(op, {}).get(c, math.nan) for c, _ in PERCENTILES)
        for i, arch in enumerate(archs):
            if arch not in rows.index:
                continue
            r = rows.loc[arch]
            vals = np.array([float(r[c]) for c, _ in PERCENTILES])
            raw_ci = np.array([float(r[f"{c}_ci"]) for c, _ in PERCENTILES])
            ci = np.nan_to_num(raw_ci)
            ok = np.isfinite(vals) & (vals > 0)
            if not ok.any():
                continue
            lower = np.minimum(ci, vals * 0.999)
            lows += list(vals[ok])
            highs += list((vals + ci)[ok])
            err = np.vstack([lower[ok], ci[ok]]) if np.isfinite(raw_ci[ok]).any() else None
            ax.bar(x[ok] - 0.4 + width * (i + 0.5), vals[ok], width,
                   yerr=err, color=colours[arch], label=arch,
                   capsize=2, error_kw={"elinewidth": 0.8})
        slo_label = "SLO target"
        for j, (col, _) in enumerate(PERCENTILES):
            target = targets.get(op, {}).get(col)
            if target is not None:
                ax.hlines(target, x[j] - 0.45, x[j] + 0.45, colors="red", linestyles="--",
                          lw=1.5, label=slo_label)
                slo_label = "_nolegend_"
        _plain_log_axis(ax)
        top = np.nanmax(highs) if np.isfinite(highs).any() else math.nan
        if lows and math.isfinite(top):
            # error bars reaching towards zero are clipped rather than stretching the axis
            ax.set_ylim(min(lows) / 1.6, top * 1.4)
        ax.set_xticks(x, [label for _, label in PERCENTILES])
        ax.set_title(op)
        ax.set_ylabel("latency (ms)")
        ax.grid(axis="y", which="both", alpha=0.3)
    for k in range(len(ops), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), fontsize=9)
    fig.savefig(path)
    return path


def plot_utilisation(res: Results, path: Path) -> Path | None:
    """Horizontal utilisation bars per architecture (the busiest stations when there are
    many), with CI error bars and a guide line at 80%."""
    archs = [a for a in res.architectures
             if res.stations[res.stations["architecture"] == a]["utilisation"].notna().any()]
    if not archs:
        return None
    colours = _colours(res.architectures)
    picks = {}
    for a in archs:
        top = busiest_stations(res.stations, a, MAX_UTIL_BARS)
        picks[a] = top[top["utilisation"].notna()]
    tallest = max(len(p) for p in picks.values())
    fig = Figure(figsize=(4.6 * len(archs), 0.35 * tallest + 1.6), dpi=_DPI,
                 layout="constrained")
    axes = fig.subplots(1, len(archs), squeeze=False)[0]
    for ax, arch in zip(axes, archs, strict=True):
        top = picks[arch].iloc[::-1]
        util = top["utilisation"].to_numpy(dtype=float)
        raw_ci = top["utilisation_ci"].to_numpy(dtype=float)
        ci = np.nan_to_num(raw_ci)
        y = np.arange(len(top))
        ax.barh(y, util, xerr=ci if np.isfinite(raw_ci).any() else None, color=colours[arch],
                capsize=2, error_kw={"elinewidth": 0.8})
        ax.set_yticks(y, list(top["station"]), fontsize=8)
        for yi, u, h in zip(y, util, ci, strict=True):
            ax.text(u + h + 0.02, yi, f"{u:.0%}", va="center", fontsize=7)
        ax.axvline(UTILISATION_GUIDE, color="red", ls="--", lw=1)
        ax.set_xlim(0, max(1.1, float(np.nanmax(util + ci)) + 0.1))
        st = res.stations[res.stations["architecture"] == arch]
        total = int(st["utilisation"].notna().sum())
        shown = f" (busiest {len(top)} of {total})" if total > len(top) else ""
        ax.set_title(f"{arch}{shown}", fontsize=10)
        ax.set_xlabel("utilisation")
        ax.grid(axis="x", alpha=0.3)
    fig.savefig(path)
    return path


def plot_queues(res: Results, path: Path) -> Path | None:
    """Queue length over time of the busiest stations per architecture: mean over
    replications with a min-max band; warm-up and fault/spike windows shaded."""
    sts = res.station_timeseries
    archs = [a for a in res.architectures if (sts["architecture"] == a).any()]
    if not archs:
        return None
    bin_s = _bin_s(res)
    factor = _coarsen_factor(res, bin_s)
    fig = Figure(figsize=(9.0, 2.6 * len(archs) + 0.4), dpi=_DPI, layout="constrained")
    axes = fig.subplots(len(archs), 1, squeeze=False, sharex=True)[:, 0]
    for ax, arch in zip(axes, archs, strict=True):
        _shade_windows(ax, res, arch)
        d = sts[sts["architecture"] == arch]
        for name in _queue_stations(res, arch):
            s = d[d["station"] == name]
            if s.empty:
                continue
            t = np.floor(s["t_s"].to_numpy() / (bin_s * factor)) * bin_s * factor
            per_rep = (s.assign(t=t).groupby(["replication", "t"])["queue"].mean()
                       .unstack("replication").sort_index())
            mean = per_rep.mean(axis=1)
            line = ax.plot(mean.index, mean.to_numpy(), lw=1.2, label=name)[0]
            if per_rep.shape[1] > 1:
                ax.fill_between(mean.index, per_rep.min(axis=1), per_rep.max(axis=1),
                                color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(arch, fontsize=10)
        ax.set_ylabel("queue length")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("time (s)")
    fig.savefig(path)
    return path


def plot_throughput_p99(res: Results, path: Path) -> Path | None:
    """Per architecture (columns): throughput per operation and in total (top row) and p99
    per operation (bottom row, log scale) over time, means over replications."""
    ts = res.timeseries
    archs = [a for a in res.architectures if (ts["architecture"] == a).any()]
    if not archs:
        return None
    bin_s = _bin_s(res)
    factor = _coarsen_factor(res, bin_s)
    width = bin_s * factor
    colours = _colours(res.operations)
    fig = Figure(figsize=(4.6 * len(archs), 5.8), dpi=_DPI, layout="constrained")
    axes = fig.subplots(2, len(archs), squeeze=False, sharex=True, sharey="row")
    for j, arch in enumerate(archs):
        top, bottom = axes[0][j], axes[1][j]
        for ax in (top, bottom):
            _shade_windows(ax, res, arch)
        d = ts[ts["architecture"] == arch]
        d = d.assign(t=np.floor(d["t_s"].to_numpy() / width) * width)
        n_rep = max(1, d["replication"].nunique())
        total = d.groupby("t")["requests"].sum() / (n_rep * width)
        top.plot(total.index, total.to_numpy(), color="black", lw=1.4, label="all")
        for op in res.operations:
            o = d[d["operation"] == op]
            if o.empty:
                continue
            rate = o.groupby("t")["requests"].sum() / (n_rep * width)
            top.plot(rate.index, rate.to_numpy(), color=colours[op], lw=1, label=op)
            p99 = o.groupby("t")["p99_ms"].mean()
            p99 = p99[p99 > 0]
            bottom.plot(p99.index, p99.to_numpy(), color=colours[op], lw=1, label=op)
        finish_time_panels(top, bottom, arch)
    axes[0][0].set_ylabel("throughput (req/s)")
    p99_label = "p99 (ms)" if factor == 1 else f"p99 (ms, mean over {width:g} s)"
    axes[1][0].set_ylabel(p99_label)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------- text


UNSTABLE = "unstable: figures grow with the run length"


def saturation_lines(meta: dict[str, Any]) -> list[str]:
    """One line per saturated station, before and after the run (``meta["saturation"]``)."""
    sat = meta.get("saturation") or {}
    bits: list[str] = []
    for o in sat.get("saturated_before_run") or []:
        bits.append(f"{o['architecture']}: {o['station']} offered "
                    f"{format_percent(o['offered_utilisation'])} of its capacity at the peak "
                    f"(t={format_number(o['at_s'])} s)")
    for g in sat.get("growing_after_run") or []:
        bits.append(f"{g['architecture']}: {g['station']} queue grew by "
                    f"{format_ci(g['queue_growth'], g['queue_growth_ci'])} requests over the "
                    f"run (mean {format_number(g['mean_queue'])})")
    return bits


def saturation_text(meta: dict[str, Any]) -> str:
    """The report's warning sentence when the run is unstable; "" when it is not."""
    if not (meta.get("saturation") or {}).get("unstable"):
        return ""
    return f"**{UNSTABLE[0].upper()}{UNSTABLE[1:]}.** " + "; ".join(saturation_lines(meta)) + "."


def summary_paragraph(res: Results) -> str:
    """One paragraph, generated from the data: whether the run is unstable (saturated
    stations), which architectures meet their SLOs, what they miss, and each one's
    bottleneck station with its utilisation."""
    meta = res.meta
    measured = meta.get("source") == "measurement"
    parts: list[str] = []
    unstable = saturation_text(meta)
    if unstable:
        parts.append(unstable)
    span = meta.get("duration_s")
    reps = meta.get("replications")
    rep_n = sorted(set(reps.values())) if isinstance(reps, dict) else [reps]
    rep_text = "/".join(str(r) for r in rep_n if r is not None)
    what = "measured" if measured else "simulated"
    if not _isnan(span):
        lead = f"Over {format_number(span)} s of {what} traffic"
        parts.append(lead + (f" ({rep_text} replications)," if rep_text else ","))
    slo = res.slo_table()
    archs = res.architectures
    if slo.empty:
        parts.append("no SLO targets were given;" if parts else "No SLO targets were given;")
        parts.append("compare the architectures on the tables below.")
    else:
        all_met = [a for a in archs if (slo["architecture"] == a).any()
                   and (slo[slo["architecture"] == a]["verdict"] == "met").all()]
        sentences = []
        if all_met:
            n_targets = sorted({int((slo["architecture"] == a).sum()) for a in all_met})
            who = ("every architecture" if len(all_met) == len(archs) > 1
                   else ", ".join(f"**{a}**" for a in all_met))
            verb = "meets" if len(all_met) == 1 or len(all_met) == len(archs) > 1 else "meet"
            count = "/".join(str(n) for n in n_targets)
            sentences.append(f"{who} {verb} all {count} of its SLO targets")
        for arch in archs:
            s = slo[slo["architecture"] == arch]
            if s.empty or arch in all_met:
                continue
            missed = s[s["verdict"] == "missed"]
            unsure = s[s["verdict"].isin(["uncertain", "no data"])]
            bits = []
            if not missed.empty:
                ex = "; ".join(_slo_example(r) for r in missed.head(3).itertuples())
                more = f"; and {len(missed) - 3} more" if len(missed) > 3 else ""
                bits.append(f"misses {len(missed)} of {len(s)} SLO targets ({ex}{more})")
            if not unsure.empty:
                bits.append(f"is inconclusive on {len(unsure)} (interval straddles the target "
                            "or no estimate)")
            sentences.append(f"**{arch}** " + " and ".join(bits))
        body = "; ".join(sentences) + "."
        parts.append(body if parts else body[0].upper() + body[1:])
        if len(archs) > 1 and not all_met:
            parts.append("No architecture meets every SLO.")
    necks = []
    for arch in archs:
        top = busiest_stations(res.stations, arch, 1)
        if top.empty or _isnan(top.iloc[0]["utilisation"]):
            continue
        r = top.iloc[0]
        necks.append(f"{arch}: {r['station']} ({r['kind']}) at "
                     f"{format_percent(r['utilisation'], r['utilisation_ci'])}")
    if necks:
        parts.append("Bottleneck (busiest station) of each: " + "; ".join(necks) + ".")
    k = meta.get("reduce_factor")
    if not _isnan(k) and float(k) > 1:
        parts.append(f"This run simulated one representative partition (1/{int(k)} of the "
                     "system); latencies are those of the partition.")
    if not res.recovery.empty:
        faults = list(dict.fromkeys(res.recovery["fault"]))
        parts.append(f"Faults were injected ({', '.join(faults)}): the figures above include "
                     "them; see \"Failure recovery\" for detection, recovery times, losses "
                     "and availability next to the latency of successful requests.")
    return " ".join(parts)


def _slo_example(r: Any) -> str:
    if r.metric == "error_rate":
        return (f"{r.operation} error rate {format_percent(r.value, r.ci)} "
                f"> {format_percent(r.target)}")
    return f"{r.operation} {r.metric} {format_ci(r.value, r.ci)} ms > {format_number(r.target)} ms"


def slo_markdown(res: Results) -> str:
    """The SLO table as markdown."""
    slo = res.slo_table()
    if slo.empty:
        return "_No SLO targets in these results._"
    value_head = "Measured" if res.meta.get("source") == "measurement" else "Predicted"
    rows = []
    for r in slo.itertuples():
        if r.metric == "error_rate":
            target = f"error rate ≤ {format_percent(r.target)}"
            value = format_percent(r.value, r.ci)
        else:
            target = f"{r.metric} ≤ {format_number(r.target)} ms"
            value = format_ci(r.value, r.ci, " ms")
        verdict = {"missed": "**missed**", "uncertain": "uncertain"}.get(r.verdict, r.verdict)
        rows.append([r.architecture, r.operation, target, value, verdict])
    return markdown_table(["Architecture", "Operation", "Target", f"{value_head} (95% CI)",
                           "Verdict"], rows, "lllrl")


def compare_markdown(res: Results) -> str:
    """Architectures side by side: p99 and throughput per operation, lowest p99 named."""
    if res.summary.empty:
        return "_No operations in these results._"
    cmp = res.compare()
    archs = list(cmp.columns.get_level_values("architecture").unique())
    headers = ["Operation", *[f"p99 ms {a}" for a in archs],
               *[f"req/s {a}" for a in archs]]
    if len(archs) > 1:
        headers.append("Lowest p99")
    rows = []
    for op, r in cmp.iterrows():
        row = [op]
        row += [format_ci(r[("p99_ms", a)], r[("p99_ms_ci", a)]) for a in archs]
        row += [format_ci(r[("throughput_rps", a)], r[("throughput_rps_ci", a)])
                for a in archs]
        if len(archs) > 1:
            row.append(_lowest(r, archs))
        rows.append(row)
    return markdown_table(headers, rows, "l" + "r" * (len(headers) - 1)
                          if len(archs) == 1 else "l" + "r" * (2 * len(archs)) + "l")


def _lowest(row: pd.Series, archs: Sequence[str]) -> str:
    """The architecture with the lowest p99, flagged when its interval overlaps the next."""
    p99 = {a: float(row[("p99_ms", a)]) for a in archs if not _isnan(row[("p99_ms", a)])}
    if not p99:
        return "–"
    ranked = sorted(p99, key=lambda a: p99[a])
    best = ranked[0]
    if len(ranked) == 1:
        return best

    def half(a: str) -> float:
        h = row[("p99_ms_ci", a)]
        return 0.0 if _isnan(h) else float(h)

    second = ranked[1]
    if p99[best] + half(best) >= p99[second] - half(second):
        return f"{best} (CIs overlap {second})"
    return best


def is_flagged(x: Any) -> bool:
    """A boolean cell that may be missing (None, NA, NaN)."""
    return x is not None and not pd.isna(x) and bool(x)


def stations_markdown(res: Results) -> str:
    """The busiest stations of each architecture (top 10 by utilisation)."""
    rows = []
    for arch in res.architectures:
        for r in busiest_stations(res.stations, arch, TABLE_TOP_STATIONS).itertuples():
            rows.append([arch, r.station, r.kind, str(r.servers) if r.servers > 0 else "–",
                         format_percent(r.utilisation, r.utilisation_ci),
                         format_ci(r.mean_queue, r.mean_queue_ci),
                         format_ci(r.mean_wait_ms, r.mean_wait_ms_ci),
                         *(format_ci(getattr(r, m, math.nan), getattr(r, f"{m}_ci", math.nan))
                           for m in ("wait_p50_ms", "wait_p99_ms")),
                         "growing" if is_flagged(getattr(r, "growing", False)) else ""])
    if not rows:
        return "_No stations in these results._"
    return markdown_table(["Architecture", "Station", "Kind", "Servers", "Utilisation",
                           "Mean queue", "Mean wait ms", "Wait p50 ms", "Wait p99 ms",
                           "Queue"], rows, "lllrrrrrrl")


_META_SHOWN = ("scenario", "description", "source", "engine", "seed", "replications",
               "warmup_s", "reduce_factor", "duration_s", "start_hour", "created_at",
               "notes", "windows", "slos", "saturation")


_META_LABELS = {
    "wall_s": ("Wall-clock time", " s"),
    "simulated_requests": ("Simulated requests", ""),
    "precision_target": ("Precision target (relative p99 half-width)", ""),
    "precision_met": ("Precision target met", ""),
    "bin_s": ("Time-series bin", " s"),
}


def meta_markdown(res: Results) -> str:
    """The run's settings as a bullet list."""
    m = res.meta
    lines = []

    def add(label: str, value: Any) -> None:
        if value is None or value == "" or value == [] or value == {}:
            return
        lines.append(f"- **{label}**: {value}")

    def per_arch(value: Any, unit: str = "") -> Any:
        if isinstance(value, dict):
            return ", ".join(f"{a} {format_number(v)}{unit}" for a, v in value.items())
        return None if value is None else f"{format_number(value)}{unit}"

    add("Scenario", m.get("scenario"))
    add("Description", m.get("description"))
    add("Source", m.get("source"))
    add("Engine", m.get("engine"))
    add("Seed", m.get("seed"))
    add("Replications", per_arch(m.get("replications")))
    add("Warm-up cut", per_arch(m.get("warmup_s"), " s"))
    span_label = "Measured span" if m.get("source") == "measurement" else "Simulated span"
    add(span_label, per_arch(m.get("duration_s"), " s"))
    hour = m.get("start_hour")
    if not _isnan(hour):
        minutes = round(float(hour) * 60)
        add("Start of day", f"{minutes // 60 % 24:02d}:{minutes % 60:02d}")
    k = m.get("reduce_factor")
    if k is not None:
        text = str(k)
        if not _isnan(k) and float(k) > 1:
            text += (f": the run simulated one representative partition (1/{int(k)} of the "
                     "replicas, shards and players); throughput is scaled back to the whole "
                     "system, latencies and utilisations are those of the partition")
        add("Reduce factor", text)
    for w in m.get("windows") or []:
        add("Window", f"{w.get('name', '?')}: {format_number(w.get('start_s'))}–"
                      f"{format_number(w.get('end_s'))} s")
    add("Created", m.get("created_at"))
    for key, value in m.items():
        if key in _META_SHOWN:
            continue
        label, unit = _META_LABELS.get(key, (key.replace("_", " ").capitalize(), ""))
        if isinstance(value, bool | str):
            add(label, value)
        elif isinstance(value, int | float):
            add(label, format_number(value, unit))
        else:
            add(label, json.dumps(value, default=str))
    for note in m.get("notes") or []:
        lines.append(f"- {note}")
    return "\n".join(lines) if lines else "_No metadata._"


# ---------------------------------------------------------------------- the report


def write_report(results: Results, out_dir: str | Path, title: str | None = None) -> Path:
    """Write ``report.md`` and its PNG plots into ``out_dir``; return the report's path."""
    from sim.reports.comparison import cost_markdown, paired_markdown  # it imports this module
    from sim.reports.recovery_report import RECOVERY_PNG, plot_recovery, recovery_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = [
        ("Latency percentiles per operation and architecture (95% CI; red dashes: SLO)",
         plot_latency, LATENCY_PNG),
        ("Station utilisation (dashed: 80% guide)", plot_utilisation, UTILISATION_PNG),
        ("Queue length over time, busiest stations (mean over replications, band: min-max)",
         plot_queues, QUEUE_PNG),
        ("Throughput and p99 over time", plot_throughput_p99, TIMESERIES_PNG),
    ]
    if not results.recovery.empty:
        plots.append(("Failure recovery: ok and failed throughput, rolling p99 of successes "
                      "(fault windows shaded)", plot_recovery, RECOVERY_PNG))
    images = []
    for caption, draw, name in plots:
        path = draw(results, out / name)
        if path is not None:
            images.append(f"### {caption}\n\n![{caption}]({name})")
        else:
            images.append(f"### {caption}\n\n_No data for this plot._")
    scenario = results.meta.get("scenario", "results")
    heading = title or f"Capacity report: {scenario}"
    sections = [
        f"# {heading}",
        summary_paragraph(results),
        "## Service-level objectives\n\nMet: the whole 95% confidence interval is within the "
        "target; missed: wholly outside; uncertain: the interval straddles the target "
        "(add replications, e.g. `--precision`).\n\n" + slo_markdown(results),
        "## Architectures compared\n\n" + compare_markdown(results),
        "## Cost next to latency\n\n" + cost_markdown(results),
        "## Paired differences\n\n" + paired_markdown(results),
        *([] if results.recovery.empty
          else ["## Failure recovery\n\n" + recovery_markdown(results)]),
        f"## Busiest stations (top {TABLE_TOP_STATIONS} per architecture)\n\n"
        + stations_markdown(results),
        "## Run\n\n" + meta_markdown(results),
        "## Plots\n\n" + "\n\n".join(images),
    ]
    report = out / "report.md"
    report.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return report
