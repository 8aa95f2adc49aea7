"""The drill's traffic: the scenario's players, plus (``--staff-share``) back-office staff
reading fraud alerts, the one public route that calls the fraud service synchronously in
microservices and hybrid; and the money operations the generator saw acknowledged: the
transaction id of every money request answered 2xx, with the time of the answer, so the
drill can look each one up in the ledger afterwards."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadgen.behaviour import Players, Request
from loadgen.openloop import OpenLoopConfig, scenario_players
from sim.model.scenario import Scenario

MONEY_OPERATIONS = frozenset({"bet", "win", "rollback", "deposit", "withdrawal"})
STAFF_OPERATION = "fraud_alerts"
STAFF_REQUEST = Request(STAFF_OPERATION, "GET", "/fraud/alerts?limit=20")


@dataclass
class Acks:
    """Acknowledged money operations: transaction id -> (operation, perf_counter time)."""

    seen: dict[str, tuple[str, float]] = field(default_factory=dict)

    def note(self, op: str, tx: str) -> None:
        self.seen[tx] = (op, time.perf_counter())


class AckingPlayers:
    """The scenario's players (:class:`loadgen.behaviour.Players`), a ``staff_share`` of
    the arrivals turned into staff reads of fraud alerts, and the acks."""

    def __init__(self, inner: Players, acks: Acks, staff_share: float = 0.0,
                 seed: int = 0) -> None:
        if not 0 <= staff_share < 1:
            raise ValueError("staff_share: must be in [0, 1)")
        self.inner, self.acks, self.staff_share = inner, acks, staff_share
        self._rng = random.Random(seed)

    @property
    def abandoned_rounds(self) -> int:
        return self.inner.abandoned_rounds

    def setup_requests(self) -> Any:
        return self.inner.setup_requests()

    def next(self) -> Any:
        if self.staff_share and self._rng.random() < self.staff_share:
            return STAFF_REQUEST
        return self.inner.next()

    def answered(self, req: Any, status: int) -> None:
        self.inner.answered(req, status)
        if 200 <= status < 300 and req.operation in MONEY_OPERATIONS:
            self.acks.note(req.operation, orjson.loads(req.body)["transaction_id"])


def acking_source(acks: Acks, staff_share: float = 0.0) -> Any:
    """A ``source`` for :func:`loadgen.openloop.run_open_loop` (one generator process)."""

    def make(scenario: Scenario, cfg: OpenLoopConfig, index: int) -> AckingPlayers:
        return AckingPlayers(scenario_players(scenario, cfg, index), acks, staff_share,
                             cfg.seed + index)

    return make
