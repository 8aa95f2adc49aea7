"""Outcome of a synchronous check, as handed to the wallet core."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Severity = Literal["low", "medium", "high"]

SEVERITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


class Outcome(StrEnum):
    """What to do with an operation."""

    APPROVE = "approve"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def rank(self) -> int:
        """Strictness order: approve < review < block."""
        return _OUTCOME_RANK[self]


_OUTCOME_RANK: dict[Outcome, int] = {Outcome.APPROVE: 0, Outcome.REVIEW: 1, Outcome.BLOCK: 2}


@dataclass(frozen=True)
class Decision:
    """Answer of a synchronous check.

    ``code`` is the machine-readable error code when blocked ("LIMIT_EXCEEDED",
    "PLAYER_BLOCKED"), ``rule_id`` the (versioned) id of the deciding rule.
    """

    outcome: Outcome
    code: str | None
    reason: str
    rule_id: str | None
    reason_code: str | None = None
    severity: Severity | None = None

    @property
    def allowed(self) -> bool:
        """True when money may move (approve, or review = move but hold)."""
        return self.outcome is not Outcome.BLOCK


APPROVED = Decision(Outcome.APPROVE, None, "ok", None)
