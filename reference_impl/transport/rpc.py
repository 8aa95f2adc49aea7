"""HTTP RPC between services: ``POST /rpc/{method}`` with a JSON object of arguments.

The answer is the method's JSON result (200), or the public error body with its 4xx status
(re-raised on the caller's side as the same :class:`WalletError`, so the gateway answers
exactly what the monolith would). A component that does not answer is ServiceUnavailable.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.metrics import Registry
from reference_impl.services.ports import ServiceUnavailable

RpcMethod = Callable[[dict[str, Any]], Awaitable[Any]]
Lifespan = Callable[[], Awaitable[None]]
CONNECT_RETRIES = 3


class RpcClient:
    """Keep-alive pool to one service; ``call`` is one HTTP round trip."""

    def __init__(
        self, service: str, base_url: str, *, timeout: float = 10.0, max_connections: int = 256,
        token: str = "",
    ) -> None:
        self.service, self.base_url = service, base_url.rstrip("/")
        self._headers = {"content-type": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=2.0),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
        )

    async def call(self, method: str, **kwargs: Any) -> Any:
        """Invoke ``method``; WalletError as the service raised it, else ServiceUnavailable.

        Only a refused connection (nothing was sent) is retried, after a short pause.
        """
        body = orjson.dumps(kwargs)
        for attempt in range(CONNECT_RETRIES):
            try:
                response = await self._http.post(
                    f"/rpc/{method}", content=body, headers=self._headers,
                )
                break
            except httpx.ConnectError as exc:
                if attempt == CONNECT_RETRIES - 1:
                    raise ServiceUnavailable(self.service, f"connect: {exc}") from exc
                await asyncio.sleep(0.05 * (attempt + 1))
            except httpx.HTTPError as exc:  # sent, but no answer: the outcome is unknown
                raise ServiceUnavailable(self.service, f"{type(exc).__name__}") from exc
        return _result(self.service, response)

    async def health(self) -> dict[str, Any]:
        """The service's /health body, or ``{"status": "down"}``."""
        try:
            response = await self._http.get("/health", timeout=2.0)
            data: dict[str, Any] = response.json()
            return {**data, "url": self.base_url}
        except (httpx.HTTPError, ValueError) as exc:
            return {"status": "down", "url": self.base_url, "reason": type(exc).__name__}

    async def close(self) -> None:
        """Close the pool."""
        await self._http.aclose()


def _result(service: str, response: httpx.Response) -> Any:
    if response.status_code == 200:
        return orjson.loads(response.content)
    if 400 <= response.status_code < 500:
        try:
            err = orjson.loads(response.content)["error"]
            raise WalletError(ErrorCode(err["code"]), str(err["message"]))
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
            pass
    raise ServiceUnavailable(service, f"status {response.status_code}")


class _Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def rpc_app(
    service: str, methods: dict[str, RpcMethod], *, metrics: Registry | None = None,
    startup: Lifespan | None = None, shutdown: Lifespan | None = None, token: str = "",
) -> Starlette:
    """A service process's app: ``POST /rpc/{method}``, ``GET /health``, ``GET /metrics``.

    ``startup``/``shutdown`` run in the lifespan (open storage, start consumers...). With a
    ``token``, ``/rpc`` answers 401 unless sent ``Authorization: Bearer
    <token>`` (the supervisor gives each deployment a fresh one): a process on the same host
    cannot call the wallet around the public API's checks (``/metrics`` and ``/health`` stay
    readable on the internal port, which listens on 127.0.0.1 only).
    """
    registry = metrics or Registry()
    started_at = time.time()
    expected = f"Bearer {token}".encode()

    def allowed(request: Request) -> bool:
        given = request.headers.get("authorization", "").encode()
        return not token or hmac.compare_digest(given, expected)

    async def rpc(request: Request) -> Response:
        name = str(request.path_params["method"])
        started = time.perf_counter()
        method = methods.get(name)
        try:
            if not allowed(request):
                raise WalletError(ErrorCode.UNAUTHENTICATED, "internal token required")
            if method is None:
                raise WalletError(ErrorCode.NOT_FOUND, f"{service} has no method {name}")
            try:
                kwargs = orjson.loads(await request.body())
            except orjson.JSONDecodeError as exc:
                raise WalletError(ErrorCode.VALIDATION_ERROR, "body is not JSON") from exc
            if not isinstance(kwargs, dict):
                raise WalletError(ErrorCode.VALIDATION_ERROR, "body must be a JSON object")
            response = _Json(await method(kwargs))
        except WalletError as err:
            response = _Json(err.to_json(), status_code=err.http_status)
        registry.request_seconds.observe(time.perf_counter() - started, "RPC", name)
        registry.responses.inc("RPC", name, str(response.status_code))
        return response

    async def health(request: Request) -> Response:
        return _Json({"status": "ok", "service": service, "pid": os.getpid(),
                      "uptime_s": round(time.time() - started_at, 3)})

    async def metrics_text(request: Request) -> Response:
        return Response(registry.expose(), media_type="text/plain; version=0.0.4")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if startup is not None:
            await startup()
        try:
            yield
        finally:
            if shutdown is not None:
                await shutdown()

    return Starlette(routes=[
        Route("/rpc/{method}", rpc, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
    ], lifespan=lifespan)
