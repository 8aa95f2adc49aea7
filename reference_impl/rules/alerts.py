"""Asynchronous (fraud) rules: evaluated on the event stream against exact in-memory state.

Per player, one exact sliding window per distinct (event kinds, window, field, statistic)
the rules need, created on the player's first matching event; per identifier field, one
:class:`LinkIndex`. A player's timestamps are clamped to be non-decreasing (a late event
counts at the latest time seen for that player).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from reference_impl.rules.compare import Number, first_crossed, show
from reference_impl.rules.events import Alert, MoneyEvent
from reference_impl.rules.links import LinkIndex
from reference_impl.rules.model import LINK_FNS, Aggregate, Rule
from reference_impl.rules.windows import SlidingWindow

MAX_LINKS_IN_EVIDENCE = 10
MAX_OPEN_ROUNDS = 256
"""Rounds whose stakes are kept per player (for ``round_multiple``); past it the oldest is
forgotten (its win is then not checked)."""
ROUND_TTL_S = 86_400.0
"""A round without a win for this long is forgotten."""
SWEEP_BATCH = 8
"""Players whose expired state each observed event checks, round robin over every player
with state: forgetting costs microseconds per event. A pass over every player at once (every
100,000 events) stalled the monolith's event loop 65-110 ms on a fresh database and 200-450
ms once calibration runs had left tens of thousands of players (found by `testbed
calibrate` as host pauses; tests/reference_impl/test_rules_sweep.py)."""


@dataclass(frozen=True)
class WindowSpec:
    """One per-player window: which events it holds and what it must answer."""

    kinds: frozenset[str]
    window_s: float
    field: str
    statistic: str  # "plain" (count/sum), "median" or "distinct"

    @classmethod
    def of(cls, agg: Aggregate, default_kinds: tuple[str, ...]) -> WindowSpec:
        """The window an aggregate reads."""
        statistic = agg.fn if agg.fn in ("median", "distinct") else "plain"
        assert agg.window_s is not None
        return cls(frozenset(agg.of_kinds or default_kinds), agg.window_s, agg.field, statistic)

    def new_window(self) -> SlidingWindow:
        """An empty window for this spec."""
        return SlidingWindow(
            self.window_s,
            track_median=self.statistic == "median",
            track_distinct=self.statistic == "distinct",
        )


@dataclass
class PlayerWindows:
    """A player's windows and latest timestamp."""

    clock: float = float("-inf")
    windows: dict[WindowSpec, SlidingWindow] = field(default_factory=dict)
    rounds: dict[str, tuple[int, float]] = field(default_factory=dict)  # stakes, last bet ts


@dataclass(frozen=True)
class CompiledRule:
    """An async rule with its windows resolved."""

    rule: Rule
    subject_spec: WindowSpec | None
    baseline_spec: WindowSpec | None
    link_key: tuple[str, float | None] | None


def _compile(rule: Rule) -> CompiledRule:
    agg = rule.aggregate
    subject_spec = None
    link_key = None
    if agg.fn in LINK_FNS:
        link_key = (agg.field, agg.window_s)
    elif agg.fn not in ("value", "round_multiple"):
        subject_spec = WindowSpec.of(agg, rule.applies_to)
    baseline_spec = None
    if rule.baseline is not None:
        baseline_spec = WindowSpec.of(rule.baseline, rule.applies_to)
    return CompiledRule(rule, subject_spec, baseline_spec, link_key)


def _read(window: SlidingWindow | None, fn: str, ts: float) -> Number | None:
    """count/sum/distinct/median of a window (an absent window is empty)."""
    if fn == "median":
        return None if window is None else window.median(ts)
    if window is None:
        return 0
    if fn == "count":
        return window.count(ts)
    if fn == "sum":
        return window.sum(ts)
    return window.distinct(ts)


class AlertEvaluator:
    """Exact in-memory state of the async rules and their evaluation."""

    def __init__(self, rules: list[Rule], rules_version: str, sweep_every: int = 100_000):
        self.rules_version = rules_version
        self._compiled = [_compile(r) for r in rules if r.kind == "async" and r.enabled]
        self._by_kind: dict[str, list[CompiledRule]] = {}
        for c in self._compiled:
            for kind in c.rule.applies_to:
                self._by_kind.setdefault(kind, []).append(c)
        specs: set[WindowSpec] = set()
        for c in self._compiled:
            specs.update(s for s in (c.subject_spec, c.baseline_spec) if s is not None)
        self._specs_by_kind: dict[str, list[WindowSpec]] = {}
        for spec in sorted(specs, key=repr):
            for kind in spec.kinds:
                self._specs_by_kind.setdefault(kind, []).append(spec)
        self._links: dict[tuple[str, float | None], LinkIndex] = {
            c.link_key: LinkIndex(c.link_key[1]) for c in self._compiled if c.link_key
        }
        self._players: dict[str, PlayerWindows] = {}
        self._tracks_rounds = any(c.rule.aggregate.fn == "round_multiple"
                                  for c in self._compiled)
        self._excluded_until: dict[str, float] = {}
        self._last_fired: dict[tuple[str, str], float] = {}
        self._sweep_every = sweep_every
        self._since_sweep = 0
        self._sweep_queue: deque[str] = deque()  # players still to check this cycle
        self._clock = float("-inf")

    @property
    def player_count(self) -> int:
        """Players holding in-memory window state."""
        return len(self._players)

    def note_self_exclusion(self, player_id: str, until: float | None) -> None:
        """Tell the link rules that ``player_id`` is self-excluded until ``until``."""
        if until is None:
            self._excluded_until.pop(player_id, None)
        else:
            self._excluded_until[player_id] = max(until, self._excluded_until.get(player_id, until))

    def _excluded(self, player_id: str, ts: float) -> bool:
        until = self._excluded_until.get(player_id)
        return until is not None and ts < until

    def observe(self, event: MoneyEvent) -> list[Alert]:
        """Feed one event; return the alerts it raises."""
        player = self._players.get(event.player_id)
        if player is None:
            player = PlayerWindows()
            if event.kind in self._specs_by_kind or (  # keep only players with state
                    self._tracks_rounds and event.kind == "bet"):
                self._players[event.player_id] = player
        ts = max(event.ts, player.clock)
        player.clock = ts
        self._clock = max(self._clock, ts)
        if event.self_excluded_until is not None:
            self.note_self_exclusion(event.player_id, event.self_excluded_until)
        multiple = self._round(player, event, ts) if self._tracks_rounds else None
        applicable = self._by_kind.get(event.kind, [])
        before: dict[int, tuple[Number | None, Number | None]] = {}
        for i, c in enumerate(applicable):
            baseline = None
            if c.baseline_spec is not None and c.rule.baseline is not None:
                baseline = _read(player.windows.get(c.baseline_spec), c.rule.baseline.fn, ts)
            subject = None
            if c.subject_spec is not None and not c.rule.aggregate.include_current:
                subject = _read(player.windows.get(c.subject_spec), c.rule.aggregate.fn, ts)
            before[i] = (baseline, subject)
        linked: dict[tuple[str, float | None], set[str]] = {}
        for key, index in self._links.items():
            value = getattr(event, key[0])
            if value is not None:
                linked[key] = index.others(value, event.player_id, ts)
                index.touch(value, event.player_id, ts)
        for spec in self._specs_by_kind.get(event.kind, []):
            window = player.windows.get(spec)
            if window is None:
                window = player.windows[spec] = spec.new_window()
            window.add(ts, event.amount, getattr(event, spec.field))
        alerts = []
        for i, c in enumerate(applicable):
            alert = self._evaluate(c, event, player, ts, before[i], linked, multiple)
            if alert is not None:
                alerts.append(alert)
        self._sweep_some(self._clock)
        self._since_sweep += 1
        if self._since_sweep >= self._sweep_every:
            self._expire_shared(self._clock)
        return alerts

    def _sweep_some(self, now: float) -> None:
        """Check :data:`SWEEP_BATCH` players' state for expiry, round robin over every
        player with state (a cycle starts from a snapshot of the players' ids)."""
        queue = self._sweep_queue
        if not queue:
            queue.extend(self._players)
        players = self._players
        for _ in range(min(SWEEP_BATCH, len(queue))):
            player_id = queue.popleft()
            player = players.get(player_id)
            if player is not None and self._expire_player(player, now):
                del players[player_id]

    @staticmethod
    def _round(player: PlayerWindows, event: MoneyEvent, ts: float) -> tuple[float, int] | None:
        """Keep the stakes of each open round; for a win, (amount / stakes, stakes)."""
        if event.round_id is None:
            return None
        rounds = player.rounds
        if event.kind == "bet":
            stakes, _ = rounds.pop(event.round_id, (0, ts))  # re-inserted: newest last
            rounds[event.round_id] = (stakes + event.amount, ts)
            while len(rounds) > MAX_OPEN_ROUNDS:
                del rounds[next(iter(rounds))]
        elif event.kind == "rollback":
            rounds.pop(event.round_id, None)  # its bet refunded: nothing to compare with
        elif event.kind == "win":
            stakes, _ = rounds.pop(event.round_id, (0, ts))
            if stakes > 0:
                return event.amount / stakes, stakes
        return None

    def _evaluate(
        self, c: CompiledRule, event: MoneyEvent, player: PlayerWindows, ts: float,
        before: tuple[Number | None, Number | None],
        linked: dict[tuple[str, float | None], set[str]],
        multiple: tuple[float, int] | None = None,
    ) -> Alert | None:
        rule, agg = c.rule, c.rule.aggregate
        baseline, subject = before
        others: set[str] | None = None
        if c.link_key is not None:
            if c.link_key not in linked:
                return None
            others = linked[c.link_key]
            if agg.fn == "linked_excluded_players":
                others = {p for p in others if self._excluded(p, ts)}
            subject = len(others)
        elif agg.fn == "value":
            subject = event.amount
        elif agg.fn == "round_multiple":
            subject = None if multiple is None else multiple[0]
        elif subject is None and c.subject_spec is not None:
            subject = _read(player.windows.get(c.subject_spec), agg.fn, ts)
        if subject is None:
            return None
        crossed = first_crossed(rule.compare, subject, baseline=baseline)
        if crossed is None:
            return None
        fired_key = (rule.id, event.player_id)
        last = self._last_fired.get(fired_key)
        if last is not None and ts - last < rule.cooldown_s:
            return None
        self._last_fired[fired_key] = ts
        threshold, value = crossed
        evidence: dict[str, Any] = {"fn": agg.fn, "field": agg.field}
        if agg.window_s is not None:
            evidence["window_s"] = show(agg.window_s)
        if others is not None:
            evidence[agg.field] = getattr(event, agg.field)
            evidence["linked_players"] = sorted(others)[:MAX_LINKS_IN_EVIDENCE]
        evidence.update(value=show(subject), op=rule.compare.op, threshold=show(value))
        if baseline is not None:
            evidence["baseline"] = show(baseline)
        if agg.fn == "round_multiple" and multiple is not None:
            evidence.update(round_id=event.round_id, win=event.amount, round_stakes=multiple[1])
        if event.transaction_id is not None:
            evidence["transaction_id"] = event.transaction_id
        return Alert(
            rule_id=rule.id, reason_code=rule.reason_code,
            severity=threshold.severity or rule.severity,
            outcome=threshold.outcome or rule.outcome,
            player_id=event.player_id, ts=ts, evidence=evidence,
            rules_version=self.rules_version,
        )

    def expire(self, now: float) -> int:
        """Drop state that has left every window at ``now``, every player at once; return
        players forgotten. (Observing events does the same a few players at a time.)"""
        dropped = 0
        for player_id in list(self._players):
            if self._expire_player(self._players[player_id], now):
                del self._players[player_id]
                dropped += 1
        self._expire_shared(now)
        return dropped

    @staticmethod
    def _expire_player(player: PlayerWindows, now: float) -> bool:
        """Drop what has left ``player``'s windows and open rounds at ``now``; True when
        nothing is left (the player can be forgotten)."""
        at = player.clock = max(now, player.clock)  # windows now stand at `at`
        for spec in list(player.windows):
            if player.windows[spec].count(at) == 0:
                del player.windows[spec]
        for round_id, (_, last_bet) in list(player.rounds.items()):
            if at - last_bet >= ROUND_TTL_S:
                del player.rounds[round_id]
        return not player.windows and not player.rounds

    def _expire_shared(self, now: float) -> None:
        """Link indexes, rule cooldowns and self-exclusions: what has passed at ``now``."""
        self._since_sweep = 0
        for index in self._links.values():
            index.expire(now)
        cooldowns = {r.rule.id: r.rule.cooldown_s for r in self._compiled}
        for key, last in list(self._last_fired.items()):
            if now - last >= cooldowns.get(key[0], 0):
                del self._last_fired[key]
        for player_id, until in list(self._excluded_until.items()):
            if until <= now:
                del self._excluded_until[player_id]
