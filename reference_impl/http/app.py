"""The public API: one request path for every endpoint, one error and metrics responder.

Every HTTP request goes through :meth:`_Api.__call__`, in this order, before any work:

1. the route and method (404 / 405; ``/wallet/bet/`` is a 404, never a redirect);
2. credentials (:mod:`reference_impl.http.auth`: 401, then the route's scope: 403); a bearer
   token is checked before the body is read, a provider's signature right after it;
3. the per-credential and per-player rate limits (429 with ``Retry-After``);
4. for a body: ``Content-Type: application/json`` (415), its size (413, from
   Content-Length and while streaming, never read whole first);
5. the handler: parse and validate (400), then the component call.

Whatever happens, :func:`_respond` sends the answer and records it in the metrics (a 500
too). Starlette only runs the lifespan (open and close the back office).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.types import Receive, Scope, Send

from reference_impl.domain.commands import Bet, Command, Deposit, Rollback, Win, Withdrawal
from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.domain.money import ID_PATTERN, scoped_id
from reference_impl.http.auth import ANONYMOUS, Authenticator, Caller, Kind, allowed_kinds
from reference_impl.http.guard import (
    EdgeConfig,
    RateLimited,
    TokenBuckets,
    integral,
    read_body,
)
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
from reference_impl.runtime import freeze_startup_heap
from reference_impl.services.backoffice import BackOffice
from reference_impl.services.ports import ServiceUnavailable

log = logging.getLogger(__name__)

Factory = Callable[[Registry], Awaitable[BackOffice]]
Build = Callable[[Any, str, str], Command]
"""A money command from a validated body, the path's player id ("" if none) and the caller's
scope prefix of transaction and round ids ("" when the API runs open, else ``caller:``)."""
UNMATCHED = "(unmatched)"
"""The metrics label of requests to no route (keeps the label set bounded)."""
UNAVAILABLE_RETRY_AFTER_S = 1  # Retry-After of a 503 that names none (e.g. /health degraded)


@dataclass(frozen=True)
class Answer:
    """What a handler returns: status, body bytes, content type."""

    status: int
    body: bytes
    content_type: bytes = b"application/json"
    retry_after: int | None = None


def ok(content: Any, status: int = 200) -> Answer:
    """A JSON answer."""
    return Answer(status, orjson.dumps(content))


def _error_answer(err: WalletError) -> Answer:
    retry = err.retry_after if isinstance(err, RateLimited) else None
    return Answer(err.http_status, orjson.dumps(err.to_json()), retry_after=retry)


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated request, its body read."""

    method: str
    route: str
    player: str  # the path's player id ("" if the route has none)
    query_string: bytes
    body: bytes
    caller: Caller

    @property
    def query(self) -> QueryParams:
        """The parsed query string."""
        return QueryParams(self.query_string)


Handler = Callable[[Call], Awaitable[Answer]]


def _validation(exc: ValidationError) -> WalletError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    return WalletError(ErrorCode.VALIDATION_ERROR, f"{where}: {first.get('msg', 'invalid')}")


def parse_raw(raw: bytes, model: type[BaseModel]) -> Any:
    """Parse and validate the bytes of a JSON body (VALIDATION_ERROR otherwise)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WalletError(ErrorCode.VALIDATION_ERROR, "body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise WalletError(ErrorCode.VALIDATION_ERROR, "body must be a JSON object")
    data = integral(data)
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise _validation(exc) from exc


def _query_int(query: QueryParams, name: str, default: int | None) -> int | None:
    value = query.get(name)
    if value is None:
        return default
    # ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > 10**18:
        raise WalletError(ErrorCode.VALIDATION_ERROR, f"{name} must be an integer 0..10^18")
    return int(value)


def create_app(
    office: BackOffice | None = None, *, factory: Factory | None = None,
    metrics: Registry | None = None, edge: EdgeConfig | None = None,
) -> Starlette:
    """The public API over ``office``, or over the office ``factory`` builds at startup
    (closed at shutdown). Components may be in-process or remote behind their interfaces.
    ``edge`` sets credentials, rate limits and the body size (default: ``EdgeConfig()``, with
    the credentials of ``$TESTBED_CREDENTIALS`` if set, else open)."""
    from reference_impl.http.auth import load_credentials

    if (office is None) == (factory is None):
        raise ValueError("give exactly one of office and factory")
    edge = edge or EdgeConfig()
    metrics = metrics or (office.metrics if office is not None else Registry())
    ref = _Ref(office)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if factory is None:
            yield
            return
        ref.office = await factory(metrics)
        freeze_startup_heap()
        try:
            yield
        finally:
            await ref.o.stop()

    limiter = _Limiter(edge)

    def money(model: type[BaseModel], build: Build) -> Handler:
        async def handler(call: Call) -> Answer:
            body = parse_raw(call.body, model)
            caller = call.caller
            if caller.kind is None:  # open API: one namespace of ids
                cmd = build(body, call.player, "")
            else:  # the caller's namespace (see scope_prefix)
                cmd = build(body, call.player, scope_prefix(caller.id))
            if not call.player:  # the player is in the body: limit it now
                limiter.player(cmd.player_id)
            result = await ref.o.wallet.execute(cmd)
            if caller.kind is not None:
                result = {**result, "transaction_id": body.transaction_id}
            return ok(result)

        return handler

    async def create_player(call: Call) -> Answer:
        body = parse_raw(call.body, CreatePlayerBody)
        limiter.player(body.player_id)
        return ok(await ref.o.players.create(body.player_id, body.currency), 201)

    async def balance(call: Call) -> Answer:
        return ok(await ref.o.players.balance(call.player))

    async def transactions(call: Call) -> Answer:
        limit = _query_int(call.query, "limit", 50)
        before = _query_int(call.query, "before", None)
        assert limit is not None
        return ok(await ref.o.players.transactions(call.player, limit, before))

    async def put_limits(call: Call) -> Answer:
        body = parse_raw(call.body, LimitsRequest)
        return ok(await ref.o.players.set_limits(call.player, body))

    async def get_limits(call: Call) -> Answer:
        return ok(await ref.o.players.limits(call.player))

    async def put_identity(call: Call) -> Answer:
        body = parse_raw(call.body, IdentityBody)
        return ok(await ref.o.players.verify_identity(call.player, body.verified))

    async def alerts(call: Call) -> Answer:
        player = call.query.get("player_id")
        limit = _query_int(call.query, "limit", 100)
        after = _query_int(call.query, "after", 0)
        assert limit is not None and after is not None
        return ok(await ref.o.fraud.alerts(player, limit, after))

    async def audit(call: Call) -> Answer:
        return ok((await ref.o.audit()).to_json())

    async def analytics(call: Call) -> Answer:
        return ok(await ref.o.analytics.summary())

    async def health(call: Call) -> Answer:
        healthy, body = await ref.o.health()
        return ok(body, 200 if healthy else 503)

    async def metrics_text(call: Call) -> Answer:
        return Answer(200, metrics.expose().encode(), b"text/plain; version=0.0.4")

    document = orjson.dumps(openapi_document())

    async def openapi(call: Call) -> Answer:
        return Answer(200, document)

    routes: dict[str, dict[str, Handler]] = {
        "/players": {"POST": create_player},
        "/players/{player_id}/balance": {"GET": balance},
        **{route: {"POST": money(model, build)} for route, (model, build) in MONEY_ROUTES.items()},
        "/players/{player_id}/transactions": {"GET": transactions},
        "/players/{player_id}/limits": {"GET": get_limits, "PUT": put_limits},
        "/players/{player_id}/identity": {"PUT": put_identity},
        "/fraud/alerts": {"GET": alerts},
        "/audit/verify": {"GET": audit},
        "/analytics/summary": {"GET": analytics},
        "/health": {"GET": health},
        "/metrics": {"GET": metrics_text},
        "/openapi.json": {"GET": openapi},
    }
    auth = Authenticator(load_credentials(edge.credentials))
    return _Api(routes, auth, limiter, edge, metrics, lifespan=lifespan)


def _bet(b: Any, player: str, s: str) -> Command:
    return Bet(s + b.transaction_id, b.player_id, s + b.round_id, b.game_id, b.amount,
               b.currency, b.device, b.jackpot_bp)


def _win(b: Any, player: str, s: str) -> Command:
    return Win(s + b.transaction_id, b.player_id, s + b.round_id, b.amount, b.currency)


def _rollback(b: Any, player: str, s: str) -> Command:
    return Rollback(s + b.transaction_id, b.player_id, s + b.round_id,
                    s + b.rolled_back_transaction_id)


def _deposit(b: Any, player: str, s: str) -> Command:
    return Deposit(s + b.transaction_id, player, b.amount, b.currency, b.instrument, b.device)


def _withdrawal(b: Any, player: str, s: str) -> Command:
    return Withdrawal(s + b.transaction_id, player, b.amount, b.currency, b.instrument,
                      b.device)


MONEY_ROUTES: dict[str, tuple[type[BaseModel], Build]] = {
    "/players/{player_id}/deposits": (CashBody, _deposit),
    "/players/{player_id}/withdrawals": (CashBody, _withdrawal),
    "/wallet/bet": (BetBody, _bet),
    "/wallet/win": (WinBody, _win),
    "/wallet/rollback": (RollbackBody, _rollback),
}
"""The money endpoints: body model and command builder by route."""

def scope_prefix(caller: str) -> str:
    """What precedes an authenticated caller's transaction and round ids as stored: its
    ids never meet another caller's (no collision, no conflict that tells of another's
    transaction, no win settling another provider's round). The journal shows them so."""
    return scoped_id(caller, "")


_INTERNAL = ok({"error": {"code": ErrorCode.INTERNAL_ERROR.value,
                          "message": "internal error (logged)"}}, 500)


class _Limiter:
    """The per-credential and per-player token buckets of one process."""

    def __init__(self, edge: EdgeConfig) -> None:
        self.credentials = TokenBuckets(edge.credential_rate, "credential")
        self.players = TokenBuckets(edge.player_rate, "player")

    def caller(self, caller: Caller) -> None:
        self.credentials.take(f"{caller.kind}:{caller.id}")

    def player(self, player_id: str) -> None:
        self.players.take(player_id)


def _route(path: str) -> tuple[str, str]:
    """(route template, path player id) of a path."""
    parts = path.split("/")
    if len(parts) == 4 and parts[1] == "players" and parts[2]:
        return f"/players/{{player_id}}/{parts[3]}", parts[2]
    return path, ""


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class _Api(Starlette):
    """Starlette for the lifespan; every HTTP request through one path (module docstring)."""

    def __init__(self, routes: dict[str, dict[str, Handler]], auth: Authenticator,
                 limiter: _Limiter, edge: EdgeConfig, metrics: Registry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_routes, self.auth, self.limiter = routes, auth, limiter
        self.edge, self.api_metrics = edge, metrics
        self.kinds = {(m, r): allowed_kinds(m, r) for r, ms in routes.items() for m in ms}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        method: str = scope["method"]
        route, player = _route(scope["path"])
        methods = self.api_routes.get(route)
        label = route if methods is not None else UNMATCHED
        try:
            answer = await self._serve(scope, receive, method, route, player, methods)
        except WalletError as err:
            answer = _error_answer(err)
        except ServiceUnavailable as exc:  # a remote component is down: safe to retry
            answer = Answer(503, orjson.dumps(exc.to_json()), retry_after=exc.retry_after_s)
        except Exception:
            log.exception("internal error on %s %s", method, label)
            answer = _INTERNAL
        if answer is None:  # the client went away before sending its body
            return
        extra = [(b"allow", ", ".join(sorted(methods)).encode())] \
            if answer.status == 405 and methods is not None else []
        self.api_metrics.request_seconds.observe(time.perf_counter() - started, method, label)
        self.api_metrics.responses.inc(method, label, str(answer.status))
        await _respond(send, answer, extra)

    async def _serve(self, scope: Scope, receive: Receive, method: str, route: str,
                     player: str, methods: Mapping[str, Handler] | None) -> Answer | None:
        if methods is None:
            raise WalletError(ErrorCode.NOT_FOUND, f"no route {scope['path']}")
        handler = methods.get(method)
        if handler is None:
            raise WalletError(ErrorCode.METHOD_NOT_ALLOWED,
                              f"{method} not allowed; use {', '.join(sorted(methods))}")
        headers = _headers(scope)
        kinds = self.kinds[method, route]
        caller, pending = ANONYMOUS, None
        if kinds and not self.auth.open:
            if "authorization" in headers:
                caller = self.auth.bearer(headers["authorization"])
            elif "x-caller" in headers or "x-signature" in headers:
                pending = self.auth.provider_secret(headers)
            else:
                raise WalletError(ErrorCode.UNAUTHENTICATED,
                                  "credentials required: a bearer token or a signed request")
            if pending is None:
                self._authorize(caller, kinds, method, route)
        if player and not ID_PATTERN.fullmatch(player):
            raise WalletError(ErrorCode.VALIDATION_ERROR,
                              f"player_id must match {ID_PATTERN.pattern}")
        body = b""
        if method in ("POST", "PUT"):
            content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if content_type != "application/json":
                raise WalletError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                                  "send the body as Content-Type: application/json")
            declared = headers.get("content-length")
            size = int(declared) if declared and declared.isdigit() else None
            raw = await read_body(receive, size, self.edge.max_body_bytes)
            if raw is None:
                return None
            body = raw
        if pending is not None:
            target = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else \
                scope["path"]
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            caller = self.auth.verify(*pending, headers, method, target, body)
            self._authorize(caller, kinds, method, route)
        if player:
            self.limiter.player(player)
        return await handler(Call(method, route, player, scope["query_string"], body, caller))

    def _authorize(self, caller: Caller, kinds: frozenset[Kind], method: str,
                   route: str) -> None:
        if caller.kind not in kinds:
            raise WalletError(ErrorCode.FORBIDDEN,
                              f"{caller.kind} credentials may not call {method} {route}")
        self.limiter.caller(caller)


async def _respond(send: Send, answer: Answer, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-length", str(len(answer.body)).encode("latin-1")),
               (b"content-type", answer.content_type), *extra]
    retry = answer.retry_after
    if retry is None and answer.status == 503:  # every 503 says when to come back
        retry = UNAVAILABLE_RETRY_AFTER_S
    if retry is not None:
        headers.append((b"retry-after", str(retry).encode("latin-1")))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


class _Ref:
    """The office the handlers use (set at startup when built by a factory)."""

    def __init__(self, office: BackOffice | None) -> None:
        self.office = office

    @property
    def o(self) -> BackOffice:
        if self.office is None:
            raise RuntimeError("back office not started")
        return self.office
