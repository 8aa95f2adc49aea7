"""Limits and defaults of the load commands, in a module light enough for ``testbed``'s
start-up to import (the generators' own modules pull numpy, pandas and uvloop)."""

from __future__ import annotations

import math

DEFAULT_MAX_IN_FLIGHT = 1000
"""Open loop: outstanding requests beyond which arrivals are skipped (and counted)."""
MAX_PROCESSES = 64
"""Open loop: most generator processes of one run."""
DEFAULT_PLAYERS = 1000
"""Players created and funded before a `testbed load` window."""
MAX_PLAYER_RPS = 0.4
"""Requests per second one player sends at most in a measured level of ``testbed calibrate``
and ``testbed validate``: a level at R requests/s has at least R / this players
(:func:`players_at`). The back office has a cost that grows with a player's history within
minutes (source not found yet), so few players at a high rate measure that, not the rate.
Measured (monolith + SQLite, 3,900 requests/s for 60 s, session 10): 1,000 players (3.9/s
each) read p50 2 ms in the first seconds and 7-14 ms in the last, p99 5 -> 50-90 ms; 10,000
players (0.39/s) p50 2 ms throughout, p99 11 -> 27 ms. The scenario's players act 4 times a
minute (0.07/s); setting up 10,000 players took ~3 s."""


def players_at(rate: float, players: int) -> int:
    """Players of a measured level at ``rate`` requests/s: ``players``, or enough that none
    sends more than :data:`MAX_PLAYER_RPS`."""
    return max(players, math.ceil(rate / MAX_PLAYER_RPS))
