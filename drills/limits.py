"""Named bounds of ``testbed drill``'s flags and fault specs (every number finite)."""

from __future__ import annotations

MAX_FAULTS = 16
"""Faults in one drill."""
MAX_DURATION_S = 3_600.0
"""Measured seconds of one drill."""
MAX_RATE_RPS = 5_000.0
"""Requests per second of the open-loop generator."""
MAX_FAULT_WINDOW_S = 600.0
"""Longest hang, outage or latency window."""
MAX_LATENCY_MS = 60_000.0
"""Largest delay a latency fault adds."""
DEFAULT_DB_DOWN_S = 2.0
"""How long ``db-restart@T`` keeps the database away when no ``+D`` is given."""
DEFAULT_TIMEOUT_S = 5.0
"""A request answered later than this counts as timed out (the caller gave up)."""
MAX_TIMEOUT_S = 120.0
"""Largest ``--timeout`` (the generator clamps latencies at two minutes)."""
STARTUP_TIMEOUT_S = 90.0
"""Longest wait for a server of the drill (database, broker, back office) to answer."""
STOP_GRACE_S = 15.0
"""How long a process of the drill gets after SIGTERM before SIGKILL."""
RECOVERY_WINDOW_S = 5.0
"""Trailing window (s) of the p99 and error ratio the recovery metrics judge."""
DEFAULT_HOLD_S = 5.0
"""The p99 counts as back under target once it stays there this long (a shared 2-core
machine has p99 spikes of its own: "to the end of the drill" would measure those)."""
