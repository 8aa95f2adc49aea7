"""Property test: random operation sequences against a brute-force model of the wallet."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from reference_impl.domain import (
    Bet,
    Deposit,
    HotAccounts,
    MemoryLedger,
    Rollback,
    WalletError,
    Win,
    Withdrawal,
    verify_ledger,
)
from reference_impl.domain.audit import AuditCheckpoint, verify_increment

PLAYERS = ("p0", "p1")
IDS = tuple(f"t{i}" for i in range(8))
ROUNDS = ("r0", "r1", "r2")


@dataclass
class Model:
    """Brute force: balances, first answers by id, bet states; nothing clever."""

    balance: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PLAYERS, 0))
    seen: dict[str, tuple[tuple[object, ...], tuple[str, int] | None]] = field(
        default_factory=dict
    )
    bets: dict[str, list[object]] = field(default_factory=dict)  # id -> [player, round, amt, st]
    jackpot: int = 0  # the pool: stakes' jackpot shares, minus those of rolled-back bets
    shares: dict[str, int] = field(default_factory=dict)  # bet id -> its jackpot share

    def run(self, op: tuple[object, ...]) -> tuple[str, int] | str:
        kind, tid, pid, rnd, amount, ref, bp = op
        relevant = {"deposit": (0, 1, 2, 4), "withdrawal": (0, 1, 2, 4), "bet": (0, 1, 2, 3, 4, 6),
                    "win": (0, 1, 2, 3, 4), "rollback": (0, 1, 2, 3, 5)}[kind]  # type: ignore
        body = tuple(op[i] for i in relevant)
        if tid in self.seen:
            first_body, answer = self.seen[tid]
            if first_body == body and answer is not None:
                return answer
            bet = self.bets.get(tid)  # type: ignore[arg-type]
            if kind == "bet" and bet is not None and bet[3] == "tomb" and bet[0] == pid:
                return "TRANSACTION_ROLLED_BACK"
            return "TRANSACTION_CONFLICT"
        bal = self.balance[pid]  # type: ignore[index]
        result: str | int
        if kind == "deposit":
            result = bal + amount  # type: ignore[operator]
        elif kind in ("withdrawal", "bet"):
            result = "INSUFFICIENT_FUNDS" if bal < amount else bal - amount  # type: ignore
        elif kind == "win":
            mine = [b for b in self.bets.values() if b[0] == pid and b[1] == rnd]
            states = {b[3] for b in mine}
            if "open" in states:
                for b in mine:
                    if b[3] == "open":
                        b[3] = "settled"
                result = bal + amount  # type: ignore[operator]
            elif not mine:
                result = "BET_NOT_FOUND"
            elif "settled" in states:
                result = "BET_ALREADY_SETTLED"
            else:
                result = "TRANSACTION_ROLLED_BACK"
        else:
            target = self.bets.get(ref)  # type: ignore[arg-type]
            if target is None and ref in self.seen:
                result = "BET_NOT_FOUND"
            elif target is None:
                self.bets[ref] = [pid, rnd, 0, "tomb"]  # type: ignore[index]
                self.seen[ref] = (("tomb",), None)  # type: ignore[index]
                result = bal
            elif target[0] != pid or target[1] != rnd:  # not this player's bet of this round
                result = "BET_NOT_FOUND"
            elif target[3] == "settled":
                result = "BET_ALREADY_SETTLED"
            elif target[3] == "open":
                target[3] = "rolled_back"
                self.jackpot -= self.shares[ref]  # type: ignore[index]
                result = bal + target[2]  # type: ignore[operator]
            else:
                result = bal
        if isinstance(result, str):
            return result
        self.balance[pid] = result  # type: ignore[index]
        self.seen[tid] = (body, ("ok", result))  # type: ignore[index]
        if kind == "bet":
            self.bets[tid] = [pid, rnd, amount, "open"]  # type: ignore[index]
            self.shares[tid] = amount * bp // 10_000  # type: ignore[index,operator]
            self.jackpot += self.shares[tid]  # type: ignore[index]
        return ("ok", result)


def _command(op: tuple[object, ...]) -> object:
    kind, tid, pid, rnd, amount, ref, bp = op
    if kind == "deposit":
        return Deposit(tid, pid, amount)  # type: ignore[arg-type]
    if kind == "withdrawal":
        return Withdrawal(tid, pid, amount)  # type: ignore[arg-type]
    if kind == "bet":
        return Bet(tid, pid, rnd, "g", amount, jackpot_bp=bp)  # type: ignore[arg-type]
    if kind == "win":
        return Win(tid, pid, rnd, amount)  # type: ignore[arg-type]
    return Rollback(tid, pid, rnd, ref)  # type: ignore[arg-type]


def _op(draw: st.DrawFn) -> tuple[object, ...]:
    kind = draw(st.sampled_from(("deposit", "withdrawal", "bet", "bet", "win", "rollback")))
    tid = draw(st.sampled_from(IDS))
    ref = draw(st.sampled_from([i for i in IDS if i != tid]))
    return (kind, tid, draw(st.sampled_from(PLAYERS)), draw(st.sampled_from(ROUNDS)),
            draw(st.integers(1 if kind != "win" else 0, 60)), ref,
            draw(st.sampled_from((0, 0, 1, 150, 5_000, 10_000))))


operations = st.lists(st.composite(_op)(), max_size=40)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_ledger_matches_brute_force_model(ops: list[tuple[object, ...]]) -> None:
    ledger = MemoryLedger(HotAccounts(house_shards=3))
    for pid in PLAYERS:
        ledger.create_player(pid, "EUR")
    model = Model()
    for now, op in enumerate(ops, start=1):
        expected = model.run(op)
        try:
            result = ledger.apply(_command(op), now)  # type: ignore[arg-type]
            got: tuple[str, int] | str = (result.status, result.balance)
        except WalletError as err:
            got = err.code.value
        assert got == expected, op
    for pid in PLAYERS:
        assert ledger.players[pid].balance == model.balance[pid]
    pool = sum(v for k, v in ledger.balances().items() if k.startswith("jackpot:"))
    assert pool == model.jackpot
    heads = {p.player_id: (p.seq, p.last_hash) for p in ledger.players.values()}
    report = verify_ledger(ledger.journal, ledger.balances(), heads)
    assert report.ok, report.first_violation


@settings(max_examples=150, deadline=None)
@given(operations, operations, st.integers(min_value=0, max_value=5))
def test_incremental_audit_equals_the_full_audit(
    first: list[tuple[object, ...]], second: list[tuple[object, ...]], tamper: int,
) -> None:
    """An audit from the checkpoint of an earlier clean audit reaches the same verdict, counts
    and checkpoint as a full audit of the whole journal; damage to a new entry is found."""
    ledger = MemoryLedger(HotAccounts(house_shards=3))
    for pid in PLAYERS:
        ledger.create_player(pid, "EUR")

    def play(ops: list[tuple[object, ...]], start: int) -> None:
        for now, op in enumerate(ops, start=start):
            with contextlib.suppress(WalletError):
                ledger.apply(_command(op), now)  # type: ignore[arg-type]

    def heads() -> dict[str, tuple[int, str]]:
        return {p.player_id: (p.seq, p.last_hash) for p in ledger.players.values()}

    play(first, 1)
    earlier = verify_increment(AuditCheckpoint(), ledger.journal, ledger.balances(), heads())
    assert earlier.report.ok, earlier.report.first_violation
    done = len(ledger.journal)
    play(second, len(first) + 1)
    new = ledger.journal[done:]
    step = verify_increment(earlier.checkpoint, new, ledger.balances(), heads())
    full = verify_increment(AuditCheckpoint(), ledger.journal, ledger.balances(), heads())
    assert step.report.ok and full.report.ok
    assert step.report.counts == {**full.report.counts, "checked": len(new)}
    assert step.checkpoint == full.checkpoint
    assert step.report.totals == full.report.totals
    if new:
        bad = list(new)
        i = tamper % len(bad)
        bad[i] = replace(bad[i], amount=bad[i].amount + 1)
        damaged = verify_increment(earlier.checkpoint, bad, ledger.balances(), heads())
        assert not damaged.report.ok
