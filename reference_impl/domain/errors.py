"""Machine-readable error codes of the wallet and the exception that carries them."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Error codes of the public API: 4xx (refused, nothing changed) or 503 (component down)."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNKNOWN_PLAYER = "UNKNOWN_PLAYER"
    PLAYER_EXISTS = "PLAYER_EXISTS"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    PLAYER_BLOCKED = "PLAYER_BLOCKED"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    TRANSACTION_CONFLICT = "TRANSACTION_CONFLICT"
    BET_NOT_FOUND = "BET_NOT_FOUND"
    BET_ALREADY_SETTLED = "BET_ALREADY_SETTLED"
    TRANSACTION_ROLLED_BACK = "TRANSACTION_ROLLED_BACK"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"  # 503: a component is down; retry with same id


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.UNKNOWN_PLAYER: 404,
    ErrorCode.PLAYER_EXISTS: 409,
    ErrorCode.INSUFFICIENT_FUNDS: 409,
    ErrorCode.LIMIT_EXCEEDED: 403,
    ErrorCode.PLAYER_BLOCKED: 403,
    ErrorCode.CURRENCY_MISMATCH: 409,
    ErrorCode.TRANSACTION_CONFLICT: 409,
    ErrorCode.BET_NOT_FOUND: 404,
    ErrorCode.BET_ALREADY_SETTLED: 409,
    ErrorCode.TRANSACTION_ROLLED_BACK: 409,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
}


class WalletError(Exception):
    """A refused operation: nothing moved. ``code`` is one of :class:`ErrorCode`."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = ErrorCode(code)
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status this error is answered with."""
        return HTTP_STATUS[self.code]

    def to_json(self) -> dict[str, dict[str, str]]:
        """The public error body ``{"error": {"code", "message"}}``."""
        return {"error": {"code": self.code.value, "message": self.message}}
