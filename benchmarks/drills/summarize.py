"""One markdown row per drill folder (``testbed drill --out DIR``): the command, the recovery
of the players' requests (from the fault's start: success resumes, p99 back under target),
failed, timed out, lost acknowledged writes and the ledger checks; ``--predicted`` adds the
predicted-against-measured rows of the drills run with ``--predict``.

    python benchmarks/drills/summarize.py reports/drill_* > table.md
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path

import pandas as pd

import sim


def _f(x: float, unit: str = "") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}{unit}"


def command(meta: dict) -> str:
    if meta.get("command"):
        args = shlex.split(str(meta["command"]))
        if "--out" in args:  # where it ran is not part of what it did
            i = args.index("--out")
            args[i + 1] = "reports/" + Path(args[i + 1]).name
        return shlex.join(args)
    d = meta["drill"]
    args = ["testbed", "drill", "--topology", d["topology"], "--db", d["db"]]
    for f in d["faults"]:
        args += ["--fault", f]
    args += ["--rate", f"{meta['target_rate_rps']:g}", "--duration", f"{meta['duration_s']:g}",
             "--window", f"{d['window_s']:g}"]
    if d.get("replication"):
        args += ["--replication", d["replication"]]
    if d.get("staff_share"):
        args += ["--staff-share", f"{d['staff_share']:g}"]
    return shlex.join(args)


def row(folder: Path) -> str:
    res = sim.load_results(str(folder))
    d, led = res.meta["drill"], res.meta["drill"]["ledger"]
    rec = res.recovery[res.recovery["operation"] == "all"]
    r = rec.iloc[0] if len(rec) else pd.Series(dtype=float)
    checks = ("ok" if led["audit_ok"] else "FAILED") + " / " + str(led["ledger_verify_exit"])
    return (f"| `{command(res.meta)}` | {_f(r.get('detect_s'), ' s')} | "
            f"{_f(r.get('resume_s'), ' s')} | {_f(r.get('slo_restored_s'), ' s')} | "
            f"{_f(r.get('failed'))} | {_f(r.get('timed_out'))} | {led['lost']} of "
            f"{led['acknowledged']} | {checks} | {_f(d.get('baseline_p99_ms'), ' ms')} |")


HEADER = ("| command | detect | success resumes | p99 back under target | failed | "
          "timed out | lost acked writes | audit / ledger verify | p99 before |\n"
          "|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    a = ap.parse_args()
    print(HEADER)
    for folder in a.folders:
        if (folder / "summary.json").is_file():
            print(row(folder))


if __name__ == "__main__":
    main()
