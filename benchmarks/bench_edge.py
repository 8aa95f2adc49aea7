"""CPU per request of the public API's edge alone: the ASGI app with a stub wallet.

What the request path costs without the database and the HTTP server: route, credentials,
rate limits, body checks, parsing, validation, metrics and the answer. Requests are built
(and signed) before the clock starts; the garbage collector's view of them is frozen so both
modes pay the same. Reports CPU microseconds per request with auth off, with every request
signed as a game provider (server side only), and the client's signing cost.

    python benchmarks/bench_edge.py            # 20,000 requests per mode, ~10 s
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from reference_impl.http.app import create_app
from reference_impl.http.auth import Credentials, Signer
from reference_impl.http.guard import EdgeConfig
from reference_impl.services.backoffice import BackOffice


class _Wallet:
    """Answers every command at once (no storage)."""

    async def execute(self, cmd: Any) -> dict[str, Any]:
        return {"transaction_id": cmd.transaction_id, "status": "ok", "balance": 1,
                "currency": "EUR"}


def _app(credentials: Path | None) -> Any:
    office = BackOffice(storage=None, bus=None, players=None, wallet=_Wallet(),  # type: ignore[arg-type]
                        fraud=None, analytics=None)  # type: ignore[arg-type]
    edge = EdgeConfig(credentials=str(credentials) if credentials else None,
                      credential_rate=1e9, player_rate=1e9)
    return create_app(office, edge=edge)


def _requests(n: int, signer: Signer | None) -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
    out = []
    for i in range(n):
        body = orjson.dumps({"transaction_id": f"b{i}", "player_id": f"p{i % 1000}",
                             "round_id": f"r{i}", "game_id": "g", "amount": 10})
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if signer is not None:
            headers += [(k.lower().encode(), v.encode())
                        for k, v in signer.headers("POST", "/wallet/bet", body).items()]
        out.append((body, headers))
    return out


async def _serve_all(app: Any, requests: list[tuple[bytes, list[tuple[bytes, bytes]]]]) -> float:
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    gc.collect()
    gc.freeze()
    started = time.process_time()
    for body, headers in requests:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive(messages: list[dict[str, Any]] = messages) -> dict[str, Any]:
            return messages.pop()

        await app({"type": "http", "method": "POST", "path": "/wallet/bet",
                   "raw_path": b"/wallet/bet", "query_string": b"", "headers": headers,
                   "root_path": ""}, receive, send)
    elapsed = time.process_time() - started
    gc.unfreeze()
    assert statuses == [200] * len(requests), statuses[:3]
    return elapsed / len(requests) * 1e6


def main(argv: list[str] | None = None) -> int:
    """Print CPU us per request, auth off and on, and the client's signing cost."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per mode")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        creds = Path(tmp) / "credentials.yaml"
        creds.write_text(json.dumps({"providers": [{"id": "bench",
                                                    "secret": secrets.token_hex(32)}]}))
        signer = Signer(Credentials.load(creds))
        results: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(args.repeats):  # alternate, so machine load hits both alike
            for mode in ("off", "on"):
                requests = _requests(args.requests, signer if mode == "on" else None)
                app = _app(creds if mode == "on" else None)
                results[mode].append(asyncio.run(_serve_all(app, requests)))
        started = time.process_time()
        for _ in range(args.requests):
            signer.headers("POST", "/wallet/bet", b"x" * 100)
        signing = (time.process_time() - started) / args.requests * 1e6
    off, on = min(results["off"]), min(results["on"])
    print(f"edge CPU per money request (best of {args.repeats}): auth off {off:.1f} us, "
          f"auth on {on:.1f} us (+{on - off:.1f} us); client signing {signing:.1f} us")
    print(f"all runs: off {', '.join(f'{x:.1f}' for x in results['off'])}; "
          f"on {', '.join(f'{x:.1f}' for x in results['on'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
