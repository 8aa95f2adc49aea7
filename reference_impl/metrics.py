"""A tiny Prometheus registry: counters and histograms with labels, text exposition format."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Counter:
    """A monotonically increasing count per label set."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the series of ``labels``."""
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def expose(self) -> list[str]:
        """Exposition lines."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for key, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.label_names, key)} {value:g}")
        return lines


class Histogram:
    """Cumulative-bucket histogram per label set (seconds)."""

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self.buckets = tuple(sorted(buckets))
        self.series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., sum, count

    def observe(self, value: float, *labels: str) -> None:
        """Record one observation."""
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, value)] += 1 if value <= self.buckets[-1] else 0
        row[-2] += value
        row[-1] += 1

    def count(self, *labels: str) -> int:
        """Observations recorded for ``labels``."""
        row = self.series.get(labels)
        return 0 if row is None else int(row[-1])

    def expose(self) -> list[str]:
        """Exposition lines (cumulative buckets, +Inf, sum, count)."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, row in sorted(self.series.items()):
            running = 0.0
            for bound, n in zip(self.buckets, row, strict=False):
                running += n
                le = _labels(self.label_names, key, f'le="{bound:g}"')
                lines.append(f"{self.name}_bucket{le} {running:g}")
            inf = _labels(self.label_names, key, 'le="+Inf"')
            lines.append(f"{self.name}_bucket{inf} {row[-1]:g}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {row[-2]:.6f}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {row[-1]:g}")
        return lines


class Registry:
    """The metrics of one process."""

    def __init__(self) -> None:
        self.request_seconds = Histogram(
            "http_request_duration_seconds", "HTTP request latency by route", ("method", "route")
        )
        self.responses = Counter(
            "http_responses_total", "HTTP responses by route and status",
            ("method", "route", "status"),
        )
        self.pool_wait_seconds = Histogram(
            "db_pool_wait_seconds", "time waiting for a database connection", ("db",)
        )
        self.lock_wait_seconds = Histogram(
            "db_lock_wait_seconds", "time waiting for the player's row (or SQLite writer) lock",
            ("db",),
        )
        self.tx_seconds = Histogram(
            "db_transaction_seconds", "money transaction time by kind and path",
            ("kind", "path"),
        )
        self.retries = Counter(
            "db_retries_total", "transactions retried (version conflict, duplicate, deadlock)",
            ("reason",),
        )
        self.db_statements = Counter(
            "db_statements_total", "SQL statements issued, by database and money operation",
            ("db", "op"),
        )
        self.db_round_trips = Counter(
            "db_round_trips_total", "client/server round trips to the database, by operation",
            ("db", "op"),
        )
        self.events = Counter("events_total", "domain events published", ("kind",))
        self.alerts = Counter("fraud_alerts_total", "fraud alerts raised", ("rule_id",))
        self.rpc_rejected = Counter(
            "rpc_rejected_total", "internal calls not sent: bulkhead full (shed) or breaker open",
            ("service", "reason"),
        )
        self.rpc_retries = Counter("rpc_retries_total", "internal calls retried", ("service",))

    def expose(self) -> str:
        """The whole registry in Prometheus text format."""
        lines: list[str] = []
        for metric in (
            self.request_seconds, self.responses, self.pool_wait_seconds,
            self.lock_wait_seconds, self.tx_seconds, self.retries, self.db_statements,
            self.db_round_trips, self.events, self.alerts, self.rpc_rejected, self.rpc_retries,
        ):
            lines.extend(metric.expose())
        return "\n".join(lines) + "\n"
