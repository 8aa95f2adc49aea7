"""The capacity report: markdown tables, the generated summary, and PNG plots that exist."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from sim.reports.report import (
    busiest_stations,
    format_ci,
    format_number,
    format_percent,
    markdown_table,
    summary_paragraph,
    write_report,
)
from sim.reports.results import Results
from tests.sim.test_results import make_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _images(report: Path) -> list[Path]:
    names = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text(encoding="utf-8"))
    return [report.parent / n for n in names]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(make_results(), tmp_path_factory.mktemp("report"), title="Test run")


def test_report_references_valid_pngs(full_report: Path) -> None:
    images = _images(full_report)
    assert len(images) == 4
    for img in images:
        assert img.is_file(), img
        assert img.read_bytes()[:8] == PNG_MAGIC, img
        assert img.stat().st_size > 5000, img  # something was drawn


def test_report_content(full_report: Path) -> None:
    text = full_report.read_text(encoding="utf-8")
    assert text.startswith("# Test run\n")
    for heading in ("## Service-level objectives", "## Architectures compared",
                    "## Busiest stations", "## Run", "## Plots"):
        assert heading in text
    # the SLO table: microservices bet p99 80 ± 4 against 60 is missed
    assert "| microservices | bet | p99 ≤ 60 ms | 80.0 ± 4.0 ms | **missed** |" in text
    assert "| monolith | bet | p99 ≤ 60 ms | 40.0 ± 2.0 ms | met |" in text
    assert "| monolith | bet | error rate ≤ 0.100% | 0.100 ± 0.050% | uncertain |" in text
    # the comparison table names the lowest p99 per operation
    assert "| bet | 40.0 ± 2.0 | 80.0 ± 4.0 | 101 ± 2 | 101 ± 2 | monolith |" in text
    # stations ranked by utilisation, the broker (no utilisation) last
    section = text.split("## Busiest stations")[1].split("## Run")[0]
    mono = [line.split(" | ")[1] for line in section.splitlines()
            if line.startswith("| monolith | ")]
    assert mono == ["db.pool", "app.cpu", "app.workers", "broker"]
    assert "- **Seed**: 1" in text
    assert "- **Warm-up cut**: monolith 3 s, microservices 4.50 s" in text
    assert "spike: 10–20 s" in text
    assert "representative partition" not in text  # reduce_factor is 1


def test_summary_paragraph_names_misses_and_bottlenecks() -> None:
    res = make_results()
    text = summary_paragraph(res)
    assert "**microservices** misses 3 of 7 SLO targets" in text
    assert "bet p99 80.0 ± 4.0 ms > 60 ms" in text
    assert "No architecture meets every SLO." in text
    assert "microservices: db.pool (db_pool) at 70.0 ± 1.0%" in text
    assert "monolith: db.pool (db_pool) at 60.0 ± 1.0%" in text


def test_summary_paragraph_when_slos_met_and_reduced() -> None:
    res = make_results()
    summary = res.summary.copy()
    summary["error_rate"] = 0.0
    summary["p95_ms"] = summary["p95_ms"].clip(upper=10.0)
    summary["p99_ms"] = summary["p99_ms"].clip(upper=10.0)
    meta = {**res.meta, "reduce_factor": 8}
    ok = Results(meta=meta, summary=summary, stations=res.stations)
    text = summary_paragraph(ok)
    assert "every architecture meets all 7 of its SLO targets" in text
    assert "No architecture" not in text
    assert "one representative partition (1/8 of the system)" in text


def test_measurement_single_architecture_without_series(tmp_path: Path) -> None:
    res = make_results()
    summary = res.summary[res.summary["architecture"] == "monolith"]
    many = pd.DataFrame([
        {"architecture": "monolith", "station": f"svc{i}.cpu", "kind": "cpu", "servers": 2,
         "utilisation": i / 20.0, "utilisation_ci": math.nan, "mean_queue": 0.1 * i,
         "mean_queue_ci": math.nan, "mean_wait_ms": 0.5, "mean_wait_ms_ci": math.nan}
        for i in range(16)
    ])
    meta = {"scenario": "lab", "source": "measurement", "slos": {"bet": {"p99": 60.0}}}
    measured = Results(meta=meta, summary=summary, stations=many)
    report = write_report(measured, tmp_path)
    text = report.read_text(encoding="utf-8")
    assert "Measured (95% CI)" in text
    assert "Lowest p99" not in text
    assert text.count("_No data for this plot._") == 2  # no time series recorded
    images = _images(report)
    assert [p.name for p in images] == ["latency_percentiles.png", "station_utilisation.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in images)
    table_rows = [line for line in text.splitlines() if re.match(r"\| monolith \| svc", line)]
    assert len(table_rows) == 10
    assert table_rows[0].startswith("| monolith | svc15.cpu | cpu | 2 | 75% |")


def test_busiest_stations_order() -> None:
    res = make_results()
    top = busiest_stations(res.stations, "microservices", 3)
    assert list(top["station"]) == ["db.pool", "app.cpu", "app.workers"]
    assert list(busiest_stations(res.stations, "monolith", 10)["station"])[-1] == "broker"


def test_markdown_table() -> None:
    text = markdown_table(["a", "b"], [["x|y", 1], ["line\nbreak", 2.5]], "lr")
    assert text.splitlines() == [
        "| a | b |",
        "| :--- | ---: |",
        "| x\\|y | 1 |",
        "| line break | 2.5 |",
    ]
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        markdown_table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="align"):
        markdown_table(["a", "b"], [], "l")


@pytest.mark.parametrize(("value", "ci", "expected"), [
    (12.34, 0.41, "12.3 ± 0.4"),
    (812.3, 30.2, "812 ± 30"),
    (4.123, 0.19, "4.12 ± 0.19"),
    (6.06035, 0.00014, "6.06 ± <0.01"),
    (0.01234, 0.0021, "0.0123 ± 0.0021"),
    (12345.6, 234.5, "12,346 ± 234"),
    (12.3, math.nan, "12.3"),
    (math.nan, 1.0, "–"),
    (0.0, 0.0, "0 ± 0"),
])
def test_format_ci(value: float, ci: float, expected: str) -> None:
    assert format_ci(value, ci) == expected


def test_format_number_and_percent() -> None:
    assert format_number(60.0, " ms") == "60 ms"
    assert format_number(1500.0) == "1,500"
    assert format_number(0.5) == "0.500"
    assert format_number(None) == "–"
    assert format_number(math.inf) == "∞"
    assert format_percent(0.831, 0.012) == "83.1 ± 1.2%"
    assert format_percent(0.001) == "0.100%"
    assert format_percent(math.nan) == "–"
