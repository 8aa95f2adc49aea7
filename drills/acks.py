"""The money operations the generator saw acknowledged: a request source that wraps the
scenario's players and notes the transaction id of every money request answered 2xx, with
the time of the answer, so the drill can look each one up in the ledger afterwards."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadgen.behaviour import Players
from loadgen.openloop import OpenLoopConfig, scenario_players
from sim.model.scenario import Scenario

MONEY_OPERATIONS = frozenset({"bet", "win", "rollback", "deposit", "withdrawal"})


@dataclass
class Acks:
    """Acknowledged money operations: transaction id -> (operation, perf_counter time)."""

    seen: dict[str, tuple[str, float]] = field(default_factory=dict)

    def note(self, op: str, tx: str) -> None:
        self.seen[tx] = (op, time.perf_counter())


class AckingPlayers:
    """The scenario's players (:class:`loadgen.behaviour.Players`), plus the acks."""

    def __init__(self, inner: Players, acks: Acks) -> None:
        self.inner, self.acks = inner, acks

    @property
    def abandoned_rounds(self) -> int:
        return self.inner.abandoned_rounds

    def setup_requests(self) -> Any:
        return self.inner.setup_requests()

    def next(self) -> Any:
        return self.inner.next()

    def answered(self, req: Any, status: int) -> None:
        self.inner.answered(req, status)
        if 200 <= status < 300 and req.operation in MONEY_OPERATIONS:
            self.acks.note(req.operation, orjson.loads(req.body)["transaction_id"])


def acking_source(acks: Acks) -> Any:
    """A ``source`` for :func:`loadgen.openloop.run_open_loop` (one generator process)."""

    def make(scenario: Scenario, cfg: OpenLoopConfig, index: int) -> AckingPlayers:
        return AckingPlayers(scenario_players(scenario, cfg, index), acks)

    return make
