"""Credentials and request signing: the project's authentication contract, client side.

* Credentials file (YAML; ``--credentials FILE`` or ``TESTBED_CREDENTIALS``)::

      providers: [{id: demo-provider, secret: "<at least 32 characters>"}]
      operators: [{id: platform, token: "<at least 32 characters>"}]
      staff:     [{id: ops, token: "<at least 32 characters>"}]

* Provider requests (``/wallet/...``) carry ``X-Caller``, ``X-Timestamp`` (unix ms),
  ``X-Nonce`` (hex, unique per request) and ``X-Signature``: lower-case hex
  HMAC-SHA256(secret, f"{timestamp}\\n{nonce}\\n{METHOD}\\n{path_with_query}\\n" + raw body).
* Operator (``/players...``) and staff requests carry ``Authorization: Bearer <token>``.
* No credentials: no auth headers at all (the back office then runs open, loopback only).

A retried request is signed again (new timestamp and nonce) and keeps its body, so its
transaction id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ENV_VAR = "TESTBED_CREDENTIALS"
MIN_SECRET_CHARS = 32
NONCE_BYTES = 12
"""24 hex characters (the contract allows 16 to 64)."""

PROVIDER, OPERATOR, STAFF, OPEN = "provider", "operator", "staff", "open"


class CredentialsError(ValueError):
    """The credentials file is unreadable or invalid; the message names file and field."""


@dataclass(frozen=True)
class Credentials:
    """One identity of each kind the load generator needs (the first of each list)."""

    provider_id: str | None = None
    provider_secret: bytes | None = None
    operator_token: str | None = None
    staff_token: str | None = None


def _first(doc: dict[str, object], key: str, value_key: str, src: str) -> tuple[str, str] | None:
    items = doc.get(key)
    if items is None:
        return None
    if not isinstance(items, list) or not items:
        raise CredentialsError(f"{src}: {key}: expected a non-empty list")
    item = items[0]
    if not isinstance(item, dict):
        raise CredentialsError(f"{src}: {key}[0]: expected a mapping with id and {value_key}")
    ident, value = item.get("id"), item.get(value_key)
    if not isinstance(ident, str) or not ident:
        raise CredentialsError(f"{src}: {key}[0].id: expected a non-empty string")
    if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
        raise CredentialsError(f"{src}: {key}[0].{value_key}: expected a string of at least "
                               f"{MIN_SECRET_CHARS} characters")
    return ident, value


def load_credentials(path: str | Path | None) -> Credentials | None:
    """Read ``path`` (or ``$TESTBED_CREDENTIALS`` when ``path`` is None); None if neither."""
    if path is None:
        path = os.environ.get(ENV_VAR) or None
        if path is None:
            return None
    src = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise CredentialsError(f"{src}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise CredentialsError(f"{src}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise CredentialsError(f"{src}: expected a mapping with providers, operators, staff")
    unknown = sorted(set(doc) - {"providers", "operators", "staff"})
    if unknown:
        raise CredentialsError(f"{src}: unknown key(s) {', '.join(unknown)}")
    prov = _first(doc, "providers", "secret", src)
    oper = _first(doc, "operators", "token", src)
    staff = _first(doc, "staff", "token", src)
    return Credentials(
        provider_id=prov[0] if prov else None,
        provider_secret=prov[1].encode() if prov else None,
        operator_token=oper[1] if oper else None,
        staff_token=staff[1] if staff else None,
    )


def caller_of(path: str) -> str:
    """Which kind of caller the contract expects on ``path``."""
    if path.startswith("/wallet/"):
        return PROVIDER
    if path.startswith("/players"):
        return OPERATOR
    if path.startswith(("/fraud/", "/audit/", "/analytics/", "/metrics")):
        return STAFF
    return OPEN


def signature(secret: bytes, timestamp_ms: int, nonce: str, method: str, path: str,
              body: bytes) -> str:
    """The contract's X-Signature value."""
    msg = f"{timestamp_ms}\n{nonce}\n{method}\n{path}\n".encode() + body
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


class Signer:
    """Auth headers for one request; signs anew on every call (a retry gets a new nonce)."""

    def __init__(self, creds: Credentials | None) -> None:
        self.creds = creds

    def headers(self, method: str, path: str, body: bytes) -> list[tuple[str, str]]:
        c = self.creds
        if c is None:
            return []
        kind = caller_of(path)
        if kind == PROVIDER:
            if c.provider_secret is None or c.provider_id is None:
                raise CredentialsError(f"{method} {path} needs a provider in the credentials")
            ts = int(time.time() * 1000)
            nonce = os.urandom(NONCE_BYTES).hex()
            return [("X-Caller", c.provider_id), ("X-Timestamp", str(ts)), ("X-Nonce", nonce),
                    ("X-Signature", signature(c.provider_secret, ts, nonce, method, path, body))]
        token = c.operator_token if kind == OPERATOR else c.staff_token if kind == STAFF else None
        if kind == OPEN:
            return []
        if token is None:
            raise CredentialsError(f"{method} {path} needs a {kind} token in the credentials")
        return [("Authorization", f"Bearer {token}")]
