"""What the rest of the machine wanted, from the back office's CPU watch (loadgen/probe.py)."""

from __future__ import annotations

import psutil
import pytest

from loadgen.probe import SHARED_PREFIX, SPARE_BUSY, CpuWatch


def _watch(used: dict[str, float], waited: dict[str, float], host_busy_s: float) -> CpuWatch:
    w = CpuWatch([])
    w.used, w.waited, w.host_busy_s = used, waited, host_busy_s
    return w


def test_a_quiet_machine_reads_as_what_the_others_used() -> None:
    # 10 s: the server used 4 s of CPU and waited 1.5 s for a core at its wake-ups (the
    # schedstat share formula would read 2 x 5.5 / 4 - 1 = 1.75 cores of others); the
    # machine was busy 5 s in all: the others used (and so wanted) 0.1 core
    cores = psutil.cpu_count() or 1
    w = _watch({"serve": 4.0}, {"serve": 1.5}, host_busy_s=5.0)
    assert SPARE_BUSY * cores > 5.0 / 10
    assert w.besides(10.0) == pytest.approx(0.1)


def test_a_shared_databases_backends_are_not_the_others() -> None:
    w = _watch({"serve": 3.0, f"{SHARED_PREFIX}:1": 2.0}, {"serve": 0.1}, host_busy_s=6.0)
    assert w.besides(10.0) == pytest.approx(0.1)


def test_a_saturated_machine_falls_back_to_the_share_a_core_gave() -> None:
    cores = psutil.cpu_count() or 1
    busy = cores * 10.0  # every core busy all the window: use says nothing of demand
    w = _watch({"serve": 2.0}, {"serve": 2.0}, host_busy_s=busy)
    assert w.besides(10.0) == pytest.approx(cores * 4.0 / 2.0 - 1.0)
