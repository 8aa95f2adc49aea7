"""`testbed` console script.

This module is the only place that knows both halves of the project: it attaches the
simulator's commands (``sim.cli``), the reference back office's commands
(``reference_impl.cli``) and the load generator's (``loadgen.cli``, which talks to the back
office over HTTP only) to one click group. Neither half imports the other.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="igaming-testbed")
def cli() -> None:
    """Capacity testbed for iGaming back offices (casino and sportsbook).

    \b
    Two halves that check each other:
      simulate   predict latency, throughput and contention of a scenario (discrete-event)
      validate   check the simulator against queueing theory (--analytic)
      serve      start the reference back office (monolith | microservices | hybrid)
      load       drive a running back office with a scenario's players (open or closed loop)
      ledger     verify the reference back office's ledger, rebuild balances from the journal

    \b
    Typical first run:
      testbed simulate scenarios/baseline_day.yaml --out reports/baseline_day
    """


def _attach() -> None:
    from sim.cli import register as register_sim

    register_sim(cli)
    from loadgen.cli import register as register_load

    register_load(cli)
    try:
        from reference_impl.cli import register as register_ref
    except ImportError:  # reference back office not installed in this checkout
        return
    register_ref(cli)


_attach()


def main() -> None:
    """Entry point of the `testbed` console script."""
    cli()
