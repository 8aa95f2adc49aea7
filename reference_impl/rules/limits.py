"""Responsible-gambling limits a player sets on himself, and their timing rules.

A decrease (or a new limit) applies at once; an increase or a removal applies only
``delay_s`` (24h by default) after it was asked for, and a later request replaces a pending
one. Self-exclusion and time-out can only be extended.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reference_impl.domain.money import MAX_AMOUNT
from reference_impl.rules.events import WINDOW_SECONDS, WindowName

LimitMetric = Literal["deposit", "loss", "wager"]
LIMIT_METRICS: tuple[LimitMetric, ...] = ("deposit", "loss", "wager")
DEFAULT_INCREASE_DELAY_S = 86_400.0

UNTIL_MAX = 4_102_444_800.0
"""Latest end of a self-exclusion or time-out accepted: 2100-01-01 UTC (unix seconds)."""

Amount = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
Until = Annotated[float, Field(ge=0, le=UNTIL_MAX, allow_inf_nan=False)]


class LimitsRequest(BaseModel):
    """Body of ``PUT /players/{id}/limits``: every part optional, amounts in minor units.

    A window mapped to None removes that limit (which counts as an increase).
    """

    model_config = ConfigDict(extra="forbid")

    deposit: dict[WindowName, Amount | None] = Field(default_factory=dict)
    loss: dict[WindowName, Amount | None] = Field(default_factory=dict)
    wager: dict[WindowName, Amount | None] = Field(default_factory=dict)
    self_exclusion_until: Until | None = None
    timeout_until: Until | None = None


class LimitSlot(BaseModel):
    """One limit (metric, window): the value in force and an optional pending change."""

    model_config = ConfigDict(frozen=True)

    value: int | None = None
    pending_value: int | None = None
    pending_at: float | None = None

    def in_force(self, now: float) -> int | None:
        """The limit that applies at ``now`` (None = no limit)."""
        if self.pending_at is not None and now >= self.pending_at:
            return self.pending_value
        return self.value

    def settled(self, now: float) -> LimitSlot:
        """The same slot with a matured pending change folded in."""
        if self.pending_at is not None and now >= self.pending_at:
            return LimitSlot(value=self.pending_value)
        return self

    def request(self, value: int | None, now: float, delay_s: float) -> LimitSlot:
        """Apply a request for ``value`` at ``now``."""
        current = self.settled(now).value
        if value is not None and (current is None or value <= current):
            return LimitSlot(value=value)
        if value == current:  # removal of a limit that does not exist
            return LimitSlot(value=None)
        return LimitSlot(value=current, pending_value=value, pending_at=now + delay_s)

    @property
    def empty(self) -> bool:
        """True when the slot holds no limit and no pending change."""
        return self.value is None and self.pending_at is None


class LimitsState(BaseModel):
    """Limits stored (as JSON) in the player row. ``LimitsState()`` means no limits."""

    model_config = ConfigDict(frozen=True)

    deposit: dict[WindowName, LimitSlot] = Field(default_factory=dict)
    loss: dict[WindowName, LimitSlot] = Field(default_factory=dict)
    wager: dict[WindowName, LimitSlot] = Field(default_factory=dict)
    self_exclusion_until: float | None = None
    timeout_until: float | None = None

    def slots(self, metric: str) -> dict[WindowName, LimitSlot]:
        """The slots of one metric ("deposit", "loss", "wager")."""
        if metric not in LIMIT_METRICS:
            raise KeyError(f"unknown limit metric {metric!r}")
        result: dict[WindowName, LimitSlot] = getattr(self, metric)
        return result

    def limit(self, metric: str, window: str, now: float) -> int | None:
        """The player's limit in force for (metric, window) at ``now``; None = none."""
        slot = self.slots(metric).get(window)  # type: ignore[call-overload]
        return None if slot is None else slot.in_force(now)

    def has_limit(self, metric: str) -> bool:
        """True when some window of ``metric`` holds a limit (in force or pending removal)."""
        return any(slot.value is not None for slot in self.slots(metric).values())

    def self_excluded(self, now: float) -> bool:
        """True while a self-exclusion runs."""
        return self.self_exclusion_until is not None and now < self.self_exclusion_until

    def timed_out(self, now: float) -> bool:
        """True while a time-out runs."""
        return self.timeout_until is not None and now < self.timeout_until

    def to_public(self, now: float) -> dict[str, Any]:
        """JSON for the API: limits in force per metric/window, pending changes, exclusions."""
        result: dict[str, Any] = {}
        pending: list[dict[str, Any]] = []
        for metric in LIMIT_METRICS:
            slots = self.slots(metric)
            result[metric] = {}
            for window in WINDOW_SECONDS:
                slot = slots.get(window)  # type: ignore[call-overload]
                if slot is None:
                    result[metric][window] = None
                    continue
                slot = slot.settled(now)
                result[metric][window] = slot.value
                if slot.pending_at is not None:
                    pending.append({
                        "metric": metric, "window": window,
                        "limit": slot.pending_value, "effective_at": slot.pending_at,
                    })
        result["pending"] = pending
        result["self_exclusion_until"] = (
            self.self_exclusion_until if self.self_excluded(now) else None
        )
        result["timeout_until"] = self.timeout_until if self.timed_out(now) else None
        return result


def _extend(current: float | None, requested: float | None, now: float) -> float | None:
    """An end time that can only move later; ended periods are forgotten."""
    if current is not None and current <= now:
        current = None
    if requested is None or requested <= now:
        return current
    return requested if current is None else max(current, requested)


def apply_limits_request(
    state: LimitsState, req: LimitsRequest, now: float,
    delay_s: float = DEFAULT_INCREASE_DELAY_S,
) -> LimitsState:
    """New state after ``req`` at ``now``: decreases at once, increases/removals after
    ``delay_s``, exclusion and time-out only extended (a shorter end is ignored)."""
    updated: dict[str, Any] = {}
    for metric in LIMIT_METRICS:
        slots = {w: s.settled(now) for w, s in state.slots(metric).items()}
        for window, value in req.model_dump()[metric].items():
            slots[window] = slots.get(window, LimitSlot()).request(value, now, delay_s)
        updated[metric] = {w: s for w, s in slots.items() if not s.empty}
    updated["self_exclusion_until"] = _extend(
        state.self_exclusion_until, req.self_exclusion_until, now
    )
    updated["timeout_until"] = _extend(state.timeout_until, req.timeout_until, now)
    return LimitsState(**updated)
