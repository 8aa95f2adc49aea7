"""The capacity search behind ``testbed validate`` and ``testbed calibrate --mix-rates auto``:
a stepped open-loop ramp of the scenario's mix, then a bisection between the last rate the
back office kept up with and the first it did not, with the back office left to go quiet
after every step that overloaded it; then, optionally, steps four times as long that confirm
the rate found can be held (:data:`CONFIRM_FACTOR`).

Measured (monolith + SQLite, session 5): the plain geometric ramp (x1.5 per step) put the
capacity of one server at 3,391/s in one run and 5,085/s in the next, a step apart, so the
"80% of capacity" of calibration and validation lay 50% apart. :data:`REFINE_RATIO` bounds
that quantisation.

No I/O here but through the callables given: ``measure(rate, tag)`` runs one step,
``settle()`` waits for the back office to go quiet (:func:`settle_quiet`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen.record import HIGHEST_US, LOWEST_US, Recorder
from loadgen.steady import Steadiness, fresh, steady, tail_share
from sim.reports.results import Results

KEEP_UP = 0.9
"""A step kept up when at least this share of its offered rate was answered."""
MAX_ERROR_RATE = 0.01
MAX_LATENCY_GROWTH = 3.0
"""A step whose median latency exceeds this multiple of the ramp's lowest is past capacity:
its queue grew during the step (answers that only came in the drain still count as
answered). The median, not the mean: one stall of 100 ms (a full garbage collection) lifts
a short step's mean tenfold and says nothing about capacity. Not 5 (sessions 5-7): a 5 s
step that queues only from its second second reads a median well below the queue it ends
with, and monolith + SQLite's ramp took 1,240/s (median 13.1 ms, 4.6 times light load's
2.8) as kept up, where 40 s at 1,000/s read medians of 4-30 ms second by second (session
8): "80% of capacity" then lay at the sustained knee, where p99 is decided by which second
a queue forms. At 3 times light load's median the capacity is a rate the back office
sustains."""
MAX_DEFERRED_SHARE = 0.25
"""A step is past capacity when, in the :data:`QUIET_WINDOW_S` right after its last answer,
the back office's processes still used more than this share of the cores they used during
the step: work was left behind (events queued for the fraud and analytics consumers) that a
longer window would have had to do too. Measured (microservices + PostgreSQL, session 9): 5 s
steps kept up with 411/s at a median of 7 ms, and the validation's 80% level (319/s, 70 s)
did not keep up at all (medians of 0.5-6 s); the calibration's 40 s level at 324/s neither.
Work deferred to the consumers is the likely reason (not measured then: the rule came after;
in the one run since, no step left work behind). A steady back office has nothing left to do
within a second of its last answer."""
RAMP_FACTOR = 1.5
"""Offered rate of each ramp step over the previous one."""
MAX_RAMP_STEPS = 12
REFINE_RATIO = 1.1
"""The bisection stops when the first rate not kept up is within this factor of the last
one kept up: the capacity is then known to 10% (at most :data:`MAX_REFINE_STEPS`)."""
MAX_REFINE_STEPS = 4
CONFIRM_FACTOR = 4.0
"""A confirming step lasts this many times a ramp step (20 s after 5 s steps)."""
CONFIRM_BACKOFF = 0.95
"""The k-th confirming step (from 0) holds ``CONFIRM_BACKOFF ** (k (k + 1) / 2)`` of the
bisection's rate: 100, 95, 86, 74 and 60%. The backoff grows with each step not kept up:
measured (monolith + SQLite, session 12), four steps 5% apart (1,518.8 down to 1,302.1/s) all
failed their latency bound, so the capacity then read was a rate not shown to be held."""
MAX_CONFIRM_STEPS = 5
"""Confirming steps at most (down to 60% of the bisection's rate); when none kept up, the
capacity is the last one's answered rate, :func:`confirmed` is False and the run and its
report say so. Measured (monolith +
PostgreSQL, session 11): two bisections of one server, 5 s steps, ended at 2,773 and 3,061/s
(the 3,088/s step passed in one with a median of 3.58 ms against a bound of 3.96, failed in
the other with 4.38 against 3.78), and the 95% level of the second (2,908/s, 60 s) did not
keep up (median 122 ms): a 5 s step above capacity queues for too short a time to show it. Its
80% level then lay at the calibration's 88%, where p99 doubles within 10% of rate, and missed
the bar by up to 82%. A confirming step holds the rate four times as long."""
SETTLE_MIN_S = 5.0
"""Seconds left idle after an overloaded step at least, even when the back office's
processes look idle at once (a long WAL to checkpoint, garbage; measured: a level right
after the overload stalled 150-200 ms)."""
SETTLE_MAX_S = 90.0
"""Longest wait for the back office to go quiet; the run says when it did not."""
SETTLE_BLIND_S = 15.0
"""The wait when the back office's CPU cannot be read (not on this machine)."""
QUIET_WINDOW_S = 2.0
QUIET_CORES = 0.05
"""The back office is quiet when its processes together used less than this share of one
core over :data:`QUIET_WINDOW_S`. Measured idle (1 s windows): microservices 0.00-0.02
cores (six processes whose CPU times tick at 10 ms each). Session 5 saw the microservices'
fraud and analytics consumers still draining an overload's backlog 15 s after the ramp;
a fixed wait cannot know how long that lasts."""


@dataclass(eq=False)
class Step:
    offered: float
    results: Results
    rec: Recorder
    besides_cores: float | None = None
    """Cores wanted by anything but the back office during the step (the load generator
    included): the host's background in the prediction at this rate."""
    stalls_ms: list[float] = field(default_factory=list)
    """The back office's stalls seen in the step (:mod:`loadgen.stalls`)."""
    steal_cores: float | None = None
    """Cores the hypervisor took from this machine during the step (Linux steal)."""
    steal_burst_s: float | None = None
    """The most it took within a second of the step (seconds)."""
    episode_s: float = 0.0
    """Its longest episode of slow seconds (:func:`loadgen.steady.episode_s`)."""
    seconds: float = 0.0
    """Its measured window (s)."""
    after_cores: float | None = None
    """Cores the back office's processes used in the :data:`QUIET_WINDOW_S` right after the
    step's last answer (None: not measured)."""
    confirming: bool = False
    """A longer step that checked the bisection's capacity (:data:`CONFIRM_FACTOR`)."""

    @property
    def busy_cores(self) -> float | None:
        """Cores the back office's processes used during the measured window (None: not
        measured)."""
        used = self.results.meta.get("server_cpu_s")
        if not used or not self.seconds > 0:
            return None
        return float(sum(used.values())) / self.seconds

    @property
    def left_work(self) -> bool:
        """It left work behind (:data:`MAX_DEFERRED_SHARE`)."""
        busy = self.busy_cores
        return (self.after_cores is not None and busy is not None and busy > 0
                and self.after_cores > MAX_DEFERRED_SHARE * busy)

    @property
    def tail_share(self) -> float:
        """Share of the window held by its slowest event (:func:`loadgen.steady.tail_share`)."""
        return tail_share(self.seconds, self.episode_s, self.stalls_ms)

    @property
    def steadiness(self) -> Steadiness:
        return Steadiness(self.steal_cores, self.steal_burst_s, self.tail_share)

    @property
    def achieved(self) -> float:
        return float(self.results.meta["achieved_rate_rps"])

    @property
    def errors(self) -> float:
        s = self.results.summary
        return float((s["error_rate"] * s["requests"]).sum() / max(1, s["requests"].sum()))

    @property
    def mean_ms(self) -> float:
        h = whole(self.rec)
        return h.get_mean_value() / 1000 if h.get_total_count() else math.nan

    @property
    def p50_ms(self) -> float:
        h = whole(self.rec)
        return h.get_value_at_percentile(50) / 1000 if h.get_total_count() else math.nan

    def ok(self, base_p50_ms: float) -> bool:
        """Kept up: answered the offered rate, few errors, nothing skipped, a median
        latency within MAX_LATENCY_GROWTH of ``base_p50_ms`` (the ramp's lowest), and no
        work left behind (:attr:`left_work`)."""
        return (self.achieved >= KEEP_UP * self.offered and self.errors <= MAX_ERROR_RATE
                and not self.results.meta.get("skipped_requests")
                and self.p50_ms <= MAX_LATENCY_GROWTH * base_p50_ms
                and not self.left_work)


def whole(rec: Recorder) -> HdrHistogram:
    """Every operation's latencies of a run in one histogram."""
    h = HdrHistogram(LOWEST_US, HIGHEST_US, 3)
    for part in rec.total.values():
        h.add(part)
    return h


def base_p50(steps: list[Step]) -> float:
    return min(s.p50_ms for s in steps)


def kept_up(steps: list[Step]) -> list[Step]:
    base = base_p50(steps)
    return [s for s in steps if s.ok(base)]


def confirm_rate(low: float, k: int) -> float:
    """Offered rate of the ``k``-th confirming step after a bisection that ended at ``low``
    (:data:`CONFIRM_BACKOFF`)."""
    return low * CONFIRM_BACKOFF ** (k * (k + 1) / 2)


def confirmed(steps: list[Step]) -> bool | None:
    """Whether a confirming step kept up (None: the search had none)."""
    confirming = [s for s in steps if s.confirming]
    if not confirming:
        return None
    base = base_p50(steps)
    return any(s.ok(base) for s in confirming)


def capacity(steps: list[Step]) -> float:
    """Highest answered rate of a step that kept up (else of any step). When the search
    confirmed its capacity (:data:`CONFIRM_FACTOR`), only confirming steps count: the highest
    that kept up, else the last one's answered rate."""
    confirming = [s for s in steps if s.confirming]
    if confirming:
        base = base_p50(steps)
        good = [s.achieved for s in confirming if s.ok(base)]
        return max(good) if good else confirming[-1].achieved
    good = [s.achieved for s in kept_up(steps)]
    return max(good) if good else max(s.achieved for s in steps)


def search(measure: Callable[[float, str], Step], start: float, settle: Callable[[], Any],
           say: Callable[[str], Any],
           confirm: Callable[[float, str], Step] | None = None) -> list[Step]:
    """Every step measured, in order: rates growing by :data:`RAMP_FACTOR` from ``start``
    until a step is not kept up, then the geometric midpoint of the last rate kept up and
    the first not, until they are within :data:`REFINE_RATIO`. With ``confirm`` (a step
    :data:`CONFIRM_FACTOR` times as long), the highest rate kept up is held that long, and
    lower rates after each that was not kept up (:func:`confirm_rate`), at most
    :data:`MAX_CONFIRM_STEPS` (:func:`capacity` then counts those alone); ``confirm`` starts
    each of its steps from a quiet back office itself. ``settle()`` follows every other
    step that was not kept up (the next is measured on a quiet back office) and ends the
    search."""
    def settle_for(_: float) -> None:  # before another try of an overloaded step
        settle()

    if not (start > 0 and math.isfinite(start)):
        raise ValueError(f"start rate: must be a positive finite number, got {start}")
    steps: list[Step] = []

    def step(rate: float, tag: str, how: Callable[[float, str], Step] = measure,
             settles: bool = True) -> bool:
        # a step not kept up while the hypervisor took cores is taken again: it says
        # nothing of the back office's capacity (:mod:`loadgen.steady`)
        st = steady(lambda n: how(rate, fresh(tag, n)),
                    lambda x: Steadiness(x.steal_cores, x.steal_burst_s),  # steal only
                    say, tag,
                    retry=lambda x: not x.ok(base_p50([*steps, x])),
                    sleep=settle_for if settles else _no_wait)
        steps.append(st)
        good = st.ok(base_p50(steps))
        say(f"{tag:>8} {rate:8.1f}/s offered: {st.achieved:8.1f}/s answered, errors "
            f"{st.errors:.2%}, p50 {st.p50_ms:.2f} ms, mean {st.mean_ms:.1f} ms"
            + ("" if good else "  (not kept up)")
            + (f"  (left work: {st.after_cores:.2f} cores after it, "
               f"{st.busy_cores or 0:.2f} during)" if st.left_work else ""))
        if not good and settles:
            settle()
        return good

    low, high, rate = 0.0, math.inf, start
    for i in range(MAX_RAMP_STEPS):
        if not step(rate, f"ramp{i}"):
            high = rate
            break
        low = rate
        rate *= RAMP_FACTOR
    if low > 0 and math.isfinite(high):
        for j in range(MAX_REFINE_STEPS):
            if high <= REFINE_RATIO * low:
                break
            mid = math.sqrt(low * high)
            if step(mid, f"refine{j}"):
                low = mid
            else:
                high = mid
    if confirm is not None and low > 0:
        for k in range(MAX_CONFIRM_STEPS):
            if step(confirm_rate(low, k), f"confirm{k}", _confirming(confirm), settles=False):
                break
        else:
            say(f"no confirming step kept up (down to {confirm_rate(low, k):.1f}/s): the "
                f"capacity is the last one's answered rate, {steps[-1].achieved:.1f}/s, NOT "
                "CONFIRMED")
            settle()
    if steps and steps[-1].ok(base_p50(steps)):
        settle()  # the last step was kept up, but near capacity
    return steps


def _no_wait(_: float) -> None:
    pass


def _confirming(confirm: Callable[[float, str], Step]) -> Callable[[float, str], Step]:
    def run(rate: float, tag: str) -> Step:
        st = confirm(rate, tag)
        st.confirming = True
        return st
    return run


def cores_after(cpu_seconds: Callable[[], float], sleep: Callable[[float], Any] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> float:
    """Cores the back office's processes use over the next :data:`QUIET_WINDOW_S`
    (``cpu_seconds()`` as for :func:`settle_quiet`; NaN when it cannot be read)."""
    before, t0 = cpu_seconds(), clock()
    sleep(QUIET_WINDOW_S)
    return (cpu_seconds() - before) / max(clock() - t0, 1e-9)


def settle_quiet(cpu_seconds: Callable[[], float], say: Callable[[str], Any],
                 sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> float:
    """Wait until the back office is quiet: at least :data:`SETTLE_MIN_S`, then until its
    processes used less than :data:`QUIET_CORES` over :data:`QUIET_WINDOW_S`, at most
    :data:`SETTLE_MAX_S`. ``cpu_seconds()`` is the CPU its processes used so far (NaN when
    it cannot be read: then :data:`SETTLE_BLIND_S`). Returns the seconds waited."""
    t0 = clock()
    if not math.isfinite(cpu_seconds()):
        sleep(SETTLE_BLIND_S)
        say(f"settled {SETTLE_BLIND_S:g} s (the back office's CPU is not measured)")
        return clock() - t0
    sleep(SETTLE_MIN_S)
    while True:
        used = cores_after(cpu_seconds, sleep, clock)
        waited = clock() - t0
        if used < QUIET_CORES:
            say(f"settled {waited:.0f} s (back office at {used:.2f} cores)")
            return waited
        if waited >= SETTLE_MAX_S:
            say(f"still busy after {waited:.0f} s ({used:.2f} cores): going on")
            return waited
