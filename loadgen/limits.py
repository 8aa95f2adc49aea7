"""Limits and defaults of the load commands, in a module light enough for ``testbed``'s
start-up to import (the generators' own modules pull numpy, pandas and uvloop)."""

from __future__ import annotations

DEFAULT_MAX_IN_FLIGHT = 1000
"""Open loop: outstanding requests beyond which arrivals are skipped (and counted)."""
MAX_PROCESSES = 64
"""Open loop: most generator processes of one run."""
DEFAULT_PLAYERS = 1000
"""Players created and funded before a `testbed load` window."""
