"""Schemathesis against the published OpenAPI document: bad input gets a documented 4xx.

The server checks credentials; every generated request is signed as the contract says
(provider HMAC for the wallet routes, bearer tokens elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from reference_impl.http.auth import Credentials, Signer
from reference_impl.http.guard import EdgeConfig
from reference_impl.http.openapi import openapi_document
from reference_impl.services.backoffice import BackOfficeConfig
from tests.reference_impl.http_server import running_server, write_credentials

schema = schemathesis.openapi.from_dict(openapi_document())


class _Signed(requests.auth.AuthBase):
    """The contract's signing for ``requests`` (what schemathesis sends with)."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        """Real credentials in place of the generated ones; a case that leaves them out on
        purpose (schemathesis checks that it is refused) is sent without."""
        if "authorization" not in r.headers and "x-signature" not in r.headers:
            return r
        for name in ("authorization", "x-signature"):
            r.headers.pop(name, None)
        body = r.body or b""
        body = body.encode() if isinstance(body, str) else body
        r.headers.update(self.signer.headers(str(r.method), r.path_url, bytes(body)))
        return r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, _Signed]]:
    folder = Path(tmp_path_factory.mktemp("schemathesis"))
    creds = write_credentials(folder)
    # rates far above what the test sends: schemathesis checks answers, not the limiter
    edge = EdgeConfig(credentials=str(creds), player_rate=1e6)
    with running_server(BackOfficeConfig(db=f"sqlite:///{folder / 'wallet.db'}"), edge) as url:
        yield url, _Signed(Signer(Credentials.load(creds)))


@schema.parametrize()
@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case, server: tuple[str, _Signed]) -> None:
    url, auth = server
    case.call_and_validate(base_url=url, auth=auth)
