"""What a request costs the load generator: requests per generator CPU-second, the open-loop
client (loadgen.openloop) side by side with locust's FastHttpUser, against one `testbed serve`
(SQLite), on ``GET /health`` and on the scenario's wallet mix (bets, wins, balances, ... with
their JSON bodies); then both on ``GET /health`` of a null server (fixed answer, never the
limit; every request answered 200 ``{"status":"ok"}``), the open loop at ``--null-rate``, to
measure the generators where the back office cannot hold them back.

Each case runs locust first (closed loop, ``--users`` users as fast as the server answers),
then the open loop at the rate locust reached, so both drive the server equally hard. The
figure compared is requests / CPU seconds of the generator's own process (``process_time``
over the measured window), which does not depend on how busy the rest of the machine is;
wall-clock rates are shown for context only. Generators on a shared machine: the ratio is
the result, the absolute figures move with the machine.

    python benchmarks/bench_loadgen.py                  # table to stdout
    python benchmarks/bench_loadgen.py --markdown       # the table for RESULTS.md
    python benchmarks/bench_loadgen.py --check          # fail if a ratio fell below baseline
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "baseline_day.yaml"
BASELINE = Path(__file__).with_name("baseline_loadgen.json")
KINDS = ("health", "wallet", "null-health", "null-wallet")
"""/health and the wallet mix against `testbed serve`, then against the null server."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TESTBED_CREDENTIALS", None)
    return env


def start_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed", "serve", "--db", f"sqlite:///{tmp / 'w.db'}",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=_env())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("testbed serve exited")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("testbed serve did not start")


# ---------------------------------------------------------------------- null server

NULL_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\ncontent-type: application/json"
                 b"\r\n\r\n{\"status\":\"ok\"}")


def null_server(port: int) -> None:
    """Answers every request with /health's body at once: a server that is never the limit,
    to measure the generators alone (one uvloop process, HTTP/1.1 keep-alive)."""
    import asyncio

    import uvloop

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t, self.buf = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                head = self.buf[:end].lower()
                i = head.find(b"content-length:")
                length = int(head[i + 15:].split(b"\r\n", 1)[0]) if i >= 0 else 0
                if len(self.buf) < end + 4 + length:
                    return
                self.buf = self.buf[end + 4 + length:]
                self.t.write(NULL_RESPONSE)

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(serve())


def start_null_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--null-server", str(port)],
                            env=_env())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("null server did not start")


# ---------------------------------------------------------------------- locust (child)


def locust_child(kind: str, url: str, seconds: float, users: int) -> dict[str, Any]:
    """Runs in its own process: locust must monkey-patch before anything else."""
    import gevent
    import locust  # noqa: F401  (gevent patches the standard library here)
    from locust import FastHttpUser, task
    from locust.env import Environment

    from loadgen.locust_main import make_user
    from sim.model.scenario import load_scenario

    if kind.endswith("health"):
        class Health(FastHttpUser):
            host = url

            @task
            def health(self) -> None:
                self.client.get("/health")

        user: type[FastHttpUser] = Health
    else:
        plan = {"prefix": f"bench{os.getpid()}-", "target": url, "seed": 1,
                "credentials": None}
        user = make_user(plan, load_scenario(SCENARIO))
    env = Environment(user_classes=[user], host=url)
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=users)
    gevent.sleep(3.0)  # spawned, players set up
    n0, cpu0, t0 = env.stats.total.num_requests, time.process_time(), time.perf_counter()
    gevent.sleep(seconds)
    n1, cpu1, t1 = env.stats.total.num_requests, time.process_time(), time.perf_counter()
    fails = env.stats.total.num_failures
    runner.quit()
    return {"requests": n1 - n0, "cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "failures": fails}


def run_locust(kind: str, url: str, seconds: float, users: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--locust-child", kind, "--target", url,
         "--seconds", str(seconds), "--users", str(users)],
        capture_output=True, text=True, env=_env(), timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"locust child failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------- open loop


def _health_source(scenario: Any, cfg: Any, index: int) -> Any:
    from loadgen.behaviour import HealthChecks

    return HealthChecks()


def run_open(kind: str, url: str, seconds: float, rate: float) -> dict[str, Any]:
    from loadgen.limits import DEFAULT_PLAYERS
    from loadgen.openloop import OpenLoopConfig, run_open_loop, scenario_players
    from loadgen.record import merge
    from sim.model.scenario import load_scenario

    cfg = OpenLoopConfig(url, rate, seconds, players=DEFAULT_PLAYERS, seed=1,
                         prefix=f"bench{os.getpid()}{int(time.time())}-")
    source = scenario_players if kind.endswith("wallet") else _health_source
    part = run_open_loop(load_scenario(SCENARIO), cfg, 1, source=source)[0]
    rec = merge([part["recorder"]])
    answered = sum(h.get_total_count() for h in rec.total.values())
    errors = sum(sum(c.values()) for c in rec.codes.values())
    return {"requests": answered, "cpu_s": part["cpu_s"], "wall_s": seconds,
            "failures": errors, "skipped": sum(rec.skipped.values()),
            "lag_p99_ms": rec.lag.get_value_at_percentile(99) / 1000}


# ---------------------------------------------------------------------- driver


def _case(kind: str, url: str, seconds: float, users: int, open_rate: float | None
          ) -> list[dict[str, Any]]:
    lo = run_locust(kind, url, seconds, users)
    rate = open_rate or lo["requests"] / lo["wall_s"]
    op = run_open(kind, url, seconds, rate)
    return [{"kind": kind, "generator": name, **r, "rate": r["requests"] / r["wall_s"],
             "per_cpu_s": r["requests"] / r["cpu_s"]}
            for name, r in (("locust FastHttpUser", lo), ("open loop (loadgen)", op))]


def _against(server: tuple[subprocess.Popen[bytes], str], kinds: tuple[str, ...],
             seconds: float, users: int, open_rate: float | None) -> list[dict[str, Any]]:
    """The cases of ``kinds`` against a started server, stopped after."""
    proc, url = server
    try:
        return [row for kind in kinds for row in _case(kind, url, seconds, users, open_rate)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure(seconds: float, users: int, null_rate: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as tmp:
        rows = _against(start_server(Path(tmp)), ("health", "wallet"), seconds, users, None)
    return rows + _against(start_null_server(), ("null-health", "null-wallet"), seconds, users,
                           null_rate)


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for kind in KINDS:
        by = {r["generator"]: r for r in rows if r["kind"] == kind}
        out[kind] = by["open loop (loadgen)"]["per_cpu_s"] / by["locust FastHttpUser"]["per_cpu_s"]
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| requests | generator | achieved req/s | generator CPU s | requests per "
             "generator CPU-second | failures |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['generator']} | {r['rate']:,.0f} | "
                     f"{r['cpu_s']:.2f} | {r['per_cpu_s']:,.0f} | {r['failures']} |")
    rat = ratios(rows)
    lines.append("")
    lines.append("Open loop / locust, requests per generator CPU-second: "
                 + ", ".join(f"{k} {v:.1f}x" for k, v in rat.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per case")
    ap.add_argument("--users", type=int, default=20, help="locust users")
    ap.add_argument("--markdown", action="store_true", help="print the RESULTS.md table")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if a ratio fell below the baseline by more than --tolerance")
    ap.add_argument("--tolerance", type=float, default=0.3)
    ap.add_argument("--update-baseline", action="store_true")
    ap.add_argument("--null-rate", type=float, default=4000.0,
                    help="open-loop rate against the null server (requests/s)")
    ap.add_argument("--locust-child", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--null-server", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.null_server:
        null_server(a.null_server)
        return 0
    if a.locust_child:
        print(json.dumps(locust_child(a.locust_child, a.target, a.seconds, a.users)))
        return 0
    rows = measure(a.seconds, a.users, a.null_rate)
    print(table(rows) if a.markdown else json.dumps(rows, indent=1) + "\n" + table(rows))
    rat = ratios(rows)
    if a.update_baseline:
        BASELINE.write_text(json.dumps({
            "about": "open-loop / locust FastHttpUser requests per generator CPU-second",
            "ratios": {k: round(v, 2) for k, v in rat.items()}}, indent=1) + "\n")
    if a.check:
        base = json.loads(BASELINE.read_text())["ratios"]
        bad = [f"{k}: {rat[k]:.2f}x < baseline {base[k]:.2f}x - {a.tolerance:.0%}"
               for k in base if rat[k] < base[k] * (1 - a.tolerance)]
        if bad:
            print("REGRESSION: " + "; ".join(bad))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
