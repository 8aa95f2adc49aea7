"""The rules engine adapted to the storage's Gate: limits JSON in, the rules' Decision out."""

from __future__ import annotations

from functools import lru_cache

from reference_impl.rules import LimitsState, RulesEngine, Usage
from reference_impl.rules.decision import Decision

US = 1_000_000
EMPTY_LIMITS = LimitsState()


@lru_cache(maxsize=4096)
def parse_limits(limits_json: str | None) -> LimitsState:
    """The stored limits (None = no limits)."""
    if limits_json is None:
        return EMPTY_LIMITS
    return LimitsState.model_validate_json(limits_json)


def dump_limits(state: LimitsState) -> str | None:
    """Limits JSON to store; None when the player has no limit, exclusion or time-out."""
    return None if state == EMPTY_LIMITS else state.model_dump_json()


class RulesGate:
    """Synchronous rule checks as called inside the storage's money transaction."""

    def __init__(self, engine: RulesEngine) -> None:
        self.engine = engine
        self._skip_empty = {
            kind: not engine.needs_usage(EMPTY_LIMITS, kind)
            and engine.check_bet(EMPTY_LIMITS, Usage.zero(), 1, 0.0).allowed
            for kind in ("bet",)
        }

    def skip(self, kind: str, limits_json: str | None) -> bool:
        """Bets of players without limits need no check (unless the operator caps them)."""
        return limits_json is None and self._skip_empty.get(kind, False)

    def needs_usage(self, kind: str, limits_json: str | None) -> bool:
        """Whether the rules read usage sums for this player and operation."""
        return self.engine.needs_usage(parse_limits(limits_json), kind)

    def verdict(
        self, kind: str, limits_json: str | None, usage: Usage | None, amount: int,
        now_us: int,
    ) -> Decision:
        """Run ``check_<kind>``: the usage the storage summed is the rules' own ``Usage``."""
        check = {
            "bet": self.engine.check_bet, "deposit": self.engine.check_deposit,
            "withdrawal": self.engine.check_withdrawal,
        }[kind]
        return check(parse_limits(limits_json), usage or Usage.zero(), amount, now_us / US)
