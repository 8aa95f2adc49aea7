"""Who may call the public API: credentials, request signing, scopes (server and client side).

The contract (shared by the back office and every client of the project):

- a credentials file (YAML, given by ``--credentials FILE`` or ``TESTBED_CREDENTIALS=FILE``)
  lists ``providers`` (``id``, ``secret``), ``operators`` and ``staff`` (``id``, ``token``),
  every secret/token at least :data:`MIN_SECRET_CHARS` characters;
- a provider signs each request: headers ``X-Caller``, ``X-Timestamp`` (unix milliseconds),
  ``X-Nonce`` (16-64 hex characters, new per request) and ``X-Signature``, the lower-case hex
  HMAC-SHA256 of ``f"{timestamp}\\n{nonce}\\n{METHOD}\\n{path_with_query}\\n"`` followed by
  the raw body; refused when the signature is wrong, the timestamp is more than
  :data:`CLOCK_SKEW_S` away from the server's clock, or the nonce was seen in that window;
- operators and staff send ``Authorization: Bearer <token>``.

Every comparison with a secret is constant-time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.domain.money import SCOPE_PATTERN
from reference_impl.http.guard import RateLimited

CREDENTIALS_ENV = "TESTBED_CREDENTIALS"
MIN_SECRET_CHARS = 32
CLOCK_SKEW_S = 300
"""Largest distance between a signed request's timestamp and the server's clock."""
NONCE_PATTERN = re.compile(r"[0-9a-fA-F]{16,64}")
MAX_NONCES = 2_000_000
"""Nonces remembered at once (per process; ~70 bytes each). Past it, signed requests are
refused with 429 until old ones expire: 6,600 signed requests/s sustained for 300 s."""


class Kind(StrEnum):
    """The three kinds of caller."""

    PROVIDER = "provider"  # game provider / aggregator: bet, win, rollback, balance
    OPERATOR = "operator"  # the operator's platform: everything under /players
    STAFF = "staff"  # back-office staff: fraud alerts, audit, analytics, metrics


Id = Annotated[str, Field(pattern=f"^{SCOPE_PATTERN.pattern}$", min_length=1, max_length=32)]
Secret = Annotated[str, Field(min_length=MIN_SECRET_CHARS, max_length=1024)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderEntry(_Entry):
    """A game provider and its HMAC secret."""

    id: Id
    secret: Secret


class TokenEntry(_Entry):
    """An operator platform or a staff member and its bearer token."""

    id: Id
    token: Secret


class Credentials(BaseModel):
    """The credentials file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: list[ProviderEntry] = Field(default_factory=list)
    operators: list[TokenEntry] = Field(default_factory=list)
    staff: list[TokenEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct(self) -> Credentials:
        keys = [(k, e.id) for k, entries in (("providers", self.providers),
                                             ("operators", self.operators),
                                             ("staff", self.staff)) for e in entries]
        if len(set(keys)) != len(keys):
            raise ValueError("an id appears twice in the same section")
        tokens = [e.token for e in (*self.operators, *self.staff)]
        if len(set(tokens)) != len(tokens):
            raise ValueError("two operators/staff share a token")
        if not keys:
            raise ValueError("no credentials: list at least one provider, operator or staff")
        return self

    @classmethod
    def load(cls, path: str | Path) -> Credentials:
        """Read and validate a credentials file; :class:`CredentialsError` names the problem."""
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CredentialsError(f"{path}: cannot read ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise CredentialsError(f"{path}: not YAML ({exc})") from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "file"
            raise CredentialsError(f"{path}: {where}: {first.get('msg', 'invalid')}") from exc


class CredentialsError(ValueError):
    """A credentials file that cannot be used."""


def credentials_path(given: str | None = None) -> str | None:
    """The credentials file in use: ``given``, else ``$TESTBED_CREDENTIALS``, else None."""
    return given or os.environ.get(CREDENTIALS_ENV) or None


def load_credentials(given: str | None = None) -> Credentials | None:
    """The credentials of :func:`credentials_path` (None: none configured, the API is open)."""
    path = credentials_path(given)
    return None if path is None else Credentials.load(path)


def signature(secret: str, timestamp: str, nonce: str, method: str, target: str,
              body: bytes) -> str:
    """The lower-case hex HMAC-SHA256 of a provider request (``target`` = path + query)."""
    message = f"{timestamp}\n{nonce}\n{method}\n{target}\n".encode() + body
    return hmac.digest(secret.encode(), message, "sha256").hex()


# --------------------------------------------------------------------------- server side


@dataclass(frozen=True)
class Caller:
    """An authenticated caller (``kind`` None: the API runs open)."""

    kind: Kind | None
    id: str


ANONYMOUS = Caller(None, "anonymous")


def unauthenticated(reason: str) -> WalletError:
    """401."""
    return WalletError(ErrorCode.UNAUTHENTICATED, reason)


class NonceCache:
    """Nonces seen in the last :data:`CLOCK_SKEW_S` * 2 seconds, bounded by ``capacity``.

    Keys are 64-bit hashes of (caller, nonce) (a false "replay" needs a 2^-64 collision);
    they expire in per-second groups."""

    def __init__(self, capacity: int = MAX_NONCES) -> None:
        self.capacity = capacity
        self._seen: set[int] = set()
        self._expiry: deque[tuple[int, list[int]]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, caller: str, nonce: str, now: float) -> bool:
        """Remember the nonce; False if it was seen (a replay). Raises RATE_LIMITED when
        full of unexpired nonces."""
        self._prune(now)
        key = hash((caller, nonce.lower()))  # 64-bit SipHash, keyed per process
        if key in self._seen:
            return False
        if len(self._seen) >= self.capacity:
            wait = self._expiry[0][0] - now
            raise RateLimited(f"too many signed requests in {CLOCK_SKEW_S} s", wait)
        # a timestamp may be CLOCK_SKEW_S ahead: keep the nonce until it is refused anyway
        expires = int(now) + 2 * CLOCK_SKEW_S + 1
        if not self._expiry or self._expiry[-1][0] != expires:
            self._expiry.append((expires, []))
        self._expiry[-1][1].append(key)
        self._seen.add(key)
        assert len(self._seen) <= self.capacity
        return True

    def _prune(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, keys = self._expiry.popleft()
            self._seen.difference_update(keys)


class Authenticator:
    """Checks the credentials of a request (None credentials: every request is anonymous)."""

    def __init__(self, credentials: Credentials | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.credentials = credentials
        self.clock = clock
        self.nonces = NonceCache()
        self._macs: dict[str, hmac.HMAC] = {}  # keyed once: a copy per request is cheaper
        self._tokens: list[tuple[bytes, Caller]] = []
        if credentials is not None:
            self._macs = {p.id: hmac.new(p.secret.encode(), digestmod=hashlib.sha256)
                          for p in credentials.providers}
            self._tokens = [(_digest(e.token), Caller(kind, e.id))
                            for kind, entries in ((Kind.OPERATOR, credentials.operators),
                                                  (Kind.STAFF, credentials.staff))
                            for e in entries]

    @property
    def open(self) -> bool:
        """True when no credentials are configured."""
        return self.credentials is None

    def bearer(self, authorization: str) -> Caller:
        """The operator or staff member of an ``Authorization`` header value (else 401)."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated("Authorization must be 'Bearer <token>'")
        presented = _digest(token.strip())
        found: Caller | None = None
        for digest, caller in self._tokens:  # every entry compared: time does not say which
            if hmac.compare_digest(presented, digest):
                found = caller
        if found is None:
            raise unauthenticated("unknown bearer token")
        return found

    def provider_secret(self, headers: Mapping[str, str]) -> tuple[str, hmac.HMAC]:
        """The provider named by ``X-Caller`` and its keyed HMAC, checked before the body is
        read: the signed headers are present and well-formed and the timestamp is fresh."""
        caller = headers.get("x-caller", "")
        for name in ("x-timestamp", "x-nonce", "x-signature"):
            if not headers.get(name):
                raise unauthenticated(f"signed request without {name}")
        stamp = headers["x-timestamp"]
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 15):
            raise unauthenticated("X-Timestamp must be unix time in milliseconds")
        if abs(int(stamp) / 1000 - self.clock()) > CLOCK_SKEW_S:
            raise unauthenticated(f"X-Timestamp more than {CLOCK_SKEW_S} s from the server "
                                  "clock")
        if not NONCE_PATTERN.fullmatch(headers["x-nonce"]):
            raise unauthenticated("X-Nonce must be 16 to 64 hex characters")
        mac = self._macs.get(caller)
        if mac is None:
            raise unauthenticated("unknown X-Caller")
        return caller, mac

    def verify(self, caller: str, mac: hmac.HMAC, headers: Mapping[str, str], method: str,
               target: str, body: bytes) -> Caller:
        """Check a provider's signature over the body, then its nonce (401 otherwise)."""
        stamp, nonce = headers["x-timestamp"], headers["x-nonce"]
        h = mac.copy()
        h.update(f"{stamp}\n{nonce}\n{method}\n{target}\n".encode())
        h.update(body)
        expected = h.hexdigest()
        if not hmac.compare_digest(expected.encode(), headers["x-signature"].encode()):
            raise unauthenticated("bad X-Signature")
        if not self.nonces.add(caller, nonce, self.clock()):
            raise unauthenticated("X-Nonce already used (replayed request)")
        return Caller(Kind.PROVIDER, caller)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


# --------------------------------------------------------------------------- client side


class Signer:
    """A client's credentials: the headers for each request of the contract.

    Picks the first provider, operator and staff entry of the file (or the given ids). A
    route a provider may call is signed when a provider is known; other routes use the
    operator token (staff for staff routes), else are signed if a provider is known. Open
    routes, and every route when there are no credentials, get no headers."""

    def __init__(self, credentials: Credentials | None, *, provider: str | None = None,
                 operator: str | None = None, staff: str | None = None) -> None:
        self.provider = _pick(credentials.providers if credentials else [], provider)
        self.operator = _pick(credentials.operators if credentials else [], operator)
        self.staff = _pick(credentials.staff if credentials else [], staff)

    @classmethod
    def from_file(cls, path: str | None = None) -> Signer:
        """The signer of :func:`load_credentials` (no headers if none configured)."""
        return cls(load_credentials(path))

    def headers(self, method: str, target: str, body: bytes = b"") -> dict[str, str]:
        """The auth headers of one request (``target`` = path with its query string)."""
        path = target.split("?", 1)[0]
        kinds = allowed_kinds(method, path)
        if not kinds:
            return {}
        token = self.staff if Kind.STAFF in kinds else \
            self.operator if Kind.OPERATOR in kinds else None
        if self.provider is not None and (Kind.PROVIDER in kinds or token is None):
            stamp = str(int(time.time() * 1000))
            nonce = secrets.token_hex(16)
            return {"X-Caller": self.provider.id, "X-Timestamp": stamp, "X-Nonce": nonce,
                    "X-Signature": signature(self.provider.secret, stamp, nonce, method,
                                             target, body)}
        if token is not None:
            return {"Authorization": f"Bearer {token.token}"}
        return {}


class SignedAuth(httpx.Auth):
    """httpx authentication by :class:`Signer` (each retry is signed anew)."""

    requires_request_body = True

    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, Any, None]:
        target = request.url.raw_path.decode("ascii")
        request.headers.update(self.signer.headers(request.method, target, request.content))
        yield request


def _pick(entries: list[Any], wanted: str | None) -> Any:
    if wanted is None:
        return entries[0] if entries else None
    for e in entries:
        if e.id == wanted:
            return e
    raise CredentialsError(f"no credentials for {wanted!r}")


# --------------------------------------------------------------------------- scopes


PROVIDER_ROUTES = frozenset({
    ("POST", "/wallet/bet"), ("POST", "/wallet/win"), ("POST", "/wallet/rollback"),
    ("GET", "/players/{player_id}/balance"),
})
STAFF_ROUTES = frozenset({
    ("GET", "/fraud/alerts"), ("GET", "/audit/verify"), ("GET", "/analytics/summary"),
    ("GET", "/metrics"),
})
OPEN_ROUTES = frozenset({("GET", "/health"), ("GET", "/openapi.json")})


def route_of(path: str) -> str:
    """The route template of a concrete path (``/players/x/balance`` ->
    ``/players/{player_id}/balance``); other paths unchanged."""
    parts = path.split("/")
    if len(parts) == 4 and parts[1] == "players" and parts[2]:
        return f"/players/{{player_id}}/{parts[3]}"
    return path


def allowed_kinds(method: str, path: str) -> frozenset[Kind]:
    """Who may call ``method path`` (empty: open to everyone)."""
    route = route_of(path)
    key = (method, route)
    if key in OPEN_ROUTES:
        return frozenset()
    kinds: set[Kind] = set()
    if key in PROVIDER_ROUTES:
        kinds.add(Kind.PROVIDER)
    if key in STAFF_ROUTES:
        kinds.add(Kind.STAFF)
    if route.startswith("/players"):
        kinds.add(Kind.OPERATOR)
    return frozenset(kinds)
