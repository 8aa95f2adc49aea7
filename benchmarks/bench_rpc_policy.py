"""CPU cost of the internal-call policies (tenacity retry loop, breaker, bulkhead) per call,
against the client-side CPU of the HTTP round trip they wrap.

Runs ``RpcClient.call`` and a bare ``httpx`` POST to the same in-process RPC server,
interleaved, best of 5 rounds, the order alternating; reports process CPU microseconds per
call (server CPU included in both, so the difference is the policy layer). CPU time, not wall
time: the machine is shared.

    python benchmarks/bench_rpc_policy.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time

import httpx
import orjson
import uvicorn

from reference_impl.transport.rpc import RpcClient, rpc_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _echo(a: dict[str, object]) -> object:
    return {"ok": True}


async def _rounds(url: str, calls: int, rounds: int) -> tuple[float, float]:
    client = RpcClient("dep", url)
    bare = httpx.AsyncClient(base_url=url)
    body = orjson.dumps({"command": {"transaction_id": "t"}})
    best_policy = best_bare = float("inf")
    try:
        for round_no in range(rounds):  # which kind runs first alternates
            for kind in ((0, 1) if round_no % 2 == 0 else (1, 0)):
                t0 = time.process_time()
                for _ in range(calls):
                    if kind == 0:
                        await client.call("execute", command={"transaction_id": "t"})
                    else:
                        r = await bare.post("/rpc/execute", content=body,
                                            headers={"content-type": "application/json"})
                        orjson.loads(r.content)
                spent = (time.process_time() - t0) / calls
                if kind == 0:
                    best_policy = min(best_policy, spent)
                else:
                    best_bare = min(best_bare, spent)
    finally:
        await client.close()
        await bare.aclose()
    return best_policy, best_bare


async def _noop() -> int:
    return 1


async def _layers(calls: int, rounds: int) -> tuple[float, float]:
    """CPU per call of a tenacity retry loop, and of breaker + bulkhead, around a no-op."""
    from tenacity import (
        AsyncRetrying,
        retry_if_exception,
        stop_after_attempt,
        wait_exponential_jitter,
    )

    from reference_impl.transport.resilience import DEFAULT_POLICY, Bulkhead, CircuitBreaker

    best_tenacity = best_state = float("inf")
    breaker, bulkhead = CircuitBreaker(DEFAULT_POLICY), Bulkhead(DEFAULT_POLICY)
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(calls):
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(3), wait=wait_exponential_jitter(multiplier=0.05),
                retry=retry_if_exception(lambda e: True), reraise=True,
            ):
                with attempt:
                    await _noop()
        t1 = time.process_time()
        for _ in range(calls):
            bulkhead.try_acquire(True)
            breaker.allow()
            await _noop()
            breaker.record(False)
            bulkhead.release()
        t2 = time.process_time()
        best_tenacity = min(best_tenacity, (t1 - t0) / calls)
        best_state = min(best_state, (t2 - t1) / calls)
    return best_tenacity, best_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round and kind")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (best is kept)")
    args = parser.parse_args()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(rpc_app("dep", {"execute": _echo}), host="127.0.0.1",
                                           port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        policy, bare = asyncio.run(_rounds(f"http://127.0.0.1:{port}", args.calls, args.rounds))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    tenacity_s, state_s = asyncio.run(_layers(20 * args.calls, args.rounds))
    print(f"CPU per call of each layer alone around a no-op, best of {args.rounds}:")
    print(f"  tenacity AsyncRetrying loop: {tenacity_s * 1e6:8.1f} us (only after a failure)")
    print(f"  breaker + bulkhead         : {state_s * 1e6:8.1f} us (every call)")
    print(f"CPU per call, client+server in one process, best of {args.rounds} x {args.calls}:")
    print(f"  RpcClient.call (policies): {policy * 1e6:8.1f} us")
    print(f"  bare httpx POST          : {bare * 1e6:8.1f} us")
    print(f"  policy layer             : {(policy - bare) * 1e6:8.1f} us "
          f"({(policy / bare - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
