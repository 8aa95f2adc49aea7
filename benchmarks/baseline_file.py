"""The stored baselines of the deterministic-count benchmarks (``bench_counts.py``,
``bench_sim_events.py``): one way to write them and one way to report a check against them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_baseline(path: Path, about: str, command: str, key: str, counts: Any) -> None:
    """Record ``counts`` under ``key``, with what they are and the command that made them."""
    path.write_text(json.dumps({"about": about, "command": command, key: counts},
                               indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


def report_check(rises: list[str], falls: list[str]) -> int:
    """Print the falls (to record) and the rises (the regression); exit status 1 on a rise."""
    for line in falls:
        print(f"lower than the baseline (record it with --update-baseline): {line}")
    for line in rises:
        print(f"ROSE: {line}")
    return 1 if rises else 0
