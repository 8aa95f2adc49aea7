"""Machine-readable error codes of the wallet and the exception that carries them."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Error codes of the public API: 4xx (refused, nothing changed), 503 (component down) or
    500 (a bug)."""

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
    UNAUTHENTICATED = "UNAUTHENTICATED"  # 401: no, unknown, altered or replayed credentials
    FORBIDDEN = "FORBIDDEN"  # 403: authenticated, but this route is outside the caller's scope
    RATE_LIMITED = "RATE_LIMITED"  # 429: past a rate limit; retry after Retry-After seconds
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"  # 413: body over the maximum size
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"  # 415: a body that is not application/json
    INTERNAL_ERROR = "INTERNAL_ERROR"  # 500: a bug (logged); the outcome of a money request is
    # unknown: retry with the same transaction id


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
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.INTERNAL_ERROR: 500,
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
