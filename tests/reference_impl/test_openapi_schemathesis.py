"""Schemathesis against the published OpenAPI document: bad input gets a documented 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from reference_impl.http.openapi import openapi_document
from reference_impl.services.backoffice import BackOfficeConfig
from tests.reference_impl.http_server import running_server

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = Path(tmp_path_factory.mktemp("schemathesis")) / "wallet.db"
    with running_server(BackOfficeConfig(db=f"sqlite:///{db}")) as url:
        yield url


@schema.parametrize()
@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(base_url=base_url)
