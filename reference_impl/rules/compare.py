"""Exact threshold arithmetic shared by the sync checks and the async alerts."""

from __future__ import annotations

import operator
from collections.abc import Callable
from fractions import Fraction

from reference_impl.rules.model import Comparison, Threshold

_OPS: dict[str, Callable[[Number, Number], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}


_EXACT_CACHE: dict[float, int | Fraction] = {}

Number = int | Fraction


def exact(x: float | int | bool | Fraction) -> Number:
    """Exact value of a YAML number: an int when integral, else a Fraction (0.1 is one
    tenth, not the nearest binary float)."""
    kind = type(x)
    if kind is int or kind is Fraction:
        return x  # type: ignore[return-value]
    if kind is bool:
        return int(x)
    cached = _EXACT_CACHE.get(x)  # type: ignore[arg-type]
    if cached is None:
        value = float(x)
        cached = int(value) if value.is_integer() else Fraction(repr(value))
        if len(_EXACT_CACHE) < 4096:
            _EXACT_CACHE[value] = cached
    return cached


def holds(op: str, left: Number, right: Number) -> bool:
    """``left op right``."""
    return _OPS[op](left, right)


def threshold_value(
    t: Threshold, baseline: Number | None = None, player_limit: int | None = None
) -> Number | None:
    """The threshold: the largest of its terms; None when a term it needs is missing
    (no player limit in force, or only a baseline term and no baseline yet)."""
    terms: list[Number] = []
    if t.player_limit is not None:
        if player_limit is None:
            return None
        terms.append(player_limit)
    if t.value is not None:
        terms.append(exact(t.value))
    if t.baseline_factor is not None and baseline is not None:
        terms.append(exact(t.baseline_factor) * baseline)
    return max(terms) if terms else None


def first_crossed(
    comparison: Comparison, subject: Number,
    baseline: Number | None = None, player_limit: int | None = None,
) -> tuple[Threshold, Number] | None:
    """The first threshold the subject crosses, with its value; None if none."""
    for t in comparison.thresholds:
        value = threshold_value(t, baseline, player_limit)
        if value is not None and holds(comparison.op, subject, value):
            return t, value
    return None


def show(x: Number | float) -> int | float:
    """A JSON-friendly number: an int when integral."""
    if isinstance(x, Fraction):
        return int(x) if x.denominator == 1 else float(x)
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x
