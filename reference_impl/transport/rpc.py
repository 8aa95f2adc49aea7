"""HTTP RPC between services: ``POST /rpc/{method}`` with a JSON object of arguments.

The answer is the method's JSON result (200), or the public error body with its 4xx status
(re-raised on the caller's side as the same :class:`WalletError`, so the gateway answers
exactly what the monolith would). A component that does not answer is ServiceUnavailable.
"""

from __future__ import annotations

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
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.metrics import Registry
from reference_impl.runtime import freeze_startup_heap
from reference_impl.services.ports import ServiceUnavailable
from reference_impl.transport.resilience import (
    DEFAULT_POLICY,
    IDEMPOTENT_METHODS,
    MONEY_METHODS,
    SLOW_METHODS,
    Bulkhead,
    CallPolicy,
    CircuitBreaker,
    DependencyRejected,
)

RpcMethod = Callable[[dict[str, Any]], Awaitable[Any]]
Lifespan = Callable[[], Awaitable[None]]
CONNECT_RETRIES = 3
"""Attempts of a non-idempotent call whose connection is refused."""


class _ConnectFailed(ServiceUnavailable):
    """The connection was refused: nothing was sent, any call may be sent again."""


def _retry_idempotent(exc: BaseException) -> bool:
    return isinstance(exc, ServiceUnavailable) and not isinstance(exc, DependencyRejected)


def _retry_connect(exc: BaseException) -> bool:
    return isinstance(exc, _ConnectFailed)


class RpcClient:
    """Keep-alive pool to one service, behind its :class:`CallPolicy`: a bulkhead and a
    circuit breaker around each attempt, retries with backoff and jitter (tenacity) for
    idempotent methods. ``call`` is one HTTP round trip when all goes well."""

    def __init__(
        self, service: str, base_url: str, *, policy: CallPolicy = DEFAULT_POLICY,
        metrics: Registry | None = None, clock: Callable[[], float] = time.monotonic,
        token: str = "",
    ) -> None:
        self.service, self.base_url, self.policy = service, base_url.rstrip("/"), policy
        self.metrics = metrics or Registry()
        self.breaker = CircuitBreaker(policy, clock)
        self.bulkhead = Bulkhead(policy)
        self._timeouts = {  # built once: one per timeout class of method
            slow: httpx.Timeout(policy.slow_timeout_s if slow else policy.timeout_s,
                                connect=policy.connect_timeout_s) for slow in (False, True)}
        self._headers = {"content-type": "application/json"}
        if token:  # the deployment's internal RPC token (rpc_app checks it)
            self._headers["authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(policy.timeout_s, connect=policy.connect_timeout_s),
            limits=httpx.Limits(max_connections=policy.max_concurrent,
                                max_keepalive_connections=policy.max_concurrent),
        )

    async def call(self, method: str, **kwargs: Any) -> Any:
        """Invoke ``method``; WalletError as the service raised it, else ServiceUnavailable
        (:class:`DependencyRejected`, with a Retry-After, when nothing was sent).

        An idempotent method is retried after any ServiceUnavailable but a rejection; the
        others only when the connection was refused (nothing was sent). The first attempt
        runs outside tenacity: building its retry loop costs ~60 us of CPU per call
        (measured, ARCHITECTURE.md), paid only once an attempt has failed."""
        body = orjson.dumps(kwargs)
        idempotent = method in IDEMPOTENT_METHODS
        retryable = _retry_idempotent if idempotent else _retry_connect
        try:
            return await self._attempt(method, body)
        except ServiceUnavailable as exc:
            if not retryable(exc):
                raise
            first: ServiceUnavailable | None = exc
        policy = self.policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + policy.retries if idempotent else CONNECT_RETRIES),
            wait=wait_exponential_jitter(multiplier=policy.backoff_initial_s,
                                         max=policy.backoff_max_s,
                                         jitter=policy.backoff_jitter_s),
            retry=retry_if_exception(retryable), before_sleep=self._count_retry, reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if first is not None:  # attempt 1 is the one that failed above
                    failed, first = first, None
                    raise failed
                return await self._attempt(method, body)
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    async def _attempt(self, method: str, body: bytes) -> Any:
        if not self.bulkhead.try_acquire(method in MONEY_METHODS):
            self.metrics.rpc_rejected.inc(self.service, "shed")
            raise DependencyRejected(self.service, "too many calls in flight (shed)", 1)
        try:
            if not self.breaker.allow():
                self.metrics.rpc_rejected.inc(self.service, "breaker_open")
                raise DependencyRejected(self.service, "circuit open",
                                         self.breaker.retry_after_s())
            try:
                response = await self._http.post(
                    f"/rpc/{method}", content=body, headers=self._headers,
                    timeout=self._timeouts[method in SLOW_METHODS],
                )
            except httpx.ConnectError as exc:  # nothing was sent
                self.breaker.record(failed=True)
                raise _ConnectFailed(self.service, f"connect: {exc}") from exc
            except httpx.HTTPError as exc:  # sent, but no answer: the outcome is unknown
                self.breaker.record(failed=True)
                raise ServiceUnavailable(self.service, f"{type(exc).__name__}") from exc
            self.breaker.record(failed=response.status_code >= 500)
            return _result(self.service, response)
        finally:
            self.bulkhead.release()

    def _count_retry(self, state: RetryCallState) -> None:
        self.metrics.rpc_retries.inc(self.service)

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
        freeze_startup_heap()
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
