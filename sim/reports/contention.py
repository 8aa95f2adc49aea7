"""The "Contention" section of ``report.md`` and its console lines.

Reads the optional contention columns of the summary (``CONTENTION_COLUMNS``) and the lock
stations' wait percentiles (kinds ``lock``: a hot account's sub-account; ``row_lock``: the
players' balance rows), so pessimistic and optimistic runs of the same scenario can be put
side by side: lock waits against aborts, retries and the time lost to them.
"""

from __future__ import annotations

import pandas as pd

from sim.reports.report import format_ci, format_number, markdown_table
from sim.reports.results import Results

LOCK_KINDS = ("lock", "row_lock")
_OP_FIELDS = ("lock_wait_p50_ms", "lock_wait_p99_ms", "aborts_per_request",
              "retries_per_request", "gave_up_per_request", "lost_ms_per_request")
_LOCK_STATIONS_SHOWN = 5  # per architecture, the lock stations with the longest p99 wait


def contended_rows(res: Results) -> pd.DataFrame:
    """Summary rows of operations that ran contended transactions (empty if none)."""
    s = res.summary
    if "aborts_per_request" not in s.columns:
        return s.iloc[0:0]
    return s[s["aborts_per_request"].notna()]


def has_contention(res: Results) -> bool:
    """Some operation ran contended transactions (the report then gets its section)."""
    return not contended_rows(res).empty


def contention_markdown(res: Results) -> str:
    """Per operation: lock wait p50/p99 per transaction, aborts, retries, give-ups and ms lost
    per request (95% CIs); then the lock stations with the longest waits."""
    rows = contended_rows(res)
    if rows.empty:
        return "_No step locks or version-checks a row in this scenario._"
    conc = res.meta.get("concurrency") or {}
    table = [[r.architecture, conc.get(r.architecture, "–"), r.operation,
              *(format_ci(getattr(r, f), getattr(r, f"{f}_ci")) for f in _OP_FIELDS)]
             for r in rows.itertuples(index=False)]
    text = [
        "A transaction is one database step of a request that writes a contended row (the "
        "player's balance row, a hot account). Pessimistic: the row is locked for the "
        "database time, so writers of one row wait (lock wait, per transaction, waits of all "
        "its attempts). Optimistic: no lock wait, but a transaction whose row was committed "
        "since it read it aborts, backs off and retries; the columns per request count "
        "those aborts, retries, give-ups (the request failed) and the time lost (wasted "
        "database work plus backoff). 95% confidence intervals over replications.",
        markdown_table(["Architecture", "Concurrency", "Operation", "Lock wait p50 ms",
                        "Lock wait p99 ms", "Aborts / request", "Retries / request",
                        "Gave up / request", "Lost ms / request"], table, "lllrrrrrr"),
    ]
    st = res.stations[res.stations["kind"].isin(LOCK_KINDS)]
    if not st.empty:
        lines = []
        for arch in res.architectures:
            top = st[st["architecture"] == arch].sort_values(
                "wait_p99_ms", ascending=False, na_position="last").head(_LOCK_STATIONS_SHOWN)
            lines += [[arch, r.station, r.kind, format_ci(r.mean_queue, r.mean_queue_ci),
                       format_ci(r.wait_p50_ms, r.wait_p50_ms_ci),
                       format_ci(r.wait_p99_ms, r.wait_p99_ms_ci)]
                      for r in top.itertuples(index=False)]
        text += [f"Lock stations with the longest waits (top {_LOCK_STATIONS_SHOWN} per "
                 "architecture; under optimistic concurrency nobody waits on a lock):",
                 markdown_table(["Architecture", "Station", "Kind", "Mean queue",
                                 "Wait p50 ms", "Wait p99 ms"], lines, "lllrrr")]
    return "\n\n".join(text)


def contention_lines(res: Results) -> list[str]:
    """The console's contention block (empty when nothing is contended)."""
    rows = contended_rows(res)
    if rows.empty:
        return []
    conc = res.meta.get("concurrency") or {}
    out = [f"{'contention':<16}{'operation':<12}{'lock wait p50/p99 ms':>22}"
           f"{'aborts/req':>12}{'retries/req':>13}{'gave up/req':>13}{'lost ms/req':>13}"]
    for r in rows.itertuples(index=False):
        mode = conc.get(r.architecture, "")
        waits = f"{format_number(r.lock_wait_p50_ms)}/{format_number(r.lock_wait_p99_ms)}"
        out.append(f"{r.architecture[:15]:<16}{r.operation:<12}{waits:>22}"
                   f"{format_number(r.aborts_per_request):>12}"
                   f"{format_number(r.retries_per_request):>13}"
                   f"{format_number(r.gave_up_per_request):>13}"
                   f"{format_number(r.lost_ms_per_request):>13}  {mode}")
    return out
