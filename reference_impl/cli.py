"""``testbed serve``: start the reference back office."""

from __future__ import annotations

import sys

import click

from reference_impl.deployments.monolith import ServeConfig, serve_monolith
from reference_impl.services.backoffice import BackOfficeConfig


def register(group: click.Group) -> None:
    """Attach the reference back office's commands to the ``testbed`` group."""
    group.add_command(serve)


@click.command()
@click.option("--topology", type=click.Choice(["monolith", "microservices", "hybrid"]),
              default="monolith", show_default=True, help="how the components are deployed")
@click.option("--db", default=None,
              help="sqlite:///path/to/wallet.db or postgresql://user@host:port/dbname "
                   "[default: sqlite under ./data/wallet.db]")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="server processes (SQLite has a single writer across them)")
@click.option("--concurrency", type=click.Choice(["pessimistic", "optimistic"]),
              default="pessimistic", show_default=True,
              help="row locks, or a version check and retry")
@click.option("--hot-account-shards", default=1, show_default=True,
              type=click.IntRange(1, 1024), help="house/jackpot sub-accounts summed on read")
@click.option("--pool-size", default=16, show_default=True, type=click.IntRange(1, 512),
              help="database connections per process (PostgreSQL)")
@click.option("--rules", default=None, type=click.Path(exists=True, dir_okay=False),
              help="rules YAML [default: the packaged default_rules.yaml]")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(
    topology: str, db: str | None, host: str, port: int, workers: int, concurrency: str,
    hot_account_shards: int, pool_size: int, rules: str | None, log_level: str,
) -> None:
    """Start the reference back office; Ctrl-C or SIGTERM stops it cleanly."""
    if db is not None and not db.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise click.BadParameter("must be sqlite:///path or postgresql://...", param_hint="--db")
    if rules is not None:
        from reference_impl.rules import RulesEngine, RulesFileError

        try:
            RulesEngine.from_yaml(rules)
        except RulesFileError as exc:
            raise click.BadParameter(str(exc), param_hint="--rules") from exc
    office = BackOfficeConfig(
        db=db, concurrency=concurrency, house_shards=hot_account_shards,
        jackpot_shards=hot_account_shards, rules=rules, pool_size=pool_size,
    )
    config = ServeConfig(office=office, host=host, port=port, workers=workers,
                         log_level=log_level)
    if topology != "monolith":
        click.echo(f"error: topology {topology!r} is not available yet (only monolith)",
                   err=True)
        sys.exit(2)
    click.echo(f"serving the {topology} back office on http://{host}:{port} "
               f"(db: {db or 'sqlite:///data/wallet.db'}, {concurrency})", err=True)
    serve_monolith(config)
