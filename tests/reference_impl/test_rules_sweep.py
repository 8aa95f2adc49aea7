"""Forgetting expired fraud state costs a few players per event, never a pass over all.

Every 100,000 events the rules used to walk every player with state inside one event: on
the monolith's event loop a stall of 65-110 ms with a few thousand players (found from
outside by `testbed calibrate`). Now each observed event checks ``SWEEP_BATCH`` players,
round robin, and still forgets everyone whose windows emptied.
"""

from __future__ import annotations

import pytest

from reference_impl.rules import MoneyEvent, RulesEngine
from reference_impl.rules import alerts as alerts_mod
from reference_impl.rules.windows import SlidingWindow

DAY = 86_400.0
PLAYERS = 5_000


def _bet(player: str, ts: float) -> MoneyEvent:
    return MoneyEvent(kind="bet", player_id=player, ts=ts, amount=100, round_id=f"r-{player}")


def test_no_event_checks_more_than_a_batch_of_players(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = RulesEngine.from_yaml()
    for i in range(PLAYERS):
        engine.observe(_bet(f"p{i}", float(i)))
    checks = 0
    count = SlidingWindow.count

    def counted(self: SlidingWindow, now: float) -> int:
        nonlocal checks
        checks += 1
        return count(self, now)

    monkeypatch.setattr(SlidingWindow, "count", counted)
    worst = 0
    late = 120 * DAY  # every window of every player has emptied
    for n in range(2 * PLAYERS):  # more events than the old sweep interval would allow...
        before = checks
        engine.observe(_bet(f"q{n % 10}", late + n))
        worst = max(worst, checks - before)
    # ...each event checked a bounded number of windows (a few players' worth)
    assert worst <= 8 * alerts_mod.SWEEP_BATCH
    assert engine.tracked_players <= 10 + alerts_mod.SWEEP_BATCH  # all idle ones forgotten


def test_the_round_robin_forgets_every_idle_player_within_a_cycle() -> None:
    engine = RulesEngine.from_yaml()
    for i in range(1_000):
        engine.observe(_bet(f"p{i}", float(i)))
    assert engine.tracked_players == 1_000
    late = 120 * DAY
    events = 0
    while engine.tracked_players > 1:
        engine.observe(_bet("active", late + events))
        events += 1
        assert events <= 2 * 1_000 // alerts_mod.SWEEP_BATCH + 2
    assert engine.tracked_players == 1  # the active one
