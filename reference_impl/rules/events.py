"""Inputs and outputs of the rules package: usage aggregates, money events and alerts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reference_impl.rules.decision import Outcome, Severity

EventKind = Literal["login", "deposit", "deposit_declined", "withdrawal", "bet", "win", "rollback"]
EVENT_KINDS: tuple[str, ...] = (
    "login", "deposit", "deposit_declined", "withdrawal", "bet", "win", "rollback",
)
WindowName = Literal["24h", "7d", "30d"]
WINDOW_SECONDS: dict[str, int] = {"24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}


class Usage(BaseModel):
    """Exact aggregates the storage computes from the journal before money moves.

    Windowed dicts are keyed "24h", "7d", "30d" and hold sums over ``(now - w, now]``.
    The loss in a window is ``stakes - wins``, never below 0.
    """

    model_config = ConfigDict(frozen=True)

    deposits: dict[str, int] = Field(default_factory=dict)
    stakes: dict[str, int] = Field(default_factory=dict)
    wins: dict[str, int] = Field(default_factory=dict)
    deposits_since_last_withdrawal: int = 0
    stakes_since_last_withdrawal: int = 0
    cash_movements_24h: int = 0
    identity_verified: bool = False

    def window(self, metric: str, window: str) -> int:
        """Sum of ``metric`` ("deposits", "stakes", "wins", "loss") over ``window``.

        Raises KeyError naming the missing window when the storage did not provide it.
        """
        if metric == "loss":
            return max(0, self.window("stakes", window) - self.window("wins", window))
        values: dict[str, int] = getattr(self, metric)
        if window not in values:
            raise KeyError(f"usage.{metric} has no '{window}' window")
        return values[window]

    @classmethod
    def zero(cls, identity_verified: bool = False) -> Usage:
        """Usage of a player with no history."""
        empty = dict.fromkeys(WINDOW_SECONDS, 0)
        return cls(
            deposits=dict(empty), stakes=dict(empty), wins=dict(empty),
            identity_verified=identity_verified,
        )


class MoneyEvent(BaseModel):
    """One player event fed to the asynchronous (fraud) rules."""

    model_config = ConfigDict(frozen=True)

    kind: EventKind
    player_id: str
    amount: int = Field(default=0, ge=0)
    ts: float
    transaction_id: str | None = None
    round_id: str | None = None  # of a bet, win or rollback
    instrument: str | None = None
    device: str | None = None
    self_excluded_until: float | None = None


class Alert(BaseModel):
    """An asynchronous rule that fired."""

    rule_id: str
    reason_code: str
    severity: Severity
    outcome: Outcome
    player_id: str
    ts: float
    evidence: dict[str, Any]
    rules_version: str
