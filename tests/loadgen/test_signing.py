"""The authentication contract, client side: the signature is recomputed here independently."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from loadgen.signing import CredentialsError, Signer, load_credentials

SECRET = "s" * 40
TOKEN = "t" * 40


def _creds_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "creds.yaml"
    p.write_text(text)
    return p


@pytest.fixture
def creds_path(tmp_path: Path) -> Path:
    return _creds_file(tmp_path, f"""
providers:
  - {{id: demo-provider, secret: "{SECRET}"}}
operators:
  - {{id: platform, token: "{TOKEN}"}}
staff:
  - {{id: ops, token: "{'u' * 40}"}}
""")


def test_provider_request_signature_matches_the_contract(creds_path: Path) -> None:
    signer = Signer(load_credentials(creds_path))
    body = b'{"transaction_id":"b1","amount":100}'
    h = dict(signer.headers("POST", "/wallet/bet", body))
    assert h["X-Caller"] == "demo-provider"
    ts, nonce = h["X-Timestamp"], h["X-Nonce"]
    assert ts.isdigit() and 16 <= len(nonce) <= 64 and int(nonce, 16) >= 0
    msg = f"{ts}\n{nonce}\nPOST\n/wallet/bet\n".encode() + body
    expected = hmac.new(SECRET.encode(), msg, hashlib.sha256).hexdigest()
    assert h["X-Signature"] == expected
    assert "Authorization" not in h


def test_a_retry_is_signed_again_with_a_new_nonce(creds_path: Path) -> None:
    signer = Signer(load_credentials(creds_path))
    a = dict(signer.headers("POST", "/wallet/win", b"{}"))
    b = dict(signer.headers("POST", "/wallet/win", b"{}"))
    assert a["X-Nonce"] != b["X-Nonce"] and a["X-Signature"] != b["X-Signature"]


def test_operator_and_staff_routes_carry_bearer_tokens(creds_path: Path) -> None:
    signer = Signer(load_credentials(creds_path))
    assert signer.headers("GET", "/players/p1/balance", b"") == [
        ("Authorization", f"Bearer {TOKEN}")]
    assert signer.headers("GET", "/fraud/alerts", b"") == [
        ("Authorization", f"Bearer {'u' * 40}")]
    assert signer.headers("GET", "/health", b"") == []


def test_no_credentials_no_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_CREDENTIALS", raising=False)
    assert load_credentials(None) is None
    assert Signer(None).headers("POST", "/wallet/bet", b"{}") == []


def test_environment_variable_names_the_file(creds_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTBED_CREDENTIALS", str(creds_path))
    creds = load_credentials(None)
    assert creds is not None and creds.provider_id == "demo-provider"


@pytest.mark.parametrize(("text", "field"), [
    ('providers: [{id: p, secret: "short"}]', "providers[0].secret"),
    ("operators: []", "operators"),
    ("staff: [{token: " + '"' + "x" * 40 + '"}]', "staff[0].id"),
    ("players: []", "unknown key"),
    ("- just a list", "expected a mapping"),
])
def test_bad_credentials_files_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(CredentialsError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_credentials(_creds_file(tmp_path, text))


def test_missing_kind_is_a_clear_error(tmp_path: Path) -> None:
    creds = load_credentials(_creds_file(tmp_path, f'operators: [{{id: o, token: "{TOKEN}"}}]'))
    with pytest.raises(CredentialsError, match="provider"):
        Signer(creds).headers("POST", "/wallet/bet", b"{}")
