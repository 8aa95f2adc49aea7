"""The scenario's curve as closed-loop users, compressed in time."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from loadgen.shape import users_at, window_peak
from sim.model.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
CUP = load_scenario(ROOT / "scenarios" / "cup_final.yaml")


def test_spike_raises_the_users_and_its_peak_is_the_requested_users() -> None:
    sc = load_scenario(ROOT / "scenarios" / "baseline_day.yaml", [
        "simulation.duration_s=100",
        "population.spikes=[{start_s: 50, duration_s: 10, multiplier: 4}]"])
    run = 20.0  # the 100 s window compressed 5x: the spike is at 10-12 s of the run
    peak = window_peak(sc)
    inside, before = users_at(sc, 11.0, run, 100, peak), users_at(sc, 9.0, run, 100, peak)
    assert inside == 100
    assert before == 25
    assert max(users_at(sc, t / 10, run, 100, peak) for t in range(201)) == 100


@given(st.floats(0, 1000), st.integers(1, 500))
def test_users_stay_between_one_and_the_peak(t: float, peak_users: int) -> None:
    n = users_at(CUP, t, 100.0, peak_users)
    assert 1 <= n <= peak_users
