"""Host pauses (GC pauses, checkpoints): validation, the paused share of time, the delay they
add at light load, their rate against the load, and their composition with slice stalls."""

from __future__ import annotations

import copy
import math
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
import simpy

from sim.engine.core import Engine
from sim.engine.host import EntryMeter, Host, bracket
from sim.model.scenario import ScenarioError, parse_scenario
from sim.model.topology import HostSpec, PausesSpec, compile_topology, reduce_refusal
from sim.runner import run

BASE: dict[str, Any] = {
    "name": "t",
    "population": {"registered_players": 1000, "peak_online": 1000,
                   "online_curve": [1.0] * 24, "session": {"actions_per_minute": 30},
                   "whales": {"share": 0.0}},
    "simulation": {"duration_s": 20, "replications": 2},
    "operations": {"a": {"weight": 1, "steps": [
        {"component": "a", "cpu": {"kind": "constant", "value_ms": 1.0}}]}},
    "deployments": [{"name": "d", "kind": "monolith", "services": [
        {"name": "a", "components": ["a"], "cores": 4, "workers": 1000}],
        "host": {"cores": 8}}],
}


def _with_pauses(pauses: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["deployments"][0]["host"]["pauses"] = pauses
    return raw


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(("pauses", "field", "reason"), [
    ({"by_rate": [{"rps": 200, "per_s": 1}, {"rps": 100, "per_s": 1}], "durations_ms": [5]},
     "host.pauses.by_rate", "rps must increase strictly"),
    ({"by_rate": [{"rps": 0, "per_s": 1}], "durations_ms": [5]},
     "host.pauses.by_rate[0].rps", "greater than 0"),
    ({"by_rate": [{"rps": 10, "per_s": -1}], "durations_ms": [5]},
     "host.pauses.by_rate[0].per_s", "greater than or equal to 0"),
    ({"by_rate": [{"rps": 10, "per_s": 5000}], "durations_ms": [5]},
     "host.pauses.by_rate[0].per_s", "less than or equal to 1000"),
    ({"by_rate": [{"rps": 10, "per_s": float("nan")}], "durations_ms": [5]},
     "host.pauses.by_rate[0].per_s", "finite"),
    ({"by_rate": [], "durations_ms": [5]}, "host.pauses.by_rate", "at least 1"),
    ({"by_rate": [{"rps": 10, "per_s": 1}], "durations_ms": []},
     "host.pauses.durations_ms", "at least 1"),
    ({"by_rate": [{"rps": 10, "per_s": 1}], "durations_ms": [0.0]},
     "host.pauses.durations_ms[0]", "greater than 0"),
    ({"by_rate": [{"rps": 10, "per_s": 1}], "durations_ms": [5, float("inf")]},
     "host.pauses.durations_ms[1]", "finite"),
    ({"by_rate": [{"rps": 10, "per_s": 1}], "durations_ms": [120_000]},
     "host.pauses.durations_ms[0]", "less than or equal to 60000"),
    ({"by_rate": [{"rps": 10, "per_s": 1}], "durations_ms": [1.0] * 10_001},
     "host.pauses.durations_ms", "at most 10000"),
])
def test_bad_pauses_name_the_field(pauses: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(_with_pauses(pauses))
    assert any(p == f"deployments[0].{field}" and reason in why
               for p, why in err.value.problems), err.value.problems


def test_a_host_with_pauses_is_never_reduced() -> None:
    raw = _with_pauses({"by_rate": [{"rps": 10, "per_s": 1}], "durations_ms": [5]})
    raw["simulation"]["reduce"] = True
    raw["deployments"][0]["services"][0]["replicas"] = 2
    assert "one host" in (reduce_refusal(parse_scenario(raw)) or "")


# ------------------------------------------------------------------ runs

Chunk = namedtuple("Chunk", "t op player amount")


def _run(raw: dict[str, Any], rps: float, duration: float, seed: int
         ) -> tuple[np.ndarray, np.ndarray, Host]:
    """Arrival times and responses (s) of Poisson arrivals at ``rps``, and the host."""
    scen = parse_scenario(raw)
    eng = Engine(compile_topology(scen, scen.deployments[0]), np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1000)
    n = int(rps * duration)
    t = np.cumsum(rng.exponential(1 / rps, n))
    out = eng.run_open([Chunk(t, np.zeros(n, np.int16), np.arange(n), np.zeros(n, np.int64))],
                       duration)
    host = eng.st.host
    assert host is not None
    return out.t, out.latency, host


def test_paused_share_of_time_is_rate_times_mean_duration() -> None:
    # 2 pauses/s of 10 or 30 ms (mean 20 ms): x = 0.04. Pauses never overlap, so their starts
    # are Poisson in the unpaused time: share x / (1 + x) = 3.85 % (x itself up to x^2)
    raw = _with_pauses({"by_rate": [{"rps": 1, "per_s": 2.0}], "durations_ms": [10, 30]})
    duration = 500.0
    shares = []
    for seed in range(6):
        _, _, host = _run(raw, 1.0, duration, seed)
        assert host.pause_count > 0 and host.held_by <= {"pause"}  # no slices here
        shares.append(host.paused_s / duration)
    x = 2.0 * 0.020
    m, se = float(np.mean(shares)), float(np.std(shares, ddof=1) / math.sqrt(len(shares)))
    # 95 % interval over replications (t, 5 d.f. = 2.57); one replication's sd is ~2 %
    assert abs(m - x / (1 + x)) <= 2.57 * se + 1e-4, (m, se, shares)
    assert m == pytest.approx(x, rel=0.08)


def test_at_light_load_a_pause_delays_its_share_of_requests_by_half_its_length() -> None:
    # constant 50 ms pauses at 0.5/s (p D = 2.5 %); 1 ms requests at 20/s on an idle host.
    # An arrival during a pause waits its residual, uniform on [0, D]: mean D / 2. A pause
    # starting during a request (share p x 1 ms = 0.05 %) adds the whole D to it.
    p, d = 0.5, 0.050
    raw = _with_pauses({"by_rate": [{"rps": 1, "per_s": p}], "durations_ms": [d * 1000]})
    _, lat, host = _run(raw, 20.0, 2000.0, seed=4)
    extra = lat - 0.001
    delayed = extra > 1e-9
    share = float(delayed.mean())
    expected_share = p * d / (1 + p * d) + p * 0.001
    # ~1000 delayed requests: binomial sd ~3 %
    assert share == pytest.approx(expected_share, rel=0.12)
    assert float(extra[delayed].mean()) == pytest.approx(d / 2, rel=0.08)
    # a request can meet two pauses at most here (one while it waits, one while served)
    assert float(extra.max()) <= 2 * d + 0.001
    assert host.pause_count == pytest.approx(p * 2000 / (1 + p * d), rel=0.1)


def test_the_pause_rate_follows_the_deployments_request_rate() -> None:
    # 0 pauses/s at 10 rps, 20 at 1010: at a steady 510 rps, 10 pauses/s
    raw = _with_pauses({"by_rate": [{"rps": 10, "per_s": 0}, {"rps": 1010, "per_s": 20}],
                        "durations_ms": [1.0]})
    duration = 60.0
    _, _, host = _run(raw, 510.0, duration, seed=2)
    # ~600 pauses (Poisson sd 4 %) plus the meter's +-4 % read of the rate
    assert host.pause_count / duration == pytest.approx(10.0 / 1.01, rel=0.12)
    _, _, idle = _run(raw, 5.0, duration, seed=2)  # below the first point: none at all
    assert idle.pause_count == 0


class _Member:
    """A CPU station always running one job, remembering the speed the host gave it."""

    n = 1
    cores = 1

    def __init__(self) -> None:
        self.speed = 1.0

    def advance(self) -> None:
        pass

    def set_speed(self, speed: float, force: bool) -> None:
        self.speed = speed


def test_pauses_and_slice_stalls_compose_the_host_runs_only_when_neither_holds_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # slices stall half the time (1 core, 1 job, 1 core of background), pauses of 30 ms come
    # 10 times a second: they often overlap. Each holder's start and end is recorded here
    # independently of the host; after each, the station runs iff no holder is on.
    env = simpy.Environment()
    spec = HostSpec(cores=1, background_cores=1.0, slice_s=0.005,
                    pauses=PausesSpec(rates=(1.0,), per_s=(10.0,), durations_s=((0.030,),)))
    host = Host(spec, EntryMeter())
    member = _Member()
    host.members.append(member)
    on: set[str] = set()
    overlaps = checks = 0
    original = Host._pause

    def recorded(self: Host, by: str, start: bool, now: float) -> None:
        nonlocal overlaps, checks
        original(self, by, start, now)
        (on.add if start else on.discard)(by)
        overlaps += len(on) == 2
        checks += 1
        assert (member.speed == 0.0) == bool(on), (now, by, start, on, member.speed)

    monkeypatch.setattr(Host, "_pause", recorded)
    host.start(env, np.random.default_rng(7))
    env.run(until=60.0)
    assert checks > 1000 and overlaps > 100
    assert host.pause_count > 300


def test_a_run_reports_its_host_pauses() -> None:
    raw = _with_pauses({"by_rate": [{"rps": 1, "per_s": 5.0}], "durations_ms": [10]})
    res = run(parse_scenario(raw), jobs=1)
    notes = [n for n in res.meta["notes"] if "host pauses" in n]
    assert len(notes) == 1 and notes[0].startswith("d: host pauses: "), res.meta["notes"]
    paused = float(notes[0].split(", ")[1].split(" s paused")[0])
    assert paused == pytest.approx(20 * 5.0 * 0.010, rel=0.3)  # 20 s at 5/s of 10 ms
    assert not any(k.startswith("host") for k in res.meta["policies"]["d"])  # not a policy
    assert not any("host pauses" in n for n in run(parse_scenario(BASE), jobs=1).meta["notes"])


def test_a_long_stall_seen_at_one_rate_stays_at_that_rate() -> None:
    # 400 ms stalls measured only at 2,000/s; below 100/s the host pauses with the durations
    # measured at 100/s (5 ms), however many long ones the upper point holds
    raw = _with_pauses({"by_rate": [
        {"rps": 100, "per_s": 2.0, "durations_ms": [5.0]},
        {"rps": 2000, "per_s": 2.0, "durations_ms": [5.0, 400.0]}],
        "durations_ms": [1.0]})
    _, _, host = _run(raw, 50.0, 200.0, seed=3)
    assert host.pause_count > 300
    assert host.paused_s == pytest.approx(0.005 * host.pause_count)


def test_between_two_points_durations_mix_by_position() -> None:
    assert bracket([100.0, 200.0], 150.0, 0.49) == 1
    assert bracket([100.0, 200.0], 150.0, 0.51) == 0
    assert bracket([100.0, 200.0], 50.0, 0.0) == 0
    assert bracket([100.0, 200.0], 500.0, 0.99) == 1
    assert bracket([100.0, 200.0], 100.0, 0.0) == 0
