"""``testbed load``: drive a running back office with a scenario's players and write the
measurement in the simulator's results schema (attached to ``testbed`` by testbed/cli.py)."""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from loadgen.client import parse_target
from loadgen.limits import DEFAULT_MAX_IN_FLIGHT, DEFAULT_PLAYERS, MAX_PROCESSES
from loadgen.signing import ENV_VAR, CredentialsError, load_credentials
from sim.model.scenario import Scenario, ScenarioError, load_scenario

# The generators (numpy, pandas, uvloop, locust) are imported inside the commands, so that
# every other `testbed` command (serve above all) starts without them.


def register(group: click.Group) -> None:
    """Attach the load commands to the ``testbed`` group."""
    group.add_command(load)
    group.add_command(calibrate)


def _finite_positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter("must be a positive finite number", ctx, param)
    return value


def _database(ctx: click.Context, param: click.Parameter, value: str | None
              ) -> tuple[str | None, str | None]:
    """``--database NAME`` or ``--database postgresql://user@host:port/NAME``: (name, URL)."""
    if value is None:
        return None, None
    if "://" in value:
        url = urlsplit(value)
        name = url.path.strip("/")
        if url.scheme not in ("postgresql", "postgres") or not name or "/" in name:
            raise click.BadParameter(
                "must be a database name or a postgresql://user@host:port/NAME URL", ctx, param)
        return name, value
    if not value.strip() or "/" in value:
        raise click.BadParameter("must be a database name or a postgresql:// URL", ctx, param)
    return value, None


@click.command()
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", default="http://127.0.0.1:8000", show_default=True,
              help="base URL of the running back office (`testbed serve`)")
@click.option("--duration", "duration_s", default=30.0, show_default=True, type=float,
              callback=_finite_positive, help="measured seconds (set-up of players excluded)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder for summary.json, time series, report.md and plots")
@click.option("--rate", type=float, default=None, callback=_finite_positive,
              help="OPEN LOOP: requests per second, Poisson arrivals sent at their intended "
                   "times; latency from the intended time into HDR histograms")
@click.option("--users", type=click.IntRange(1, 100_000), default=None,
              help="CLOSED LOOP: locust FastHttpUser users, each waiting for its answer")
@click.option("--workers", type=click.IntRange(0, 256), default=0, show_default=True,
              help="closed loop: a locust master and N worker processes on this machine "
                   "(0: users run in this process)")
@click.option("--shape", is_flag=True,
              help="closed loop: replay the scenario's online curve and spikes over the "
                   "simulated window, compressed into --duration (--users is the peak)")
@click.option("--spawn-rate", type=float, default=None, callback=_finite_positive,
              help="closed loop: users started per second [default: all within 1 s]")
@click.option("--max-in-flight", type=click.IntRange(1, 1_000_000),
              default=DEFAULT_MAX_IN_FLIGHT, show_default=True,
              help="open loop: outstanding requests beyond which arrivals are skipped "
                   "(counted and reported, never sent late)")
@click.option("--processes", type=click.IntRange(1, MAX_PROCESSES), default=1,
              show_default=True,
              help="open loop: generator processes sharing the rate (histograms merged)")
@click.option("--lead-in", "lead_in_s", type=click.FloatRange(0, 3600), default=0.0,
              show_default=True,
              help="open loop: seconds of the same arrivals sent first and not measured (the "
                   "window starts on a back office already at the rate)")
@click.option("--players", type=click.IntRange(1, 10_000_000), default=DEFAULT_PLAYERS,
              show_default=True, help="players created and funded before measuring")
@click.option("--credentials", type=click.Path(dir_okay=False), default=None,
              help=f"credentials YAML (providers/operators/staff) [default: ${ENV_VAR}; "
                   "none: no auth headers]")
@click.option("--architecture", default="measured", show_default=True,
              help="label of the system under test in the results (e.g. monolith)")
@click.option("--seed", type=click.IntRange(0, 2**31), default=1, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="override a scenario field, as in `testbed simulate`")
def load(scenario: str, target: str, duration_s: float, out_dir: str, rate: float | None,
         users: int | None, workers: int, shape: bool, spawn_rate: float | None,
         max_in_flight: int, processes: int, lead_in_s: float, players: int,
         credentials: str | None, architecture: str, seed: int,
         overrides: tuple[str, ...]) -> None:
    """Drive a running back office with SCENARIO's players; write a measured run that
    `sim.load_results(DIR)`, report.md and the notebook read like a simulated one.

    \b
    Players behave as the scenario says: its operation mix, bet sizes and whale share;
    rounds of bet then win or rollback; balance reads, deposits, withdrawals. Each is
    created and funded before the measured window; every money request has a fresh
    transaction id, and a retry (503 or lost connection) reuses it.

    \b
    Two ways to load (give exactly one):
      --rate R    open loop: Poisson arrivals at R/s whatever the server does; latency
                  counted from the intended send time, so queueing cannot hide
      --users N   closed loop (locust FastHttpUser): N users each waiting for its answer;
                  --workers N for locust's master + worker processes, --shape to replay
                  the scenario's curve
    The generator measures its own CPU and send lag and marks a saturated run (its
    figures are then the generator's limit, not the server's).

    \b
    Examples:
      testbed load scenarios/baseline_day.yaml --rate 300 --duration 30 --out reports/m300
      testbed load scenarios/baseline_day.yaml --users 50 --workers 2 --out reports/u50
    """
    if (rate is None) == (users is None):
        raise click.UsageError("give exactly one of --rate (open loop) or --users (closed loop)")
    if rate is not None and (workers or shape or spawn_rate):
        raise click.UsageError("--workers, --shape and --spawn-rate are closed-loop options "
                               "(use --users); the open loop scales with --processes")
    if users is not None and lead_in_s:
        raise click.UsageError("--lead-in is an open-loop option (use --rate); closed-loop "
                               "users ramp up with --spawn-rate")
    if users is not None and processes != 1:
        raise click.UsageError("--processes is an open-loop option; closed loop uses --workers")
    try:
        host, port, _ = parse_target(target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--target") from exc
    try:
        sc = load_scenario(scenario, list(overrides))
        creds = load_credentials(credentials)
    except (ScenarioError, CredentialsError) as exc:
        raise click.ClickException(str(exc)) from exc
    from loadgen import run
    from loadgen.behaviour import BehaviourError
    from loadgen.openloop import LoadError

    plan = run.Plan(scenario=sc, target=target, host=host, port=port, duration_s=duration_s,
                    players=players, seed=seed, credentials=creds, architecture=architecture,
                    prefix=f"lg{secrets.token_hex(4)}-")
    _check_reachable(target)
    started = time.perf_counter()
    try:
        if rate is not None:
            results = run.open_loop(plan, rate, max_in_flight, processes, lead_in_s)
        else:
            assert users is not None
            results = run.closed_loop(plan, users, workers, shape, spawn_rate)
    except (LoadError, BehaviourError) as exc:
        raise click.ClickException(str(exc)) from exc
    report = run.save(results, Path(out_dir))
    click.echo(run.describe(results), err=True)
    click.echo(f"wrote {Path(out_dir) / 'summary.json'} and {report} "
               f"({time.perf_counter() - started:.0f} s)", err=True)


def _check_reachable(target: str) -> None:
    import httpx

    try:
        httpx.get(f"{target.rstrip('/')}/health", timeout=5)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {target}/health: {exc} "
                                   "(is `testbed serve` running?)") from exc


def _rates(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter("expected rates like 20,60,150", ctx, param) from None
    if not rates or any(not (math.isfinite(r) and r > 0) for r in rates):
        raise click.BadParameter("every rate must be a positive finite number", ctx, param)
    return tuple(sorted(rates))


def _rates_or_auto(ctx: click.Context, param: click.Parameter, value: str
                   ) -> tuple[float, ...] | None:
    """``auto`` (None: the caller ramps to the capacity) or rates like 20,60,150."""
    return None if value.strip().lower() == "auto" else _rates(ctx, param, value)


@click.command()
@click.option("--target", default="http://127.0.0.1:8000", show_default=True,
              help="base URL of the running back office, on this machine")
@click.option("--topology", type=click.Choice(["monolith", "microservices", "hybrid"]),
              required=True, help="how the running back office is deployed")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="the calibrated scenario (YAML) to write")
@click.option("--scenario", "base", default="scenarios/baseline_day.yaml", show_default=True,
              type=click.Path(exists=True, dir_okay=False),
              help="scenario giving the operations, their mix, population and SLOs")
@click.option("--rates", default="20,60,150", show_default=True, callback=_rates,
              help="load levels, requests/s of one operation at a time")
@click.option("--use-rate", type=float, default=None, callback=_finite_positive,
              help="level whose demands the scenario uses [default: the middle one]")
@click.option("--mix-rates", default="auto", show_default=True, callback=_rates_or_auto,
              help="rates of the whole mix measured after the operations: CPU per request "
                   "against load (cpu_by_rate), the host (generator, other processes, "
                   "stalls) and the off-CPU wait at each rate; auto: a ramp finds the "
                   "capacity and the mix runs at 10, 30, 55, 70, 80, 90 and 100% of it")
@click.option("--mix-seconds", type=float, default=60.0, show_default=True,
              callback=_finite_positive,
              help="measured seconds per mix level (stalls are rare: a minute's count, not a "
                   "few seconds'; the predicted-against-measured results used 60)")
@click.option("--start-rate", type=float, default=50.0, show_default=True,
              callback=_finite_positive, help="first rate of the auto ramp (x1.5 a step)")
@click.option("--refine", type=click.IntRange(0, 10), default=2, show_default=True,
              help="mix levels added after the others, each halfway between the two "
                   "neighbours that disagree most (p99 over 1.6x apart, or stalls over "
                   "0.5/s apart): the model interpolates between levels")
@click.option("--seconds", type=float, default=4.0, show_default=True,
              callback=_finite_positive, help="measured seconds per operation and level")
@click.option("--fit-rounds", type=click.IntRange(0, 10), default=3, show_default=True,
              help="rounds of the off-CPU fit (each simulates every mix level once; the "
                   "round closest to the measured p50s is kept; 0: the waits as measured)")
@click.option("--reference-seconds", type=click.FloatRange(0, 600), default=5.0,
              show_default=True,
              help="measured seconds of the reference window before each mix level (the mix "
                   "at the lowest mix rate: the machine's speed, which testbed validate "
                   "measures again before each level to correct for the machine's drift); "
                   "0: none")
@click.option("--players", type=click.IntRange(1, 100_000), default=DEFAULT_PLAYERS,
              show_default=True,
              help="players per measured run (new ones each run), at least one per 0.4 "
                   "requests/s of a mix level: few players at thousands of requests/s each "
                   "hold far more history than real ones")
@click.option("--database", default=None, metavar="NAME|URL", callback=_database,
              help="PostgreSQL database the back office uses (its backends on this machine "
                   "are accounted as the database: a db demand per operation); as a "
                   "postgresql:// URL, each mix level starts just after a CHECKPOINT")
@click.option("--credentials", type=click.Path(dir_okay=False), default=None,
              help=f"credentials YAML [default: ${ENV_VAR}]")
@click.option("--from-levels", "from_levels", type=click.Path(exists=True, dir_okay=False),
              default=None,
              help="build the scenario from an earlier calibration's FILE.levels.json instead "
                   "of measuring (no load is sent: a changed model, the same measurements)")
def calibrate(target: str, topology: str, out_file: str, base: str, rates: tuple[float, ...],
              use_rate: float | None, mix_rates: tuple[float, ...] | None,
              mix_seconds: float, start_rate: float, refine: int, seconds: float,
              fit_rounds: int, reference_seconds: float, players: int,
              database: tuple[str | None, str | None],
              credentials: str | None, from_levels: str | None) -> None:
    """Measure each operation's CPU per request on each process of a running back office,
    at several load levels, and write a scenario with those demands.

    \b
    Each operation runs alone (open loop) at each rate for --seconds; the CPU each server
    process spent (psutil) is divided by the requests answered. Then the whole mix runs at
    each --mix-rates (auto: 10/30/55/70/80/90/100% of the capacity a ramp finds): the server's CPU
    per request against load becomes each service's cpu_by_rate, and the machine becomes
    the deployment's host (its cores; the load generator's CPU, fixed and per request; the
    other processes' CPU; its stalls as pauses). What a request waited off the CPU at each
    mix level becomes an external wait per operation against the rate, fitted so that the
    model reproduces those levels. The scenario written keeps
    the base scenario's mix, population and SLOs, replaces demands and call paths by the
    measured ones and its deployments by one mirroring what runs; its header lists every
    level measured and the command that produced it.

    \b
    Example:
      testbed serve --db sqlite:///data/cal.db &
      testbed calibrate --topology monolith --out scenarios/calibrated_monolith.yaml
      testbed calibrate --topology monolith --out again.yaml \\
          --from-levels scenarios/calibrated_monolith.levels.json
    """
    from loadgen import calibrate as cal_mod
    from loadgen import run
    from loadgen.behaviour import BehaviourError
    from loadgen.openloop import LoadError

    try:
        host, port, _ = parse_target(target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--target") from exc
    try:
        sc = load_scenario(base)
        creds = load_credentials(credentials)
    except (ScenarioError, CredentialsError) as exc:
        raise click.ClickException(str(exc)) from exc
    if from_levels is not None:
        _rebuild(sc, Path(from_levels), topology, use_rate, out_file, base, fit_rounds)
        return
    if use_rate is not None and use_rate not in rates:
        raise click.BadParameter(f"must be one of --rates {rates}", param_hint="--use-rate")
    _check_reachable(target)
    database, database_url = database
    plan = run.Plan(scenario=sc, target=target, host=host, port=port, duration_s=seconds,
                    players=players, seed=1, credentials=creds, architecture=topology,
                    prefix=f"cal{secrets.token_hex(3)}-", database_url=database_url)
    say = lambda s: click.echo(s, err=True)  # noqa: E731
    try:
        if mix_rates is None:
            ramp_plan = dataclasses.replace(plan, duration_s=min(seconds, mix_seconds))
            mix_rates = cal_mod.auto_mix_rates(ramp_plan, start_rate, ramp_plan.duration_s,
                                               say)
        cal = cal_mod.calibrate(plan, topology, rates, say, database, mix_rates,
                                mix_seconds, refine, reference_seconds)
    except (LoadError, BehaviourError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    chosen = use_rate if use_rate is not None else rates[len(rates) // 2]
    command = (f"testbed calibrate --target {target} --topology {topology} --out {out_file} "
               f"--scenario {base} --rates {','.join(f'{r:g}' for r in rates)} "
               f"--use-rate {chosen:g} --seconds {seconds:g}"
               + f" --mix-rates {','.join(f'{r:g}' for r in mix_rates)}"
               + f" --mix-seconds {mix_seconds:g} --refine {refine} --players {players}"
               + f" --reference-seconds {reference_seconds:g} --fit-rounds {fit_rounds}"
               + (f" --database {database_url or database}" if database else ""))
    _write_calibrated(sc, cal, chosen, command, out_file, say, fit_rounds)


def _calibrated(scenario: Path) -> Any:
    """The calibration's CPU per request by rate and its reference windows
    (:func:`loadgen.calibrate.calibrated_figures`), from the levels written beside a
    calibrated scenario (``FILE.levels.json``); None for a scenario without them."""
    from loadgen import calibrate as cal_mod

    levels = scenario.with_suffix(".levels.json")
    if not levels.is_file():
        return None
    try:
        return cal_mod.calibrated_figures(cal_mod.read_levels(levels))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        click.echo(f"warning: {levels} unreadable ({exc}): no machine drift measured", err=True)
        return None


def _write_calibrated(sc: Scenario, cal: Any, use_rate: float, command: str, out_file: str,
                      say: Any, fit_rounds: int | None = None) -> None:
    """Build, fit and write the calibrated scenario and its levels."""
    from loadgen import calibrate as cal_mod

    raw, header = cal_mod.calibrated_scenario(sc, cal, use_rate, command)
    if cal.mixes:
        errors = cal_mod.fit_off_cpu(raw, cal, say, cal_mod.FIT_ROUNDS if fit_rounds is None
                                     else fit_rounds)
        kept = cal_mod.kept_round(errors)
        header += "".join(f"# off-CPU fit round {i}: {cal_mod.fit_text(*e)}"
                          f"{' <- used' if i == kept else ''}\n" for i, e in enumerate(errors))
    levels = Path(out_file).with_suffix(".levels.json")
    try:
        cal_mod.write_scenario(raw, header, Path(out_file))
        cal_mod.write_levels(cal, levels)
    except ScenarioError as exc:
        raise click.ClickException(f"the calibrated scenario is invalid: {exc}") from exc
    click.echo(f"wrote {out_file} (and every measured level: {levels})", err=True)


def _rebuild(sc: Scenario, levels: Path, topology: str, use_rate: float | None,
             out_file: str, base: str, fit_rounds: int | None = None) -> None:
    """``calibrate --from-levels``: the scenario from saved measurements."""
    from loadgen import calibrate as cal_mod

    try:
        cal = cal_mod.read_levels(levels)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise click.BadParameter(f"{levels}: not a calibration's levels file ({exc})",
                                 param_hint="--from-levels") from exc
    if cal.topology != topology:
        raise click.BadParameter(f"{levels} measured a {cal.topology} back office, not "
                                 f"{topology}", param_hint="--topology")
    rates = sorted({lv.rate for lv in cal.levels})
    if not rates:
        raise click.BadParameter(f"{levels}: no operation level measured",
                                 param_hint="--from-levels")
    chosen = use_rate if use_rate is not None else rates[len(rates) // 2]
    if chosen not in rates:
        raise click.BadParameter(f"must be one of the levels' rates {rates}",
                                 param_hint="--use-rate")
    again = cal_mod.reanalyse(cal)
    if again:
        click.echo(f"stalls and waits found again in {again} mix level(s)' request logs "
                   f"({cal_mod.logs_path(levels)})", err=True)
    command = (f"testbed calibrate --topology {topology} --out {out_file} --scenario {base} "
               f"--use-rate {chosen:g} --from-levels {levels}")
    _write_calibrated(sc, cal, chosen, command, out_file, lambda s: click.echo(s, err=True),
                      fit_rounds)


@click.command("validate")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", default="http://127.0.0.1:8000", show_default=True,
              help="base URL of the running back office, on this machine")
@click.option("--topology", type=click.Choice(["monolith", "microservices", "hybrid"]),
              required=True, help="deployment of the running back office (and of the "
                                  "scenario's deployment simulated against it)")
@click.option("--out", "out_dir", default="reports/validate", show_default=True,
              type=click.Path(file_okay=False), help="validate.md, validate.csv, plot, levels")
@click.option("--start-rate", type=float, default=50.0, show_default=True,
              callback=_finite_positive, help="first rate of the capacity ramp (x1.5 a step)")
@click.option("--step-seconds", type=float, default=5.0, show_default=True,
              callback=_finite_positive,
              help="measured seconds per ramp step; the capacity found is then held four "
                   "times as long to confirm it")
@click.option("--level-seconds", type=float, default=60.0, show_default=True,
              callback=_finite_positive,
              help="measured seconds at 20/50/80/95% of capacity (a p99 of 10 s windows "
                   "swings with one stall; the measured spread validate.md shows narrows "
                   "as one over the root of the length; the results used 60-120)")
@click.option("--sim-seconds", type=float, default=60.0, show_default=True,
              callback=_finite_positive,
              help="simulated seconds per prediction (as long as --level-seconds for a "
                   "p99 compared window for window)")
@click.option("--players", type=click.IntRange(1, 100_000), default=DEFAULT_PLAYERS,
              show_default=True,
              help="players per measured level (new ones each level), at least one per 0.4 "
                   "requests/s of the level")
@click.option("--credentials", type=click.Path(dir_okay=False), default=None,
              help=f"credentials YAML [default: ${ENV_VAR}]")
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=None,
              help="parallel processes of the simulations")
@click.option("--database", default=None, metavar="NAME|URL", callback=_database,
              help="PostgreSQL database the back office uses: its backends on this machine "
                   "are watched with the back office (else their CPU reads as the rest of "
                   "the machine's, and the prediction counts it twice); as a postgresql:// "
                   "URL, each level starts just after a CHECKPOINT (a timed one writing "
                   "during a level raised its p99 tenfold here)")
@click.option("--from-measured", "from_measured", default=None,
              type=click.Path(exists=True, file_okay=False),
              help="predict again against an earlier validation's --out DIR (its levels, "
                   "rates and machine background), sending no load")
@click.option("--machine-correction/--no-machine-correction", default=True,
              show_default=True,
              help="when SCENARIO's calibration measured reference windows (its "
                   "FILE.levels.json), measure one before each level too and predict on a "
                   "machine as much slower or faster as the back office's CPU per request "
                   "there says (the machine drifts: one server's capacity read 2,065, 2,657 "
                   "and 2,402/s within an hour); without: the factor is reported only")
def validate_measured(scenario: str, target: str, topology: str, out_dir: str,
                      start_rate: float, step_seconds: float, level_seconds: float,
                      sim_seconds: float, players: int, credentials: str | None,
                      jobs: int | None, database: tuple[str | None, str | None],
                      from_measured: str | None, machine_correction: bool) -> None:
    """Predicted against measured: find the back office's capacity with a stepped open-loop
    ramp, drive it at 20/50/80/95% of it, simulate SCENARIO at the same rates, and report
    the error of each prediction; exit 1 when p50 is off by more than 15% or p99 by more
    than 25% at 20, 50 or 80%. Each measured p50 and p99 carries the 95% interval of windows
    like its level's; a miss predicted inside it is marked, and is still a miss."""
    from loadgen import run
    from loadgen import validate as val
    from loadgen.behaviour import BehaviourError
    from loadgen.openloop import LoadError

    try:
        host, port, _ = parse_target(target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--target") from exc
    try:
        sc = load_scenario(scenario)
        creds = load_credentials(credentials)
        val.deployment_for(sc, topology)
    except (ScenarioError, CredentialsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if from_measured is not None:
        command = (f"testbed validate {scenario} --topology {topology} --out {out_dir} "
                   f"--sim-seconds {sim_seconds:g} --from-measured {from_measured}"
                   + ("" if machine_correction else " --no-machine-correction"))
        try:
            table = val.repredict(sc, topology, Path(from_measured), Path(out_dir),
                                  sim_seconds, jobs, command, lambda s: click.echo(s, err=True),
                                  _calibrated(Path(scenario)), machine_correction)
        except (ValueError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--from-measured") from exc
        misses = val.judged_misses(table)
        click.echo(f"wrote {Path(out_dir) / 'validate.md'}; {misses} judged figure(s) off "
                   "the bar", err=True)
        raise SystemExit(1 if misses else 0)
    _check_reachable(target)
    database, database_url = database
    if database is None and any(name.endswith("_db") for name in sc.demands):
        click.echo("warning: SCENARIO has database demands and no --database was given: the "
                   "database's CPU will read as the rest of the machine's", err=True)
    plan = run.Plan(scenario=sc, target=target, host=host, port=port, duration_s=step_seconds,
                    players=players, seed=1, credentials=creds, architecture=topology,
                    prefix=f"val{secrets.token_hex(3)}-", database=database,
                    database_url=database_url)
    command = (f"testbed validate {scenario} --target {target} --topology {topology} "
               f"--out {out_dir} --start-rate {start_rate:g} --step-seconds {step_seconds:g} "
               f"--level-seconds {level_seconds:g} --sim-seconds {sim_seconds:g}"
               + (f" --database {database_url or database}" if database else "")
               + ("" if machine_correction else " --no-machine-correction"))
    try:
        table = val.run_validation(plan, topology, Path(out_dir), start_rate, step_seconds,
                                   level_seconds, sim_seconds, jobs, command,
                                   lambda s: click.echo(s, err=True),
                                   _calibrated(Path(scenario)), machine_correction)
    except (LoadError, BehaviourError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    misses = val.judged_misses(table)
    click.echo(f"wrote {Path(out_dir) / 'validate.md'}; {misses} judged figure(s) off the bar",
               err=True)
    if misses:
        raise SystemExit(1)
