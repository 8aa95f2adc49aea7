"""The results schema shared by the simulator and by measurements of the reference back office.

A :class:`Results` holds four tables and a ``meta`` dict:

* ``summary``: one row per (architecture, operation): throughput, error rate and latency
  percentiles, each with its 95% confidence half-width (``*_ci``, NaN when unknown); when
  some step locks or version-checks rows, also the :data:`CONTENTION_COLUMNS`;
* ``stations``: one row per (architecture, station): utilisation, mean queue, mean wait;
* ``timeseries``: one row per (architecture, replication, t_s bin, operation);
* ``station_timeseries``: one row per (architecture, replication, t_s bin, station);
* ``recovery``: one row per (architecture, fault, operation): recovery figures with 95% half-widths
  (:data:`RECOVERY_COLUMNS`, computed by ``sim.analysis.recovery``); empty without faults.

Columns are checked on construction (a missing one raises :class:`ValueError` naming it) and
cast to canonical dtypes, so a saved and reloaded result equals the original. Extra columns
are kept after the schema's own.

SLO rule for ``summary.slo_met``: True when the upper end of the p99 confidence interval
(``p99_ms + p99_ms_ci``; the point estimate when the half-width is unknown) is at or below
``slo_p99_ms``, False otherwise, NA when there is no target or no estimate. A target is only
claimed as met when the data demonstrate it; :meth:`Results.slo_table` adds the three-way
verdict (met / missed / uncertain when the interval straddles the target).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1

SUMMARY_COLUMNS: tuple[str, ...] = (
    "architecture", "operation", "requests",
    "throughput_rps", "throughput_rps_ci", "error_rate", "error_rate_ci",
    "mean_ms", "mean_ms_ci", "p50_ms", "p50_ms_ci", "p95_ms", "p95_ms_ci",
    "p99_ms", "p99_ms_ci", "p999_ms", "p999_ms_ci",
    "slo_p99_ms", "slo_met", "replications",
)
CONTENTION_COLUMNS: tuple[str, ...] = tuple(
    c for m in ("lock_wait_p50_ms", "lock_wait_p99_ms", "aborts_per_request", "retries_per_request",
                "gave_up_per_request", "lost_ms_per_request") for c in (m, f"{m}_ci"))
"""Optional summary columns of a run whose steps lock or version-check rows (floats; see
``sim.engine.contention.CONTENTION_METRICS``): lock wait p50/p99 per transaction, then per
request the aborts, retries, give-ups and the ms lost to aborts."""
STATION_COLUMNS: tuple[str, ...] = (
    "architecture", "station", "kind", "servers",
    "utilisation", "utilisation_ci", "mean_queue", "mean_queue_ci",
    "mean_wait_ms", "mean_wait_ms_ci",
)
TIMESERIES_COLUMNS: tuple[str, ...] = (
    "architecture", "replication", "t_s", "operation",
    "requests", "errors", "mean_ms", "p50_ms", "p99_ms",
)
STATION_TIMESERIES_COLUMNS: tuple[str, ...] = (
    "architecture", "replication", "t_s", "station", "utilisation", "queue",
)
#: Request outcomes; a request's outcome code is its index here (0 ok). ``error`` = not ok.
OUTCOMES: tuple[str, ...] = ("ok", "failed", "timed_out", "shed")
#: Per-bin input of the recovery metrics (``sim.analysis.recovery``), simulated or measured.
BIN_COLUMNS: tuple[str, ...] = ("t_s", *OUTCOMES, "window_p99_ms")
#: Averaged recovery figures; each gets a ``*_ci`` 95% half-width in the recovery table.
RECOVERY_METRICS: tuple[str, ...] = (
    "detect_s", "resume_s", "slo_restored_s", "drained_s", "failed", "timed_out", "shed",
    "lost_transactions", "retry_amplification", "peak_queue", "replicas_added",
    "availability_before", "availability_fault", "availability_recovery",
    "availability_after", "p99_ok_ms",
)
RECOVERY_COLUMNS: tuple[str, ...] = (
    "architecture", "fault", "operation", "kind", "target", "start_s", "end_s", "slo_p99_ms",
    "window_s",
    "replications", "recovered_share",
    *[c for m in RECOVERY_METRICS for c in (m, f"{m}_ci")],
    "peak_queue_station",
)
STATION_KINDS: frozenset[str] = frozenset(
    {"workers", "cpu", "db_pool", "db_cpu", "db_replica_cpu", "cache_cpu", "lock", "row_lock",
     "broker", "external"}
)

#: SLO percentile labels (as in a scenario's ``slos``) -> summary column.
SLO_COLUMNS: dict[str, str] = {
    "mean": "mean_ms",
    "p50": "p50_ms",
    "p95": "p95_ms",
    "p99": "p99_ms",
    "p99.9": "p999_ms",
    "p999": "p999_ms",
    "p99_9": "p999_ms",
}
_SLO_ORDER = ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "error_rate")
_COLUMN_LABEL = {"mean_ms": "mean", "p50_ms": "p50", "p95_ms": "p95", "p99_ms": "p99",
                 "p999_ms": "p99.9", "error_rate": "error_rate"}

_TEXT = "text"
_FLOAT = "float64"
_INT = "int64"
_BOOL = "boolean"


def _dtypes(columns: tuple[str, ...], text: set[str], ints: set[str],
            bools: frozenset[str] = frozenset()) -> dict[str, str]:
    out = {}
    for c in columns:
        out[c] = _TEXT if c in text else _INT if c in ints else _BOOL if c in bools else _FLOAT
    return out


_SUMMARY_TYPES = _dtypes(SUMMARY_COLUMNS, {"architecture", "operation"}, {"replications"},
                         frozenset({"slo_met"}))
_STATION_TYPES = _dtypes(STATION_COLUMNS, {"architecture", "station", "kind"}, {"servers"})
_TS_TYPES = _dtypes(TIMESERIES_COLUMNS, {"architecture", "operation"},
                    {"replication", "requests", "errors"})
_STS_TYPES = _dtypes(STATION_TIMESERIES_COLUMNS, {"architecture", "station"}, {"replication"})
RECOVERY_TYPES = _dtypes(RECOVERY_COLUMNS, {"architecture", "fault", "operation", "kind",
                                            "target", "peak_queue_station"}, {"replications"})


def _canonical(df: pd.DataFrame, name: str, types: dict[str, str],
               optional: dict[str, str] | None = None) -> pd.DataFrame:
    """Check ``df`` has the schema's columns and cast them; schema columns first, extras kept
    (``optional`` ones cast to their type when present)."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    if df.shape == (0, 0):
        df = pd.DataFrame({c: pd.Series([], dtype=object) for c in types})
    missing = [c for c in types if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")
    extras = [c for c in df.columns if c not in types]
    df = df.loc[:, [*types, *extras]].reset_index(drop=True)
    for col, kind in types.items():
        df[col] = _cast(df[col], f"{name}.{col}", kind)
    for col, kind in (optional or {}).items():
        if col in df.columns:
            df[col] = _cast(df[col], f"{name}.{col}", kind)
    return df


def _cast(s: pd.Series, where: str, kind: str) -> pd.Series:
    if kind in (_FLOAT, _INT) and s.dtype == kind:
        return s
    try:
        if kind == _TEXT:
            if s.isna().any():
                raise ValueError("missing values")
            return s.astype(str)
        if kind == _BOOL:
            return s.astype(object).where(s.notna(), None).astype(_BOOL)
        if kind == _INT:
            vals = pd.to_numeric(s, errors="raise").astype(_FLOAT)
            if vals.isna().any():
                raise ValueError("missing values")
            if not np.all(np.equal(np.mod(vals.to_numpy(), 1.0), 0.0)):
                raise ValueError("values must be whole numbers")
            return vals.astype(_INT)
        return pd.to_numeric(s.astype(object).where(s.notna(), np.nan),
                             errors="raise").astype(_FLOAT)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err


def _jsonable(x: Any) -> Any:
    """Plain JSON value of ``x``: NaN, infinities and NA become null."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | set | frozenset):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if x is None or x is pd.NA or x is pd.NaT:
        return None
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, str):
        return x
    if isinstance(x, pd.Timestamp):
        return x.isoformat()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON: {x!r}")


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [_jsonable(r) for r in df.to_dict(orient="records")]


def _frame(records: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    if not records:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    return pd.DataFrame.from_records(records, columns=columns)


def verdict(value: float, half_width: float, target: float) -> str:
    """``met`` / ``missed`` / ``uncertain`` / ``no data`` for an upper-bound target.

    Met when the whole 95% interval is at or below the target, missed when it is wholly
    above, uncertain when it straddles the target. With an unknown half-width (one
    replication, or a measurement) the point estimate decides.
    """
    if _nan(value) or _nan(target):
        return "no data"
    h = 0.0 if _nan(half_width) else abs(half_width)
    if value + h <= target:
        return "met"
    if value - h > target:
        return "missed"
    return "uncertain"


def slo_met_flag(value: float, half_width: float, target: float) -> bool | None:
    """The ``summary.slo_met`` rule: True if the interval's upper end is within the target,
    False if not, None when there is no target or no estimate."""
    if _nan(value) or _nan(target):
        return None
    return verdict(value, half_width, target) == "met"


def _nan(x: Any) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float | np.floating) and math.isnan(x))


@dataclass
class Results:
    """Results of one simulation run or one measurement, in the shared schema."""

    meta: dict[str, Any]
    summary: pd.DataFrame
    stations: pd.DataFrame
    timeseries: pd.DataFrame = field(default_factory=pd.DataFrame)
    station_timeseries: pd.DataFrame = field(default_factory=pd.DataFrame)
    recovery: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        if not isinstance(self.meta, dict):
            raise ValueError(f"meta: expected a dict, got {type(self.meta).__name__}")
        self.summary = _canonical(self.summary, "summary", _SUMMARY_TYPES,
                                  dict.fromkeys(CONTENTION_COLUMNS, _FLOAT))
        self.stations = _canonical(self.stations, "stations", _STATION_TYPES)
        self.timeseries = _canonical(self.timeseries, "timeseries", _TS_TYPES)
        self.station_timeseries = _canonical(self.station_timeseries, "station_timeseries",
                                             _STS_TYPES)
        self.recovery = _canonical(self.recovery, "recovery", RECOVERY_TYPES)
        bad = sorted(set(self.stations["kind"]) - STATION_KINDS)
        if bad:
            raise ValueError(f"stations.kind: unknown kind(s) {', '.join(bad)} "
                             f"(expected one of {', '.join(sorted(STATION_KINDS))})")

    # ------------------------------------------------------------------ views

    @property
    def architectures(self) -> list[str]:
        """Architectures in the order they appear in the summary (then the stations)."""
        seen = dict.fromkeys([*self.summary["architecture"], *self.stations["architecture"]])
        return list(seen)

    @property
    def operations(self) -> list[str]:
        """Operations in the order they appear in the summary."""
        return list(dict.fromkeys(self.summary["operation"]))

    def slo_targets(self) -> dict[str, dict[str, float]]:
        """Operation -> {summary column: target}, from ``meta["slos"]`` and ``slo_p99_ms``.

        ``meta["slos"]`` maps an operation to percentile targets in ms (``p50``, ``p95``,
        ``p99``, ``p99.9``, also ``mean``) and may hold ``error_budget`` (a fraction), which
        applies to every operation's error rate.
        """
        slos = self.meta.get("slos") or {}
        out: dict[str, dict[str, float]] = {}
        for op, targets in slos.items():
            if op == "error_budget":
                continue
            if not isinstance(targets, dict):
                raise ValueError(f"meta.slos.{op}: expected a mapping of percentile to ms")
            for label, ms in targets.items():
                if label not in SLO_COLUMNS:
                    raise ValueError(f"meta.slos.{op}.{label}: unknown target "
                                     f"(expected one of {', '.join(SLO_COLUMNS)})")
                if not _nan(ms):
                    out.setdefault(op, {})[SLO_COLUMNS[label]] = float(ms)
        for op, target in zip(self.summary["operation"], self.summary["slo_p99_ms"],
                              strict=True):
            if not _nan(target):
                out.setdefault(op, {}).setdefault("p99_ms", float(target))
        budget = slos.get("error_budget")
        if not _nan(budget):
            for op in self.operations:
                out.setdefault(op, {})["error_rate"] = float(budget)
        return out

    def slo_table(self) -> pd.DataFrame:
        """Every SLO target against its prediction, per architecture and operation.

        Columns: architecture, operation, metric (p50, p95, p99, p99.9, mean or error_rate),
        target, value, ci (95% half-width), lower, upper, verdict (met / missed / uncertain /
        no data; see :func:`verdict`). Latencies in ms, error rates as fractions.
        """
        targets = self.slo_targets()
        rows = []
        for r in self.summary.itertuples(index=False):
            ops_targets = targets.get(r.operation, {})
            for col in _SLO_ORDER:
                if col not in ops_targets:
                    continue
                value = float(getattr(r, col))
                ci = float(getattr(r, f"{col}_ci"))
                h = 0.0 if math.isnan(ci) else ci
                rows.append({
                    "architecture": r.architecture, "operation": r.operation,
                    "metric": _COLUMN_LABEL[col], "target": ops_targets[col],
                    "value": value, "ci": ci, "lower": value - h, "upper": value + h,
                    "verdict": verdict(value, ci, ops_targets[col]),
                })
        cols = ["architecture", "operation", "metric", "target", "value", "ci", "lower",
                "upper", "verdict"]
        if not rows:
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})
        return pd.DataFrame(rows, columns=cols)

    def compare(self) -> pd.DataFrame:
        """Architectures side by side: index operation, columns (quantity, architecture) for
        ``p99_ms``, ``p99_ms_ci``, ``throughput_rps`` and ``throughput_rps_ci``."""
        quantities = ["p99_ms", "p99_ms_ci", "throughput_rps", "throughput_rps_ci"]
        archs, ops = self.architectures, self.operations
        wide = self.summary.pivot(index="operation", columns="architecture", values=quantities)
        cols = pd.MultiIndex.from_product([quantities, [a for a in archs
                                                        if a in set(self.summary["architecture"])]],
                                          names=["quantity", "architecture"])
        return wide.reindex(index=ops, columns=cols)

    # ------------------------------------------------------------------ persistence

    def save(self, out_dir: str | Path) -> Path:
        """Write ``summary.json`` (meta, summary and stations; NaN as null), ``summary.csv``,
        ``stations.csv``, ``timeseries.parquet``, ``station_timeseries.parquet`` and
        ``recovery.parquet`` (empty without faults)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        doc = {
            "schema_version": SCHEMA_VERSION,
            "meta": _jsonable(self.meta),
            "summary_columns": list(self.summary.columns),
            "station_columns": list(self.stations.columns),
            "summary": _records(self.summary),
            "stations": _records(self.stations),
        }
        text = json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False)
        (out / "summary.json").write_text(text + "\n", encoding="utf-8")
        self.summary.to_csv(out / "summary.csv", index=False)
        self.stations.to_csv(out / "stations.csv", index=False)
        self.timeseries.to_parquet(out / "timeseries.parquet", index=False)
        self.station_timeseries.to_parquet(out / "station_timeseries.parquet", index=False)
        self.recovery.to_parquet(out / "recovery.parquet", index=False)
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> Results:
        """Read what :meth:`save` wrote (``out_dir`` or its ``summary.json``)."""
        path = Path(out_dir)
        folder = path.parent if path.is_file() else path
        json_path = folder / "summary.json"
        if not json_path.is_file():
            raise FileNotFoundError(f"no summary.json in {folder}")
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{json_path}: schema_version {version!r} is not {SCHEMA_VERSION}")
        frames = {}
        for name, cols in (("timeseries", TIMESERIES_COLUMNS),
                           ("station_timeseries", STATION_TIMESERIES_COLUMNS)):
            p = folder / f"{name}.parquet"
            frames[name] = pd.read_parquet(p) if p.is_file() else pd.DataFrame(columns=cols)
        rec = folder / "recovery.parquet"
        frames["recovery"] = pd.read_parquet(rec) if rec.is_file() else pd.DataFrame()
        try:
            return cls(
                meta=doc["meta"],
                summary=_frame(doc["summary"], doc["summary_columns"]),
                stations=_frame(doc["stations"], doc["station_columns"]),
                **frames,
            )
        except KeyError as err:
            raise ValueError(f"{json_path}: missing key {err}") from err
        except ValueError as err:
            raise ValueError(f"{json_path}: {err}") from err


def load_results(path: str | Path) -> Results:
    """Load a saved run (a folder written by ``testbed simulate --out DIR``)."""
    return Results.load(path)
