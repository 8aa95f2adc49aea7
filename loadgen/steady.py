"""Measurements taken while the machine was not the back office's are taken again.

On a virtual machine the hypervisor runs other machines on the same cores and takes this
one's from it ("steal", Linux ``/proc/stat``). Measured here (session 6, a calibration then
a validation of one monolith + SQLite server minutes apart): 0.2 cores of steal on average
during the calibration, 0.02 during the validation; the same server answered the mix at
1,012/s with a median of 17.5 ms in the first and 2.0 ms in the second, and the two ramps
put its capacity at 1,408/s and 2,241/s. A model calibrated in the first state predicts the
second wrong by 50-400%, whatever it gets right. So a measured window in which the
hypervisor took :data:`UNSTEADY_STEAL` cores or more on average, or
:data:`UNSTEADY_BURST_S` seconds within one second (a mean hides a vCPU descheduled for a
third of a second: a 360 ms stall in a level whose mean steal was under 0.02 cores), is
measured again after
:data:`RETRY_WAIT_S` (at most :data:`MAX_TRIES` in all); when none is steady the steadiest
is kept and the run says so.

The machine's other tenants show in a second way: an *episode*, seconds during which the back
office answered many times slower than in the rest of its window, with no steal to explain
it (session 7, microservices at 80% of capacity: 18 s of ~1 s medians in a 70 s window
whose other seconds read 12-35 ms, the calibration's level at the same rate 13 ms). And a
third, shorter and as decisive: a stall of a quarter to half a second (session 9, no
steal: 243-466 ms on SQLite and PostgreSQL alike, about one a minute; a slow disk write by
its look, not measured) holds every request for its length. One event of either kind
that holds :data:`UNSTEADY_SHARE` of a window's requests decides the window's p99 by itself
(:func:`tail_share`): SQLite at 50% of capacity read p99 328 ms from one slow first
second (p50 217 ms there, 2 ms in the other 29), and a 262 ms stall in a 20 s calibration
level put 54-78 ms into the model's p99 at every rate near it where the validation
measured 6 ms. Such a window is measured again the
same way, and kept and marked when every try had one. No I/O but through the callables
given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

UNSTEADY_STEAL = 0.05
"""Cores taken by the hypervisor in a window from which it is measured again (and marked in
the reports when kept): 2.5% of this 2-core machine."""
UNSTEADY_BURST_S = 0.05
"""Seconds stolen within :data:`loadgen.probe.BURST_WINDOW_S` from which a window is measured
again: longer than this machine's own stalls at low load (measured: at most 0.01 s a second
outside steal episodes, 0.05-0.14 s within them)."""
UNSTEADY_SHARE = 0.01
"""Share of a window's time held by one slow event (:func:`tail_share`) from which it is
measured again: the requests of that event are then at least the 1% above the window's p99,
which measures the event, not the level (an episode of 3 s, the bound until session 9, is
10% of a 30 s window)."""
EPISODE_FACTOR = 5.0
"""A second belongs to an episode when its median latency is above this multiple of the
median of the window's per-second medians."""
MAX_TRIES = 3
RETRY_WAIT_S = 10.0
"""Seconds between tries: steal came in episodes of tens of seconds to minutes here."""


def fresh(tag: str, n: int) -> str:
    """The players' tag of try ``n`` of a measurement tagged ``tag``."""
    return tag if n == 1 else f"{tag}t{n}"


def _known(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) else 0.0


def episode_s(t_s: Sequence[float], latency_s: Sequence[float]) -> float:
    """The longest run of consecutive seconds (by intended send time) whose median latency
    exceeds :data:`EPISODE_FACTOR` times the median of the window's per-second medians (0
    for a window of fewer than three seconds)."""
    t = np.asarray(t_s, dtype=float)
    lat = np.asarray(latency_s, dtype=float)
    assert t.shape == lat.shape, "one latency per request"
    if t.size == 0:
        return 0.0
    sec = np.floor(t - t.min()).astype(int)
    seconds = np.unique(sec)
    if seconds.size < 3:
        return 0.0
    medians = np.array([np.median(lat[sec == k]) for k in seconds])
    slow = medians > EPISODE_FACTOR * float(np.median(medians))
    longest = run = 0
    last = -2
    for k, is_slow in zip(seconds.tolist(), slow.tolist(), strict=True):
        if not is_slow:
            run = 0
        elif run and k == last + 1:  # the run goes on
            run += 1
        else:
            run = 1
        last = k
        longest = max(longest, run)
    return float(longest)


def tail_share(window_s: float, episode: float, stalls_ms: Sequence[float]) -> float:
    """Share of a ``window_s`` window held by its one slowest event: its longest episode
    (seconds, :func:`episode_s`) or its longest stall (:mod:`loadgen.stalls`), whichever is
    longer. At a steady rate that is the share of the window's requests the event held
    up."""
    assert window_s >= 0 and episode >= 0, (window_s, episode)
    if not window_s > 0:
        return 0.0
    return max(episode, max(stalls_ms, default=0.0) / 1000) / window_s


@dataclass(frozen=True)
class Steadiness:
    """What the machine and the back office did during one measured window that would make
    its figures not the level's: the hypervisor's steal (mean cores, and the most within a
    second) and the share of the window held by its slowest event (:func:`tail_share`).
    Unknown (None or NaN) counts as steady."""

    steal_cores: float | None = None
    steal_burst_s: float | None = None
    tail_share: float | None = None

    @property
    def badness(self) -> float:
        """How far the window was from steady: 1 at any bound."""
        return max(_known(self.steal_cores) / UNSTEADY_STEAL,
                   _known(self.steal_burst_s) / UNSTEADY_BURST_S,
                   _known(self.tail_share) / UNSTEADY_SHARE)

    @property
    def unsteady(self) -> bool:
        return self.badness >= 1.0

    def describe(self) -> str:
        text = (f"the hypervisor took {_known(self.steal_cores):.2f} cores of this machine "
                f"(at most {_known(self.steal_burst_s):.2f} s within a second)")
        if _known(self.tail_share) >= UNSTEADY_SHARE:
            text += (f"; one slow event (seconds answered over {EPISODE_FACTOR:g}x slower "
                     f"than the rest, or a stall) held {_known(self.tail_share):.1%} of the "
                     "window: alone it decides the p99")
        return text


def steady(measure: Callable[[int], T], steadiness: Callable[[T], Steadiness],
           say: Callable[[str], Any], what: str, retry: Callable[[T], bool] | None = None,
           sleep: Callable[[float], Any] = time.sleep) -> T:
    """``measure(n)`` for tries n = 1, 2, ... until one is steady (or ``retry(result)`` is
    false), at most :data:`MAX_TRIES`; the steadiest try when none is. ``steadiness(result)``
    says how steady a try was. Each try must use its own players (:func:`fresh`): a try that
    reused the last one's players found the fraud rules' velocity windows full of its bets
    and read 38% errors."""
    tries: list[T] = []
    for n in range(1, MAX_TRIES + 1):
        got = measure(n)
        tries.append(got)
        how = steadiness(got)
        if not how.unsteady or (retry is not None and not retry(got)):
            return got
        if n < MAX_TRIES:
            say(f"{what}: {how.describe()}; measuring again in {RETRY_WAIT_S:g} s "
                f"(try {n + 1} of {MAX_TRIES})")
            sleep(RETRY_WAIT_S)
    best = min(tries, key=lambda t: steadiness(t).badness)
    say(f"{what}: unsteady in all {MAX_TRIES} tries; keeping the steadiest: "
        f"{steadiness(best).describe()}")
    return best
