"""The Starlette application: every endpoint of the public API, errors, metrics, OpenAPI."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from reference_impl.domain.commands import Bet, Command, Deposit, Rollback, Win, Withdrawal
from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.http.openapi import openapi_document
from reference_impl.http.schemas import (
    BetBody,
    CashBody,
    CreatePlayerBody,
    IdentityBody,
    RollbackBody,
    WinBody,
)
from reference_impl.metrics import Registry
from reference_impl.rules import LimitsRequest
from reference_impl.services.backoffice import BackOffice
from reference_impl.services.ports import ServiceUnavailable

Handler = Callable[[Request], Awaitable[Response]]
Factory = Callable[[Registry], Awaitable[BackOffice]]
Build = Callable[[Any, str], Command]
"""A money command from a validated body and the path's player id ("" if none)."""


class JSON(Response):
    """An orjson response."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(code: ErrorCode, message: str, status: int) -> JSON:
    """The public error body."""
    return JSON({"error": {"code": code.value, "message": message}}, status_code=status)


def _validation(exc: ValidationError) -> WalletError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    return WalletError(ErrorCode.VALIDATION_ERROR, f"{where}: {first.get('msg', 'invalid')}")


async def parse(request: Request, model: type[BaseModel]) -> Any:
    """Parse and validate a JSON body (VALIDATION_ERROR otherwise)."""
    return parse_raw(await request.body(), model)


def parse_raw(raw: bytes, model: type[BaseModel]) -> Any:
    """Parse and validate the bytes of a JSON body (VALIDATION_ERROR otherwise)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WalletError(ErrorCode.VALIDATION_ERROR, "body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise WalletError(ErrorCode.VALIDATION_ERROR, "body must be a JSON object")
    data = _integral(data)
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise _validation(exc) from exc


def _integral(value: Any) -> Any:
    """JSON's ``100.0`` is the integer 100 (100.5 stays a float, and is refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


def _query_int(request: Request, name: str, default: int | None) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return default
    # ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > 10**18:
        raise WalletError(ErrorCode.VALIDATION_ERROR, f"{name} must be an integer 0..10^18")
    return int(value)


def create_app(
    office: BackOffice | None = None, *, factory: Factory | None = None,
    metrics: Registry | None = None,
) -> Starlette:
    """The public API over ``office``, or over the office ``factory`` builds at startup
    (closed at shutdown). Components may be in-process or remote behind their interfaces."""
    if (office is None) == (factory is None):
        raise ValueError("give exactly one of office and factory")
    metrics = metrics or (office.metrics if office is not None else Registry())
    ref = _Ref(office)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if factory is None:
            yield
            return
        ref.office = await factory(metrics)
        try:
            yield
        finally:
            await ref.o.stop()

    def measured(method: str, route: str, handler: Handler) -> Route:
        methods = method.split("|")

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except WalletError as err:
                response = JSON(err.to_json(), status_code=err.http_status)
            except ServiceUnavailable as exc:  # a remote component is down: safe to retry
                response = JSON(exc.to_json(), status_code=503,
                                headers={"retry-after": str(exc.retry_after_s)})
            verb = request.method
            metrics.request_seconds.observe(time.perf_counter() - started, verb, route)
            metrics.responses.inc(verb, route, str(response.status_code))
            return response

        return Route(route, endpoint, methods=methods)

    def path_player(request: Request) -> str:
        return str(request.path_params["player_id"])

    async def create_player(request: Request) -> Response:
        body = await parse(request, CreatePlayerBody)
        return JSON(await ref.o.players.create(body.player_id, body.currency), status_code=201)

    async def balance(request: Request) -> Response:
        return JSON(await ref.o.players.balance(path_player(request)))

    def money(model: type[BaseModel], build: Build, player: bool) -> Handler:
        async def handler(request: Request) -> Response:
            body = await parse(request, model)
            cmd = build(body, path_player(request) if player else "")
            return JSON(await ref.o.wallet.execute(cmd))

        return handler

    async def transactions(request: Request) -> Response:
        limit = _query_int(request, "limit", 50)
        before = _query_int(request, "before", None)
        assert limit is not None
        return JSON(await ref.o.players.transactions(path_player(request), limit, before))

    async def put_limits(request: Request) -> Response:
        body = await parse(request, LimitsRequest)
        return JSON(await ref.o.players.set_limits(path_player(request), body))

    async def get_limits(request: Request) -> Response:
        return JSON(await ref.o.players.limits(path_player(request)))

    async def limits(request: Request) -> Response:
        return await (put_limits if request.method == "PUT" else get_limits)(request)

    async def put_identity(request: Request) -> Response:
        body = await parse(request, IdentityBody)
        return JSON(await ref.o.players.verify_identity(path_player(request), body.verified))

    async def alerts(request: Request) -> Response:
        player = request.query_params.get("player_id")
        limit = _query_int(request, "limit", 100)
        after = _query_int(request, "after", 0)
        assert limit is not None and after is not None
        return JSON(await ref.o.fraud.alerts(player, limit, after))

    async def audit(request: Request) -> Response:
        return JSON((await ref.o.audit()).to_json())

    async def analytics(request: Request) -> Response:
        return JSON(await ref.o.analytics.summary())

    async def health(request: Request) -> Response:
        ok, body = await ref.o.health()
        return JSON(body, status_code=200 if ok else 503)

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.expose(), media_type="text/plain; version=0.0.4")

    document = openapi_document()

    async def openapi(request: Request) -> Response:
        return JSON(document)

    routes = [
        measured("POST", "/players", create_player),
        measured("GET", "/players/{player_id}/balance", balance),
        *(measured("POST", route, money(model, build, "{player_id}" in route))
          for route, (model, build) in MONEY_ROUTES.items()),
        measured("GET", "/players/{player_id}/transactions", transactions),
        measured("GET|PUT", "/players/{player_id}/limits", limits),
        measured("PUT", "/players/{player_id}/identity", put_identity),
        measured("GET", "/fraud/alerts", alerts),
        measured("GET", "/audit/verify", audit),
        measured("GET", "/analytics/summary", analytics),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            exc.status_code, ErrorCode.VALIDATION_ERROR)
        response = error(code, str(exc.detail), exc.status_code)
        response.headers.update(exc.headers or {})
        return response

    async def fast_money(
        route: str, model: type[BaseModel], build: Build, player: str, receive: Receive,
        send: Send,
    ) -> None:
        started = time.perf_counter()
        raw = await _read_body(receive)
        if raw is None:  # the client went away before sending its body
            return
        extra: list[tuple[bytes, bytes]] = []
        try:
            cmd = build(parse_raw(raw, model), player)
            content: Any = await ref.o.wallet.execute(cmd)
            status = 200
        except WalletError as err:
            content, status = err.to_json(), err.http_status
        except ServiceUnavailable as exc:  # a remote component is down: safe to retry
            content, status = exc.to_json(), 503
            extra = [(b"retry-after", str(exc.retry_after_s).encode("latin-1"))]
        except Exception:
            await send(_INTERNAL_ERROR_START)
            await send(_INTERNAL_ERROR_BODY)
            raise
        body = orjson.dumps(content)
        metrics.request_seconds.observe(time.perf_counter() - started, "POST", route)
        metrics.responses.inc("POST", route, str(status))
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", b"application/json"), *extra,
        ]})
        await send({"type": "http.response.body", "body": body})

    return _Api(
        fast_money, routes=routes, exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


def _bet(b: Any, player: str) -> Command:
    return Bet(b.transaction_id, b.player_id, b.round_id, b.game_id, b.amount, b.currency,
               b.device, b.jackpot_bp)


def _win(b: Any, player: str) -> Command:
    return Win(b.transaction_id, b.player_id, b.round_id, b.amount, b.currency)


def _rollback(b: Any, player: str) -> Command:
    return Rollback(b.transaction_id, b.player_id, b.round_id, b.rolled_back_transaction_id)


def _deposit(b: Any, player: str) -> Command:
    return Deposit(b.transaction_id, player, b.amount, b.currency, b.instrument, b.device)


def _withdrawal(b: Any, player: str) -> Command:
    return Withdrawal(b.transaction_id, player, b.amount, b.currency, b.instrument, b.device)


MONEY_ROUTES: dict[str, tuple[type[BaseModel], Build]] = {
    "/players/{player_id}/deposits": (CashBody, _deposit),
    "/players/{player_id}/withdrawals": (CashBody, _withdrawal),
    "/wallet/bet": (BetBody, _bet),
    "/wallet/win": (WinBody, _win),
    "/wallet/rollback": (RollbackBody, _rollback),
}
"""The money endpoints: body model and command builder by route."""

_INTERNAL_ERROR = b"Internal Server Error"
_INTERNAL_ERROR_START = {"type": "http.response.start", "status": 500, "headers": [
    (b"content-length", str(len(_INTERNAL_ERROR)).encode("latin-1")),
    (b"content-type", b"text/plain; charset=utf-8"),
]}
_INTERNAL_ERROR_BODY = {"type": "http.response.body", "body": _INTERNAL_ERROR}
"""What Starlette's ServerErrorMiddleware answers when an endpoint raises."""

FastMoney = Callable[[str, type[BaseModel], Build, str, Receive, Send], Awaitable[None]]


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        if not chunks and not more:
            return bytes(chunk)
        if chunk:
            chunks.append(chunk)
        if not more:
            return b"".join(chunks)


class _Api(Starlette):
    """Starlette, except that POSTs to the money endpoints (the hot path of every bet) are
    served by a plain ASGI function: same parsing, answers and metrics, without the routing
    and middleware layers (~14 us per request)."""

    def __init__(self, fast_money: FastMoney, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fast_money = fast_money
        self._fixed = {route: (route, *spec) for route, spec in MONEY_ROUTES.items()
                       if "{" not in route}
        self._player = {route.rsplit("/", 1)[1]: (route, *spec)
                        for route, spec in MONEY_ROUTES.items() if "{" in route}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a money POST directly; hand everything else to Starlette."""
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path: str = scope["path"]
            fixed = self._fixed.get(path)
            if fixed is not None:
                route, model, build = fixed
                await self._fast_money(route, model, build, "", receive, send)
                return
            parts = path.split("/")
            if len(parts) == 4 and parts[1] == "players" and parts[2]:
                spec = self._player.get(parts[3])
                if spec is not None:
                    route, model, build = spec
                    await self._fast_money(route, model, build, parts[2], receive, send)
                    return
        await super().__call__(scope, receive, send)


class _Ref:
    """The office the handlers use (set at startup when built by a factory)."""

    def __init__(self, office: BackOffice | None) -> None:
        self.office = office

    @property
    def o(self) -> BackOffice:
        if self.office is None:
            raise RuntimeError("back office not started")
        return self.office
