"""The grid of a sweep: ``--vary PATH=V1,V2,...`` dimensions and their cartesian product.

A PATH has ``--set`` semantics (``deployments.microservices.services.wallet.replicas``: list
items by index or by name; the values are YAML). Several paths joined by ``+`` move together
(one dimension): ``deployments.monolith.services.app.replicas+deployments.hybrid.services.core
.replicas=4,8`` sets both to 4, then both to 8. Every point is validated before anything runs,
so a bad path or value is reported (field and reason) and nothing is simulated.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sim.model.scenario import Scenario, ScenarioError, load_scenario

#: Most points a sweep may have (each point is a full set of replications of every deployment).
MAX_POINTS = 500
#: Path prefixes whose dimension is a load (the capacity answer reports where SLOs break).
LOAD_PREFIXES = ("population.", "simulation.closed.users")


@dataclass(frozen=True)
class Dimension:
    """One varied quantity: the paths it sets and the values it takes, in the given order."""

    paths: tuple[str, ...]
    values: tuple[Any, ...]

    @property
    def name(self) -> str:
        """Column name in the sweep table: the paths as written, joined by ``+``."""
        return "+".join(self.paths)

    @property
    def is_load(self) -> bool:
        """True when every path is a load (population or closed-loop users)."""
        return all(p.startswith(LOAD_PREFIXES) for p in self.paths)


@dataclass(frozen=True)
class Point:
    """One configuration of the grid: its index, the value of each dimension, the overrides."""

    index: int
    values: dict[str, Any]
    overrides: tuple[str, ...]


def parse_vary(text: str) -> Dimension:
    """``PATH[+PATH...]=V1,V2,...`` -> :class:`Dimension` (raises ScenarioError naming why)."""
    if "=" not in text:
        raise ScenarioError("--vary", [(text, "expected PATH=V1,V2,... (e.g. "
                                              "deployments.monolith.services.app.replicas=4,8)")])
    lhs, _, rhs = text.partition("=")
    paths = tuple(p.strip() for p in lhs.split("+"))
    if not all(paths):
        raise ScenarioError("--vary", [(text, "empty field path")])
    raw = [v.strip() for v in rhs.split(",")]
    if not rhs.strip() or not all(raw):
        raise ScenarioError("--vary", [(lhs, "expected a comma-separated list of values")])
    values = []
    for v in raw:
        try:
            values.append(yaml.safe_load(v))
        except yaml.YAMLError:
            raise ScenarioError("--vary", [(lhs, f"value {v!r} is not valid YAML")]) from None
    if len(set(map(repr, values))) != len(values):
        raise ScenarioError("--vary", [(lhs, "values must be distinct")])
    return Dimension(paths, tuple(values))


def build_grid(dims: list[Dimension]) -> list[Point]:
    """Cartesian product of the dimensions, the first one varying slowest."""
    names = [d.name for d in dims]
    if len(set(names)) != len(names):
        raise ScenarioError("--vary", [(n, "varied twice") for n in names if names.count(n) > 1])
    total = 1
    for d in dims:
        total *= len(d.values)
    if total > MAX_POINTS:
        raise ScenarioError("--vary", [("", f"{total} points exceed the limit of {MAX_POINTS}")])
    points = []
    for i, combo in enumerate(itertools.product(*[d.values for d in dims])):
        overrides = tuple(f"{p}={_yaml(v)}" for d, v in zip(dims, combo, strict=True)
                          for p in d.paths)
        points.append(Point(i, dict(zip(names, combo, strict=True)), overrides))
    return points


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def point_scenarios(path: str | Path, base: list[str], points: list[Point]) -> list[Scenario]:
    """Load and validate the scenario of every point (``--set`` overrides, then the point's)."""
    out = []
    for pt in points:
        try:
            out.append(load_scenario(path, [*base, *pt.overrides]))
        except ScenarioError as err:
            where = ", ".join(f"{k}={v}" for k, v in pt.values.items())
            raise ScenarioError(f"{path}: sweep point {pt.index} ({where})", err.problems) from None
    return out
