"""Request bodies of the public API (pydantic, strict), also the source of the OpenAPI doc."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from reference_impl.domain.money import CURRENCIES, ID_PATTERN, MAX_AMOUNT

Id = Annotated[str, Field(pattern=ID_PATTERN.pattern, min_length=1, max_length=64)]
Amount = Annotated[int, Field(ge=1, le=MAX_AMOUNT)]
WinAmount = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
Currency = Literal[tuple(sorted(CURRENCIES))]  # type: ignore[valid-type]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreatePlayerBody(_Body):
    """``POST /players``."""

    player_id: Id
    currency: Currency


class CashBody(_Body):
    """``POST /players/{id}/deposits`` and ``/withdrawals``."""

    transaction_id: Id
    amount: Amount
    currency: Currency | None = None
    instrument: Id | None = None
    device: Id | None = None


class BetBody(_Body):
    """``POST /wallet/bet``."""

    transaction_id: Id
    player_id: Id
    round_id: Id
    game_id: Id
    amount: Amount
    currency: Currency | None = None
    device: Id | None = None
    jackpot_bp: Annotated[int, Field(ge=0, le=10_000)] = Field(
        default=0,
        description="share of the stake paid into the progressive jackpot pool, in basis "
                    "points (100 = 1%), rounded down to a minor unit",
    )


class WinBody(_Body):
    """``POST /wallet/win`` (amount 0 settles a lost round)."""

    transaction_id: Id
    player_id: Id
    round_id: Id
    amount: WinAmount
    currency: Currency | None = None


class RollbackBody(_Body):
    """``POST /wallet/rollback``."""

    transaction_id: Id
    player_id: Id
    round_id: Id
    rolled_back_transaction_id: Id


class IdentityBody(_Body):
    """``PUT /players/{id}/identity``: outcome of a KYC check."""

    verified: bool
