"""Measurements taken while the machine was not the back office's are taken again.

On a virtual machine the hypervisor runs other machines on the same cores and takes this
one's from it ("steal", Linux ``/proc/stat``). Measured here (session 6, a calibration then
a validation of one monolith + SQLite server minutes apart): 0.2 cores of steal on average
during the calibration, 0.02 during the validation; the same server answered the mix at
1,012/s with a median of 17.5 ms in the first and 2.0 ms in the second, and the two ramps
put its capacity at 1,408/s and 2,241/s. A model calibrated in the first state predicts the
second wrong by 50-400%, whatever it gets right. So a measured window in which the
hypervisor took :data:`UNSTEADY_STEAL` cores or more is measured again after
:data:`RETRY_WAIT_S` (at most :data:`MAX_TRIES` in all); when none is steady the steadiest
is kept and the run says so. No I/O but through the callables given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

UNSTEADY_STEAL = 0.05
"""Cores taken by the hypervisor in a window from which it is measured again (and marked in
the reports when kept): 2.5% of this 2-core machine."""
MAX_TRIES = 3
RETRY_WAIT_S = 10.0
"""Seconds between tries: steal came in episodes of tens of seconds to minutes here."""


def unsteady(steal_cores: float | None) -> bool:
    return steal_cores is not None and math.isfinite(steal_cores) \
        and steal_cores >= UNSTEADY_STEAL


def steady(measure: Callable[[], T], steal_of: Callable[[T], float | None],
           say: Callable[[str], Any], what: str, retry: Callable[[T], bool] | None = None,
           sleep: Callable[[float], Any] = time.sleep) -> T:
    """``measure()`` until a try is steady (or ``retry(result)`` is false), at most
    :data:`MAX_TRIES`; the steadiest try when none is."""
    tries: list[T] = []
    for n in range(1, MAX_TRIES + 1):
        got = measure()
        tries.append(got)
        steal = steal_of(got)
        if not unsteady(steal) or (retry is not None and not retry(got)):
            return got
        if n < MAX_TRIES:
            say(f"{what}: the hypervisor took {steal:.2f} cores of this machine; measuring "
                f"again in {RETRY_WAIT_S:g} s (try {n + 1} of {MAX_TRIES})")
            sleep(RETRY_WAIT_S)
    best = min(tries, key=lambda t: steal_of(t) or 0.0)
    say(f"{what}: unsteady in all {MAX_TRIES} tries; keeping the one with "
        f"{steal_of(best) or 0.0:.2f} cores of steal")
    return best
