"""Journal entries (append-only transfers) and the per-player hash chain."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

GENESIS_HASH = "0" * 64
"""Hash before the first entry of every stream."""


def chain_hash(
    prev_hash: str, stream: str, seq: int, transaction_id: str, kind: str,
    debit_account: str, credit_account: str, amount: int, currency: str, round_id: str,
    ts_us: int,
) -> str:
    """sha256 hex of the previous hash and the canonical entry fields joined by ``|``.

    PostgreSQL computes the same value with
    ``encode(sha256(convert_to(concat_ws('|', ...), 'UTF8')), 'hex')``; identifiers never
    contain ``|`` (see :data:`reference_impl.domain.money.ID_PATTERN`).
    """
    text = "|".join((
        prev_hash, stream, str(seq), transaction_id, kind, debit_account, credit_account,
        str(amount), currency, round_id, str(ts_us),
    ))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class JournalEntry:
    """One transfer: ``amount`` leaves ``debit_account`` and arrives in ``credit_account``.

    ``stream`` is the player whose hash chain the entry extends; ``seq`` its position (1..n).
    """

    stream: str
    seq: int
    transaction_id: str
    kind: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    round_id: str
    ts_us: int
    hash: str

    def expected_hash(self, prev_hash: str) -> str:
        """The hash this entry must carry if ``prev_hash`` precedes it."""
        return chain_hash(
            prev_hash, self.stream, self.seq, self.transaction_id, self.kind,
            self.debit_account, self.credit_account, self.amount, self.currency,
            self.round_id, self.ts_us,
        )

    def to_public(self) -> dict[str, Any]:
        """JSON of the entry for ``GET /players/{id}/transactions``."""
        return asdict(self)
