"""What a scenario's players do, as HTTP requests to the reference back office.

One definition shared by the locust users (closed loop) and the open-loop generator: a
:class:`Players` holds a pool of players (created and funded up front by
:meth:`Players.setup_requests`) and draws each next action from the scenario:

* the operation, from the scenario's operation mix (``operations.*.weight``);
* the player, weighted by activity (the ``population.whales.share`` of the pool acts
  ``activity_multiplier`` times as often);
* the stake, from ``population.bet_size`` (log-normal, clipped, minor units).

Operations become requests as follows (the back office has no login endpoint):

=========== ===========================================================================
login       ``POST /players`` of a new player (the player component's write a session
            start costs); the new player does not join the pool
balance     ``GET /players/{id}/balance``
bet         ``POST /wallet/bet`` opening a new round (fresh round id)
win         ``POST /wallet/win`` settling the oldest open round (0 to 2x the stake)
rollback    ``POST /wallet/rollback`` of the oldest open round's bet
deposit     ``POST /players/{id}/deposits`` (:data:`DEPOSIT_STAKES` stakes)
withdrawal  ``POST /players/{id}/withdrawals`` (one stake)
=========== ===========================================================================

A round opens only once its bet is answered 200 (:meth:`Players.answered`), so a win never
overtakes its bet. With no open round, a win or rollback is sent as a bet instead. At most
:data:`MAX_OPEN_ROUNDS` rounds wait for settlement; beyond that the oldest is abandoned
(counted: a round the provider never settles, as when a player walks away).

Every money request carries a fresh transaction id; a retry resends the same
:class:`Request` (same body, so same id; signed again by the client).
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass

import numpy as np
import orjson

from sim.model.scenario import Scenario

SUPPORTED = ("login", "balance", "bet", "win", "rollback", "deposit", "withdrawal")
"""Scenario operations the reference back office has an endpoint for."""
MAX_OPEN_ROUNDS = 10_000
DEPOSIT_STAKES = 10
FUNDING = 1_000_000_000
"""Minor units each pool player is funded with up front (bets never run dry)."""
CURRENCY = "EUR"
STAKE_BLOCK = 4096
"""Stakes are drawn from the scenario's distribution in numpy blocks of this size."""
RETRY_STATUSES = frozenset({503})
"""Answers that mean "not done, safe to retry with the same transaction id"."""
MAX_ATTEMPTS = 3
"""First try plus two retries; then the request is reported with its last error."""


@dataclass(frozen=True, slots=True)
class Round:
    player: str
    round_id: str
    bet_tx: str
    stake: int


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request of the behaviour. ``opens`` is the round a successful bet opens."""

    operation: str
    method: str
    path: str
    body: bytes = b""
    opens: Round | None = None


class BehaviourError(ValueError):
    """The scenario asks for something the back office cannot be driven to do."""


def operation_mix(scenario: Scenario) -> tuple[list[str], list[float]]:
    """Operations with a positive weight and their cumulative weights."""
    ops = [(n, o.weight) for n, o in scenario.operations.items() if o.weight > 0]
    bad = [n for n, _ in ops if n not in SUPPORTED]
    if bad:
        raise BehaviourError(
            f"{scenario.name}: operations {', '.join(bad)}: the reference back office has no "
            f"endpoint for them (supported: {', '.join(SUPPORTED)}); set their weight to 0 "
            "with --set operations.NAME.weight=0")
    names = [n for n, _ in ops]
    return names, list(itertools.accumulate(w for _, w in ops))


class Players:
    """A pool of ``size`` players acting as the scenario says; ``prefix`` makes every id of
    this pool unique (run and process), so runs never collide on the same database."""

    def __init__(self, scenario: Scenario, size: int, prefix: str, seed: int) -> None:
        if size < 1:
            raise BehaviourError("players: need at least one player")
        self.scenario = scenario
        self.prefix = prefix
        self.rng = random.Random(seed)
        self._np_rng = np.random.default_rng(seed)
        self.ops, self._op_cum = operation_mix(scenario)
        self.players = [f"{prefix}p{i}" for i in range(size)]
        whales = scenario.population.whales
        n_whales = round(whales.share * size)
        weights = [whales.activity_multiplier if i < n_whales else 1.0 for i in range(size)]
        self._player_cum = list(itertools.accumulate(weights))
        self._ids = itertools.count()
        self._stakes: list[int] = []
        self.open_rounds: deque[Round] = deque()
        self.abandoned_rounds = 0

    # ----------------------------------------------------------------- drawing

    def _id(self, kind: str) -> str:
        return f"{self.prefix}{kind}{next(self._ids)}"

    def stake(self) -> int:
        if not self._stakes:
            block = self.scenario.population.bet_size.sample(self._np_rng, STAKE_BLOCK)
            self._stakes = block.tolist()
        return self._stakes.pop()

    def player(self) -> str:
        return self.rng.choices(self.players, cum_weights=self._player_cum)[0]

    def operation(self) -> str:
        return self.rng.choices(self.ops, cum_weights=self._op_cum)[0]

    # ----------------------------------------------------------------- requests

    def setup_requests(self) -> list[list[Request]]:
        """Per player, in order: create it, then fund it (run before measuring)."""
        out = []
        for p in self.players:
            out.append([
                Request("setup", "POST", "/players",
                        orjson.dumps({"player_id": p, "currency": CURRENCY})),
                Request("setup", "POST", f"/players/{p}/deposits",
                        orjson.dumps({"transaction_id": self._id("f"), "amount": FUNDING})),
            ])
        return out

    def next(self) -> Request:
        """The next action of the pool, in the scenario's mix."""
        return self.request(self.operation())

    def request(self, op: str) -> Request:
        """A request for operation ``op``."""
        if op in ("win", "rollback"):
            if not self.open_rounds:
                return self.request("bet")
            r = self.open_rounds.popleft()
            if op == "win":
                amount = int(r.stake * 2 * self.rng.random())
                body = {"transaction_id": self._id("w"), "player_id": r.player,
                        "round_id": r.round_id, "amount": amount}
            else:
                body = {"transaction_id": self._id("rb"), "player_id": r.player,
                        "round_id": r.round_id, "rolled_back_transaction_id": r.bet_tx}
            return Request(op, "POST", f"/wallet/{op}", orjson.dumps(body))
        if op == "bet":
            p, tx, stake = self.player(), self._id("b"), self.stake()
            rnd = Round(p, self._id("r"), tx, stake)
            body = {"transaction_id": tx, "player_id": p, "round_id": rnd.round_id,
                    "game_id": "loadgen", "amount": stake}
            return Request("bet", "POST", "/wallet/bet", orjson.dumps(body), opens=rnd)
        if op == "balance":
            return Request("balance", "GET", f"/players/{self.player()}/balance")
        if op == "login":
            body = {"player_id": self._id("new"), "currency": CURRENCY}
            return Request("login", "POST", "/players", orjson.dumps(body))
        if op in ("deposit", "withdrawal"):
            amount = self.stake() * (DEPOSIT_STAKES if op == "deposit" else 1)
            path = f"/players/{self.player()}/{op}s"
            return Request(op, "POST", path,
                           orjson.dumps({"transaction_id": self._id(op[0]), "amount": amount}))
        raise BehaviourError(f"operation {op!r} is not supported ({', '.join(SUPPORTED)})")

    def answered(self, req: Request, status: int) -> None:
        """Feedback: a bet answered 200 opens its round for a later win or rollback."""
        if req.opens is not None and 200 <= status < 300:
            if len(self.open_rounds) >= MAX_OPEN_ROUNDS:
                self.open_rounds.popleft()
                self.abandoned_rounds += 1
            self.open_rounds.append(req.opens)


class HealthChecks:
    """A request source of ``GET /health`` only: measures the load generator and the HTTP
    stack, not the back office's work (``benchmarks/bench_loadgen.py``)."""

    abandoned_rounds = 0
    _REQUEST = Request("health", "GET", "/health")

    def setup_requests(self) -> list[list[Request]]:
        return []

    def next(self) -> Request:
        return self._REQUEST

    def answered(self, req: Request, status: int) -> None:
        return None


def error_code(status: int, body: bytes) -> str | None:
    """None for a 2xx answer; else the API's ``error.code`` or ``HTTP_<status>``."""
    if 200 <= status < 300:
        return None
    try:
        doc = orjson.loads(body)
        code = doc["error"]["code"]
        if isinstance(code, str) and code:
            return code
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return f"HTTP_{status}"
