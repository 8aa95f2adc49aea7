"""The storage interface every adapter implements, its settings and the rules hook."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from reference_impl.domain import AuditReport, HotAccounts, JournalEntry, OpResult
from reference_impl.domain.commands import Command
from reference_impl.domain.rebuild import RebuildPlan
from reference_impl.metrics import Registry
from reference_impl.rules import Usage
from reference_impl.rules.decision import Decision

Concurrency = Literal["pessimistic", "optimistic"]


@dataclass(frozen=True)
class StorageSettings:
    """How the adapter controls concurrency and lays out hot accounts."""

    concurrency: Concurrency = "pessimistic"
    hot: HotAccounts = field(default_factory=HotAccounts)
    pool_size: int = 16
    max_retries: int = 50


class Gate(Protocol):
    """The rules as the storage sees them, called inside the money transaction."""

    def skip(self, kind: str, limits_json: str | None) -> bool:
        """True when no rule can refuse or hold this operation (the fast path)."""
        ...

    def needs_usage(self, kind: str, limits_json: str | None) -> bool:
        """True when the verdict reads usage aggregates (SUM queries)."""
        ...

    def verdict(
        self, kind: str, limits_json: str | None, usage: Usage | None, amount: int,
        now_us: int,
    ) -> Decision:
        """The rules' answer for a bet, deposit or withdrawal."""
        ...


@dataclass(frozen=True)
class PlayerInfo:
    """A player as the API shows it."""

    player_id: str
    currency: str
    balance: int
    limits_json: str | None
    identity_verified: bool = False

    def to_public(self) -> dict[str, Any]:
        """JSON of ``POST /players``."""
        return {"player_id": self.player_id, "currency": self.currency, "balance": self.balance}


@dataclass(frozen=True)
class CommittedTx:
    """A committed money operation as its event needs it (see services.event_recovery)."""

    transaction_id: str
    kind: str
    player_id: str
    amount: int
    ts_us: int
    instrument: str | None = None
    device: str | None = None
    round_id: str = ""  # of a bet, win or rollback ("" otherwise)


LimitsUpdate = Callable[[str | None], str | None]
"""Pure function from the stored limits JSON to the new one (None = no limits)."""


class Storage(abc.ABC):
    """Async storage of the wallet: every money effect atomic and idempotent by id."""

    name: str = "storage"

    def __init__(self, settings: StorageSettings, metrics: Registry | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Registry()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create the schema when missing."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def create_player(self, player_id: str, currency: str, now_us: int) -> PlayerInfo:
        """Open a wallet with balance 0; a retry (same id and currency) gets the first
        answer, another currency PLAYER_EXISTS."""

    @abc.abstractmethod
    async def get_player(self, player_id: str) -> PlayerInfo:
        """The player (UNKNOWN_PLAYER when missing)."""

    @abc.abstractmethod
    async def execute(self, cmd: Command, now_us: int, gate: Gate | None = None) -> OpResult:
        """Apply a money command exactly once; raise WalletError with nothing changed."""

    @abc.abstractmethod
    async def update_limits(self, player_id: str, update: LimitsUpdate) -> str | None:
        """Atomically replace the player's limits JSON by ``update(old)``; return the new."""

    @abc.abstractmethod
    async def set_identity_verified(self, player_id: str, verified: bool) -> None:
        """Record the outcome of an identity check (KYC)."""

    @abc.abstractmethod
    async def transactions(
        self, player_id: str, limit: int, before_seq: int | None = None
    ) -> list[JournalEntry]:
        """The player's journal entries, newest first."""

    @abc.abstractmethod
    async def audit(self, *, full: bool = False) -> AuditReport:
        """Verify every invariant of the ledger: the entries since the last clean audit's
        checkpoint and the stored state against it, or (``full``) the whole journal."""

    @abc.abstractmethod
    async def rebuild_balances(self, *, apply: bool) -> RebuildPlan:
        """Recompute balances and chain heads from the journal; write them when ``apply``.

        Runs in one write transaction that keeps other writers out; refuses (``ok`` False,
        nothing written) when the journal itself is damaged.
        """

    @abc.abstractmethod
    async def save_relay_mark(self, publisher: str, ts_us: int) -> None:
        """Record that ``publisher`` handed every event of operations before ``ts_us`` over."""

    @abc.abstractmethod
    async def relay_marks(self) -> dict[str, int]:
        """Every publisher's mark."""

    @abc.abstractmethod
    async def delete_relay_marks(self, publishers: list[str]) -> None:
        """Forget the marks of ``publishers``."""

    @abc.abstractmethod
    async def committed_since(
        self, ts_us: int, after: tuple[int, str] | None = None, limit: int = 1000,
    ) -> list[CommittedTx]:
        """Money operations (not tombstones) and refused deposits stamped at or after
        ``ts_us``, in (ts, id) order, starting after the ``(ts_us, transaction_id)`` cursor
        ``after``."""

    @abc.abstractmethod
    async def record_declined(self, tx: CommittedTx) -> None:
        """Keep a refused deposit (kind ``deposit_declined``) for recovery and replay."""

    @abc.abstractmethod
    async def add_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Store fraud alerts (JSON-able dicts of rules.Alert)."""

    @abc.abstractmethod
    async def list_alerts(
        self, player_id: str | None, limit: int, after_id: int = 0
    ) -> list[dict[str, Any]]:
        """Stored alerts, oldest first, with their ``id``."""
