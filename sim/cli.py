"""Simulator commands of the `testbed` CLI: ``simulate`` and ``validate``."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from sim.model import limits
from sim.model.scenario import ScenarioError, load_scenario


class FiniteFloat(click.FloatRange):
    """A float flag in a range that also refuses inf and nan (click's FloatRange lets nan by)."""

    name = "finite float"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        x = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(x, param, ctx)


def _precision(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip()
    try:
        x = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a percentage like 5% or a fraction like 0.05",
                                 param_hint="--precision") from None
    if not 0 < x < 1:
        raise click.BadParameter("must be between 0% and 100% (exclusive)",
                                 param_hint="--precision")
    return x


EXIT_UNSTABLE = 3
"""Exit code of ``simulate --strict`` when the scenario saturates a station."""


def _fail(err: ScenarioError) -> None:
    click.echo(f"error: invalid scenario\n{err}", err=True)
    sys.exit(2)


@click.command("simulate")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for summary.json, time series, report.md and plots "
              "[default: reports/<scenario name>].")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Override any scenario field, e.g. --set simulation.duration_s=60 "
              "--set deployments.monolith.services.app.replicas=12 (repeatable; list items by "
              "index or name; the value is YAML).")
@click.option("--seed", type=click.IntRange(0, limits.MAX_SEED), default=None,
              help="Root random seed (same seed, same results).")
@click.option("--replications", "-r", type=click.IntRange(2, 1000), default=None,
              help="Independent replications (confidence intervals come from their spread).")
@click.option("--precision", default=None, metavar="PCT",
              help="Add replications until each operation's p99 95%-CI half-width is within "
              "PCT of its value, e.g. 5%% (capped by simulation.max_replications).")
@click.option("--duration", type=FiniteFloat(min=0, min_open=True, max=limits.MAX_DURATION_S),
              default=None, help="Seconds of simulated time per replication (at most a week, "
              "604800).")
@click.option("--reduce/--no-reduce", default=None,
              help="Simulate one representative partition of identical replicas and shards "
              "(much faster). Round robin: the partition gets every k-th arrival, as each "
              "replica does; random: a Poisson partition; least outstanding: refused (full "
              "size). The run's notes state the approximation.")
@click.option("--architecture", "-a", "architectures", multiple=True,
              help="Only these deployments (by name; repeatable).")
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=None,
              help="Parallel processes for replications [default: number of cores].")
@click.option("--progress/--no-progress", default=True, help="Show a bar of simulated time.")
@click.option("--report/--no-report", default=True, help="Write report.md and PNG plots.")
@click.option("--strict", is_flag=True,
              help="Refuse to run (exit 3) when a station is offered 100% or more of its "
              "capacity at the scenario's peak, and exit 3 after writing the results when a "
              "queue grew through the run. Without it both are warnings.")
def simulate_cmd(scenario: Path, out_dir: Path | None, overrides: tuple[str, ...],
                 seed: int | None, replications: int | None, precision: str | None,
                 duration: float | None, reduce: bool | None, architectures: tuple[str, ...],
                 jobs: int | None, progress: bool, report: bool, strict: bool) -> None:
    """Simulate SCENARIO (a YAML file) and write results and a report.

    Every deployment listed in the file is simulated on identical traffic (common random
    numbers), with independent replications for 95% confidence intervals and an automatic
    warm-up cut (MSER-5).

    Saturation is never silent: before the run every station offered 100% or more of its
    capacity at the peak is named (stderr), after it every station whose queue grew through
    the run; both go to summary.json (meta.saturation), the table below and the report's
    first paragraph. Exit codes: 0 done, 2 invalid scenario or flag, 3 refused or flagged
    unstable under --strict.

    \b
    Examples:
      testbed simulate scenarios/baseline_day.yaml
      testbed simulate scenarios/cup_final.yaml --reduce --out reports/cup_final
      testbed simulate scenarios/baseline_day.yaml --precision 5% -a monolith
      testbed simulate scenarios/baseline_day.yaml --set population.peak_online=400000

    In a notebook: ``sim.run(sim.load_scenario(path))`` returns the same results as pandas
    DataFrames, and ``sim.load_results(out_dir)`` reads a finished run.
    """
    target = _precision(precision)
    extra = list(overrides)
    if seed is not None:
        extra.append(f"simulation.seed={seed}")
    if duration is not None:
        extra.append(f"simulation.duration_s={duration}")
    if reduce is not None:
        extra.append(f"simulation.reduce={str(reduce).lower()}")
    if replications is not None:
        extra.append(f"simulation.replications={replications}")
    try:
        scen = load_scenario(scenario, extra)
    except ScenarioError as err:
        _fail(err)
        return
    from sim.model.load import offered_load
    from sim.reports.report import UNSTABLE, write_report
    from sim.runner import run

    known = [d.name for d in scen.deployments]
    for a in architectures:
        if a not in known:
            raise click.BadParameter(f"no deployment {a!r} in {scenario} (have {known})",
                                     param_hint="--architecture")
    chosen = list(architectures) or known
    hot = [o for o in offered_load(scen) if o.saturated and o.deployment in chosen]
    for o in hot:
        click.echo(f"warning: saturated before the run: {o.text()}; {UNSTABLE}", err=True)
    if hot and strict:
        click.echo(f"error: refusing to simulate {len(hot)} saturated station(s) (--strict)",
                   err=True)
        sys.exit(EXIT_UNSTABLE)
    res = run(scen, precision=target, jobs=jobs, progress=progress,
              deployments=list(architectures) or None)
    out = out_dir or Path("reports") / scen.name
    res.save(out)
    click.echo(_summary_text(res))
    click.echo(_cost_and_paired_text(res))
    from sim.reports.recovery_report import recovery_console_lines

    for line in recovery_console_lines(res):
        click.echo(line)
    if report:
        path = write_report(res, out)
        click.echo(f"report: {path}")
    click.echo(f"results: {out}/summary.json (load in a notebook: sim.load_results({str(out)!r}))")
    if strict and res.meta["saturation"]["unstable"]:
        sys.exit(EXIT_UNSTABLE)


def _summary_text(res: object) -> str:
    from sim.reports.report import UNSTABLE, saturation_lines

    df = res.summary  # type: ignore[attr-defined]
    lines = [f"{'architecture':<16}{'operation':<12}{'rps':>10}{'p50 ms':>10}"
             f"{'p99 ms':>16}{'errors':>9}  SLO"]
    for r in df.itertuples(index=False):
        slo = "" if r.slo_met is None or str(r.slo_met) == "<NA>" else (
            "met" if bool(r.slo_met) else f"MISSED ({r.slo_p99_ms:g})")
        ci = f"±{r.p99_ms_ci:.1f}" if r.p99_ms_ci == r.p99_ms_ci else ""
        lines.append(f"{r.architecture:<16}{r.operation:<12}{r.throughput_rps:>10.0f}"
                     f"{r.p50_ms:>10.2f}{r.p99_ms:>9.2f}{ci:>7}{r.error_rate:>9.2%}  {slo}")
    lines += _stations_text(res)
    meta = res.meta  # type: ignore[attr-defined]
    if (meta.get("saturation") or {}).get("unstable"):
        lines.append(f"UNSTABLE ({UNSTABLE}):")
        lines += [f"  {bit}" for bit in saturation_lines(meta)]
    lines.append(f"replications: {meta['replications']}  warm-up cut (s): "
                 f"{ {k: round(v, 1) for k, v in meta['warmup_s'].items()} }  "
                 f"reduce factor: {meta['reduce_factor']}  wall: {meta['wall_s']} s")
    return "\n".join(lines)


def _cost_and_paired_text(res: object) -> str:
    """Cores and connections per deployment, then the paired differences that are decided."""
    meta = res.meta  # type: ignore[attr-defined]
    df = res.summary  # type: ignore[attr-defined]
    slo_ops = list(dict.fromkeys(df.loc[df["slo_p99_ms"].notna(), "operation"])) or list(
        dict.fromkeys(df["operation"]))
    lines = [f"{'architecture':<16}{'cores':>7}{'conns':>7}"
             + "".join(f"{op + ' p99':>16}" for op in slo_ops)]
    for arch, c in (meta.get("cost") or {}).items():
        p99 = df[df["architecture"] == arch].set_index("operation")["p99_ms"]
        lines.append(f"{arch:<16}{c['cores']:>7}{c['connections']:>7}"
                     + "".join(f"{p99.get(op, float('nan')):>13.2f} ms" for op in slo_ops))
    decided = [p for p in meta.get("paired") or [] if p["better"]]
    if meta.get("paired"):
        lines.append("paired differences (B - A, 95% paired t interval over replications; "
                     "only those excluding zero):")
    for p in decided:
        pair = f"{p['architecture']} - {p['reference']}"
        lines.append(f"  {p['operation']:<11}{p['metric'][:-3]:<5}{pair:<30}"
                     f"{p['difference']:>+10.3f} ±{p['ci']:.3f} ms "
                     f"(unpaired ±{p['unpaired_ci']:.3f})  better: {p['better']}")
    if meta.get("paired") and not decided:
        lines.append("  none: every interval contains zero")
    return "\n".join(lines)


@click.command("sweep")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--vary", "varies", multiple=True, required=True, metavar="PATH=V1,V2,...",
              help="A varied field and its values (repeatable: the grid is the product). PATH "
              "has --set semantics (list items by index or name); join paths with + to move "
              "them together, e.g. deployments.monolith.services.app.replicas+"
              "deployments.hybrid.services.core.replicas=4,8.")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Override a scenario field at every point (repeatable; as in simulate).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for sweep.parquet, sweep.json, sweep.md and plots "
              "[default: reports/<scenario name>-sweep].")
@click.option("--replications", "-r", type=click.IntRange(2, 1000), default=None,
              help="Replications per point [default: the scenario's].")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds of simulated time per replication.")
@click.option("--seed", type=int, default=None, help="Root random seed (same seed, same table).")
@click.option("--reduce/--no-reduce", default=None,
              help="Simulate one representative partition of identical replicas and shards.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:8786",
              help="An existing Dask scheduler [default: $DASK_SCHEDULER_ADDRESS, else a "
              "LocalCluster of one worker process per core, stopped at the end].")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Worker processes of the LocalCluster [default: number of cores].")
@click.option("--progress/--no-progress", default=True, help="Show a bar over points.")
@click.option("--report/--no-report", default=True, help="Write sweep.md and PNG plots.")
def sweep_cmd(scenario: Path, varies: tuple[str, ...], overrides: tuple[str, ...],
              out_dir: Path | None, replications: int | None, duration: float | None,
              seed: int | None, reduce: bool | None, scheduler: str | None,
              workers: int | None, progress: bool, report: bool) -> None:
    """Simulate SCENARIO over a grid of variants on Dask; write a table and the capacity answer.

    Every point simulates every deployment with the same seeds (common random numbers), so
    points and deployments are compared on identical traffic. Writes a tidy table (one row
    per point, deployment, operation and metric, with 95% intervals), the smallest
    configuration meeting every SLO per deployment (by total cores), the load at which each
    deployment first misses an SLO when a population.* field is varied, and a report.

    \b
    Examples:
      testbed sweep scenarios/baseline_day.yaml \\
        --vary deployments.microservices.services.wallet.replicas=2,4,8,16
      testbed sweep scenarios/cup_final.yaml --vary population.peak_online=200000,400000
      testbed sweep scenarios/baseline_day.yaml --vary population.peak_online=100000,200000 \\
        --scheduler tcp://10.0.0.5:8786

    In a notebook: ``sim.load_sweep(out_dir)`` returns the table as a pandas DataFrame.
    """
    from sim.reports.sweep_report import capacity_markdown, points_markdown, write_sweep_report
    from sim.sweep import parse_vary, run_sweep

    extra = list(overrides)
    for flag, value in (("seed", seed), ("duration_s", duration), ("replications", replications)):
        if value is not None:
            extra.append(f"simulation.{flag}={value}")
    if reduce is not None:
        extra.append(f"simulation.reduce={str(reduce).lower()}")
    try:
        dims = [parse_vary(v) for v in varies]
        sweep = run_sweep(scenario, dims, extra, replications=replications, scheduler=scheduler,
                          workers=workers, progress=progress)
    except ScenarioError as err:
        _fail(err)
        return
    except ConnectionError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    out = out_dir or Path("reports") / f"{sweep.meta['scenario']}-sweep"
    sweep.save(out)
    names = [d.name for d in dims]
    click.echo(points_markdown(sweep.table, names))
    click.echo("\n" + capacity_markdown(sweep.meta))
    if report:
        click.echo(f"report: {write_sweep_report(sweep.table, sweep.meta, out)}")
    click.echo(f"table: {out}/sweep.parquet (in a notebook: sim.load_sweep({str(out)!r}))")
CONSOLE_TOP_STATIONS = 3
"""Busiest stations per architecture shown on the console (report.md lists more)."""


def _stations_text(res: object) -> list[str]:
    from sim.reports.report import busiest_stations, is_flagged

    st = res.stations  # type: ignore[attr-defined]
    if st.empty:
        return []
    lines = [f"{'architecture':<16}{'busiest station':<28}{'util':>7}{'wait ms: mean':>15}"
             f"{'p50':>9}{'p99':>16}"]
    for arch in res.architectures:  # type: ignore[attr-defined]
        for r in busiest_stations(st, arch, CONSOLE_TOP_STATIONS).itertuples(index=False):
            p99 = getattr(r, "wait_p99_ms", float("nan"))
            ci = getattr(r, "wait_p99_ms_ci", float("nan"))
            ci_txt = f"±{ci:.2f}" if ci == ci else ""
            grow = "  GROWING" if is_flagged(getattr(r, "growing", False)) else ""
            lines.append(f"{arch:<16}{r.station:<28}{r.utilisation:>7.1%}{r.mean_wait_ms:>15.2f}"
                         f"{getattr(r, 'wait_p50_ms', float('nan')):>9.2f}{p99:>9.2f}{ci_txt:>7}"
                         f"{grow}")
    return lines


@click.command("validate")
@click.option("--analytic", is_flag=True, help="Compare the engine with queueing formulas "
              "(M/M/1, M/M/c Erlang C, open Jackson network, closed network by exact MVA, "
              "the fluid recovery of a hung station).")
@click.option("--quick", is_flag=True, help="Fewer customers per case (a smoke check).")
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=None,
              help="Parallel processes for replications.")
@click.option("--seed", type=click.IntRange(0, limits.MAX_SEED), default=7, show_default=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the comparison table as CSV.")
def validate_cmd(analytic: bool, quick: bool, jobs: int | None, seed: int,
                 csv_path: Path | None) -> None:
    """Check the simulator against theory; exit 1 when any case fails.

    A case passes when the simulated mean is within 3% of the formula (the fluid check of a
    failure: 10%) or the formula lies inside the simulated 95% confidence interval.
    Utilisations 0.5, 0.8 and 0.95.
    """
    if not analytic:
        raise click.UsageError("choose what to validate against: --analytic "
                               "(measurements of the reference back office come later)")
    from sim.analysis.validate import cases, evaluate

    table = evaluate(cases(quick=quick, seed=seed), jobs=jobs,
                     progress=lambda name: click.echo(f"  simulating {name} ...", err=True))
    click.echo(f"{'case':<28}{'metric':<28}{'theory':>11}{'simulated':>11}{'±95%':>9}"
               f"{'error':>8}  result")
    for r in table.itertuples(index=False):
        click.echo(f"{r.case:<28}{r.metric:<28}{r.theory:>11.4g}{r.simulated:>11.4g}"
                   f"{r.ci95:>9.3g}{r.rel_error:>8.2%}  {'pass' if r._6 else 'FAIL'}")
    if csv_path is not None:
        table.to_csv(csv_path, index=False)
    failed = int((~table["pass"]).sum())
    click.echo(f"{len(table) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def register(group: click.Group) -> None:
    """Attach the simulator commands to the top-level `testbed` group."""
    group.add_command(simulate_cmd)
    group.add_command(sweep_cmd)
    group.add_command(validate_cmd)
