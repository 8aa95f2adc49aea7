"""What the public process's internal-call policies did, second by second: its
``/metrics`` read once a second during the window (calls shed because a dependency's
bulkhead was full, calls refused by an open breaker, retries), as per-second increments.
Shed calls are the sign of a caller's pool to a dependency filling up."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

INTERVAL_S = 1.0
COUNTERS = ("rpc_rejected", "rpc_retries")


def read_counters(text: str) -> dict[str, float]:
    """``name{service,reason}`` -> value of the policy counters in a Prometheus text."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in COUNTERS:
            continue
        for s in family.samples:
            if s.name.endswith("_total"):
                label = "/".join(s.labels[k] for k in ("service", "reason") if k in s.labels)
                out[f"{family.name}:{label}"] = out.get(f"{family.name}:{label}", 0.0) + s.value
    return out


class PolicySampler:
    """Reads ``url/metrics`` (as staff) every second from :meth:`start` to :meth:`stop`."""

    def __init__(self, url: str, token: str, t0: float) -> None:
        self.url, self.headers, self.t0 = url, {"Authorization": f"Bearer {token}"}, t0
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(timeout=INTERVAL_S) as client:
            while not self._stop.is_set():
                t = time.perf_counter() - self.t0
                try:
                    r = client.get(f"{self.url}/metrics", headers=self.headers)
                    if r.status_code == 200:
                        self.samples.append((round(t, 3), read_counters(r.text)))
                except httpx.HTTPError:
                    pass  # the public process is down (a kill): no sample this second
                self._stop.wait(INTERVAL_S)

    def increments(self) -> list[dict[str, Any]]:
        """Per sample, how much each counter grew since the previous one (a restarted
        process starts its counters again from zero: a drop counts as a restart)."""
        out: list[dict[str, Any]] = []
        prev: dict[str, float] = {}
        for t, values in self.samples:
            row: dict[str, Any] = {"t_s": t}
            for k, v in values.items():
                before = prev.get(k, 0.0)
                row[k] = v - before if v >= before else v
            prev = values
            out.append(row)
        return out
