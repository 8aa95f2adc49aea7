"""``testbed serve --workers 2``: every worker sees every event (fraud and analytics follow the
database), so the alerts and totals are those of one worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.reference_impl.http_server import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]
DEPOSITS = 6
CONNECTIONS = 16


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    srv = Server(db=f"sqlite:///{tmp_path / 'w.db'}", topology="monolith",
                 workers=request.param)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _poll(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def _connections(url: str) -> list[httpx.Client]:
    """Keep-alive connections opened all at once, so the kernel spreads them over the
    workers (each then serves every request of its connection)."""
    clients = [httpx.Client(base_url=url, timeout=10) for _ in range(CONNECTIONS)]
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        list(pool.map(lambda c: c.get("/health"), clients))
    return clients


def test_same_alerts_and_totals_as_one_worker(server: Server) -> None:
    url = server.url
    clients = _connections(url)
    try:
        assert clients[0].post("/players", json={"player_id": "w", "currency": "EUR"}).is_success
        for i in range(DEPOSITS):
            r = clients[i % CONNECTIONS].post(
                "/players/w/deposits",
                json={"transaction_id": f"d{i}", "amount": 100, "instrument": "card-1"})
            assert r.status_code == 200, r.text

        def velocity_alerts(c: httpx.Client) -> list[str]:
            body = c.get("/fraud/alerts", params={"player_id": "w"}).json()
            return [a["rule_id"] for a in body["alerts"]
                    if a["rule_id"].startswith("velocity-dep")]

        _poll(lambda: velocity_alerts(clients[-1]) == ["velocity-deposit-count-v1"])
        for c in clients:  # whichever worker serves it, every event is counted
            _poll(lambda c=c: c.get("/analytics/summary").json()["events"].get(
                "deposit", 0) >= DEPOSITS, timeout=5)
            summary = c.get("/analytics/summary").json()
            assert summary["events"]["deposit"] == DEPOSITS
            assert summary["amounts"]["deposit"] == DEPOSITS * 100
        time.sleep(0.6)  # two more tail passes: nothing fires twice
        assert velocity_alerts(clients[0]) == ["velocity-deposit-count-v1"]
    finally:
        for c in clients:
            c.close()
