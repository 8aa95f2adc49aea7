"""Finite ranges of every number of the scenario language (one place, named).

Every float of a scenario is finite (``allow_inf_nan=False`` on every model) and every
number has an upper bound that keeps a run meaningful and affordable: beyond them a value is
a typo (``1e300``), not a capacity question. The bounds are generous on purpose; each is
documented where it is used (``sim/model/scenario.py``, ``sim/model/distributions.py``) and in
README.md ("Scenario numbers").
"""

from __future__ import annotations

from pydantic import ConfigDict

FINITE = ConfigDict(extra="forbid", allow_inf_nan=False)
"""Model config shared by every scenario model: unknown fields and inf/nan are rejected."""

# simulated time
MAX_DURATION_S = 7 * 86_400.0
"""A week of simulated time per replication (a day, 86,400 s, is the usual long run)."""
MIN_BIN_S = 1e-3
"""Time-series bins of at least 1 ms."""
MAX_BINS = 1_000_000
"""At most a million time-series bins per replication (memory of the station series)."""

# service demands and time limits, milliseconds
MAX_DEMAND_MS = 3_600_000.0
"""One hour: the largest service demand, think time, external wait or SLO target."""
MIN_MEAN_MS = 1e-6
"""One nanosecond: the smallest positive mean or median of a distribution."""
MAX_SIGMA = 5.0
"""Log-normal sigma (the underlying normal's); e^5 ~ 150 times the median at one sigma."""
MAX_CV = 10.0
"""Gamma coefficient of variation."""

# population and load
MAX_PLAYERS = 10_000_000_000
"""Registered players."""
MAX_ONLINE = 100_000_000
"""Online players at the peak (the population keeps ~30 bytes per online player)."""
MAX_ACTIONS_PER_MINUTE = 600.0
"""Ten actions a second per online player."""
MAX_SESSION_MINUTES = 1e9
"""Mean session length: up to ~1,900 years, i.e. "players never leave during the run"."""
MAX_MULTIPLIER = 1_000.0
"""Spike and whale activity multipliers."""
MAX_WEIGHT = 1e9
"""Relative operation weights (only their ratios matter)."""
MAX_STAKE = 10**12
"""Bet sizes in minor units (ten billion in a currency with cents)."""
MAX_USERS = 1_000_000
"""Closed-loop users."""

# deployment sizes
MAX_REPLICAS = 10_000
MAX_CORES = 1_024
MAX_WORKERS = 1_000_000
MAX_CONNECTIONS = 100_000
MAX_SHARDS = 10_000
MAX_SUB_ACCOUNTS = 10_000
MAX_QUEUE_LIMIT = 100_000_000

# concurrency control (optimistic retries)
MAX_CONFLICT_ATTEMPTS = 1_000
"""Attempts of one transaction under optimistic concurrency (the reference back office: 50)."""
MAX_BACKOFF_MS = 60_000.0
"""Backoff between optimistic attempts: a minute at most (base and cap)."""
# host model and load-dependent demand (issue 8)
MAX_SPEED_FACTOR = 100.0
"""A CPU demand multiplier of ``cpu_by_rate``, at most (and above 1 / this, at least)."""
MAX_FACTOR_POINTS = 1_000
"""Points of a ``cpu_by_rate`` table, at most."""
MAX_HOST_CORES = MAX_CORES
"""Cores of a shared host."""
MAX_SLICE_MS = 1_000.0
"""A scheduler time slice of the host model, at most one second."""
MAX_RATE_RPS = 10_000_000.0
"""A request rate (requests/s) of a rate-dependent table (``empirical_by_rate``, pauses)."""
MAX_RATE_LEVELS = 32
"""Rate levels of an ``empirical_by_rate`` wait, and points of a host's pause-rate table."""
MAX_PAUSES_PER_S = 1_000.0
"""Host pauses (GC, checkpoints) per second, at most."""
MAX_PAUSE_MS = 60_000.0
"""One host pause, at most a minute."""
MAX_PAUSE_SAMPLES = 10_000
"""Measured pause durations of a host, at most."""

# run settings
MAX_REPLICATIONS = 1_000
MAX_SEED = 2**63 - 1

# faults and players' reaction (sim/model/faults.py)
MAX_FAULTS = 100
"""Faults per scenario."""
MAX_FAULT_DELAY_S = 3_600.0
"""Boot, warm-up, health-check interval, lost-message wait, recovery window and reconnect
spread: an hour at most."""
MAX_ATTEMPTS = 20
"""A player's tries per request (the first included)."""
MAX_HEALTH_THRESHOLD = 100
"""Failed (or good) health checks before a replica is taken out (or back)."""
MAX_BACKOFF_MULTIPLIER = 10.0
MAX_PUBLISH_BACKLOG = 1_000_000
"""Messages publishers keep while the broker is down (the broker's own bound)."""
