"""The capacity-report notebook executes end to end (papermill), on a short simulation."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_capacity_report_notebook_executes(tmp_path: Path) -> None:
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "capacity_report.ipynb"), str(out),
        parameters={"duration_s": 8.0, "replications": 2,
                    "overrides": ["population.peak_online=40000"], "sweep_duration_s": 2.0},
        cwd=str(ROOT), progress_bar=False, kernel_name="python3",
    )
    text = out.read_text()
    assert "Traceback" not in text
    assert "monolith" in text and "p99" in text
    assert "connections" in text and "configuration" in text  # cost and the sweep's answer
