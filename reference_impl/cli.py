"""``testbed serve``: start the reference back office."""

from __future__ import annotations

import ipaddress
import json
import socket
import sys

import click

from reference_impl.deployments.monolith import ServeConfig, serve_monolith
from reference_impl.http.auth import (
    CREDENTIALS_ENV,
    Credentials,
    CredentialsError,
    credentials_path,
)
from reference_impl.http.guard import (
    DEFAULT_CREDENTIAL_RATE,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PLAYER_RATE,
    EdgeConfig,
)
from reference_impl.services.backoffice import BackOfficeConfig
from reference_impl.transport.broker import DEFAULT_BROKER, check_broker_url


def register(group: click.Group) -> None:
    """Attach the reference back office's commands to the ``testbed`` group."""
    group.add_command(serve)
    group.add_command(ledger)


def _check_db(db: str | None) -> None:
    if db is not None and not db.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise click.BadParameter("must be sqlite:///path or postgresql://...", param_hint="--db")


@click.command()
@click.option("--topology", type=click.Choice(["monolith", "microservices", "hybrid"]),
              default="monolith", show_default=True, help="how the components are deployed")
@click.option("--db", default=None,
              help="sqlite:///path/to/wallet.db or postgresql://user@host:port/dbname "
                   "[default: sqlite under ./data/wallet.db]")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="interface of the public port (internal services use 127.0.0.1)")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="the public port (monolith, gateway or hybrid's main process)")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="server processes of the monolith, or of each stateless service "
                   "(SQLite has a single writer across them; in the monolith each worker "
                   "keeps its own fraud windows: use hybrid for exact async rules)")
@click.option("--broker", default=DEFAULT_BROKER, show_default=True,
              help="broker of the events of microservices/hybrid: redis://... (Redis Streams) "
                   "or nats://host:4222 (NATS JetStream)")
@click.option("--internal-base-port", default=None, type=click.IntRange(1, 65000),
              help="internal services on consecutive ports from here [default: free ports]")
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
@click.option("--credentials", default=None, metavar="FILE",
              help=f"YAML file of the callers' secrets (providers, operators, staff) "
                   f"[default: ${CREDENTIALS_ENV}; none: every route open, loopback only]")
@click.option("--rate-per-credential", default=DEFAULT_CREDENTIAL_RATE, show_default=True,
              type=click.FloatRange(0, 1e9, min_open=True),
              help="requests/s one credential may send (token bucket, 2 s of burst; "
                   "per server process); past it: 429 RATE_LIMITED with Retry-After")
@click.option("--rate-per-player", default=DEFAULT_PLAYER_RATE, show_default=True,
              type=click.FloatRange(0, 1e9, min_open=True),
              help="requests/s about one player, from all callers (same rules)")
@click.option("--max-body-bytes", default=DEFAULT_MAX_BODY_BYTES, show_default=True,
              type=click.IntRange(1, 100 * 1024 * 1024),
              help="largest request body; larger: 413 PAYLOAD_TOO_LARGE, before reading it")
@click.option("--rpc-policy", default=None, type=click.Path(exists=True, dir_okay=False),
              help="YAML mapping of internal-call policy fields to change from the defaults "
                   "(timeouts, retries, circuit breaker, bulkhead: see README) "
                   "[default: the defaults; microservices/hybrid only]")
@click.option("--peer", "peers", multiple=True, metavar="SERVICE=URL",
              help="the public process calls internal SERVICE at URL instead of its own "
                   "port, e.g. through a TCP proxy (testbed drill's latency faults); "
                   "repeatable [microservices/hybrid only]")
def serve(
    topology: str, db: str | None, host: str, port: int, workers: int, broker: str,
    internal_base_port: int | None, concurrency: str, hot_account_shards: int, pool_size: int,
    rules: str | None, log_level: str, credentials: str | None, rate_per_credential: float,
    rate_per_player: float, max_body_bytes: int, rpc_policy: str | None,
    peers: tuple[str, ...],
) -> None:
    """Start the reference back office; Ctrl-C or SIGTERM stops it cleanly.

    \b
    The public API (and /openapi.json) is the same in the three topologies:
      monolith       one process; player, wallet, fraud and analytics call each other
                     in-process, events on an in-process queue
      microservices  a gateway on --port; player, wallet, fraud and analytics services each
                     in its own process on a 127.0.0.1 port, called over HTTP; events
                     (bets, wins, rollbacks, deposits, withdrawals, self-exclusion) go
                     through a broker (--broker: Redis Streams, or NATS JetStream) to the
                     fraud and analytics consumers, at least once, deduplicated by event id;
                     events of operations committed just before a crash are published
                     again when the wallet restarts (a mark in the database says from when)
      hybrid         player and wallet (and the public API) in one process on --port;
                     fraud and analytics in their own processes behind the broker
    Limits and self-exclusion are checked inside the wallet's database transaction in all
    three. In microservices/hybrid this command supervises the services: it starts them,
    waits until each answers /health, restarts one that dies, and stops all of them on
    Ctrl-C; GET /health on the public port reports each service's health.

    \b
    Access (see README "Authentication"): with --credentials FILE (or $TESTBED_CREDENTIALS)
    game providers sign bet/win/rollback with HMAC-SHA256, the operator platform (/players)
    and back-office staff (/fraud, /audit, /analytics, /metrics) send bearer tokens; /health
    and /openapi.json stay open. Without credentials every route is open: allowed only on a
    loopback --host, with a warning.

    \b
    Examples:
      testbed serve
      testbed serve --topology microservices --db postgresql://postgres@127.0.0.1/test
      testbed serve --topology hybrid --broker redis://127.0.0.1:6379/0 --port 8080
    """
    _check_db(db)
    edge = EdgeConfig(credentials=_credentials(credentials, host),
                      credential_rate=rate_per_credential, player_rate=rate_per_player,
                      max_body_bytes=max_body_bytes)
    if rules is not None:
        from reference_impl.rules import RulesEngine, RulesFileError

        try:
            RulesEngine.from_yaml(rules)
        except RulesFileError as exc:
            raise click.BadParameter(str(exc), param_hint="--rules") from exc
    from reference_impl.transport.resilience import DEFAULT_POLICY, CallPolicy

    try:
        policy = DEFAULT_POLICY if rpc_policy is None else CallPolicy.from_yaml(rpc_policy)
    except (ValueError, TypeError, OSError) as exc:
        raise click.BadParameter(str(exc), param_hint="--rpc-policy") from exc
    office = BackOfficeConfig(
        db=db, concurrency=concurrency, house_shards=hot_account_shards,
        jackpot_shards=hot_account_shards, rules=rules, pool_size=pool_size,
    )
    where = f"db: {db or 'sqlite:///data/wallet.db'}, {concurrency}"
    if topology == "monolith":
        if peers:
            raise click.BadParameter("the monolith makes no internal calls",
                                     param_hint="--peer")
        config = ServeConfig(office=office, host=host, port=port, workers=workers,
                             log_level=log_level, edge=edge)
        click.echo(f"serving the monolith back office on http://{host}:{port} ({where})",
                   err=True)
        serve_monolith(config)
        return
    try:
        check_broker_url(broker)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--broker") from exc
    from reference_impl.deployments.distributed import (
        DistributedConfig,
        plan,
        serve_distributed,
    )

    peer_urls = tuple(_peer(p) for p in peers)
    click.echo(f"serving the {topology} back office on http://{host}:{port} "
               f"({where}, broker {broker})", err=True)
    config = DistributedConfig(
        topology=topology, office=office, host=host, port=port, workers=workers,
        broker=broker, internal_base_port=internal_base_port, log_level=log_level,
        edge=edge, rpc_policy=policy, peer_urls=peer_urls,
    )
    try:
        plan(config)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--peer") from exc
    sys.exit(serve_distributed(config))


def _peer(text: str) -> tuple[str, str]:
    """``SERVICE=http://127.0.0.1:PORT`` of ``--peer``."""
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{text!r}: expected SERVICE=http://host:port",
                                 param_hint="--peer")
    return name, url.rstrip("/")


OPEN_WARNING = """\
WARNING: no credentials (--credentials FILE or ${env}): EVERY ROUTE IS OPEN.
Anyone who can reach {host} can move money, read every player's ledger and change limits.
Serving on loopback only; give a credentials file before exposing this server."""


def _loopback(host: str) -> bool:
    """True when ``host`` names only loopback addresses."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0])).is_loopback for i in infos)


def _credentials(given: str | None, host: str) -> str | None:
    """The credentials file to serve with (validated), or None (open, loopback only)."""
    path = credentials_path(given)
    if path is None:
        if not _loopback(host):
            raise click.UsageError(
                f"--host {host} is not loopback: refusing to serve without credentials "
                f"(give --credentials FILE or set {CREDENTIALS_ENV})")
        click.echo(OPEN_WARNING.format(env=CREDENTIALS_ENV, host=host), err=True)
        return None
    try:
        Credentials.load(path)
    except CredentialsError as exc:
        raise click.BadParameter(str(exc), param_hint="--credentials") from exc
    from pathlib import Path

    return str(Path(path).resolve())


_DB_OPTION = click.option(
    "--db", default=None,
    help="sqlite:///path/to/wallet.db or postgresql://user@host:port/dbname "
         "[default: sqlite under ./data/wallet.db]",
)
_JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="print the report as JSON")


@click.group()
def ledger() -> None:
    """Maintain the ledger offline: verify every invariant, rebuild balances from the journal.

    \b
    The journal is the source of truth; balances and each player's chain head are a
    projection of it. verify reads one consistent snapshot and may run under load; rebuild
    keeps writers out while it runs, so run it on a quiet or stopped back office.
    """


@ledger.command()
@_DB_OPTION
@click.option("--full", is_flag=True,
              help="re-check the whole journal from genesis, not only the entries added "
                   "since the last clean audit's checkpoint")
@_JSON_OPTION
def verify(db: str | None, full: bool, as_json: bool) -> None:
    """Re-check the ledger (as GET /audit/verify does); exit 1 on a violation.

    \b
    By default the audit is incremental: entries after each chain's verified checkpoint
    are checked, and every stored balance and chain head against the checkpoint plus those
    entries; a clean audit moves the checkpoint. --full recomputes every chain from genesis
    (finds damage to entries an earlier audit already verified) and, when clean, rewrites
    the checkpoint.

    \b
    Examples:
      testbed ledger verify --db postgresql://postgres@127.0.0.1/wallet
      testbed ledger verify --full
    """
    _check_db(db)
    from reference_impl.maintenance import run_verify

    report = run_verify(db, full=full)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
        click.echo(f"ledger {'ok' if report.ok else 'VIOLATED'}: {counts}")
        if report.first_violation:
            click.echo(f"first violation: {report.first_violation}")
    sys.exit(0 if report.ok else 1)


@ledger.command()
@_DB_OPTION
@click.option("--dry-run", is_flag=True, help="only list what differs; write nothing")
@_JSON_OPTION
def rebuild(db: str | None, dry_run: bool, as_json: bool) -> None:
    """Recompute every balance and chain head from the journal and store them.

    \b
    Lists each stored value that differed from the journal's projection, then writes the
    projection (unless --dry-run) in the same transaction. Refuses, writing nothing, with
    exit 1 when the journal itself is damaged (broken hash chain, malformed transfer, a
    balance below zero along a chain): the journal cannot be trusted then.

    \b
    Examples:
      testbed ledger rebuild --dry-run
      testbed ledger rebuild --db postgresql://postgres@127.0.0.1/wallet
    """
    _check_db(db)
    from reference_impl.maintenance import run_rebuild

    plan = run_rebuild(db, apply=not dry_run)
    if as_json:
        click.echo(json.dumps({**plan.to_json(), "applied": plan.ok and not dry_run},
                              indent=2))
    elif not plan.ok:
        click.echo(f"refused, nothing written: {plan.refusal}")
    else:
        for c in plan.corrections:
            click.echo(f"{c.account} {c.field}: stored {c.stored} -> journal {c.projected}")
        verb = "would correct" if dry_run else "corrected"
        click.echo(f"{plan.entries} journal entries, {len(plan.balances)} accounts, "
                   f"{len(plan.heads)} players: {verb} {len(plan.corrections)} value(s)")
    sys.exit(0 if plan.ok else 1)
