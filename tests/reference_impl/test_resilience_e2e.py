"""Fraud hung (SIGSTOP) in microservices and hybrid over PostgreSQL: the public process's
breaker to fraud opens and its calls fail fast with 503 and Retry-After, money keeps flowing
(fraud is off the money path: its rules run on the event stream), nothing acknowledged is
lost, and after SIGCONT the breaker closes again."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.reference_impl.http_server import Server, purge_broker

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow,
              pytest.mark.timeout(240)]

#: short so the test is: 0.5 s per attempt, open after 4 failures of the last 8 calls
POLICY_YAML = """\
timeout_s: 0.5
retries: 1
breaker_window: 8
breaker_min_calls: 4
breaker_failure_rate: 0.5
breaker_open_s: 1.5
breaker_probes: 1
"""
LOAD_S = 3.0
PLAYERS = ("p0", "p1", "p2")


def _ledger_ids(c: httpx.Client, player: str) -> set[str]:
    """Every transaction id in the player's ledger (all pages)."""
    ids: set[str] = set()
    before = None
    while True:
        params = {"limit": 200, **({"before": before} if before is not None else {})}
        body = c.get(f"/players/{player}/transactions", params=params).json()
        ids |= {e["transaction_id"] for e in body["entries"]}
        before = body["next_before"]
        if before is None:
            return ids


@pytest.mark.parametrize("topology", ["microservices", "hybrid"])
def test_hung_fraud_fails_fast_money_flows_nothing_lost(
    fresh_pg_url: str, tmp_path: Path, topology: str,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML)
    server = Server(fresh_pg_url, topology, shards=1,
                    extra_args=("--rpc-policy", str(policy)))
    fraud_pid: int | None = None
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for p in PLAYERS:
                assert c.post("/players", json={"player_id": p, "currency": "EUR"}).status_code \
                    == 201
                assert c.post(f"/players/{p}/deposits", json={
                    "transaction_id": f"{p}-d0", "amount": 100_000}).status_code == 200
            assert c.get("/fraud/alerts").status_code == 200
            fraud_pid = server.service_pids()["fraud"]
            os.kill(fraud_pid, signal.SIGSTOP)

            acked: dict[str, list[str]] = {p: [f"{p}-d0"] for p in PLAYERS}
            money_statuses: list[int] = []
            money_seconds: list[float] = []
            alert_answers: list[httpx.Response] = []
            stop = threading.Event()

            def money(player: str) -> None:
                with httpx.Client(base_url=server.url, timeout=30) as mc:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        tid = f"{player}-{i}"
                        if i % 2:
                            r = mc.post(f"/players/{player}/deposits",
                                        json={"transaction_id": tid, "amount": 10})
                        else:
                            r = mc.post("/wallet/bet", json={
                                "transaction_id": tid, "player_id": player, "round_id": tid,
                                "game_id": "slot", "amount": 5})
                        money_statuses.append(r.status_code)
                        money_seconds.append(r.elapsed.total_seconds())
                        if r.status_code == 200:
                            acked[player].append(tid)

            def reporting() -> None:
                with httpx.Client(base_url=server.url, timeout=30) as rc:
                    while not stop.is_set():
                        alert_answers.append(rc.get("/fraud/alerts"))

            threads = [threading.Thread(target=money, args=(p,)) for p in PLAYERS]
            threads += [threading.Thread(target=reporting) for _ in range(4)]
            for t in threads:
                t.start()
            time.sleep(LOAD_S)
            stop.set()
            for t in threads:
                t.join(timeout=60)

            # money never waited on fraud: every operation was answered 200
            assert money_statuses and set(money_statuses) == {200}, set(money_statuses)
            # reporting on fraud failed, and (once the breaker opened) fast, without sending
            assert alert_answers and all(r.status_code == 503 for r in alert_answers)
            rejected = [r for r in alert_answers if "circuit open" in r.text]
            assert rejected, [r.text for r in alert_answers[:5]]
            assert all(1 <= int(r.headers["retry-after"]) <= 2 for r in rejected)
            # only the calls that opened the breaker (and the probes) waited for a timeout
            assert len(rejected) > len(alert_answers) / 2, (len(rejected), len(alert_answers))
            waited = sorted(r.elapsed.total_seconds() for r in alert_answers)
            rejected_s = sorted(r.elapsed.total_seconds() for r in rejected)
            print(f"\n{topology}: {len(money_statuses)} money ops (all 200), max "
                  f"{max(money_seconds):.3f} s; alerts {len(alert_answers)} answers 503, "
                  f"{len(rejected)} rejected by the breaker "
                  f"(median {rejected_s[len(rejected_s) // 2]:.4f} s), "
                  f"slowest {waited[-1]:.3f} s")
            metrics = c.get("/metrics").text
            assert 'rpc_rejected_total{reason="breaker_open",service="fraud"}' in metrics

            os.kill(fraud_pid, signal.SIGCONT)
            fraud_pid = None
            deadline = time.monotonic() + 60
            while c.get("/fraud/alerts").status_code != 200:  # a probe closes the breaker
                assert time.monotonic() < deadline, "the breaker did not close"
                time.sleep(0.2)
            assert c.get("/fraud/alerts").status_code == 200

            # nothing acknowledged was lost
            for p, tids in acked.items():
                in_ledger = _ledger_ids(c, p)
                assert set(tids) <= in_ledger, sorted(set(tids) - in_ledger)[:5]
            audit = c.get("/audit/verify").json()
            assert audit["ok"], audit
    finally:
        if fraud_pid is not None:
            os.kill(fraud_pid, signal.SIGCONT)
        server.stop()
        purge_broker(server.db, server.broker)


def test_hung_wallet_money_fails_fast_then_retries_apply_once(
    fresh_pg_url: str, tmp_path: Path,
) -> None:
    """The wallet itself hung (microservices): deposits answer 503 with Retry-After, fast once
    the breaker opens; after SIGCONT the breaker closes, and every deposit retried with its
    transaction id is applied exactly once (the ones the hung wallet received included)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML)
    server = Server(fresh_pg_url, "microservices", shards=1,
                    extra_args=("--rpc-policy", str(policy)))
    wallet_pid: int | None = None
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.post("/players", json={"player_id": "w", "currency": "EUR"}).status_code \
                == 201
            wallet_pid = server.service_pids()["wallet"]
            os.kill(wallet_pid, signal.SIGSTOP)
            answers = [c.post("/players/w/deposits", json={"transaction_id": f"d{i}",
                                                           "amount": 100}) for i in range(12)]
            assert {r.status_code for r in answers} == {503}
            assert all("retry-after" in r.headers for r in answers)
            rejected = [r for r in answers if "circuit open" in r.text]
            assert len(rejected) >= len(answers) // 2, [r.text for r in answers]
            os.kill(wallet_pid, signal.SIGCONT)
            wallet_pid = None
            deadline = time.monotonic() + 60
            while (r := c.post("/players/w/deposits", json={
                    "transaction_id": "d0", "amount": 100})).status_code != 200:
                assert r.status_code == 503, r.text
                assert time.monotonic() < deadline, "the breaker did not close"
                time.sleep(0.2)
            for i in range(12):  # the client retries each with its id
                assert c.post("/players/w/deposits", json={
                    "transaction_id": f"d{i}", "amount": 100}).status_code == 200
            assert c.get("/players/w/balance").json()["balance"] == 12 * 100
            assert _ledger_ids(c, "w") == {f"d{i}" for i in range(12)}
            assert c.get("/audit/verify").json()["ok"]
    finally:
        if wallet_pid is not None:
            os.kill(wallet_pid, signal.SIGCONT)
        server.stop()
        purge_broker(server.db, server.broker)
