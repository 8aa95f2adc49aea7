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


def test_the_hypervisors_steal_is_read_over_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from loadgen import probe

    steal = iter([100.0, 103.5])  # seconds of steal since boot at start and at stop
    monkeypatch.setattr(probe, "host_steal", lambda: next(steal))
    w = CpuWatch([])
    w.start()
    w.stop()
    assert w.steal_s == pytest.approx(3.5)


def test_an_unsteady_level_is_marked_in_the_report() -> None:
    import pandas as pd

    from loadgen.validate import UNSTEADY_STEAL, markdown

    rows = [{"level": lv, "offered_rps": 100.0 * lv, "operation": "bet",
             "measured_requests": 5000, "measured_throughput_rps": 100.0,
             "predicted_throughput_rps": 100.0, "measured_p50_ms": 1.0,
             "predicted_p50_ms": 1.0, "error_p50_ms": 0.0, "measured_p99_ms": 5.0,
             "predicted_p99_ms": 5.0, "error_p99_ms": 0.0,
             "measured_busiest_process_util": 0.5, "predicted_busiest_cpu_util": 0.5,
             "measured_stalls": 0, "longest_stall_ms": 0.0, "steal_cores": steal}
            for lv, steal in ((0.2, 0.0), (0.5, UNSTEADY_STEAL * 4))]
    fit = {"lambda": 1.0, "sigma": 0.1, "kappa": 0.0, "peak_concurrency": float("inf"),
           "peak_throughput": 10.0, "points": 3}
    text = markdown(pd.DataFrame(rows), fit, 100.0, 100.0, "monolith", "x")
    assert "- 20%: 0 stall(s), longest 0 ms; steal 0.00 cores\n" in text
    assert "- 50%: 0 stall(s), longest 0 ms; steal 0.20 cores (**unsteady**)" in text


def test_the_databases_backends_are_watched_with_the_back_office(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # validate without them read the PostgreSQL backends' 0.3 cores as the rest of the
    # machine's, and the prediction counted the database twice (p99 4-8x the measured)
    import httpx

    from loadgen import run
    from loadgen.probe import _label

    me = psutil.Process()
    backend = psutil.Process(me.ppid())
    monkeypatch.setattr(run, "server_processes", lambda port: [me])
    monkeypatch.setattr(httpx, "get", lambda *a, **k: (_ for _ in ()).throw(
        httpx.ConnectError("no")))
    seen: list[str] = []

    def backends(name: str) -> list[psutil.Process]:
        seen.append(name)
        return [backend] if name == "calib" else []

    monkeypatch.setattr(run, "database_processes", backends)
    plan = run.Plan(None, "http://127.0.0.1:9", "127.0.0.1", 9, 1.0, 1, 1, None,  # type: ignore[arg-type]
                    "monolith", "x-", database="calib")
    watch = run.server_watch(plan)
    assert watch is not None and backend in watch.processes
    assert _label(backend, watch.names).startswith(f"{SHARED_PREFIX}:")
    assert run.server_watch(run.Plan(None, "http://127.0.0.1:9", "127.0.0.1", 9, 1.0, 1, 1,  # type: ignore[arg-type]
                                     None, "monolith", "x-")).processes == [me]  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="no PostgreSQL backend serves database 'other'"):
        run.server_watch(run.Plan(None, "http://127.0.0.1:9", "127.0.0.1", 9, 1.0, 1, 1,  # type: ignore[arg-type]
                                  None, "monolith", "x-", database="other"))
    assert seen == ["calib", "other"]
