"""Asynchronous fraud rules: unit cases and a brute-force model of the default rules."""

from __future__ import annotations

from statistics import median

from hypothesis import event, given, settings
from hypothesis import strategies as st

from reference_impl.rules import Alert, MoneyEvent, Outcome, RulesEngine

MIN, DAY = 60.0, 86_400.0


def ev(kind: str, player: str, ts: float, amount: int = 1000, **kw: object) -> MoneyEvent:
    return MoneyEvent(kind=kind, player_id=player, ts=ts, amount=amount, **kw)  # type: ignore[arg-type]


def fired(engine: RulesEngine, event: MoneyEvent) -> set[str]:
    return {a.rule_id for a in engine.observe(event)}


def test_five_deposits_in_ten_minutes_then_cooldown() -> None:
    engine = RulesEngine.from_yaml()
    for i in range(4):
        assert "velocity-deposit-count-v1" not in fired(engine, ev("deposit", "p", i * MIN))
    alerts = engine.observe(ev("deposit", "p", 4 * MIN, transaction_id="t5"))
    alert = next(a for a in alerts if a.rule_id == "velocity-deposit-count-v1")
    assert alert.evidence["value"] == 5 and alert.evidence["threshold"] == 5
    assert alert.evidence["transaction_id"] == "t5"
    assert alert.outcome is Outcome.REVIEW and alert.rules_version == engine.version
    # sixth one in the same 10 minutes: suppressed by the cooldown
    assert "velocity-deposit-count-v1" not in fired(engine, ev("deposit", "p", 5 * MIN))
    # the first deposit (t=0) leaves the window exactly at t=600
    assert "velocity-deposit-count-v1" not in fired(engine, ev("deposit", "q", 0.0))


def test_deposits_spread_over_more_than_ten_minutes_do_not_alert() -> None:
    engine = RulesEngine.from_yaml()
    for i in range(8):
        assert "velocity-deposit-count-v1" not in fired(engine, ev("deposit", "p", i * 150.0))


def test_three_instruments_in_24h_and_declined_attempts() -> None:
    engine = RulesEngine.from_yaml()
    assert not fired(engine, ev("deposit", "p", 0.0, instrument="c1"))
    assert not fired(engine, ev("deposit_declined", "p", 1.0, instrument="c2"))
    assert fired(engine, ev("deposit_declined", "p", 2.0, instrument="c3")) == {
        "velocity-instruments-v1"
    }
    assert "velocity-declined-v1" in fired(engine, ev("deposit_declined", "p", 3.0))
    # declined cool-down of 30 minutes
    assert "velocity-declined-v1" not in fired(engine, ev("deposit_declined", "p", 4.0))


def test_large_deposit_against_90_day_median() -> None:
    engine = RulesEngine.from_yaml()
    assert not fired(engine, ev("deposit", "p", 0.0, amount=100_000))  # not above 1000 EUR
    first = engine.observe(ev("deposit", "q", 1.0, amount=100_001))  # no history: floor
    assert [a.evidence["threshold"] for a in first] == [100_000]
    assert not fired(engine, ev("deposit", "p", 2.0, amount=500_000))  # 5 x median 100000
    whale = RulesEngine.from_yaml()
    for i, amount in enumerate((40_000, 60_000, 50_000)):
        whale.observe(ev("deposit", "w", i * DAY, amount=amount))
    assert not fired(whale, ev("deposit", "w", 3 * DAY, amount=250_000))  # 5 x 50000
    # every deposit joins the history: the median of 40000, 50000, 60000, 250000 is 55000
    alerts = whale.observe(ev("deposit", "w", 4 * DAY, amount=275_001))
    assert [a.evidence["baseline"] for a in alerts] == [55_000]
    # 90 days later the history has gone: the floor applies again
    assert fired(whale, ev("deposit", "w", 95 * DAY, amount=100_001)) == {"deposit-outlier-v1"}


def test_large_stake_is_flagged_low_severity() -> None:
    engine = RulesEngine.from_yaml()
    for i in range(3):
        engine.observe(ev("bet", "p", float(i), amount=10_000))
    assert not engine.observe(ev("bet", "p", 10.0, amount=100_000))
    (alert,) = engine.observe(ev("bet", "p", 11.0, amount=100_001))
    assert (alert.rule_id, alert.severity, alert.reason_code) == (
        "stake-outlier-v1", "low", "LARGE_STAKE"
    )


def test_shared_instrument_and_devices() -> None:
    engine = RulesEngine.from_yaml()
    assert not fired(engine, ev("deposit", "a", 0.0, instrument="card", device="d"))
    alerts = engine.observe(ev("deposit", "b", 1.0, instrument="card", device="d"))
    assert [(a.rule_id, a.evidence["linked_players"]) for a in alerts] == [
        ("link-instrument-v1", ["a"])
    ]
    # device on two other players
    alerts = engine.observe(ev("login", "c", 2.0, device="d"))
    assert [(a.rule_id, a.evidence["linked_players"]) for a in alerts] == [
        ("link-device-v1", ["a", "b"])
    ]


def test_link_to_self_excluded_player_is_block_severity() -> None:
    engine = RulesEngine.from_yaml()
    engine.observe(ev("deposit", "x", 0.0, instrument="card", self_excluded_until=500.0))
    alerts = {a.rule_id: a for a in engine.observe(ev("deposit", "y", 10.0, instrument="card"))}
    assert alerts["link-excluded-instrument-v1"].outcome is Outcome.BLOCK
    assert alerts["link-excluded-instrument-v1"].severity == "high"
    assert "link-instrument-v1" in alerts
    engine.note_self_exclusion("x", None)
    assert "link-excluded-instrument-v1" not in fired(engine, ev("deposit", "z", 20.0,
                                                                   instrument="card"))


def test_late_event_is_clamped_and_state_expires() -> None:
    engine = RulesEngine.from_yaml()
    engine.observe(ev("deposit", "p", 100.0, instrument="i"))
    engine.observe(ev("deposit", "p", 50.0, instrument="j"))  # late: counted at t=100
    assert engine.tracked_players == 1
    assert engine.expire(100.0 + 90 * DAY - 1) == 0  # the 90-day median window still holds it
    assert engine.expire(100.0 + 90 * DAY) == 1
    assert engine.tracked_players == 0


def test_event_older_than_a_sweep_is_clamped_not_refused() -> None:
    engine = RulesEngine.from_yaml()
    engine.observe(ev("bet", "p", 0.0))
    engine.observe(ev("deposit", "p", 1.0))
    engine.expire(40 * DAY)  # the bet window (30 days) empties, the deposit one stays
    assert engine.tracked_players == 1
    assert not engine.observe(ev("deposit", "p", 2.0))  # behind the sweep: counted at 40 days


# ---------- brute-force model of the default async rules (deposit velocity, linked ----------
# ---------- accounts), as reference_impl/rules/default_rules.yaml states them ----------

COOLDOWN = {
    "velocity-deposit-count-v1": 600, "velocity-instruments-v1": DAY,
    "velocity-declined-v1": 1800, "deposit-outlier-v1": 0, "stake-outlier-v1": 0,
    "link-instrument-v1": DAY, "link-device-v1": DAY,
    "link-excluded-instrument-v1": DAY, "link-excluded-device-v1": DAY,
}
CASH = ("deposit", "deposit_declined", "withdrawal")
ANY = ("login", "deposit", "deposit_declined", "withdrawal", "bet")


def within(xs: list[MoneyEvent], t: float, w: float, kinds: tuple[str, ...]) -> list:
    """Events of ``kinds`` in (t - w, t]."""
    return [x for x in xs if x.kind in kinds and t - w < x.ts <= t]


def linked(earlier: list[MoneyEvent], e: MoneyEvent, field: str) -> set[str]:
    """Other players who used e's ``field`` value within 180 days before e."""
    key = getattr(e, field)
    if key is None:
        return set()
    return {x.player_id for x in earlier if getattr(x, field) == key
            and x.player_id != e.player_id and e.ts - 180 * DAY < x.ts}


def brute_alerts(events: list[MoneyEvent], excluded: dict[str, float]) -> list[tuple]:
    out: list[tuple] = []
    last: dict[tuple[str, str], float] = {}
    for i, e in enumerate(events):
        t, p = e.ts, e.player_id
        mine = [x for x in events[: i + 1] if x.player_id == p]
        hits: list[str] = []
        if e.kind == "deposit":
            if len(within(mine, t, 600, ("deposit",))) >= 5:
                hits.append("velocity-deposit-count-v1")
            prior = [x.amount for x in within(mine[:-1], t, 90 * DAY, ("deposit",))]
            if e.amount > max(100_000, 5 * median(prior) if prior else 0):
                hits.append("deposit-outlier-v1")
        if e.kind in CASH:
            keys = {x.instrument for x in within(mine, t, DAY, CASH) if x.instrument is not None}
            if len(keys) >= 3:
                hits.append("velocity-instruments-v1")
            others = linked(events[:i], e, "instrument")
            if others:
                hits.append("link-instrument-v1")
            if any(t < excluded.get(q, t) for q in others):
                hits.append("link-excluded-instrument-v1")
        if e.kind == "deposit_declined" and len(
            within(mine, t, 600, ("deposit_declined",))
        ) >= 3:
            hits.append("velocity-declined-v1")
        if e.kind == "bet":
            prior = [x.amount for x in within(mine[:-1], t, 30 * DAY, ("bet",))]
            if e.amount > max(50_000, 10 * median(prior) if prior else 0):
                hits.append("stake-outlier-v1")
        if e.kind in ANY:
            others = linked(events[:i], e, "device")
            if len(others) >= 2:
                hits.append("link-device-v1")
            if any(t < excluded.get(q, t) for q in others):
                hits.append("link-excluded-device-v1")
        for rule_id in hits:
            prev = last.get((rule_id, p))
            if prev is None or t - prev >= COOLDOWN[rule_id]:
                last[(rule_id, p)] = t
                out.append((i, rule_id, p))
    return out


GAPS = {
    "burst": [0.0, 0.0, 1.0, 1.0, 60.0, 300.0, 599.0, 600.0, 1800.0],
    "long": [0.0, 600.0, 1800.0, DAY - 1, DAY, 30 * DAY, 90 * DAY, 180 * DAY],
}


KINDS = {"burst": ["deposit", "deposit", "deposit_declined"], "long": list(ANY)}
PLAYERS = {"burst": ["p0", "p0", "p1"], "long": ["p0", "p1", "p2"]}


def event_strategy(profile: str) -> st.SearchStrategy[tuple]:
    return st.tuples(
        st.sampled_from(GAPS[profile]),
        st.sampled_from(KINDS[profile]),
        st.sampled_from(PLAYERS[profile]),
        st.sampled_from([100, 10_000, 50_000, 100_000, 100_001, 400_000, 600_000]),
        st.sampled_from([None, "i1", "i2", "i3", "i4"]),
        st.sampled_from([None, "d1", "d2"]),
    )


@settings(max_examples=150, deadline=None)
@given(data=st.data(), profile=st.sampled_from(["burst", "long"]))
def test_default_async_rules_match_brute_force(data: st.DataObject, profile: str) -> None:
    raw = data.draw(st.lists(event_strategy(profile), min_size=8, max_size=40))
    excluded = data.draw(st.dictionaries(
        st.sampled_from(["p0", "p1", "p2"]), st.sampled_from([1800.0, 60 * DAY, 1e12]),
    ))
    engine = RulesEngine.from_yaml()
    for player, until in excluded.items():
        engine.note_self_exclusion(player, until)
    events: list[MoneyEvent] = []
    t = 0.0
    for dt, kind, player, amount, instrument, device in raw:
        t += dt
        events.append(ev(kind, player, t, amount, instrument=instrument, device=device))
    got: list[tuple] = []
    for i, e in enumerate(events):
        alerts: list[Alert] = engine.observe(e)
        got.extend((i, a.rule_id, a.player_id) for a in alerts)
        for a in alerts:
            event(a.rule_id)
    assert sorted(got) == sorted(brute_alerts(events, excluded))


def test_a_win_above_1000_times_its_rounds_stakes_goes_to_review() -> None:
    engine = RulesEngine.from_yaml()
    assert not fired(engine, ev("bet", "w", 0.0, 10, round_id="r1"))
    fired(engine, ev("bet", "w", 1.0, 5, round_id="r1"))  # stakes of the round: 15
    assert "win-multiple-v1" not in fired(engine, ev("win", "w", 2.0, 15_000, round_id="r1"))
    fired(engine, ev("bet", "w", 3.0, 15, round_id="r2"))
    alerts = engine.observe(ev("win", "w", 4.0, 15_001, round_id="r2", transaction_id="w2"))
    alert = next(a for a in alerts if a.rule_id == "win-multiple-v1")
    assert alert.reason_code == "LARGE_WIN_MULTIPLE" and alert.outcome is Outcome.REVIEW
    assert alert.evidence["round_stakes"] == 15 and alert.evidence["win"] == 15_001
    # a win of a round whose bet was rolled back, or never seen, is not compared
    fired(engine, ev("bet", "w", 5.0, 1, round_id="r3"))
    fired(engine, ev("rollback", "w", 6.0, 0, round_id="r3"))
    assert "win-multiple-v1" not in fired(engine, ev("win", "w", 7.0, 10**6, round_id="r3"))
    assert "win-multiple-v1" not in fired(engine, ev("win", "w", 8.0, 10**6, round_id="r9"))


def test_open_rounds_are_bounded_and_expire() -> None:
    from reference_impl.rules.alerts import MAX_OPEN_ROUNDS, ROUND_TTL_S

    engine = RulesEngine.from_yaml()
    for i in range(MAX_OPEN_ROUNDS + 10):
        engine.observe(ev("bet", "b", float(i), 1, round_id=f"r{i}"))
    last = f"r{MAX_OPEN_ROUNDS + 9}"
    assert "win-multiple-v1" not in fired(engine, ev("win", "b", 500.0, 10**6, round_id="r0"))
    assert "win-multiple-v1" in fired(engine, ev("win", "b", 501.0, 10**6, round_id=last))
    engine.expire(1_000.0 + ROUND_TTL_S)  # r1.. left without a win for a day: forgotten
    assert "win-multiple-v1" not in fired(engine, ev("win", "b", 1_001.0 + ROUND_TTL_S, 10**6,
                                                     round_id=f"r{MAX_OPEN_ROUNDS}"))
