"""Money and identifier validation: amounts are integer minor units, never floats."""

from __future__ import annotations

import re

from reference_impl.domain.errors import ErrorCode, WalletError

MAX_AMOUNT = 10**15
"""Largest single amount accepted (minor units); keeps every sum inside a signed 64-bit int."""

CURRENCIES: frozenset[str] = frozenset(
    {"EUR", "USD", "GBP", "SEK", "NOK", "DKK", "CHF", "PLN", "CAD", "AUD", "BRL", "JPY", "MXN"}
)
"""Currencies the wallet accepts (ISO 4217)."""

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
"""Identifiers (players, transactions, rounds, games): safe for the hash chain's separator.
Check with ``fullmatch``: ``$`` alone also matches before a trailing newline."""


def validate_amount(amount: object, *, allow_zero: bool = False, field: str = "amount") -> int:
    """Return ``amount`` if it is an integer in (0, MAX_AMOUNT] (or 0 when allowed)."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise WalletError(ErrorCode.VALIDATION_ERROR, f"{field} must be an integer (minor units)")
    low = 0 if allow_zero else 1
    if not low <= amount <= MAX_AMOUNT:
        raise WalletError(
            ErrorCode.VALIDATION_ERROR, f"{field} must be between {low} and {MAX_AMOUNT}"
        )
    return amount


def validate_currency(currency: object) -> str:
    """Return ``currency`` if it is one of :data:`CURRENCIES`."""
    if not isinstance(currency, str) or currency not in CURRENCIES:
        raise WalletError(
            ErrorCode.VALIDATION_ERROR,
            f"currency must be one of {', '.join(sorted(CURRENCIES))}",
        )
    return currency


SCOPE_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
"""Ids of callers (providers, operators) that scope transaction and round ids: no ``:``."""
SCOPED_ID_PATTERN = re.compile(r"(?:[A-Za-z0-9_.\-]{1,32}:)?[A-Za-z0-9_.:\-]{1,64}")
"""Transaction and round ids as stored: an id, optionally scoped as ``caller:id`` (the public
API scopes the ids of every authenticated caller, so two callers' ids never collide)."""


def scoped_id(caller: str, value: str) -> str:
    """``value`` in the namespace of ``caller``."""
    return f"{caller}:{value}"


def validate_scoped_id(value: object, field: str) -> str:
    """Return ``value`` if it is an identifier, or ``caller:identifier``."""
    if not isinstance(value, str) or not SCOPED_ID_PATTERN.fullmatch(value):
        raise WalletError(
            ErrorCode.VALIDATION_ERROR, f"{field} must match {ID_PATTERN.pattern}"
        )
    return value


def validate_id(value: object, field: str) -> str:
    """Return ``value`` if it is a 1-64 character identifier of ``[A-Za-z0-9_.:-]``."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise WalletError(
            ErrorCode.VALIDATION_ERROR, f"{field} must match {ID_PATTERN.pattern}"
        )
    return value
