"""Bounds at the edge of the public API: rate limits (token buckets), body size, JSON depth.

Token buckets are written here rather than taken from the ``limits`` package: ``limits``
offers fixed, moving and sliding windows but no token bucket (a burst allowance refilled at a
steady rate), and its moving window keeps one timestamp per request (a bucket keeps two
floats per key).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive

from reference_impl.domain.errors import ErrorCode, WalletError

DEFAULT_MAX_BODY_BYTES = 65_536
"""Largest request body (the largest valid body, a limits PUT, is under 1 KB)."""
DEFAULT_CREDENTIAL_RATE = 20_000.0
"""Requests per second per credential (sustained); three times what one server process
serves on the project's 2-core benchmark machine, so benchmarks and load tests pass."""
DEFAULT_PLAYER_RATE = 200.0
"""Requests per second per player (sustained): far above a human's pace."""
BURST_SECONDS = 2.0
"""Each bucket holds this many seconds of its rate (the burst allowed after a quiet time)."""
MAX_BUCKETS = 200_000
"""Buckets kept per limiter; past it, full (idle) buckets are dropped first."""
MAX_JSON_DEPTH = 16
"""Deepest nesting of objects/arrays accepted in a request body (the API needs 3)."""


@dataclass(frozen=True)
class EdgeConfig:
    """What the public API enforces before any work (``testbed serve`` options)."""

    credentials: str | None = None  # YAML file; None: $TESTBED_CREDENTIALS, else open
    credential_rate: float = DEFAULT_CREDENTIAL_RATE
    player_rate: float = DEFAULT_PLAYER_RATE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        for name in ("credential_rate", "player_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        if not 1 <= self.max_body_bytes <= 100 * 1024 * 1024:
            raise ValueError("max_body_bytes must be between 1 and 100 MiB")


class RateLimited(WalletError):
    """429 with the seconds after which a retry can pass."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(ErrorCode.RATE_LIMITED, message)
        self.retry_after = max(1, math.ceil(retry_after))


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens/s, at most ``rate * BURST_SECONDS`` held."""

    def __init__(self, rate: float, what: str, *, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = MAX_BUCKETS) -> None:
        self.rate, self.what, self.clock = rate, what, clock
        self.capacity = max(1.0, rate * BURST_SECONDS)
        self.max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> None:
        """Spend one token of ``key``'s bucket, or raise :class:`RateLimited`."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited(f"more than {self.rate:g} requests/s for this {self.what}",
                              (1.0 - tokens) / self.rate)
        if key not in self._buckets and len(self._buckets) >= self.max_buckets:
            self._evict(now)
        self._buckets[key] = (tokens - 1.0, now)

    def _evict(self, now: float) -> None:
        """Drop refilled buckets (same as absent); if none, the oldest half (lenient)."""
        full = [k for k, (t, at) in self._buckets.items()
                if t + (now - at) * self.rate >= self.capacity]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_buckets:
            for k in list(self._buckets)[: self.max_buckets // 2]:
                del self._buckets[k]
        assert len(self._buckets) < self.max_buckets


async def read_body(receive: Receive, declared: int | None, limit: int) -> bytes | None:
    """The request body, refused with 413 as soon as it is known to pass ``limit`` bytes
    (from Content-Length, else while streaming); None if the client went away."""
    if declared is not None and declared > limit:
        raise WalletError(ErrorCode.PAYLOAD_TOO_LARGE,
                          f"body of {declared} bytes, the maximum is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise WalletError(ErrorCode.PAYLOAD_TOO_LARGE,
                              f"body over the maximum of {limit} bytes")
        if not chunks and not more:
            return bytes(chunk)
        if chunk:
            chunks.append(chunk)
        if not more:
            return b"".join(chunks)


def integral(value: Any, depth: int = 0) -> Any:
    """JSON's ``100.0`` is the integer 100 (100.5 stays a float, and is refused), in every
    object; nesting deeper than :data:`MAX_JSON_DEPTH` is a VALIDATION_ERROR."""
    if depth > MAX_JSON_DEPTH:
        raise WalletError(ErrorCode.VALIDATION_ERROR,
                          f"body nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        for item in value:
            integral(item, depth + 1)  # depth check only: list items are never amounts
    return value
