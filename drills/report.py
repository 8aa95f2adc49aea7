"""The drill's report: the simulator's report of the measurement (same schema), then the
drill's own section (faults as they happened, recovery, per-operation view, ledger checks)
and the timeline plot with the fault windows shaded."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from sim.reports.report import format_number, markdown_table, write_report
from sim.reports.results import Results

TIMELINE_PNG = "drill_timeline.png"
_COLOURS = ("tab:red", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive")


def plot_timeline(res: Results, path: Path) -> Path:
    """Answered per second (ok, failed, timed out) and p99 of the successful requests per
    second, the SLO as a dashed line, each fault window shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = res.timeseries
    per_s = ts.groupby("t_s").agg(requests=("requests", "sum"), errors=("errors", "sum"))
    policy = _policy_frame(res)
    rows = 3 if not policy.empty else 2
    fig, axes = plt.subplots(rows, 1, figsize=(10, 3.2 * rows), sharex=True)
    ax1, ax2 = axes[0], axes[1]
    if not policy.empty:
        for col in policy.columns:
            axes[2].step(policy.index, policy[col], where="post", label=col)
        axes[2].set_ylabel("internal calls per second")
    ax1.plot(per_s.index, per_s["requests"] - per_s["errors"], label="ok/s", color="tab:green")
    ax1.plot(per_s.index, per_s["errors"], label="errors/s", color="tab:red")
    ax1.set_ylabel("requests per second")
    for op, g in ts.groupby("operation"):
        ax2.plot(g["t_s"], g["p99_ms"], label=f"{op} p99", lw=1)
    target = res.meta.get("drill", {}).get("slo_p99_ms")
    if target is not None and math.isfinite(target):
        ax2.axhline(target, color="red", ls="--", lw=1, label="p99 target")
    ax2.set_yscale("log")
    ax2.set_ylabel("p99 per second (ms, all answers)")
    ax2.set_xlabel("seconds into the measured window")
    for ax in axes:
        for i, w in enumerate(res.meta.get("windows") or []):
            ax.axvspan(w["start_s"], max(w["end_s"], w["start_s"] + 0.3),
                       color=_COLOURS[i % len(_COLOURS)], alpha=0.2, lw=0, label=w["name"])
        ax.legend(fontsize=7, loc="upper right", ncol=2)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Drill: {res.architectures[0] if res.architectures else ''} — "
                 + ", ".join(res.meta.get("drill", {}).get("faults", [])))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _policy_frame(res: Results) -> pd.DataFrame:
    """Per-second increments of the public process's policy counters that ever moved."""
    rows = res.meta.get("drill", {}).get("rpc_policy_per_second") or []
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows).set_index("t_s").fillna(0.0)
    return df.loc[:, (df != 0).any()]


def _num(x: Any, unit: str = "") -> str:
    try:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "—"
    except TypeError:
        return str(x)
    return format_number(x, unit)


def recovery_markdown(res: Results) -> str:
    rec = res.recovery
    if rec.empty:
        return "_No fault took effect._"
    rows = [[r.fault, r.operation, _num(r.slo_p99_ms, " ms"),
             "yes" if r.recovered_share >= 1 else "NO", _num(r.detect_s, " s"),
             _num(r.resume_s, " s"), _num(r.slo_restored_s, " s"), _num(r.failed),
             _num(r.timed_out), _num(r.lost_transactions),
             _num(r.availability_fault), _num(r.p99_ok_ms, " ms")]
            for r in rec.itertuples()]
    return markdown_table(["fault", "operation", "p99 target", "recovered", "detect",
                           "success resumes",
                           "p99 back under SLO", "failed", "timed out",
                           "lost acknowledged writes", "availability in fault",
                           "success p99 from fault on"], rows)


def drill_markdown(res: Results) -> str:
    d = res.meta["drill"]
    led = d["ledger"]
    lines = ["## Fault drill", "",
             f"Topology **{d['topology']}** over **{d['db']}**"
             + (f", broker {d['broker']}" if d["topology"] != "monolith" else "")
             + (f", {d['replication']} replication" if d.get("replication") else "")
             + f"; faults: {', '.join(f'`{f}`' for f in d['faults'])}. Recovery is measured "
             f"against a p99 of {d['slo_p99_ms']:g} ms (p99 of the successful requests "
             f"before the first fault: {_num(d['baseline_p99_ms'], ' ms')}) over a trailing "
             f"{d['window_s']:g} s window of successful requests, errors within 1%, holding "
             f"{_num(d.get('hold_s'), ' s')} (operation `all`: the players' requests; the "
             "other rows: each operation against its own p99 target); a "
             f"request answered after {d['timeout_s']:g} s "
             "(or never) counts as timed out. Times are seconds from the fault's start; a "
             "fault's window ends when its trigger ended (for a kill or failover: the moment "
             "`/health` answered 200 again).", "",
             "### Recovery (generator's view)", "", recovery_markdown(res), "",
             "### What the injector did", "",
             markdown_table(["t (s)", "fault", "action", "detail"],
                            [[e["t_s"], e["fault"], e["action"], e["detail"]]
                             for e in d["events"]]), ""]
    if d["errors"]:
        lines += ["**Injector errors:** " + "; ".join(d["errors"]), ""]
    if d.get("monolith_restarts_by_drill"):
        lines += [f"The drill's watcher restarted the monolith "
                  f"{d['monolith_restarts_by_drill']} time(s).", ""]
    ops = pd.DataFrame(d["per_operation"])
    if not ops.empty:
        lines += ["### Per operation, before / during / after the faults", "",
                  markdown_table(["phase", "operation", "requests", "failed", "timed out",
                                  "success p99"],
                                 [[r.phase, r.operation, r.requests, r.failed, r.timed_out,
                                   _num(r.p99_ok_ms, " ms")] for r in ops.itertuples()]), ""]
    policy = _policy_frame(res)
    if not policy.empty:
        lines += ["### The public process's internal-call policies (from its /metrics)", "",
                  "Calls shed (the caller's bulkhead to that dependency was full), refused by "
                  "an open breaker, or retried, over the window:", "",
                  markdown_table(["counter", "total", "peak per second"],
                                 [[c, _num(policy[c].sum()), _num(policy[c].max())]
                                  for c in policy.columns]), ""]
    verdict = "ok" if led["audit_ok"] else "FAILED"
    lines += ["### Ledger (the database's view)", "",
              f"- acknowledged money operations: {led['acknowledged']}; absent from the "
              f"ledger (lost): **{led['lost']}**"
              + (f" (of which in the journal: {led['lost_in_journal']})" if led["lost"] else ""),
              f"- `GET /audit/verify`: **{verdict}**",
              f"- `testbed ledger verify`: exit **{led['ledger_verify_exit']}** "
              f"({led['ledger_verify']})", ""]
    if led["lost"]:
        when = led.get("lost_acked_at_s") or []
        span = f" (acknowledged between {min(when):g} s and {max(when):g} s)" if when else ""
        lines += [f"Lost ids (first 50){span}: " + ", ".join(led["lost_ids"]), ""]
    lines += [f"![timeline]({TIMELINE_PNG})", ""]
    return "\n".join(lines)


def write_drill_report(res: Results, out: Path) -> Path:
    """``report.md`` (the simulator's report plus the drill's section) and the plots."""
    res.save(out)
    title = f"Fault drill: {res.architectures[0] if res.architectures else ''}"
    path = write_report(res, out, title=title)
    plot_timeline(res, out / TIMELINE_PNG)
    text = path.read_text()
    head, sep, rest = text.partition("\n\n")
    path.write_text(head + sep + drill_markdown(res) + "\n" + rest)
    return path




def prediction_markdown(table: pd.DataFrame, scenario: str, replications: int) -> str:
    """The predicted-against-measured section."""
    lines = ["## Predicted against measured", "",
             f"The simulator ran `{scenario}` ({replications} replications; the deployment "
             "named like the drill's topology, the drill's rate as an open workload in the "
             "scenario's mix, the faults as the drill did them: a kill's and a failover's "
             "down time is the measured one). Predicted values are means ± 95% half-widths; "
             "error is (predicted - measured) / measured.", ""]
    if table.empty:
        return "\n".join([*lines, "_No fault and operation in both tables._", ""])
    rows = [[r.fault, r.operation, r.metric, _num(r.measured), _num(r.predicted)
             + (f" ± {_num(r.predicted_ci)}" if math.isfinite(r.predicted_ci) else ""),
             f"{r.error:+.0%}" if math.isfinite(r.error) else "—"]
            for r in table.itertuples()]
    table_md = markdown_table(["fault", "operation", "metric", "measured", "predicted",
                               "error"], rows)
    return "\n".join([*lines, table_md, ""])
