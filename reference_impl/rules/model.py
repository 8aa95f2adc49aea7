"""Schema of the rules file: rules are data (aggregate over a window, thresholds, outcome).

A rule reads one *aggregate* (the subject), optionally a *baseline* aggregate (e.g. the
player's median deposit), checks its *when* guards, and compares the subject with the
*thresholds* in order; the first threshold crossed fires the rule with its severity and
outcome. A threshold is the largest of its terms: an absolute ``value``, ``baseline_factor``
times the baseline, and the player's own limit (``player_limit``) for the window checked.

Synchronous rules (``kind: sync``) run inside the wallet transaction on the aggregates the
storage computed (:class:`~reference_impl.rules.events.Usage`); asynchronous ones
(``kind: async``) run on the event stream against the engine's exact sliding windows.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reference_impl.rules.decision import Outcome, Severity
from reference_impl.rules.events import EventKind, WindowName
from reference_impl.rules.limits import DEFAULT_INCREASE_DELAY_S, LimitMetric

DEFAULT_RULES_PATH = Path(__file__).with_name("default_rules.yaml")

CompareOp = Literal[">", ">=", "<", "<=", "==", "!="]

#: Fields a synchronous rule may read, and whether they are windowed (24h/7d/30d).
SYNC_FIELDS: dict[str, bool] = {
    "deposits": True, "stakes": True, "wins": True, "loss": True,
    "deposits_since_last_withdrawal": False, "stakes_since_last_withdrawal": False,
    "cash_movements_24h": False, "identity_verified": False, "amount": False,
    "self_exclusion": False, "timeout": False,
}
#: Fields of an event an asynchronous rule may aggregate.
ASYNC_FIELDS = ("amount", "instrument", "device")

SYNC_FNS = ("value", "sum", "ratio", "remaining_s")
ASYNC_FNS = (
    "value", "count", "sum", "distinct", "median", "linked_players", "linked_excluded_players",
    "round_multiple",
)
LINK_FNS = ("linked_players", "linked_excluded_players")


class Aggregate(BaseModel):
    """What a rule measures.

    sync fns: ``value`` (a usage field or the amount), ``sum`` (a windowed usage field, per
    window in ``windows``, plus the amount when ``include_current``), ``ratio`` (``field`` /
    ``per``), ``remaining_s`` (seconds left of ``self_exclusion`` or ``timeout``).
    async fns: ``value`` (the event's field), ``count``/``sum``/``distinct``/``median`` over the
    player's events of ``of_kinds`` in the last ``window_s`` seconds, ``linked_players`` (other
    players who used the same ``field`` value within ``window_s``), ``linked_excluded_players``
    (those of them self-excluded now), ``round_multiple`` (a win's amount over the stakes of
    the bets of its round; rules on ``win`` only).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fn: str
    field: str = "amount"
    per: str | None = None
    windows: tuple[WindowName, ...] = ()
    of_kinds: tuple[EventKind, ...] = ()
    window_s: float | None = Field(default=None, gt=0)
    include_current: bool = True


class Condition(BaseModel):
    """A guard: ``field op value`` on the sync usage fields (e.g. identity_verified == false)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    op: CompareOp
    value: float | bool


class Threshold(BaseModel):
    """A limit to compare the subject with: the largest of the terms given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float | None = None
    baseline_factor: float | None = Field(default=None, gt=0)
    player_limit: LimitMetric | None = None
    severity: Severity | None = None
    outcome: Outcome | None = None

    @model_validator(mode="after")
    def _has_a_term(self) -> Threshold:
        if self.value is None and self.baseline_factor is None and self.player_limit is None:
            raise ValueError("a threshold needs value, baseline_factor or player_limit")
        return self


class Comparison(BaseModel):
    """``subject op threshold`` for each threshold in order; the first true one fires."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: CompareOp
    thresholds: tuple[Threshold, ...] = Field(min_length=1)


class Rule(BaseModel):
    """One rule of the rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.@-]+$")
    reason_code: str = Field(min_length=1)
    description: str = ""
    kind: Literal["sync", "async"]
    applies_to: tuple[EventKind, ...] = Field(min_length=1)
    aggregate: Aggregate
    baseline: Aggregate | None = None
    when: tuple[Condition, ...] = ()
    compare: Comparison
    outcome: Outcome
    severity: Severity = "medium"
    code: str | None = None
    cooldown_s: float = Field(default=0, ge=0)
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.kind == "sync":
            self._check_sync()
        else:
            self._check_async()
        uses_baseline = any(t.baseline_factor is not None for t in self.compare.thresholds)
        if uses_baseline and self.baseline is None:
            raise ValueError("compare: baseline_factor given but the rule has no baseline")
        if self.outcome is Outcome.BLOCK and self.kind == "sync" and not self.code:
            raise ValueError("code: a blocking sync rule needs an error code")
        return self

    def _check_sync(self) -> None:
        agg = self.aggregate
        if any(k in ("win", "rollback") for k in self.applies_to):
            raise ValueError("applies_to: wins and rollbacks are never checked synchronously")
        if agg.fn not in SYNC_FNS:
            raise ValueError(f"aggregate.fn: {agg.fn!r} is not a sync aggregate {SYNC_FNS}")
        for name, value in (("field", agg.field), ("per", agg.per)):
            if value is not None and value not in SYNC_FIELDS:
                raise ValueError(f"aggregate.{name}: unknown usage field {value!r}")
        windowed = SYNC_FIELDS[agg.field]
        if agg.fn == "sum" and windowed and not agg.windows:
            raise ValueError(f"aggregate.windows: {agg.field!r} is windowed, list the windows")
        if agg.fn == "sum" and not windowed and agg.windows:
            raise ValueError(f"aggregate.windows: {agg.field!r} is not windowed")
        if agg.fn == "ratio" and (agg.per is None or windowed or SYNC_FIELDS[agg.per]):
            raise ValueError("aggregate.per: a ratio needs two non-windowed usage fields")
        if agg.fn == "remaining_s" and agg.field not in ("self_exclusion", "timeout"):
            raise ValueError("aggregate.field: remaining_s reads self_exclusion or timeout")
        if agg.fn in ("value", "ratio") and agg.field in ("self_exclusion", "timeout"):
            raise ValueError("aggregate.fn: use remaining_s for self_exclusion/timeout")
        if self.baseline is not None:
            raise ValueError("baseline: only async rules have a baseline")
        for i, cond in enumerate(self.when):
            if cond.field not in SYNC_FIELDS or SYNC_FIELDS[cond.field]:
                raise ValueError(f"when[{i}].field: {cond.field!r} is not a scalar usage field")
        for i, t in enumerate(self.compare.thresholds):
            if t.player_limit is not None and not (agg.fn == "sum" and windowed):
                raise ValueError(
                    f"compare.thresholds[{i}].player_limit: needs a windowed sum aggregate"
                )

    def _check_async(self) -> None:
        if self.when:
            raise ValueError("when: guards are for sync rules")
        for name, agg in (("aggregate", self.aggregate), ("baseline", self.baseline)):
            if agg is None:
                continue
            if agg.fn not in ASYNC_FNS:
                raise ValueError(f"{name}.fn: {agg.fn!r} is not an async aggregate {ASYNC_FNS}")
            if agg.field not in ASYNC_FIELDS:
                raise ValueError(f"{name}.field: {agg.field!r} not in {ASYNC_FIELDS}")
            windowed = agg.fn not in ("value", "round_multiple", *LINK_FNS)
            if agg.fn == "round_multiple" and (name != "aggregate"
                                               or tuple(self.applies_to) != ("win",)):
                raise ValueError(f"{name}.fn: round_multiple is the aggregate of a rule on "
                                 "win only")
            if windowed and agg.window_s is None:
                raise ValueError(f"{name}.window_s: {agg.fn} needs a window")
            if agg.fn in ("sum", "median", "value") and agg.field != "amount":
                raise ValueError(f"{name}.field: {agg.fn} reads amount")
            if agg.fn in (*LINK_FNS, "distinct") and agg.field == "amount":
                raise ValueError(f"{name}.field: {agg.fn} needs instrument or device")
            if agg.windows:
                raise ValueError(f"{name}.windows: async rules use window_s")
        if self.baseline is not None and self.baseline.fn == "value":
            raise ValueError("baseline.fn: a baseline must be an aggregate over a window")
        for i, t in enumerate(self.compare.thresholds):
            if t.player_limit is not None:
                raise ValueError(f"compare.thresholds[{i}].player_limit: sync rules only")

    @cached_property
    def limit_metrics(self) -> tuple[str, ...]:
        """Player-limit metrics the thresholds refer to."""
        return tuple(sorted({t.player_limit for t in self.compare.thresholds if t.player_limit}))

    @cached_property
    def only_player_limits(self) -> bool:
        """True when every threshold is a player limit (no limit = the rule cannot fire)."""
        return all(t.player_limit is not None for t in self.compare.thresholds)

    @property
    def window_kinds(self) -> tuple[str, ...]:
        """Event kinds the subject aggregates (defaults to the kinds the rule is on)."""
        return self.aggregate.of_kinds or self.applies_to


class LimitsConfig(BaseModel):
    """Operator-wide settings of the responsible-gambling limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    increase_delay_s: float = Field(default=DEFAULT_INCREASE_DELAY_S, ge=0)
    operator_caps: dict[LimitMetric, dict[WindowName, int]] = Field(default_factory=dict)

    def cap(self, metric: str, window: str) -> int | None:
        """Operator cap for (metric, window), None when there is none."""
        return self.operator_caps.get(metric, {}).get(window)  # type: ignore[call-overload]


class RulesFile(BaseModel):
    """The whole rules file: a version for audit, limit settings and the rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    rules: tuple[Rule, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> RulesFile:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.id in seen:
                raise ValueError(f"rules[{i}].id: duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        return self


class RulesFileError(ValueError):
    """A rules file that cannot be used; the message names the rule index, field and reason."""


def _location(loc: tuple[Any, ...], raw: Any) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    text = "".join(parts) or "(top level)"
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = raw.get("rules") if isinstance(raw, dict) else None
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            rule_id = rules[loc[1]].get("id")
            if rule_id is not None:
                text += f" (rule id {rule_id!r})"
    return text


def parse_rules(raw: Any, source: str = "<rules>") -> RulesFile:
    """Validate already-parsed YAML/JSON data as a rules file."""
    rules = raw.get("rules") if isinstance(raw, dict) else None
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(rule, dict) and True in rule:
            raise RulesFileError(
                f"{source}: rules[{i}]: a key reads as the boolean true (YAML turns a bare "
                "`on`/`yes` key into true); the event kinds go under `applies_to`"
            )
    try:
        return RulesFile.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"{source}: {_location(tuple(err['loc']), raw)}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        ]
        raise RulesFileError("\n".join(lines)) from None


def load_rules(path: str | Path | None = None) -> RulesFile:
    """Read and validate a rules file (None = the packaged default_rules.yaml)."""
    file = Path(path) if path is not None else DEFAULT_RULES_PATH
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RulesFileError(f"{file}: not valid YAML: {exc}") from None
    return parse_rules(raw, str(file))

