"""Validation cases for the host model and load-dependent CPU (part of `testbed validate
--analytic`), each with an exact answer:

* a host with background: one single-core processor-sharing station on a one-core host
  whose other processes want ``b`` cores runs, while busy, at speed 1 / (1 + b): an
  M/M/1-PS queue with service time S (1 + b), mean response S (1 + b) / (1 - rho (1 + b));
* a roomy host (more cores than the station can use, no background) changes nothing:
  M/M/1-PS, S / (1 - rho);
* the load generator on the host: ``client_ms_per_request`` at the arrival rate is a
  background of lambda x client cores, the same formula as the first case;
* load-dependent CPU: a ``cpu_by_rate`` table read at the station's request rate scales the
  demand; with a table that is flat at factor f the queue is M/M/1-PS with service f S, and
  a table through (lambda, f) with a slope gives the same at steady state.
"""

from __future__ import annotations

from typing import Any

from sim.analysis.validate import Case, _base, _exp, _open_rate
from sim.analysis.validate_language import _mean
from sim.model.scenario import parse_scenario

SERVICE_MS = 2.0


def _single(name: str, lam: float, customers: int, reps: int, seed: int,
            host: dict[str, Any] | None = None,
            cpu_by_rate: list[dict[str, float]] | None = None) -> Any:
    raw = _base(name, customers / lam, reps, seed)
    _open_rate(raw, lam)
    raw["operations"] = {"job": {"weight": 1, "steps": [
        {"component": "q", "cpu": _exp(SERVICE_MS)}]}}
    svc: dict[str, Any] = {"name": "q", "components": ["q"], "workers": 100000, "cores": 1}
    if cpu_by_rate is not None:
        svc["cpu_by_rate"] = cpu_by_rate
    dep: dict[str, Any] = {"name": "d", "kind": "monolith", "services": [svc]}
    if host is not None:
        dep["host"] = host
    raw["deployments"] = [dep]
    return parse_scenario(raw, f"validate:{name}")


def _ps(service_ms: float, lam: float) -> float:
    rho = lam * service_ms / 1000.0
    assert rho < 1.0
    return service_ms / (1.0 - rho)


def host_cases(scale: float, seed: int) -> list[Case]:
    """Every case of this module at ``scale`` (1.0 for `testbed validate --analytic`)."""
    cust = int(200_000 * scale)
    lam = 200.0  # rho 0.4 at full speed
    b = 0.5
    client_ms = 2.5  # 200/s x 2.5 ms = 0.5 core of load generator
    f = 0.6
    return [
        Case("host 1 core, background 0.5 core (M/M/1-PS, S x 1.5)", "mean response (ms)",
             _ps(SERVICE_MS * (1 + b), lam),
             _single("host_background", lam, cust, 5, seed + 20,
                     host={"cores": 1, "background_cores": b}), _mean("job")),
        Case("host 4 cores, one 1-core station (M/M/1-PS unchanged)", "mean response (ms)",
             _ps(SERVICE_MS, lam),
             _single("host_roomy", lam, cust, 5, seed + 21, host={"cores": 4}), _mean("job")),
        Case("host 1 core, generator 2.5 ms/request (M/M/1-PS, S x 1.5)",
             "mean response (ms)", _ps(SERVICE_MS * (1 + lam * client_ms / 1000.0), lam),
             _single("host_client", lam, cust, 5, seed + 22,
                     host={"cores": 1, "client_ms_per_request": client_ms}), _mean("job")),
        Case(f"cpu_by_rate flat at {f} (M/M/1-PS, S x {f})", "mean response (ms)",
             _ps(SERVICE_MS * f, lam),
             _single("cpu_flat", lam, cust, 5, seed + 23,
                     cpu_by_rate=[{"rps": 0.0, "factor": f}]), _mean("job")),
        Case(f"cpu_by_rate through ({lam:g}/s, {f}) with a slope (M/M/1-PS, S x {f})",
             "mean response (ms)", _ps(SERVICE_MS * f, lam),
             _single("cpu_slope", lam, cust, 5, seed + 24,
                     cpu_by_rate=[{"rps": lam / 2, "factor": f + 0.1},
                                  {"rps": lam * 1.5, "factor": f - 0.1}]), _mean("job")),
    ]
