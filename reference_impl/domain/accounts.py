"""Ledger accounts: players, house, cash-in, cash-out and jackpot, with sharded hot accounts.

The one owner of account ids: their format ``kind:currency:key`` (:class:`AccountRef`), a
player's id (:func:`player_account`) and the shard a player's postings go to
(:meth:`HotAccounts.house_shard`, :meth:`HotAccounts.jackpot_shard`). The planner, the SQL
adapters and the fast paths take them from here; the plpgsql fast paths
(``storage/schema.py``) build the same strings from the shard numbers passed to them, and the
storage tests prove each fast path writes exactly what the planner plans.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum


class AccountKind(StrEnum):
    """Kinds of ledger accounts. Only player accounts must stay at or above zero."""

    PLAYER = "player"
    HOUSE = "house"
    CASH_IN = "cash_in"
    CASH_OUT = "cash_out"
    JACKPOT = "jackpot"


SYSTEM_KINDS: tuple[AccountKind, ...] = (
    AccountKind.HOUSE, AccountKind.CASH_IN, AccountKind.CASH_OUT, AccountKind.JACKPOT,
)
CASH_KINDS: frozenset[AccountKind] = frozenset({AccountKind.CASH_IN, AccountKind.CASH_OUT})


@dataclass(frozen=True)
class AccountRef:
    """A parsed account id ``kind:currency:key`` (key = player id or shard number)."""

    kind: AccountKind
    currency: str
    key: str

    @property
    def id(self) -> str:
        """The account id as stored in the journal."""
        return f"{self.kind.value}:{self.currency}:{self.key}"

    @classmethod
    def parse(cls, account_id: str) -> AccountRef:
        """Parse ``kind:currency:key``; raise ValueError when malformed."""
        kind, currency, key = account_id.split(":", 2)
        return cls(AccountKind(kind), currency, key)


def is_player_account(account_id: str) -> bool:
    """True for a player's wallet account."""
    return account_id.startswith(f"{AccountKind.PLAYER.value}:")


def player_account(player_id: str, currency: str) -> str:
    """Account id of a player's wallet."""
    return f"player:{currency}:{player_id}"


@dataclass(frozen=True)
class HotAccounts:
    """How the hot system accounts are laid out: one row, or N sub-accounts summed on read.

    A player's postings always hit the same shard (a stable hash of the player id), so the
    per-player order of house postings is deterministic.
    """

    house_shards: int = 1
    jackpot_shards: int = 1

    def __post_init__(self) -> None:
        if self.house_shards < 1 or self.jackpot_shards < 1:
            raise ValueError("shard counts must be >= 1")

    def house_shard(self, player_id: str) -> int:
        """Number of the house sub-account a player's bets and wins post to."""
        return _shard(player_id, self.house_shards)

    def jackpot_shard(self, player_id: str) -> int:
        """Number of the jackpot sub-account a player's contributions post to."""
        return _shard(player_id, self.jackpot_shards)

    def house(self, currency: str, player_id: str) -> str:
        """House sub-account a player's bets and wins post to."""
        return AccountRef(AccountKind.HOUSE, currency, str(self.house_shard(player_id))).id

    def jackpot(self, currency: str, player_id: str) -> str:
        """Jackpot sub-account a player's contributions post to."""
        return AccountRef(AccountKind.JACKPOT, currency, str(self.jackpot_shard(player_id))).id

    @staticmethod
    def cash_in(currency: str) -> str:
        """Account deposits come from (its balance goes negative as money enters)."""
        return f"cash_in:{currency}:0"

    @staticmethod
    def cash_out(currency: str) -> str:
        """Account withdrawals go to."""
        return f"cash_out:{currency}:0"

    def system_accounts(self, currency: str) -> list[str]:
        """Every system account of ``currency`` (created with the schema)."""
        ids = [f"house:{currency}:{i}" for i in range(self.house_shards)]
        ids += [f"jackpot:{currency}:{i}" for i in range(self.jackpot_shards)]
        return [*ids, self.cash_in(currency), self.cash_out(currency)]


def _shard(player_id: str, shards: int) -> int:
    return 0 if shards == 1 else zlib.crc32(player_id.encode()) % shards
