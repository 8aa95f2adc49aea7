"""The scenario's load curve, compressed in time, as a number of closed-loop users.

The window replayed is the one the simulator simulates: ``simulation.duration_s`` seconds
from ``simulation.start_hour``. Over it the online share follows ``population.online_curve``
(hourly, linear in between) and each spike multiplies it while active (whatever operations
the spike names: a closed-loop user count cannot raise one operation alone). That window is
compressed into the run's duration and scaled so its peak is ``peak_users``. Locust asks a
``LoadTestShape`` once a second, so features shorter than a second of run time are lost.
"""

from __future__ import annotations

import math

from sim.model.scenario import Scenario

SECONDS_PER_HOUR = 3600.0
PEAK_SEARCH_POINTS = 1000
"""Points of the window scanned for its peak (the scale to ``peak_users``)."""


def online_share(scenario: Scenario, window_s: float) -> float:
    """Share of peak online ``window_s`` seconds into the simulated window, spikes applied."""
    curve = scenario.population.online_curve
    hour = (scenario.simulation.start_hour + window_s / SECONDS_PER_HOUR) % 24.0
    i = math.floor(hour)
    frac = hour - i
    share = curve[i] * (1 - frac) + curve[(i + 1) % 24] * frac
    for sp in scenario.population.spikes:
        if sp.start_s <= window_s < sp.start_s + sp.duration_s:
            share *= sp.multiplier
    return share


def window_peak(scenario: Scenario) -> float:
    """The highest online share over the simulated window (scanned at fine steps)."""
    span = scenario.simulation.duration_s
    return max(online_share(scenario, span * k / PEAK_SEARCH_POINTS)
               for k in range(PEAK_SEARCH_POINTS + 1))


def users_at(scenario: Scenario, t_s: float, run_s: float, peak_users: int,
             peak: float | None = None) -> int:
    """Users ``t_s`` seconds into a run of ``run_s`` seconds replaying the window (at least
    one while the run lasts); ``peak`` is :func:`window_peak`, computed when omitted."""
    span = scenario.simulation.duration_s
    peak = window_peak(scenario) if peak is None else peak
    share = online_share(scenario, span * min(max(t_s, 0.0), run_s) / run_s)
    return max(1, round(peak_users * share / peak))
