"""``testbed drill``: a fault drill on the real back office (attached by testbed/cli.py)."""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from drills.faults import FaultSpecError, check_together, parse_fault
from drills.limits import (
    DEFAULT_HOLD_S,
    DEFAULT_TIMEOUT_S,
    MAX_DURATION_S,
    MAX_FAULTS,
    MAX_LATENCY_MS,
    MAX_RATE_RPS,
    MAX_TIMEOUT_S,
    RECOVERY_WINDOW_S,
)

DEFAULT_SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "baseline_day.yaml"
MAX_PLAYERS = 100_000


def _finite(lo: float, hi: float, lo_open: bool = True) -> Any:
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        above = lo < value if lo_open else lo <= value
        if not (math.isfinite(value) and above and value <= hi):
            raise click.BadParameter(f"must be a finite number in {'(' if lo_open else '['}"
                                     f"{lo:g}, {hi:g}]", ctx, param)
        return value
    return check


@click.command()
@click.option("--topology", type=click.Choice(["monolith", "microservices", "hybrid"]),
              required=True, help="the deployment under drill")
@click.option("--db", type=click.Choice(["postgresql", "sqlite"]), default="postgresql",
              show_default=True, help="its own PostgreSQL cluster, or a SQLite file")
@click.option("--fault", "faults", multiple=True, required=True, metavar="SPEC",
              help="kill:SERVICE@T, hang:SERVICE@T+D, db-failover@T, db-restart@T[+D], "
                   "broker-down@T+D, latency:FROM->TO@T+D:MS (seconds from the window's "
                   "start; repeatable)")
@click.option("--rate", default=100.0, show_default=True, type=float,
              callback=_finite(0, MAX_RATE_RPS), help="open-loop requests per second (Poisson)")
@click.option("--duration", "duration_s", default=30.0, show_default=True, type=float,
              callback=_finite(0, MAX_DURATION_S),
              help="measured seconds (players' set-up excluded)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="results folder (sim.load_results(DIR) reads it)")
@click.option("--replication", type=click.Choice(["sync", "async"]), default="sync",
              show_default=True, help="of the replica a db-failover promotes")
@click.option("--replica-lag-ms", default=0.0, show_default=True, type=float,
              callback=_finite(0, MAX_LATENCY_MS, lo_open=False),
              help="delay the replica's WAL stream this much (a TCP proxy on the replication "
                   "connection): asynchronous failover then loses the writes of that window, "
                   "synchronous commits wait for it")
@click.option("--broker", type=click.Choice(["redis", "nats"]), default="redis",
              show_default=True, help="event broker of microservices/hybrid")
@click.option("--scenario", default=str(DEFAULT_SCENARIO), show_default=True,
              type=click.Path(exists=True, dir_okay=False),
              help="whose players, operation mix and SLOs the drill uses")
@click.option("--players", default=100, show_default=True, type=click.IntRange(1, MAX_PLAYERS),
              help="players created and funded before the window")
@click.option("--timeout", "timeout_s", default=DEFAULT_TIMEOUT_S, show_default=True,
              type=float, callback=_finite(0, MAX_TIMEOUT_S),
              help="an answer later than this counts as timed out")
@click.option("--window", "window_s", default=RECOVERY_WINDOW_S, show_default=True,
              type=float, callback=_finite(0, MAX_DURATION_S),
              help="trailing window (s) of the p99 that must be back under the SLO")
@click.option("--hold", "hold_s", default=DEFAULT_HOLD_S, show_default=True, type=float,
              callback=_finite(0, MAX_DURATION_S),
              help="the p99 counts as back under its target once it stays there this long")
@click.option("--slo-p99-ms", default=None, type=float, callback=_finite(0, 3_600_000),
              help="p99 target (ms) recovery is measured against [default: the scenario's "
                   "bet p99 SLO]")
@click.option("--staff-share", default=0.0, show_default=True,
              type=click.FloatRange(0, 0.5),
              help="share of the arrivals that are back-office staff reading GET "
                   "/fraud/alerts (the synchronous call to fraud in microservices/hybrid)")
@click.option("--predict", "predict_scenario", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="also simulate this scenario (its deployment named like --topology) with "
                   "the drill's faults, rate and duration; predicted and measured recovery "
                   "side by side in the report")
@click.option("--rpc-policy", default=None, type=click.Path(exists=True, dir_okay=False),
              help="internal-call policy YAML for testbed serve (microservices/hybrid)")
@click.option("--seed", default=1, show_default=True, type=click.IntRange(0, 2**31 - 1))
def drill(topology: str, db: str, faults: tuple[str, ...], rate: float, duration_s: float,
          out_dir: str, replication: str, replica_lag_ms: float, broker: str, scenario: str,
          players: int, timeout_s: float, window_s: float, hold_s: float, slo_p99_ms: float | None,
          staff_share: float, predict_scenario: str | None,
          rpc_policy: str | None, seed: int) -> None:
    """Break the real back office under load, on purpose, and measure how it recovers.

    \b
    Starts an environment the drill owns and may break without touching anything else on
    this machine: its own PostgreSQL cluster (initdb in a temporary directory, free ports;
    a streaming replica from pg_basebackup when a fault fails it over), its own Redis or
    NATS server, `testbed serve` of the topology with credentials, and a TCP proxy in front
    of a service a latency fault slows. Drives it with the open-loop generator of
    `testbed load --rate`, injects the faults at their times, checks the ledger, and tears
    everything down (also on Ctrl-C and SIGTERM).

    \b
    Faults (T, D in seconds from the start of the measured window, MS milliseconds):
      kill:SERVICE@T           kill -9 a service (the supervisor restarts it)
      hang:SERVICE@T+D         SIGSTOP, SIGCONT D seconds later
      db-failover@T            kill the primary, promote the replica (--replication)
      db-restart@T[+D]         the database goes away for D s (default 2) and comes back
      broker-down@T+D          the broker stops, restarts D seconds later
      latency:FROM->TO@T+D:MS  MS ms added to the hop FROM->TO (e.g. gateway->wallet)

    \b
    Writes the results in the simulator's schema (summary.json with source: measurement,
    the recovery table), report.md and drill_timeline.png; exit 1 when a ledger check
    failed (audit, ledger verify, a lost acknowledged write with synchronous replication).

    \b
    Examples:
      testbed drill --topology microservices --fault kill:wallet@10 --duration 30 \\
          --rate 100 --out reports/drill_kill_wallet
      testbed drill --topology hybrid --fault db-failover@10 --replication async --out d
      testbed drill --topology monolith --db sqlite --fault db-restart@5+3 --out d
    """
    if len(faults) > MAX_FAULTS:
        raise click.BadParameter(f"at most {MAX_FAULTS} faults", param_hint="--fault")
    try:
        parsed = tuple(parse_fault(f, topology=topology, db=db, duration_s=duration_s)
                       for f in faults)
        check_together(list(parsed))
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from exc
    from sim.model.scenario import ScenarioError, load_scenario

    try:
        sc = load_scenario(scenario)
    except ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from exc
    from drills.procs import DrillError
    from drills.report import write_drill_report
    from drills.run import DrillConfig, run_drill

    cfg = DrillConfig(sc, topology, db, broker, replication, parsed, rate, duration_s, players,
                      timeout_s, window_s, seed, Path(rpc_policy) if rpc_policy else None,
                      slo_p99_ms=slo_p99_ms, staff_share=staff_share, hold_s=hold_s,
                      replica_lag_ms=replica_lag_ms)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    click.echo(f"drill: {topology} over {db}, faults {', '.join(faults)}; "
               f"{rate:g} req/s for {duration_s:g} s", err=True)
    from loadgen.openloop import LoadError

    try:
        result = run_drill(cfg, logs=out / "logs")
    except (DrillError, LoadError) as exc:
        click.echo(f"drill failed: {exc} (servers' logs in {out / 'logs'})", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("drill interrupted: everything it started is stopped", err=True)
        sys.exit(130)
    result.results.meta["command"] = shlex.join(["testbed", *sys.argv[1:]])
    report = write_drill_report(result.results, out)
    result.requests.to_parquet(out / "requests.parquet", index=False)
    if predict_scenario is not None:
        _predict(cfg, result.results, Path(predict_scenario), out, report)
    led = result.ledger
    for r in result.results.recovery.itertuples():
        if r.operation != "all":
            continue
        click.echo(f"  {r.fault}: success resumes {r.resume_s:.2f} s, p99 back under SLO "
                   f"{r.slo_restored_s:.2f} s, failed {r.failed:g}, timed out {r.timed_out:g}")
    click.echo(f"  ledger: {led.acknowledged} acknowledged, {len(led.lost)} lost; audit "
               f"{'ok' if led.audit_ok else 'FAILED'}; ledger verify exit "
               f"{led.ledger_verify_exit}; report {report}")
    sync_loss = led.lost and not (any(f.kind == "db-failover" for f in parsed)
                                  and replication == "async")
    if not led.ok or sync_loss or result.errors:
        sys.exit(1)


def _predict(cfg: Any, measured: Any, scenario: Path, out: Path, report: Path) -> None:
    """Simulate the drill's mirror of ``scenario``; its results in ``out/predicted`` and
    the comparison appended to the report."""
    from drills.predict import predict, side_by_side
    from drills.report import prediction_markdown
    from sim.analysis.recovery import FaultWindow
    from sim.model.scenario import ScenarioError

    windows = [FaultWindow(name=w["name"], kind="", target="", start_s=w["start_s"],
                           end_s=w["end_s"]) for w in measured.meta.get("windows", [])]
    slo = (cfg.slo_operation, cfg.slo_p99_ms) if cfg.slo_p99_ms is not None else None
    failover = any(f.kind == "db-failover" for f in cfg.faults)
    click.echo(f"  predicting with {scenario} ...", err=True)
    try:
        predicted = predict(scenario, cfg.topology, cfg.faults, windows, cfg.rate,
                            cfg.duration_s, cfg.window_s, cfg.hold_s,
                            cfg.replication if failover else None, slo)
    except ScenarioError as exc:
        click.echo(f"prediction failed: {exc}", err=True)
        sys.exit(2)
    predicted.save(out / "predicted")
    table = side_by_side(measured.recovery, predicted.recovery)
    table.to_csv(out / "predicted_vs_measured.csv", index=False)
    reps = int(predicted.recovery["replications"].max()) if len(predicted.recovery) else 0
    with report.open("a") as fh:
        fh.write("\n" + prediction_markdown(table, str(scenario), reps))
    for r in table[table["metric"] == "resume_s"].itertuples():
        click.echo(f"  {r.fault} {r.operation}: success resumes after {r.measured:.2f} s "
                   f"measured, {r.predicted:.2f} s predicted ({r.error:+.0%})")
