"""The rules engine the wallet core calls: sync checks, limit updates and async alerts."""

from __future__ import annotations

from pathlib import Path

from reference_impl.rules.alerts import AlertEvaluator
from reference_impl.rules.checks import decide, evaluate_sync_rule, rule_needs_usage
from reference_impl.rules.decision import Decision
from reference_impl.rules.events import WINDOW_SECONDS, Alert, MoneyEvent, Usage
from reference_impl.rules.limits import LimitsRequest, LimitsState, apply_limits_request
from reference_impl.rules.model import Rule, RulesFile, load_rules


class RulesEngine:
    """Rules loaded from a versioned rules file.

    Sync checks are pure functions of (limits state, usage, amount, now). ``observe`` keeps
    exact in-memory state (sliding windows, link index) for the async fraud rules; it is not
    thread-safe, and time is always a parameter (no clock reads).
    """

    #: Windows (name -> seconds) the storage must sum in :class:`Usage`; half-open (now-w, now].
    usage_windows: dict[str, int] = WINDOW_SECONDS

    def __init__(self, rules_file: RulesFile) -> None:
        self.rules_file = rules_file
        self.version: str = rules_file.version
        enabled = [r for r in rules_file.rules if r.enabled]
        self._sync: dict[str, list[Rule]] = {}
        for rule in enabled:
            if rule.kind == "sync":
                for kind in rule.applies_to:
                    self._sync.setdefault(kind, []).append(rule)
        self._alerts = AlertEvaluator(enabled, rules_file.version)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None) -> RulesEngine:
        """Load a rules file (None = the packaged default_rules.yaml).

        Raises RulesFileError naming the rule index, field and reason.
        """
        return cls(load_rules(path))

    @property
    def rules(self) -> tuple[Rule, ...]:
        """All rules of the file, in file order."""
        return self.rules_file.rules

    # ---- limits ----
    def update_limits(self, state: LimitsState, req: LimitsRequest, now: float) -> LimitsState:
        """Apply a limits request: a decrease at once, an increase (or removal) after the
        configured delay (24h); self-exclusion and time-out can only be extended."""
        return apply_limits_request(state, req, now, self.rules_file.limits.increase_delay_s)

    # ---- sync checks ----
    def _check(
        self, kind: str, state: LimitsState, usage: Usage, amount: int, now: float
    ) -> Decision:
        if amount < 0:
            raise ValueError(f"amount must be >= 0, got {amount}")
        config = self.rules_file.limits
        firings = []
        for rule in self._sync.get(kind, ()):
            firing = evaluate_sync_rule(rule, state, usage, amount, now, config)
            if firing is not None:
                firings.append(firing)
        return decide(firings)

    def check_login(self, state: LimitsState, now: float) -> Decision:
        """Refuse a login during self-exclusion or time-out."""
        return self._check("login", state, Usage(), 0, now)

    def check_bet(self, state: LimitsState, usage: Usage, amount: int, now: float) -> Decision:
        """Check a new bet: exclusion, time-out, loss and wager limits."""
        return self._check("bet", state, usage, amount, now)

    def check_deposit(
        self, state: LimitsState, usage: Usage, amount: int, now: float
    ) -> Decision:
        """Check a deposit: exclusion, time-out, deposit limits, unverified identity."""
        return self._check("deposit", state, usage, amount, now)

    def check_withdrawal(
        self, state: LimitsState, usage: Usage, amount: int, now: float
    ) -> Decision:
        """Check a withdrawal (allowed when self-excluded): low wagering and unverified
        identity send it to review."""
        return self._check("withdrawal", state, usage, amount, now)

    def needs_usage(self, state: LimitsState, kind: str) -> bool:
        """False when no sync rule for ``kind`` reads usage aggregates for this player,
        so the storage may pass ``Usage()`` and skip its SUM queries."""
        config = self.rules_file.limits
        return any(rule_needs_usage(r, state, config) for r in self._sync.get(kind, ()))

    # ---- async alerts ----
    def observe(self, event: MoneyEvent) -> list[Alert]:
        """Feed one event to the async rules; return the alerts it raises."""
        return self._alerts.observe(event)

    def note_self_exclusion(self, player_id: str, until: float | None) -> None:
        """Tell the link rules a player is self-excluded until ``until`` (None = not)."""
        self._alerts.note_self_exclusion(player_id, until)

    def expire(self, now: float) -> int:
        """Forget async state that left every window at ``now``; return players dropped."""
        return self._alerts.expire(now)

    @property
    def memory_s(self) -> float:
        """How far back the async rules' state reaches: the longest window (aggregate or
        baseline) or cooldown of an enabled async rule; replaying this much of the event
        stream rebuilds their state (a link window of None, "ever", is bounded by it too)."""
        spans = [0.0]
        for rule in self.rules_file.rules:
            if rule.kind != "async" or not rule.enabled:
                continue
            spans.append(rule.cooldown_s)
            for agg in (rule.aggregate, rule.baseline):
                if agg is not None and agg.window_s is not None:
                    spans.append(agg.window_s)
        return max(spans)

    @property
    def tracked_players(self) -> int:
        """Players with in-memory async state."""
        return self._alerts.player_count
