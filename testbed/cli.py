"""`testbed` console script.

This module is the only place that knows both halves of the project: it attaches the
simulator's commands (``sim.cli``), the reference back office's commands
(``reference_impl.cli``) and the load generator's (``loadgen.cli``, which talks to the back
office over HTTP only) to one click group. Neither half imports the other.
"""

from __future__ import annotations

import inspect

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="igaming-testbed")
def cli() -> None:
    """Capacity testbed for iGaming back offices (casino and sportsbook).

    \b
    Two halves that check each other:
      simulate   predict latency, throughput and contention of a scenario (discrete-event)
      sweep      simulate a grid of variants on Dask: the capacity answer per deployment
      validate   check the simulator against queueing theory (--analytic) or against
                 measurements of the running back office (SCENARIO --target --topology)
      calibrate  measure the back office's demands and write a calibrated scenario
      serve      start the reference back office (monolith | microservices | hybrid)
      load       drive a running back office with a scenario's players (open or closed loop)
      ledger     verify the reference back office's ledger, rebuild balances from the journal
      drill      break the real back office under load (kill, hang, failover...) and measure
                 its recovery

    \b
    Typical first run:
      testbed simulate scenarios/baseline_day.yaml --out reports/baseline_day
    """


def _attach() -> None:
    from sim.cli import register as register_sim

    register_sim(cli)
    from loadgen.cli import register as register_load
    from loadgen.cli import validate_measured

    register_load(cli)
    cli.add_command(_joined_validate(cli.commands["validate"], validate_measured))
    try:
        from reference_impl.cli import register as register_ref
    except ImportError:  # reference back office not installed in this checkout
        return
    register_ref(cli)
    from drills.cli import drill

    cli.add_command(drill)


def _joined_validate(analytic: click.Command, measured: click.Command) -> click.Command:
    """One ``testbed validate``: ``--analytic`` checks the engine against queueing theory
    (sim); ``SCENARIO --target URL --topology T`` checks a scenario against measurements of
    the running back office (loadgen). Options of the same name are shared."""
    names = {p.name for p in analytic.params}
    params = [p for p in measured.params if p.name not in names]
    for p in params:
        if isinstance(p, click.Argument):
            p.required = False
    for p in params:
        if p.name == "topology":
            p.required = False

    @click.pass_context
    def callback(ctx: click.Context, **kw: object) -> object:
        if kw.get("analytic"):
            return ctx.invoke(analytic, **{p.name: kw[p.name] for p in analytic.params
                                           if p.name})
        if kw.get("scenario") is None or kw.get("topology") is None:
            raise click.UsageError("give --analytic, or SCENARIO with --target and --topology")
        return ctx.invoke(measured, **{p.name: kw[p.name] for p in measured.params if p.name})

    help_text = (f"{inspect.cleandoc(analytic.help or '')}\n\n"
                 f"{inspect.cleandoc(measured.help or '')}\n\n\b\nExamples:\n"
                 "  testbed validate --analytic\n"
                 "  testbed validate calibrated.yaml --target http://127.0.0.1:8000 "
                 "--topology monolith")
    return click.Command("validate", params=[*analytic.params, *params], callback=callback,
                         help=help_text, short_help="check the simulator against theory "
                         "(--analytic) or against measurements (SCENARIO --target)")


_attach()


def main() -> None:
    """Entry point of the `testbed` console script."""
    cli()
