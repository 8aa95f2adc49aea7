"""The import rules of ARCHITECTURE.md, checked on the source (AST), so a violation fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(folder: str) -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out += [(str(path.relative_to(ROOT)), a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.append((str(path.relative_to(ROOT)), node.module))
    return out


RULES = [
    ("sim", ("reference_impl", "loadgen", "drills")),
    ("reference_impl", ("sim", "loadgen", "drills")),
    ("loadgen", ("reference_impl", "drills")),
    ("reference_impl/domain", ("reference_impl.storage", "reference_impl.services",
                               "reference_impl.transport", "reference_impl.http",
                               "reference_impl.deployments", "asyncio", "sqlite3", "asyncpg",
                               "socket", "httpx", "redis")),
    ("reference_impl/rules", ("reference_impl.storage", "reference_impl.services",
                              "reference_impl.transport", "reference_impl.http",
                              "reference_impl.deployments", "asyncio", "sqlite3", "asyncpg",
                              "socket", "httpx", "redis", "time")),
    ("reference_impl/services", ("reference_impl.transport", "reference_impl.http")),
    # the public API reaches components only through the BackOffice's ports
    ("reference_impl/http", ("reference_impl.storage", "reference_impl.transport",
                             "reference_impl.deployments", "asyncpg", "sqlite3", "redis")),
]


@pytest.mark.parametrize(("folder", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_import_rules(folder: str, forbidden: tuple[str, ...]) -> None:
    bad = [(f, m) for f, m in _imports(folder)
           if any(m == x or m.startswith(x + ".") for x in forbidden)]
    assert not bad, f"{folder} must not import {forbidden}: {bad}"


def test_scenario_model_is_plain_data() -> None:
    """sim/model is read by any engine: no SimPy, and no other sim package."""
    bad = [(f, m) for f, m in _imports("sim/model")
           if m.startswith("simpy") or (m.startswith("sim.") and not m.startswith("sim.model"))]
    assert not bad, bad


def test_analysis_formulas_do_not_need_simpy() -> None:
    for f, m in _imports("sim/analysis"):
        if f.endswith(("analytic.py", "output_analysis.py", "saturation.py")):
            assert not m.startswith(("simpy", "sim.engine")), (f, m)


def test_recovery_metrics_are_pure() -> None:
    """Measured drills use the recovery metrics: numpy, pandas, output analysis, the schema."""
    allowed = ("numpy", "pandas", "math", "dataclasses", "collections", "__future__",
               "sim.analysis.output_analysis", "sim.reports.results")
    bad = [(f, m) for f, m in _imports("sim/analysis") if f.endswith("recovery.py")
           and not any(m == a or m.startswith(a + ".") for a in allowed)]
    assert not bad, bad


def test_loadgens_analyses_of_a_request_log_are_pure() -> None:
    """Stalls and the measured spread are read from arrays a level already measured (and
    again from saved logs, no load): numpy and the standard library's plain parts only."""
    allowed = ("numpy", "math", "dataclasses", "collections", "__future__")
    bad = [(f, m) for f, m in _imports("loadgen")
           if f.endswith(("stalls.py", "spread.py"))
           and not any(m == a or m.startswith(a + ".") for a in allowed)]
    assert not bad, bad


def test_reports_do_not_import_the_engine() -> None:
    """Reports read results, simulated or measured, never the engine that made them."""
    bad = [(f, m) for f, m in _imports("sim/reports")
           if m.startswith(("simpy", "sim.engine", "sim.runner"))]
    assert not bad, bad


def test_only_the_sweep_package_uses_dask_and_reports_do_not_import_it() -> None:
    for f, m in _imports("sim"):
        if m.startswith(("dask", "distributed")):
            assert f.startswith("sim/sweep/"), (f, m)
        if f.startswith("sim/reports/"):
            assert not m.startswith("sim.sweep"), (f, m)


def test_draws_do_not_need_simpy() -> None:
    bad = [(f, m) for f, m in _imports("sim/engine") if f.endswith("sampling.py")
           and m.startswith("simpy")]
    assert not bad, bad


LOADGEN_MAY_IMPORT_FROM_SIM = frozenset({
    "sim",                  # sim.run() for predictions, sim.load_results
    "sim.model.scenario",   # the scenario schema
    "sim.reports.results",  # the results schema
    "sim.reports.report",   # the report
})


def test_loadgen_uses_only_the_simulators_schemas_and_public_entry() -> None:
    """loadgen talks HTTP to the back office and writes the simulator's results schema: it
    may read scenarios and write results/reports, and predict through ``sim.run`` only."""
    bad = [(f, m) for f, m in _imports("loadgen")
           if (m == "sim" or m.startswith("sim.")) and m not in LOADGEN_MAY_IMPORT_FROM_SIM]
    assert not bad, bad


def test_testbed_starts_without_the_load_generators() -> None:
    """`testbed serve` (and every command) imports testbed.cli: loadgen's generators (numpy,
    pandas, uvloop, locust) load only when a load command runs."""
    import subprocess
    import sys

    code = ("import sys, testbed.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('loadgen')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, check=True)
    loaded = set(ast.literal_eval(out.stdout))
    assert loaded <= {"loadgen", "loadgen.cli", "loadgen.client", "loadgen.limits",
                      "loadgen.signing"}, loaded


def test_engine_reads_no_private_simpy_attribute() -> None:
    """The engine uses SimPy's public API only (``env.now``, never ``env._now``)."""
    bad = []
    for path in sorted((ROOT / "sim").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name in ("env", "environment", "simpy") or name.endswith("_env"):
                bad.append((str(path.relative_to(ROOT)), node.lineno, node.attr))
    assert not bad, bad


def test_call_policies_are_plain_state_machines() -> None:
    """transport/resilience.py does no I/O (the clock is injected): the RPC client composes
    it; only the RPC client uses tenacity."""
    for f, m in _imports("reference_impl/transport"):
        if f.endswith("resilience.py"):
            assert not m.startswith(("httpx", "starlette", "asyncio", "socket", "tenacity",
                                     "reference_impl.transport.rpc")), (f, m)
    users = {f for f, m in _imports("reference_impl") if m.startswith("tenacity")}
    assert users == {"reference_impl/transport/rpc.py"}, users


DRILLS_MAY_IMPORT_FROM_REFERENCE_IMPL = frozenset({
    "reference_impl.deployments.registry",    # the roles and topologies (data)
    "reference_impl.deployments.supervisor",  # death_signal_hook: no orphan servers
})


def test_drills_drive_the_back_office_as_processes() -> None:
    """drills starts the back office as processes (``testbed serve``), talks to it over HTTP
    and reads the databases it owns: of reference_impl it knows the role names and the
    parent-death hook only. It loads load and results through loadgen and sim; only
    testbed/cli.py imports it."""
    bad = [(f, m) for f, m in _imports("drills")
           if (m == "reference_impl" or m.startswith("reference_impl."))
           and m not in DRILLS_MAY_IMPORT_FROM_REFERENCE_IMPL]
    assert not bad, bad
    users = {f for folder in ("sim", "reference_impl", "loadgen", "testbed")
             for f, m in _imports(folder) if m == "drills" or m.startswith("drills.")}
    assert users <= {"testbed/cli.py"}, users
