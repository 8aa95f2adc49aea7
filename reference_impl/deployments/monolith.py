"""The monolith: one process (uvicorn workers configurable), components wired in-process."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace

from starlette.applications import Starlette

from reference_impl.deployments.registry import SERVER_OPTIONS
from reference_impl.http.app import create_app
from reference_impl.http.guard import EdgeConfig
from reference_impl.metrics import Registry, shared_across_workers
from reference_impl.services.backoffice import BackOffice, BackOfficeConfig, build_backoffice

CONFIG_ENV = "TESTBED_SERVE_CONFIG"


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``testbed serve`` needs."""

    office: BackOfficeConfig
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "warning"
    edge: EdgeConfig = field(default_factory=EdgeConfig)

    def to_env(self) -> str:
        """JSON for the worker processes."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        """Read what :meth:`to_env` wrote."""
        data = json.loads(os.environ[CONFIG_ENV])
        return cls(office=BackOfficeConfig(**data.pop("office")),
                   edge=EdgeConfig(**data.pop("edge")), **data)


def monolith_app(config: BackOfficeConfig, edge: EdgeConfig | None = None) -> Starlette:
    """The app of one monolith process (the back office is built at startup)."""

    async def factory(metrics: Registry) -> BackOffice:
        return await build_backoffice(config, metrics)

    return create_app(factory=factory, edge=edge)


def app_from_env() -> Starlette:
    """uvicorn factory used by multi-worker serving."""
    config = ServeConfig.from_env()
    return monolith_app(config.office, config.edge)


def serve_monolith(config: ServeConfig) -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn stops cleanly: lifespan closes the storage)."""
    import uvicorn

    common = {"host": config.host, "port": config.port, "log_level": config.log_level,
              **SERVER_OPTIONS}  # the same options as every process of every topology
    if config.workers <= 1:
        uvicorn.run(monolith_app(config.office, config.edge), **common)  # type: ignore[arg-type]
        return
    # Each worker has its own memory: fraud and analytics follow the database, so every
    # worker sees every worker's events (the same alerts and totals as one worker).
    config = replace(config, office=replace(config.office, follow_database=True))
    os.environ[CONFIG_ENV] = config.to_env()
    with shared_across_workers(config.workers):  # /metrics sums every worker's values
        uvicorn.run(
            "reference_impl.deployments.monolith:app_from_env", factory=True,
            workers=config.workers, **common,  # type: ignore[arg-type]
        )
