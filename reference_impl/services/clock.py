"""Wall-clock time in integer microseconds (the only clock read of the back office)."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def system_clock() -> int:
    """Unix time in microseconds."""
    return time.time_ns() // 1_000
