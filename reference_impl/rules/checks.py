"""Synchronous rules: evaluated inside the wallet transaction on exact usage aggregates."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from reference_impl.rules.compare import Number, exact, first_crossed, holds, show
from reference_impl.rules.decision import APPROVED, Decision, Outcome, Severity
from reference_impl.rules.events import Usage
from reference_impl.rules.limits import LimitsState
from reference_impl.rules.model import SYNC_FIELDS, LimitsConfig, Rule, Threshold


@dataclass(frozen=True)
class Firing:
    """A sync rule that fired, before it becomes a Decision."""

    rule: Rule
    outcome: Outcome
    severity: Severity
    reason: str


def _scalar(field: str, usage: Usage, amount: int) -> int:
    if field == "amount":
        return amount
    return int(getattr(usage, field))


def _player_limit(
    rule: Rule, state: LimitsState, config: LimitsConfig, window: str, now: float
) -> int | None:
    """Lowest of the player's limit in force and the operator cap (None = no limit)."""
    candidates: list[int] = []
    for metric in rule.limit_metrics:
        for value in (state.limit(metric, window, now), config.cap(metric, window)):
            if value is not None:
                candidates.append(value)
    return min(candidates) if candidates else None


def _guards_hold(rule: Rule, usage: Usage, amount: int) -> bool:
    return all(
        holds(c.op, exact(_scalar(c.field, usage, amount)), exact(c.value)) for c in rule.when
    )


def _fire(rule: Rule, crossed: tuple[Threshold, Number], text: str) -> Firing:
    threshold = crossed[0]
    severity = threshold.severity or rule.severity
    outcome = threshold.outcome or rule.outcome
    return Firing(rule, outcome, severity, text)


def _label(rule: Rule) -> str:
    return rule.description or rule.id


def evaluate_sync_rule(
    rule: Rule, state: LimitsState, usage: Usage, amount: int, now: float,
    config: LimitsConfig,
) -> Firing | None:
    """Evaluate one sync rule for an operation of ``amount`` at ``now``."""
    agg = rule.aggregate
    op = rule.compare.op
    if agg.fn == "remaining_s":
        until = state.self_exclusion_until if agg.field == "self_exclusion" else (
            state.timeout_until
        )
        remaining = 0 if until is None or until <= now else exact(until - now)
        crossed = first_crossed(rule.compare, remaining)
        if crossed is None:
            return None
        return _fire(rule, crossed, f"{_label(rule)} until {until} ({float(remaining):.0f} s left)")
    if not _guards_hold(rule, usage, amount):
        return None
    if agg.fn == "sum" and SYNC_FIELDS[agg.field]:
        for window in agg.windows:
            limit = _player_limit(rule, state, config, window, now)
            if limit is None and rule.only_player_limits:
                continue  # no limit for this window: skip without reading usage
            if agg.field == "loss":
                stakes = usage.window("stakes", window) + (amount if agg.include_current else 0)
                total = max(0, stakes - usage.window("wins", window))
            else:
                total = usage.window(agg.field, window) + (amount if agg.include_current else 0)
            crossed = first_crossed(rule.compare, total, player_limit=limit)
            if crossed is not None:
                before = total - amount if agg.include_current else total
                shown = f"{before} + {amount}" if agg.include_current else f"{total}"
                return _fire(
                    rule, crossed,
                    f"{_label(rule)} {window}: {shown} {op} {show(crossed[1])}",
                )
        return None
    if agg.fn == "ratio":
        numerator = _scalar(agg.field, usage, amount)
        denominator = _scalar(agg.per or "", usage, amount)
        if denominator == 0:
            return None
        ratio = Fraction(numerator, denominator)
        crossed = first_crossed(rule.compare, ratio)
        if crossed is None:
            return None
        return _fire(
            rule, crossed,
            f"{_label(rule)}: {numerator}/{denominator} = {float(ratio):.3f} "
            f"{op} {show(crossed[1])}",
        )
    value = _scalar(agg.field, usage, amount)
    if agg.fn == "sum" and agg.include_current and agg.field != "amount":
        value += amount
    crossed = first_crossed(rule.compare, value)
    if crossed is None:
        return None
    return _fire(rule, crossed, f"{_label(rule)}: {value} {op} {show(crossed[1])}")


def decide(firings: list[Firing]) -> Decision:
    """The strictest firing decides (block > review > approve); ties go to file order."""
    if not firings:
        return APPROVED
    best = max(firings, key=lambda f: f.outcome.rank)  # max keeps the first of equals
    if best.outcome is Outcome.APPROVE:
        return APPROVED
    code = best.rule.code if best.outcome is Outcome.BLOCK else None
    return Decision(
        outcome=best.outcome, code=code, reason=best.reason, rule_id=best.rule.id,
        reason_code=best.rule.reason_code, severity=best.severity,
    )


def rule_needs_usage(rule: Rule, state: LimitsState, config: LimitsConfig) -> bool:
    """False when evaluating ``rule`` for this player cannot read any usage aggregate."""
    agg = rule.aggregate
    if agg.fn == "remaining_s":
        return False
    if any(c.field != "amount" for c in rule.when):
        return True
    if agg.fn == "sum" and SYNC_FIELDS[agg.field]:
        if not rule.only_player_limits:
            return True
        return any(
            state.has_limit(m) or bool(config.operator_caps.get(m))  # type: ignore[call-overload]
            for m in rule.limit_metrics
        )
    return agg.field != "amount" or (agg.per is not None and agg.per != "amount")
