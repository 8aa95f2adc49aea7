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
    ("sim", ("reference_impl",)),
    ("reference_impl", ("sim",)),
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


def test_topology_and_population_do_not_need_simpy() -> None:
    for f, m in _imports("sim"):
        if f.endswith(("topology.py", "population.py", "analytic.py", "output_analysis.py")):
            assert not m.startswith("simpy"), (f, m)
