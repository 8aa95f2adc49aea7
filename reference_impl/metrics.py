"""The metrics of one process, through ``prometheus_client``.

Each :class:`Registry` owns a ``CollectorRegistry``. When ``PROMETHEUS_MULTIPROC_DIR`` is set
(``testbed serve --workers N`` sets it for its worker processes) values live in that folder's
memory-mapped files and :meth:`Registry.expose` sums every worker's, so ``/metrics`` answers
for the whole server whichever worker takes the scrape.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as _PromCounter
from prometheus_client import Histogram as _PromHistogram
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

prometheus_client.disable_created_metrics()  # no *_created series: counts and sums only


def multiprocess() -> bool:
    """True when values are shared between worker processes through files."""
    return bool(os.environ.get(MULTIPROC_ENV))


@contextmanager
def shared_across_workers(workers: int) -> Iterator[None]:
    """For ``workers`` > 1 server processes started inside the block: one fresh folder of
    metric files (``PROMETHEUS_MULTIPROC_DIR``) they share, removed afterwards."""
    if workers <= 1 or multiprocess():
        yield
        return
    folder = tempfile.mkdtemp(prefix="testbed-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


class Counter:
    """A monotonically increasing count per label set."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self.metric = _PromCounter(name, help_text, tuple(labels), registry=registry)
        self.series: dict[tuple[str, ...], Any] = {}  # labels() is the costly part: kept

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the series of ``labels``."""
        child = self.series.get(labels)
        if child is None:
            child = self.series[labels] = self.metric.labels(*labels)
        child.inc(amount)

    def total(self) -> float:
        """Sum over every label set (in this process)."""
        return sum(sample.value for family in self.metric.collect()
                   for sample in family.samples if sample.name.endswith("_total"))


class Histogram:
    """Cumulative-bucket histogram per label set (seconds)."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str],
                 registry: CollectorRegistry, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.label_names = tuple(labels)
        self.metric = _PromHistogram(name, help_text, self.label_names, registry=registry,
                                     buckets=tuple(buckets))
        self.series: dict[tuple[str, ...], Any] = {}

    def observe(self, value: float, *labels: str) -> None:
        """Record one observation."""
        child = self.series.get(labels)
        if child is None:
            child = self.series[labels] = self.metric.labels(*labels)
        child.observe(value)

    def count(self, *labels: str) -> int:
        """Observations recorded for ``labels`` (in this process)."""
        for family in self.metric.collect():
            for sample in family.samples:
                if sample.name.endswith("_count") and tuple(
                        sample.labels.get(n, "") for n in self.label_names) == labels:
                    return int(sample.value)
        return 0


class Registry:
    """The metrics of one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.request_seconds = Histogram(
            "http_request_duration_seconds", "HTTP request latency by route", ("method", "route"),
            r,
        )
        self.responses = Counter(
            "http_responses_total", "HTTP responses by route and status",
            ("method", "route", "status"), r,
        )
        self.pool_wait_seconds = Histogram(
            "db_pool_wait_seconds", "time waiting for a database connection", ("db",), r,
        )
        self.lock_wait_seconds = Histogram(
            "db_lock_wait_seconds", "time waiting for the player's row (or SQLite writer) lock",
            ("db",), r,
        )
        self.tx_seconds = Histogram(
            "db_transaction_seconds", "money transaction time by kind and path",
            ("kind", "path"), r,
        )
        self.retries = Counter(
            "db_retries_total", "transactions retried (version conflict, duplicate, deadlock)",
            ("reason",), r,
        )
        self.db_statements = Counter(
            "db_statements_total", "SQL statements issued, by database and money operation",
            ("db", "op"), r,
        )
        self.db_round_trips = Counter(
            "db_round_trips_total", "client/server round trips to the database, by operation",
            ("db", "op"), r,
        )
        self.events = Counter("events_total", "domain events published", ("kind",), r)
        self.alerts = Counter("fraud_alerts_total", "fraud alerts raised", ("rule_id",), r)
        self.rpc_rejected = Counter(
            "rpc_rejected_total", "internal calls not sent: bulkhead full (shed) or breaker open",
            ("service", "reason"), r,
        )
        self.rpc_retries = Counter("rpc_retries_total", "internal calls retried", ("service",), r)

    def expose(self) -> str:
        """Prometheus text format: this process's values, or every worker's (multiprocess)."""
        if multiprocess():
            merged = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(merged)
            return generate_latest(merged).decode()
        return generate_latest(self.registry).decode()
