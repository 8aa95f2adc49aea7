"""Entry point of one child process: ``python -m reference_impl.deployments.service_main``.

The supervisor passes the :class:`ChildSpec` as JSON in ``TESTBED_CHILD_SPEC``.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from reference_impl.deployments.registry import SERVER_OPTIONS, workers_for
from reference_impl.deployments.roles import app_for
from reference_impl.deployments.spec import SPEC_ENV, ChildSpec
from reference_impl.metrics import shared_across_workers


def app_from_env() -> Starlette:
    """uvicorn factory: the app of the spec in the environment."""
    return app_for(ChildSpec.from_json(os.environ[SPEC_ENV]))


def main() -> None:
    """Serve the spec's role until SIGTERM/SIGINT (uvicorn shuts down gracefully)."""
    import uvicorn

    spec = ChildSpec.from_json(os.environ[SPEC_ENV])
    workers = workers_for(spec.role, spec.workers)
    with shared_across_workers(workers):  # /metrics sums every worker's values
        uvicorn.run(
            "reference_impl.deployments.service_main:app_from_env", factory=True,
            host=spec.host, port=spec.port, workers=workers, log_level=spec.log_level,
            **SERVER_OPTIONS,
        )


if __name__ == "__main__":
    main()
