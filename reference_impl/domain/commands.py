"""Wallet commands (the bodies of the money endpoints) and their idempotency fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import ClassVar

from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.domain.money import (
    validate_amount,
    validate_currency,
    validate_id,
    validate_scoped_id,
)

BASIS_POINTS = 10_000
"""A share of 100% in basis points."""


@dataclass(frozen=True)
class _Base:
    transaction_id: str
    player_id: str

    kind = ""
    _omitted_when_zero: ClassVar[tuple[str, ...]] = ()
    """Fields added after release: left out of the fingerprint at their zero default, so
    bodies without them keep the fingerprint they always had."""

    def fingerprint(self) -> str:
        """sha256 of the canonical body: equal bodies give equal fingerprints."""
        parts = [self.kind] + [
            f"{f.name}={'' if getattr(self, f.name) is None else getattr(self, f.name)}"
            for f in fields(self)
            if not (f.name in self._omitted_when_zero and getattr(self, f.name) == 0)
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def _check_common(self) -> None:
        validate_scoped_id(self.transaction_id, "transaction_id")
        validate_id(self.player_id, "player_id")
        currency = getattr(self, "currency", None)
        if currency is not None:
            validate_currency(currency)


@dataclass(frozen=True)
class Deposit(_Base):
    """Money entering a player's wallet from a payment instrument."""

    amount: int
    currency: str | None = None
    instrument: str | None = None
    device: str | None = None
    kind = "deposit"

    def __post_init__(self) -> None:
        self._check_common()
        validate_amount(self.amount)
        for name in ("instrument", "device"):
            if getattr(self, name) is not None:
                validate_id(getattr(self, name), name)


@dataclass(frozen=True)
class Withdrawal(_Base):
    """Money leaving a player's wallet to a payment instrument."""

    amount: int
    currency: str | None = None
    instrument: str | None = None
    device: str | None = None
    kind = "withdrawal"

    def __post_init__(self) -> None:
        self._check_common()
        validate_amount(self.amount)
        for name in ("instrument", "device"):
            if getattr(self, name) is not None:
                validate_id(getattr(self, name), name)


@dataclass(frozen=True)
class Bet(_Base):
    """A stake debited from the player for a game round.

    The house is credited, except ``jackpot_bp`` basis points of the stake (rounded down to
    a minor unit), which go to the progressive jackpot pool: the shared hot account every
    spin of a jackpot night writes.
    """

    round_id: str
    game_id: str
    amount: int
    currency: str | None = None
    device: str | None = None
    jackpot_bp: int = 0
    kind = "bet"
    _omitted_when_zero = ("jackpot_bp",)

    def __post_init__(self) -> None:
        self._check_common()
        validate_scoped_id(self.round_id, "round_id")
        validate_id(self.game_id, "game_id")
        validate_amount(self.amount)
        if (
            isinstance(self.jackpot_bp, bool) or not isinstance(self.jackpot_bp, int)
            or not 0 <= self.jackpot_bp <= BASIS_POINTS
        ):
            raise WalletError(
                ErrorCode.VALIDATION_ERROR,
                f"jackpot_bp must be an integer between 0 and {BASIS_POINTS}",
            )
        if self.device is not None:
            validate_id(self.device, "device")

    @property
    def jackpot_contribution(self) -> int:
        """Minor units of the stake paid into the jackpot pool."""
        return self.amount * self.jackpot_bp // BASIS_POINTS


@dataclass(frozen=True)
class Win(_Base):
    """A payout credited to the player, settling the open bets of the round (may be 0)."""

    round_id: str
    amount: int
    currency: str | None = None
    kind = "win"

    def __post_init__(self) -> None:
        self._check_common()
        validate_scoped_id(self.round_id, "round_id")
        validate_amount(self.amount, allow_zero=True)


@dataclass(frozen=True)
class Rollback(_Base):
    """Refund of one bet (at most once); of an unknown bet, a tombstone."""

    round_id: str
    rolled_back_transaction_id: str
    kind = "rollback"

    def __post_init__(self) -> None:
        self._check_common()
        validate_scoped_id(self.round_id, "round_id")
        validate_scoped_id(self.rolled_back_transaction_id, "rolled_back_transaction_id")
        if self.rolled_back_transaction_id == self.transaction_id:
            raise WalletError(
                ErrorCode.TRANSACTION_CONFLICT, "a rollback cannot roll back its own id"
            )


Command = Deposit | Withdrawal | Bet | Win | Rollback
