"""The report's "Resilience policies" table: what the call policies and autoscalers did in each
deployment (``meta["policies"]``, written by ``sim.runner``: mean and 95% half-width over
replications)."""

from __future__ import annotations

import math
from typing import Any

from sim.reports.report import format_ci, markdown_table
from sim.reports.results import Results

COLUMNS = (
    ("retry_amplification", "attempts per call"),
    ("calls", "calls"),
    ("retries", "retries"),
    ("timeouts", "timed out"),
    ("failures", "failed"),
    ("shed", "shed (bulkhead)"),
    ("rejected", "rejected (breaker)"),
    ("breaker_opens", "breaker openings"),
    ("budget_denied", "retries denied (budget)"),
    ("replicas_added", "replicas added"),
)


def has_policies(res: Results) -> bool:
    """Whether any deployment had a call policy or an autoscaler."""
    return any(res.meta.get("policies", {}).values())


def policies_markdown(res: Results) -> str:
    """One row per deployment; '-' where it has no such policy."""
    rows: list[list[Any]] = []
    for dep, counts in res.meta.get("policies", {}).items():
        row: list[Any] = [dep]
        for key, _ in COLUMNS:
            mean, hw = counts.get(key, [math.nan, math.nan])
            if mean is None or (isinstance(mean, float) and math.isnan(mean)):
                row.append("-")
            else:
                row.append(format_ci(mean, math.nan if hw is None else hw))
        rows.append(row)
    return ("Counts over the whole run, whole system, mean ± 95% half-width over "
            "replications; per call edge in `summary.json` (`meta.policies`). A call is "
            "counted once; its attempts include retries.\n\n"
            + markdown_table(["deployment", *[c for _, c in COLUMNS]], rows))
