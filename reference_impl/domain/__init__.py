"""Pure domain of the reference back office: money, accounts, journal, wallet rules, audit.

No I/O, no clock reads (time is a parameter in microseconds), no asyncio.
"""

from reference_impl.domain.accounts import AccountKind, AccountRef, HotAccounts
from reference_impl.domain.audit import AuditReport, verify_ledger
from reference_impl.domain.commands import Bet, Command, Deposit, Rollback, Win, Withdrawal
from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.domain.journal import GENESIS_HASH, JournalEntry, chain_hash
from reference_impl.domain.ledger import MemoryLedger
from reference_impl.domain.planning import (
    BetState,
    OpResult,
    Plan,
    PlayerState,
    Snapshot,
    TxRecord,
    plan_operation,
    preflight,
)

__all__ = [
    "GENESIS_HASH",
    "AccountKind",
    "AccountRef",
    "AuditReport",
    "Bet",
    "BetState",
    "Command",
    "Deposit",
    "ErrorCode",
    "HotAccounts",
    "JournalEntry",
    "MemoryLedger",
    "OpResult",
    "Plan",
    "PlayerState",
    "Rollback",
    "Snapshot",
    "TxRecord",
    "WalletError",
    "Win",
    "Withdrawal",
    "chain_hash",
    "plan_operation",
    "preflight",
    "verify_ledger",
]
