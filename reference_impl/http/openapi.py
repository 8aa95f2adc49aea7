"""The OpenAPI 3 document, generated from the same pydantic models the handlers validate with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from reference_impl.domain.errors import ErrorCode
from reference_impl.domain.money import ID_PATTERN
from reference_impl.http.auth import CLOCK_SKEW_S, Kind, allowed_kinds
from reference_impl.http.schemas import (
    BetBody,
    CashBody,
    CreatePlayerBody,
    IdentityBody,
    RollbackBody,
    WinBody,
)
from reference_impl.rules import LimitsRequest

REF = "#/components/schemas/{model}"

_INT = {"type": "integer"}
_STR = {"type": "string"}
RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "enum": [c.value for c in ErrorCode]},
                           "message": _STR},
        }},
    },
    "Player": {"type": "object", "required": ["player_id", "currency", "balance"],
               "properties": {"player_id": _STR, "currency": _STR, "balance": _INT}},
    "Balance": {"type": "object", "required": ["player_id", "balance", "currency"],
                "properties": {"player_id": _STR, "balance": _INT, "currency": _STR}},
    "OperationResult": {
        "type": "object", "required": ["transaction_id", "status", "balance", "currency"],
        "properties": {"transaction_id": _STR,
                       "status": {"type": "string", "enum": ["ok", "review"]},
                       "balance": _INT, "currency": _STR},
    },
    "JournalPage": {
        "type": "object", "required": ["player_id", "entries", "next_before"],
        "properties": {
            "player_id": _STR, "next_before": {"type": ["integer", "null"]},
            "entries": {"type": "array", "items": {"type": "object", "properties": {
                "stream": _STR, "seq": _INT, "transaction_id": _STR, "kind": _STR,
                "debit_account": _STR, "credit_account": _STR, "amount": _INT,
                "currency": _STR, "round_id": _STR, "ts_us": _INT, "hash": _STR}}},
        },
    },
    "Limits": {"type": "object", "required": ["player_id", "pending"],
               "properties": {"player_id": _STR, "pending": {"type": "array"}}},
    "Alerts": {"type": "object", "required": ["alerts", "next_after"],
               "properties": {"alerts": {"type": "array"},
                              "next_after": {"type": ["integer", "null"]}}},
    "Audit": {"type": "object", "required": ["ok", "counts", "first_violation"],
              "properties": {"ok": {"type": "boolean"}, "counts": {"type": "object"},
                             "first_violation": {"type": ["string", "null"]},
                             "totals": {"type": "object"}}},
    "Object": {"type": "object"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(name)}}}


def _op(
    summary: str, ok: str, body: type[BaseModel] | None = None, status: str = "200",
    errors: tuple[str, ...] = ("400",), params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {status: {"description": "success", **_json(ok)},
                      **{e: {"description": "refused, nothing changed", **_json("Error")}
                         for e in errors}},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _ref(body.__name__)}}}
    if params:
        op["parameters"] = params
    return op


PLAYER_PARAM = {"name": "player_id", "in": "path", "required": True,
                "schema": {"type": "string", "pattern": ID_PATTERN.pattern}}
MONEY_ERRORS = ("400", "403", "404", "409")


def _query(name: str, minimum: int, maximum: int) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": minimum, "maximum": maximum}}


SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "providerSignature": {
        "type": "apiKey", "in": "header", "name": "X-Signature",
        "description": "Game providers: headers X-Caller (provider id), X-Timestamp (unix "
                       f"ms, within {CLOCK_SKEW_S} s of the server clock), X-Nonce (16-64 hex, "
                       "new per "
                       "request) and X-Signature: lower-case hex HMAC-SHA256(secret, "
                       "timestamp\\nnonce\\nMETHOD\\npath_with_query\\n + raw body). "
                       "A retry is signed anew with the same transaction_id.",
    },
    "operatorToken": {"type": "http", "scheme": "bearer",
                      "description": "The operator platform: everything under /players."},
    "staffToken": {"type": "http", "scheme": "bearer",
                   "description": "Back-office staff: fraud alerts, audit, analytics, "
                                  "metrics."},
}
SCHEME_OF: dict[Kind, str] = {Kind.PROVIDER: "providerSignature",
                              Kind.OPERATOR: "operatorToken", Kind.STAFF: "staffToken"}
EDGE_ERRORS: dict[str, str] = {
    "401": "no, unknown, altered or replayed credentials",
    "403": "credentials of a caller outside this route's scope",
    "429": "rate limit: retry after the Retry-After header's seconds",
}
BODY_ERRORS: dict[str, str] = {
    "413": "body larger than the server's maximum",
    "415": "body not sent as Content-Type: application/json",
}


def _secure(path: str, method: str, op: dict[str, Any]) -> None:
    """Add the route's security requirement and the edge's refusals (401/403/413/415/429)."""
    kinds = allowed_kinds(method.upper(), path)
    errors = dict(EDGE_ERRORS) if kinds else {"429": EDGE_ERRORS["429"]}
    if kinds:
        op["security"] = [{SCHEME_OF[k]: []} for k in Kind if k in kinds]
    if "requestBody" in op:
        errors.update(BODY_ERRORS)
    for status, why in errors.items():
        op["responses"].setdefault(status, {"description": why, **_json("Error")})


def openapi_document() -> dict[str, Any]:
    """The whole document (OpenAPI 3.1)."""
    schemas: dict[str, Any] = dict(RESPONSE_SCHEMAS)
    for model in (CreatePlayerBody, CashBody, BetBody, WinBody, RollbackBody, IdentityBody,
                  LimitsRequest):
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    pid = [PLAYER_PARAM]
    paths = {
        "/players": {"post": _op("open a wallet", "Player", CreatePlayerBody, "201",
                                 ("400", "409"))},
        "/players/{player_id}/balance": {"get": _op("balance", "Balance", None, "200",
                                                    ("400", "404"), pid)},
        "/players/{player_id}/deposits": {"post": _op("deposit", "OperationResult", CashBody,
                                                      "200", MONEY_ERRORS, pid)},
        "/players/{player_id}/withdrawals": {"post": _op(
            "withdrawal", "OperationResult", CashBody, "200", MONEY_ERRORS, pid)},
        "/wallet/bet": {"post": _op("bet (debit)", "OperationResult", BetBody, "200",
                                    MONEY_ERRORS)},
        "/wallet/win": {"post": _op("win (credit)", "OperationResult", WinBody, "200",
                                    MONEY_ERRORS)},
        "/wallet/rollback": {"post": _op("rollback (refund of a bet)", "OperationResult",
                                         RollbackBody, "200", MONEY_ERRORS)},
        "/players/{player_id}/transactions": {"get": _op(
            "ledger entries, newest first", "JournalPage", None, "200", ("400", "404"),
            [PLAYER_PARAM, _query("limit", 1, 500), _query("before", 0, 10**18)])},
        "/players/{player_id}/limits": {
            "put": _op("set limits, self-exclusion, time-out", "Limits", LimitsRequest, "200",
                       ("400", "404"), pid),
            "get": _op("limits in force and pending", "Limits", None, "200", ("400", "404"),
                       pid),
        },
        "/players/{player_id}/identity": {"put": _op(
            "record a KYC outcome", "Object", IdentityBody, "200", ("400", "404"), pid)},
        "/fraud/alerts": {"get": _op("fraud alerts", "Alerts", None, "200", ("400",), [
            {"name": "player_id", "in": "query", "required": False,
             "schema": {"type": "string", "pattern": ID_PATTERN.pattern}},
            _query("limit", 1, 1000), _query("after", 0, 10**18)])},
        "/audit/verify": {"get": _op("re-check every ledger invariant", "Audit", None, "200",
                                     ())},
        "/analytics/summary": {"get": _op("event totals", "Object", None, "200", ())},
        "/health": {"get": _op("liveness", "Object", None, "200", ())},
    }
    for path, ops in paths.items():
        for method, op in ops.items():
            _secure(path, method, op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "iGaming reference back office", "version": "1.0.0",
                 "description": "Seamless wallet, double-entry ledger, fraud and RG rules. "
                                "Amounts are integers in minor units."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }
